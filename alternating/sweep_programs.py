"""Programs that train several runs of a sweep, and splitting their results per run.

A seed block (a cell's consecutive seeds, :mod:`alternating.seeds`) or a
learning-rate group trains as one vectorized program; :func:`split_results`
writes each run's ``results.json`` from it, and :func:`finished` tells a
complete run from one to (re)run.

Cells whose configs differ in nothing but phases' optimizer ``lr`` (or
``learning_rate``) form a *group*; every missing (cell, seed) pair of a group
trains as one replica of one vectorized program (``num_seeds`` = pairs,
``replica_seeds`` and ``replica_lr`` from :mod:`alternating.seeds`), and the
program's results are split into each pair's ``results.json``, exactly as a
seed block's are. A replica's learning rate scales its updates (every
optimizer here applies its learning rate last), so replica ``(cell, seed)``
trains what the cell's own run trains, up to float rounding (tested against
separate runs in ``tests/replica_lr_test.py``).

Only cells whose configs vectorize (``sweep.why_not_vectorized``) join a
group; the rest run as before. See ``docs/sweeps.md``.
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Callable, Mapping, Sequence

from alternating import metrics
from alternating.phase import spec_lr

LR_PATH = re.compile(r"^phases\.([^.]+)\.optimizer\.(lr|learning_rate)$")
# Set per run by the sweep, so not part of what makes two cells differ.
_PER_RUN = ("seed", "num_seeds", "replica_seeds", "replica_lr")


def _plain(cfg: Any) -> dict:
    d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {k: v for k, v in d.items() if k not in _PER_RUN}


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted paths where two plain configs differ (lists compare whole)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in config_diff(a.get(k, "<absent>"), b.get(k, "<absent>"),
                               f"{prefix}.{k}" if prefix else str(k))]
    return [] if a == b else [prefix or "<config>"]


def lr_phases(a: Any, b: Any) -> set[str] | None:
    """The phases whose lr differs between configs ``a`` and ``b``, or ``None``
    when anything else differs too (so they cannot share a program)."""
    out = set()
    for path in config_diff(_plain(a), _plain(b)):
        m = LR_PATH.match(path)
        if m is None:
            return None
        out.add(m.group(1))
    return out


def groups(cells: Sequence[Any], configs: Mapping[str, Any],
           vectorizable: Callable[[Any], bool]) -> list[list[Any]]:
    """Cells (at least two each) that may train as one program, in cell order."""
    out: list[list[Any]] = []
    for cell in cells:
        cfg = configs[cell.id]
        if not vectorizable(cfg):
            continue
        for g in out:
            if lr_phases(configs[g[0].id], cfg) is not None:
                g.append(cell)
                break
        else:
            out.append([cell])
    return [g for g in out if len(g) > 1]


def program_config(configs: Sequence[Any], seeds: Sequence[int], base: Any) -> Any:
    """``base`` (a copy, unlocked) set up to train ``(configs[i], seeds[i])`` as replica ``i``."""
    changed = set()
    for cfg in configs[1:]:
        changed |= lr_phases(configs[0], cfg) or set()
    cfg = base
    with cfg.unlocked():
        cfg.seed, cfg.num_seeds = int(seeds[0]), len(seeds)
        cfg.replica_seeds = [int(s) for s in seeds]
        cfg.replica_lr = {p: [spec_lr(_plain(c)["phases"][p].get("optimizer")) for c in configs]
                          for p in sorted(changed)} or None
        cfg.executor, cfg.checkpoint_every_steps = "fused", 0
    return cfg


def finished(run_dir: str | pathlib.Path, total_steps: int) -> dict | None:
    """The run's ``results.json`` if it is complete (``final_eval``, all steps), else ``None``."""
    path = pathlib.Path(run_dir) / "results.json"
    try:
        res = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    done = (isinstance(res, dict) and "final_eval" in res
            and res.get("total_steps") == total_steps and res.get("steps", -1) >= total_steps)
    return res if done else None


def split_results(program_dir: pathlib.Path, run_dirs: Sequence[pathlib.Path],
                  seeds: Sequence[int], info: Mapping[str, Any]) -> None:
    """Writes replica ``i``'s part of the program's ``results.json`` to ``run_dirs[i]``.

    ``info`` (where the program ran) goes under ``vectorized`` with the
    program's wall time; each run's ``wall_time_s`` is its share of it. An evaluator's block with one ``per_seed`` entry per
    replica (e.g. ``continual``) becomes that replica's entry, as a single
    run writes it; a run without eval sets gets ``final_eval`` ``{}``.
    """
    res = json.loads((program_dir / "results.json").read_text(encoding="utf-8"))
    wall, n = res["wall_time_s"], len(run_dirs)  # as a single run's: the loop's own clock
    finals = res.get("final_eval_per_seed") or [{}] * n
    for i, (run_dir, seed) in enumerate(zip(run_dirs, seeds)):
        one = {k: v for k, v in res.items() if k not in
               ("final_eval_per_seed", "seeds", "num_seeds", "steps_per_phase_per_seed")}
        for k, v in res.items():
            if isinstance(v, dict) and isinstance(v.get("per_seed"), list) and \
                    len(v["per_seed"]) == n:
                one[k] = v["per_seed"][i]
        one.update(final_eval=finals[i], seed=int(seed),
                   steps_per_phase=res["steps_per_phase_per_seed"][i], wall_time_s=wall / n,
                   vectorized={**info, "wall_time_s": wall})
        metrics.write_results(pathlib.Path(run_dir) / "results.json", one)

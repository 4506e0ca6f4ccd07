"""What every reproduction script shares: its command line as run, where its
page goes, and the page's "Reproduce" section (command, date, machine, time)."""

from __future__ import annotations

import datetime
import json
import pathlib
import shlex
import sys
import tempfile
from typing import Any, Mapping

ROOT = pathlib.Path(__file__).resolve().parents[1]


def public_args(argv=None) -> list[str]:
    """The command-line arguments minus the scratch ``--workdir`` (a machine path)."""
    from alternating.sweep_main import drop_flag  # pylint: disable=g-import-not-at-top
    return drop_flag(list(argv if argv is not None else sys.argv[1:]), "--workdir")


def command(script: str, argv=None) -> str:
    """``.venv/bin/python experiments/<script> <args>``, as a reader would rerun it."""
    given = public_args(argv)
    return f".venv/bin/python experiments/{script}" + (" " + shlex.join(given) if given else "")


def check_consecutive(seeds) -> None:
    """Vectorized seeds train ``seed, seed + 1, ...``: other lists are refused."""
    if list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"seeds {list(seeds)} are not consecutive; vectorized runs train "
                         "seed, seed + 1, ...")


def run_seed_block(cfg, seeds, workdir: pathlib.Path, data_dir: str | None = None):
    """Trains ``cfg`` for consecutive ``seeds`` in one ``num_seeds`` program.

    The fused executor runs the replicas, without checkpoints; replica ``i``
    is the run with seed ``seeds[0] + i`` (:func:`alternating.sweep.train_seeds`).
    Returns ``(results, seconds, state)``: the run's ``results.json``, its
    wall time (evaluations included) divided by the number of seeds, and the
    stacked TrainState (leading axis: seed).
    """
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    check_consecutive(seeds)
    workdir = pathlib.Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        raise FileExistsError(f"{workdir} is not empty. Pass an empty --workdir.")
    if data_dir:
        with cfg.unlocked():
            cfg.data_dir = data_dir
    state, seconds = sweep.train_seeds(cfg, seeds, workdir)
    with open(workdir / "results.json", encoding="utf-8") as f:
        return json.load(f), seconds / len(seeds), state


def continual_entries(cfg, seeds, workdir: pathlib.Path) -> tuple[list[dict], dict]:
    """Trains a continual-learning config for ``seeds`` in one program (:func:`run_seed_block`).

    Returns ``(entries, continual)``: each seed's ``results.json`` → ``continual``
    entry (the accuracy matrix and its metrics), in seed order, and the
    ``continual`` block itself (with ``dense`` rows when asked for).
    """
    results, _, _ = run_seed_block(cfg, seeds, workdir)
    cont = results["continual"]
    return cont.get("per_seed") or [cont], cont


def run_grid(cells, seeds, *, vectorized: bool, run_seeds, run_one) -> list:
    """Every (cell, seed) run of a sweep, ordered by seed, then cell.

    ``vectorized``: each cell's seeds in one program, ``run_seeds(cell,
    seeds)`` (a list of per-seed runs, in seed order); otherwise one
    ``run_one(cell, seed)`` each, every cell at a seed before the next seed.
    The scheduling is :func:`alternating.sweep.execute`'s, the engine of
    ``alternating.sweep.run``; these scripts keep their own run functions
    because their arms are config variants, not overrides.
    """
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    cells = list(cells)
    done = sweep.execute(cells, seeds, run_one=run_one, run_seeds=run_seeds,
                         vectorized=vectorized)
    return [done[(i, j)] for j in range(len(seeds)) for i in range(len(cells))]


def output_dir(out: str | None, quick: bool) -> pathlib.Path:
    """``out``, else a temporary directory for ``--quick``, else ``docs/results``."""
    path = pathlib.Path(out) if out else (
        pathlib.Path(tempfile.mkdtemp()) if quick else ROOT / "docs" / "results")
    path.mkdir(parents=True, exist_ok=True)
    return path


def provenance(cmd: str, wall: float, n_runs: int) -> list[str]:
    """The markdown lines of a results page's "Reproduce" section."""
    from experiments.multimodal import machine  # pylint: disable=g-import-not-at-top
    mach = machine()
    return ["## Reproduce", "", "```", cmd, "```", "",
            f"* date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            f"* machine: nproc = {mach['nproc']}, CPU: {mach['cpu']}, {mach['platform']}",
            f"* python {mach['python']}, jax {mach['jax']}, devices: {mach['devices']}",
            f"* total wall time: {wall:.0f} s for {n_runs} runs (shared, noisy machine)"]


def _carve(obj: Any, cut: int, path: str, left: list[str]) -> Any:
    """``obj`` (plain data) with every data spec's split moved to the validation split."""
    if isinstance(obj, Mapping):
        out = {k: _carve(v, cut, f"{path}.{k}", left) for k, v in obj.items()}
        if isinstance(out.get("dataset"), str):
            split = out.get("split") or "train"
            if split == "train":
                out["split"] = f"train[:{cut}%]"
            elif split == "test":
                out["split"] = f"train[{cut}%:]"
            else:
                left.append(f"{path} (split {split!r})")
        elif "dataset" in out:
            left.append(f"{path} (in-memory dataset)")
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_carve(v, cut, f"{path}[{i}]", left) for i, v in enumerate(obj))
    return obj


def _specs_on(obj: Any, splits: tuple[str, ...], path: str = "config") -> list[str]:
    """The paths of data specs in ``obj`` read from one of ``splits``."""
    if isinstance(obj, Mapping):
        found = [p for k, v in obj.items() for p in _specs_on(v, splits, f"{path}.{k}")]
        if isinstance(obj.get("dataset"), str) and (obj.get("split") or "train") in splits:
            found.append(path)
        return found
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _specs_on(v, splits, f"{path}[{i}]")]
    return []


def validation_config(cfg, holdout: int = 20):
    """A copy of ``cfg`` for tuning: it trains on the first ``100 - holdout`` %
    of each stream's train split and evaluates every eval set on the held-out
    rest of that train split, never on a test split. The data specs inside
    ``hooks`` and ``evaluators`` (an accuracy matrix's tasks, a Fisher's or
    a replay's data) move the same way: ``train`` to the kept part, ``test``
    to the held-out part; no spec is left on ``train`` or ``test`` (checked).

    Raises:
      ValueError: a data or eval spec that is not a named dataset read from
        its ``train`` split (streams) or its ``test`` / ``train`` split (evals),
        a hook's or evaluator's spec on another split or in memory, named
        with its path.
    """
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    cfg = sweep.apply_overrides(cfg, {})
    cut = 100 - int(holdout)
    with cfg.unlocked():
        for name, spec in cfg.data.items():
            if not isinstance(spec.get("dataset"), str) or (spec.get("split") or "train") != "train":
                raise ValueError(f"data.{name}: validation_config needs a named dataset read "
                                 f"from its 'train' split, got {spec.to_dict()!r}.")
            spec["split"] = f"train[:{cut}%]"
        for name, ev in (cfg.get("eval") or {}).items():
            data = ev["data"]
            if not isinstance(data.get("dataset"), str) or data.get("split") not in ("test", "train"):
                raise ValueError(f"eval.{name}.data: validation_config needs a named dataset "
                                 f"with split 'test' or 'train', got {data.to_dict()!r}.")
            data["split"] = f"train[{cut}%:]"
        left = []
        for field in ("hooks", "evaluators"):
            if field in cfg.keys() and cfg[field]:
                cfg[field] = _carve(cfg[field].to_dict() if hasattr(cfg[field], "to_dict")
                                    else cfg[field], cut, field, left)
    if left:
        raise ValueError(f"validation_config: data specs it cannot carve a validation split "
                         f"from: {left}.")
    stale = _specs_on(cfg.to_dict(), ("train", "test"))
    if stale:
        raise ValueError(f"validation_config: data specs still on a train / test split: {stale}.")
    return cfg

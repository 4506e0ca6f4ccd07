"""Sweeps: a grid of config overrides times seeds, each a run of ``train_and_evaluate``.

A *cell* is a set of overrides of config fields, named by dotted paths
(``{"phases.images.optimizer.lr": 3e-3}``); a sweep is a list of cells (the
product of a grid's axes, or cells listed one by one) times a list of seeds.
Every (cell, seed) is a run of :func:`alternating.train_and_evaluate` with
its results in ``WORKDIR/<cell id>/seed<k>/results.json``. The cell id is
read off the overrides (``lr=0.003``), so it stays the same when the sweep is
run again.

Invariants:

* **Every input error before any run.** A field the config lacks (ConfigDict
  semantics: the error names the field and the valid fields at that level), a
  value of the wrong type, an empty grid, fewer than one seed, an unknown
  baseline, an invalid cell config, or a workdir whose finished cells were
  run with another config: all raise ``ValueError`` before anything trains.
* **Resumable.** A (cell, seed) whose ``results.json`` is complete (it holds
  ``final_eval`` and reached the config's ``total_steps``) is never run
  again; running the same sweep again runs only what is missing, and a run
  killed half-way resumes from its own checkpoints (one run per seed).
* **Vectorized where the config allows.** A cell's missing seeds, when
  consecutive, train in one ``num_seeds`` program (fused executor, no
  checkpoints: a killed program restarts from step 0), whose results are
  split into each seed's ``results.json``. Where
  :func:`alternating.options.check_with_seeds` refuses the config or its
  schedule observes feedback, the cell runs one seed at a time; the reason
  is printed and kept in ``sweep.json``. With ``vectorize="grid"``, cells
  that differ only in learning rates share one program too
  (:mod:`alternating.sweep_programs`).
* **A diverging run is a result, not a crash:** a ``NonFiniteError`` is
  recorded in ``sweep.json`` and the sweep goes on (a rerun retries it).

Outputs: ``WORKDIR/sweep.json`` (every run's overrides, seed, final
evaluation and wall time) and, given a ``metric``, the comparison of
:mod:`alternating.sweep_report`. See ``docs/sweeps.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import pathlib
import re
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from alternating import experiment, metrics, sweep_programs, sweep_report, verdict
from alternating import options as options_lib
from alternating import workdir as workdir_lib
from alternating.nonfinite import NonFiniteError
from alternating.sweep_programs import finished
from alternating.schedules import make_schedule

# The sweep sets these per run; an axis over them is refused.
RESERVED = ("seed", "num_seeds", "replica_seeds", "replica_lr")
# "grid": as "auto", and cells differing only in learning rates share one program.
VECTORIZE = ("auto", "on", "off", "grid")
# Fields a finished run may differ in from the config that would run now
# (how it was run, not what it computes; ``total_steps`` is checked apart).
_NOT_FINGERPRINTED = options_lib.CONFIG_RESUME_SAFE + RESERVED
_MAX_ID = 80
_TRAIN_KWARGS = {"progress": False, "plot": False, "print_fn": None}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a sweep: its directory name and its config overrides."""

    id: str
    overrides: Mapping[str, Any]


# --- Cells, overrides and seeds ----------------------------------------------------------


def expand(grid: Mapping[str, Sequence[Any]] | None = None,
           cells: Sequence[Mapping[str, Any]] | None = None) -> list[Cell]:
    """The cells of a sweep, with their ids.

    Args:
      grid: ``{dotted field path: [values]}``; the cells are the product of
        the axes, the first axis varying slowest.
      cells: the cells one by one, each ``{dotted field path: value}``
        (``{}`` is the base config). Give ``grid`` or ``cells``, not both.

    Returns:
      The cells in order. An id joins ``key=value`` for each override, the
      key being the shortest dotted suffix that tells the sweep's paths apart
      (``lr=0.003,warmup_steps=10``); ``base`` for no overrides.

    Raises:
      ValueError: neither or both given, an empty grid or axis, an axis that
        is not a list of values, a reserved field, or a cell listed twice.
    """
    if (grid is None) == (cells is None):
        raise ValueError("give a grid ({path: [values]}) or a list of cells, not both or neither.")
    if grid is not None:
        if not grid:
            raise ValueError("empty grid: give at least one axis, e.g. "
                             "{'phases.images.optimizer.lr': [1e-3, 3e-3]}.")
        for path, values in grid.items():
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
                raise ValueError(f"grid axis {path!r}: {values!r} is not a list of values; "
                                 f"write {path!r}: [{values!r}] for a single value.")
            if not values:
                raise ValueError(f"grid axis {path!r} has no values; give at least one.")
        cells = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    if not cells:
        raise ValueError("empty sweep: give at least one cell ({} is the base config).")
    # numpy scalars (np.linspace grids) as Python numbers: ids and digests read the same.
    cells = [{p: v.item() if isinstance(v, np.generic) else v for p, v in c.items()}
             for c in cells]
    for c in cells:
        bad = [p for p in c if p.split(".")[0] in RESERVED]
        if bad:
            raise ValueError(f"cell {c}: {bad} are set by the sweep; give seeds= instead.")
    keys = _short_keys({p for c in cells for p in c})
    ids = [",".join(f"{keys[p]}={_fmt(v)}" for p, v in c.items()) or "base" for c in cells]
    ids = [i if len(i) <= _MAX_ID else f"{i[:_MAX_ID - 9]}-{_digest(c)}"
           for i, c in zip(ids, cells)]
    first: dict[str, int] = {}
    for j, c in enumerate(cells):
        i = first.setdefault(_digest(c), j)
        if i != j:
            raise ValueError(f"cell {c} is listed twice (cells {i} and {j}).")
    seen: dict[str, int] = {}
    for k in ids:
        seen[k] = seen.get(k, 0) + 1
    ids = [k if seen[k] == 1 else f"{k}-{_digest(c)[:6]}" for k, c in zip(ids, cells)]
    return [Cell(i, c) for i, c in zip(ids, cells)]


def _short_keys(paths: set[str]) -> dict[str, str]:
    parts = {p: p.split(".") for p in paths}
    out = {}
    for p, ps in parts.items():
        for n in range(1, len(ps) + 1):
            tail = ps[-n:]
            if all(q[-n:] != tail for o, q in parts.items() if o != p):
                break
        out[p] = ".".join(tail)
    return out


def _fmt(value: Any) -> str:
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    text = value if isinstance(value, str) else (
        repr(value) if isinstance(value, (bool, int, float)) or value is None
        else json.dumps(value, separators=(",", ":"), sort_keys=True, default=str))
    return re.sub(r"[^\w.,=+()\[\]{}-]", "_", text.replace('"', ""))


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``overrides`` set; ``config`` is untouched.

    ConfigDict semantics: every path must name a field the config has (a
    sweep cannot add fields), and a value must fit the field's type.

    Raises:
      ValueError: a missing field, naming it and the valid fields at that
        level; a path through a field that is not a dict; a value of the
        wrong type.
    """
    cfg = (copy.deepcopy(config) if isinstance(config, ml_collections.ConfigDict)
           else ml_collections.ConfigDict(copy.deepcopy(dict(config))))
    for path, value in overrides.items():
        node, parts = cfg, path.split(".")
        for depth, part in enumerate(parts):
            where = ".".join(parts[:depth]) or "the top level"
            if not isinstance(node, (ml_collections.ConfigDict, Mapping)):
                raise ValueError(f"sweep field {path!r}: {where} is a {type(node).__name__}, "
                                 "not a dict of fields; override it whole.")
            if part not in node.keys():
                raise ValueError(f"sweep field {path!r}: the config has no field {part!r} at "
                                 f"{where}; valid fields there: {sorted(node.keys())}.")
            if depth < len(parts) - 1:
                node = node[part]
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"sweep field {path!r} = {value!r} does not fit the config: "
                             f"{e}") from e
    return cfg


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``seeds`` as a list: a count ``n`` means ``0, ..., n - 1``.

    Raises:
      ValueError: fewer than one seed, a negative or repeated seed.
    """
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds={seeds}; a sweep needs at least 1 seed (the verdict "
                             "rule at least 2).")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise ValueError("seeds=[]; a sweep needs at least 1 seed (the verdict rule at least 2).")
    if min(out) < 0 or len(set(out)) != len(out):
        raise ValueError(f"seeds={out}; give distinct seeds >= 0.")
    return out


def consecutive_blocks(seeds: Sequence[int]) -> list[list[int]]:
    """``seeds`` cut into runs of consecutive integers (one ``num_seeds`` program each)."""
    blocks: list[list[int]] = []
    for s in seeds:
        if blocks and s == blocks[-1][-1] + 1:
            blocks[-1].append(s)
        else:
            blocks.append([s])
    return blocks


def why_not_vectorized(config: Any, num_seeds: int) -> str | None:
    """Why ``num_seeds`` seeds of ``config`` cannot share one program, or ``None``."""
    if num_seeds < 2:
        return "one seed"
    given = {k: config[k] for k in options_lib.FIELDS if k in config.keys()}
    given.update(num_seeds=num_seeds, checkpoint_every_steps=0)
    try:
        options_lib.check_with_seeds(options_lib.parse(given))
    except ValueError as e:
        return str(e)
    spec = config["schedule"] if "schedule" in config.keys() else None
    if make_schedule(spec, list(config["phases"].keys()), seed=0).feedback_every:
        return "the schedule observes feedback (not supported with vectorized seeds yet)"
    return None


# --- Running -----------------------------------------------------------------------------


def execute(cells: Sequence[Any], seeds: Sequence[int], *, run_one: Callable[[Any, int], Any],
            run_seeds: Callable[[Any, list[int]], list] | None = None,
            vectorized: bool = False) -> dict[tuple[int, int], Any]:
    """Runs every (cell, seed); returns ``{(cell index, seed index): run}``.

    ``vectorized``: one ``run_seeds(cell, seeds)`` per cell, returning one
    run per seed in seed order. Otherwise ``run_one(cell, seed)`` seed by
    seed, every cell at a seed before any at the next, so an interrupted
    sweep has whole seeds to pair.
    """
    out = {}
    if vectorized:
        for i, cell in enumerate(cells):
            runs = run_seeds(cell, list(seeds))
            if len(runs) != len(seeds):
                raise ValueError(f"run_seeds({cell!r}, ...) returned {len(runs)} runs for "
                                 f"{len(seeds)} seeds.")
            out.update({(i, j): r for j, r in enumerate(runs)})
        return out
    for j, seed in enumerate(seeds):
        for i, cell in enumerate(cells):
            out[(i, j)] = run_one(cell, seed)
    return out


def train_seeds(config: Any, seeds: Sequence[int], workdir: str | pathlib.Path,
                **train_kwargs) -> tuple[Any, float]:
    """Trains consecutive ``seeds`` of ``config`` in one ``num_seeds`` program.

    The fused executor runs the replicas, without checkpoints; replica ``i``
    is the run with seed ``seeds[0] + i``. ``config`` is not changed.

    Returns:
      ``(stacked TrainState, wall seconds of the whole program)``.
    """
    if list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
        raise ValueError(f"seeds {list(seeds)} are not consecutive; vectorized runs train "
                         "seed, seed + 1, ...")
    cfg = apply_overrides(config, {})
    with cfg.unlocked():
        cfg.seed, cfg.num_seeds = int(seeds[0]), len(seeds)
        cfg.executor, cfg.checkpoint_every_steps = "fused", 0
    t0 = time.perf_counter()
    state = experiment.train_and_evaluate(cfg, str(workdir), **{**_TRAIN_KWARGS, **train_kwargs})
    return state, time.perf_counter() - t0


@dataclasses.dataclass
class _Plan:
    """What the sweep runs: each cell's config and whether its seeds share a program."""

    root: pathlib.Path
    cells: list[Cell]
    configs: dict[str, ml_collections.ConfigDict]
    not_vectorized: dict[str, str | None]
    train_kwargs: dict[str, Any]
    say: Callable[[str], None]
    errors: dict[tuple[str, int], str] = dataclasses.field(default_factory=dict)

    def run_one(self, cell: Cell, seed: int) -> dict:
        cfg, run_dir = self.configs[cell.id], self.root / cell.id / f"seed{seed}"
        if finished(run_dir, cfg.total_steps) is None:
            cfg = apply_overrides(cfg, {})
            with cfg.unlocked():
                cfg.seed, cfg.num_seeds = seed, 1
            self.say(f"sweep: {cell.id} seed {seed}")
            try:
                experiment.train_and_evaluate(cfg, str(run_dir),
                                              **{**_TRAIN_KWARGS, **self.train_kwargs})
            except NonFiniteError as e:
                self.errors[(cell.id, seed)] = f"{type(e).__name__}: {e}"
        return self.record(cell, seed)

    def run_seeds(self, cell: Cell, seeds: list[int]) -> list[dict]:
        cfg = self.configs[cell.id]
        missing = [s for s in seeds
                   if finished(self.root / cell.id / f"seed{s}", cfg.total_steps) is None]
        for block in consecutive_blocks(missing):
            if len(block) == 1 or self.not_vectorized[cell.id]:
                for s in block:
                    self.run_one(cell, s)
            else:
                self._block(cell, block)
        return [self.record(cell, s) for s in seeds]

    def _block(self, cell: Cell, block: list[int]) -> None:
        wd = self.root / cell.id / f"seeds{block[0]}-{block[-1]}"  # old logs kept aside:
        workdir_lib.set_aside_logs(wd, "a vectorized sweep program restarted from step 0")
        self.say(f"sweep: {cell.id} seeds {block[0]}-{block[-1]} in one program")
        try:
            train_seeds(self.configs[cell.id], block, wd, **self.train_kwargs)
        except NonFiniteError as e:
            self.errors.update({(cell.id, s): f"{type(e).__name__}: {e}" for s in block})
            return
        sweep_programs.split_results(wd, [self.root / cell.id / f"seed{s}" for s in block], block,
                               {"workdir": wd.name, "seeds": block})

    def run_groups(self, seeds: list[int]) -> None:
        """Each learning-rate group's missing (cell, seed) pairs in one program."""
        ok = lambda cfg: why_not_vectorized(cfg, 2) is None
        for group in sweep_programs.groups(self.cells, self.configs, ok):
            pairs = [(c, s) for s in seeds for c in group if finished(
                self.root / c.id / f"seed{s}", self.configs[c.id].total_steps) is None]
            if len(pairs) < 2:
                continue
            label = "grid_programs/grid-" + _digest([[c.id, s] for c, s in pairs])
            workdir_lib.set_aside_logs(self.root / label, "a vectorized sweep program restarted")
            self.say(f"sweep: {len(pairs)} runs of cells {[c.id for c in group]} in one program")
            cfg = sweep_programs.program_config([self.configs[c.id] for c, _ in pairs],
                                          [s for _, s in pairs],
                                          apply_overrides(self.configs[group[0].id], {}))
            try:
                experiment.train_and_evaluate(cfg, str(self.root / label),
                                              **{**_TRAIN_KWARGS, **self.train_kwargs})
            except NonFiniteError as e:  # left to the per-cell path, which isolates the cell
                self.say(f"sweep: the shared program diverged ({e}); its cells run apart")
                continue
            sweep_programs.split_results(self.root / label, [self.root / c.id / f"seed{s}" for c, s
                                                       in pairs], [s for _, s in pairs],
                                   {"workdir": label, "replicas": len(pairs)})

    def record(self, cell: Cell, seed: int) -> dict:
        res = finished(self.root / cell.id / f"seed{seed}", self.configs[cell.id].total_steps)
        return {"cell": cell.id, "overrides": dict(cell.overrides), "seed": seed,
                "workdir": f"{cell.id}/seed{seed}",
                "final_eval": res["final_eval"] if res else None,
                "wall_time_s": res.get("wall_time_s") if res else None,
                "shared_program": bool(res and res.get("vectorized")),
                "error": None if res else self.errors.get((cell.id, seed), "did not finish")}


def run(config: Any, workdir: str | pathlib.Path, *,
        grid: Mapping[str, Sequence[Any]] | None = None,
        cells: Sequence[Mapping[str, Any]] | None = None, seeds: int | Sequence[int] = 3,
        metric: str | None = None, baseline: int | str | Mapping[str, Any] = 0,
        claim: str = "greater", alpha: float = 0.05, vectorize: str = "auto",
        name: str = "", command: str = "", train_kwargs: Mapping[str, Any] | None = None,
        print_fn: Callable[[str], None] | None = print) -> dict:
    """Runs (or resumes) a sweep and writes ``sweep.json``, the table and the plot.

    Args:
      config: the base config (``ConfigDict`` or dict), not changed.
      workdir: the sweep's directory; run the same sweep again to resume it.
      grid, cells: the cells (see :func:`expand`).
      seeds: a count ``n`` (seeds ``0..n-1``) or the seeds; every cell runs each.
      metric: ``"<eval set>/<metric>"`` of ``final_eval`` to compare
        (``"images_test/accuracy"``); ``None``: no table or plot.
      baseline: the cell every other is compared with: index, id or overrides.
      claim: ``"greater"`` (a cell beats the baseline by a higher metric) or
        ``"less"`` (by a lower one, e.g. a loss).
      alpha: the verdict's interval is ``1 - alpha``.
      vectorize: ``"auto"`` (a cell's seeds in one program where the config
        allows), ``"on"`` (refuse a config that does not), ``"off"``, or
        ``"grid"`` (as auto, and cells that differ only in learning rates
        train together as replicas of one program: :mod:`alternating.sweep_programs`).
      name: a title for the table (e.g. ``configs/default.py:smoke``).
      command: the command that reproduces the sweep, kept in the outputs.
      train_kwargs: passed to ``train_and_evaluate`` (default: no progress
        bar, no plot, no printing).
      print_fn: where progress lines go (``None``: nowhere).

    Returns:
      The contents of ``sweep.json``.

    Raises:
      ValueError: any bad input (see the module docstring), before any run;
        a ``metric`` no run reports (after the runs, with ``sweep.json``
        written and the valid names listed).
    """
    say = print_fn or (lambda s: None)
    seeds, cell_list = seed_list(seeds), expand(grid, cells)
    base = sweep_report.resolve_baseline(cell_list, baseline)
    if vectorize not in VECTORIZE:
        raise ValueError(f"vectorize={vectorize!r}; valid: {list(VECTORIZE)}.")
    if claim not in verdict.CLAIMS or not 0 < alpha < 1:
        raise ValueError(f"claim={claim!r}, alpha={alpha!r}; valid claims: "
                         f"{list(verdict.CLAIMS)}, alpha strictly between 0 and 1.")
    if metric is not None and metric.count("/") != 1:
        raise ValueError(f"metric={metric!r}; write '<eval set>/<metric>', e.g. "
                         "'images_test/accuracy'.")
    plan = _prepare(config, pathlib.Path(workdir), cell_list, len(seeds), vectorize=vectorize,
                    train_kwargs=dict(train_kwargs or {}), say=say)
    t0 = time.perf_counter()
    if vectorize == "grid":  # first: what it trains, execute() then finds finished
        plan.run_groups(seeds)
    out = execute(plan.cells, seeds, run_one=plan.run_one, run_seeds=plan.run_seeds,
                  vectorized=vectorize != "off")
    summary = {
        "name": name, "command": command, "seeds": seeds,
        "cells": [{"id": c.id, "overrides": dict(c.overrides),
                   "vectorized": vectorize != "off" and not plan.not_vectorized[c.id],
                   "not_vectorized_because": plan.not_vectorized[c.id] if vectorize != "off"
                   else "vectorize='off'"} for c in plan.cells],
        "baseline": base.id, "wall_time_s": round(time.perf_counter() - t0, 3),
        "runs": [out[(i, j)] for i in range(len(plan.cells)) for j in range(len(seeds))]}
    metrics.write_results(plan.root / "sweep.json", summary)
    if metric is not None:
        summary["comparison"] = sweep_report.report(plan.root, summary, metric=metric,
                                                    claim=claim, alpha=alpha)
        metrics.write_results(plan.root / "sweep.json", summary)
    failed = [r for r in summary["runs"] if r["error"]]
    say(f"sweep: {len(summary['runs'])} runs, {len(failed)} failed; wrote "
        f"{plan.root / 'sweep.json'}" + (", comparison.md, comparison.png" if metric else ""))
    return summary


def _prepare(config: Any, root: pathlib.Path, cell_list: list[Cell], n: int, *,
             vectorize: str, train_kwargs: dict, say: Callable[[str], None]) -> _Plan:
    """Each cell's config checked, before any run; then each cell's ``cell.json``."""
    configs, why = {}, {}
    for cell in cell_list:
        cfg = apply_overrides(config, cell.overrides)
        try:
            experiment.validate(cfg)
            options_lib.parse({k: cfg[k] for k in options_lib.FIELDS if k in cfg.keys()})
            configs[cell.id], why[cell.id] = cfg, why_not_vectorized(cfg, n)
        except ValueError as e:
            raise ValueError(f"cell {cell.id}: {e}") from e
        if vectorize == "on" and why[cell.id] and n > 1:
            raise ValueError(f"cell {cell.id}: vectorize='on' but its seeds cannot share one "
                             f"program: {why[cell.id]}")
        _check_fingerprint(root / cell.id, cell, cfg)
    for cell in cell_list:
        if vectorize in ("auto", "grid") and why[cell.id] and n > 1:
            say(f"sweep: {cell.id}: one run per seed ({why[cell.id]})")
        path = root / cell.id / "cell.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_results(path, {"id": cell.id, "overrides": dict(cell.overrides),
                                     "config": _fingerprint(configs[cell.id])})
    return _Plan(root, cell_list, configs, why, train_kwargs, say)


def _fingerprint(cfg: Any) -> dict:
    plain = json.loads(json.dumps(json.loads(cfg.to_json_best_effort()), sort_keys=True))
    return {k: v for k, v in plain.items() if k not in _NOT_FINGERPRINTED}


def _check_fingerprint(cell_dir: pathlib.Path, cell: Cell, cfg: Any) -> None:
    try:
        saved = json.loads((cell_dir / "cell.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError):
        return
    diff = sweep_programs.config_diff(saved, _fingerprint(cfg))
    if diff:
        raise ValueError(f"cell {cell.id} in {cell_dir.parent} was run with another config "
                         f"(differing: {diff[:10]}); pass a new workdir, or move "
                         f"{cell_dir.name}/ away to rerun it.")

"""Fair arms for the continual-learning pages (issue 16): one learning-rate grid, chosen on
validation data carved from the training split, scored from the accuracy matrix.

``experiments/common.tune_lr`` scores a run from its ``final_eval``; a continual
run's figures are its accuracy matrix (``results.json`` → ``continual``, or
``merge`` for the merging evaluator), one entry per replica, and its held-out
data sit in the evaluators and hooks as well as in ``config.data``. So the
seven ``experiments/cl_*.py`` pages tune through :func:`tune` here:

* :func:`validation_config`: ``common.validation_config``, which moves every
  data spec of the config: the streams and the training data the hooks read
  (EWC's Fisher, the class statistics of NMC / LDA, snapshots, replay) to
  ``train[:80%]``, every test spec of the eval sets and evaluators (the
  accuracy matrix, the merge evaluator) to ``train[80%:]``; no spec on a
  ``train`` or ``test`` split is left (checked). Each evaluator task also
  gets an eval set on its held-out data (``<task>_val``): the grid path
  splits a program's results per run through ``final_eval``, and these give
  each run one (their last-row accuracies are checked against the matrix).
* :func:`tune`: per config, one ``alternating.sweep.run`` with
  ``vectorize='grid'`` whose cells differ only in every phase's optimizer
  ``lr`` (so all rates and seeds are one program), each run's replica entry
  scored by ``score(arm, entry)``; the page's ``grid`` field comes from
  ``experiments/rerun.py:grid_field`` (choice: the best mean validation
  score, the first of ties in grid order).
* :func:`with_lr`: a config at an arm's chosen rate, for its test runs.

With a schedule (``configs/cl_merge.py``'s cosine and infinite arms) the
optimizer's ``lr`` is the peak and the schedule's other rates are factors of
it, so a rate of the grid scales the whole schedule, its shape unchanged.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Callable, Mapping, Sequence

from experiments import common, rerun

# The grid around the rate every arm had (Adam 1e-3): x{0.1, 0.3, 1, 3, 10}. (A first run of
# the pages with x{0.3, 1, 3} chose an end of the grid for most arms.) The pages' ``--rates``
# gives another.
RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
PARAM = "lr (every phase)"


def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def validation_config(cfg: Any, holdout: int = 20) -> Any:
    """A copy of a continual config that trains on ``train[:100 - holdout %]`` and scores
    every evaluator (and the added ``<task>_val`` eval sets) on ``train[100 - holdout %:]``.

    Raises:
      ValueError: a data spec that is not a named dataset on its ``train`` or
        ``test`` split (named with its path), or a spec left on ``train`` /
        ``test`` afterwards.
    """
    cfg = common.validation_config(cfg, holdout)  # every data spec, hooks' and evaluators' too
    with cfg.unlocked():
        evals = dict(_plain(cfg.get("eval") or {}))
        for ev in cfg.get("evaluators") or []:
            for t in ev.get("tasks") or []:
                phase = t.get("phase") or t["name"]
                evals[f"{t['name']}_val"] = {"data": dict(t["data"]), "phase": phase,
                                             "batch_size": int(ev.get("batch_size") or 128)}
        cfg.eval = evals
    return cfg


def with_lr(cfg: Any, lr: float) -> Any:
    """A copy of ``cfg`` with every phase's optimizer ``lr`` (a schedule's peak) set to ``lr``."""
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    return sweep.apply_overrides(cfg, {f"phases.{p}.optimizer.lr": float(lr)
                                       for p in cfg.phases})


def _entry(root: pathlib.Path, run: Mapping[str, Any], cells: int, seeds: list[int],
           index: int, block: str) -> dict[str, Any]:
    """One run's own entry of ``results.json[block]`` (a program's ``per_seed`` holds every
    replica's: the grid program's replicas are seed-major, cell-minor)."""
    res = json.loads((root / run["workdir"] / "results.json").read_text(encoding="utf-8"))
    out, vec = res[block], res.get("vectorized") or {}
    if "per_seed" not in out:
        return out
    if "replicas" in vec:  # one grid program for every (cell, seed)
        if vec["replicas"] != cells * len(seeds):
            raise ValueError(f"{root / run['workdir']}: a grid program of {vec['replicas']} "
                             f"runs, not the {cells} x {len(seeds)} of this grid (a resumed "
                             "sweep); tune in a fresh workdir.")
        i = seeds.index(run["seed"]) * cells + index
    else:  # one cell's seed block
        i = list(vec["seeds"]).index(run["seed"])
    entry = out["per_seed"][i]
    if block == "continual":  # the run's own final_eval is its last matrix row
        last = dict(zip(entry["tasks"], entry["matrix"][-1]))
        for task, acc in last.items():
            got = run["final_eval"].get(f"{task}_val", {}).get("accuracy")
            if got is not None and abs(float(got) - acc) > 1e-4:
                raise ValueError(f"{root / run['workdir']}: replica {i}'s matrix row "
                                 f"({task} {acc}) is not the run's final_eval ({got}).")
    return entry


def tune(configs: Mapping[str, Any], seeds: Sequence[int], workdir: pathlib.Path,
         score: Callable[[str, dict], float], description: str, *,
         rates: Sequence[float] = RATES, arms: Mapping[str, str] | None = None,
         block: str = "continual", param: str = PARAM) -> dict[str, Any]:
    """Each arm's learning rate of ``rates``, chosen on validation; the page's ``grid`` field.

    Args:
      configs: ``{key: config}``; each config's grid (``rates`` x ``seeds``) is
        one sweep, one program, in ``workdir / key``.
      seeds: the tuning seeds.
      workdir: an empty folder (a resumed sweep cannot be told apart by replica).
      score: ``score(arm, entry)``: an arm's validation score of one run's
        entry of ``results.json[block]`` (higher is better).
      description: what ``score`` measures, for the page.
      arms: ``{arm: config key}`` where several arms read one config's runs
        (the merging evaluator's methods); default: each config is one arm.
      block: the results entry the runs are scored from.
      param: the tuned parameter's name on the page.
    """
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    arms = dict(arms or {k: k for k in configs})
    seeds, rates = [int(s) for s in seeds], [float(r) for r in rates]
    per = {a: {str(r): [] for r in rates} for a in arms}
    for key, cfg in configs.items():
        vcfg = validation_config(cfg)
        cells = [{f"phases.{p}.optimizer.lr": r for p in vcfg.phases} for r in rates]
        root = pathlib.Path(workdir) / key
        out = sweep.run(vcfg, root, cells=cells, seeds=seeds, vectorize="grid", print_fn=None)
        ids = [c["id"] for c in out["cells"]]
        for run in out["runs"]:
            if run["final_eval"] is None:  # a diverged run scores nothing
                continue
            i = ids.index(run["cell"])
            entry = _entry(root, run, len(rates), seeds, i, block)
            for arm, k in arms.items():
                if k == key:
                    per[arm][str(rates[i])].append(float(score(arm, entry)))
    scores = {a: {r: round(sum(v) / len(v), 4) for r, v in p.items() if v}
              for a, p in per.items()}
    for arm, s in scores.items():
        print(f"{arm}: validation {s}", flush=True)
    return rerun.grid_field(param, rates, f"{description}, mean over seeds {seeds}", scores)


def intro(grid: Mapping[str, Any] | None, tune_seeds: Sequence[int],
          seeds: Sequence[int]) -> list[str]:
    """The intro paragraph on the tuning (none for an untuned ``--quick`` page)."""
    if not grid:
        return ["Not tuned (`--quick`): every arm at the configs' rate, 1e-3."]
    picks = ", ".join(f"`{a}` {v:g}" for a, v in grid["chosen"].items())
    return [f"Tuning (issue 16, fair arms): every arm ran the {grid['param']} grid "
            f"{[float(v) for v in grid['values']]} on seeds {list(tune_seeds)}, trained on "
            "digits train[:80%] (the streams and the hooks' training data) and scored on "
            "train[80%:] (every evaluator: the accuracy matrix), never on the test split; "
            f"each arm's rate is the best mean validation {grid['metric'].split(',')[0]}. "
            f"Chosen: {picks}. The reported runs then train on the whole train split at the "
            f"chosen rate, seeds {list(seeds)}, tested on the test split (separate runs from "
            "the tuning ones). The table below gives the validation scores."]


def notes(grid: Mapping[str, Any] | None) -> list[str]:
    """The edge note (``experiments/rerun.py:edge_note``) of a tuned page."""
    return rerun.edge_note(grid) if grid else []

"""Fair arms for the continual-learning pages (issue 16): one learning-rate grid, chosen on
validation data carved from the training split, scored from the accuracy matrix.

A continual run's figures are its accuracy matrix (``results.json`` →
``continual``, or ``merge`` for the merging evaluator), one entry per replica,
and its held-out data sit in the evaluators and hooks as well as in
``config.data``. So the seven ``experiments/cl_*.py`` pages tune through
:func:`tune` here:

* :func:`validation_config`: ``common.validation_config``, which moves every
  data spec of the config: the streams and the training data the hooks read
  (EWC's Fisher, the class statistics of NMC / LDA, snapshots, replay) to
  ``train[:80%]``, every test spec of the eval sets and evaluators (the
  accuracy matrix, the merge evaluator) to ``train[80%:]``; no spec on a
  ``train`` or ``test`` split is left (checked). Each evaluator task also
  gets an eval set on its held-out data (``<task>_val``): the grid path
  splits a program's results per run through ``final_eval``, and these give
  each run one (their last-row accuracies are checked against the matrix).
* :func:`tune`: ``experiments/tuning.py:tune_configs`` (per config, one
  ``alternating.sweep.run`` with ``vectorize='grid'`` whose cells differ only
  in every phase's optimizer ``lr``, so all rates and seeds are one program;
  the grid widened once at an end an arm chose), each run's replica entry
  scored by ``score(arm, entry)`` (choice: the best mean validation score,
  the first of ties in grid order).
* :func:`with_lr`: a config at an arm's chosen rate, for its test runs.

With a schedule (``configs/cl_merge.py``'s cosine and infinite arms) the
optimizer's ``lr`` is the peak and the schedule's other rates are factors of
it, so a rate of the grid scales the whole schedule, its shape unchanged.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Mapping, Sequence

from experiments import common, rerun, tuning

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


def tune(configs: Mapping[str, Any], seeds: Sequence[int], workdir: pathlib.Path,
         score: Callable[[str, dict], float], description: str, *,
         rates: Sequence[float] = RATES, arms: Mapping[str, str] | None = None,
         block: str = "continual", param: str = PARAM,
         lambdas: bool = False, widen: int = 1) -> dict[str, Any]:
    """:func:`experiments.tuning.tune_configs` on :func:`validation_config`, scored from
    each run's entry of ``results.json[block]`` (the accuracy matrix); ``lambdas``: every
    config with a loss weight (:func:`lambda_of`) also searches it, jointly with the rate,
    over :data:`LAMBDA_FACTORS` times its own value; ``widen``: the rounds of widening
    (``tuning.tune_configs``)."""
    method = {k: {"values": [float(f"{lambda_of(c) * f:.3g}") for f in LAMBDA_FACTORS],
                  "set": with_lambda}
              for k, c in configs.items() if lambdas and lambda_of(c) is not None}
    return tuning.tune_configs(configs, seeds, workdir, score, description, rates=rates,
                               prepare=validation_config, block=block, arms=arms, param=param,
                               method=method, method_param=LAMBDA, widen=widen)


# The method weight's grid around the config's value (EWC 1000, L2 1, LwF 1, feature
# distillation 0.1): x{0.1, 1, 10}, widened at an end like the rates.
LAMBDA_FACTORS = (0.1, 1.0, 10.0)
LAMBDA = "lambda"


def lambda_of(cfg: Any) -> float | None:
    """The loss weight ``lam`` of a config's phases (EWC, L2, LwF, feature distillation), or
    ``None`` (a method without one).

    Raises:
      ValueError: phases with different ``lam`` values (one weight is searched).
    """
    got = {float(p["loss_kwargs"]["lam"]) for p in cfg.phases.values()
           if "lam" in (p.get("loss_kwargs") or {})}
    if len(got) > 1:
        raise ValueError(f"phases with different loss_kwargs.lam {sorted(got)}: one weight "
                         "per config is searched.")
    return got.pop() if got else None


def with_lambda(cfg: Any, lam: float) -> Any:
    """``cfg`` with every phase's ``loss_kwargs.lam`` that exists set to ``lam`` (in place)."""
    if lambda_of(cfg) is None:
        raise ValueError("with_lambda: no phase of this config has loss_kwargs.lam.")
    for phase in cfg.phases.values():
        if "lam" in (phase.get("loss_kwargs") or {}):
            phase["loss_kwargs"] = {**dict(phase["loss_kwargs"]), "lam": float(lam)}
    return cfg


def chosen(cfg: Any, grid: Mapping[str, Any], arm: str) -> Any:
    """A copy of ``cfg`` at ``arm``'s chosen rate and, where the grid searched one, its
    chosen lambda."""
    out = with_lr(cfg, grid["chosen"][arm])
    lam = ((grid.get("method") or {}).get("chosen") or {}).get(arm)
    return out if lam is None else with_lambda(out, lam)


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


def lambda_intro(grid: Mapping[str, Any] | None) -> list[str]:
    """The paragraph on the methods' loss weights searched with the rate (none if none)."""
    m = (grid or {}).get("method")
    if not m:
        return []
    picks = ", ".join(f"`{a}` {v:g} (its grid {[float(x) for x in m['values'][a]]})"
                      for a, v in m["chosen"].items())
    return ["Each method's loss weight lambda (`loss_kwargs.lam`, every phase) was searched "
            "jointly with the rate, on the same validation split and seeds: the rate grid at "
            f"each lambda of x{list(LAMBDA_FACTORS)} its config's value, widened beyond an end "
            "the arm chose like the rates; the arm keeps its best (lambda, rate) pair. "
            f"Chosen lambdas: {picks}. The rates above are the ones chosen at these lambdas."]


def notes(grid: Mapping[str, Any] | None) -> list[str]:
    """The edge note (``experiments/rerun.py:edge_note``) of a tuned page."""
    return rerun.edge_note(grid) if grid else []

"""What the reruns of the older reproductions (CCL, AdvMoE, AReaL, DUMP) share.

* The learning-rate grid of issue 16: every arm tries the same values, each
  arm's value is chosen on a validation set carved from the training data
  (never the test set), and the page's ``grid`` field records the scores and
  the choices (:func:`choose`, :func:`grid_field`).
* A per-run table, for the notes of a page and for the one-seed page.
* The one-seed page (:func:`write_one_seed`): ``--quick`` runs of one seed
  cannot carry a verdict (:func:`experiments.pages.check` needs two seeds or
  more), so they write a plain page that says so and lists each run; no JSON.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

NO_VERDICT = ("One seed only: no verdict. Every comparison is not judged (fewer than 3 "
              "seeds; the verdict rule of `alternating/verdict.py` needs at least 2, and a "
              "verdict a reader can use 5 or more).")


def choose(scores: Mapping[str, Mapping[str, float]], values: Sequence[float],
           higher: bool = True) -> dict[str, float]:
    """Each arm's value with the best validation score (the first of ties, in grid order).

    Args:
        scores: {arm: {str(value): validation score}}.
        values: the grid, in order.
        higher: whether a higher score is better.

    Raises:
        ValueError: an arm lacks a score for a value of the grid.
    """
    chosen = {}
    for arm, per in scores.items():
        missing = [v for v in values if str(v) not in per]
        if missing:
            raise ValueError(f"grid: arm {arm!r} has no validation score for {missing}; "
                             f"the grid is {list(values)}.")
        s = np.array([per[str(v)] for v in values], float)
        chosen[arm] = values[int(np.argmax(s) if higher else np.argmin(s))]
    return chosen


def grid_field(param: str, values: Sequence[float], metric: str,
               scores: Mapping[str, Mapping[str, float]], higher: bool = True) -> dict[str, Any]:
    """The page's ``grid`` field: the values, each arm's validation scores and its choice."""
    values = list(values)
    return {"param": param, "values": values, "metric": metric,
            "scores": {a: {k: float(v) for k, v in per.items()} for a, per in scores.items()},
            "chosen": choose(scores, values, higher)}


def tune_grid(values: Sequence[float], run_values, scores_of, param: str, metric: str, *,
              higher: bool = True, widen: bool = True) -> tuple[dict[str, Any], list]:
    """Every value of the grid on every seed, each arm's choice on validation, and the grid
    widened beyond an end an arm chose (``experiments/tuning.py:widened``), ``widen`` rounds
    at most (``True``: one).

    For scripts that run each (arm, value) cell on all their seeds and score the
    validation figures of those same runs.

    Args:
      values: the grid; a grid of fewer than 3 values (a ``--quick`` run) never widens.
      run_values: ``run_values(values) -> runs``: every arm at each of ``values``.
      scores_of: ``scores_of(runs, values) -> {arm: {str(value): score}}``.
      param, metric, higher: as :func:`grid_field`.
      widen: the rounds of widening at an end an arm chose.

    Returns:
      ``(grid, runs)``: the page's ``grid`` field (``widened: {first, added}``
      when it grew) and every run made.
    """
    from experiments import tuning  # pylint: disable=g-import-not-at-top
    values = [float(v) for v in values]
    runs = list(run_values(values))
    values, record = tuning.widen_rounds(
        values, int(widen) if len(values) >= 3 else 0,
        lambda vals: choose(scores_of(runs, vals), vals, higher),
        lambda more: runs.extend(run_values(more)))
    grid = grid_field(param, values, metric, scores_of(runs, values), higher)
    if record:
        grid["widened"] = record
    return grid, runs


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table, one paragraph (floats to 4 significant digits)."""
    cell = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_one_seed(name: str, title: str, intro: Sequence[str], runs_table: str,
                   command: str, out: str | pathlib.Path) -> pathlib.Path:
    """The page of a one-seed run: intro, :data:`NO_VERDICT`, the per-run table; ``.md`` only."""
    lines = [f"# {title}", ""]
    for para in intro:
        lines += [para, ""]
    lines += [NO_VERDICT, "", "## Per run", "", runs_table, "", "## Reproduce", "", "```",
              command, "```", ""]
    path = pathlib.Path(out) / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def edge_note(grid: Mapping[str, Any]) -> list[str]:
    """The arms whose chosen value is an end of the grid (:func:`experiments.tuning.edge_notes`)."""
    from experiments import tuning  # pylint: disable=g-import-not-at-top
    return tuning.edge_notes(dict(grid))

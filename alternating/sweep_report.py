"""A sweep's comparison: every cell against a baseline cell, paired by seed.

:func:`report` reads the runs that :func:`alternating.sweep.run` recorded
(``sweep.json``'s ``runs``) and writes

* ``comparison.md``: each cell's figures (mean, sample std, the value per
  seed) and the verdict table of :func:`alternating.verdict.render_table`;
* ``comparison.png``: the metric per cell, one point per seed, the points of
  one seed joined across cells (the pairing the verdict uses).

The verdict is :func:`alternating.verdict.compare` of a cell (treatment)
against the baseline on the seeds where both have a finite value, in seed
order. A seed missing from either arm (a failed run) is dropped from both and
the row says which seeds were compared; with fewer than 2 such seeds the
rule cannot apply and the row says so instead of guessing.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from alternating import verdict


def resolve_baseline(cells: Sequence[Any], baseline: int | str | Mapping[str, Any]) -> Any:
    """The baseline among ``cells`` (:class:`alternating.sweep.Cell`): by index, id or overrides.

    Raises:
      ValueError: no such cell (the valid ids are listed).
    """
    for i, c in enumerate(cells):
        if isinstance(baseline, int) and not isinstance(baseline, bool):
            if i == baseline:
                return c
        elif baseline == c.id or isinstance(baseline, Mapping) and dict(baseline) == dict(
                c.overrides):
            return c
    raise ValueError(f"baseline={baseline!r} is not a cell of this sweep; give an index "
                     f"(0..{len(cells) - 1}) or an id: {[c.id for c in cells]}.")


def metric_values(summary: Mapping[str, Any], metric: str) -> dict[str, dict[int, float | None]]:
    """``{cell id: {seed: value}}`` of ``metric`` (``"<set>/<name>"``); ``None`` if a run failed.

    Raises:
      ValueError: no finished run reports ``metric`` (the names they report are listed).
    """
    set_name, name = metric.split("/")
    out: dict[str, dict[int, float | None]] = {c["id"]: {} for c in summary["cells"]}
    known: set[str] = set()
    for r in summary["runs"]:
        final = r["final_eval"] or {}
        known.update(f"{s}/{m}" for s, ms in final.items() for m in ms)
        value = final.get(set_name, {}).get(name)
        out[r["cell"]][r["seed"]] = None if value is None else float(value)
    if known and metric not in known:
        raise ValueError(f"metric={metric!r} is not in the runs' final_eval; valid: "
                         f"{sorted(known)}.")
    return out


def compare_cells(values: Mapping[str, Mapping[int, float | None]], baseline: str, *,
                  claim: str = "greater", alpha: float = 0.05) -> tuple[list, list[str]]:
    """The verdict of every other cell against ``baseline``, paired by seed.

    Returns:
      ``(verdicts, notes)``: a :class:`alternating.verdict.Verdict` per cell
      that has at least 2 seeds in common with the baseline (named ``cell vs
      baseline``, plus the seeds when some were dropped), and a note per cell
      that has not.
    """
    ok = lambda v: v is not None and math.isfinite(v)  # noqa: E731
    rows, notes = [], []
    base = values[baseline]
    for cell, vals in values.items():
        if cell == baseline:
            continue
        seeds = [s for s in base if ok(base[s]) and ok(vals.get(s))]
        name = f"{cell} vs {baseline}"
        if len(seeds) < 2:
            notes.append(f"{name}: {len(seeds)} seed(s) with values in both cells; the verdict "
                         "rule needs at least 2.")
            continue
        if len(seeds) < len(base):
            name += f" (seeds {', '.join(map(str, seeds))})"
        rows.append(verdict.compare([vals[s] for s in seeds], [base[s] for s in seeds],
                                    claim=claim, alpha=alpha, name=name))
    return rows, notes


def report(root: str | pathlib.Path, summary: Mapping[str, Any], *, metric: str,
           claim: str = "greater", alpha: float = 0.05) -> dict[str, Any]:
    """Writes ``comparison.md`` and ``comparison.png`` under ``root``.

    Args:
      root: the sweep's directory.
      summary: ``sweep.json``'s contents (``cells``, ``runs``, ``baseline``, ``seeds``).
      metric: ``"<eval set>/<metric>"`` of the runs' ``final_eval``.
      claim: ``"greater"`` or ``"less"``: which direction beats the baseline.
      alpha: the verdict's interval is ``1 - alpha``.

    Returns:
      The comparison kept in ``sweep.json``: metric, baseline, claim, alpha,
      each verdict's ``to_dict()`` and the notes.
    """
    root = pathlib.Path(root)
    values = metric_values(summary, metric)
    rows, notes = compare_cells(values, summary["baseline"], claim=claim, alpha=alpha)
    (root / "comparison.md").write_text(
        markdown(summary, values, rows, notes, metric=metric, claim=claim), encoding="utf-8")
    plot(root / "comparison.png", values, metric=metric, baseline=summary["baseline"])
    return {"metric": metric, "baseline": summary["baseline"], "claim": claim, "alpha": alpha,
            "verdicts": [v.to_dict() for v in rows], "notes": notes}


def markdown(summary: Mapping[str, Any], values: Mapping[str, Mapping[int, float | None]],
             rows: list, notes: list[str], *, metric: str, claim: str) -> str:
    """``comparison.md``: the setup, each cell's figures, the verdicts and how to read them."""
    seeds, base = summary["seeds"], summary["baseline"]
    lines = [f"# Sweep{': ' + summary['name'] if summary.get('name') else ''}", "",
             f"Metric: `{metric}` of the final evaluation. Baseline: `{base}`. Claim: a cell's "
             f"{metric} is {claim} than the baseline's. Seeds: {', '.join(map(str, seeds))}; "
             "each cell is compared with the baseline seed by seed.", "",
             "| cell | mean | std | per seed |", "|---|---|---|---|"]
    for cell, vals in values.items():
        got = [vals[s] for s in seeds if vals.get(s) is not None]
        per = ", ".join("failed" if vals.get(s) is None else f"{vals[s]:.4g}" for s in seeds)
        mean = f"{np.mean(got):.4g}" if got else "-"
        std = f"{np.std(got, ddof=1):.3g}" if len(got) > 1 else "-"
        lines.append(f"| {'**' + cell + '**' if cell == base else cell} | {mean} | {std} | {per} |")
    lines += ["", "## Verdicts", ""]
    lines += [verdict.render_table(rows), ""] if rows else []
    lines += [f"* {n}" for n in notes] + ([""] if notes else [])
    lines += ["Rule (`alternating.verdict.compare`): the per-seed differences cell - baseline, a "
              "paired t interval of their mean; **confirmed** when it excludes zero on the "
              "claimed side, **contradicted** on the other side, **inconclusive** when it holds "
              "zero (not \"no effect\": effects beyond its bound on the claimed side are ruled "
              "out; the detectable effect is what these seeds could find at power 0.8). A cell "
              "with no true effect is confirmed by chance with probability about alpha/2, so "
              "with many cells expect some chance confirmations."]
    if summary.get("command"):
        lines += ["", "## Reproduce", "", "```", summary["command"], "```"]
    return "\n".join(lines) + "\n"


def plot(path: str | pathlib.Path, values: Mapping[str, Mapping[int, float | None]], *,
         metric: str, baseline: str) -> None:
    """The metric per cell: a point per seed, a seed's points joined, the mean as a bar."""
    # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    cells = list(values)
    seeds = sorted({s for v in values.values() for s in v})
    fig = Figure(figsize=(max(5.0, 1.1 * len(cells) + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    for k, s in enumerate(seeds):
        ys = [np.nan if values[c].get(s) is None else values[c][s] for c in cells]
        ax.plot(range(len(cells)), ys, "o-", color=f"C{k % 10}", alpha=0.6, lw=0.8, ms=4,
                label=f"seed {s}")
    for i, c in enumerate(cells):
        got = [v for v in values[c].values() if v is not None]
        if got:
            ax.hlines(np.mean(got), i - 0.25, i + 0.25, color="k", lw=2)
    ax.set_xticks(range(len(cells)), cells, rotation=30 if len(cells) > 3 else 0, ha="right"
                  if len(cells) > 3 else "center", fontsize=8)
    for label in ax.get_xticklabels():
        if label.get_text() == baseline:
            label.set_fontweight("bold")
    ax.set_ylabel(metric)
    ax.set_title(metric, fontsize=10)
    ax.set_xlabel("cell (bold: baseline); a point per seed, joined across cells; bar: mean",
                  fontsize=8)
    if len(seeds) <= 10:
        ax.legend(fontsize=7, loc="best")
    FigureCanvasAgg(fig).print_png(str(path))

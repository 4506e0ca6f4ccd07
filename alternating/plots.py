"""Plots of a finished (or running) run, read back from its workdir.

`plot_run(workdir)` draws the per-phase training curves, the evaluation curves
of each evaluation set and a timeline of which phase ran when, from the files
that `metrics.MetricWriter` writes (`metrics.jsonl`, `timeline.jsonl`).

The figures are built with `matplotlib.figure.Figure` and rendered with the
Agg canvas directly, never through `pyplot`: importing or calling this module
neither changes the backend of a user's notebook nor leaves figures open in
pyplot's global registry. Each phase keeps one color across every panel.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from alternating import metrics

Segment = tuple[int, int, str]

# Above this many (merged) segments, individual bars become sub-pixel slivers
# and slow to draw; the timeline shows each phase's share of every step bin.
_MAX_BARS = 2000
_TIMELINE_BINS = 400


def phase_timeline(workdir: str | os.PathLike[str]) -> list[Segment]:
    """Reads which phase ran when from `workdir/timeline.jsonl`.

    Adjacent segments of one phase are merged. A resumed run appends segments
    for the steps it redoes after its checkpoint; a segment that starts before
    the end of the previous ones replaces everything from its start on, so the
    result is sorted and non-overlapping and describes the run as it finished.

    Args:
      workdir: the run directory.

    Returns:
      `(start, end, phase)` half-open step ranges, in step order; empty when the
      run wrote no timeline.
    """
    path = os.path.join(os.fspath(workdir), "timeline.jsonl")
    if not os.path.exists(path):
        return []
    segments: list[Segment] = []
    for row in metrics.read_jsonl(path):
        start, end, phase = int(row["start"]), int(row["end"]), str(row["phase"])
        if end <= start:
            continue
        while segments and segments[-1][1] > start:  # Redone after a resume.
            s, _, p = segments.pop()
            if s < start:
                segments.append((s, start, p))
        if segments and segments[-1][1] == start and segments[-1][2] == phase:
            segments[-1] = (segments[-1][0], end, phase)
        else:
            segments.append((start, end, phase))
    return segments


def _latest_rows(rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Drops rows superseded by a resumed run (rows of one split, file order)."""
    out: list[Mapping[str, Any]] = []
    for row in rows:
        step = row["step"]
        if out and step < out[-1]["step"]:
            # The run restarted from a checkpoint before this step: the old
            # rows from here on describe steps that were run again.
            while out and out[-1]["step"] >= step:
                out.pop()
        out.append(row)
    return out


def _series(rows: Sequence[Mapping[str, Any]], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of metric `name`; non-finite values become gaps (NaN)."""
    pairs = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = np.asarray(pairs, dtype=np.float64).T
    values[~np.isfinite(values)] = np.nan
    return steps, values


def _palette(names: Sequence[str], cmap: str, offset: int = 0) -> dict[str, Any]:
    import matplotlib  # pylint: disable=g-import-not-at-top
    colors = matplotlib.colormaps[cmap].colors
    return {n: colors[(i + offset) % len(colors)] for i, n in enumerate(names)}


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _coverage(segments: Sequence[Segment], edges: np.ndarray) -> np.ndarray:
    """Steps covered by sorted, disjoint `segments` before each edge."""
    starts = np.array([s for s, _, _ in segments], dtype=np.float64)
    lengths = np.array([e - s for s, e, _ in segments], dtype=np.float64)
    before = np.concatenate([[0.0], np.cumsum(lengths)])  # Steps before segment i.
    idx = np.searchsorted(starts, edges, side="right") - 1
    inside = np.clip(edges - starts[np.maximum(idx, 0)], 0, lengths[np.maximum(idx, 0)])
    return np.where(idx >= 0, before[np.maximum(idx, 0)] + inside, 0.0)


def _draw_timeline(ax, segments: Sequence[Segment], phases: Sequence[str],
                   colors: Mapping[str, Any]) -> None:
    row = {p: i for i, p in enumerate(phases)}
    if len(segments) <= _MAX_BARS:
        by_phase: dict[str, list[tuple[int, int]]] = {p: [] for p in phases}
        for s, e, p in segments:
            by_phase[p].append((s, e - s))
        for p, bars in by_phase.items():
            if bars:
                ax.broken_barh(bars, (row[p] - 0.4, 0.8), facecolors=colors[p])
        ax.set_title("phase timeline", fontsize="small", loc="left")
    else:
        lo, hi = segments[0][0], segments[-1][1]
        n_bins = max(1, min(_TIMELINE_BINS, hi - lo))
        edges = np.linspace(lo, hi, n_bins + 1)
        for p in phases:
            own = [seg for seg in segments if seg[2] == p]
            share = np.diff(_coverage(own, edges)) / np.diff(edges)
            # Bar height is the phase's share of the bin's steps, rising from
            # the row's baseline (the y axis is inverted: larger y is lower).
            base = row[p] + 0.4
            ax.fill_between(edges, base, base - 0.8 * np.append(share, share[-1]),
                            step="post", color=colors[p], linewidth=0)
        ax.set_title(f"phase share of each {(hi - lo) / n_bins:.3g}-step bin "
                     f"({len(segments)} segments)", fontsize="small", loc="left")
    ax.set_yticks(range(len(phases)), labels=phases)
    ax.set_ylim(len(phases) - 0.5, -0.5)  # First phase on top, as in the legend.
    ax.set_xlabel("step")


def _draw_metric(ax, name: str, train: Sequence[Mapping[str, Any]],
                 evals: Sequence[Mapping[str, Any]], phases: Sequence[str],
                 sets: Sequence[str], phase_colors: Mapping[str, Any],
                 set_colors: Mapping[str, Any], log_if_positive: bool) -> None:
    values = []
    for p in phases:
        steps, v = _series([r for r in train if r["phase"] == p], name)
        if len(steps):
            ax.plot(steps, v, color=phase_colors[p], linewidth=1, label=f"train/{p}")
            values.append(v)
    for s in sets:
        steps, v = _series([r for r in evals if r["set"] == s], name)
        if len(steps):
            ax.plot(steps, v, color=set_colors[s], linestyle="--", marker="o",
                    markersize=3, linewidth=1, label=f"eval/{s}")
            values.append(v)
    finite = np.concatenate(values) if values else np.zeros(0)
    finite = finite[np.isfinite(finite)]
    if log_if_positive and finite.size and (finite > 0).all():
        ax.set_yscale("log")
    ax.set_ylabel(name)
    ax.grid(True, alpha=0.3)
    # Outside the axes: never hides a curve, and loc="best" would scan every
    # point (slow on long runs).
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def plot_run(workdir: str | os.PathLike[str],
             out: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Plots a run's curves and phase timeline to a PNG.

    Panels, top to bottom: the loss of each training phase and of each
    evaluation set (dashed, markers), log-scaled when every value is positive;
    accuracy, when any row has it; the phase timeline, when the run wrote
    `timeline.jsonl` (one row per phase; above 2,000 segments, each phase's
    share of each step bin instead of one bar per segment).

    Args:
      workdir: the run directory holding `metrics.jsonl`.
      out: the PNG to write; defaults to `workdir/curves.png`.

    Returns:
      The path of the PNG.

    Raises:
      FileNotFoundError: if `workdir` has no `metrics.jsonl`.
    """
    # Imported here: the Agg canvas renders to a file without touching the
    # global backend, and callers that never plot do not pay for matplotlib.
    # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    # pylint: enable=g-import-not-at-top

    workdir = os.fspath(workdir)
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No metrics.jsonl in {workdir!r}; pass the --workdir of a training "
            "run (MetricWriter writes metrics.jsonl there).")
    rows = metrics.read_jsonl(path)
    train = _latest_rows(r for r in rows if r.get("split") == "train")
    evals = _latest_rows(r for r in rows if r.get("split") == "eval")
    segments = phase_timeline(workdir)

    phases = _unique([*(r["phase"] for r in train), *(p for _, _, p in segments)])
    sets = _unique(r["set"] for r in evals)
    phase_colors = _palette(phases, "tab10")
    # Sets continue the phases' palette so that no set shares a phase's color.
    set_colors = _palette(sets, "tab10", offset=len(phases))

    panels = []
    for name in ("loss", "accuracy"):
        if any(name in r for r in train) or any(name in r for r in evals):
            panels.append(name)
    if segments:
        panels.append("timeline")

    heights = [3.0 if p != "timeline" else 0.6 + 0.35 * len(phases) for p in panels]
    fig = Figure(figsize=(10, sum(heights) + 0.8 if panels else 3), layout="constrained")
    FigureCanvasAgg(fig)
    if not panels:
        fig.text(0.5, 0.5, f"no training or evaluation rows yet in {path}",
                 ha="center", va="center")
    else:
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, panel in zip(axes, panels):
            if panel == "timeline":
                _draw_timeline(ax, segments, phases, phase_colors)
            else:
                _draw_metric(ax, panel, train, evals, phases, sets, phase_colors,
                             set_colors, log_if_positive=panel == "loss")
        axes[-1].set_xlabel("step")
        fig.suptitle(os.path.basename(os.path.abspath(workdir)), fontsize="medium")

    out = pathlib.Path(out) if out is not None else pathlib.Path(workdir, "curves.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def schedule_probabilities(workdir: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Reads the phase probabilities a schedule logged (rows with split "schedule").

    Returns:
      ``{phase: (steps, probabilities)}`` from the ``p_<phase>`` columns; empty
      when the schedule logged none (static schedules, or no metrics.jsonl).
    """
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    rows = _latest_rows(r for r in metrics.read_jsonl(path) if r.get("split") == "schedule")
    names = _unique(k for r in rows for k in r if k.startswith("p_"))
    return {k[2:]: _series(rows, k) for k in names}


def plot_probabilities(workdir: str | os.PathLike[str],
                       out: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Plots the phase timeline and the schedule's phase probabilities over steps.

    Top panel: each phase's probability at the logged steps (stacked areas,
    so the total is visibly 1); bottom: which phase ran when. A phase keeps
    the color it has in `plot_run`.

    Args:
      workdir: the run directory (``metrics.jsonl``, ``timeline.jsonl``).
      out: the PNG to write; defaults to ``workdir/probabilities.png``.

    Returns:
      The path of the PNG.

    Raises:
      FileNotFoundError: if the run logged neither probabilities nor a timeline.
    """
    # pylint: disable=g-import-not-at-top
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    # pylint: enable=g-import-not-at-top

    workdir = os.fspath(workdir)
    probs = schedule_probabilities(workdir)
    segments = phase_timeline(workdir)
    if not probs and not segments:
        raise FileNotFoundError(
            f"{workdir!r} has no schedule probabilities (metrics.jsonl rows with split "
            "'schedule') and no timeline.jsonl; pass the --workdir of a training run.")
    path = os.path.join(workdir, "metrics.jsonl")
    train = (_latest_rows(r for r in metrics.read_jsonl(path) if r.get("split") == "train")
             if os.path.exists(path) else [])
    # Same order (and so the same colors) as plot_run: phases as they first appear.
    phases = _unique([*(r["phase"] for r in train), *(p for _, _, p in segments), *probs])
    colors = _palette(phases, "tab10")
    panels = (["probabilities"] if probs else []) + (["timeline"] if segments else [])
    heights = [3.0 if p == "probabilities" else 0.6 + 0.35 * len(phases) for p in panels]
    fig = Figure(figsize=(10, sum(heights) + 0.8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, panel in zip(axes, panels):
        if panel == "timeline":
            _draw_timeline(ax, segments, phases, colors)
            continue
        names = [p for p in phases if p in probs]
        steps = probs[names[0]][0]
        if all(len(probs[n][0]) == len(steps) and np.array_equal(probs[n][0], steps)
               for n in names):
            # Stacked bars, each logged vector held until the next log step
            # (stackplot's stepped fills leave gaps on narrow intervals).
            widths = np.diff(steps, append=steps[-1] + (np.median(np.diff(steps))
                                                          if len(steps) > 1 else 1.0))
            bottom = np.zeros(len(steps))
            for n in names:
                v = np.nan_to_num(probs[n][1])
                ax.bar(steps, v, width=widths, bottom=bottom, align="edge", color=colors[n],
                       label=n, linewidth=0)
                bottom = bottom + v
            ax.set_ylim(0, 1)
        else:  # columns logged at different steps: plain lines
            for n in names:
                ax.plot(*probs[n], color=colors[n], label=n, drawstyle="steps-post")
        ax.set_ylabel("probability")
        ax.set_title("schedule phase probabilities", fontsize="small", loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    axes[-1].set_xlabel("step")
    fig.suptitle(os.path.basename(os.path.abspath(workdir)), fontsize="medium")
    out = pathlib.Path(out) if out is not None else pathlib.Path(workdir, "probabilities.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out

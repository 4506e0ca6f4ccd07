"""Host-side metrics: per-phase aggregation, writers, progress bar, tables.

Everything here runs on the host, between device steps, on values that the
loop has already fetched (`jax.device_get`) at a log step. Nothing imports jax:
metric values may be Python numbers, numpy scalars or 0-d arrays, and are
converted with `float()`.

Files written into a run's workdir (by process 0 only):

* `metrics.jsonl`: one JSON object per line, appended and flushed on every
  write. Training rows are
  `{"step": int, "split": "train", "phase": str, <metric>: number, ..., "time": float}`
  and evaluation rows are
  `{"step": int, "split": "eval", "set": str, <metric>: number, ..., "time": float}`
  where `time` is Unix time in seconds.
* `timeline.jsonl`: `{"start": int, "end": int, "phase": str}` per line, the
  half-open step range `[start, end)` that one phase ran without interruption.
* `tensorboard/`: TensorBoard event files (tensorboardX; no TensorFlow), tags
  `train/{phase}/{metric}` and `eval/{set}/{metric}`.

Non-finite values are written as the bare tokens `NaN`, `Infinity` and
`-Infinity` (Python's `json` default, `allow_nan=True`). That is not strict
JSON, but a diverged loss must reach the log rather than crash the writer;
`read_jsonl` and Python's `json` read the tokens back as floats.
"""

from __future__ import annotations

import collections
import json
import math
import numbers
import os
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

Record = tuple[int, str, Mapping[str, Any]]
Segment = tuple[int, int, str]

# Keys that every JSONL row owns; a metric of the same name would overwrite them.
_RESERVED_KEYS = frozenset({"step", "split", "phase", "set", "time"})


# ---------------------------------------------------------------------------
# Aggregation.


def is_counter(name: str) -> bool:
    """Whether `aggregate` reports the last value of metric `name`, not its mean.

    Counters are monotone (or piecewise constant) quantities whose mean over a
    log interval is meaningless: step counts (names ending in `_steps`, and
    `phase_step`) and the learning rate `lr` (the value now is what matters).
    """
    return name == "lr" or name == "phase_step" or name.endswith("_steps")


def _to_float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"Metric {name!r} has value {value!r} of type {type(value).__name__}, "
            "which is not a scalar; reduce it to a scalar in the step "
            "(e.g. jnp.mean) before returning it as a metric.") from e


def aggregate(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Reduces the per-step metrics since the last log step, phase by phase.

    The rule: every metric is the mean over the records of its phase that
    contain it, except counters (see `is_counter`: `*_steps`, `phase_step`,
    `lr`), which take the value of the phase's last record that contains them.
    Each phase also gets `steps`, the number of its records. A NaN or inf
    value propagates into the mean, so divergence is never averaged away.

    Args:
      records: `(step, phase, metrics)` tuples in step order, where `metrics`
        maps names to scalars (Python numbers, numpy scalars, 0-d arrays).

    Returns:
      `{phase: {metric: value, ..., "steps": count}}`, phases in order of
      first appearance.

    Raises:
      ValueError: if a metric is named `steps` (reserved for the count).
      TypeError: if a metric value is not a scalar.
    """
    values: dict[str, dict[str, list[float]]] = {}
    counts: collections.Counter[str] = collections.Counter()
    for _, phase, metrics in records:
        counts[phase] += 1
        per_phase = values.setdefault(phase, {})
        for name, value in metrics.items():
            per_phase.setdefault(name, []).append(_to_float(value, name))
    out: dict[str, dict[str, float]] = {}
    for phase, per_phase in values.items():
        if "steps" in per_phase:
            raise ValueError(
                f"Phase {phase!r} returned a metric named 'steps', which "
                "aggregate() reserves for the number of steps the phase ran; "
                "rename it (e.g. 'num_steps').")
        reduced = {}
        for name, vals in per_phase.items():
            # fsum: exact means, so the same records always give the same log.
            reduced[name] = vals[-1] if is_counter(name) else math.fsum(vals) / len(vals)
        reduced["steps"] = counts[phase]
        out[phase] = reduced
    return out


def first_nonfinite(records: Iterable[Record]) -> tuple[int, str, str] | None:
    """Finds the first record holding a NaN or infinite metric.

    Within a record `loss` is checked first, so a diverged loss is named in
    preference to the gradient norm it caused.

    Args:
      records: `(step, phase, metrics)` tuples, as for `aggregate`.

    Returns:
      `(step, phase, metric_name)` of the first non-finite value, or None if
      every value is finite.
    """
    for step, phase, metrics in records:
        if "loss" in metrics and not math.isfinite(_to_float(metrics["loss"], "loss")):
            return step, phase, "loss"
        for name, value in metrics.items():
            if not math.isfinite(_to_float(value, name)):
                return step, phase, name
    return None


class StepTable:
    """Per-step metrics of many steps as arrays: the vectorized form of records.

    Row ``i`` is the record ``(steps[i], phases[ids[i]], metrics)`` where
    ``metrics`` maps ``names[phase][j]`` to ``values[i, j]`` and
    ``"phase_step"`` to ``phase_steps[i]``. Columns past a phase's own names
    are padding. The loop fetches a whole log interval of steps (or a fused
    chunk) as one such table and reduces it with numpy, instead of building a
    dict per step; `aggregate` and `first_nonfinite` give exactly what the
    module-level functions of the same names give on `rows()` (tested).

    Attributes:
      steps: ``int64[n]`` global step of each row.
      ids: ``int32[n]`` phase index of each row (into ``phases``).
      values: ``float64[n, W]`` the packed metrics (float32 values, exactly).
      phase_steps: ``int64[n]`` the phase's own step count after the row.
      phases: phase names, in index order.
      names: ``{phase: metric names of its columns}``.
    """

    __slots__ = ("steps", "ids", "values", "phase_steps", "phases", "names")

    def __init__(self, steps, ids, values, phase_steps, phases: Sequence[str],
                 names: Mapping[str, Sequence[str]]):
        self.steps = np.asarray(steps, np.int64)
        self.ids = np.asarray(ids, np.int32)
        self.values = np.asarray(values, np.float64)
        self.phase_steps = np.asarray(phase_steps, np.int64)
        self.phases = list(phases)
        self.names = names

    @classmethod
    def empty(cls, phases: Sequence[str], names: Mapping[str, Sequence[str]]) -> "StepTable":
        width = max([len(names[p]) for p in phases] + [0])
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros((0, width)),
                   np.zeros(0, np.int64), phases, names)

    @classmethod
    def from_rows(cls, rows: Sequence[Record], phases: Sequence[str],
                  names: Mapping[str, Sequence[str]]) -> "StepTable":
        """The table of ``(step, phase, {metric: value, 'phase_step': n})`` rows."""
        index = {p: i for i, p in enumerate(phases)}
        table = cls.empty(phases, names)
        values = np.zeros((len(rows), table.values.shape[1]))
        ids, steps, counts = [], [], []
        for r, (step, phase, metrics) in enumerate(rows):
            if phase not in index:
                raise ValueError(f"a record of step {step} names phase {phase!r}; the phases "
                                 f"are {list(phases)}.")
            for j, name in enumerate(names[phase]):
                if name not in metrics:
                    raise ValueError(f"the record of step {step} (phase {phase!r}) lacks metric "
                                     f"{name!r}; it has {sorted(metrics)}.")
                values[r, j] = _to_float(metrics[name], name)
            ids.append(index[phase])
            steps.append(int(step))
            counts.append(int(metrics.get("phase_step", 0)))
        return cls(steps, ids, values, counts, phases, names)

    @staticmethod
    def concat(tables: Sequence["StepTable"]) -> "StepTable":
        first = tables[0]
        if len(tables) == 1:
            return first
        return StepTable(np.concatenate([t.steps for t in tables]),
                         np.concatenate([t.ids for t in tables]),
                         np.concatenate([t.values for t in tables]),
                         np.concatenate([t.phase_steps for t in tables]),
                         first.phases, first.names)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: slice) -> "StepTable":
        return StepTable(self.steps[index], self.ids[index], self.values[index],
                         self.phase_steps[index], self.phases, self.names)

    def rows(self) -> list[Record]:
        """The records, as ``(step, phase, {metric: float, 'phase_step': float})``."""
        out = []
        values = self.values.tolist()
        for step, i, vals, ps in zip(self.steps.tolist(), self.ids.tolist(), values,
                                     self.phase_steps.tolist()):
            phase = self.phases[i]
            names = self.names[phase]
            out.append((step, phase, {**dict(zip(names, vals[:len(names)])),
                                      "phase_step": float(ps)}))
        return out

    def _phase_order(self) -> list[int]:
        _, first = np.unique(self.ids, return_index=True)
        return self.ids[np.sort(first)].tolist()

    def aggregate(self, drop: Sequence[str] = ()) -> dict[str, dict[str, float]]:
        """``aggregate(self.rows())``, computed column by column.

        ``drop``: metric names left out (as if the records lacked them).
        """
        out: dict[str, dict[str, float]] = {}
        for i in self._phase_order():
            phase = self.phases[i]
            names = self.names[phase]
            if "steps" in names:
                aggregate([(0, phase, {"steps": 0.0})])  # raises the reserved-name error
            mask = self.ids == i
            count = int(np.count_nonzero(mask))
            cols = self.values[mask]
            reduced: dict[str, float] = {}
            for j, name in enumerate(names):
                if name in drop:
                    continue
                col = cols[:, j]
                reduced[name] = (float(col[-1]) if is_counter(name)
                                 else math.fsum(col.tolist()) / count)
            reduced["phase_step"] = float(self.phase_steps[mask][-1])
            reduced["steps"] = count
            out[phase] = reduced
        return out

    def first_nonfinite(self) -> tuple[int, str, str] | None:
        """``first_nonfinite(self.rows())``, with one numpy check when all is finite."""
        if not len(self):
            return None
        widths = np.asarray([len(self.names[p]) for p in self.phases])[self.ids]
        used = np.arange(self.values.shape[1])[None, :] < widths[:, None]
        bad = used & ~np.isfinite(self.values)
        if not bad.any():
            return None
        first = int(np.flatnonzero(bad.any(axis=1))[0])
        return first_nonfinite(self[first:first + 1].rows())


# ---------------------------------------------------------------------------
# JSON helpers.


def _json_default(obj: Any) -> Any:
    # numpy scalars and small arrays reach the writers from device_get.
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__float__"):  # e.g. a 0-d jax.Array; no jax import needed.
        return float(obj)
    raise TypeError(
        f"Cannot write {obj!r} (type {type(obj).__name__}) to JSON; "
        "convert it to a number, string, list or dict first.")


def _scalar(value: Any, name: str) -> int | float:
    # Keep integers integral (step counters read better as 7 than 7.0).
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (numbers.Integral, np.integer)):
        return int(value)
    return _to_float(value, name)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Reads a JSONL file written by `MetricWriter` (NaN/Infinity included).

    A truncated final line (the process died mid-write) is skipped; a
    malformed line anywhere else is an error.

    Args:
      path: the file, e.g. `WORKDIR/metrics.jsonl`.

    Returns:
      The rows, in file order.

    Raises:
      ValueError: naming the line number of a malformed line.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == last:  # No trailing newline: a write that never finished.
                break
            raise ValueError(f"{os.fspath(path)}:{i + 1}: not a JSON object: {e}") from e
    return rows


def truncate_jsonl(path: str | os.PathLike[str], keep: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrites a JSONL file keeping the rows where `keep(row)` holds, atomically.

    Used on resume: rows a killed run wrote after its last checkpoint are
    dropped, so the resumed run writes each step exactly once. Malformed lines
    (a write cut short by the kill) are dropped too. A missing file is left
    missing.

    Returns:
      The number of lines dropped.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(row):
            kept.append(line + "\n")
    dropped = len(lines) - len(kept)
    if dropped:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                   prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


def write_results(path: str | os.PathLike[str], results: Mapping[str, Any]) -> None:
    """Writes `results` as JSON atomically: readers see the old file or the new one.

    The JSON is written to a temporary file in the same directory, synced, and
    moved over `path` with `os.replace` (atomic on POSIX and Windows). Keys are
    sorted; NaN and infinities are written as `NaN`/`Infinity`; numpy values
    are converted to Python numbers and lists.

    Args:
      path: destination file; its directory is created if missing.
      results: a JSON-serialisable mapping.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(results, f, sort_keys=True, indent=2, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ---------------------------------------------------------------------------
# Writers.


class _JsonlFile:
    """An append-mode JSONL file, flushed after every row."""

    def __init__(self, path: str):
        # A crash mid-write can leave a partial last line; start a fresh line
        # so the next row is not glued onto it (read_jsonl skips the fragment
        # only when it is last).
        needs_newline = False
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        self._f = open(path, "a", encoding="utf-8")
        if needs_newline:
            self._f.write("\n")

    def write(self, rows: Iterable[Mapping[str, Any]]) -> None:
        self._f.writelines(json.dumps(row, default=_json_default) + "\n" for row in rows)
        # Flush to the OS on every write: a killed process then loses nothing.
        # No fsync: that costs milliseconds and only matters on power loss.
        self._f.flush()

    def write_lines(self, lines: Iterable[str]) -> None:
        """Writes ready-made rows (each a JSON object and a newline)."""
        self._f.writelines(lines)
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class MetricWriter:
    """Writes training and evaluation scalars to JSONL and TensorBoard.

    Only the process with `process_index == 0` writes; on every other process
    each method is a no-op and no file or directory is created, so every host
    can run the same code. Pass `jax.process_index()` from the caller.

    Files are opened in append mode, so a resumed run continues the same
    `metrics.jsonl`; rows from steps the resumed run redoes then appear twice,
    the later ones being current (`plots.plot_run` keeps the later ones).

    Usage:

      with MetricWriter(workdir, process_index=jax.process_index()) as w:
        for phase, scalars in aggregate(records).items():
          w.write_train(step, phase, scalars)

    Args:
      workdir: the run directory; created if missing.
      tensorboard: write TensorBoard event files under `workdir/tensorboard/`.
      jsonl: write `workdir/metrics.jsonl`.
      process_index: this process's index; only 0 writes.
      resume_step: the step a resumed run restarts from. Rows of
        `metrics.jsonl` past it (written by the killed run after its last
        checkpoint) are removed, and TensorBoard is told to purge events past
        it (`purge_step`), so every step appears exactly once.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, tensorboard: bool = True,
                 jsonl: bool = True, process_index: int = 0, resume_step: int | None = None):
        self.workdir = os.fspath(workdir)
        self.active = process_index == 0
        self._jsonl: _JsonlFile | None = None
        self._timeline: _JsonlFile | None = None
        self._quoted: dict[str, str] = {}  # phase name -> its JSON string
        self._tb_flushed = -float("inf")
        self._tb = None
        self._closed = False
        if not self.active:
            return
        os.makedirs(self.workdir, exist_ok=True)
        if jsonl:
            path = os.path.join(self.workdir, "metrics.jsonl")
            if resume_step is not None:
                truncate_jsonl(path, lambda row: int(row.get("step", 0)) <= resume_step)
            self._jsonl = _JsonlFile(path)
        if tensorboard:
            # Imported here so that processes that never write pay nothing.
            import tensorboardX  # pylint: disable=g-import-not-at-top
            self._tb = tensorboardX.SummaryWriter(
                logdir=os.path.join(self.workdir, "tensorboard"),
                purge_step=None if resume_step is None else resume_step + 1)

    def _write(self, step: int, kind: str, key: str, name: str,
               scalars: Mapping[str, Any]) -> None:
        if self._closed:
            raise RuntimeError("MetricWriter is closed; create a new one to write more.")
        clash = _RESERVED_KEYS.intersection(scalars)
        if clash:
            raise ValueError(
                f"Metric names {sorted(clash)} of {kind} {key} {name!r} clash with "
                f"the JSONL row keys {sorted(_RESERVED_KEYS)}; rename the metrics.")
        step = int(step)
        values = {k: _scalar(v, k) for k, v in scalars.items()}
        if self._jsonl is not None:
            row = {"step": step, "split": kind, key: name, **values, "time": time.time()}
            self._jsonl.write([row])
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{kind}/{name}/{k}", v, step)

    def write_train(self, step: int, phase: str, scalars: Mapping[str, Any]) -> None:
        """Writes one phase's (aggregated) training scalars at `step`.

        Args:
          step: the global step.
          phase: the phase name (TensorBoard tags `train/{phase}/{name}`).
          scalars: metric name to scalar, e.g. one entry of `aggregate(...)`.

        Raises:
          ValueError: if a metric is named step, split, phase, set or time.
        """
        if self.active:
            self._write(step, "train", "phase", phase, scalars)

    def write_eval(self, step: int, set_name: str, scalars: Mapping[str, Any]) -> None:
        """Writes the evaluation scalars of one evaluation set at `step`.

        Args:
          step: the global step.
          set_name: the evaluation set (TensorBoard tags `eval/{set_name}/{name}`).
          scalars: metric name to scalar.

        Raises:
          ValueError: if a metric is named step, split, phase, set or time.
        """
        if self.active:
            self._write(step, "eval", "set", set_name, scalars)

    def write_schedule(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes the schedule's own scalars (e.g. phase probabilities ``p_<phase>``).

        Rows have ``split: "schedule"``; nothing is written for an empty dict.
        """
        if self.active and scalars:
            self._write(step, "schedule", "set", "schedule", scalars)

    def write_timeline(self, segments: Iterable[Segment]) -> None:
        """Appends `(start, end, phase)` segments to `workdir/timeline.jsonl`.

        Args:
          segments: half-open step ranges `[start, end)` run by one phase,
            usually from `TimelineRecorder.flush`.
        """
        if not self.active:
            return
        if self._closed:
            raise RuntimeError("MetricWriter is closed; create a new one to write more.")
        # Formatted directly (the same text as json.dumps of the row): an
        # [a, b] pattern writes one row per step, so this is per-step work.
        quoted = self._quoted
        lines = []
        for s, e, p in segments:
            q = quoted.get(p)
            if q is None:
                q = quoted[p] = json.dumps(p)
            lines.append('{"start": %d, "end": %d, "phase": %s}\n' % (s, e, q))
        if not lines:
            return
        if self._timeline is None:  # Lazily: runs without a recorder get no file.
            self._timeline = _JsonlFile(os.path.join(self.workdir, "timeline.jsonl"))
        self._timeline.write_lines(lines)

    # TensorBoard's flush syncs its event file to disk (about 0.5 ms here); a
    # log every few milliseconds (small models) would pay it every time.
    TB_FLUSH_SECS = 2.0

    def flush(self, force: bool = False) -> None:
        """Pushes TensorBoard events to disk (JSONL rows are flushed on write).

        At most every `TB_FLUSH_SECS` seconds unless `force`; `close` always
        flushes, and tensorboardX flushes on its own too.
        """
        if self._tb is not None and not self._closed:
            now = time.monotonic()
            if force or now - self._tb_flushed >= self.TB_FLUSH_SECS:
                self._tb.flush()
                self._tb_flushed = now

    def close(self) -> None:
        """Flushes and closes every file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for f in (self._jsonl, self._timeline):
            if f is not None:
                f.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class TimelineRecorder:
    """Records which phase ran at each step as run-length segments.

    `record` is called every step, so it does the least possible work: extend
    the open segment, or close it and open a new one. `flush` hands only the
    closed segments to the writer; the open one may still grow, and writing it
    early would either split it into two rows or write it twice. `close`
    writes it.

    Attributes:
      closed: finished `(start, end, phase)` segments not yet flushed.
    """

    __slots__ = ("closed", "_start", "_end", "_phase")

    def __init__(self):
        self.closed: list[Segment] = []
        self._start = 0
        self._end = 0
        self._phase: str | None = None

    def record(self, step: int, phase: str) -> None:
        """Notes that `phase` ran step `step`. O(1), about a microsecond."""
        if step == self._end and phase == self._phase:
            self._end = step + 1
            return
        # A different phase, or a gap/jump in steps (e.g. after a restore).
        if self._phase is not None:
            self.closed.append((self._start, self._end, self._phase))
        self._start = step
        self._end = step + 1
        self._phase = phase

    def record_ids(self, start: int, ids: Any, phases: Sequence[str]) -> None:
        """Notes that steps ``start, start + 1, ...`` ran ``phases[ids[0]], ...``.

        The same as calling `record` for each step, with the run-length
        encoding done by numpy (a fused chunk at a time).
        """
        ids = np.asarray(ids)
        n = len(ids)
        if not n:
            return
        cuts = (np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist()
        bounds = [0] + cuts + [n]
        names = [phases[i] for i in ids[[0] + cuts].tolist()]
        # The first run may extend the open segment; the last stays open.
        self.record(start, names[0])
        self._end = start + bounds[1]
        if len(names) > 1:
            self.closed.append((self._start, self._end, self._phase))
            self.closed.extend((start + a, start + b, p)
                               for a, b, p in zip(bounds[1:-2], bounds[2:-1], names[1:-1]))
            self._start, self._end, self._phase = start + bounds[-2], start + n, names[-1]

    @property
    def segments(self) -> list[Segment]:
        """The unflushed segments, the open one included (for inspection)."""
        if self._phase is None:
            return list(self.closed)
        return self.closed + [(self._start, self._end, self._phase)]

    def flush(self, writer: MetricWriter) -> None:
        """Writes the closed segments and forgets them; keeps the open one."""
        if self.closed:
            writer.write_timeline(self.closed)
            self.closed = []

    def state_dict(self) -> dict[str, Any]:
        """The open segment (closed ones must be flushed first), for checkpoints."""
        if self.closed:
            raise RuntimeError("flush the closed segments before saving the recorder's state.")
        return {"open": None if self._phase is None else [self._start, self._end, self._phase]}

    def resume(self, state: Mapping[str, Any] | None, step: int, workdir: str | None) -> None:
        """Continues `workdir/timeline.jsonl` from a checkpoint taken at `step`.

        Rows the killed run wrote after the checkpoint are dropped and the
        segment that was open at the checkpoint is reopened, so the resumed
        run's timeline is the one an uninterrupted run writes.
        """
        seg = (state or {}).get("open")
        cut = seg[0] if seg else step
        if workdir is not None:  # the writing process only
            truncate_jsonl(os.path.join(workdir, "timeline.jsonl"),
                           lambda row: int(row.get("end", 0)) <= cut)
        self.closed = []
        if seg:
            self._start, self._end, self._phase = int(seg[0]), int(seg[1]), str(seg[2])

    def close(self, writer: MetricWriter) -> None:
        """Closes the open segment and writes everything left."""
        if self._phase is not None:
            self.closed.append((self._start, self._end, self._phase))
            self._phase = None
        self.flush(writer)


# ---------------------------------------------------------------------------
# Console.


class Progress:
    """A progress bar: step/total, rate, ETA, current phase and last losses.

    On a terminal it is a tqdm bar on stderr (redrawn at most every 0.5 s).
    When stderr is not a terminal (CI logs, `make ... | tee`) it prints a plain
    line every 10% instead, since carriage-return redraws turn into one
    enormous line in a log file.

    `update` is called every step and costs one comparison on most steps
    (~0.1 us): the bar and its postfix are touched only every ~0.1 s, at a
    step stride re-estimated from the measured rate. tqdm's `set_postfix`
    costs tens of microseconds, far more than a fused step.

    Args:
      total_steps: the step count at which training ends.
      initial_step: steps already done (e.g. restored from a checkpoint).
      disable: True turns the bar off (pass `jax.process_index() != 0` so that
        only one host prints). None, the default, means enabled, unlike tqdm's
        own None (off when not a TTY): users read progress in CI logs too.
      file: the stream to write to; defaults to `sys.stderr`.
    """

    _TICK_SECONDS = 0.1
    _LOG_FRACTION = 0.1

    def __init__(self, total_steps: int, *, initial_step: int = 0,
                 disable: bool | None = None, file: Any = None):
        self.total = int(total_steps)
        self.disabled = bool(disable)
        self._silent = self.disabled
        self._file = sys.stderr if file is None else file
        self._done = int(initial_step)  # Steps completed, as shown.
        self._phase = ""
        self._losses: dict[str, float] = {}
        self._bar = None
        self._start_time = time.monotonic()
        self._start_done = self._done
        self._last_line_done = self._done
        self._last_tick_time = self._start_time
        self._last_tick_done = self._done
        # Next step index at which update() does any work.
        self._next = self._done
        self._next_log = self._done
        self._last = self._done
        if self.disabled:
            self._next = sys.maxsize
            return
        isatty = getattr(self._file, "isatty", None)
        self._tty = bool(isatty and isatty())
        if self._tty:
            import tqdm  # pylint: disable=g-import-not-at-top
            self._bar = tqdm.tqdm(
                total=self.total, initial=self._done, file=self._file, unit="step",
                mininterval=0.5, dynamic_ncols=True, smoothing=0.1, leave=True)
        else:
            self._log_stride = max(1, math.ceil(self.total * self._LOG_FRACTION))
            self._next_log = (self._done // self._log_stride + 1) * self._log_stride
            self._next = self._next_log

    def update(self, step: int, phase: str) -> None:
        """Notes that a step of `phase` finished, making `step` steps done. Cheap.

        Args:
          step: steps completed so far, counting the one just run (the global
            step after it, `state.step`); the bar shows `step / total_steps`.
          phase: the phase that ran it.
        """
        self._last = step  # For close(): the steps after the last tick count too.
        if step >= self._next:
            self._tick(step, phase)

    def set_loss(self, phase: str, loss: Any) -> None:
        """Shows `loss` as the last logged loss of `phase` (call at log steps)."""
        if self.disabled:
            return
        self._losses[phase] = float(loss)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)

    def write(self, text: str) -> None:
        """Prints a line (e.g. an evaluation table) without garbling the bar.

        Prints nothing when the bar was created with `disable=True`, so other
        hosts stay quiet.
        """
        if self._silent:
            return
        if self._bar is not None and not self.disabled:
            self._bar.write(text, file=self._file)
        else:
            self._file.write(text + "\n")
            self._file.flush()

    def _postfix(self) -> str:
        losses = " ".join(f"{p}={v:.4g}" for p, v in self._losses.items())
        if self._phase and losses:
            return f"phase={self._phase} loss: {losses}"
        return f"phase={self._phase}" if self._phase else (f"loss: {losses}" if losses else "")

    def _tick(self, step: int, phase: str) -> None:
        self._phase = phase
        done = step
        now = time.monotonic()
        if self._bar is not None:
            if done > self._done:
                self._bar.set_postfix_str(self._postfix(), refresh=False)
                self._bar.update(done - self._done)
            self._done = done
            # Re-estimate the stride so the next tick comes ~0.1 s from now.
            dt = now - self._last_tick_time
            dn = done - self._last_tick_done
            stride = max(1, int(dn * self._TICK_SECONDS / dt)) if dt > 0 else 1
            stride = min(stride, 2 * max(dn, 1))  # Grow gradually after slow steps.
            self._last_tick_time, self._last_tick_done = now, done
            self._next = step + stride
        else:
            self._done = done
            if done >= self._next_log:
                self._print_line(now)
                self._next_log = (done // self._log_stride + 1) * self._log_stride
            self._next = self._next_log

    def _print_line(self, now: float) -> None:
        from tqdm import tqdm as _tqdm  # pylint: disable=g-import-not-at-top
        elapsed = now - self._start_time
        ran = self._done - self._start_done
        rate = ran / elapsed if elapsed > 0 else 0.0
        pct = 100.0 * self._done / self.total if self.total else 100.0
        eta = (self.total - self._done) / rate if rate > 0 else 0.0
        line = (f"step {self._done}/{self.total} ({pct:.0f}%) "
                f"elapsed {_tqdm.format_interval(elapsed)} "
                f"eta {_tqdm.format_interval(eta)} {rate:.1f} steps/s")
        postfix = self._postfix()
        self._file.write(f"{line} | {postfix}\n" if postfix else line + "\n")
        self._last_line_done = self._done
        self._file.flush()

    def close(self) -> None:
        """Finishes the bar (or prints the final line). Safe to call twice."""
        if self.disabled:
            return
        if self._last > self._done:
            self._next_log = sys.maxsize  # close() prints the final line itself.
            self._tick(self._last, self._phase)
        self.disabled = True
        self._next = sys.maxsize
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
        elif self._done > self._last_line_done:
            self._print_line(time.monotonic())  # The last 10% line was not printed.

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (numbers.Integral, np.integer)):
        return str(int(value))
    try:
        return f"{float(value):.4g}"
    except (TypeError, ValueError):
        return str(value)


def format_table(rows: Mapping[str, Mapping[str, Any]], title: str | None = None) -> str:
    """Formats metrics as a plain-text table: one row per set, one column per metric.

    Columns are the metric names in order of first appearance; a set lacking a
    metric shows `-`. Floats use 4 significant digits, integers print whole.

    Args:
      rows: `{set_name: {metric: value}}`, e.g. final evaluation metrics.
      title: an optional line printed above the table.

    Returns:
      The table, lines joined by newlines, no trailing newline.
    """
    columns: list[str] = []
    for metrics in rows.values():
        for name in metrics:
            if name not in columns:
                columns.append(name)
    header = ["set", *columns]
    body = [[str(set_name), *(_format_value(m.get(c)) for c in columns)]
            for set_name, m in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        # Names left-aligned, numbers right-aligned so their digits line up.
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
        return "  ".join([first, *rest]).rstrip()

    lines = [] if title is None else [title]
    lines.append(line(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(line(r) for r in body)
    return "\n".join(lines)

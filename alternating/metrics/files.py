"""Metric files of a run: ``metrics.jsonl``, TensorBoard events, ``results.json``.

Files written into a run's workdir (by process 0 only):

* ``metrics.jsonl``: one JSON object per line, appended and flushed on every
  write. Training rows are
  ``{"step": int, "split": "train", "phase": str, <metric>: number, ..., "time": float}``
  and evaluation rows are
  ``{"step": int, "split": "eval", "set": str, <metric>: number, ..., "time": float}``
  where ``time`` is Unix time in seconds.
* ``timeline.jsonl``: ``{"start": int, "end": int, "phase": str}`` per line, the
  half-open step range ``[start, end)`` that one phase ran without interruption.
* ``tensorboard/``: TensorBoard event files (no TensorFlow), tags
  ``train/{phase}/{metric}`` and ``eval/{set}/{metric}``, one event per row.
  They are written synchronously (:class:`alternating.metrics.tensorboard.EventFile`), not through
  tensorboardX's ``SummaryWriter``, whose background thread takes events
  from a queue: its ``flush()`` flushes only what the thread has taken, so
  events logged before a checkpoint could still be queued when the process
  is killed. Here every row is handed to the OS when it is written, like a
  ``metrics.jsonl`` row.

Reading the logs back (:func:`read_jsonl`) and cutting them on resume
(:func:`truncate_jsonl`) drop rows that no writer here produces (``null``, a
row that is not an object, a missing or non-integer ``step``, bytes that are
not UTF-8) with a warning giving their count and line numbers, rather than
crash a resume or a plot on a damaged file.

Non-finite values are written as the bare tokens ``NaN``, ``Infinity`` and
``-Infinity`` (Python's ``json`` default, ``allow_nan=True``). That is not strict
JSON, but a diverged loss must reach the log rather than crash the writer;
``read_jsonl`` and Python's ``json`` read the tokens back as floats.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import tempfile
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from alternating.metrics.tables import to_float
from alternating.metrics.tensorboard import EventFile

Segment = tuple[int, int, str]

# Keys that every JSONL row owns; a metric of the same name would overwrite them.
_RESERVED_KEYS = frozenset({"step", "split", "phase", "set", "time"})
# The integer keys a row of each log file must have (any other file: none).
ROW_KEYS = {"metrics.jsonl": ("step",), "timeline.jsonl": ("start", "end")}

log = logging.getLogger("alternating")


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
    return to_float(value, name)


def _row_keys(path: str, required: Sequence[str] | None) -> tuple[str, ...]:
    if required is not None:
        return tuple(required)
    return ROW_KEYS.get(os.path.basename(path), ())


def _check_row(row: Any, required: Sequence[str]) -> str | None:
    """Why ``row`` is not a row of a log file, or None when it is one."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__ if row is not None else 'null'}, not an object"
    for key in required:
        value = row.get(key)
        if value is None:
            return f"no {key!r}"
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{key}={value!r} is not an integer"
    return None


def _lines(path: str) -> list[bytes]:
    with open(path, "rb") as f:
        return f.read().split(b"\n")


def _warn_dropped(path: str, dropped: list[tuple[int, str]], what: str) -> None:
    if not dropped:
        return
    shown = ", ".join(f"{n} ({why})" for n, why in dropped[:10])
    more = f" and {len(dropped) - 10} more" if len(dropped) > 10 else ""
    log.warning("%s: %s %d line(s) that are not rows of this log: line %s%s.", path, what,
                len(dropped), shown, more)


def _parse_line(raw: bytes, required: Sequence[str]) -> tuple[Any, str | None, bool]:
    """``(row, why it is bad or None, whether it is valid JSON text)``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 at byte {e.start}", True
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e}", False
    return row, _check_row(row, required), True


def read_jsonl(path: str | os.PathLike[str], *,
               required: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Reads a JSONL file written by `MetricWriter` (NaN/Infinity included).

    A truncated final line (the process died mid-write) is skipped. Lines no
    writer here produces (``null``, a JSON value that is not an object, a row
    without an integer ``step``, or ``start``/``end`` in ``timeline.jsonl``,
    bytes that are not UTF-8) are dropped with a warning naming their line
    numbers. A line that is not JSON at all, other than the last, is an error.

    Args:
      path: the file, e.g. `WORKDIR/metrics.jsonl`.
      required: the keys every row must hold as integers (default: from the
        file name, ``ROW_KEYS``; none for any other file).

    Returns:
      The rows, in file order.

    Raises:
      ValueError: naming the line number of a line that is not JSON.
    """
    path = os.fspath(path)
    need = _row_keys(path, required)
    lines = _lines(path)
    rows, dropped = [], []
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        row, why, is_json = _parse_line(raw, need)
        if not is_json:
            if i == last:  # No trailing newline: a write that never finished.
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON object: {why}")
        if why is None:
            rows.append(row)
        else:
            dropped.append((i + 1, why))
    _warn_dropped(path, dropped, "skipped")
    return rows


def truncate_jsonl(path: str | os.PathLike[str], keep: Callable[[dict[str, Any]], bool], *,
                   required: Sequence[str] | None = None) -> int:
    """Rewrites a JSONL file keeping the rows where `keep(row)` holds, atomically.

    Used on resume: rows a killed run wrote after its last checkpoint are
    dropped, so the resumed run writes each step exactly once. Lines that are
    not rows (a write cut short by the kill, ``null``, a value that is not an
    object, a row without the integer keys ``required``, bytes that are not
    UTF-8) are dropped too, with a warning giving their count and line
    numbers; `keep` sees only rows. A missing file is left missing.

    Args:
      path: the file.
      keep: which rows stay.
      required: as in :func:`read_jsonl`.

    Returns:
      The number of lines dropped.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    need = _row_keys(path, required)
    lines = [raw for raw in _lines(path) if raw.strip()]
    kept, bad = [], []
    for i, raw in enumerate(lines):
        row, why, is_json = _parse_line(raw, need)
        if why is not None:
            if is_json or i < len(lines) - 1:  # (a last line cut short by a kill is expected)
                bad.append((i + 1, why))
        elif keep(row):
            kept.append(raw + b"\n")
    dropped = len(lines) - len(kept)
    if dropped:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                   prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    _warn_dropped(path, bad, "dropped")
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
    `metrics.jsonl` (given `resume_step`, without the rows the resumed run
    writes again). TensorBoard gets a new event file per writer.

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
        it (a `SessionLog(START)` at `resume_step + 1`, see `tensorboard.EventFile`), so
        every step appears exactly once.
    """

    def __init__(self, workdir: str | os.PathLike[str], *, tensorboard: bool = True,
                 jsonl: bool = True, process_index: int = 0, resume_step: int | None = None):
        self.workdir = os.fspath(workdir)
        self.active = process_index == 0
        self._jsonl: _JsonlFile | None = None
        self._timeline: _JsonlFile | None = None
        self._quoted: dict[str, str] = {}  # phase name -> its JSON string
        self._tb = None
        self._closed = False
        if not self.active:
            return
        os.makedirs(self.workdir, exist_ok=True)
        if jsonl:
            path = os.path.join(self.workdir, "metrics.jsonl")
            if resume_step is not None:
                truncate_jsonl(path, lambda row: row["step"] <= resume_step)
            self._jsonl = _JsonlFile(path)
        if tensorboard:
            self._tb = EventFile(os.path.join(self.workdir, "tensorboard"),
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
        if self._tb is not None and values:
            self._tb.write(step, {f"{kind}/{name}/{k}": v for k, v in values.items()})

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

    def flush(self, force: bool = False) -> None:
        """Makes the TensorBoard events written so far durable (``fsync``) when ``force``.

        Every row (JSONL and TensorBoard) is handed to the OS when written, so
        a killed process loses nothing; ``force`` (before each checkpoint)
        also syncs the event file to disk. Without ``force`` this does nothing.
        """
        if force and self._tb is not None and not self._closed:
            self._tb.sync()

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

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
* ``tensorboard/``: TensorBoard event files (tensorboardX; no TensorFlow), tags
  ``train/{phase}/{metric}`` and ``eval/{set}/{metric}``.

Non-finite values are written as the bare tokens ``NaN``, ``Infinity`` and
``-Infinity`` (Python's ``json`` default, ``allow_nan=True``). That is not strict
JSON, but a diverged loss must reach the log rather than crash the writer;
``read_jsonl`` and Python's ``json`` read the tokens back as floats.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from alternating.metrics.tables import to_float

Segment = tuple[int, int, str]

# Keys that every JSONL row owns; a metric of the same name would overwrite them.
_RESERVED_KEYS = frozenset({"step", "split", "phase", "set", "time"})


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

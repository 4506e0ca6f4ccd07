"""The phase timeline: which phase ran each step, as run-length segments."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from alternating.metrics.files import MetricWriter, Segment, truncate_jsonl


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
        run's timeline is the one an uninterrupted run writes. Lines that are
        not segments (``null``, not an object, no integer ``start``/``end``,
        not UTF-8) are dropped with a warning (:func:`truncate_jsonl`).
        """
        seg = (state or {}).get("open")
        cut = seg[0] if seg else step
        if workdir is not None:  # the writing process only
            truncate_jsonl(os.path.join(workdir, "timeline.jsonl"),
                           lambda row: row["end"] <= cut)
        self.closed = []
        if seg:
            self._start, self._end, self._phase = int(seg[0]), int(seg[1]), str(seg[2])

    def close(self, writer: MetricWriter) -> None:
        """Closes the open segment and writes everything left."""
        if self._phase is not None:
            self.closed.append((self._start, self._end, self._phase))
            self._phase = None
        self.flush(writer)

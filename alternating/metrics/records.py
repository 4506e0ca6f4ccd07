"""The run's per-step metrics, kept on the device until a log or the schedule reads them."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from alternating import parallel
from alternating.metrics.tables import StepTable
from alternating.metrics.timeline import TimelineRecorder


def count_phase_steps(ids: np.ndarray, counts: dict[str, int],
                       names: Sequence[str]) -> np.ndarray:
    """Each row's phase step count (``counts`` advanced past the chunk)."""
    out = np.empty(len(ids), np.int64)
    for i, name in enumerate(names):
        mask = ids == i
        k = int(np.count_nonzero(mask))
        if k:
            out[mask] = counts[name] + np.arange(1, k + 1)
            counts[name] += k
    return out



class Records:
    """Per-step metrics kept on the device until a log or the schedule needs them.

    Logging and schedule feedback read the same records at their own intervals,
    each through its own cursor; a record is dropped once both have read it.
    Each read fetches everything not fetched yet in one go (the host
    executor's rows from its :class:`~alternating.executor.MetricRing`, the
    fused executor's chunk arrays), and the fetched records are kept as one
    :class:`~alternating.metrics.StepTable` per replica (arrays, not a dict
    per step), which the log reduces with numpy. Fetching also feeds the
    phase timeline, so the loop does no per-step bookkeeping beyond a list
    append.

    Args:
      feedback: the schedule reads the records too (a second cursor).
      names: ``{phase: metric names of its packed metrics vector}``.
      counts: ``{phase: its steps so far}`` (advanced as rows are fetched).
      timeline: the phase timeline (None: not recorded).
      ring: the host executor's metric ring.
      replicas: vectorized seeds: chunks carry ``[replicas, n]`` phase ids
        and ``[replicas, n, W]`` metrics, kept as one table per replica.
    """

    def __init__(self, feedback: bool, names: Mapping[str, Sequence[str]],
                 counts: Mapping[str, int], timeline: TimelineRecorder | None,
                 ring: Any = None, replicas: int = 1):
        self.names = names
        self.phases = list(names)
        self.width = max([len(n) for n in names.values()] + [0])
        self.replicas = int(replicas)
        self.counts = [dict(counts) for _ in range(self.replicas)]
        self.timeline, self.ring = timeline, ring
        self._start, self._ids = 0, []  # host steps whose metrics are in the ring
        self._chunks: list[tuple[int, np.ndarray, Any]] = []  # fused chunks not fetched
        self.tables = [StepTable.empty(self.phases, names) for _ in range(self.replicas)]
        self.cursors = {"log": 0, "feedback": 0} if feedback else {"log": 0}

    @property
    def table(self) -> StepTable:
        return self.tables[0]

    def add(self, step: int, index: int) -> None:
        """Host step ``step`` ran phase ``phases[index]``; its metrics are in the ring."""
        if not self._ids:
            self._start = step
        self._ids.append(index)
        if len(self._ids) == self.ring.capacity:
            self.sync()

    def add_chunk(self, step: int, ids: np.ndarray, metrics: Any) -> None:
        """A fused chunk: ``ids[t]`` ran step ``step + t``; ``metrics`` is ``[n, W]``."""
        self._chunks.append((step, ids, metrics))

    def _part(self, step: int, ids: np.ndarray, rows: np.ndarray, r: int = 0) -> StepTable:
        n = len(ids)
        values = np.zeros((n, self.width))
        values[:, :rows.shape[-1]] = rows[:, :self.width]
        if self.timeline is not None:
            self.timeline.record_ids(step, ids, self.phases)
        return StepTable(step + np.arange(n), ids, values,
                         count_phase_steps(ids, self.counts[r], self.phases),
                         self.phases, self.names)

    def sync(self) -> None:
        """Fetches every step run so far into the tables (and the timeline)."""
        parts: list[list[StepTable]] = [[] for _ in range(self.replicas)]
        if self._chunks:
            host = parallel.fetch([m for _, _, m in self._chunks])
            for (step, ids, _), m in zip(self._chunks, host):
                if self.replicas == 1:
                    parts[0].append(self._part(step, ids, m))
                else:
                    for r in range(self.replicas):
                        parts[r].append(self._part(step, ids[r], m[r], r))
            self._chunks = []
        if self._ids:
            ids = np.asarray(self._ids, np.int32)
            parts[0].append(self._part(self._start, ids, self.ring.read(len(ids))))
            self._ids = []
        for r, p in enumerate(parts):
            if p:
                self.tables[r] = StepTable.concat([self.tables[r]] + p)

    def pending(self, reader: str = "log") -> StepTable:
        """What ``reader`` has not seen yet (of the first replica), without consuming it."""
        self.sync()
        return self.table[self.cursors[reader]:]

    def state_dict(self) -> dict[str, Any]:
        """Every unconsumed record as host floats, for a checkpoint (one replica)."""
        self.sync()
        return {"items": [[s, p, m] for s, p, m in self.table.rows()],
                "cursors": dict(self.cursors)}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        self.tables[0] = StepTable.from_rows(
            [(int(s), str(p), dict(m)) for s, p, m in state["items"]], self.phases, self.names)
        n = len(self.table)
        self.cursors = {k: int(state["cursors"].get(k, n)) for k in self.cursors}

    def take_all(self, reader: str, upto: int | None = None) -> list[StepTable]:
        """Per replica, the records ``reader`` has not seen yet (of steps before ``upto``)."""
        self.sync()
        end = len(self.table)
        if upto is not None:  # rows are in step order, the same steps in every replica
            end = int(np.searchsorted(self.table.steps, upto))
        out = [t[self.cursors[reader]:end] for t in self.tables]
        self.cursors[reader] = end
        done = min(self.cursors.values())
        if done:
            self.tables = [t[done:] for t in self.tables]
            self.cursors = {k: v - done for k, v in self.cursors.items()}
        return out

    def take(self, reader: str, upto: int | None = None) -> StepTable:
        """The records ``reader`` has not seen yet (first replica)."""
        return self.take_all(reader, upto)[0]

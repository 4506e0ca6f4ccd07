"""The training log: per-phase means of the step records at every log step.

A log at a step where nothing else happens (no evaluation, checkpoint,
feedback, hook, end) is written a little later (:meth:`TrainLog.after_dispatch`):
after the next fused chunk is dispatched, or ``LAG_STEPS`` host steps or
``LAG_SECONDS`` seconds later, whichever comes first. Fetching the records
waits for the device to reach the log step; written at once, the device would
then sit idle while the host reduces and writes them, and later it has queued
work. The rows are the same; a non-finite metric is reported that much later
(never after a checkpoint: saving catches up first).
"""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from alternating.metrics.tables import combine_replicas

LAG_STEPS = 32  # host steps a quiet log waits before it is fetched and written,
LAG_SECONDS = 0.05  # or seconds, whichever comes first (slow steps: rows stay prompt)


class TrainLog:
    """Writes the records' per-phase means (after the non-finite policy's check).

    Args:
      records: the run's :class:`~alternating.metrics.records.Records`.
      writer: the :class:`~alternating.metrics.MetricWriter`.
      bar: the :class:`~alternating.metrics.Progress` bar (shows the losses).
      policy: the run's :class:`~alternating.nonfinite.Policy`.
      timeline: the phase timeline (None: not written).
      seeds: vectorized seeds: each row is the mean over seeds with ``_std``
        and ``_seed<i>`` (None: one run).
    """

    def __init__(self, records: Any, writer: Any, bar: Any, policy: Any,
                 timeline: Any = None, seeds: Sequence[int] | None = None):
        self.records, self.writer, self.bar, self.policy = records, writer, bar, policy
        self.timeline, self.seeds = timeline, seeds
        self.deferred: list[tuple[int, Mapping[str, Any], float]] = []

    def log(self, step: int, scalars: Mapping[str, Any], defer: bool) -> None:
        """A log is due at ``step``; ``scalars``: the schedule's own."""
        if defer:
            self.deferred.append((step, scalars, time.monotonic()))
        else:
            self.catch_up()
            self.write(step, scalars)

    def after_dispatch(self, step: int, one_step: bool) -> None:
        """Called after a step or chunk is dispatched: writes late logs that are due."""
        if not self.deferred:
            return
        if not one_step or (step - self.deferred[0][0] >= LAG_STEPS
                            or time.monotonic() - self.deferred[0][2] >= LAG_SECONDS):
            self.catch_up()

    def catch_up(self) -> None:
        while self.deferred:
            at, scalars, _ = self.deferred.pop(0)
            self.write(at, scalars)

    def write(self, at: int, scalars: Mapping[str, Any]) -> None:
        tables = self.records.take_all("log", upto=at)
        if self.seeds is None:
            if len(tables[0]):
                self._write_rows(at, self.policy.reduce(tables[0]))
        elif len(tables[0]):
            aggs = [self.policy.reduce(t, f" of seed {s}") for t, s in zip(tables, self.seeds)]
            phases = [p for p in self.records.phases if any(p in a for a in aggs)]
            self._write_rows(at, {p: combine_replicas([a.get(p, {}) for a in aggs])
                                  for p in phases})
        self.writer.write_schedule(at, scalars)
        if self.timeline is not None:
            self.timeline.flush(self.writer)  # complete to ``at``: take_all() fetched it

    def _write_rows(self, at: int, agg: Mapping[str, Mapping[str, float]]) -> None:
        for phase, row in agg.items():
            self.writer.write_train(at, phase, row)
            if "loss" in row:
                self.bar.set_loss(phase, row["loss"])
        self.writer.flush()

"""The schedule protocol.

A schedule is a plain Python object that says which phase runs at each step:

* ``next_phase(step) -> str``: the phase of global step ``step``.
* ``plan(step, n) -> list[str]``: the phases of steps ``step .. step+n-1``,
  for schedules that need no feedback (``can_plan``); a fused executor runs
  such a plan in one program.
* ``observe(step, phase, metrics)``: feedback, called by the loop every
  ``feedback_every`` steps (``None``: never) with the host values of the
  metrics named in ``feedback_metrics``. The loop never syncs with the device
  more often than that.
* ``state_dict()`` / ``load_state_dict(d)``: JSON-serializable state, saved in
  checkpoints so that a resumed run draws the same phases.

The built-in static schedules are pure functions of ``step`` (random ones draw
from a generator seeded by ``(seed, block of steps)``), so their state is only
their own description, and resuming at any step is exact by construction.
"""

from __future__ import annotations

import collections
from typing import Any, Mapping, Sequence


class Schedule:
    """Base class; subclasses implement :meth:`next_phase`."""

    name = "schedule"
    can_plan = True
    feedback_every: int | None = None
    feedback_metrics: tuple[str, ...] = ()

    def __init__(self, phases: Sequence[str]):
        self.phases = tuple(phases)

    def next_phase(self, step: int) -> str:
        raise NotImplementedError

    def plan(self, step: int, n: int) -> list[str]:
        if not self.can_plan:
            raise NotImplementedError(
                f"schedule {self.name!r} adapts to feedback and cannot plan ahead.")
        return [self.next_phase(step + i) for i in range(n)]

    def observe(self, step: int, phase: str, metrics: Mapping[str, float]) -> None:
        del step, phase, metrics

    def config(self) -> dict[str, Any]:
        """The schedule's own description (what it was built from)."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("config")
        if saved is not None and _jsonable(saved) != _jsonable(self.config()):
            raise ValueError(
                f"schedule {self.name!r}: the checkpoint was written by a different schedule "
                f"{saved} than the one configured now {self.config()}.")

    def expected_steps(self, total_steps: int) -> dict[str, int]:
        """Steps each phase will take in a run of ``total_steps`` (for lr decay).

        Planning schedules count their plan; others assume an even share.
        """
        if self.can_plan:
            counts = collections.Counter(self.plan(0, total_steps))
            return {p: counts.get(p, 0) for p in self.phases}
        return {p: max(total_steps // max(len(self.phases), 1), 1) for p in self.phases}


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def check_phases(names: Sequence[str], valid: Sequence[str], where: str) -> None:
    """Raises when a schedule names a phase that does not exist."""
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"{where} names unknown phase(s) {unknown}; the phases are {list(valid)}.")

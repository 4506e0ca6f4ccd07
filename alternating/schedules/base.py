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
* ``feedback_evals`` / ``needs_eval(step)`` / ``observe_eval(step, results)``:
  a schedule that needs evaluation losses (Aioli's per-group validation loss)
  names the evaluation sets; at a feedback point where ``needs_eval`` is true
  the loop evaluates only those sets and hands over ``{set: {metric: value}}``.
* ``required_metrics()``: ``{phase: metric names}`` that ``observe`` needs;
  the loop checks them against what each phase's step returns before
  anything compiles (:func:`check_feedback`).
* ``log_scalars(step)``: scalars (e.g. the current phase probabilities) the
  loop writes at log steps.

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
    feedback_evals: tuple[str, ...] = ()

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

    def required_metrics(self) -> dict[str, tuple[str, ...]]:
        """The metrics ``observe`` needs from each phase (default: all of
        ``feedback_metrics`` from every phase)."""
        return {p: tuple(self.feedback_metrics) for p in self.phases}

    def needs_eval(self, step: int) -> bool:
        del step
        return bool(self.feedback_evals)

    def observe_eval(self, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
        del step, results

    def log_scalars(self, step: int) -> dict[str, float]:
        del step
        return {}

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


def check_feedback(schedule: Schedule, produced: Mapping[str, Sequence[str]],
                   eval_sets: Sequence[str] = ()) -> None:
    """Raises before training when a schedule asks for feedback nobody produces.

    Args:
      schedule: the schedule.
      produced: ``{phase: metric names its step returns}``.
      eval_sets: the names of the run's evaluation sets.

    Raises:
      ValueError: a metric a phase never returns, an unknown evaluation set,
        or a ``feedback_every`` that is not a positive integer.
    """
    needs = schedule.required_metrics()
    if (needs and any(needs.values())) or schedule.feedback_evals:
        fe = schedule.feedback_every
        if not isinstance(fe, int) or fe < 1:
            raise ValueError(f"schedule {schedule.name!r}: feedback_every={fe!r}; it must be an "
                             "integer >= 1 for a schedule that observes metrics.")
    for phase, metrics in needs.items():
        have = list(produced.get(phase, ())) + ["phase_step"]
        missing = [m for m in metrics if m not in have]
        if missing:
            raise ValueError(
                f"schedule {schedule.name!r} needs metric(s) {missing} from phase {phase!r}, "
                f"which returns {sorted(have)}; choose one of those (e.g. the schedule's "
                "'metric' field) or return it from the phase's loss aux.")
    unknown = [e for e in schedule.feedback_evals if e not in eval_sets]
    if unknown:
        raise ValueError(f"schedule {schedule.name!r} needs evaluation set(s) {unknown}; the "
                         f"run's evaluation sets are {sorted(eval_sets)} (config.evals).")

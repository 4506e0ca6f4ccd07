"""When a periodic action is due: one place for every "every N steps" of the loop.

A :class:`When` says when a hook or evaluator runs, counted in global steps
*done* (after step ``s`` has run, ``s + 1`` steps are done):

* ``every=N``: after every N-th step;
* ``steps=[...]``: after exactly these step counts;
* ``start=True``: once before the first step of a fresh run (its result is
  part of the first checkpoint, so a resume does not repeat it);
* ``phase_end=True`` (any phase), a phase name or a list of names: after the
  last step of every run of that phase, i.e. where the schedule switches to
  another phase (a task boundary) and at the end of training;
* ``end=True``: after the last step.

Phase ends need a schedule that can plan ahead (``can_plan``): the loop asks
it which phase runs next. :class:`Stops` tells the fused executor where the
next due action is, so its chunks end there and both executors act after the
same steps. Nothing here reads a clock: triggers are driven by steps alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

WHEN_KEYS = ("every", "steps", "start", "phase_end", "end")


@dataclasses.dataclass(frozen=True)
class When:
    """When an action runs (see the module docstring)."""

    every: int = 0
    steps: tuple[int, ...] = ()
    start: bool = False
    phase_end: bool | tuple[str, ...] = False
    end: bool = False

    @property
    def needs_phase_ends(self) -> bool:
        return bool(self.phase_end)

    def due(self, step: int, total_steps: int, ended: str | None) -> tuple[str, ...]:
        """Why the action is due after ``step`` steps (empty: not due).

        ``ended``: the phase whose run ended with this step, if one did.
        """
        why = []
        if self.every and step % self.every == 0:
            why.append("every")
        if step in self.steps:
            why.append("steps")
        if self.end and step == total_steps:
            why.append("end")
        if ended is not None and (self.phase_end is True
                                  or (self.phase_end and ended in self.phase_end)):
            why.append("phase_end")
        return tuple(why)

    def next_fixed(self, step: int) -> int | None:
        """The first step count after ``step`` due by ``every`` or ``steps``."""
        out = [s for s in self.steps if s > step]
        if self.every:
            out.append((step // self.every + 1) * self.every)
        return min(out, default=None)


def parse_when(spec: Any, where: str, *, phases: Sequence[str] = (),
               total_steps: int | None = None) -> When:
    """``When`` from a ``When``, a dict with keys in ``WHEN_KEYS``, or None (never).

    Raises:
      ValueError: an unknown key, a negative ``every``, a step outside
        ``[1, total_steps]``, or a ``phase_end`` naming no phase, each naming
        ``where``, the field and the valid choices.
    """
    if isinstance(spec, When):
        w = spec
    else:
        spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else (spec or {}))
        unknown = sorted(set(spec) - set(WHEN_KEYS))
        if unknown:
            raise ValueError(f"{where}.when: unknown key(s) {unknown}; valid keys: "
                             f"{list(WHEN_KEYS)}.")
        pe = spec.get("phase_end", False)
        if isinstance(pe, str):
            pe = (pe,)
        elif isinstance(pe, (list, tuple)):
            pe = tuple(str(p) for p in pe)
        else:
            pe = bool(pe)
        w = When(every=spec.get("every", 0) or 0, steps=tuple(spec.get("steps") or ()),
                 start=bool(spec.get("start", False)), phase_end=pe,
                 end=bool(spec.get("end", False)))
    if isinstance(w.every, bool) or not isinstance(w.every, int) or w.every < 0:
        raise ValueError(f"{where}.when.every={w.every!r}; it must be an integer >= 0 "
                         "(0: not periodic).")
    for s in w.steps:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1 or (
                total_steps is not None and s > total_steps):
            raise ValueError(f"{where}.when.steps contains {s!r}; steps are step counts in "
                             f"[1, total_steps={total_steps}], so this one can never fire.")
    if isinstance(w.phase_end, tuple) and phases:
        bad = [p for p in w.phase_end if p not in phases]
        if bad:
            raise ValueError(f"{where}.when.phase_end names unknown phase(s) {bad}; the phases "
                             f"are {list(phases)}.")
    if not (w.every or w.steps or w.start or w.phase_end or w.end):
        raise ValueError(f"{where}.when is empty, so it would never run; give one of "
                         f"{list(WHEN_KEYS)} (e.g. {{'every': 100}} or {{'phase_end': True}}).")
    return w


class PhaseEnds:
    """Where runs of phases end, from a schedule that can plan ahead.

    ``ended(step)`` is the phase whose run ends after ``step`` steps (the
    phase of step ``step - 1`` when the phase of step ``step`` differs, or
    at ``total_steps``), else None.
    """

    def __init__(self, schedule: Any, total_steps: int):
        self.schedule, self.total_steps = schedule, int(total_steps)

    def ended(self, step: int) -> str | None:
        if step < 1:
            return None
        if step >= self.total_steps:
            return self.schedule.plan(step - 1, 1)[0]
        prev, nxt = self.schedule.plan(step - 1, 2)
        return prev if prev != nxt else None

    def next_after(self, step: int, horizon: int, watched: Callable[[str], bool]) -> int | None:
        """The first phase end in ``(step, step + horizon]`` of a watched phase."""
        end = min(step + horizon, self.total_steps)
        if end <= step:
            return None
        plan = self.schedule.plan(step, end - step)
        for t in range(len(plan) - 1):
            if plan[t] != plan[t + 1] and watched(plan[t]):
                return step + t + 1
        if end == self.total_steps and watched(plan[-1]):
            return end
        return None


class Stops:
    """Where the fused executor must end a chunk: every due action's step.

    ``stops(step)`` is True when something is due after ``step`` steps;
    ``next_after(step)`` the first such step after ``step`` (within
    ``horizon`` steps for phase ends, which the schedule plans).
    """

    def __init__(self, intervals: Iterable[int], whens: Sequence[When],
                 phase_ends: PhaseEnds | None, horizon: int, total_steps: int):
        self.every = [int(i) for i in intervals if i]
        self.whens = list(whens)
        self.phase_ends, self.horizon, self.total_steps = phase_ends, int(horizon), total_steps
        names = [w.phase_end for w in self.whens if w.phase_end]
        self._any_phase = any(n is True for n in names)
        self._watched = {p for n in names if n is not True for p in n}

    def watched(self, phase: str) -> bool:
        return self._any_phase or phase in self._watched

    def __call__(self, step: int) -> bool:
        if any(step % e == 0 for e in self.every):
            return True
        ended = self.phase_ends.ended(step) if self.phase_ends is not None else None
        return any(w.due(step, self.total_steps, ended) for w in self.whens)

    def next_after(self, step: int) -> int | None:
        out = [(step // e + 1) * e for e in self.every]
        out += [s for s in (w.next_fixed(step) for w in self.whens) if s is not None]
        if self.phase_ends is not None and (self._any_phase or self._watched):
            s = self.phase_ends.next_after(step, self.horizon, self.watched)
            if s is not None:
                out.append(s)
        return min(out, default=None)


def check_phase_ends(whens: Mapping[str, When], schedule: Any) -> None:
    """Refuses phase-end triggers under a schedule that cannot plan ahead."""
    needing = sorted(name for name, w in whens.items() if w.needs_phase_ends)
    if needing and not getattr(schedule, "can_plan", False):
        raise ValueError(f"{needing} run at phase ends (when.phase_end), but schedule "
                         f"{schedule.name!r} adapts to feedback and cannot plan ahead, so its "
                         "phase ends are not known in advance; use every/steps instead, or a "
                         "schedule that plans (single, alternate, weighted, sequential, "
                         "interpolated).")

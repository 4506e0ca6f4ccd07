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
import functools
import inspect
from typing import Any, Mapping, Sequence

import numpy as np


class Schedule:
    """Base class; subclasses implement :meth:`next_phase`."""

    name = "schedule"
    can_plan = True
    feedback_every: int | None = None
    feedback_metrics: tuple[str, ...] = ()
    feedback_evals: tuple[str, ...] = ()

    def __init__(self, phases: Sequence[str]):
        self.phases = tuple(phases)

    def __init_subclass__(cls, **kwargs: Any):
        # Records the arguments of the most derived constructor, for the
        # default :meth:`config`: a subclass that does not describe itself is
        # still saved with what it was built from, so a resume with other
        # arguments is refused instead of silently continuing another schedule.
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)  # (inspect.signature(cls) still sees ``init``'s)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if getattr(self, "_init_args", None) is None:
                try:
                    bound = signature.bind(self, *args, **kw)
                except TypeError:
                    pass  # ``init`` raises the usual error below
                else:
                    bound.apply_defaults()
                    object.__setattr__(self, "_init_args", _arguments(signature, bound))
            init(self, *args, **kw)

        cls.__init__ = recording_init

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
        """The schedule's own description (what it was built from).

        Saved with every checkpoint; a resume whose schedule describes itself
        differently is refused. This default is ``name`` plus the arguments
        the subclass's constructor was called with (defaults filled in, the
        phase names left out), as JSON: numbers, strings, lists and dicts as
        they are, numpy values as numbers or lists, a function or class as
        ``module:qualname``, any other object as its type's name. Override it
        when the arguments do not say everything (e.g. to add derived values).
        """
        args = getattr(self, "_init_args", None) or {}
        return {"name": self.name, **{k: _describe(v) for k, v in args.items()
                                      if k not in ("phases", "name")}}

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


def _arguments(signature: inspect.Signature, bound: inspect.BoundArguments) -> dict[str, Any]:
    """A constructor's arguments by name (``*args`` as a list, ``**kwargs`` spread), no self."""
    out: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        if i == 0:  # self
            continue
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            out[name] = list(value)
        else:
            out[name] = value
    return out


def _describe(x: Any) -> Any:
    """``x`` as JSON that is the same in every process and every run."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "to_dict"):  # a ConfigDict
        x = x.to_dict()
    if isinstance(x, Mapping):
        return {str(k): _describe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        items = sorted(x, key=repr) if isinstance(x, (set, frozenset)) else x
        return [_describe(v) for v in items]
    if callable(x) and hasattr(x, "__qualname__"):
        return f"{getattr(x, '__module__', '?')}:{x.__qualname__}"
    # (Not repr: it often holds a memory address, which differs on every run.)
    return f"<{type(x).__module__}.{type(x).__qualname__}>"


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

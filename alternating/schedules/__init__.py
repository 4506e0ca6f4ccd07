"""Schedules: which phase runs at each step. See :mod:`.base` for the protocol."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from alternating.schedules.adaptive import UCB, AdaptiveSchedule, LossShift, MultiplicativeWeights, SASR
from alternating.schedules.aioli import Aioli
from alternating.schedules.base import Schedule, check_feedback, check_phases
from alternating.schedules.curriculum import Interpolated
from alternating.schedules.static import Alternate, Sequential, Single, Weighted

SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "single": Single,
    "alternate": Alternate,
    "weighted": Weighted,
    "sequential": Sequential,
    "interpolated": Interpolated,
    "ucb": UCB,
    "multiplicative_weights": MultiplicativeWeights,
    "sasr": SASR,
    "loss_shift": LossShift,
    "aioli": Aioli,
}

__all__ = ["Schedule", "Single", "Alternate", "Weighted", "Sequential", "Interpolated",
           "AdaptiveSchedule", "UCB", "MultiplicativeWeights", "SASR", "LossShift", "Aioli",
           "SCHEDULES", "make_schedule", "register_schedule", "check_phases", "check_feedback"]


def register_schedule(name: str):
    """Class decorator adding a schedule to the registry under ``name``."""
    def deco(cls):
        SCHEDULES[name] = cls
        return cls
    return deco


def make_schedule(spec: Any, phases: Sequence[str], *, seed: int = 0) -> Schedule:
    """Builds a schedule from ``{'name': ..., **kwargs}`` or returns a Schedule as is.

    A ``seed`` argument, when the schedule takes one and the spec gives none,
    is the run's seed.

    Raises:
      ValueError: unknown schedule, unknown arguments, or unknown phases.
    """
    if isinstance(spec, Schedule):
        check_phases(list(spec.phases), phases, f"schedule {spec.name!r}")
        return spec
    if spec is None:
        spec = {"name": "alternate"}
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    name = spec.pop("name", None)
    if name not in SCHEDULES:
        raise ValueError(f"config.schedule.name={name!r} is not a schedule; valid names: "
                         f"{sorted(SCHEDULES)}.")
    cls = SCHEDULES[name]
    params = inspect.signature(cls).parameters
    unknown = sorted(set(spec) - set(params) - {"phases"})
    if unknown:
        valid = [p for p in params if p != "phases"]
        raise ValueError(f"schedule {name!r}: unknown argument(s) {unknown}; valid: {valid}.")
    if "seed" in params and "seed" not in spec:
        spec["seed"] = seed
    return cls(phases, **spec)

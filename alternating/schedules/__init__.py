"""Schedules: which phase runs at each step. See :mod:`.base` for the protocol."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from alternating import registry
from alternating.schedules.adaptive import UCB, AdaptiveSchedule, LossShift, MultiplicativeWeights, SASR
from alternating.schedules.aioli import Aioli
from alternating.schedules.base import Schedule, check_feedback, check_phases
from alternating.schedules.curriculum import Interpolated
from alternating.schedules.static import Alternate, Sequential, Single, Weighted

SCHEDULES = registry.SCHEDULES  # {name: Schedule class}; see alternating.registry
for _name, _cls in {"single": Single, "alternate": Alternate, "weighted": Weighted,
                    "sequential": Sequential, "interpolated": Interpolated, "ucb": UCB,
                    "multiplicative_weights": MultiplicativeWeights, "sasr": SASR,
                    "loss_shift": LossShift, "aioli": Aioli}.items():
    SCHEDULES.register(_name, _cls)

__all__ = ["Schedule", "Single", "Alternate", "Weighted", "Sequential", "Interpolated",
           "AdaptiveSchedule", "UCB", "MultiplicativeWeights", "SASR", "LossShift", "Aioli",
           "SCHEDULES", "make_schedule", "register_schedule", "check_phases", "check_feedback"]


def register_schedule(name: str):
    """Class decorator adding a schedule to the registry under ``name``."""
    return SCHEDULES.register(name, replace=True)


def make_schedule(spec: Any, phases: Sequence[str], *, seed: int = 0) -> Schedule:
    """Builds a schedule from ``{'name': ..., **kwargs}`` or returns a Schedule as is.

    ``name`` is a registered name or ``'package.module:Class'`` naming a
    :class:`Schedule` subclass (or a factory ``f(phases, **kwargs)``) of your own.

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
    if not isinstance(name, str):
        raise SCHEDULES.error("config.schedule.name", name)
    cls = SCHEDULES.resolve(name, "config.schedule.name")
    params = inspect.signature(cls).parameters
    unknown = sorted(set(spec) - set(params) - {"phases"})
    if unknown:
        valid = [p for p in params if p != "phases"]
        raise ValueError(f"schedule {name!r}: unknown argument(s) {unknown}; valid: {valid}.")
    if "seed" in params and "seed" not in spec:
        spec["seed"] = seed
    schedule = cls(phases, **spec)
    if not isinstance(schedule, Schedule):
        raise ValueError(f"config.schedule.name={name!r} built {schedule!r}, not a Schedule "
                         "(subclass alternating.schedules.Schedule).")
    return schedule

"""Schedules that need no feedback: single, alternate, weighted, sequential."""

from __future__ import annotations

import bisect
from typing import Any, Mapping, Sequence

import numpy as np

from alternating.schedules.base import Schedule, check_phases


def _pairs(spec: Any, where: str) -> list[tuple[str, int]]:
    """Reads ``[a, b]``, ``[[a, 3], [b, 1]]`` or ``{a: 3, b: 1}`` as (phase, count) pairs."""
    if isinstance(spec, Mapping) or hasattr(spec, "items"):
        items = list(spec.items())
    elif isinstance(spec, (list, tuple)):
        items = []
        for item in spec:
            if isinstance(item, str):
                items.append((item, 1))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                raise ValueError(f"{where}: entry {item!r} is neither a phase name nor a "
                                 "[phase, count] pair.")
    else:
        raise ValueError(f"{where}: expected a list of phases, [phase, count] pairs or a "
                         f"dict, got {spec!r}.")
    out = []
    for name, count in items:
        if not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"{where}: count for phase {name!r} is {count!r}; it must be an "
                             "integer >= 1.")
        out.append((str(name), int(count)))
    if not out:
        raise ValueError(f"{where}: no phases given.")
    return out


class Single(Schedule):
    """Always the same phase."""

    name = "single"

    def __init__(self, phases: Sequence[str], phase: str | None = None):
        super().__init__(phases)
        self.phase = phase if phase is not None else (self.phases[0] if len(self.phases) == 1 else None)
        if self.phase is None:
            raise ValueError(f"schedule 'single': name the phase (one of {list(self.phases)}).")
        check_phases([self.phase], self.phases, "schedule 'single'")

    def next_phase(self, step: int) -> str:
        return self.phase

    def plan(self, step: int, n: int) -> list[str]:
        return [self.phase] * n

    def config(self):
        return {"name": self.name, "phase": self.phase}


class Alternate(Schedule):
    """Cycles through a pattern: ``[a, b]`` or block counts ``[[a, 3], [b, 1]]``.

    In configs prefer the list forms: ``ConfigDict`` sorts dict keys, which
    would change the order of ``{b: 1, a: 3}``.
    """

    name = "alternate"

    def __init__(self, phases: Sequence[str], pattern: Any = None):
        super().__init__(phases)
        pairs = _pairs(pattern if pattern is not None else list(self.phases), "schedule 'alternate'")
        check_phases([p for p, _ in pairs], self.phases, "schedule 'alternate'")
        self.pattern = pairs
        self.cycle = [p for p, n in pairs for _ in range(n)]

    def next_phase(self, step: int) -> str:
        return self.cycle[step % len(self.cycle)]

    def plan(self, step: int, n: int) -> list[str]:
        c, k = self.cycle, len(self.cycle)
        return [c[(step + i) % k] for i in range(n)]

    def config(self):
        return {"name": self.name, "pattern": [[p, n] for p, n in self.pattern]}


class Weighted(Schedule):
    """Draws each step's phase at random with fixed weights; deterministic per seed.

    Draws come in blocks of ``block`` steps from ``numpy.random.default_rng((seed,
    block_index))``, so the phase of any step is a pure function of
    ``(seed, step)``: resuming needs no saved generator, and ``plan`` agrees with
    ``next_phase``.
    """

    name = "weighted"
    block = 4096

    def __init__(self, phases: Sequence[str], weights: Any = None, seed: int = 0):
        super().__init__(phases)
        if weights is None:
            weights = {p: 1.0 for p in self.phases}
        weights = dict(weights.items())
        check_phases(list(weights), self.phases, "schedule 'weighted'")
        w = np.array([float(weights.get(p, 0.0)) for p in self.phases])
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError(f"schedule 'weighted': weights {weights} must be finite, >= 0 and "
                             "not all zero.")
        self.weights = {p: float(weights.get(p, 0.0)) for p in self.phases}
        self.probs = w / w.sum()
        self.seed = int(seed)
        self._cache: tuple[int, np.ndarray] | None = None

    def _draws(self, b: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != b:
            rng = np.random.default_rng((self.seed, b))
            self._cache = (b, rng.choice(len(self.phases), size=self.block, p=self.probs))
        return self._cache[1]

    def next_phase(self, step: int) -> str:
        return self.phases[self._draws(step // self.block)[step % self.block]]

    def config(self):
        return {"name": self.name, "weights": self.weights, "seed": self.seed}


class Sequential(Schedule):
    """Phase i for n_i steps, in order (continual-learning task order).

    After the last stage the last phase continues.
    """

    name = "sequential"

    def __init__(self, phases: Sequence[str], stages: Any = None):
        super().__init__(phases)
        if stages is None:
            raise ValueError("schedule 'sequential': give stages=[[phase, steps], ...].")
        pairs = _pairs(stages, "schedule 'sequential'")
        check_phases([p for p, _ in pairs], self.phases, "schedule 'sequential'")
        self.stages = pairs
        self.ends = list(np.cumsum([n for _, n in pairs]))

    def next_phase(self, step: int) -> str:
        i = bisect.bisect_right(self.ends, step)
        return self.stages[min(i, len(self.stages) - 1)][0]

    def config(self):
        return {"name": self.name, "stages": [[p, n] for p, n in self.stages]}

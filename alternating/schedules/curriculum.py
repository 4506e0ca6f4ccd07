"""Time-varying phase probabilities (curricula and anti-curricula over phases).

Also the helpers every probability-drawing schedule shares: reading and
checking a probability vector from a config, and the per-step uniform draws
that make a random schedule a pure function of ``(seed, step, probabilities)``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from alternating.schedules.base import Schedule, check_phases

_TOL = 1e-6


def prob_vector(spec: Any, phases: Sequence[str], where: str) -> np.ndarray:
    """Reads ``{phase: p}`` (missing phases: 0) or a list in phase order.

    Raises:
      ValueError: unknown phases, a wrong length, a negative or non-finite
        entry, or a sum other than 1 (within 1e-6); the message names ``where``.
    """
    if isinstance(spec, Mapping) or hasattr(spec, "items"):
        spec = dict(spec.items())
        check_phases(list(spec), phases, where)
        p = np.array([float(spec.get(name, 0.0)) for name in phases])
    elif isinstance(spec, (list, tuple, np.ndarray)):
        if len(spec) != len(phases):
            raise ValueError(f"{where}: {len(spec)} probabilities for {len(phases)} phases "
                             f"{list(phases)}; give one per phase or a {{phase: p}} dict.")
        p = np.array([float(v) for v in spec])
    else:
        raise ValueError(f"{where}: expected a {{phase: probability}} dict or a list, got {spec!r}.")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError(f"{where}: probabilities {p.tolist()} must be finite and >= 0.")
    if abs(p.sum() - 1.0) > _TOL:
        raise ValueError(f"{where}: probabilities {p.tolist()} sum to {p.sum():.6g}, not 1; "
                         "normalize them (or use schedule 'weighted', which takes weights).")
    return p


def check_range(where: str, field: str, value: Any, lo: float, hi: float, *,
                lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float, or a ValueError naming ``field`` and the valid range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    ok = math.isfinite(v) or (hi == math.inf and v == math.inf)
    ok = ok and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{where}: {field}={value!r} is out of range; it must be in {interval}.")
    return v


def check_int(where: str, field: str, value: Any, lo: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
        raise ValueError(f"{where}: {field}={value!r}; it must be an integer >= {lo}.")
    return int(value)


class Draws:
    """Uniform numbers ``u(step)`` in [0, 1), a pure function of ``(seed, step)``.

    Drawn in blocks of 4096 from ``default_rng((seed, block))`` (creating a
    generator per step would cost ~20 us, a third of a step's dispatch).
    A schedule picks phase ``searchsorted(cumsum(p), u(step), 'right')``, so
    resuming needs only its probabilities, never a generator state.
    """

    block = 4096

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._cache: tuple[int, np.ndarray] | None = None

    def __call__(self, step: int) -> float:
        b = step // self.block
        if self._cache is None or self._cache[0] != b:
            self._cache = (b, np.random.default_rng((self.seed, b)).random(self.block))
        return float(self._cache[1][step % self.block])

    def pick(self, step: int, probs: np.ndarray) -> int:
        c = np.cumsum(probs)
        i = int(np.searchsorted(c, self(step) * c[-1], side="right"))
        return min(i, len(probs) - 1)


def _weight(mode: str, f: float, sharpness: float) -> float:
    """How far along (0..1) from one probability vector to the next, at fraction ``f``."""
    if mode == "piecewise":
        return 0.0
    if mode == "linear":
        return f
    if mode == "exponential":  # slow start, fast finish
        return math.expm1(sharpness * f) / math.expm1(sharpness)
    # sigmoid, rescaled so that it runs exactly from 0 to 1.
    s = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731
    lo, hi = s(-sharpness / 2), s(sharpness / 2)
    return (s(sharpness * (f - 0.5)) - lo) / (hi - lo)


class Interpolated(Schedule):
    """Phase probabilities that move between given vectors over steps.

    ``points=[[s_0, p_0], [s_1, p_1], ...]`` with increasing steps: before
    ``s_0`` the probabilities are ``p_0``, after the last point the last
    vector; between ``s_i`` and ``s_{i+1}``, at fraction ``f``, they are
    ``(1 - w(f)) p_i + w(f) p_{i+1}`` with ``w`` by ``mode``:

    * ``piecewise``: ``w = 0`` (hold ``p_i`` until ``s_{i+1}``),
    * ``linear``: ``w = f``,
    * ``exponential``: ``w = (exp(k f) - 1) / (exp(k) - 1)``,
    * ``sigmoid``: ``sigmoid(k (f - 1/2))`` rescaled to run from 0 to 1,

    ``k = sharpness``. Each step's phase is drawn from ``p(step)`` with the
    seeded per-step uniforms of :class:`Draws`, so the schedule plans ahead
    and resumes exactly. A curriculum moves mass from easy to hard phases; an
    anti-curriculum the other way.
    """

    name = "interpolated"

    def __init__(self, phases: Sequence[str], points: Any = None, mode: str = "linear",
                 sharpness: float = 5.0, seed: int = 0):
        super().__init__(phases)
        where = "schedule 'interpolated'"
        if mode not in ("piecewise", "linear", "exponential", "sigmoid"):
            raise ValueError(f"{where}: mode={mode!r}; valid: ['piecewise', 'linear', "
                             "'exponential', 'sigmoid'].")
        if not points:
            raise ValueError(f"{where}: give points=[[step, {{phase: p}}], ...] (at least one).")
        steps, vecs = [], []
        for i, pt in enumerate(points):
            if not isinstance(pt, (list, tuple)) or len(pt) != 2:
                raise ValueError(f"{where}: points[{i}]={pt!r} is not a [step, probabilities] pair.")
            steps.append(check_int(where, f"points[{i}] step", pt[0], 0))
            vecs.append(prob_vector(pt[1], self.phases, f"{where} points[{i}]"))
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"{where}: point steps {steps} must be strictly increasing.")
        self.mode = mode
        self.sharpness = check_range(where, "sharpness", sharpness, 0.0, math.inf, lo_open=True)
        self.seed = int(seed)
        self.steps, self.vecs = steps, vecs
        self._draws = Draws(self.seed)

    def probabilities(self, step: int) -> np.ndarray:
        steps, vecs = self.steps, self.vecs
        if step <= steps[0]:
            return vecs[0]
        if step >= steps[-1]:
            return vecs[-1]
        i = int(np.searchsorted(steps, step, side="right")) - 1
        f = (step - steps[i]) / (steps[i + 1] - steps[i])
        w = _weight(self.mode, f, self.sharpness)
        return (1.0 - w) * vecs[i] + w * vecs[i + 1]

    def next_phase(self, step: int) -> str:
        return self.phases[self._draws.pick(step, self.probabilities(step))]

    def log_scalars(self, step: int) -> dict[str, float]:
        return {f"p_{n}": float(v) for n, v in zip(self.phases, self.probabilities(step))}

    def config(self):
        return {"name": self.name, "mode": self.mode, "sharpness": self.sharpness,
                "seed": self.seed,
                "points": [[s, dict(zip(self.phases, v.tolist()))]
                           for s, v in zip(self.steps, self.vecs)]}

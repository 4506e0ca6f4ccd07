"""Schedules that learn from feedback: UCB (DUMP), multiplicative weights
(DoReMi/Skill-it family), SASR gradient-norm switching and loss-shift
detection.

All of them draw a step's phase as ``searchsorted(cumsum(p), u(step))`` with
the seeded per-step uniforms of :class:`~.curriculum.Draws`, where ``p`` is
their current probability vector. ``p`` changes only in ``observe``, which
the loop calls at feedback points, so the phase of a step is a pure function
of ``(seed, step, state at the last feedback point)``: saving the state at a
feedback point and loading it gives the identical future sequence.

The loop feeds a schedule every ``feedback_every`` steps with the records of
steps ``[t - feedback_every, t)``; a schedule that updates once per feedback
round (rather than once per record) recognizes the last record of a round by
``(step + 1) % feedback_every == 0``.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Mapping, Sequence

import numpy as np

from alternating.schedules.base import Schedule, check_phases
from alternating.schedules.curriculum import Draws, check_int, check_range


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class AdaptiveSchedule(Schedule):
    """Base: a probability vector updated by feedback, seeded per-step draws.

    Subclasses set ``self.probs`` and implement ``_state()``/``_load(d)``
    for what changes during training.
    """

    can_plan = False

    def __init__(self, phases: Sequence[str], *, seed: int, feedback_every: int):
        super().__init__(phases)
        self.seed = int(seed)
        self.feedback_every = check_int(f"schedule {self.name!r}", "feedback_every",
                                        feedback_every, 1)
        self.probs = np.full(len(self.phases), 1.0 / len(self.phases))
        self._draws = Draws(self.seed)

    def next_phase(self, step: int) -> str:
        return self.phases[self._draws.pick(step, self.probs)]

    def log_scalars(self, step: int) -> dict[str, float]:
        return {f"p_{n}": float(v) for n, v in zip(self.phases, self.probs)}

    def _round_end(self, step: int) -> bool:
        return (step + 1) % self.feedback_every == 0

    def _state(self) -> dict[str, Any]:
        return {}

    def _load(self, d: Mapping[str, Any]) -> None:
        del d

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config(), "probs": self.probs.tolist(), "state": self._state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "probs" in state:
            self.probs = np.asarray(state["probs"], dtype=np.float64)
        self._load(state.get("state", {}))


class UCB(AdaptiveSchedule):
    """Upper confidence bound over phases (DUMP: Wang et al. 2025, arXiv:2504.09710).

    Each phase ``j`` (a data distribution) keeps the last ``window`` values of
    its learnability signal ``metric`` (DUMP: the mean absolute advantage of a
    GRPO batch) and a count ``n_j`` of its observed steps. After each
    observation::

        L_j   = mean of phase j's window (0 while empty)
        UCB_j = L_j + c * sqrt(2 ln(sum_k n_k + 1) / (n_j + 1))
        p     = softmax(UCB / temperature)

    DUMP's published values: window 300, c = 1, temperature 0.1 (DUMP's
    window holds per-sample advantages; here one value per step, the batch
    mean). ``c = 0`` turns exploration off.
    """

    name = "ucb"

    def __init__(self, phases: Sequence[str], metric: str = "abs_advantage", window: int = 300,
                 c: float = 1.0, temperature: float = 0.1, feedback_every: int = 10,
                 seed: int = 0):
        super().__init__(phases, seed=seed, feedback_every=feedback_every)
        where = "schedule 'ucb'"
        self.metric = str(metric)
        self.feedback_metrics = (self.metric,)
        self.window = check_int(where, "window", window, 1)
        self.c = check_range(where, "c", c, 0.0, math.inf)
        self.temperature = check_range(where, "temperature", temperature, 0.0, math.inf,
                                       lo_open=True, hi_open=True)
        self.values = {p: collections.deque(maxlen=self.window) for p in self.phases}
        self.counts = {p: 0 for p in self.phases}

    def scores(self) -> np.ndarray:
        total = sum(self.counts.values())
        out = []
        for p in self.phases:
            mean = float(np.mean(self.values[p])) if self.values[p] else 0.0
            out.append(mean + self.c * math.sqrt(2.0 * math.log(total + 1) / (self.counts[p] + 1)))
        return np.array(out)

    def observe(self, step: int, phase: str, metrics: Mapping[str, float]) -> None:
        self.values[phase].append(float(metrics[self.metric]))
        self.counts[phase] += 1
        self.probs = _softmax(self.scores() / self.temperature)

    def _state(self):
        return {"values": {p: list(v) for p, v in self.values.items()}, "counts": self.counts}

    def _load(self, d):
        for p in self.phases:
            self.values[p] = collections.deque(d.get("values", {}).get(p, []), maxlen=self.window)
            self.counts[p] = int(d.get("counts", {}).get(p, 0))

    def config(self):
        return {"name": self.name, "metric": self.metric, "window": self.window, "c": self.c,
                "temperature": self.temperature, "feedback_every": self.feedback_every,
                "seed": self.seed}


class MultiplicativeWeights(AdaptiveSchedule):
    """Exponentiated-gradient weights on excess loss (DoReMi / Skill-it family).

    DoReMi (Xie et al. 2023, arXiv:2305.10429) raises a domain's weight in
    proportion to its excess loss over a reference model; Skill-it (Chen et
    al. 2023, arXiv:2307.14430) uses the same multiplicative update. Here,
    once per feedback round::

        e_j     = mean of max(metric - reference_j, 0) over phase j's records
                  in the round (kept from earlier rounds if j did not run)
        log a_j += eta * e_j
        p       = (1 - smoothing) * softmax(log a) + smoothing / K

    With no ``reference`` the excess is the loss itself (the reducible part
    is then unknown, which favours intrinsically hard phases).
    """

    name = "multiplicative_weights"

    def __init__(self, phases: Sequence[str], metric: str = "loss", reference: Any = None,
                 eta: float = 0.1, smoothing: float = 0.05, feedback_every: int = 10,
                 seed: int = 0):
        super().__init__(phases, seed=seed, feedback_every=feedback_every)
        where = "schedule 'multiplicative_weights'"
        self.metric = str(metric)
        self.feedback_metrics = (self.metric,)
        reference = dict(reference.items()) if reference is not None else {}
        check_phases(list(reference), self.phases, f"{where} reference")
        self.reference = {p: float(reference.get(p, 0.0)) for p in self.phases}
        self.eta = check_range(where, "eta", eta, 0.0, math.inf, lo_open=True, hi_open=True)
        self.smoothing = check_range(where, "smoothing", smoothing, 0.0, 1.0)
        self.log_alpha = np.zeros(len(self.phases))
        self.excess = np.zeros(len(self.phases))
        self._round: dict[str, list[float]] = {}

    def observe(self, step: int, phase: str, metrics: Mapping[str, float]) -> None:
        x = float(metrics[self.metric]) - self.reference[phase]
        self._round.setdefault(phase, []).append(max(x, 0.0))
        if self._round_end(step):
            for p, xs in self._round.items():
                self.excess[self.phases.index(p)] = float(np.mean(xs))
            self._round = {}
            self.log_alpha = self.log_alpha + self.eta * self.excess
            k = len(self.phases)
            self.probs = (1.0 - self.smoothing) * _softmax(self.log_alpha) + self.smoothing / k

    def _state(self):
        return {"log_alpha": self.log_alpha.tolist(), "excess": self.excess.tolist(),
                "round": self._round}

    def _load(self, d):
        self.log_alpha = np.asarray(d.get("log_alpha", self.log_alpha), np.float64)
        self.excess = np.asarray(d.get("excess", self.excess), np.float64)
        self._round = {k: list(v) for k, v in d.get("round", {}).items()}

    def config(self):
        return {"name": self.name, "metric": self.metric, "reference": self.reference,
                "eta": self.eta, "smoothing": self.smoothing,
                "feedback_every": self.feedback_every, "seed": self.seed}


class SASR(AdaptiveSchedule):
    """Step-wise adaptive SFT/RL switching by gradient norm (SASR).

    Chen et al. 2025, "Step-wise Adaptive Integration of Supervised
    Fine-tuning and Reinforcement Learning for Task-Specific LLMs",
    arXiv:2505.13026. The rule:

    * steps ``[0, warmup_steps)``: phase ``sft`` only; ``G_warm`` is the
      mean of the SFT gradient norm (``metric``) over the last
      ``warmup_window`` warm-up steps (the paper records it at the last
      warm-up step: ``warmup_window=1``);
    * afterwards each step is ``sft`` with probability
      ``p_t = min(1, scale * g_t / G_warm)``, else ``rl``, where ``g_t`` is
      the SFT gradient norm most recently observed.

    A large SFT gradient (the policy has drifted from the demonstrations)
    sends training back to SFT; as SFT converges, RL takes over. Our stored
    paper list holds only the abstract ("an adaptive dynamic adjustment
    algorithm based on gradient norm"); the ratio form above follows a public
    pseudocode summary of the paper (warm-up norm recorded at the end of
    warm-up, latest SFT norm tracked afterwards), whose exact ``p_t`` formula
    (it has a hyperparameter gamma) we could not confirm: ``scale`` stands in
    for it.
    """

    name = "sasr"

    def __init__(self, phases: Sequence[str], sft: str = "sft", rl: str = "rl",
                 warmup_steps: int = 100, metric: str = "grad_norm", warmup_window: int = 1,
                 scale: float = 1.0, feedback_every: int = 10, seed: int = 0):
        super().__init__(phases, seed=seed, feedback_every=feedback_every)
        where = "schedule 'sasr'"
        check_phases([sft, rl], self.phases, where)
        if sft == rl:
            raise ValueError(f"{where}: sft and rl are both {sft!r}; name two different phases.")
        self.sft, self.rl, self.metric = str(sft), str(rl), str(metric)
        self.feedback_metrics = (self.metric,)
        self.warmup_steps = check_int(where, "warmup_steps", warmup_steps, 1)
        self.warmup_window = check_int(where, "warmup_window", warmup_window, 1)
        if self.warmup_window > self.warmup_steps:
            raise ValueError(f"{where}: warmup_window={warmup_window} is longer than "
                             f"warmup_steps={warmup_steps}.")
        if self.warmup_steps % self.feedback_every:
            raise ValueError(f"{where}: warmup_steps={warmup_steps} must be a multiple of "
                             f"feedback_every={feedback_every}, so that the warm-up gradient "
                             "norm is known when the warm-up ends.")
        self.scale = check_range(where, "scale", scale, 0.0, math.inf, lo_open=True, hi_open=True)
        self.g_warm: float | None = None
        self.g_last: float | None = None
        self._warm: list[float] = []
        self._isft = self.phases.index(self.sft)
        self._irl = self.phases.index(self.rl)
        self.probs = self._probs(1.0)

    def required_metrics(self):
        return {self.sft: (self.metric,)}

    def _probs(self, p_sft: float) -> np.ndarray:
        v = np.zeros(len(self.phases))
        v[self._isft], v[self._irl] = p_sft, 1.0 - p_sft
        return v

    def p_sft(self) -> float:
        if self.g_warm is None or self.g_last is None:
            return 1.0
        if self.g_warm <= 0:
            return 0.0
        return min(1.0, self.scale * self.g_last / self.g_warm)

    def next_phase(self, step: int) -> str:
        if step < self.warmup_steps:
            return self.sft
        return super().next_phase(step)

    def observe(self, step: int, phase: str, metrics: Mapping[str, float]) -> None:
        if phase != self.sft:
            return
        g = float(metrics[self.metric])
        if step < self.warmup_steps:
            if step >= self.warmup_steps - self.warmup_window:
                self._warm.append(g)
            if step == self.warmup_steps - 1:
                self.g_warm = float(np.mean(self._warm))
        self.g_last = g
        self.probs = self._probs(self.p_sft())

    def _state(self):
        return {"g_warm": self.g_warm, "g_last": self.g_last, "warm": self._warm}

    def _load(self, d):
        self.g_warm, self.g_last = d.get("g_warm"), d.get("g_last")
        self._warm = list(d.get("warm", []))

    def config(self):
        return {"name": self.name, "sft": self.sft, "rl": self.rl,
                "warmup_steps": self.warmup_steps, "metric": self.metric,
                "warmup_window": self.warmup_window, "scale": self.scale,
                "feedback_every": self.feedback_every, "seed": self.seed}


class LossShift(AdaptiveSchedule):
    """Switches phase when the watched phase's loss leaves its running statistics.

    Running statistics of ``metric`` for the current phase are exponential
    moving averages with rate ``decay``: on each record ``x``::

        d = x - mean;  mean += decay * d;  var = (1 - decay) * (var + decay * d^2)

    (the first record sets ``mean = x, var = 0``). Once ``min_count`` records
    have been absorbed, a record with ``|x - mean| > z * sqrt(var)`` is a
    shift (it is not absorbed; statistics restart from it). On a shift at
    step ``s`` the switch takes effect at the next feedback point
    ``t = (s // feedback_every + 1) * feedback_every``:

    * with ``react`` given: phase ``react`` runs for steps ``[t, t + hold_steps)``
      (e.g. a consolidation or replay phase), then the watched phase resumes;
    * without: training moves on to the next phase of ``order`` for good
      (a task-free continual-learning trigger).

    In the spirit of task-free continual learning (Aljundi et al. 2019,
    arXiv:1812.03596), which detects shifts from loss peaks and plateaus.
    """

    name = "loss_shift"

    def __init__(self, phases: Sequence[str], order: Any = None, react: str | None = None,
                 metric: str = "loss", z: float = 3.0, decay: float = 0.05,
                 min_count: int = 20, hold_steps: int = 50, feedback_every: int = 10,
                 seed: int = 0):
        super().__init__(phases, seed=seed, feedback_every=feedback_every)
        where = "schedule 'loss_shift'"
        self.order = [str(p) for p in (order if order is not None else self.phases)]
        check_phases(self.order + ([react] if react is not None else []), self.phases, where)
        if react is not None and react in self.order:
            raise ValueError(f"{where}: react={react!r} is also in order={self.order}; the "
                             "reaction phase must be a different phase.")
        if react is None and len(self.order) < 2:
            raise ValueError(f"{where}: give react=<phase> or an order of >= 2 phases.")
        self.react = react
        self.metric = str(metric)
        self.feedback_metrics = (self.metric,)
        self.z = check_range(where, "z", z, 0.0, math.inf, lo_open=True, hi_open=True)
        self.decay = check_range(where, "decay", decay, 0.0, 1.0, lo_open=True, hi_open=True)
        self.min_count = check_int(where, "min_count", min_count, 2)
        self.hold_steps = check_int(where, "hold_steps", hold_steps, 1)
        self.current = 0  # index into order
        self.react_from = self.react_until = 0
        self.switch_at = 0  # step from which order[current] runs
        self.mean = self.var = 0.0
        self.count = 0
        self.shifts: list[int] = []

    def required_metrics(self):
        return {p: (self.metric,) for p in self.order}

    def next_phase(self, step: int) -> str:
        if self.react is not None and self.react_from <= step < self.react_until:
            return self.react
        if step < self.switch_at and self.current > 0:
            return self.order[self.current - 1]
        return self.order[self.current]

    def observe(self, step: int, phase: str, metrics: Mapping[str, float]) -> None:
        if phase != self.order[self.current] or step < self.switch_at:
            return
        x = float(metrics[self.metric])
        if self.count >= self.min_count and abs(x - self.mean) > self.z * math.sqrt(self.var):
            t = (step // self.feedback_every + 1) * self.feedback_every
            self.shifts.append(int(step))
            if self.react is not None:
                self.react_from, self.react_until = t, t + self.hold_steps
            elif self.current + 1 < len(self.order):
                self.current += 1
                self.switch_at = t
            self.mean, self.var, self.count = x, 0.0, 1
            return
        if self.count == 0:
            self.mean, self.var = x, 0.0
        else:
            d = x - self.mean
            self.mean += self.decay * d
            self.var = (1.0 - self.decay) * (self.var + self.decay * d * d)
        self.count += 1

    def log_scalars(self, step: int) -> dict[str, float]:
        return {"shifts": float(len(self.shifts)), "loss_mean": self.mean,
                "loss_std": math.sqrt(self.var)}

    def _state(self):
        return {"current": self.current, "react_from": self.react_from,
                "react_until": self.react_until, "switch_at": self.switch_at,
                "mean": self.mean, "var": self.var, "count": self.count,
                "shifts": self.shifts[-1000:]}

    def _load(self, d):
        for k in ("current", "react_from", "react_until", "switch_at", "count"):
            setattr(self, k, int(d.get(k, getattr(self, k))))
        self.mean, self.var = float(d.get("mean", 0.0)), float(d.get("var", 0.0))
        self.shifts = [int(s) for s in d.get("shifts", [])]

    def config(self):
        return {"name": self.name, "order": self.order, "react": self.react,
                "metric": self.metric, "z": self.z, "decay": self.decay,
                "min_count": self.min_count, "hold_steps": self.hold_steps,
                "feedback_every": self.feedback_every, "seed": self.seed}

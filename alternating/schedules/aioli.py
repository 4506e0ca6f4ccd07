"""Aioli: online estimation of a linear mixing law (Chen et al. 2024, arXiv:2411.05735).

Each phase trains on one data group. Aioli assumes the loss of group ``i``
moves with the mixture ``p`` as ``L_i(p) ~ c_i - sum_j A_ij p_j`` and
estimates ``A`` during training from probe sweeps; the probe steps are
ordinary training steps and count toward the step budget.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from alternating.schedules.adaptive import AdaptiveSchedule
from alternating.schedules.base import check_phases
from alternating.schedules.curriculum import check_int, check_range, prob_vector


class Aioli(AdaptiveSchedule):
    """Probe sweeps estimate the mixing-law matrix; exponentiated-gradient update.

    With ``m`` phases (groups), a round of ``exploit_steps + m * probe_steps``
    steps is::

        [train on p for exploit_steps] [probe 1] ... [probe m]

    Probe ``j`` draws from ``q^j``: group ``j`` at ``probe_weight`` (Aioli:
    0.625), the others sharing the rest equally. The loop evaluates the sets
    named in ``evals`` (one per group, ``{phase: eval set}``) at each probe
    boundary; with ``d_i^j = L_i(before probe j) - L_i(after probe j)``
    (metric ``eval_metric``) and ``Q`` the ``m x m`` matrix of rows ``q^j``,
    row ``i`` of the estimate solves ``Q a_i = d_i``. Then::

        A_hat = A_hat / max|A_hat|              (normalize; skipped if all 0)
        A     = ema * A + (1 - ema) * A_hat     (first round: A = A_hat)
        p_j  <- p_j * exp(eta * sum_i A_ij), renormalized

    Published values: eta 0.2, probe weight 0.625, smoothing 0.1 (the share
    of the previous estimate, ``ema`` here). The probes run one after another,
    so later probes start from a more trained model; ``shuffle_probes=True``
    (our addition, not from the paper) draws each round's probe order from
    ``(seed, round)`` so that no group is always measured last. ``feedback_every`` is
    ``probe_steps``; ``exploit_steps`` must be a positive multiple of it.
    """

    name = "aioli"

    def __init__(self, phases: Sequence[str], evals: Any = None, eval_metric: str = "loss",
                 probe_steps: int = 50, exploit_steps: int = 200, probe_weight: float = 0.625,
                 eta: float = 0.2, ema: float = 0.1, init: Any = None,
                 shuffle_probes: bool = False, seed: int = 0):
        probe_steps = check_int("schedule 'aioli'", "probe_steps", probe_steps, 1)
        super().__init__(phases, seed=seed, feedback_every=probe_steps)
        where = "schedule 'aioli'"
        m = len(self.phases)
        if m < 2:
            raise ValueError(f"{where}: needs >= 2 phases (data groups), got {list(self.phases)}.")
        if evals is None:
            raise ValueError(f"{where}: give evals={{phase: eval set name}} (one validation set "
                             "per group).")
        evals = dict(evals.items())
        check_phases(list(evals), self.phases, f"{where} evals")
        missing = [p for p in self.phases if p not in evals]
        if missing:
            raise ValueError(f"{where}: evals has no evaluation set for phase(s) {missing}.")
        self.evals = {p: str(evals[p]) for p in self.phases}
        self.feedback_evals = tuple(sorted(set(self.evals.values())))
        self.eval_metric = str(eval_metric)
        self.probe_steps = probe_steps
        self.exploit_steps = check_int(where, "exploit_steps", exploit_steps, 1)
        if self.exploit_steps % probe_steps:
            raise ValueError(f"{where}: exploit_steps={exploit_steps} must be a multiple of "
                             f"probe_steps={probe_steps}.")
        self.probe_weight = check_range(where, "probe_weight", probe_weight, 1.0 / m, 1.0,
                                        lo_open=True)
        self.eta = check_range(where, "eta", eta, 0.0, math.inf, lo_open=True, hi_open=True)
        self.ema = check_range(where, "ema", ema, 0.0, 1.0, hi_open=True)
        self.shuffle_probes = bool(shuffle_probes)
        self.init = (prob_vector(init, self.phases, f"{where} init") if init is not None
                     else np.full(m, 1.0 / m))
        self.probs = self.init.copy()
        q = np.full((m, m), (1.0 - self.probe_weight) / (m - 1))
        np.fill_diagonal(q, self.probe_weight)
        self.q = q
        self.round_len = self.exploit_steps + m * probe_steps
        self.A: np.ndarray | None = None
        self._losses: list[list[float]] = []  # eval losses at this round's probe boundaries

    # Steps inside a round: [0, exploit) exploit, then probe j on
    # [exploit + j * probe, exploit + (j + 1) * probe).
    def _probe_index(self, step: int) -> int | None:
        r = step % self.round_len - self.exploit_steps
        return None if r < 0 else r // self.probe_steps

    def probe_order(self, round_index: int) -> np.ndarray:
        """The groups of round ``round_index``'s probes, in the order they run."""
        m = len(self.phases)
        if not self.shuffle_probes:
            return np.arange(m)
        return np.random.default_rng((self.seed, round_index, 1)).permutation(m)

    def current_probs(self, step: int) -> np.ndarray:
        j = self._probe_index(step)
        if j is None:
            return self.probs
        return self.q[self.probe_order(step // self.round_len)[j]]

    def next_phase(self, step: int) -> str:
        return self.phases[self._draws.pick(step, self.current_probs(step))]

    def needs_eval(self, step: int) -> bool:
        # Boundaries from the start of probe 1 to the end of probe m.
        r = step % self.round_len
        return r == 0 or r >= self.exploit_steps

    def observe_eval(self, step: int, results: Mapping[str, Mapping[str, float]]) -> None:
        r = step % self.round_len
        if not (r == 0 or r >= self.exploit_steps):
            return
        self._losses.append([float(results[self.evals[p]][self.eval_metric])
                             for p in self.phases])
        if r == 0:  # end of the last probe: the round is complete
            if len(self._losses) == len(self.phases) + 1:
                self._update(np.array(self._losses), self.probe_order(step // self.round_len - 1))
            self._losses = []

    def _update(self, losses: np.ndarray, order: np.ndarray) -> None:
        # losses[j] = per-group eval losses at the start of probe j (j < m), losses[m] at the end.
        d = losses[:-1] - losses[1:]  # d[j, i]: drop of group i during probe j
        a_hat = np.linalg.solve(self.q[order], d).T  # row i solves Q a_i = d[:, i]
        scale = np.abs(a_hat).max()
        if scale > 0:
            a_hat = a_hat / scale
        self.A = a_hat if self.A is None else self.ema * self.A + (1.0 - self.ema) * a_hat
        logp = np.log(np.maximum(self.probs, 1e-300)) + self.eta * self.A.sum(axis=0)
        p = np.exp(logp - logp.max())
        self.probs = p / p.sum()

    def log_scalars(self, step: int) -> dict[str, float]:
        return {f"p_{n}": float(v) for n, v in zip(self.phases, self.current_probs(step))}

    def _state(self):
        return {"A": None if self.A is None else self.A.tolist(), "losses": self._losses}

    def _load(self, d):
        self.A = None if d.get("A") is None else np.asarray(d["A"], np.float64)
        self._losses = [list(map(float, x)) for x in d.get("losses", [])]

    def config(self):
        return {"name": self.name, "evals": self.evals, "eval_metric": self.eval_metric,
                "probe_steps": self.probe_steps, "exploit_steps": self.exploit_steps,
                "probe_weight": self.probe_weight, "eta": self.eta, "ema": self.ema,
                "init": dict(zip(self.phases, self.init.tolist())),
                "shuffle_probes": self.shuffle_probes, "seed": self.seed}

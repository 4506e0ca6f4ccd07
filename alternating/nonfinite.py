"""Non-finite handling: what a NaN or infinite loss, gradient norm or metric does.

``nan_policy='raise'`` (default): the first logged non-finite metric stops the
run with :class:`NonFiniteError` naming the step, phase and metric, and no
checkpoint is written after it. ``nan_policy='skip'``: a step whose loss or
gradient norm is non-finite leaves the state unchanged, inside the jitted step
(:func:`skip_nonfinite`), the metric ``skipped`` counts it, and
``max_consecutive_skips`` skips in a row in one phase stop the run. A
non-finite *auxiliary* metric of a kept (finite) update is logged as it is
and does not stop a ``skip`` run: the update it reports on was applied.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alternating import metrics as metrics_lib

EXIT_NONFINITE = 3


class NonFiniteError(FloatingPointError):
    """A training loss, gradient norm or metric became NaN or infinite."""


def skip_nonfinite(step: Callable) -> Callable:
    """``nan_policy='skip'``: a step with a non-finite loss or gradient norm changes nothing.

    The whole new state (params, optimizer state, counters, extras) is
    replaced by the old one except the global step, inside the jitted step,
    so no host sync is needed. The metric ``skipped`` (0 or 1) reports it.
    """
    def guarded(state, batch):
        new, metrics = step(state, batch)
        ok = jnp.isfinite(metrics["loss"])
        if "grad_norm" in metrics:
            ok = ok & jnp.isfinite(metrics["grad_norm"])
        kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        kept = kept.replace(step=new.step)
        return kept, {**metrics, "skipped": jnp.where(ok, 0.0, 1.0)}

    guarded.__name__ = getattr(step, "__name__", "step")
    return guarded


def raise_if_nonfinite(items: Any, what: str = "") -> None:
    """``items``: a StepTable or ``(step, phase, metrics)`` records. ``what``: e.g. ' of seed 3'."""
    bad = (items.first_nonfinite() if isinstance(items, metrics_lib.StepTable)
           else metrics_lib.first_nonfinite(items))
    if bad is not None:
        s, p, metric = bad
        raise NonFiniteError(f"non-finite {metric} at step {s} in phase {p!r}{what}; stopping. "
                             "Lower the learning rate, clip gradients (optimizer.grad_clip_norm) "
                             "or set nan_policy='skip'.")


def _metric_column(table: metrics_lib.StepTable, name: str) -> np.ndarray:
    """The values of metric ``name`` in every row of ``table`` (0 where a phase lacks it)."""
    out = np.zeros(len(table))
    for i, phase in enumerate(table.phases):
        names = list(table.names[phase])
        if name in names:
            mask = table.ids == i
            out[mask] = table.values[mask, names.index(name)]
    return out


class Policy:
    """The run's non-finite policy over logged step records, with its skip counts.

    ``reduce(table)`` checks a log interval's records and returns their
    per-phase means (what the log writes). Its counts are part of a
    checkpoint (``state_dict``), so streaks continue across a resume.
    """

    def __init__(self, policy: str, phases: Sequence[str], max_consecutive_skips: int = 10):
        self.policy, self.limit = policy, int(max_consecutive_skips)
        self.streak = {n: 0 for n in phases}
        self.total = {n: 0 for n in phases}

    def wrap(self, step: Callable) -> Callable:
        return skip_nonfinite(step) if self.policy == "skip" else step

    def state_dict(self) -> dict[str, Any]:
        return {"streak": dict(self.streak), "total": dict(self.total)}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        for key, counts in (state or {}).items():
            getattr(self, key).update({p: int(v) for p, v in counts.items()})

    def reduce(self, table: metrics_lib.StepTable, what: str = "") -> dict[str, dict[str, float]]:
        """Checks ``table`` and returns its per-phase means.

        Raises:
          NonFiniteError: under 'raise', any non-finite metric; under 'skip',
            ``max_consecutive_skips`` skipped steps in a row in one phase.
        """
        if self.policy != "skip":
            raise_if_nonfinite(table, what)
            return table.aggregate()
        col = _metric_column(table, "skipped")
        if not col.any():  # no skipped step: every streak ends, no row is dropped
            for i in np.unique(table.ids).tolist():
                self.streak[table.phases[i]] = 0
            agg = table.aggregate(drop=("skipped",))
            for scalars in agg.values():
                scalars["skipped"] = 0.0
            return agg
        kept, skipped = [], {}
        for s, p, m in table.rows():
            if m.get("skipped", 0.0) > 0:
                skipped[p] = skipped.get(p, 0) + 1
                self.total[p] += 1
                self.streak[p] += 1
                if self.streak[p] >= self.limit:
                    raise NonFiniteError(
                        f"phase {p!r} had a non-finite loss or gradient norm on "
                        f"{self.streak[p]} of its steps in a row (the last at step {s}){what}; "
                        f"stopping (nan_policy='skip', max_consecutive_skips={self.limit}).")
            else:
                self.streak[p] = 0
                kept.append((s, p, {k: v for k, v in m.items() if k != "skipped"}))
        agg = metrics_lib.aggregate(kept)
        for p, n in skipped.items():
            agg.setdefault(p, {})["skipped"] = float(n)
        for scalars in agg.values():
            scalars.setdefault("skipped", 0.0)
        return agg

    def check_saveable(self, table: metrics_lib.StepTable) -> None:
        """Never save a state that followed a non-finite step (under 'raise')."""
        if self.policy == "raise":
            raise_if_nonfinite(table)

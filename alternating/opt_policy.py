"""Optimizer-state policies: when a phase's optax state is re-initialized.

A phase owns one optimizer state over its own parameters. By default it is
kept for the whole run, across every switch to other phases. A policy says
when to re-initialize it, and which of its leaves:

* ``reset``: ``keep`` (default), ``on_enter`` (at the first step of each run
  of the phase, i.e. when the previous global step ran another phase),
  ``every`` (every ``every`` of the phase's own steps: a task boundary in a
  fixed-length task stream) or ``at_steps`` (when a global step in ``steps``
  was reached since the phase last ran: explicit task boundaries).
* ``leaves``: a regex over the phase's own parameter paths; only the moments
  (and other parameter-shaped state) of matching leaves are re-initialized.
  ``None`` (default) re-initializes the whole state, counts included, so the
  result equals a fresh ``tx.init``, and the phase's learning-rate schedule
  starts over (warm-up included), as a freshly built optimizer would.

With ``leaves`` set, the state's counters (Adam's bias-correction count, the
schedule count) are kept: they are shared by all of the phase's leaves. The
re-initialized leaves then restart from zero moments with a late count, so
Adam's first updates on them are larger than a fresh optimizer's (about
``(1 - b1) / sqrt(1 - b2)`` times the learning rate per coordinate). Use a
whole-state reset, or a separate phase for that group, when that matters.

Everything happens inside the jitted step with ``jnp.where`` on a traced
flag: a reset never retraces or recompiles, the state keeps its structure, and
the leaves that are not reset are returned bit-identical. ``optax.masked``
is not involved (see :mod:`alternating.phase` for why it is avoided).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax

from alternating import partition

POLICY_KEYS = ("reset", "every", "steps", "leaves")
RESETS = ("keep", "on_enter", "every", "at_steps")
# extras[LAST_STEP] = {phase: int32 global step at which it last ran (-1: never)}.
# Kept only for phases whose policy needs it, so other runs' states are unchanged.
LAST_STEP = "opt_policy_last_step"


@dataclasses.dataclass(frozen=True)
class OptPolicy:
    """A parsed optimizer-state policy (see the module docstring)."""

    reset: str = "keep"
    every: int = 0
    steps: tuple[int, ...] = ()
    leaves: str | None = None

    @property
    def keeps(self) -> bool:
        return self.reset == "keep"

    @property
    def needs_last_step(self) -> bool:
        return self.reset in ("on_enter", "at_steps")

    @property
    def resets_counts(self) -> bool:
        return not self.keeps and self.leaves is None


def parse(spec: Any, *, where: str = "opt_policy") -> OptPolicy:
    """Turns ``None``, a string (``'keep'``, ``'on_enter'``) or a dict into an :class:`OptPolicy`.

    Raises:
      ValueError: unknown keys or reset kinds, or a kind missing its argument.
    """
    if spec is None:
        return OptPolicy()
    if isinstance(spec, OptPolicy):
        return spec
    if isinstance(spec, str):
        spec = {"reset": spec}
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    unknown = sorted(set(spec) - set(POLICY_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {list(POLICY_KEYS)}.")
    reset = spec.get("reset", "keep")
    if reset not in RESETS:
        raise ValueError(f"{where}.reset={reset!r}; valid: {list(RESETS)}.")
    every = int(spec.get("every") or 0)
    steps = tuple(sorted(int(s) for s in (spec.get("steps") or ())))
    if reset == "every" and every < 1:
        raise ValueError(f"{where}: reset='every' needs every=N >= 1 (the phase's own steps "
                         f"between resets), got {spec.get('every')!r}.")
    if reset == "at_steps" and not steps:
        raise ValueError(f"{where}: reset='at_steps' needs steps=[global steps], e.g. the "
                         "first step of each task.")
    leaves = spec.get("leaves")
    if leaves is not None and reset == "keep":
        raise ValueError(f"{where}: leaves={leaves!r} given with reset='keep'; choose when to "
                         f"reset ({list(RESETS[1:])}).")
    return OptPolicy(reset, every, steps, leaves)


def leaf_mask(policy: OptPolicy, own: Any, *, where: str = "opt_policy") -> Any:
    """``{path: bool}`` nested like ``own``: which own leaves the policy re-initializes.

    Raises:
      ValueError: ``leaves`` matches none of the phase's own parameters.
    """
    flat = partition.flatten(own)
    if policy.leaves is None:
        return partition.unflatten({p: True for p in flat})
    rx = re.compile(policy.leaves)
    mask = {p: bool(rx.fullmatch(p)) for p in flat}
    if not any(mask.values()):
        raise ValueError(f"{where}: leaves={policy.leaves!r} matches none of the phase's own "
                         f"parameters (regexes must match the whole path): {sorted(flat)}.")
    return partition.unflatten(mask)


def init_bookkeeping(bound_phases) -> dict[str, Any]:
    """The extras entry the policies need (empty when no phase needs one)."""
    names = [b.name for b in bound_phases
             if getattr(b, "policy", OptPolicy()).needs_last_step]
    if not names:
        return {}
    return {LAST_STEP: {n: jnp.full((), -1, jnp.int32) for n in names}}


def reset_flag(policy: OptPolicy, name: str, step: jax.Array, count: jax.Array,
               extras: Mapping[str, Any]) -> jax.Array:
    """Traced bool: whether this step starts from a re-initialized state.

    Args:
      step: the global step this phase's update runs at.
      count: the phase's own steps taken before this one.
    """
    if policy.reset == "every":
        return (count > 0) & (count % policy.every == 0)
    last = extras[LAST_STEP][name]
    if policy.reset == "on_enter":
        # The very first step of a run starts from a fresh state anyway.
        return (last >= 0) & (last != step - 1)
    if policy.reset == "at_steps":
        b = jnp.asarray(policy.steps, jnp.int32)
        return jnp.any((b > last) & (b <= step)) & (step > 0)
    return jnp.zeros((), bool)


def apply(policy: OptPolicy, tx: optax.GradientTransformation, opt_state: Any, own: Any,
          mask: Any, reset: jax.Array) -> Any:
    """Returns ``opt_state`` with the policy's leaves re-initialized where ``reset``.

    Leaves outside ``mask`` (and, for a subset policy, the non-parameter
    counters) are returned unchanged.
    """
    if policy.keeps:
        return opt_state
    if policy.leaves is None:
        def fresh_state():
            return jax.tree.map(lambda f, o: jnp.asarray(f, o.dtype), tx.init(own), opt_state)
    else:
        select = optax.tree_utils.tree_map_params(
            tx, lambda _, m: m, opt_state, mask, transform_non_params=lambda _: False,
            is_leaf=lambda x: isinstance(x, optax.MaskedNode))

        def fresh_state():
            return jax.tree.map(lambda sel, f, o: jnp.asarray(f, o.dtype) if sel else o,
                                select, tx.init(own), opt_state)
    # Under lax.cond the fresh state is built only on the steps that reset
    # (a select over the whole state on every step costs a pass over it).
    return jax.lax.cond(reset, fresh_state, lambda: opt_state)


def schedule_count(opt_state: Any) -> jax.Array | None:
    """The learning-rate schedule's own count in an optax state (``None`` if absent)."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
        x, optax.ScaleByScheduleState)) if isinstance(s, optax.ScaleByScheduleState)]
    return found[0].count if found else None


def keep_untouched(tx: optax.GradientTransformation, new: Any, old: Any, mask: Any) -> Any:
    """``new`` optimizer state, but ``old`` for the parameter leaves outside ``mask``.

    One optimizer shared by several phases (PyTorch's semantics): a step
    changes the moments of the leaves it trains only; counters (a shared
    step count, the learning-rate schedule's) come from ``new``.
    """
    select = optax.tree_utils.tree_map_params(
        tx, lambda _, m: m, old, mask, transform_non_params=lambda _: True,
        is_leaf=lambda x: isinstance(x, optax.MaskedNode))
    return jax.tree.map(lambda sel, n, o: n if sel else o, select, new, old)

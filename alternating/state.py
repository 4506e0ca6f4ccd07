"""TrainState: one pytree whose structure never changes during a run.

Fields: ``step`` (global step, int32), ``params``, ``opt_state`` (``{phase:
optimizer state over that phase's own parameters only}``), ``phase_steps``
(``{phase: int32}``: how many steps each phase has taken, which is also its
learning-rate schedule position), ``rng`` (the run's base key; per-step keys are
``fold_in``-ed from it, so it never changes) and ``extras`` (EMA/teacher
parameters, statistics, dual variables...).

Counters are int32 arrays, never Python ints: a Python int in the state would
be baked into the compiled step and force a retrace every step.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp

from alternating import extras as extras_lib
from alternating import opt_policy, partition


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Mapping[str, Any]
    phase_steps: Mapping[str, jax.Array]
    rng: jax.Array
    extras: Mapping[str, Any]


def init_state(params: Any, phases: Sequence[Any], rng: jax.Array, *,
               ema_decay: float = 0.0, extras: Mapping[str, Any] | None = None,
               extra_specs: Mapping[str, Any] | None = None) -> TrainState:
    """Builds the initial TrainState.

    Args:
      params: initial model parameters.
      phases: bound phases (each with ``name``, ``tx`` and ``trainable``).
      rng: the run's base key (a raw ``uint32[2]`` key, which Orbax saves as is).
      ema_decay: when > 0, ``extras['ema']`` holds an exponential moving
        average of the parameters, updated after every step.
      extras: further user extras, copied in as given.
      extra_specs: declared extras ``{name: {'kind': ...}}``, built from
        ``params`` (see :mod:`alternating.extras`).

    Raises:
      ValueError: an extra declared twice, or a phase updating an extra that
        does not exist.
    """
    opt_state = {}
    for ph in phases:
        key = getattr(ph, "opt_key", ph.name)
        if key not in opt_state:  # a shared group: one state over its phases' union
            mask = getattr(ph, "group_trainable", None) or ph.trainable
            own, _ = partition.split(params, mask)
            opt_state[key] = ph.tx.init(own)
    all_extras = dict(extras or {})
    declared = extras_lib.init_extras(extra_specs, params, jax.random.fold_in(rng, 0x5EED))
    for name, value in declared.items():
        if name in all_extras:
            raise ValueError(f"extra {name!r} is both declared and given; rename one.")
        all_extras[name] = value
    if ema_decay > 0:
        if "ema" in all_extras:
            raise ValueError("ema_decay > 0 keeps extras['ema'], but an extra named 'ema' is "
                             "declared too; rename it or use an 'ema' update rule instead.")
        # A copy, not an alias: buffers are donated to the step, and an aliased
        # EMA would be invalidated along with the params it was taken from.
        all_extras["ema"] = jax.tree.map(jnp.copy, params)
    all_extras.update(opt_policy.init_bookkeeping(phases))
    extras_lib.check_updates({ph.name: getattr(ph, "updates", ()) for ph in phases}, all_extras)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=opt_state,
        phase_steps={ph.name: jnp.zeros((), jnp.int32) for ph in phases},
        rng=rng,
        extras=all_extras,
    )


def ema_update(ema: Any, params: Any, decay: float) -> Any:
    """``decay * ema + (1 - decay) * params``, leaf by leaf, keeping dtypes."""
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)


def param_count(tree: Any) -> int:
    """Number of scalars in a pytree of arrays."""
    return sum(int(x.size) for x in jax.tree.leaves(tree) if hasattr(x, "size"))


def tree_bytes(tree: Any) -> int:
    """Bytes held by the arrays of a pytree (for optimizer-state accounting)."""
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def size_report(state: Any, bound: Sequence[Any]) -> dict[str, Any]:
    """``results.json``'s sizes of one run's state (arrays or shapes): parameters,
    parameters each phase trains, and bytes of each phase's optimizer state."""
    flat = partition.flatten(state.params)
    return {
        "num_params": param_count(state.params),
        "trained_params_per_phase": {
            b.name: sum(int(v.size) for p, v in flat.items() if b.trainable[p]) for b in bound},
        "opt_state_bytes_per_phase": {k: tree_bytes(v) for k, v in state.opt_state.items()},
    }

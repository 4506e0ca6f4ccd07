"""Extras: state beside the parameters that phases read and update.

``TrainState.extras`` is a dict of pytrees (teachers, parameter snapshots,
dual variables, slack). Being part of the state, extras are checkpointed with
it, placed like the parameters (replicated over the mesh) and donated to every
step; their structure is fixed when the state is built, so updating them never
retraces.

An extra is declared once (``extras`` in :func:`alternating.train`, or
``config.extras``) by its kind:

* ``copy``: a copy of the initial parameters (an EMA or mean teacher);
* ``zeros``: zeros shaped like the parameters (dual variables, slack);
* ``ring``: the last ``size`` parameter snapshots, for stale policies; read
  with :func:`ring_get`;
* ``init``: ``'module:function'``, called as ``function(params, rng,
  **kwargs)`` and returning any pytree of arrays.

Each phase says which extras its steps update, after its optimizer step, in
``Phase.updates``: a list of ``{'extra': name, 'rule': ..., 'every': N}``
(``every``: only on every N-th of the phase's own steps). Rules:

* ``ema``: ``decay * value + (1 - decay) * params`` (``decay``; with
  ``ramp=True`` the decay is ``min(decay, 1 - 1 / (n + 1))`` at the phase's
  ``n``-th step, the mean-teacher warm-up);
* ``copy``: the current parameters;
* ``push``: push the current parameters into a ``ring``;
* ``'module:function'``: a factory ``factory(model, **kwargs) -> rule`` with
  ``rule(value, params, extras, rng, count) -> new value`` (``count``: the
  phase's steps before this one), e.g. an ADMM dual ascent.

Losses read extras through their fourth argument, so a phase can use what
other phases produce: a teacher's predictions as pseudo-labels, a snapshot as
the behaviour policy, dual variables in an augmented Lagrangian.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from alternating import registry

EXTRA_KINDS = ("copy", "zeros", "ring", "init")
RULES = ("ema", "copy", "push")
EXTRA_KEYS = ("kind", "size", "init", "kwargs")
UPDATE_KEYS = ("extra", "rule", "every", "decay", "ramp", "kwargs")


def _plain(spec: Any) -> dict[str, Any]:
    return dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)


def _import(path: str, where: str) -> Callable:
    return registry.import_attr(path, where)


# --- Snapshot rings. ---------------------------------------------------------------


def ring_init(params: Any, size: int) -> dict[str, Any]:
    """A ring of ``size`` snapshots, every slot holding ``params`` (one push so far)."""
    return {"params": jax.tree.map(lambda p: jnp.repeat(p[None], size, axis=0), params),
            "head": jnp.zeros((), jnp.int32), "count": jnp.ones((), jnp.int32)}


def ring_push(ring: Mapping[str, Any], params: Any) -> dict[str, Any]:
    """The ring with ``params`` as its newest snapshot (the oldest is dropped)."""
    size = jax.tree.leaves(ring["params"])[0].shape[0]
    head = (ring["head"] + 1) % size
    stacked = jax.tree.map(lambda s, p: s.at[head].set(p.astype(s.dtype)), ring["params"], params)
    return {"params": stacked, "head": head, "count": ring["count"] + 1}


def ring_get(ring: Mapping[str, Any], lag: Any) -> Any:
    """The snapshot pushed ``lag`` pushes ago (0: the newest).

    ``lag`` may be a traced int; it is clipped to the snapshots that exist
    (``min(count, size) - 1``), so early in a run the oldest available one is
    returned.
    """
    size = jax.tree.leaves(ring["params"])[0].shape[0]
    lag = jnp.clip(jnp.asarray(lag, jnp.int32), 0, jnp.minimum(ring["count"], size) - 1)
    idx = (ring["head"] - lag) % size
    return jax.tree.map(lambda s: s[idx], ring["params"])


# --- Declaring extras. -------------------------------------------------------------


def init_extras(specs: Mapping[str, Any] | None, params: Any, rng: jax.Array) -> dict[str, Any]:
    """Builds the declared extras from the initial parameters.

    Raises:
      ValueError: unknown kind or keys, a ring without ``size``, an
        unimportable ``init`` (each naming the extra).
    """
    out = {}
    for i, (name, spec) in enumerate(sorted((specs or {}).items())):
        where = f"extras.{name}"
        spec = _plain(spec)
        unknown = sorted(set(spec) - set(EXTRA_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {list(EXTRA_KEYS)}.")
        kind = spec.get("kind", "copy")
        if kind == "copy":
            # A copy, not an alias: the step donates params, which would
            # invalidate an aliased extra.
            out[name] = jax.tree.map(jnp.copy, params)
        elif kind == "zeros":
            out[name] = jax.tree.map(jnp.zeros_like, params)
        elif kind == "ring":
            size = int(spec.get("size") or 0)
            if size < 1:
                raise ValueError(f"{where}: kind='ring' needs size=K >= 1 (snapshots kept).")
            out[name] = ring_init(params, size)
        elif kind == "init":
            if not isinstance(spec.get("init"), str) or ":" not in spec["init"]:
                raise ValueError(f"{where}: kind='init' needs init='module:function'.")
            fn = _import(spec["init"], where)
            out[name] = fn(params, jax.random.fold_in(rng, i), **dict(spec.get("kwargs") or {}))
        else:
            raise ValueError(f"{where}.kind={kind!r}; valid kinds: {list(EXTRA_KINDS)}.")
    return out


# --- Per-phase update rules. -------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Update:
    """A bound update rule: ``rule(value, params, extras, rng, count) -> value``."""

    extra: str
    rule: Callable
    every: int = 1
    name: str = ""


def _ema_rule(decay: float, ramp: bool) -> Callable:
    def rule(value, params, extras, rng, count):
        del extras, rng
        d = jnp.asarray(decay, jnp.float32)
        if ramp:
            d = jnp.minimum(d, 1.0 - 1.0 / (count.astype(jnp.float32) + 1.0))
        return jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), value, params)
    return rule


def _copy_rule(value, params, extras, rng, count):
    del extras, rng, count
    return jax.tree.map(lambda e, p: p.astype(e.dtype), value, params)


def _push_rule(value, params, extras, rng, count):
    del extras, rng, count
    return ring_push(value, params)


registry.RULES.register("copy", lambda model, **kwargs: _copy_rule)
registry.RULES.register("push", lambda model, **kwargs: _push_rule)
registry.RULES.register("ema", lambda model, decay=0.99, ramp=False: _ema_rule(decay, ramp))


def bind_updates(specs: Sequence[Any] | None, model: Any = None, *,
                 where: str = "updates") -> tuple[Update, ...]:
    """Resolves a phase's ``updates`` list.

    Raises:
      ValueError: unknown keys or rules, bad ``every`` or ``decay``.
    """
    out = []
    for i, spec in enumerate(specs or ()):
        w = f"{where}[{i}]"
        spec = _plain(spec)
        unknown = sorted(set(spec) - set(UPDATE_KEYS))
        if unknown:
            raise ValueError(f"{w}: unknown keys {unknown}; valid keys: {list(UPDATE_KEYS)}.")
        if "extra" not in spec:
            raise ValueError(f"{w}: missing 'extra' (the name of the extra to update).")
        rule = spec.get("rule", "ema")
        every = int(spec.get("every", 1))
        if every < 1:
            raise ValueError(f"{w}: every={every}; it must be >= 1.")
        if rule == "ema":
            decay = float(spec.get("decay", 0.99))
            if not 0.0 <= decay < 1.0:
                raise ValueError(f"{w}: decay={decay}; it must be in [0, 1).")
            fn = _ema_rule(decay, bool(spec.get("ramp", False)))
        elif isinstance(rule, str):
            # A registered rule factory or 'module:function': factory(model, **kwargs).
            fn = registry.RULES.resolve(rule, f"{w}.rule")(model, **dict(spec.get("kwargs") or {}))
        elif callable(rule):
            fn = rule
        else:
            raise registry.RULES.error(f"{w}.rule", rule)
        out.append(Update(spec["extra"], fn, every, str(rule)))
    return tuple(out)


def check_updates(phase_updates: Mapping[str, Sequence[Update]], extras: Mapping[str, Any]) -> None:
    """Raises ValueError if a phase updates an extra that was not declared."""
    for phase, updates in phase_updates.items():
        for u in updates:
            if u.extra not in extras:
                raise ValueError(f"phase {phase!r} updates extra {u.extra!r}, which is not "
                                 f"declared; declared extras: {sorted(extras)}.")


def apply_updates(updates: Sequence[Update], extras: Mapping[str, Any], params: Any,
                  rng: jax.Array, count: jax.Array, batch: Any = None) -> dict[str, Any]:
    """Runs a phase's update rules in order; each sees the previous ones' results.

    A rule whose function has ``takes_batch = True`` is also given the
    step's (global) training batch as ``batch=`` (e.g. a replay memory filled
    from the examples the phase trains on).

    A rule with ``every > 1`` runs under ``lax.cond``: on the steps where it
    is not due it costs nothing (computing it and selecting the old value,
    as ``jnp.where`` would, made a rule at ``every=200`` cost on every step).
    Under ``vmap`` (vectorized seeds) ``cond`` becomes a select; the values
    are the same.
    """
    extras = dict(extras)
    for i, u in enumerate(updates):
        old = extras[u.extra]
        key = jax.random.fold_in(rng, 1000 + i)
        if u.every > 1:
            def run(old=old, u=u, key=key, seen=dict(extras)):
                new = _call(u.rule, old, params, seen, key, count, batch)
                return jax.tree.map(lambda n, o: jnp.asarray(n, o.dtype), new, old)
            on = (count + 1) % u.every == 0
            new = jax.lax.cond(on, run, lambda old=old: old)
        else:
            new = _call(u.rule, old, params, extras, key, count, batch)
        extras[u.extra] = new
    return extras


def _call(rule: Callable, old: Any, params: Any, extras: Any, key: Any, count: Any,
          batch: Any) -> Any:
    if getattr(rule, "takes_batch", False):
        return rule(old, params, extras, key, count, batch=batch)
    return rule(old, params, extras, key, count)

"""Random per-batch augmentation, inside the jitted step, keyed by the step.

A phase's ``augment`` is a list of specs ``[{'name': ..., **kwargs}, ...]``
applied in order to the inputs of each training batch (``batch['x']``, or
``batch[stream]['x']`` for every stream of a multi-stream phase) before the
loss reads them. Evaluation batches are never augmented.

Where the randomness comes from: the step's key, ``fold_in(fold_in(state.rng,
state.step), phase index)`` (the loss's own key), folded once more with a tag
of its own, then split per example. It is a pure function of the seed, the
global step and the example's position in the global batch, so

* a run resumed from a checkpoint draws exactly what the uninterrupted run
  draws (no augmentation state to save);
* the host and fused executors, and 1 or N data-parallel devices, draw the
  same augmentations (the batch is global under ``jit``);
* vectorized seeds draw per seed (each replica has its own ``state.rng``);
* device-resident data keeps its speed: nothing runs on the host.

Built-in augmentations (``x`` is one example; leading axes after the batch
are the spatial or time axes):

* ``shift``: circular shift along ``axis`` (default 0, e.g. the time axis of
  a ``(40, 1)`` MNIST-1D signal) by an integer drawn uniformly from
  ``[-max_shift, max_shift]``;
* ``noise``: add Gaussian noise of std ``std``;
* ``flip``: reverse ``axis`` (default 1, an image's width) with probability ``p``;
* ``crop``: zero-pad ``pad`` on both spatial axes (0 and 1) and crop back at a
  random offset (the standard image translation augmentation).

Your own: ``'package.module:function'`` (or a registered name, see
:data:`AUGMENTS`), called as ``function(x, key, **kwargs) -> x`` on one
example; it must keep the example's shape and dtype.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from alternating import registry

AUGMENTS = registry.AUGMENTS
_TAG = 0xA06  # the augmentation's stream, apart from the loss's key


@AUGMENTS.register("shift")
def shift(x: jax.Array, key: jax.Array, *, max_shift: int = 1, axis: int = 0) -> jax.Array:
    k = jax.random.randint(key, (), -int(max_shift), int(max_shift) + 1)
    return jnp.roll(x, k, axis=axis)


@AUGMENTS.register("noise")
def noise(x: jax.Array, key: jax.Array, *, std: float = 0.1) -> jax.Array:
    return x + float(std) * jax.random.normal(key, x.shape, x.dtype)


@AUGMENTS.register("flip")
def flip(x: jax.Array, key: jax.Array, *, p: float = 0.5, axis: int = 1) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key, float(p)), jnp.flip(x, axis=axis), x)


@AUGMENTS.register("crop")
def crop(x: jax.Array, key: jax.Array, *, pad: int = 1) -> jax.Array:
    pad = int(pad)
    widths = [(pad, pad), (pad, pad)] + [(0, 0)] * (x.ndim - 2)
    padded = jnp.pad(x, widths)
    i, j = jax.random.randint(key, (2,), 0, 2 * pad + 1)
    start = (i, j) + (0,) * (x.ndim - 2)
    return jax.lax.dynamic_slice(padded, start, x.shape)


def _plain(spec: Any) -> dict[str, Any]:
    return dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)


def build(specs: Any, where: str) -> Callable[[Any, jax.Array], Any] | None:
    """Resolves a phase's ``augment`` list into ``f(batch, key) -> batch`` (None if empty).

    Raises:
      ValueError: a spec that is not a mapping with a ``name``, an unknown
        name (the valid ones are listed), or keyword arguments the
        augmentation does not take (checked on an abstract example when the
        step is traced: the error then names the phase and the spec).
    """
    if not specs:
        return None
    if isinstance(specs, Mapping) or not isinstance(specs, Sequence):
        raise ValueError(f"{where} augment: expected a list of {{'name': ..., **kwargs}}, got "
                         f"{type(specs).__name__}.")
    fns = []
    for i, spec in enumerate(specs):
        if not hasattr(spec, "keys") or "name" not in spec:
            raise ValueError(f"{where} augment[{i}]: expected {{'name': ..., **kwargs}} with "
                             f"'name' one of {sorted(AUGMENTS.names())}, got {spec!r}.")
        kwargs = _plain(spec)
        name = kwargs.pop("name")
        fn = AUGMENTS.resolve(name, where=f"{where} augment[{i}].name")
        fns.append((f"{where} augment[{i}] ({name!r})", fn, kwargs))

    def one(x: jax.Array, key: jax.Array) -> jax.Array:
        for i, (label, fn, kwargs) in enumerate(fns):
            try:
                y = fn(x, jax.random.fold_in(key, i), **kwargs)
            except TypeError as e:
                raise ValueError(f"{label}: {e}") from e
            if y.shape != x.shape:
                raise ValueError(f"{label} changed an example's shape from {x.shape} to "
                                 f"{y.shape}; an augmentation must keep it.")
            x = y.astype(x.dtype)
        return x

    def apply(batch: Any, key: jax.Array) -> Any:
        key = jax.random.fold_in(key, _TAG)
        if "x" in batch:
            return _apply_x(one, batch, key)
        return {s: _apply_x(one, b, jax.random.fold_in(key, k))
                for k, (s, b) in enumerate(sorted(batch.items()))}

    return apply


def _apply_x(one: Callable, batch: Mapping[str, Any], key: jax.Array) -> dict[str, Any]:
    x = batch["x"]
    keys = jax.random.split(key, x.shape[0])
    return {**batch, "x": jax.vmap(one)(x, keys)}

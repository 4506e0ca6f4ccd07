"""Device mesh, shardings and the jitted, data-parallel step.

Data parallelism is ``jax.jit`` over a ``Mesh`` with a ``data`` axis: batches
are sharded along it, the TrainState is replicated, and XLA inserts the
gradient all-reduce because the loss is a mean over the *global* batch. No
``shard_map``/``pmean`` is involved, so there is no risk of the N-fold
gradient that a pmap-style ``pmean(grads)`` gives under ``shard_map``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def make_mesh(devices: Any = None) -> Mesh:
    """A 1-D mesh with a ``data`` axis over all (global) devices."""
    devices = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devices.reshape(-1), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


@functools.lru_cache(maxsize=None)
def batch_sharding(mesh: Mesh) -> NamedSharding:
    # Cached: built for every batch on the hot path.
    return NamedSharding(mesh, P(DATA))


def check_batch_size(batch_size: int, mesh: Mesh, where: str) -> None:
    """Raises a clear error when a global batch does not split across devices."""
    n = mesh.shape[DATA]
    if batch_size % n:
        lo, hi = batch_size - batch_size % n, batch_size + n - batch_size % n
        raise ValueError(
            f"{where}: batch_size={batch_size} does not divide across the {n} devices of "
            f"the '{DATA}' mesh axis; use a multiple of {n} (e.g. {lo or n} or {hi}).")


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places this process's slice of a global batch on the batch sharding."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class TraceCounter:
    """Counts how often each named function is traced (== compiled here).

    The step closes over no Python values that change, so each trace is one
    compile; the count is reported in ``results.json`` and tested to be one per
    phase over many switches.
    """

    def __init__(self):
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def wrap(self, name: str, fn: Callable) -> Callable:
        def traced(*args, **kwargs):
            with self._lock:
                self.counts[name] = self.counts.get(name, 0) + 1
            return fn(*args, **kwargs)
        traced.__name__ = getattr(fn, "__name__", name)
        return traced


def jit_step(step: Callable, mesh: Mesh, *, counter: TraceCounter | None = None,
             name: str = "step") -> Callable:
    """Jits ``step(state, batch)`` once: state replicated and donated, batch sharded."""
    fn = counter.wrap(name, step) if counter else step
    rep = replicated(mesh)
    # The batch sharding is a pytree prefix: it covers flat and {stream: batch} batches.
    return jax.jit(fn, in_shardings=(rep, batch_sharding(mesh)), out_shardings=(rep, rep),
                   donate_argnums=0)

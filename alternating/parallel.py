"""Device mesh, shardings and the jitted, data-parallel step.

Data parallelism is ``jax.jit`` over a ``Mesh`` with a ``data`` axis: batches
are sharded along it, the TrainState is replicated, and XLA inserts the
gradient all-reduce because the loss is a mean over the *global* batch. No
``shard_map``/``pmean`` is involved, so there is no risk of the N-fold
gradient that a pmap-style ``pmean(grads)`` gives under ``shard_map``.

A mesh may also have an ``fsdp`` axis (``make_mesh(fsdp=k)``): batches are
then split over both axes (every device gets its own examples), and
parameters and optimizer states are sharded along ``fsdp`` by
:func:`state_shardings` (each large leaf split on one dimension, or by
user rules), so a model ``k`` times larger than one device's memory fits.
XLA gathers a sharded parameter where a step needs it whole and
reduce-scatters its gradient; the arithmetic is that of data parallelism,
so results match a data-only mesh up to summation order (tested).
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
FSDP = "fsdp"
MIN_SHARD_SIZE = 2 ** 14  # smaller leaves stay replicated: splitting them costs more than it saves


# Several CPU devices in one process: XLA's in-process all-reduce can deadlock
# (and abort after 40 s: "Termination timeout for all reduce") when programs
# with collectives are queued ahead. Training steps each depend on the one
# before; the executors wait every ``DRAIN_EVERY`` steps (``executor.DRAIN_EVERY``).
DRAIN_EVERY = 32
# Programs that do not depend on each other (an evaluation's batches, a
# Fisher's, every replica's and every set's) deadlock much sooner. On 4 CPU
# devices, 64 independent jitted all-reduces dispatched 20 times over
# (tests/parallel_test.py's case and a standalone script like it; idle and
# loaded 2-core machine, 2026-11-29): no wait aborted in 6 of 6 runs, a wait
# every 32 in 3 of 4, a wait every 4 in none of 13 (every 1, 2, 8 or 16: none
# of 6). Loops that dispatch such programs call :func:`bound_queue` after each:
# one count for the whole process, a wait every ``QUEUE_INDEPENDENT``.
QUEUE_INDEPENDENT = 4
_independent = [0]


def bound_queue(value: Any) -> None:
    """Counts one dispatched program (its output ``value``) that does not depend on the
    ones before it, and waits for ``value`` at every ``QUEUE_INDEPENDENT``-th of the
    process when it lives on several CPU devices; elsewhere nothing."""
    leaves = [x for x in jax.tree.leaves(value) if isinstance(x, jax.Array)]
    devices = leaves[0].sharding.device_set if leaves else ()
    if len(devices) < 2 or next(iter(devices)).platform != "cpu":
        return
    _independent[0] += 1
    if _independent[0] % QUEUE_INDEPENDENT == 0:
        jax.block_until_ready(leaves)


def make_mesh(devices: Any = None, *, fsdp: int = 1) -> Mesh:
    """A mesh over all (global) devices: ``data`` only, or ``data`` x ``fsdp``.

    Args:
      devices: the devices (default ``jax.devices()``).
      fsdp: > 1 adds an ``fsdp`` axis of that size (parameters and optimizer
        states sharded over it, see :func:`state_shardings`); the ``data``
        axis gets the remaining factor.

    Raises:
      ValueError: ``fsdp`` does not divide the number of devices.
    """
    devices = np.asarray(jax.devices() if devices is None else devices).reshape(-1)
    if fsdp < 1 or devices.size % fsdp:
        raise ValueError(f"fsdp={fsdp} must be >= 1 and divide the {devices.size} devices; "
                         f"valid: {[k for k in range(1, devices.size + 1) if devices.size % k == 0]}.")
    if fsdp == 1:
        return Mesh(devices, (DATA,))
    return Mesh(devices.reshape(-1, fsdp), (DATA, FSDP))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_axes(mesh: Mesh) -> str | tuple[str, ...]:
    """The mesh axes a batch's leading dimension is split over."""
    return (DATA, FSDP) if FSDP in mesh.axis_names else DATA


def batch_devices(mesh: Mesh) -> int:
    """How many ways a global batch is split."""
    return mesh.shape[DATA] * (mesh.shape[FSDP] if FSDP in mesh.axis_names else 1)


@functools.lru_cache(maxsize=None)
def batch_sharding(mesh: Mesh) -> NamedSharding:
    # Cached: built for every batch on the hot path.
    return NamedSharding(mesh, P(batch_axes(mesh)))


def _leaf_spec(shape: tuple[int, ...], size: int) -> P:
    """Splits the largest dimension divisible by ``size``; small leaves stay whole."""
    if size == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARD_SIZE:
        return P()
    dims = sorted(range(len(shape)), key=lambda d: -shape[d])
    for d in dims:
        if shape[d] % size == 0:
            return P(*([None] * d + [FSDP]))
    return P()


def state_shardings(tree: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = ()) -> Any:
    """Shardings for a TrainState (or any pytree of arrays) on ``mesh``.

    Without an ``fsdp`` axis everything is replicated. With one, each leaf of
    at least ``MIN_SHARD_SIZE`` elements is split along ``fsdp`` on its
    largest dimension that the axis size divides (so a parameter and its Adam
    moments are split alike); others are replicated.

    Args:
      tree: the state, or its ``jax.eval_shape``.
      mesh: the mesh.
      rules: ordered ``(regex, PartitionSpec or None)`` pairs matched
        (``re.search``) against each leaf's path, e.g. ``params/Dense_0/kernel``
        or ``opt_state/a/0/mu/Dense_0/kernel``; the first match wins,
        ``None`` replicates. Unmatched leaves get the default rule.

    Returns:
      A pytree of ``NamedSharding`` with the structure of ``tree``.

    Raises:
      ValueError: a rule's spec names an axis the mesh lacks, or does not
        divide the leaf (naming the path).
    """
    size = mesh.shape[FSDP] if FSDP in mesh.axis_names else 1
    compiled = [(re.compile(rx), spec) for rx, spec in rules]

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        name = "/".join(_key(k) for k in path)
        for rx, spec in compiled:
            if rx.search(name):
                spec = P() if spec is None else P(*spec)
                _check_spec(name, shape, spec, mesh)
                return NamedSharding(mesh, spec)
        return NamedSharding(mesh, _leaf_spec(shape, size))

    return jax.tree_util.tree_map_with_path(one, tree)


def _key(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _check_spec(name: str, shape: tuple[int, ...], spec: P, mesh: Mesh) -> None:
    if len(spec) > len(shape):
        raise ValueError(f"sharding rule for {name!r}: spec {spec} has more entries than the "
                         f"leaf's {len(shape)} dimensions {shape}.")
    for dim, axes in zip(shape, spec):
        for a in (axes if isinstance(axes, tuple) else (axes,)):
            if a is None:
                continue
            if a not in mesh.axis_names:
                raise ValueError(f"sharding rule for {name!r}: axis {a!r} is not a mesh axis; "
                                 f"mesh axes: {list(mesh.axis_names)}.")
            if dim % mesh.shape[a]:
                raise ValueError(f"sharding rule for {name!r}: dimension {dim} of {shape} does "
                                 f"not split over axis {a!r} of size {mesh.shape[a]}.")


def check_batch_size(batch_size: int, mesh: Mesh, where: str) -> None:
    """Raises a clear error when a global batch does not split across devices."""
    n = batch_devices(mesh)
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
    return jax.tree.map(lambda v: jax.make_array_from_process_local_data(sharding, v),
                        dict(batch))


def step_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> Any:
    """A training batch as a jitted step takes it.

    One process: the host arrays as they are; the step's ``in_shardings``
    place them while it dispatches, which on JAX 0.10's CPU backend costs
    about 8 us against about 50 us for a separate ``jax.device_put`` (measured
    for an 8x8 batch; see docs/benchmarks.md). Several processes: each
    process's slice becomes a global array.
    """
    return batch if jax.process_count() == 1 else shard_batch(batch, mesh)


_fetch_state = threading.local()


@contextlib.contextmanager
def fetching():
    """Marks a planned device-to-host transfer (a log, an evaluation, a checkpoint).

    Every place the library reads device values on the host does so inside
    this context, which allows it under ``jax.transfer_guard_device_to_host(
    "disallow")``; anything else is an unplanned transfer (tested: none per
    step). ``is_fetching()`` tells whether one is in progress on this thread.
    """
    depth = getattr(_fetch_state, "depth", 0)
    _fetch_state.depth = depth + 1
    try:
        with jax.transfer_guard_device_to_host("allow"):
            yield
    finally:
        _fetch_state.depth = depth


def is_fetching() -> bool:
    return getattr(_fetch_state, "depth", 0) > 0


def get(tree: Any) -> Any:
    """``jax.device_get`` as a planned transfer (see :func:`fetching`)."""
    with fetching():
        return jax.device_get(tree)


def fetch(arrays: Sequence[Any]) -> list[np.ndarray]:
    """Host copies of many (small) device arrays, e.g. a log interval's metrics.

    On CPU devices in one process, ``np.asarray`` of each array: about 0.9 ms
    for 1,000 small arrays against 7 ms for ``jax.device_get`` of the list
    (JAX 0.10, 2-core CPU; see docs/benchmarks.md), which on CPU has nothing
    to overlap. Elsewhere ``jax.device_get``, which starts every transfer
    before waiting for any.
    """
    with fetching():
        if (arrays and jax.process_count() == 1
                and all(isinstance(a, jax.Array) for a in arrays)
                and jax.devices()[0].platform == "cpu"):
            return [np.asarray(a) for a in arrays]
        return jax.device_get(list(arrays))


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
             name: str = "step", state_sharding: Any = None, carry: bool = False,
             data: bool = False) -> Callable:
    """Jits ``step(state, batch)`` once: state donated, batch sharded.

    ``state_sharding``: the state's shardings (:func:`state_shardings`);
    default replicated. ``carry``: the step is ``step(state, batch, carry) ->
    (state, carry)`` with a replicated ``carry``, donated like the state.
    ``data``: one more argument, replicated and not donated (device-resident
    data the step gathers its batch from).
    """
    fn = counter.wrap(name, step) if counter else step
    rep = replicated(mesh)
    st = rep if state_sharding is None else state_sharding
    # The batch sharding is a pytree prefix: it covers flat and {stream: batch} batches.
    ins = (st, batch_sharding(mesh)) + ((rep,) if carry else ()) + ((rep,) if data else ())
    return jax.jit(fn, in_shardings=ins, out_shardings=(st, rep),
                   donate_argnums=(0, 2) if carry else 0)

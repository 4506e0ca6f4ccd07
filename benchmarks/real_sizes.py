"""Real sizes: a shared encoder with two heads, two phases, at compute-bound widths.

The scheme (the one an issue measured on an H200): a two-layer MLP encoder
shared by two linear heads; phases ``a`` and ``b`` alternate ``[a, b]``:

* ``a``: softmax cross-entropy on head ``a``'s logits; trains ``encoder/*``
  and ``head_a/*`` with its own ``optax.adam(1e-3)``;
* ``b``: mean squared error of head ``b``'s output against the one-hot label;
  trains ``encoder/*`` and ``head_b/*`` with its own ``optax.adam(1e-3)``.

Both report their loss and accuracy (the library adds the gradient norm, as
it always does). Workloads (``--workload``; data: 8,192 generated examples,
Gaussian class blobs, numpy arrays in memory):

* ``cpu``: MLP 256-1024-1024-100, batch 512 (the CPU-sized version);
* ``large``: MLP 1024-4096-4096-1000, batch 1024 (the issue's size);
* ``large_small_batch``: MLP 64-4096-4096-1000, batch 1024 (the same model,
  batches of 1/16 the bytes);
* ``smoke``: MLP 32-64-64-10, batch 64 (what ``--quick`` runs by default).

Loops, same initial parameters, same batches in the same order (the final
parameters agree: ``max_param_diff_vs_hand_loop``), interleaved (the order
rotates every repeat):

* ``host``: ``alternating.train(executor='host')`` with Python loss
  functions, the data a library ``Stream`` over the in-memory arrays;
* ``fused``: the same with ``executor='fused', chunk_steps=K``;
* ``hand_loop``: a Python loop over two ``jax.jit(..., donate_argnums=0)``
  optax steps with the whole dataset ALREADY ON THE DEVICE: each step
  gathers its batch inside the jitted program from a device permutation
  index (the stream's own order) and a batch counter in the state;
* ``hand_scan``: the same two steps in a jitted ``lax.scan`` + ``lax.switch``
  over chunks of ``K`` steps, data on the device.

Every loop keeps its per-step metrics on the device and fetches them every
``--log-every`` steps. Rates are steady state, compiles excluded, in the
spirit of ``harness.py``'s clock but with the device synced at both ends:
each loop runs ``3K + T`` steps and is timed over the window of steps
``[2K, 2K + T)``; when the batch of the window's first (then last) step is
read from the stream (by ``next()``, or in a chunk by ``next_batches``), the
clock waits for every step dispatched so far, then takes the time (the
hand-written loops wait and take it at the same steps). So the window holds
the same steps in every loop, periodic logs included, and none of the start
or end of a run: on the 2-core machine the final checkpoint and results of
``train`` varied by +-0.6 s between runs, which made the difference clock
of runs of two lengths swing by +-25% at this model size. Wall clock and
process CPU time are both reported; on a shared machine the CPU-time ratios
are the steadier ones.

``--breakdown`` (default for ``cpu`` and ``smoke``) splits the library's
per-step cost into parts. Each part is a step (or a scan chunk) run on the
same state and batches, every call device synced, in round robin over
``--breakdown-rounds`` rounds (so a burst of load from other processes hits
every part alike); reported per step: the median wall time, process CPU
time, and time until the Python call returned (a call that blocks, e.g. on a
synchronous transfer, shows there). Synced calls leave no host/device
overlap: an input path's cost is its full, unhidden cost.

* ``hand_index``: the hand-written step, batch gathered on the device (the
  ``hand_loop`` baseline without its metric fetches);
* ``hand_device_batch``: the hand-written step taking a batch already on the
  device (a pool of pre-placed batches, cycled);
* ``hand_device_batch_gnorm``: the same plus the gradient norm in its metrics;
* ``hand_numpy_batch``: the hand-written step taking ``next(stream)`` numpy
  batches (the library's input path: gather on the host, copy at dispatch);
* ``lib_device_batch_noring``: the library's own step (``phase.make_step``,
  packed metrics, ``parallel.jit_step``), pre-placed device batches;
* ``lib_device_batch``: the same written into the metric ring, as the host
  executor jits it;
* ``lib_numpy_batch``: that step fed ``next(stream)`` numpy batches (the host
  executor without its loop);
* ``hand_scan_switch`` / ``hand_scan_unrolled``: chunks of ``K`` hand-written
  steps in a ``lax.scan`` whose body ``lax.switch``-es on the phase, and one
  whose body runs the ``[a, b]`` pattern with no switch (scan over ``K / 2``).

and the differences (``attribution``): gradient norm, metric ring, the rest
of the library's step, the input path, the hand loop's on-device gather, the
switch in a scan, and of the main measurement's ``host - hand_loop`` what
those parts leave to the host loop itself (``host_loop_rest``). Also:
``next(stream)`` alone, a chunk read (``next_batches``) per step, a
``jax.device_put`` of one batch;
whether each step's old state buffers were deleted after a call (donated)
and the input/output aliases of the compiled programs; XLA's cost analysis
(flops, bytes accessed) of the library's and the hand-written step programs,
and the copies in the scan programs (count and megabytes per iteration).

Usage::

    python benchmarks/real_sizes.py                     # cpu workload, about 2 minutes on 2 cores
    python benchmarks/real_sizes.py --workload large,large_small_batch   # an accelerator's sizes
    python benchmarks/real_sizes.py --workload large --chunk 2 --log-every 2 --steps 2
        --repeats 1 --no-breakdown                      # (one line) on a 2-core CPU: 2 minutes
    python benchmarks/real_sizes.py --quick             # smoke check, seconds

The last line of the output is one JSON object: per workload (under
``workloads``) the rates and ``host_vs_hand_loop`` and ``fused_vs_hand_scan``
(median, min and max over repeats of library steps/s over hand-written
steps/s; ``best_of_repeats``: fastest repeat over fastest repeat, the figure
least disturbed by other processes on a shared machine), the same medians
under ``ratios``, and ``target`` (0.9).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import shutil
import statistics
import tempfile
import time
import warnings

import harness  # also puts the repository root on sys.path
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import alternating
from alternating import data as data_lib
from alternating import build as build_lib
from alternating import executor as executor_lib
from alternating import loop as loop_lib
from alternating import parallel
from alternating import phase as phase_lib
from alternating.schedules import make_schedule
from alternating.state import init_state

TARGET = 0.9
LR = 1e-3
SEED = 0
NUM_EXAMPLES = 8192
# Sizes, and default clock settings for a CPU and for an accelerator:
# ((chunk K, log interval, timed steps T), repeats).
WORKLOADS = {
    "cpu": {"inputs": 256, "hidden": (1024, 1024), "classes": 100, "batch": 512,
            "cpu": ((10, 50, 100), 4), "accel": ((20, 100, 1000), 3)},
    "large": {"inputs": 1024, "hidden": (4096, 4096), "classes": 1000, "batch": 1024,
              "cpu": ((2, 4, 4), 1), "accel": ((20, 100, 500), 3)},
    "large_small_batch": {"inputs": 64, "hidden": (4096, 4096), "classes": 1000, "batch": 1024,
                          "cpu": ((2, 4, 4), 1), "accel": ((20, 100, 500), 3)},
    "smoke": {"inputs": 32, "hidden": (64, 64), "classes": 10, "batch": 64,
              "cpu": ((10, 50, 500), 3), "accel": ((10, 50, 500), 3)},
}
QUICK = ((2, 4, 4), 1)  # --quick: one run of a few steps per loop (figures mean nothing)
SCHEDULE = {"name": "alternate", "pattern": ["a", "b"]}


# --- The scheme. ---------------------------------------------------------------------------


class Encoder(nn.Module):
    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return x


class TwoHeads(nn.Module):
    """A shared MLP encoder (``encoder/Dense_i``) and two linear heads (``head_a``, ``head_b``)."""

    hidden: tuple[int, ...]
    classes: int

    @nn.compact
    def __call__(self, x, head: str = "both"):
        h = Encoder(self.hidden, name="encoder")(x)
        out = {}
        if head in ("a", "both"):
            out["a"] = nn.Dense(self.classes, name="head_a")(h)
        if head in ("b", "both"):
            out["b"] = nn.Dense(self.classes, name="head_b")(h)
        return out if head == "both" else out[head]


class Workload:
    """One workload's model, data, losses, library phases and initial parameters."""

    def __init__(self, name: str):
        w = WORKLOADS[name]
        self.name, self.batch = name, w["batch"]
        self.inputs, self.classes, self.hidden = w["inputs"], w["classes"], tuple(w["hidden"])
        self.module = TwoHeads(self.hidden, self.classes)
        rng = np.random.default_rng(SEED + 12345)
        centers = rng.normal(size=(self.classes, self.inputs)).astype(np.float32)
        y = rng.integers(0, self.classes, size=NUM_EXAMPLES).astype(np.int32)
        x = centers[y] + 0.5 * rng.normal(size=(NUM_EXAMPLES, self.inputs)).astype(np.float32)
        self.arrays = {"x": x, "y": y}
        self.stream_seed = build_lib.stream_seed(SEED, "train")
        # The library's init key: ``train`` splits PRNGKey(seed) the same way.
        self.init_rng = jax.random.split(jax.random.PRNGKey(SEED))[0]
        module, classes = self.module, self.classes

        def loss_a(params, batch, rng, extras):
            logits = module.apply({"params": params}, batch["x"], head="a")
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
            acc = (jnp.argmax(logits, -1) == batch["y"]).astype(jnp.float32).mean()
            return ce, {"accuracy": acc}

        def loss_b(params, batch, rng, extras):
            out = module.apply({"params": params}, batch["x"], head="b")
            target = jax.nn.one_hot(batch["y"], classes, dtype=out.dtype)
            mse = jnp.mean(jnp.sum((out - target) ** 2, axis=-1))
            acc = (jnp.argmax(out, -1) == batch["y"]).astype(jnp.float32).mean()
            return mse, {"accuracy": acc}

        self.losses = {"a": loss_a, "b": loss_b}

    def init(self, rng):
        return self.module.init(rng, jnp.zeros((1, self.inputs), jnp.float32))["params"]

    def phases(self):
        return [alternating.Phase("a", self.losses["a"], data="train",
                                  params=[("encoder/.*", True), ("head_a/.*", True), (".*", None)],
                                  optimizer=optax.adam(LR)),
                alternating.Phase("b", self.losses["b"], data="train",
                                  params=[("encoder/.*", True), ("head_b/.*", True), (".*", None)],
                                  optimizer=optax.adam(LR))]

    def stream(self, window: tuple[int, int] | None = None) -> "WindowStream":
        s = WindowStream(self.arrays, batch_size=self.batch, seed=self.stream_seed)
        s.window = window
        return s

    def order(self, batches: int) -> np.ndarray:
        """The example indices of the stream's first ``batches`` batches, concatenated."""
        return data_lib.Stream(self.arrays, batch_size=self.batch,
                               seed=self.stream_seed)._indices_many(0, batches).astype(np.int32)


# --- The library. --------------------------------------------------------------------------


class WindowStream(data_lib.Stream):
    """The library's Stream, with a clock over the steps ``[w0, w1)`` of a run.

    When the batch of step ``w0`` (then of ``w1``) is about to be handed out
    (by ``next()``, or in a chunk by ``next_batches``), every step dispatched
    before it is waited for (all live arrays made ready), then the time is
    taken: the window holds exactly the steps from the first step of that
    batch's read to the first step of the other's, device synced at both ends,
    and none of the run's start-up or end (compiles, final checkpoint).
    """

    window: tuple[int, int] | None = None
    served = 0
    resident_ok = True  # its batches are the base order's: device-resident data applies

    def _note(self, k: int) -> None:
        if self.window:
            for i, w in enumerate(self.window):
                if self.served <= w < self.served + k:
                    jax.block_until_ready([a for a in jax.live_arrays() if not a.is_deleted()])
                    self.marks = getattr(self, "marks", [None, None])
                    self.marks[i] = (self.served, time.perf_counter(), time.process_time())
        self.served += k

    def __next__(self):
        self._note(1)
        return data_lib.Stream.__next__(self)

    def next_batches(self, k: int):
        self._note(k)
        return data_lib.Stream.next_batches(self, k)

    def next_indices(self):
        self._note(1)
        return data_lib.Stream.next_indices(self)

    def next_indices_many(self, k: int):
        self._note(k)
        return data_lib.Stream.next_indices_many(self, k)

    def times(self) -> dict[str, float]:
        (s0, t0, c0), (s1, t1, c1) = self.marks
        return {"steps": s1 - s0, "wall": t1 - t0, "cpu": c1 - c0}




def run_library(wl: Workload, n: int, window: tuple[int, int], log_every: int, executor: str,
                chunk: int):
    """``alternating.train`` for ``n`` steps; returns (times over the window, final state)."""
    s = wl.stream(window)
    workdir = tempfile.mkdtemp(prefix="real_sizes_")
    try:
        state = alternating.train(
            phases=wl.phases(), schedule=SCHEDULE, data={"train": s}, init=wl.init,
            workdir=workdir, total_steps=n, seed=SEED, log_every_steps=log_every,
            checkpoint_every_steps=0, progress=False, plot=False, print_fn=None,
            executor=executor, chunk_steps=chunk)
        jax.block_until_ready(state)
        times = s.times()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return times, state


def _library_pieces(wl: Workload):
    """``(bound phases, init_rng, state_rng, pack_metrics, MetricRing, ring rows)``: what
    ``train`` builds its host steps from."""
    schedule = make_schedule(SCHEDULE, ["a", "b"], seed=SEED)
    init_rng, state_rng = build_lib.run_rngs(SEED)
    bound, _ = build_lib.bind_phases(wl.phases(), schedule, wl.init, model=None,
                                     init_rng=init_rng, total_steps=1000)
    return (bound, init_rng, state_rng, build_lib.pack_metrics, executor_lib.MetricRing,
            loop_lib._RING_ROWS)  # noqa: SLF001  (the ring size train uses)


def library_host_steps(wl: Workload, ring: bool = True):
    """The library's steps and initial state as the host executor builds them.

    ``phase.make_step`` of each bound phase, metrics packed into one vector,
    written into the device-side metric ring, jitted by ``parallel.jit_step``
    (state and ring donated). Returns ``(steps, state, ring)``:
    ``steps[name](state, batch, ring.buf) -> (state, ring.buf)``; with
    ``ring=False``, ``steps[name](state, batch) -> (state, metrics)`` and
    ``ring`` None.
    """
    bound, init_rng, state_rng, pack, ring_cls, rows = _library_pieces(wl)
    mesh = parallel.make_mesh()
    packed = {b.name: pack(phase_lib.make_step(b))[0] for b in bound}
    state = jax.jit(lambda: init_state(wl.init(init_rng), bound, state_rng),
                    out_shardings=parallel.replicated(mesh))()
    if not ring:
        return {n: parallel.jit_step(fn, mesh, name=n) for n, fn in packed.items()}, state, None
    r = ring_cls(rows, 3, mesh)  # width: the longest metrics vector (accuracy, grad_norm, loss)
    steps = {n: parallel.jit_step(r.wrap(fn), mesh, name=n, carry=True)
             for n, fn in packed.items()}
    return steps, state, r


# --- Hand-written baselines: data on the device. ------------------------------------------


def hand_steps(wl: Workload, *, gather: bool = True, grad_norm: bool = False):
    """Two plain optax steps; state ``(params, opt_a, opt_b, t)``, ``t`` the batch counter.

    ``gather``: ``step(state, data, order)`` takes batch ``t`` of the device
    permutation ``order`` from the device ``data``; else ``step(state, batch)``.
    Metrics: ``f32[2]`` (loss, accuracy), plus the gradient norm with ``grad_norm``.
    Returns ``(steps, init)``; the steps are not jitted.
    """
    tx = {"a": optax.adam(LR), "b": optax.adam(LR)}
    owned = {"a": ("encoder", "head_a"), "b": ("encoder", "head_b")}
    batch_size = wl.batch

    def make(name):
        loss_fn, keys = wl.losses[name], owned[name]

        def body(state, batch):
            params, opt_a, opt_b, t = state
            own = {k: params[k] for k in keys}
            (loss, aux), grads = jax.value_and_grad(
                lambda o: loss_fn({**params, **o}, batch, None, None), has_aux=True)(own)
            opt = opt_a if name == "a" else opt_b
            updates, opt = tx[name].update(grads, opt, own)
            params = {**params, **optax.apply_updates(own, updates)}
            opt_a, opt_b = (opt, opt_b) if name == "a" else (opt_a, opt)
            m = [loss, aux["accuracy"]] + ([optax.global_norm(grads)] if grad_norm else [])
            return (params, opt_a, opt_b, t + 1), jnp.stack(m)

        if not gather:
            return body

        def step(state, data, order):
            idx = jax.lax.dynamic_slice(order, (state[3] * batch_size,), (batch_size,))
            return body(state, {k: jnp.take(v, idx, axis=0) for k, v in data.items()})

        return step

    @jax.jit
    def init():
        params = wl.init(wl.init_rng)
        return (params, tx["a"].init({k: params[k] for k in owned["a"]}),
                tx["b"].init({k: params[k] for k in owned["b"]}), jnp.zeros((), jnp.int32))

    return {"a": make("a"), "b": make("b")}, init


def device_data(wl: Workload, steps: int):
    """The dataset and the stream's order for ``steps`` batches, on the device."""
    return jax.device_put(wl.arrays), jax.device_put(wl.order(steps))


def _check_finite(records, step):
    host = parallel.fetch(records)
    if not all(np.isfinite(h).all() for h in host):
        raise FloatingPointError(f"non-finite metric before step {step}")


def run_hand_loop(compiled, data, order, n: int, window: tuple[int, int], log_every: int):
    """The Python loop over the two jitted steps; times steps ``window[0] .. window[1] - 1``."""
    steps, init = compiled
    state = init()
    records, cycle, marks = [], ("a", "b"), {}
    for step in range(n):
        if step in window:
            jax.block_until_ready(state)
            marks[step] = (time.perf_counter(), time.process_time())
        state, m = steps[cycle[step % 2]](state, data, order)
        records.append(m)
        if (step + 1) % log_every == 0 or step + 1 == n:
            _check_finite(records, step + 1)
            records = []
    jax.block_until_ready(state)
    (t0, c0), (t1, c1) = marks[window[0]], marks[window[1]]
    return {"steps": window[1] - window[0], "wall": t1 - t0, "cpu": c1 - c0}, state


def hand_scan_program(wl: Workload, switch: bool = True):
    """A jitted chunk ``(state, ids, data, order) -> (state, metrics)`` over the hand steps.

    ``switch``: a ``lax.scan`` whose body ``lax.switch``-es on ``ids[t]``;
    else a scan over ``len(ids) // 2`` repeats of the ``[a, b]`` pattern
    (no conditional; ``ids`` only gives the length).
    """
    steps, init = hand_steps(wl)

    def chunk(state, ids, data, order):
        def body(state, i):
            return jax.lax.switch(i, [steps["a"], steps["b"]], state, data, order)
        return jax.lax.scan(body, state, ids)

    def unrolled(state, ids, data, order):
        def body(state, _):
            state, ma = steps["a"](state, data, order)
            state, mb = steps["b"](state, data, order)
            return state, jnp.stack([ma, mb])
        return jax.lax.scan(body, state, None, length=ids.shape[0] // 2)

    return jax.jit(chunk if switch else unrolled, donate_argnums=0), init


def run_hand_scan(compiled, data, order, n: int, window: tuple[int, int], log_every: int,
                  chunk: int):
    """Chunks of ``chunk`` steps (cut at the log interval); times the chunks from the one
    holding step ``window[0]`` to the one holding ``window[1]``."""
    fn, init = compiled
    state = init()
    records, step, marks = [], 0, []
    while step < n:
        k = min(chunk, n - step, log_every - step % log_every)
        if len(marks) < 2 and step <= window[len(marks)] < step + k:
            jax.block_until_ready(state)
            marks.append((step, time.perf_counter(), time.process_time()))
        state, m = fn(state, np.arange(step, step + k, dtype=np.int32) % 2, data, order)
        records.append(m)
        step += k
        if step % log_every == 0 or step == n:
            _check_finite(records, step)
            records = []
    jax.block_until_ready(state)
    (s0, t0, c0), (s1, t1, c1) = marks
    return {"steps": s1 - s0, "wall": t1 - t0, "cpu": c1 - c0}, state


# --- Measurement. --------------------------------------------------------------------------


def settings(wl: Workload, args):
    """``(K, log interval, steps per run, window, repeats)``; the window ``[2K, 2K + T)``
    starts after every program has compiled and starts and ends on chunk boundaries."""
    accel = jax.devices()[0].platform != "cpu"
    defaults = QUICK if args.quick else WORKLOADS[wl.name]["accel" if accel else "cpu"]
    (k, log, steps), repeats = defaults
    k, log, steps = args.chunk or k, args.log_every or log, args.steps or steps
    if log % k or k % 2:
        raise SystemExit(f"--log-every ({log}) must be a multiple of --chunk ({k}), "
                         "and --chunk even (whole [a, b] patterns)")
    window = (2 * k, 2 * k + -(-steps // k) * k)
    return k, log, window[1] + k, window, args.repeats or repeats


def max_param_diff(a, b) -> float:
    return float(max(np.max(np.abs(np.asarray(x) - np.asarray(y)))
                     for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))))


def measure(wl: Workload, args) -> dict:
    k, log, n, window, repeats = settings(wl, args)
    data, order = device_data(wl, n)
    steps, init = hand_steps(wl)
    hand_loop = ({name: jax.jit(f, donate_argnums=0) for name, f in steps.items()}, init)
    hand_scan = hand_scan_program(wl)
    finals = {}

    def rate(name, fn, *a):
        times, state = fn(*a)
        finals[name] = state.params if hasattr(state, "params") else state[0]
        return times["steps"] / times["wall"], times["steps"] / times["cpu"]

    loops = {
        "host": lambda: rate("host", run_library, wl, n, window, log, "host", k),
        "fused": lambda: rate("fused", run_library, wl, n, window, log, "fused", k),
        "hand_loop": lambda: rate("hand_loop", run_hand_loop, hand_loop, data, order, n, window,
                                  log),
        "hand_scan": lambda: rate("hand_scan", run_hand_scan, hand_scan, data, order, n, window,
                                  log, k),
    }
    names = list(loops)
    rates = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall_rate, cpu_rate = loops[name]()
            rates[name].append(wall_rate)
            cpu[name].append(cpu_rate)
        print(f"  {wl.name} repeat {r + 1}/{repeats}: steps/s "
              + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names), flush=True)

    def ratio(a, b, table=rates):
        return harness.summary([x / y for x, y in zip(table[a], table[b])])

    def best(a, b):
        return round(max(rates[a]) / max(rates[b]), 4)

    def us(table):
        return {n: round(1e6 / statistics.median(table[n]), 1) for n in names}

    return {
        "steps_per_s": {n: harness.summary(rates[n]) for n in names},
        "us_per_step": us(rates),
        "cpu_us_per_step": us(cpu),
        "host_vs_hand_loop": ratio("host", "hand_loop"),
        "fused_vs_hand_scan": ratio("fused", "hand_scan"),
        "fused_vs_host": ratio("fused", "host"),
        # Fastest repeat over fastest repeat: the least disturbed by other processes.
        "best_of_repeats": {"host_vs_hand_loop": best("host", "hand_loop"),
                            "fused_vs_hand_scan": best("fused", "hand_scan")},
        "hand_scan_vs_hand_loop": ratio("hand_scan", "hand_loop"),
        "cpu_time_ratios": {"host_vs_hand_loop": ratio("host", "hand_loop", cpu),
                            "fused_vs_hand_scan": ratio("fused", "hand_scan", cpu)},
        # Same scheme, data and init: the library's final parameters are the hand loop's.
        "max_param_diff_vs_hand_loop": {e: max_param_diff(finals[e], finals["hand_loop"])
                                        for e in ("host", "fused", "hand_scan")},
        "batch": wl.batch, "sizes": [wl.inputs, *wl.hidden, wl.classes],
        "chunk_steps": k, "log_every_steps": log, "steps_per_run": n, "window": list(window),
        "repeats": repeats,
    }


# --- Breakdown: where the library's per-step time goes. ------------------------------------


def _synced(call, i: int, state):
    """One call, device synced: ``(state, wall us, CPU us, us until the call returned)``."""
    t0, c0 = time.perf_counter(), time.process_time()
    state = call(i, state)
    t1 = time.perf_counter()
    jax.block_until_ready(state)
    return (state, (time.perf_counter() - t0) * 1e6, (time.process_time() - c0) * 1e6,
            (t1 - t0) * 1e6)


_HLO_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f64": 8,
              "s64": 8, "u64": 8}  # others (f32, s32, u32): 4


def _program_facts(jitted, *args) -> dict:
    """XLA's view of a compiled program: flops, bytes accessed, donations honoured, copies."""
    compiled = jitted.lower(*args).compile()
    text = compiled.as_text()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    head = next((ln for ln in text.splitlines() if "input_output_alias" in ln), "")
    copies, copied = 0, 0
    for m in re.finditer(r"= (\w+)\[([\d,]*)\]\{[^}]*\} copy\(", text):
        dims = [int(d) for d in m.group(2).split(",") if d]
        copies += 1
        copied += int(np.prod(dims, dtype=np.int64)) * _HLO_BYTES.get(m.group(1), 4)
    return {"gflops": round(cost.get("flops", 0.0) / 1e9, 4),
            "mb_accessed": round(cost.get("bytes accessed", 0.0) / 1e6, 2),
            "aliases": head.count("-alias"), "copies": copies, "mb_copied": round(copied / 1e6, 2)}


def _deleted(tree) -> str:
    leaves = jax.tree.leaves(tree)
    return f"{sum(x.is_deleted() for x in leaves)}/{len(leaves)}"


def breakdown(wl: Workload, args, loop_us: dict | None = None) -> dict:
    """Per-step parts, us/step: medians over ``--breakdown-rounds`` round-robin rounds."""
    k = settings(wl, args)[0]
    reps = 2 if args.quick else args.breakdown_rounds
    cycle = ("a", "b")
    s = wl.stream()
    host_pool = [next(s) for _ in range(8)]
    dev_pool = [jax.device_put(b) for b in host_pool]
    data, order = device_data(wl, 8 * (reps + 1) * (2 + k) + 64)
    out: dict = {}

    def jit2(fns):
        return {c: jax.jit(f, donate_argnums=0) for c, f in fns.items()}

    hs, hinit = hand_steps(wl)
    hand_index = jit2(hs)
    hand_batch = jit2(hand_steps(wl, gather=False)[0])
    hand_gnorm = jit2(hand_steps(wl, gather=False, grad_norm=True)[0])
    lib_ring, lstate, ring = library_host_steps(wl)
    lib_plain, lstate_plain, _ = library_host_steps(wl, ring=False)
    scan_switch, _ = hand_scan_program(wl)
    scan_unrolled, _ = hand_scan_program(wl, switch=False)
    ids = np.arange(k, dtype=np.int32) % 2

    # Donations and XLA's view of each program, before anything runs.
    hstate = hinit()
    facts = {"hand_step_a": _program_facts(hand_batch["a"], hstate, dev_pool[0]),
             "hand_step_a_gnorm": _program_facts(hand_gnorm["a"], hstate, dev_pool[0]),
             "lib_step_a": _program_facts(lib_ring["a"], lstate, dev_pool[0], ring.buf),
             "hand_step_b": _program_facts(hand_batch["b"], hstate, dev_pool[0]),
             "lib_step_b": _program_facts(lib_ring["b"], lstate, dev_pool[0], ring.buf),
             f"hand_scan_switch_{k}": _program_facts(scan_switch, hstate, ids, data, order),
             f"hand_scan_unrolled_{k}": _program_facts(scan_unrolled, hstate, ids, data, order)}
    out["programs"] = facts
    old, old_ring = lstate, ring.buf
    lstate, ring.buf = lib_ring["a"](lstate, host_pool[0], ring.buf)
    new_h, _ = hand_index["a"](hstate, data, order)
    out["donated"] = {"library_state": _deleted(old), "library_ring": _deleted(old_ring),
                      "hand_state": _deleted(hstate)}
    hstate = new_h
    del old, old_ring

    def hand(table, feed):
        def call(i, state):
            if feed is None:
                return table[cycle[i % 2]](state, data, order)[0]
            return table[cycle[i % 2]](state, feed(i))[0]
        return call

    def lib(table, feed):
        def call(i, state):
            state, ring.buf = table[cycle[i % 2]](state, feed(i), ring.buf)
            return state
        return call

    def lib_plain_call(i, state):
        return lib_plain[cycle[i % 2]](state, dev_pool[i % 8])[0]

    def scan(fn):
        return lambda i, state: fn(state, ids, data, order)[0]

    dev = lambda i: dev_pool[i % 8]  # noqa: E731
    num = lambda i: next(s)  # noqa: E731
    variants = {  # name: (state slot, call, steps per call)
        "hand_index": ("hand", hand(hand_index, None), 1),
        "hand_device_batch": ("hand", hand(hand_batch, dev), 1),
        "hand_device_batch_gnorm": ("hand", hand(hand_gnorm, dev), 1),
        "hand_numpy_batch": ("hand", hand(hand_batch, num), 1),
        "lib_device_batch_noring": ("lib_plain", lib_plain_call, 1),
        "lib_device_batch": ("lib", lib(lib_ring, dev), 1),
        "lib_numpy_batch": ("lib", lib(lib_ring, num), 1),
        "hand_scan_switch": ("hand", scan(scan_switch), k),
        "hand_scan_unrolled": ("hand", scan(scan_unrolled), k),
    }
    states = {"hand": hstate, "lib": lstate, "lib_plain": lstate_plain}
    wall, cpu, call = (collections.defaultdict(list) for _ in range(3))
    names = list(variants)
    # Round robin: each round runs every variant's [a, b] pair (a scan: one chunk),
    # each call synced, so a burst of load on the machine hits all variants alike.
    for r in range(reps + 1):  # round 0 compiles and warms up
        for name in names[r % len(names):] + names[:r % len(names)]:
            slot, fn, per = variants[name]
            w = c = d = 0.0
            for j in range(2 if per == 1 else 1):
                states[slot], dw, dc, dd = _synced(fn, j, states[slot])
                w, c, d = w + dw, c + dc, d + dd
            if r:
                steps = 2 if per == 1 else per
                wall[name].append(w / steps)
                cpu[name].append(c / steps)
                call[name].append(d / steps)
    med = {v: statistics.median(wall[v]) for v in names}
    med_cpu = {v: statistics.median(cpu[v]) for v in names}
    out["us_per_step"] = {v: round(med[v], 1) for v in names}
    out["cpu_us_per_step"] = {v: round(med_cpu[v], 1) for v in names}
    out["call_us_per_step"] = {v: round(statistics.median(call[v]), 1) for v in names}

    def part(a, b):
        return {"wall_us": round(med[a] - med[b], 1), "cpu_us": round(med_cpu[a] - med_cpu[b], 1)}

    attr = out["attribution"] = {
        "grad_norm": part("hand_device_batch_gnorm", "hand_device_batch"),
        "metric_ring": part("lib_device_batch", "lib_device_batch_noring"),
        "library_step_rest": part("lib_device_batch_noring", "hand_device_batch_gnorm"),
        "input_path_library": part("lib_numpy_batch", "lib_device_batch"),
        "input_path_hand": part("hand_numpy_batch", "hand_device_batch"),
        "on_device_gather": part("hand_index", "hand_device_batch"),
        "switch_in_scan": part("hand_scan_switch", "hand_scan_unrolled"),
    }
    if loop_us is not None:  # the main measurement's host executor and hand loop, us/step
        steps_part = sum(attr[p]["wall_us"] for p in (
            "grad_norm", "metric_ring", "library_step_rest", "input_path_library"))
        gap = loop_us["host"] - loop_us["hand_loop"]
        attr["host_minus_hand_loop"] = {"wall_us": round(gap, 1), "cpu_us": None}
        # gap = step parts - the hand loop's on-device gather + the host loop's own cost
        rest = gap - steps_part + attr["on_device_gather"]["wall_us"]
        attr["host_loop_rest"] = {"wall_us": round(rest, 1), "cpu_us": None}

    # Host-side pieces alone.
    t0 = time.perf_counter()
    for _ in range(50):
        next(s)
    out["stream_next_us"] = round((time.perf_counter() - t0) / 50 * 1e6, 1)
    t0 = time.perf_counter()
    for _ in range(5):
        s.next_batches(k)
    out["stream_next_batches_us_per_step"] = round((time.perf_counter() - t0) / (5 * k) * 1e6, 1)
    t0 = time.perf_counter()
    for i in range(20):
        jax.block_until_ready(jax.device_put(host_pool[i % 8]))
    out["device_put_us"] = round((time.perf_counter() - t0) / 20 * 1e6, 1)
    out["batch_bytes"] = int(sum(v.nbytes for v in host_pool[0].values()))
    out["state_bytes"] = {"library": int(sum(x.nbytes for x in jax.tree.leaves(states["lib"]))),
                          "hand": int(sum(x.nbytes for x in jax.tree.leaves(states["hand"])))}
    out["rounds"] = reps
    return out


# --- Main. -----------------------------------------------------------------------------------


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default=None,
                    help=f"comma-separated, of {sorted(WORKLOADS)} (default cpu; --quick: smoke)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--chunk", type=int, default=None, help="fused / scan chunk length K (even)")
    ap.add_argument("--log-every", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps T (a multiple of K)")
    ap.add_argument("--breakdown", dest="breakdown", action="store_true", default=None,
                    help="time the library's per-step parts (default: on for cpu and smoke)")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false")
    ap.add_argument("--breakdown-rounds", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    args.workload = args.workload or ("smoke" if args.quick else "cpu")
    for w in args.workload.split(","):
        if w not in WORKLOADS:
            ap.error(f"--workload {w!r}; valid: {sorted(WORKLOADS)}")
    return args


def _print_table(name: str, r: dict) -> None:
    us, cus = r["us_per_step"], r["cpu_us_per_step"]
    print(f"{name} (MLP {'-'.join(map(str, r['sizes']))}, batch {r['batch']}), "
          f"us/step, median over {r['repeats']} repeats:")
    print(f"  {'loop':<10} {'wall':>10} {'CPU time':>10}")
    for n in us:
        print(f"  {n:<10} {us[n]:>10.0f} {cus[n]:>10.0f}")
    c = r["cpu_time_ratios"]
    print(f"  host / hand_loop {r['host_vs_hand_loop']['median']:.3f} "
          f"(CPU time {c['host_vs_hand_loop']['median']:.3f}); fused / hand_scan "
          f"{r['fused_vs_hand_scan']['median']:.3f} "
          f"(CPU time {c['fused_vs_hand_scan']['median']:.3f}); fastest repeats: "
          f"{r['best_of_repeats']['host_vs_hand_loop']:.3f} and "
          f"{r['best_of_repeats']['fused_vs_hand_scan']:.3f}; target {TARGET}")
    bd = r.get("breakdown")
    if not bd:
        return
    print(f"  breakdown, us/step, each call synced (medians over {bd['rounds']} rounds; call: "
          "until the Python call returned):")
    print(f"    {'part':<26} {'wall':>9} {'CPU':>9} {'call':>9}")
    for v in bd["us_per_step"]:
        print(f"    {v:<26} {bd['us_per_step'][v]:>9.0f} {bd['cpu_us_per_step'][v]:>9.0f} "
              f"{bd['call_us_per_step'][v]:>9.0f}")
    print("  attribution, us/step (wall, CPU time):")
    for k, v in bd["attribution"].items():
        cpu_us = "" if v["cpu_us"] is None else round(v["cpu_us"])
        print(f"    {k:<26} {v['wall_us']:>9.0f} {cpu_us:>9}")
    print(f"  next(stream) {bd['stream_next_us']} us; next_batches per step "
          f"{bd['stream_next_batches_us_per_step']} us; device_put of a batch "
          f"({bd['batch_bytes']} bytes) {bd['device_put_us']} us; donated after a call: "
          f"{bd['donated']}")
    for p, f in bd["programs"].items():
        print(f"    {p:<26} {f}")


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    t0 = time.time()
    m = harness.machine()
    print(f"real_sizes: workloads {args.workload}, quick={args.quick}, {m}", flush=True)
    result = {"benchmark": "real_sizes", "quick": args.quick, **m, "workloads": {}}
    names = args.workload.split(",")
    for name in names:
        wl = Workload(name)
        r = result["workloads"][name] = measure(wl, args)
        if args.breakdown or (args.breakdown is None and name in ("cpu", "smoke")):
            r["breakdown"] = breakdown(wl, args, r["us_per_step"])
        _print_table(name, r)
    result["ratios"] = {n: {k: result["workloads"][n][k]["median"]
                            for k in ("host_vs_hand_loop", "fused_vs_hand_scan")} for n in names}
    result["target"] = TARGET
    result["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

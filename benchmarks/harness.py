"""Shared pieces of the benchmark scripts: workloads, clocks, hand-written baselines.

Workloads are alternating MLP classifiers on generated data (Gaussian class
blobs), so no dataset needs preparing:

* ``mlp``: MLP 64-256-256-10, batch 128;
* ``tiny``: MLP 8-16-16-2, batch 8.

Two phases alternate ``[a, b]``: ``a`` trains every parameter with its own
``optax.adam(1e-3)``, ``b`` only the last layer with its own ``optax.adam(1e-3)``.
Both use the library's ``classification`` loss (softmax cross-entropy, aux
``accuracy``).

Clock (``diff``): a run of ``N`` steps is timed from the moment its stream
hands out batch ``mark`` (all programs compiled by then) to the end of the
run, device synced; the rate is ``(N2 - N1) / (t(N2) - t(N1))``, so the fixed
costs after the mark (final checkpoint, results file) cancel out.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from alternating import data as data_lib  # noqa: E402
from alternating import build as build_lib
from alternating import loop as loop_lib  # noqa: E402
from alternating import losses  # noqa: E402
from alternating import parallel  # noqa: E402
from alternating import phase as phase_lib  # noqa: E402
from alternating.schedules import make_schedule  # noqa: E402
from alternating.state import init_state  # noqa: E402
from alternating.models import get_model  # noqa: E402
from alternating.phase import Phase  # noqa: E402

LR = 1e-3
SEED = 0
WORKLOADS = {
    "mlp": {"features": (256, 256, 10), "inputs": 64, "batch": 128},
    "tiny": {"features": (16, 16, 2), "inputs": 8, "batch": 8},
    # The tiny MLP's widths and batch on digits' 64 pixels and 10 classes
    # (data_pipeline.py: where the per-batch cost of the stream shows most).
    "tiny_digits": {"features": (16, 16, 10), "inputs": 64, "batch": 8},
}
NUM_EXAMPLES = 4096


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    dev = jax.devices()[0]
    return {"nproc": os.cpu_count(), "cpu": cpu_model(), "jax": jax.__version__,
            "platform": dev.platform, "device": getattr(dev, "device_kind", str(dev)),
            "devices": jax.device_count()}


def summary(values) -> dict[str, float | None]:
    """Median, min and max (rounded), the form every figure is reported in.

    Non-finite values (a clock difference that came out <= 0 in a run too
    short to measure) are left out; all of them gone gives ``None``s, so the
    JSON line stays strict JSON.
    """
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


def model_of(workload: str):
    w = WORKLOADS[workload]
    return get_model({"name": "mlp", "features": w["features"], "input_shape": (w["inputs"],)})


def last_layer(workload: str) -> str:
    return f"Dense_{len(WORKLOADS[workload]['features']) - 1}"


def arrays(workload: str, seed: int = SEED) -> dict[str, np.ndarray]:
    """Generated Gaussian class blobs for a workload."""
    w = WORKLOADS[workload]
    classes = w["features"][-1]
    rng = np.random.default_rng(seed + 12345)
    centers = rng.normal(size=(classes, w["inputs"])).astype(np.float32)
    y = rng.integers(0, classes, size=NUM_EXAMPLES).astype(np.int32)
    x = centers[y] + 0.5 * rng.normal(size=(NUM_EXAMPLES, w["inputs"])).astype(np.float32)
    return {"x": x, "y": y}


class TimedStream(data_lib.Stream):
    """A Stream that notes the time it hands out its ``mark``-th batch (1-based)."""

    mark = 0
    count = 0
    t_mark = cpu_mark = None

    def _note(self, k: int) -> None:
        if self.count < self.mark <= self.count + k:
            self.t_mark, self.cpu_mark = time.perf_counter(), time.process_time()
        self.count += k

    def __next__(self):
        self._note(1)
        return data_lib.Stream.__next__(self)  # the library stream's batch (read ahead in blocks)

    def next_batches(self, k: int):
        """The library stream's chunk read (one gather), with the mark noted."""
        self._note(k)
        return data_lib.Stream.next_batches(self, k)

    def since_mark(self) -> dict[str, float]:
        return {"wall": time.perf_counter() - self.t_mark,
                "cpu": time.process_time() - self.cpu_mark}


def stream(workload: str, mark: int, seed: int = SEED) -> TimedStream:
    s = TimedStream(arrays(workload), batch_size=WORKLOADS[workload]["batch"],
                    seed=build_lib.stream_seed(seed, "train"))
    s.mark = mark
    return s


def library_phases(workload: str):
    return [
        Phase("a", "classification", data="train", optimizer=optax.adam(LR)),
        Phase("b", "classification", data="train",
              params=[(f"{last_layer(workload)}/.*", True), (".*", None)],
              optimizer=optax.adam(LR)),
    ]


def run_library(workload: str, n: int, mark: int, log_every: int, *, executor: str = "host",
                chunk_steps: int = 100, seed: int = SEED, return_state: bool = False,
                source: TimedStream | None = None, **kw):
    """``alternating.train`` on the workload; returns times since the mark (and the state).

    ``source``: the training stream (default: the workload's generated data).
    """
    model = model_of(workload)
    s = source if source is not None else stream(workload, mark, seed)
    workdir = tempfile.mkdtemp(prefix="bench_lib_")
    try:
        state = loop_lib.train(
            phases=library_phases(workload), schedule={"name": "alternate", "pattern": ["a", "b"]},
            data={"train": s}, init=model, model=model, workdir=workdir, total_steps=n,
            seed=seed, log_every_steps=log_every, checkpoint_every_steps=0, progress=False,
            plot=False, print_fn=None, executor=executor, chunk_steps=chunk_steps, **kw)
        jax.block_until_ready(state)
        times = s.since_mark()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return (times, state) if return_state else times


# --- Hand-written baselines. --------------------------------------------------------------


def handwritten_steps(workload: str):
    """Two plain optax steps reporting what the library reports (loss, accuracy, grad norm).

    Returns ``(steps, init)``: ``steps = {'a': step_a, 'b': step_b}`` (not
    jitted), each ``(state, batch) -> (state, f32[3])``; ``init()`` the
    initial state ``(params, opt_a, opt_b)`` from the library's init key.
    """
    model = model_of(workload)
    last = last_layer(workload)
    loss_fn = losses.resolve_loss("classification", model)
    tx_a, tx_b = optax.adam(LR), optax.adam(LR)

    def report(loss, aux, grads):
        out = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux}
        return jnp.stack([jnp.asarray(out[k], jnp.float32) for k in sorted(out)])

    def step_a(state, batch):
        params, opt_a, opt_b = state
        (loss, aux), grads = jax.value_and_grad(
            lambda p: loss_fn(p, batch, None, None), has_aux=True)(params)
        updates, opt_a = tx_a.update(grads, opt_a, params)
        return (optax.apply_updates(params, updates), opt_a, opt_b), report(loss, aux, grads)

    def step_b(state, batch):
        params, opt_a, opt_b = state
        own = {last: params[last]}
        rest = {k: v for k, v in params.items() if k != last}
        (loss, aux), grads = jax.value_and_grad(
            lambda o: loss_fn({**rest, **o}, batch, None, None), has_aux=True)(own)
        updates, opt_b = tx_b.update(grads, opt_b, own)
        own = optax.apply_updates(own, updates)
        return ({**rest, **own}, opt_a, opt_b), report(loss, aux, grads)

    init_rng, _ = jax.random.split(jax.random.PRNGKey(SEED))

    @jax.jit
    def init():
        params = model.init(init_rng)
        return params, tx_a.init(params), tx_b.init({last: params[last]})

    return {"a": step_a, "b": step_b}, init


def library_steps(workload: str):
    """The library's own jitted steps and initial state, built as ``train`` builds them.

    Returns ``(steps, init)`` like :func:`handwritten_steps`, but ``steps``
    are already jitted (``parallel.jit_step``) and the state is the library's
    TrainState: the "identical jitted steps" a hand-written loop drives to
    measure the host loop alone. ``library_step_fns`` gives them unjitted
    (for a hand-written scan).
    """
    fns, init = library_step_fns(workload)
    mesh = parallel.make_mesh()
    return {n: parallel.jit_step(f, mesh, name=n) for n, f in fns.items()}, init


def library_step_fns(workload: str):
    model = model_of(workload)
    phases = library_phases(workload)
    schedule = make_schedule({"name": "alternate", "pattern": ["a", "b"]}, ["a", "b"], seed=SEED)
    init_rng, state_rng = build_lib.run_rngs(SEED)
    bound, _ = build_lib.bind_phases(phases, schedule, model.init, model=model,
                                     init_rng=init_rng, total_steps=1)
    fns = {b.name: build_lib.pack_metrics(phase_lib.make_step(b))[0] for b in bound}
    init = jax.jit(lambda: init_state(model.init(init_rng), bound, state_rng),
                   out_shardings=parallel.replicated(parallel.make_mesh()))
    return fns, init


def run_hand_loop(workload: str, n: int, mark: int, log_every: int, compiled=None):
    """The alternating Python loop one writes around two jitted steps."""
    if compiled is None:
        steps, init = handwritten_steps(workload)
        compiled = ({k: jax.jit(f, donate_argnums=0) for k, f in steps.items()}, init)
    steps, init = compiled
    s = stream(workload, mark)
    state = init()
    cycle = ("a", "b")
    records = []
    for step in range(n):
        # The numpy batch goes straight into the jitted call: on JAX 0.10's
        # CPU backend that is ~40 us a step cheaper than a jax.device_put first.
        state, m = steps[cycle[step % 2]](state, next(s))
        records.append(m)
        if (step + 1) % log_every == 0 or step + 1 == n:
            # As the library fetches: np.asarray of each array on CPU (~8x
            # faster there than jax.device_get of the list), device_get elsewhere.
            host = parallel.fetch(records)
            records = []
            if not np.isfinite(np.sum(host)):
                raise FloatingPointError(f"non-finite metric before step {step + 1}")
    jax.block_until_ready(state)
    return s.since_mark()


def hand_scan_program(workload: str, library: bool = False) -> tuple[Callable, Callable]:
    """A hand-written ``lax.scan`` + ``lax.switch`` chunk over the two steps.

    ``library``: over the library's own step functions and TrainState
    (:func:`library_step_fns`) instead of the hand-written optax steps.
    """
    steps, init = library_step_fns(workload) if library else handwritten_steps(workload)

    def chunk(state, batches, ids):
        def body(state, xs):
            i, b = xs
            return jax.lax.switch(i, [steps["a"], steps["b"]], state, b)
        return jax.lax.scan(body, state, (ids, batches))

    return jax.jit(chunk, donate_argnums=0), init


def run_hand_scan(workload: str, n: int, mark: int, log_every: int, chunk: int, compiled=None):
    """Chunks of ``chunk`` steps (cut at the log interval), batches stacked in schedule order."""
    fn, init = compiled or hand_scan_program(workload)
    s = stream(workload, mark)
    state = init()
    records = []
    step = 0
    while step < n:
        k = min(chunk, n - step, log_every - step % log_every)
        stacked = jax.device_put(s.next_batches(k))  # one gather for the chunk
        ids = np.arange(step, step + k, dtype=np.int32) % 2
        state, m = fn(state, stacked, ids)
        records.append(m)
        step += k
        if step % log_every == 0 or step == n:
            host = jax.device_get(records)
            records = []
            if not all(np.isfinite(h).all() for h in host):
                raise FloatingPointError(f"non-finite metric before step {step}")
    jax.block_until_ready(state)
    return s.since_mark()


def diff_rates(run: Callable[[int], dict[str, float]], n1: int | None, n2: int,
               mark: int = 0) -> tuple[float, float]:
    """Steps/s (wall, CPU) from runs of ``n1`` and ``n2`` steps.

    ``n1=None`` (quick smoke runs) times one run of ``n2`` steps from the mark
    instead, end-of-run costs included.
    """
    t2 = run(n2)
    if n1 is None:
        t1, n1 = {"wall": 0.0, "cpu": 0.0}, mark
    else:
        t1 = run(n1)
    wall, cpu = t2["wall"] - t1["wall"], t2["cpu"] - t1["cpu"]
    return ((n2 - n1) / wall if wall > 0 else float("nan"),
            (n2 - n1) / cpu if cpu > 0 else float("nan"))

"""Step overhead: the library's training loop vs a hand-written alternating loop.

Both loops train the same MLP 64-256-256-10 on ``digits`` (flattened 8x8
images), batch 128, from the same initial parameters, with two phases
alternating ``[a, b]``, both with the classification loss (softmax
cross-entropy, aux ``accuracy``):

* ``a``: every parameter, its own ``optax.adam(1e-3)``;
* ``b``: only ``Dense_2`` (the last layer), its own ``optax.adam(1e-3)``.

Loops, measured side by side in one process on one CPU device:

* ``library``: ``alternating.loop.train(...)`` with no progress bar, plot,
  evaluation or periodic checkpoint, ``log_every_steps`` metric fetches as in
  a real run, and a fresh temporary workdir per run.
* ``handwritten``: two ``jax.jit(step, donate_argnums=0)`` written with plain
  optax on a hand split of the parameters (``value_and_grad`` on the trained
  sub-tree only); each numpy batch goes straight into the jitted call (as
  the library does: on JAX 0.10's CPU backend that is ~40 us a step cheaper
  than a ``jax.device_put`` first); the per-step metrics
  ``{loss, accuracy}`` stay on the device and are fetched with one
  ``jax.device_get`` every ``log_every_steps`` steps (the library writes them
  into a device-side ring instead and fetches that; see
  ``executor.MetricRing``).
* ``lib_steps`` (diagnostic; ``--no-breakdown`` skips it): the library's own
  jitted steps (``phase.make_step`` + ``parallel.jit_step``, state from
  ``state.init_state``, numpy batches as the library passes them) driven by
  the hand-written loop. ``handwritten -> lib_steps`` is the cost of the
  library's step function: what it computes (rng, counters, ``grad_norm``) and
  the metric arrays it returns, which the loop keeps and fetches;
  ``lib_steps -> library`` is the cost of the library's host loop.

Every loop reads the same batches: an ``alternating.data.make_stream``
iterator over the same spec and seed (the library is given the Stream object),
which notes the time when given batches are drawn.

Rate (fixed costs excluded: compiles, start-up, final checkpoint and results):

* ``--method window`` (default): each run takes ``warmup + steps + 1`` steps;
  the clock runs from the drawing of batch ``warmup`` (both phases compiled)
  to the drawing of the last batch: ``steps`` steady-state iterations,
  periodic metric fetches included. It is a host-side clock; the device runs
  at most a few in-flight steps behind it (~10 ms), in every loop alike.
* ``--method diff``: runs of ``N1`` and ``N2 = N1 + steps`` steps, clock from
  batch ``warmup`` to the end of the loop (device synced; for the library,
  ``train`` returned); rate ``steps / (t(N2) - t(N1))``.

Loops are interleaved (the order rotates every repetition) to cancel machine
drift; medians and min/max over repetitions are reported, and also the rate
per second of process CPU time, which suffers less from other processes.

Usage::

    python benchmarks/step_overhead.py            # about a minute on 2 cores
    python benchmarks/step_overhead.py --quick    # smoke check, seconds

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from alternating import data as data_lib  # noqa: E402
from alternating import build as build_lib  # noqa: E402
from alternating import loop as loop_lib  # noqa: E402
from alternating import losses, parallel, phase as phase_lib  # noqa: E402
from alternating.models import get_model  # noqa: E402
from alternating.phase import Phase  # noqa: E402
from alternating.state import init_state  # noqa: E402

MODEL_SPEC = {"name": "mlp", "features": (256, 256, 10), "input_shape": (64,)}
LAST = "Dense_2"
LR = 1e-3
SEED = 0
TARGET = 0.95


class TimedStream(data_lib.Stream):
    """A Stream that notes when its ``mark_at``-th and ``last_at``-th batches are drawn."""

    count = 0
    mark_at = last_at = -1
    t_mark = t_last = cpu_mark = cpu_last = None

    def __next__(self):
        self.count += 1
        if self.count == self.mark_at:
            self.t_mark, self.cpu_mark = time.perf_counter(), time.process_time()
        elif self.count == self.last_at:
            self.t_last, self.cpu_last = time.perf_counter(), time.process_time()
        return data_lib.Stream.__next__(self)  # the library stream's batch (read ahead)

    def times(self) -> dict[str, float]:
        """Seconds from the mark to the last batch, and to now (the end of the loop)."""
        t_end, cpu_end = time.perf_counter(), time.process_time()
        return {"window": self.t_last - self.t_mark, "cpu_window": self.cpu_last - self.cpu_mark,
                "total": t_end - self.t_mark, "cpu_total": cpu_end - self.cpu_mark}


def make_stream(n: int, args) -> TimedStream:
    spec = {"dataset": "digits", "batch_size": args.batch, "transforms": [{"name": "flatten"}]}
    stream = data_lib.make_stream(spec, seed=build_lib.stream_seed(SEED, "train"),
                                  data_dir=args.data_dir)
    stream.__class__ = TimedStream  # The same object and iterator, plus the clock.
    stream.mark_at, stream.last_at = args.warmup + 1, n
    return stream


# --- The library. ---------------------------------------------------------------------


def library_phases():
    return [
        Phase("a", "classification", data="train", optimizer=optax.adam(LR)),
        Phase("b", "classification", data="train", params=[(f"{LAST}/.*", True), (".*", None)],
              optimizer=optax.adam(LR)),
    ]


def run_library(model, n: int, args) -> dict[str, float]:
    stream = make_stream(n, args)
    workdir = tempfile.mkdtemp(prefix="step_overhead_lib_")
    try:
        loop_lib.train(
            phases=library_phases(), schedule={"name": "alternate", "pattern": ["a", "b"]},
            data={"train": stream}, init=model, model=model, workdir=workdir, total_steps=n,
            seed=SEED, log_every_steps=args.log_every, checkpoint_every_steps=0,
            progress=False, plot=False, print_fn=None)
        return stream.times()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def lib_steps(model):
    """The library's own jitted steps, initial state and batch placement, as ``train``'s."""
    mesh = parallel.make_mesh()
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(SEED))
    abstract = jax.eval_shape(model.init, init_rng)
    bound = [phase_lib.bind(p, i, params=abstract, model=model)
             for i, p in enumerate(library_phases())]
    fns = {b.name: phase_lib.make_step(b) for b in bound}
    fns = {name: build_lib.pack_metrics(fn)[0] for name, fn in fns.items()}  # as train does
    steps = {name: parallel.jit_step(fn, mesh, name=name) for name, fn in fns.items()}
    init = jax.jit(lambda r, s: init_state(model.init(r), bound, s),
                   out_shardings=parallel.replicated(mesh))
    return steps, lambda: init(init_rng, state_rng), lambda b: b  # as parallel.step_batch


# --- The hand-written loop. -----------------------------------------------------------


def handwritten_steps(model, grad_norm: bool = True):
    """Two hand-written steps; with ``grad_norm`` they report what the library reports.

    The library's metrics are loss, accuracy and the gradient norm (the norm
    costs about 30 us a step on a 2-core CPU for this model). The baseline
    computes the same metrics, so the ratio measures the library's overhead,
    not a metric the baseline skipped; ``grad_norm=False`` is the bare loop,
    reported for reference.
    """
    loss_fn = losses.resolve_loss("classification", model)  # Pure jnp: logits, CE, accuracy.

    def report(loss, aux, grads):
        out = {"loss": loss, **aux}
        if grad_norm:
            out["grad_norm"] = optax.global_norm(grads)
        return jnp.stack([out[k] for k in sorted(out)])  # One array, as the library returns.
    tx_a, tx_b = optax.adam(LR), optax.adam(LR)

    def step_a(state, batch):  # Trains every parameter.
        params, opt_a, opt_b = state
        (loss, aux), grads = jax.value_and_grad(
            lambda p: loss_fn(p, batch, None, None), has_aux=True)(params)
        updates, opt_a = tx_a.update(grads, opt_a, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_a, opt_b), report(loss, aux, grads)

    def step_b(state, batch):  # Trains only the last layer; the rest passes through.
        params, opt_a, opt_b = state
        own = {LAST: params[LAST]}
        rest = {k: v for k, v in params.items() if k != LAST}
        (loss, aux), grads = jax.value_and_grad(
            lambda o: loss_fn({**rest, **o}, batch, None, None), has_aux=True)(own)
        updates, opt_b = tx_b.update(grads, opt_b, own)
        own = optax.apply_updates(own, updates)
        return ({**rest, **own}, opt_a, opt_b), report(loss, aux, grads)

    def init(rng):
        params = model.init(rng)
        return params, tx_a.init(params), tx_b.init({LAST: params[LAST]})

    init_rng, _ = jax.random.split(jax.random.PRNGKey(SEED))  # The library's init key.
    steps = {"a": jax.jit(step_a, donate_argnums=0), "b": jax.jit(step_b, donate_argnums=0)}
    init = jax.jit(init)
    return steps, lambda: init(init_rng), lambda b: b


def run_loop(steps, init, put, n: int, args) -> dict[str, float]:
    """The minimal alternating loop one writes around two jitted steps."""
    stream = make_stream(n, args)
    state = init()
    cycle = ("a", "b")
    records = []
    log_every = args.log_every
    for step in range(n):
        batch = put(next(stream))
        state, metrics = steps[cycle[step % 2]](state, batch)
        records.append(metrics)
        if (step + 1) % log_every == 0 or step + 1 == n:
            host = jax.device_get(records)  # One transfer per log, as the library.
            records = []
            if not np.isfinite(np.asarray(jax.tree.leaves(host), np.float64).sum()):
                raise FloatingPointError(f"non-finite metric before step {step + 1}")
    jax.block_until_ready(state)
    return stream.times()


# --- Driver. ------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=None,
                    help="timed steps per measurement (default 5000; --quick 100)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved repetitions (default 7; --quick 2)")
    ap.add_argument("--method", choices=("window", "diff"), default="window",
                    help="window: steady-state window of one run (default); diff: "
                         "(N2 - N1) / (t2 - t1) over runs of N1 and N2 steps, device synced")
    ap.add_argument("--base-steps", type=int, default=1000,
                    help="--method diff: N1 - warmup (default 1000)")
    ap.add_argument("--warmup", type=int, default=50,
                    help="steps before the clock starts (compiles happen in steps 0 and 1)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--log-every", type=int, default=1000,
                    help="metric fetch interval of every loop (library log_every_steps)")
    ap.add_argument("--no-breakdown", action="store_true",
                    help="skip the diagnostic lib_steps loop (library steps, hand loop)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke check in seconds: 100 steps, 2 repeats (too short to measure)")
    ap.add_argument("--data-dir", default=None,
                    help="TFDS data directory (default: $TFDS_DATA_DIR, else a temp dir)")
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 100 if args.quick else 5000
    if args.repeats is None:
        args.repeats = 2 if args.quick else 7
    if args.steps < 1 or args.repeats < 1 or args.warmup < 2 or args.base_steps < 1:
        ap.error("need --steps >= 1, --repeats >= 1, --warmup >= 2, --base-steps >= 1")
    return args


def median_min_max(values):
    return statistics.median(values), min(values), max(values)


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")  # optax/orbax deprecation notes at trace time.
    if args.data_dir is None:
        args.data_dir = os.environ.get("TFDS_DATA_DIR")
    if args.data_dir is not None:
        return benchmark(args)
    args.data_dir = tempfile.mkdtemp(prefix="step_overhead_tfds_")
    try:
        return benchmark(args)
    finally:
        shutil.rmtree(args.data_dir, ignore_errors=True)


def benchmark(args) -> dict:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    tfds.disable_progress_bar()
    data_lib.prepare("digits", args.data_dir)

    model = get_model(MODEL_SPEC)
    hand = handwritten_steps(model)
    loops = {
        "library": lambda n: run_library(model, n, args),
        "handwritten": lambda n: run_loop(*hand, n, args),
    }
    if not args.no_breakdown:
        bare = handwritten_steps(model, grad_norm=False)
        loops["hand_bare"] = lambda n: run_loop(*bare, n, args)
    if not args.no_breakdown:
        libs = lib_steps(model)
        loops["lib_steps"] = lambda n: run_loop(*libs, n, args)
    names = list(loops)
    if args.method == "window":
        lengths = [args.warmup + args.steps + 1]
    else:
        n1 = args.warmup + args.base_steps
        lengths = [n1, n1 + args.steps]

    t0 = time.time()
    print(f"step_overhead: method={args.method} steps={args.steps} repeats={args.repeats} "
          f"batch={args.batch} devices={jax.device_count()} ({jax.devices()[0].platform}) "
          f"nproc={os.cpu_count()} cpu={cpu_model()!r}", flush=True)
    rates = {k: [] for k in names}  # Steps per second (wall clock).
    cpu_rates = {k: [] for k in names}  # Steps per second of process CPU time (all threads).
    end_costs = {k: [] for k in names}  # Seconds from the last batch drawn to the loop's end.
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # Rotate to cancel drift.
        t = {k: {} for k in names}
        for n in lengths:
            for k in order:
                t[k][n] = loops[k](n)
        for k in names:
            last = t[k][lengths[-1]]
            if args.method == "window":
                wall, cpu = last["window"], last["cpu_window"]
            else:
                first = t[k][lengths[0]]
                wall = last["total"] - first["total"]
                cpu = last["cpu_total"] - first["cpu_total"]
            rates[k].append(args.steps / wall if wall > 0 else float("nan"))
            cpu_rates[k].append(args.steps / cpu if cpu > 0 else float("nan"))
            end_costs[k].append(last["total"] - last["window"])
        print(f"  repeat {r + 1}/{args.repeats}: steps/s "
              + ", ".join(f"{k} {rates[k][-1]:.1f}" for k in names), flush=True)

    def per_repeat(f, a, b):
        return [f(x, y) for x, y in zip(rates[a], rates[b])]

    ratios = per_repeat(lambda l, h: l / h, "library", "handwritten")
    overheads = per_repeat(lambda l, h: 1e6 / l - 1e6 / h, "library", "handwritten")
    cpu_ratios = [l / h for l, h in zip(cpu_rates["library"], cpu_rates["handwritten"])]
    ratio, ratio_min, ratio_max = median_min_max(ratios)
    result = {
        "benchmark": "step_overhead",
        "library_steps_per_s": round(statistics.median(rates["library"]), 1),
        "handwritten_steps_per_s": round(statistics.median(rates["handwritten"]), 1),
        "ratio": round(ratio, 4),
        "ratio_min": round(ratio_min, 4),
        "ratio_max": round(ratio_max, 4),
        "target": TARGET,
        "meets_target": ratio >= TARGET,
        "overhead_us_per_step": round(statistics.median(overheads), 1),
        "overhead_us_per_step_min": round(min(overheads), 1),
        "overhead_us_per_step_max": round(max(overheads), 1),
        "library_steps_per_s_min_max": [round(min(rates["library"]), 1),
                                        round(max(rates["library"]), 1)],
        "handwritten_steps_per_s_min_max": [round(min(rates["handwritten"]), 1),
                                            round(max(rates["handwritten"]), 1)],
        "cpu_time_ratio": round(statistics.median(cpu_ratios), 4),
        "model": "mlp 64-256-256-10",
        "dataset": "digits (flatten)",
        "phases": "alternate [a: all params, adam 1e-3], [b: Dense_2 only, adam 1e-3]",
        "batch": args.batch,
        "devices": jax.device_count(),
        "method": args.method,
        "steps": args.steps,
        "repeats": args.repeats,
        "log_every_steps": args.log_every,
        "data_source": "alternating.data.make_stream (same spec and seed), numpy batches",
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "jax": jax.__version__,
        "wall_s": round(time.time() - t0, 1),
    }
    if "hand_bare" in rates:
        result["hand_bare_steps_per_s"] = round(statistics.median(rates["hand_bare"]), 1)
        result["ratio_vs_bare"] = round(statistics.median(
            per_repeat(lambda l, h: l / h, "library", "hand_bare")), 4)
    if "lib_steps" in rates:
        result["lib_steps_steps_per_s"] = round(statistics.median(rates["lib_steps"]), 1)
        result["step_fn_overhead_us"] = round(statistics.median(
            per_repeat(lambda s, h: 1e6 / s - 1e6 / h, "lib_steps", "handwritten")), 1)
        result["host_loop_overhead_us"] = round(statistics.median(
            per_repeat(lambda l, s: 1e6 / l - 1e6 / s, "library", "lib_steps")), 1)
        # The library's loop against a hand-written loop over the library's own steps:
        # what the host loop (schedule, streams, records, logging) costs.
        result["host_loop_ratio"] = round(statistics.median(
            per_repeat(lambda l, s: l / s, "library", "lib_steps")), 4)

    print()
    print(f"{'loop':<12} {'steps/s':>9} {'min':>9} {'max':>9} {'us/step':>9} "
          f"{'CPU-time steps/s':>17} {'end cost ms':>12}")
    for k in names:
        med, lo, hi = median_min_max(rates[k])
        print(f"{k:<12} {med:9.1f} {lo:9.1f} {hi:9.1f} {1e6 / med:9.1f} "
              f"{statistics.median(cpu_rates[k]):17.1f} "
              f"{1e3 * statistics.median(end_costs[k]):12.1f}")
    print("(medians over repeats; CPU-time: steps per second of process CPU time; end cost: "
          "last batch drawn to loop over, excluded)")
    print(f"ratio library/handwritten: {ratio:.3f} (min {ratio_min:.3f}, max {ratio_max:.3f}; "
          f"CPU-time ratio {result['cpu_time_ratio']:.3f}); target {TARGET}")
    print(f"library overhead: {result['overhead_us_per_step']:.1f} us/step "
          f"({result['overhead_us_per_step_min']:.1f} .. {result['overhead_us_per_step_max']:.1f})")
    if "hand_bare" in rates:
        print(f"ratio library/hand_bare (a baseline without the grad norm): "
              f"{result['ratio_vs_bare']:.3f}")
    if "lib_steps" in rates:
        print(f"  step function (incl. keeping and fetching its metrics): "
              f"{result['step_fn_overhead_us']:.1f} us; host loop: "
              f"{result['host_loop_overhead_us']:.1f} us")
        print(f"ratio library/lib_steps (the host loop alone): {result['host_loop_ratio']:.3f}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

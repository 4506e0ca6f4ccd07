"""Streaming input vs in-memory batches: steps/s of the same training run, and peak memory.

A generated ArrayRecord dataset (``--gib`` GiB of float32 features, default
4; Gaussian class blobs written through TFDS, ``data.write_generated``) is
trained on with the same model twice, each arm in a fresh process:

* ``memory``: ``read: 'memory'``, the split read whole into host memory once,
  each batch gathered on the host (``device_data_mb=0``: a split this size is
  over the device budget anyway);
* ``stream``: ``read: 'stream'``, each batch read by index from the files in
  grain worker threads, batches ready on the host ahead of the step.

Model: an MLP ``dim-hidden-hidden-10`` (default 4096-1024-1024-10, batch
256), two phases alternating (``a`` trains everything with Adam, ``b`` the
last layer with SGD), host executor. Clock: as in ``real_sizes.py``, when
the batch of step ``w_i`` is handed out every step dispatched so far is
waited for and the time taken; a run of ``w + 3T`` steps gives three windows
of ``T`` steps (the spread), none of start-up, compiles or the end. Wall
clock and process CPU time are reported; the arms alternate ``--repeats``
times. Targets: stream >= 0.9x memory steps/s; the streaming process's peak
RSS (``ru_maxrss``, the whole process) below 1 GiB.

Usage::

    python benchmarks/streaming.py                    # 4 GiB: generation ~1 min, then ~10 min
    python benchmarks/streaming.py --gib 0.05 --quick # seconds

The generated data go to ``--data_dir`` (kept) or a temporary directory
(deleted at the end). The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGET_RATIO = 0.9
TARGET_RSS_MB = 1024
SEED = 0


def _timed(stream, marks_at):
    """Makes ``stream`` note a device-synced clock when it hands out the batches ``marks_at``."""
    import jax

    base = type(stream)

    class Timed(base):
        def _note(self, k):
            if self.in_chunk:  # a streamed chunk is read through __next__: noted once
                return
            for w in marks_at:
                if self.served <= w < self.served + k:
                    jax.block_until_ready([a for a in jax.live_arrays() if not a.is_deleted()])
                    self.marks.append((self.served, time.perf_counter(), time.process_time()))
            self.served += k

        def __next__(self):
            self._note(1)
            return base.__next__(self)

        def next_batches(self, k):
            self._note(k)
            self.in_chunk = True
            try:
                return base.next_batches(self, k)
            finally:
                self.in_chunk = False

    stream.__class__ = Timed
    stream.served, stream.marks, stream.in_chunk = 0, [], False
    return stream


def run_arm(args) -> dict:
    """One arm in this process: builds the stream, trains, returns its rates and peak RSS."""
    import jax
    import jax.numpy as jnp
    import optax

    import alternating
    from alternating import build as build_lib, data as data_lib
    from alternating.models import MLP

    model = MLP(features=(args.hidden, args.hidden, 10))

    def loss(params, batch, rng, extras):
        logits = model.apply({"params": params}, batch["x"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}

    spec = {"dataset": args.name, "batch_size": args.batch, "read": args.arm}
    t0 = time.perf_counter()
    stream = data_lib.make_stream(spec, seed=build_lib.stream_seed(SEED, "train"),
                                  data_dir=args.data_dir)
    load_s = time.perf_counter() - t0
    marks_at = [args.warmup + i * args.steps for i in range(args.windows + 1)]
    stream = _timed(stream, marks_at)
    workdir = tempfile.mkdtemp(prefix="bench_streaming_")
    try:
        last = "Dense_2/.*"  # the output layer
        state = alternating.train(
            phases=[alternating.Phase("a", loss=loss, data="train",
                                      optimizer={"name": "adam", "lr": 1e-3}),
                    alternating.Phase("b", loss=loss, data="train",
                                      params=[(last, True), (".*", None)],
                                      optimizer={"name": "sgd", "lr": 1e-2})],
            schedule={"name": "alternate", "pattern": ["a", "b"]}, data={"train": stream},
            init=lambda rng: model.init(rng, jnp.zeros((1, args.dim)))["params"],
            workdir=workdir, total_steps=marks_at[-1] + 1, seed=SEED,
            log_every_steps=args.steps, checkpoint_every_steps=0, device_data_mb=0,
            progress=False, plot=False, print_fn=None)
        jax.block_until_ready(state)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    m = stream.marks
    rates = [(b[0] - a[0]) / (b[1] - a[1]) for a, b in zip(m, m[1:])]
    cpu = [(b[0] - a[0]) / (b[2] - a[2]) for a, b in zip(m, m[1:])]
    return {"arm": args.arm, "stream": type(stream).__mro__[1].__name__, "steps_per_s": rates,
            "cpu_steps_per_s": cpu, "load_s": round(load_s, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _child(args, arm: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--arm", arm, "--data_dir", args.data_dir,
           "--name", args.name] + [f"--{k}={getattr(args, k)}" for k in
                                   ("batch", "dim", "hidden", "steps", "warmup", "windows")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise RuntimeError(f"arm {arm} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _generate(args) -> dict:
    import tensorflow_datasets as tfds

    from alternating import data as data_lib
    tfds.disable_progress_bar()
    n = int(args.gib * 2 ** 30 // (4 * args.dim))
    t0 = time.perf_counter()
    nbytes = data_lib.write_generated(args.name, args.data_dir, {"train": n}, (args.dim,),
                                      seed=SEED)
    return {"examples": n, "file_bytes": nbytes, "feature_bytes": n * args.dim * 4,
            "generate_s": round(time.perf_counter() - t0, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=4.0, help="size of the generated features")
    ap.add_argument("--data_dir", default=None, help="where to write the data (kept)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=4096, help="features per example (float32)")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=100, help="steps per window")
    ap.add_argument("--warmup", type=int, default=None,
                    help="steps before the first window (default: one window + 10, past the "
                    "first log's one-off work)")
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each arm, alternating")
    ap.add_argument("--quick", action="store_true", help="tiny model and windows")
    ap.add_argument("--arm", choices=["memory", "stream"], help=argparse.SUPPRESS)
    ap.add_argument("--name", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.arm:  # a child: one arm
        print(json.dumps(run_arm(args)), flush=True)
        return None
    if args.quick:
        args.dim, args.hidden, args.batch, args.steps = 1024, 64, 32, 10
    args.warmup = args.steps + 10 if args.warmup is None else args.warmup
    args.name = args.name or f"streaming_bench_{args.dim}"
    keep = args.data_dir is not None
    args.data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench_streaming_data_")
    import harness
    try:
        data = _generate(args)
        print(f"generated {data['examples']} examples, {data['file_bytes'] / 2 ** 30:.2f} GiB "
              f"of files in {data['generate_s']} s", flush=True)
        runs = {"memory": [], "stream": []}
        for r in range(args.repeats):
            for arm in (("memory", "stream") if r % 2 == 0 else ("stream", "memory")):
                runs[arm].append(_child(args, arm))
                res = runs[arm][-1]
                print(f"  {arm}: steps/s {[round(v, 2) for v in res['steps_per_s']]}, load "
                      f"{res['load_s']} s, peak RSS {res['peak_rss_mb']} MiB", flush=True)
    finally:
        if not keep:
            shutil.rmtree(args.data_dir, ignore_errors=True)
    rates = {arm: [v for res in rs for v in res["steps_per_s"]] for arm, rs in runs.items()}
    cpu = {arm: [v for res in rs for v in res["cpu_steps_per_s"]] for arm, rs in runs.items()}
    ratio = lambda t: harness.summary([s / m for s, m in zip(t["stream"], t["memory"])])
    peak = max(res["peak_rss_mb"] for res in runs["stream"])
    result = {
        "benchmark": "streaming", "gib": args.gib, **data, "quick": args.quick,
        "model": f"mlp {args.dim}-{args.hidden}-{args.hidden}-10", "batch": args.batch,
        "window_steps": args.steps, "windows": args.windows, "repeats": args.repeats,
        "steps_per_s": {arm: harness.summary(v) for arm, v in rates.items()},
        "ratio": ratio(rates), "cpu_time_ratio": ratio(cpu),
        "peak_rss_mb": {arm: max(res["peak_rss_mb"] for res in rs) for arm, rs in runs.items()},
        "load_s": {arm: [res["load_s"] for res in rs] for arm, rs in runs.items()},
        "targets": {"ratio": TARGET_RATIO, "stream_peak_rss_mb": TARGET_RSS_MB},
        "met": {"ratio": (ratio(rates)["median"] or 0) >= TARGET_RATIO,
                "stream_peak_rss_mb": peak < TARGET_RSS_MB},
        **harness.machine()}
    print(f"stream / memory steps/s: x{result['ratio']['median']} (target {TARGET_RATIO}); "
          f"stream peak RSS {peak} MiB (target < {TARGET_RSS_MB})", flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

"""The real data pipeline vs batches already in memory: steps/s of the same training run.

Workload ``mlp`` (MLP 64-256-256-10, batch 128; ``harness.py``) or
``tiny_digits`` (MLP 64-16-16-10, batch 8: a step so small that the stream's
per-batch cost shows most) on ``digits`` (flattened 8x8 images), the two
phases alternating, with each executor:

* ``pipeline``: the library's stream over the TFDS-prepared ``digits`` split
  (ArrayRecord read once; the position is a grain iterator over batch numbers;
  the host executor's ``next()`` gathers a block of shuffled batches ahead
  and serves them one by one, the fused executor a whole chunk's batches in
  one gather, ``next_batches``) -
  what a config's data spec gives;
* ``in_memory``: the same class of stream, but ``next()`` hands out batches
  gathered before the run (the first 1,000 batches of the same stream,
  cycled; a fused chunk is a slice of them): the cost of producing a batch is
  zero.

The fused executor gathers the next chunk while the device runs the current
one; the host executor draws each batch between two steps. Target: ``pipeline`` at >= 0.9x the
steps/s of ``in_memory``.

Usage::

    python benchmarks/data_pipeline.py            # a few minutes on 2 cores
    python benchmarks/data_pipeline.py --quick

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import warnings

import harness
import numpy as np

from alternating import data as data_lib
from alternating import build as build_lib

TARGET = 0.9
CACHED = 1000  # pre-gathered batches (a multiple of the default chunk: chunks are slices)
def spec(workload: str) -> dict:
    return {"dataset": "digits", "batch_size": harness.WORKLOADS[workload]["batch"],
            "transforms": [{"name": "flatten"}]}


class PipelineStream(harness.TimedStream):
    pass


class InMemoryStream(harness.TimedStream):
    """Hands out pre-gathered batches (no work per ``next``; a chunk is a slice)."""

    cache: list = []
    stacked: dict = {}

    def __next__(self):
        self._note(1)
        return self.cache[(self.count - 1) % len(self.cache)]

    def next_batches(self, k):
        start = self.count % len(self.cache)
        self._note(k)
        if start + k <= len(self.cache):  # a view: no copy
            return {key: v[start:start + k] for key, v in self.stacked.items()}
        idx = (start + np.arange(k)) % len(self.cache)
        return {key: v[idx] for key, v in self.stacked.items()}


def make(kind: str, mark: int, data_dir: str, workload: str = "mlp"):
    base = data_lib.make_stream(spec(workload), seed=build_lib.stream_seed(harness.SEED, "train"),
                                data_dir=data_dir)
    cls = PipelineStream if kind == "pipeline" else InMemoryStream
    s = cls(base._arrays, batch_size=base.batch_size, seed=base.seed)
    s.mark = mark
    if kind == "in_memory":
        s.cache = [next(base) for _ in range(CACHED)]
        s.stacked = {key: np.stack([b[key] for b in s.cache]) for key in s.cache[0]}
    return s


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000, help="N2 - N1")
    ap.add_argument("--repeats", type=int, default=None, help="default 5; --quick 1")
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=1000)
    ap.add_argument("--workload", choices=["mlp", "tiny_digits"], default="mlp")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data-dir", default=None, help="TFDS data dir (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.chunk, args.log_every = 40, 20, 40
    args.repeats = args.repeats or (1 if args.quick else 5)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    data_dir = args.data_dir or os.environ.get("TFDS_DATA_DIR") or tempfile.mkdtemp(
        prefix="bench_tfds_")
    import tensorflow_datasets as tfds
    tfds.disable_progress_bar()
    data_lib.prepare("digits", data_dir)
    n1 = 2 * args.log_every
    n2 = n1 + -(-args.steps // args.log_every) * args.log_every
    mark = args.chunk + 1
    loops = {f"{ex}_{kind}": (ex, kind) for ex in ("host", "fused")
             for kind in ("pipeline", "in_memory")}
    rates = {k: [] for k in loops}
    cpu = {k: [] for k in loops}  # steps per second of process CPU time: steadier on a busy machine
    try:
        for r in range(args.repeats):
            names = list(loops)
            for k in names[r % 4:] + names[:r % 4]:
                ex, kind = loops[k]
                run = lambda n: harness.run_library(args.workload, n, mark, args.log_every, executor=ex,
                                                    chunk_steps=args.chunk,
                                                    source=make(kind, mark, data_dir,
                                                                args.workload))
                wall_rate, cpu_rate = harness.diff_rates(run, None if args.quick else n1, n2, mark)
                rates[k].append(wall_rate)
                cpu[k].append(cpu_rate)
            print(f"  repeat {r + 1}/{args.repeats}: steps/s "
                  + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True)
    finally:
        if not args.data_dir and not os.environ.get("TFDS_DATA_DIR"):
            shutil.rmtree(data_dir, ignore_errors=True)
    ratio = lambda ex, t=rates: harness.summary([a / b for a, b in zip(t[f"{ex}_pipeline"],
                                                                   t[f"{ex}_in_memory"])])
    result = {"benchmark": "data_pipeline", "workload": f"{args.workload} on digits", "steps": [n1, n2],
              "repeats": args.repeats, "quick": args.quick, "chunk_steps": args.chunk,
              "steps_per_s": {k: harness.summary(v) for k, v in rates.items()},
              "host_pipeline_vs_in_memory": ratio("host"),
              "fused_pipeline_vs_in_memory": ratio("fused"),
              "cpu_time_ratios": {"host_pipeline_vs_in_memory": ratio("host", cpu),
                                  "fused_pipeline_vs_in_memory": ratio("fused", cpu)},
              "target": TARGET,
              **harness.machine()}
    print(f"pipeline / in-memory steps/s: host x{result['host_pipeline_vs_in_memory']['median']}, "
          f"fused x{result['fused_pipeline_vs_in_memory']['median']} (target {TARGET})")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

"""Vectorized seeds: S seeds in one program vs S single-seed runs one after the other.

Workload ``tiny`` (MLP 8-16-16-2, batch 8; ``harness.py``), phases ``a``/``b``
alternating. Three ways to train S seeds, in one process on one CPU device:

* ``vectorized``: ``alternating.train(num_seeds=S, executor='fused')``;
* ``fused``: S runs of ``alternating.train(executor='fused')``;
* ``host``: S runs of ``alternating.train(executor='host')``.

Steady-state throughput comes from the run's own clock: the ``time`` of its
``metrics.jsonl`` training rows, written every ``--log-every`` steps, from
the first log row (compiles are over by then) to the last, so compile-time
jitter (tenths of a second) cannot swamp runs whose steady part is short.
It is replica-steps per second: ``S`` times the steps between the two rows,
divided by the time between them, for ``vectorized``; the steps over the
time for one single-seed run (S runs one after the other take S times as
long, so their throughput is the same). End to end, S sequential runs of
``N`` steps take ``S t(N)`` (one run's measured time times S: the runs are
identical in cost), which includes S start-ups and compiles.

Usage::

    python benchmarks/seeds.py            # a few minutes on 2 cores
    python benchmarks/seeds.py --quick

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
import warnings

import harness

from alternating import loop as loop_lib
from alternating import metrics as metrics_lib

TARGET = 4.0


def run(n: int, num_seeds: int, executor: str, chunk: int,
        log_every: int) -> tuple[float, float]:
    """``(seconds for the whole train call, steady replica-steps/s from the log rows)``."""
    model = harness.model_of("tiny")
    workdir = tempfile.mkdtemp(prefix="bench_seeds_")
    t = time.perf_counter()
    try:
        loop_lib.train(
            phases=harness.library_phases("tiny"),
            schedule={"name": "alternate", "pattern": ["a", "b"]},
            data={"train": {"dataset": harness.arrays("tiny"), "batch_size": 8}},
            init=model, model=model, workdir=workdir, total_steps=n, log_every_steps=log_every,
            progress=False, plot=False, print_fn=None, executor=executor, chunk_steps=chunk,
            num_seeds=num_seeds)
        wall = time.perf_counter() - t
        rows = [r for r in metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
                if r.get("split") == "train"]
        times = sorted({r["step"]: r["time"] for r in rows}.items())
        (s1, t1), (s2, t2) = times[0], times[-1]
        return wall, (num_seeds * (s2 - s1) / (t2 - t1) if t2 > t1 else float("nan"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20000,
                    help="steps timed (between the first and the last log row)")
    ap.add_argument("--repeats", type=int, default=None, help="default 3; --quick 1")
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.chunk, args.log_every = 40, 20, 40
    args.repeats = args.repeats or (1 if args.quick else 3)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    s = args.seeds
    n = args.log_every + args.steps
    kinds = {"vectorized": (s, "fused"), "fused": (1, "fused"), "host": (1, "host")}
    rate = {k: [] for k in kinds}
    e2e = {k: [] for k in kinds}  # seconds to train S seeds for n steps
    for r in range(args.repeats):
        names = list(kinds)
        for k in names[r % 3:] + names[:r % 3]:
            seeds, executor = kinds[k]
            wall, steady = run(n, seeds, executor, args.chunk, args.log_every)
            rate[k].append(steady)
            e2e[k].append(wall * (s // seeds))
        print(f"  repeat {r + 1}/{args.repeats}: replica-steps/s "
              + ", ".join(f"{k} {rate[k][-1]:.0f}" for k in kinds), flush=True)
    ratio = lambda a, b, t=rate: harness.summary([x / y for x, y in zip(t[a], t[b])])
    result = {
        "benchmark": "seeds", "num_seeds": s, "workload": "tiny", "steps": n,
        "timed_steps": args.steps,
        "repeats": args.repeats, "quick": args.quick,
        "replica_steps_per_s": {k: harness.summary(v) for k, v in rate.items()},
        "vectorized_vs_sequential_fused": ratio("vectorized", "fused"),
        "vectorized_vs_sequential_host": ratio("vectorized", "host"),
        "end_to_end_s": {k: harness.summary(v) for k, v in e2e.items()},
        "end_to_end_speedup_vs_fused": ratio("fused", "vectorized", e2e),
        "end_to_end_speedup_vs_host": ratio("host", "vectorized", e2e),
        "target": TARGET, **harness.machine(),
    }
    v = result["vectorized_vs_sequential_fused"]["median"]
    print(f"{s} seeds vectorized vs sequential: x{v} (fused runs), "
          f"x{result['vectorized_vs_sequential_host']['median']} (host runs); end to end "
          f"x{result['end_to_end_speedup_vs_fused']['median']} / "
          f"x{result['end_to_end_speedup_vs_host']['median']}")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

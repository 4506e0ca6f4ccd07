"""Executors side by side: fused vs hand-written scan+switch, fused vs host, host vs hand loop.

For each workload (``mlp``: MLP 64-256-256-10, batch 128; ``tiny``: MLP
8-16-16-2, batch 8; see ``harness.py``) four loops train the same alternating
scheme from the same initial parameters on the same batches, in one process
on one CPU device, interleaved (the order rotates every repeat):

* ``host``: ``alternating.train(executor='host')``;
* ``fused``: ``alternating.train(executor='fused', chunk_steps=K)``;
* ``hand_loop``: a hand-written Python loop over two jitted optax steps;
* ``hand_scan``: the same two steps in a hand-written jitted ``lax.scan`` whose
  body ``lax.switch``-es between them, over chunks of ``K`` stacked batches;
* ``lib_loop``: the hand-written Python loop driving the *library's own*
  jitted steps (same step functions, same TrainState as ``train`` builds);
* ``lib_scan``: the hand-written scan+switch over the library's own steps.

The targets compare each executor with a hand-written loop over identical
jitted steps (``host / lib_loop`` >= 0.95, ``fused / lib_scan`` >= 0.9): what
the library's loop costs. ``host / hand_loop`` and ``fused / hand_scan`` add
what the library's step function computes beyond a bare optax step (its step
and phase counters, a wider state); both are reported.

Every loop reports the same metrics (loss, accuracy, gradient norm) and
fetches them every ``--log-every`` steps; batches are the same stream's, read
one at a time by the Python loops and a chunk at a time (``next_batches``) by
the scans. Rates use the ``diff`` clock of ``harness.py`` (compiles and
end-of-run costs excluded).

Usage::

    python benchmarks/fused.py            # a few minutes on 2 cores
    python benchmarks/fused.py --quick    # smoke check, seconds (too short to measure)

The last line of the output is one JSON object with the ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings

import harness
import jax

TARGETS = {"fused_vs_lib_scan": 0.9, "host_vs_lib_loop": 0.95}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="mlp,tiny")
    ap.add_argument("--repeats", type=int, default=None, help="default 5; --quick 1")
    ap.add_argument("--chunk", type=int, default=200, help="fused chunk length K")
    ap.add_argument("--log-every", type=int, default=1000)
    ap.add_argument("--steps-mlp", type=int, default=3000, help="N2 - N1 for mlp")
    ap.add_argument("--steps-tiny", type=int, default=20000, help="N2 - N1 for tiny")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:  # one run per loop (no clock difference), tiny model only
        args.chunk, args.log_every, args.steps_mlp, args.steps_tiny = 20, 40, 40, 40
        args.workloads = "tiny"
    args.repeats = args.repeats or (1 if args.quick else 5)
    if args.log_every % args.chunk:
        ap.error("--log-every must be a multiple of --chunk (one chunk length)")
    return args


def measure(workload: str, args) -> dict:
    k, log = args.chunk, args.log_every
    n1 = 2 * log
    n2 = n1 + (args.steps_mlp if workload == "mlp" else args.steps_tiny)
    n2 = -(-n2 // log) * log  # a multiple of the log interval: one chunk length
    mark = k + 1  # the second chunk's first batch: every program compiled by then
    steps, init = harness.handwritten_steps(workload)
    hand_loop = ({n: jax.jit(f, donate_argnums=0) for n, f in steps.items()}, init)
    hand_scan = harness.hand_scan_program(workload)
    lib_loop = harness.library_steps(workload)
    lib_scan = harness.hand_scan_program(workload, library=True)
    loops = {
        "host": lambda n: harness.run_library(workload, n, mark, log, executor="host"),
        "fused": lambda n: harness.run_library(workload, n, mark, log, executor="fused",
                                               chunk_steps=k),
        "hand_loop": lambda n: harness.run_hand_loop(workload, n, mark, log, hand_loop),
        "hand_scan": lambda n: harness.run_hand_scan(workload, n, mark, log, k, hand_scan),
        "lib_loop": lambda n: harness.run_hand_loop(workload, n, mark, log, lib_loop),
        "lib_scan": lambda n: harness.run_hand_scan(workload, n, mark, log, k, lib_scan),
    }
    names = list(loops)
    rates = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall_rate, cpu_rate = harness.diff_rates(loops[name], None if args.quick else n1,
                                                     n2, mark)
            rates[name].append(wall_rate)
            cpu[name].append(cpu_rate)
        print(f"  {workload} repeat {r + 1}/{args.repeats}: steps/s "
              + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names), flush=True)

    def ratio(a, b, table=rates):
        return harness.summary([x / y for x, y in zip(table[a], table[b])])

    return {
        "steps_per_s": {n: harness.summary(rates[n]) for n in names},
        "fused_vs_lib_scan": ratio("fused", "lib_scan"),
        "host_vs_lib_loop": ratio("host", "lib_loop"),
        "fused_vs_hand_scan": ratio("fused", "hand_scan"),
        "host_vs_hand_loop": ratio("host", "hand_loop"),
        "fused_vs_host": ratio("fused", "host"),
        "hand_scan_vs_hand_loop": ratio("hand_scan", "hand_loop"),
        "cpu_time_ratios": {"fused_vs_lib_scan": ratio("fused", "lib_scan", cpu),
                            "host_vs_lib_loop": ratio("host", "lib_loop", cpu),
                            "fused_vs_hand_scan": ratio("fused", "hand_scan", cpu),
                            "host_vs_hand_loop": ratio("host", "hand_loop", cpu),
                            "fused_vs_host": ratio("fused", "host", cpu)},
        "batch": harness.WORKLOADS[workload]["batch"],
        "timed_steps": n2 - n1,
    }


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    t0 = time.time()
    m = harness.machine()
    print(f"fused: chunk={args.chunk} log_every={args.log_every} repeats={args.repeats} {m}",
          flush=True)
    result = {"benchmark": "fused", "chunk_steps": args.chunk, "log_every_steps": args.log_every,
              "repeats": args.repeats, "quick": args.quick, **m}
    for w in args.workloads.split(","):
        result[w] = measure(w, args)
    for w in args.workloads.split(","):
        r = result[w]
        print(f"{w}: " + ", ".join(f"{n} {v['median']:.0f}" for n, v in r["steps_per_s"].items())
              + f" steps/s; fused/lib_scan {r['fused_vs_lib_scan']['median']:.3f}, "
              f"host/lib_loop {r['host_vs_lib_loop']['median']:.3f}, "
              f"fused/hand_scan {r['fused_vs_hand_scan']['median']:.3f}, "
              f"host/hand_loop {r['host_vs_hand_loop']['median']:.3f}, "
              f"fused/host {r['fused_vs_host']['median']:.2f}")
    result["targets"] = TARGETS
    result["wall_s"] = round(time.time() - t0, 1)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

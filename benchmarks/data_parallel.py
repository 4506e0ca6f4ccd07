"""Data parallelism on 1, 2, 4 and 8 fake CPU devices: same results, overhead per step.

Each device count runs in its own subprocess (``XLA_FLAGS=
--xla_force_host_platform_device_count=D``): ``alternating.train`` on the
``mlp`` workload (``harness.py``, global batch 128 split over the ``data``
mesh axis), host and fused executors. The parent checks that the final
parameters match the 1-device run's and reports steps/s and the time per step
added over 1 device. Fake devices share the same CPU cores, so this measures
the library's (and XLA's) per-device overhead, not a speed-up.

Usage::

    python benchmarks/data_parallel.py            # a few minutes on 2 cores
    python benchmarks/data_parallel.py --quick

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

TOLERANCE = 1e-4  # max |parameter difference| from the 1-device run


def worker(args) -> None:
    import logging
    import warnings
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import harness
    import jax
    out = {"devices": jax.device_count()}
    for executor in ("host", "fused"):
        rates = []
        mark = args.chunk + 1
        for _ in range(args.repeats):
            t2, state = harness.run_library(args.workload, args.n2, mark, args.log_every,
                                            executor=executor, chunk_steps=args.chunk,
                                            return_state=True)
            if args.n1:
                t1 = harness.run_library(args.workload, args.n1, mark, args.log_every,
                                         executor=executor, chunk_steps=args.chunk)
            else:  # --quick: one run, timed from the mark to its end
                t1 = {"wall": 0.0}
            wall = t2["wall"] - t1["wall"]
            steps = args.n2 - (args.n1 or mark)
            rates.append(steps / wall if wall > 0 else float("nan"))
        leaves = [np.asarray(x, np.float64).ravel() for x in
                  jax.tree.leaves(jax.device_get(state.params))]
        np.save(os.path.join(args.out, f"params_{executor}_{jax.device_count()}.npy"),
                np.concatenate(leaves))
        out[executor] = rates
    print(json.dumps(out), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="1,2,4,8")
    ap.add_argument("--workload", default="mlp", choices=("mlp", "tiny"))
    ap.add_argument("--steps", type=int, default=2000, help="N2 - N1")
    ap.add_argument("--repeats", type=int, default=None, help="default 3; --quick 1")
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=500)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n1", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n2", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.steps, args.chunk, args.log_every = "1,2", 40, 20, 40
        args.workload = "tiny"
    args.repeats = args.repeats or (1 if args.quick else 3)
    if args.worker:
        return worker(args)
    import harness  # after parsing: the parent never needs more than one device
    n1 = 2 * args.log_every
    n2 = n1 + -(-args.steps // args.log_every) * args.log_every
    if args.quick:
        n1 = 0
    out_dir = tempfile.mkdtemp(prefix="bench_dp_")
    runs, failed = {}, {}
    for d in [int(x) for x in args.devices.split(",")]:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={d}"}
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"--n1={n1}", f"--n2={n2}",
               f"--out={out_dir}", f"--repeats={args.repeats}", f"--chunk={args.chunk}",
               f"--log-every={args.log_every}", f"--workload={args.workload}"]
        for attempt in range(2):
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if not p.returncode:
                break
            # Recorded, not raised: on a busy 2-core machine XLA's CPU collectives can
            # abort a run (a device thread misses the all-reduce rendezvous for 40 s);
            # such a worker is tried once more.
            lines = [l for l in p.stderr.splitlines() if l.strip() and not l.startswith("    @")]
            why = next((l[:300] for l in lines if "rendezvous" in l.lower()),
                       lines[-1][:300] if lines else f"exit code {p.returncode}")
            failed.setdefault(d, []).append(why)
            print(f"  {d} device(s), attempt {attempt + 1}: FAILED: {why}", flush=True)
        if p.returncode:
            continue
        runs[d] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"  {d} device(s): steps/s host {harness.summary(runs[d]['host'])['median']}, "
              f"fused {harness.summary(runs[d]['fused'])['median']}", flush=True)
    if not runs:
        raise RuntimeError(f"every worker failed: {failed}")
    base = min(runs)
    result = {"benchmark": "data_parallel", "workload": args.workload, "steps": [n1, n2],
              "repeats": args.repeats, "quick": args.quick, "per_devices": {}}
    same = True
    for d, r in runs.items():
        entry = {}
        for executor in ("host", "fused"):
            p = np.load(os.path.join(out_dir, f"params_{executor}_{d}.npy"))
            ref = np.load(os.path.join(out_dir, f"params_host_{base}.npy"))
            diff = float(np.max(np.abs(p - ref)))
            # Sums over devices add in another order: equal up to float rounding.
            same = same and diff <= TOLERANCE
            rate = harness.summary(r[executor])
            base_rate = harness.summary(runs[base][executor])["median"]
            med = rate["median"]
            entry[executor] = {
                "steps_per_s": rate,
                "max_abs_param_diff_vs_1_device_host": diff,
                "overhead_us_per_step_vs_1_device": (round(1e6 / med - 1e6 / base_rate, 1)
                                                     if med and base_rate else None),
            }
        result["per_devices"][str(d)] = entry
    result["same_results"] = same
    result["failed"] = {str(d): why for d, why in failed.items()}  # every failed attempt
    result["tolerance"] = TOLERANCE
    result.update(harness.machine())
    result["devices"] = sorted(runs)
    for d, e in result["per_devices"].items():
        print(f"{d} device(s): " + "; ".join(
            f"{x} {e[x]['steps_per_s']['median']} steps/s, +{e[x]['overhead_us_per_step_vs_1_device']} "
            f"us/step, max |diff| {e[x]['max_abs_param_diff_vs_1_device_host']:.2e}"
            for x in ("host", "fused")))
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

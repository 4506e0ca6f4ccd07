"""The reproduction scripts' seeds: one ``num_seeds`` program vs one run per seed.

Four scripts in ``experiments/`` train an arm's seeds in one vectorized
program by default (``run_seeds``: ``num_seeds``, fused executor) and keep
one run per seed as an option (``run_one``, the host executor). For one arm
of each, at the script's default length, this times both ways end to end
(config to results, compiles and evaluations included) for the same seeds,
side by side in one process, after a 2-step warm-up run of the script:

* ``mean_teacher``: arm ``mean_teacher`` (EMA teacher in extras), 3,000 steps;
* ``advmoe``: arm ``alternating`` (router and experts in turn, PGD in the
  loss), 1,500 steps per group;
* ``areal``: ``ppo`` at eta 8 (a snapshot ring in extras, sampled actions),
  800 updates;
* ``rt``: arm ``sc`` (a transformer, two phases), 1,000 steps, plus each
  replica's generation test.

It also reports how far each replica's headline metric ended from its
single-seed run's (the replicas equal the runs at the start; batched matmuls
sum in another order, so long runs drift within the seed spread).

Usage::

    python benchmarks/ablation_seeds.py            # ~4 min on 2 cores
    python benchmarks/ablation_seeds.py --quick    # 2 seeds, 20 steps

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time
import warnings

import harness

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import advmoe, areal, mean_teacher, rt  # noqa: E402

# script: (module, cell, default steps, headline metric of a run)
CASES = {
    "mean_teacher": (mean_teacher, "mean_teacher", 3000, lambda r: r["acc"]["teacher"]),
    "advmoe": (advmoe, "alternating", 1500, lambda r: r["robust"]),
    "areal": (areal, ("ppo", 8), 800, lambda r: r["final"]),
    "rt": (rt, "sc", 1000, lambda r: r["spearman"]),
}


def _cell(cell):
    return cell if isinstance(cell, tuple) else (cell,)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scripts", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--quick", action="store_true", help="2 seeds, 20 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = args.seeds[:2]
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench_ablation_"))
    out = {}
    try:
        for name in args.scripts:
            module, cell, steps, headline = CASES[name]
            steps = 20 if args.quick else steps
            # Warm-up (data loaded, modules imported), so neither side pays it.
            module.run_one(*_cell(cell), args.seeds[0], 2, root / f"{name}_warm")
            t0 = time.perf_counter()
            runs = [module.run_one(*_cell(cell), seed, steps, root / f"{name}_s{seed}")
                    for seed in args.seeds]
            t1 = time.perf_counter()
            block = module.run_seeds(*_cell(cell), args.seeds, steps, root / f"{name}_vec")
            t2 = time.perf_counter()
            drift = max(abs(headline(a) - headline(b)) for a, b in zip(runs, block))
            out[name] = {"cell": list(_cell(cell)), "steps": steps,
                         "one_run_per_seed_s": round(t1 - t0, 2),
                         "one_program_s": round(t2 - t1, 2),
                         "speedup": round((t1 - t0) / (t2 - t1), 3),
                         "max_headline_drift": round(drift, 6)}
            print(f"  {name} {cell}: {len(args.seeds)} runs {t1 - t0:.1f} s, one program "
                  f"{t2 - t1:.1f} s (x{out[name]['speedup']}); largest headline difference "
                  f"{drift:.4f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {"benchmark": "ablation_seeds", "seeds": args.seeds, "quick": args.quick,
              "scripts": out, **harness.machine()}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

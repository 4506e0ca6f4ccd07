"""Vectorized seeds of the default scheme (two CNNs) vs the same seeds one run after another.

The default config (``configs/default.py``: a 2-D CNN on digits and a 1-D CNN
on MNIST-1D, phases alternating) trained for ``--steps`` steps on ``--seeds``
seeds, three ways, each in a fresh process on one CPU device:

* ``vectorized``: one run with ``num_seeds=S`` under the default executor
  (``auto``). On a CPU its convolution steps run as 1-step chunks that call
  the phase's vectorized step directly (``alternating/executor_choice.py``:
  XLA:CPU runs convolution gradients about 10x slower inside a loop or a
  ``switch``);
* ``sequential``: S single-seed runs one after another (``auto`` picks the
  host executor for these steps on a CPU).

(What 100-step scanned chunks of the same vectorized step cost is measured by
``conv_loop.py``'s hand-written ``vmap5`` rows; the library no longer runs
convolution steps that way on a CPU.)

End to end (process start to exit: imports, data, compiles, training, final
evaluation) in wall clock and process CPU time, medians over ``--repeats``.
The ratio printed is sequential / vectorized time (above 1: the vectorized
run is faster). The largest difference between a replica's final accuracy and
its single run's is reported (a vectorized convolution need not round as the
single one does, so the two can drift apart over many steps).

Usage::

    python benchmarks/vectorized_cnn.py                 # 5 seeds x 400 steps, ~4 minutes
    python benchmarks/vectorized_cnn.py --quick         # 2 seeds x 20 steps

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _arm(args) -> dict:
    """One arm in this process; returns its times and each seed's final accuracies."""
    import logging
    import warnings

    import jax
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    from alternating import experiment
    from configs import default

    cfg = default.get_config()
    cfg.total_steps = args.steps
    cfg.log_every_steps = max(1, args.steps // 4)
    cfg.checkpoint_every_steps = 0
    work = tempfile.mkdtemp(prefix="bench_vcnn_")
    t0, c0 = time.perf_counter(), time.process_time()
    acc = []
    try:
        kw = dict(progress=False, plot=False, print_fn=None, data_dir=args.data_dir)
        if args.arm == "sequential":
            for s in range(args.seeds):
                experiment.train_and_evaluate(cfg, os.path.join(work, str(s)), seed=s, **kw)
                acc.append(_final(os.path.join(work, str(s))))
        else:
            experiment.train_and_evaluate(cfg, work, seed=0, num_seeds=args.seeds, **kw)
            acc = _final(work, per_seed=True)
        jax.effects_barrier()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"arm": args.arm, "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "accuracy": acc,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _final(workdir: str, per_seed: bool = False):
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
        res = json.load(f)
    pick = lambda fe: {k: float(v["accuracy"]) for k, v in sorted(fe.items())}  # noqa: E731
    if per_seed:
        return [pick(fe) for fe in res["final_eval_per_seed"]]
    return pick(res["final_eval"])


def _child(args, arm: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--arm", arm, f"--seeds={args.seeds}",
           f"--steps={args.steps}", f"--data_dir={args.data_dir}"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    if out.returncode:
        raise RuntimeError(f"arm {arm} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = time.perf_counter() - t0
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="2 seeds x 20 steps, 1 repeat")
    ap.add_argument("--data_dir", default=None, help="prepared datasets (default: a temp dir)")
    ap.add_argument("--arm", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.arm:
        print(json.dumps(_arm(args)), flush=True)
        return None
    import harness
    if args.quick:
        args.seeds, args.steps, args.repeats = 2, 20, 1
    keep = args.data_dir is not None
    args.data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench_vcnn_data_")
    arms = ["vectorized", "sequential"]
    runs = {a: [] for a in arms}
    try:
        _child(argparse.Namespace(**{**vars(args), "seeds": 1, "steps": 2}), "sequential")
        for r in range(args.repeats):  # the datasets are prepared by the call above
            for arm in (arms if r % 2 == 0 else arms[::-1]):
                runs[arm].append(_child(args, arm))
                res = runs[arm][-1]
                print(f"  {arm}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU",
                      flush=True)
    finally:
        if not keep:
            shutil.rmtree(args.data_dir, ignore_errors=True)
    seq, vec = runs["sequential"][0]["accuracy"], runs["vectorized"][0]["accuracy"]
    worst = max(abs(a[k] - b[k]) for a, b in zip(seq, vec) for k in a)
    per = lambda key: {a: harness.summary([x[key] for x in rs]) for a, rs in runs.items()}  # noqa: E731
    ratio = lambda key, a: harness.summary(  # noqa: E731
        [s[key] / v[key] for s, v in zip(runs["sequential"], runs[a])])
    result = {
        "benchmark": "vectorized_cnn", "config": "configs/default.py", "seeds": args.seeds,
        "steps": args.steps, "repeats": args.repeats, "quick": args.quick,
        "wall_s": per("wall_s"), "cpu_s": per("cpu_s"),
        "ratio": ratio("wall_s", "vectorized"), "cpu_time_ratio": ratio("cpu_s", "vectorized"),
        "max_accuracy_difference": worst, "accuracy_sequential": seq, **harness.machine()}
    print(f"sequential / vectorized end to end: x{result['ratio']['median']} wall, "
          f"x{result['cpu_time_ratio']['median']} CPU time; largest accuracy difference "
          f"{worst:.4f}", flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

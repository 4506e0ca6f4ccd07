"""bfloat16 vs float32 compute on the default scheme: steps/s and final accuracy.

The default scheme (``configs/default.py``: images and signals alternating on
a shared trunk) is trained twice per seed, side by side in one process:

* ``float32``: as configured;
* ``bfloat16``: every phase with ``compute_dtype='bfloat16'`` (the loss's
  forward and backward in bf16; parameters and optimizer states stay
  float32, see ``alternating/phase.py``).

Clock (``diff``): for each arm, a short run of ``--short`` steps and the full
run of ``--steps`` steps, both without periodic evaluation or checkpoints;
the rate is ``(steps - short) / (wall(steps) - wall(short))`` with ``wall``
the run's own ``wall_time_s``, so compilation and the fixed start and end
costs cancel. The arms alternate (f32, bf16, f32, ...) so a change in the
machine's load hits both. Accuracy: the full run's final test accuracy on
each modality.

Usage::

    python benchmarks/bf16.py                # 3 seeds, 4,000 steps: a few minutes on 2 cores
    python benchmarks/bf16.py --quick        # smoke check, under a minute

The last line is one JSON object with ``bf16_vs_f32`` (steps/s ratio) and
the accuracies per arm.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alternating import experiment  # noqa: E402
from configs import default as default_config  # noqa: E402

ARMS = ("float32", "bfloat16")


def _config(arm: str, seed: int, steps: int):
    c = default_config.get_config(f"steps={steps // 2}")
    c.seed, c.eval_every_steps, c.checkpoint_every_steps = seed, 0, 0
    c.log_every_steps = max(steps // 4, 1)
    if arm == "bfloat16":
        for p in c.phases.values():
            p.compute_dtype = "bfloat16"
    return c


def _run(arm: str, seed: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as workdir:
        experiment.train_and_evaluate(_config(arm, seed, steps), workdir, plot=False,
                                      progress=False)
        with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
            return json.load(f)


def _accuracies(results: dict) -> dict[str, float]:
    return {name: round(float(m["accuracy"]), 4) for name, m in results["final_eval"].items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4000, help="full run, both phases")
    parser.add_argument("--short", type=int, default=400, help="the clock's short run")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.steps, args.short = 1, 800, 100
    rates = {a: [] for a in ARMS}
    acc = {a: [] for a in ARMS}
    for seed in range(args.seeds):
        for arm in ARMS:
            short = _run(arm, seed, args.short)
            full = _run(arm, seed, args.steps)
            rate = (args.steps - args.short) / (full["wall_time_s"] - short["wall_time_s"])
            rates[arm].append(rate)
            acc[arm].append(_accuracies(full))
            print(f"seed {seed} {arm:9s} {rate:8.1f} steps/s  test accuracy {acc[arm][-1]}",
                  flush=True)
    ratios = [b / f for b, f in zip(rates["bfloat16"], rates["float32"])]
    out = {"benchmark": "bf16", "steps": args.steps, "seeds": args.seeds,
           "steps_per_s": {a: [round(r, 1) for r in rates[a]] for a in ARMS},
           "accuracy": acc,
           "bf16_vs_f32": round(statistics.median(ratios), 3),
           "bf16_vs_f32_range": [round(min(ratios), 3), round(max(ratios), 3)]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

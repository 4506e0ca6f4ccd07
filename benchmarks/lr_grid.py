"""A learning-rate grid times seeds: one program for the grid vs one program per cell.

The sweep (``alternating.sweep.run``) trains a cell's seeds in one vectorized
program (``vectorize="auto"``); with ``vectorize="grid"`` the cells that differ
only in learning rates join them, so a grid of L rates x S seeds is one
program of L*S replicas (``alternating.sweep_programs``). This times both
side by side in one process on the same base config, end to end (config to
results: data, compiles, training, evaluations), after a warm-up sweep of 2
steps each way so neither side pays the first import or data load, and
reports how far each run's final test loss is from its per-cell counterpart.

Base config: ``configs/default.py:smoke`` (two phases on a shared trunk,
images + signals), both phases' learning rates swept together.

Usage::

    python benchmarks/lr_grid.py             # 3 rates x 5 seeds, 300 steps
    python benchmarks/lr_grid.py --quick     # 3 rates x 2 seeds, 20 steps

The last line of the output is one JSON object; ``ratio`` is the per-cell
programs' wall time over the grid program's (> 1: the grid program is faster).
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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from alternating import sweep  # noqa: E402
from configs import default  # noqa: E402


def _sweep(config, workdir, rates, seeds, vectorize):
    grid = {f"phases.{p}.optimizer.lr": None for p in config.phases}
    cells = [{path: lr for path in grid} for lr in rates]
    t0 = time.perf_counter()
    out = sweep.run(config, workdir, cells=cells, seeds=seeds, vectorize=vectorize,
                    print_fn=None)
    return out, time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 20 steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = 2, 20
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    config = default.get_config("smoke")
    with config.unlocked():
        config.total_steps, config.log_every_steps, config.eval_every_steps = args.steps, 0, 0
    warm = default.get_config("smoke")
    with warm.unlocked():
        warm.total_steps, warm.log_every_steps, warm.eval_every_steps = 2, 0, 0
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench_lr_grid_"))
    try:
        for mode in ("auto", "grid"):
            _sweep(warm, root / f"warm_{mode}", args.rates, 2, mode)
        per_cell, t_cell = _sweep(config, root / "per_cell", args.rates, args.seeds, "auto")
        grid, t_grid = _sweep(config, root / "grid", args.rates, args.seeds, "grid")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    key = lambda r: (r["cell"], r["seed"])
    gaps = []
    for a, b in zip(sorted(per_cell["runs"], key=key), sorted(grid["runs"], key=key)):
        for name, ev in a["final_eval"].items():
            gaps.append(abs(ev["loss"] - b["final_eval"][name]["loss"]))
    runs = len(args.rates) * args.seeds
    print(f"{len(args.rates)} rates x {args.seeds} seeds, {args.steps} steps: one program per "
          f"cell {t_cell:.1f} s, one program for the grid {t_grid:.1f} s")
    print(json.dumps({
        "benchmark": "lr_grid", "config": "configs/default.py:smoke", "rates": args.rates,
        "seeds": args.seeds, "steps": args.steps, "runs": runs,
        "per_cell_programs_s": round(t_cell, 2), "grid_program_s": round(t_grid, 2),
        "max_final_loss_gap": max(gaps), "ratio": round(t_cell / t_grid, 3)}))


if __name__ == "__main__":
    main()

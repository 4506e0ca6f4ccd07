r"""Mean teacher and dual students on semi-supervised digits (scheme 14): arms over seeds.

Question: with 10% of the digits training labels (144 images) and the rest
unlabelled, does an EMA teacher's consistency target raise test accuracy over
supervised training on the labelled images alone? Do two students that
alternate by epoch, each taught by the other's EMA teacher, do as well?

Expected answer (as published for mean teacher, and for RAIL-style dual
students): both semi-supervised arms beat supervised-only training.

Base config: ``configs/mean_teacher.py``; arms ``supervised``, ``mean_teacher``,
``dual``; ``--steps`` steps each (default 3000, the same batches for every
arm); seeds ``--seeds`` (default 0 1 2). A difference counts as measurable only
when the two arms' per-seed ranges do not overlap.

An arm's seeds train in one program (``num_seeds``, fused executor): replica
``i`` is the run with seed ``seeds[0] + i`` (tested equal to its single-seed
run over 20 steps). ``benchmarks/ablation_seeds.py`` on the 2-core CPU: the
three ``mean_teacher`` seeds took 5.3 s that way against 10.4 s as three
runs; after 3,000 steps a replica's teacher accuracy was at most 1 test image
(0.28 points) from its single-seed run's (batched matmuls sum in another
order). ``--one-run-per-seed`` trains each seed in its own run.

Writes ``docs/results/mean_teacher.md``::

    .venv/bin/python experiments/mean_teacher.py            # 3 seeds, ~30 s on 2 cores
    .venv/bin/python experiments/mean_teacher.py --quick    # 1 seed, 60 steps, temp dir
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import alternating  # noqa: E402
from configs import mean_teacher as mt  # noqa: E402
from experiments import common  # noqa: E402

# The set whose accuracy stands for each arm (the teacher, where there is one).
HEADLINE = {"supervised": "student", "mean_teacher": "teacher", "dual": "teacher"}


def run_one(arm: str, seed: int, steps: int, workdir: pathlib.Path) -> dict:
    cfg = mt.get_config(f"{arm},steps={steps}")
    cfg.seed = seed
    t0 = time.perf_counter()
    alternating.train_and_evaluate(cfg, str(workdir), progress=False, plot=False, print_fn=None)
    with open(workdir / "results.json", encoding="utf-8") as f:
        final = json.load(f)["final_eval"]
    return {"arm": arm, "seed": seed, "seconds": time.perf_counter() - t0,
            "acc": {k: float(v["accuracy"]) for k, v in final.items()}}


def run_seeds(arm: str, seeds, steps: int, workdir: pathlib.Path) -> list[dict]:
    """``run_one`` for consecutive ``seeds`` in one vectorized program (``num_seeds``).

    ``seconds`` of each is the shared run's time divided by the number of seeds.
    """
    results, seconds, _ = common.run_seed_block(mt.get_config(f"{arm},steps={steps}"), seeds, workdir)
    per_seed = results["final_eval_per_seed"]
    return [{"arm": arm, "seed": seed, "seconds": seconds,
             "acc": {k: float(v["accuracy"]) for k, v in final.items()}}
            for seed, final in zip(seeds, per_seed)]


def stats(v) -> dict:
    v = np.asarray(v, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "values": v.tolist()}


def summarize(runs) -> dict:
    out = {}
    for arm in mt.ARMS:
        rs = [r for r in runs if r["arm"] == arm]
        if rs:
            sets = sorted(rs[0]["acc"])
            out[arm] = {s: stats([r["acc"][s] for r in rs]) for s in sets}
            out[arm]["seconds"] = stats([r["seconds"] for r in rs])
    return out


def judge(summary, a: str, b: str) -> str:
    sa, sb = summary[a][HEADLINE[a]], summary[b][HEADLINE[b]]
    diff = 100 * (sa["mean"] - sb["mean"])
    if len(sa["values"]) < 2:
        return f"{a} vs {b}: {diff:+.1f} points (one seed: not judged)"
    if sa["min"] > sb["max"]:
        return f"{a} vs {b}: {diff:+.1f} points, **measurably higher** (per-seed ranges disjoint)"
    if sa["max"] < sb["min"]:
        return f"{a} vs {b}: {diff:+.1f} points, **measurably lower** (per-seed ranges disjoint)"
    return f"{a} vs {b}: {diff:+.1f} points, no measurable difference (per-seed ranges overlap)"


def write_markdown(path: pathlib.Path, runs, summary, *, command: str, steps: int, seeds,
                   wall: float, vectorized: bool = False) -> None:
    pct = lambda s: f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} [{100 * s['min']:.1f}, {100 * s['max']:.1f}]"
    lines = [
        "# Mean teacher and dual students on semi-supervised digits (scheme 14)", "",
        "Question: with 10% of the digits training labels (144 of 1,437 images), does an EMA "
        "teacher's consistency target beat supervised training on the labelled images alone, "
        "and do two students alternating by epoch with cross EMA teachers (RAIL-style, our "
        "reading) do as well? Published expectation: both semi-supervised arms beat "
        "supervised-only training.", "",
        f"Setup: `configs/mean_teacher.py`; MLP 64-128-128-10, Adam 1e-3, {steps} steps per "
        "arm, batches of 32 labelled + 128 unlabelled images, Gaussian input noise 0.2, "
        "consistency weight 10, teacher EMA decay 0.99 (ramped). Dual arm: two such MLPs, "
        f"alternating every 22 steps, each with its own Adam state and teacher, so each "
        "student takes half of the arm's steps; its headline model averages the two "
        "teachers' probabilities. Seeds: "
        f"{', '.join(map(str, seeds))}"
        + ("; an arm's seeds trained in one `num_seeds` program (fused executor), so s/seed "
           "is that program's time over the seeds" if vectorized else ", one run each")
        + ". Test set: the 360 digits test images.", "",
        "## Results", "",
        "Test accuracy %, mean ± sample std [min, max] over seeds. **Bold** set: the arm's "
        "headline model.", "",
        "| arm | student(s) | teacher | s/seed |", "|---|---|---|---|"]
    for arm, s in summary.items():
        studs = [k for k in s if k.startswith("student")]
        stud = "; ".join(f"{k}: {pct(s[k])}" for k in studs)
        teach = pct(s["teacher"]) if "teacher" in s else "-"
        if HEADLINE[arm] == "teacher":
            teach = f"**{teach}**"
        else:
            stud = f"**{stud}**"
        lines.append(f"| {arm} | {stud} | {teach} | {s['seconds']['mean']:.1f} |")
    lines += ["", "## Verdict", "",
              "Rule: a difference is measurable only when the per-seed ranges do not overlap.", ""]
    for a in ("mean_teacher", "dual"):
        if a in summary and "supervised" in summary:
            lines.append(f"* {judge(summary, a, 'supervised')}")
    if "mean_teacher" in summary and "dual" in summary:
        lines.append(f"* {judge(summary, 'dual', 'mean_teacher')}")
    lines += ["", verdict(summary), "", *common.provenance(command, wall, len(runs)),
              "", "## Per run", "", "| arm | seed | " + " | ".join(sorted({k for r in runs for k in r['acc']})) + " | seconds |",
              "|---|---|" + "---|" * (len({k for r in runs for k in r['acc']}) + 1)]
    keys = sorted({k for r in runs for k in r["acc"]})
    for r in runs:
        cells = [f"{100 * r['acc'][k]:.1f}" if k in r["acc"] else "-" for k in keys]
        lines.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(cells) + f" | {r['seconds']:.1f} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def verdict(summary) -> str:
    if not all(a in summary for a in mt.ARMS):
        return "Not every arm ran; no overall verdict."
    if len(summary["supervised"]["student"]["values"]) < 2:
        return "One seed only: no verdict."
    sup = summary["supervised"]["student"]
    out, wins = [], []
    for arm in ("mean_teacher", "dual"):
        s = summary[arm]["teacher"]
        wins.append(s["min"] > sup["max"])
        out.append(f"{arm} {'beats' if wins[-1] else 'does not measurably beat'} supervised-only "
                   f"({100 * s['mean']:.1f}% vs {100 * sup['mean']:.1f}%)")
    head = ("**Holds** here" if all(wins) else
            "**Holds for one arm** here" if any(wins) else "**Not reproduced** here")
    return f"{head}: " + "; ".join(out) + "."


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--quick", action="store_true", help="1 seed, 60 steps, output to a temp dir")
    ap.add_argument("--one-run-per-seed", action="store_true",
                    help="train each seed in its own run (default: an arm's seeds in one "
                         "num_seeds program)")
    ap.add_argument("--out", default=None, help="output directory (default docs/results)")
    ap.add_argument("--workdir", default=None, help="run directories (default: a temp dir)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.steps = args.seeds[:1], min(args.steps, 60)
    out = common.output_dir(args.out, args.quick)
    base = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="mean_teacher_"))
    t0 = time.perf_counter()
    vectorized = not args.one_run_per_seed and len(args.seeds) > 1
    runs = common.run_grid(
        mt.ARMS, args.seeds, vectorized=vectorized,
        run_seeds=lambda arm, seeds: run_seeds(arm, seeds, args.steps, base / arm),
        run_one=lambda arm, seed: run_one(arm, seed, args.steps, base / f"{arm}_s{seed}"))
    summary = summarize(runs)
    cmd = common.command("mean_teacher.py", argv)
    write_markdown(out / "mean_teacher.md", runs, summary, command=cmd, steps=args.steps,
                   seeds=args.seeds, wall=time.perf_counter() - t0, vectorized=vectorized)
    print(verdict(summary))
    return {"runs": runs, "summary": summary, "out": str(out)}


if __name__ == "__main__":
    main()

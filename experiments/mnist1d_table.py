r"""The MNIST-1D table: logistic regression, MLP and CNN, the paper's figure beside ours.

Question: do the paper's three baselines, trained here with the paper's own
shapes and settings (``configs/mnist1d.py``: Adam 1e-2, batches of 100,
6,000 steps, no weight decay), reach the test accuracies its table reports
(logistic 32%, MLP 68%, CNN 94%; S. Greydanus and D. Kobak, "Scaling Down
Deep Learning with MNIST-1D", arXiv:2011.14439)? A model counts as
reproduced when the mean over seeds is within 2 points of the paper's figure.
The paper-settings rows tune nothing. A model the paper's settings leave
short (``--tune``, default the MLP) is also tuned on a validation split
carved from the training set (``TUNE_GRID``: learning rate x decoupled
weight decay, through ``alternating.sweep.run``), and the chosen settings
are rerun on the same seeds as an extra row; the test set is only evaluated.

Each model's seeds train in one program (``num_seeds``, fused executor):
replica ``i`` is the run with seed ``seeds[0] + i``. Writes
``docs/results/mnist1d.md`` and ``docs/results/mnist1d.json``::

    .venv/bin/python experiments/mnist1d_table.py            # 3 models x 5 seeds, MLP tuned
    .venv/bin/python experiments/mnist1d_table.py --quick    # 2 seeds, 100 steps, temp dir
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

from alternating.models import get_model  # noqa: E402
from alternating.models.mnist1d import num_params  # noqa: E402
from configs import mnist1d as m1d  # noqa: E402
from experiments import common  # noqa: E402
from experiments.multimodal import machine  # noqa: E402

TOLERANCE = 2.0  # points of test accuracy
# The validation grid for the models the paper's settings leave short (``--tune``).
TUNE_GRID = {"phases.train.optimizer.lr": [3e-3, 1e-2, 3e-2],
             "phases.train.optimizer.weight_decay": [0.0, 0.1, 0.3, 1.0]}
QUICK_GRID = {"phases.train.optimizer.lr": [1e-2],
              "phases.train.optimizer.weight_decay": [0.0, 0.3]}


def eval_curve(workdir: pathlib.Path, n_seeds: int) -> dict[int, list[float]]:
    """``{step: [test accuracy per seed]}`` from the run's ``metrics.jsonl`` eval rows."""
    curve: dict[int, list[float]] = {}
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return curve
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("split") != "eval" or row.get("set") != "test":
            continue
        keys = [f"accuracy_seed{i}" for i in range(n_seeds)] if n_seeds > 1 else ["accuracy"]
        if all(k in row for k in keys):
            curve[int(row["step"])] = [float(row[k]) for k in keys]
    return curve


def tune(model: str, seeds, steps: int, workdir: pathlib.Path, grid) -> dict:
    """The validation sweep of ``model`` (``alternating.sweep``): trains on the first 80%
    of the training set, scores the last 20%; the best cell by mean accuracy."""
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    summary = sweep.run(m1d.get_config(f"{model},val,steps={steps}"), workdir, grid=grid,
                        seeds=list(seeds), metric="val/accuracy", print_fn=None)
    scores = {}
    for run in summary["runs"]:
        if run["final_eval"] is not None:
            scores.setdefault(run["cell"], []).append(float(run["final_eval"]["val"]["accuracy"]))
    cells = {c["id"]: c["overrides"] for c in summary["cells"]}
    best = max(scores, key=lambda cid: float(np.mean(scores[cid])))
    chosen = {k.rsplit(".", 1)[-1]: v for k, v in cells[best].items()}
    return {"model": model, "grid": {k.rsplit(".", 1)[-1]: v for k, v in grid.items()},
            "scores": {cid: [100 * a for a in v] for cid, v in scores.items()},
            "overrides": {cid: {k.rsplit(".", 1)[-1]: v for k, v in o.items()}
                          for cid, o in cells.items()},
            "chosen": chosen, "chosen_cell": best}


def variant_label(model: str, chosen: dict | None) -> str:
    """The table's row name: the model, and the settings that differ from the paper's."""
    if not chosen:
        return model
    return f"{model}, lr {chosen['lr']:g}, weight decay {chosen['weight_decay']:g} (tuned)"


def run_model(model: str, seeds, steps: int, workdir: pathlib.Path,
              chosen: dict | None = None) -> dict:
    """Trains ``model`` for ``seeds`` in one program; its per-seed final test accuracy.
    ``chosen``: ``{lr, weight_decay}`` in place of the paper's settings."""
    extra = f",lr={chosen['lr']!r},wd={chosen['weight_decay']!r}" if chosen else ""
    cfg = m1d.get_config(f"{model},steps={steps}{extra}")
    t0 = time.perf_counter()
    results, _, _ = common.run_seed_block(cfg, seeds, workdir)
    wall = time.perf_counter() - t0
    if "final_eval_per_seed" in results:
        acc = [float(r["test"]["accuracy"]) for r in results["final_eval_per_seed"]]
    else:
        acc = [float(results["final_eval"]["test"]["accuracy"])]
    return {"model": model, "label": variant_label(model, chosen), "settings": chosen,
            "seeds": list(seeds), "steps": steps,
            "params": num_params(get_model(cfg.model)),
            "test_accuracy": acc, "wall_s": wall,
            "curve": {str(k): v for k, v in sorted(eval_curve(workdir, len(acc)).items())}}


def stats(v) -> dict:
    v = np.asarray(v, float) * 100
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def summarize(runs) -> dict:
    out = {}
    for r in runs:
        s = stats(r["test_accuracy"])
        paper = m1d.PAPER[r["model"]]
        diff = s["mean"] - paper
        out[r["label"]] = {**s, "paper": paper, "diff": diff, "params": r["params"],
                           "reproduced": bool(abs(diff) <= TOLERANCE), "wall_s": r["wall_s"]}
    return out


def _verdict(summary, seeds) -> list[str]:
    missed = [m for m, s in summary.items() if not s["reproduced"]]
    if len(seeds) < 2:
        return ["One seed only: not judged."]
    if not missed:
        return [f"**Reproduced**: every row's mean is within {TOLERANCE:g} points of the "
                "paper's figure."]
    return ["**Not reproduced** for " + "; ".join(
        f"{m}: {summary[m]['mean']:.1f}% against the paper's {summary[m]['paper']:.0f}% "
        f"({summary[m]['diff']:+.1f} points)" for m in missed)
        + ". Reproduced: " + ("; ".join(m for m in summary if m not in missed) or "none") + "."]


def tuning_lines(tuning) -> list[str]:
    """The validation sweep of each tuned model: grid, per-cell scores, the choice."""
    if not tuning:
        return ["No model was tuned in this run: every row uses the paper's settings."]
    lines = []
    for t in tuning:
        lines += [
            f"`{t['model']}`: {', '.join(f'{k} in {v}' for k, v in t['grid'].items())}; "
            "trained on the first 80% of the training set (3,200 signals), scored on the "
            "last 20% (800 signals, `configs/mnist1d.py:<model>,val`), seeds "
            f"{', '.join(map(str, t['seeds']))}, through `alternating.sweep.run`. Validation "
            "accuracy %, mean ± sample std over seeds:", "",
            "| cell | validation accuracy % | per seed |", "|---|---|---|"]
        for cid, v in sorted(t["scores"].items(), key=lambda kv: -float(np.mean(kv[1]))):
            mark = " **(chosen)**" if cid == t["chosen_cell"] else ""
            sd = np.std(v, ddof=1) if len(v) > 1 else 0.0
            lines.append(f"| {cid}{mark} | {np.mean(v):.1f} ± {sd:.1f} | "
                         + ", ".join(f"{a:.1f}" for a in v) + " |")
        lines.append("")
    return lines


def _curve_lines(runs) -> list[str]:
    steps_seen = sorted({int(k) for r in runs for k in r["curve"]})
    if not steps_seen:
        return ["(no intermediate evaluations in this run)"]
    lines = ["| model | " + " | ".join(str(s) for s in steps_seen) + " |",
             "|---|" + "---|" * len(steps_seen)]
    for r in runs:
        cells = [f"{100 * float(np.mean(r['curve'][str(s)])):.1f}" if str(s) in r["curve"]
                 else "-" for s in steps_seen]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


NOTES = [
    "* Why the MLP falls short with the paper's settings: it overfits. With Adam 1e-2 and "
    "no regularization it fits the 4,000 training signals exactly within about 3,000 steps "
    "(the reference notebook prints train accuracy 100% and a rising test loss from step "
    "3,000 on) and its test accuracy then stalls at 65-66%. The reference code itself does "
    "no better: the repository's benchmark notebook (`notebooks/mnist1d-classification.ipynb`) "
    "and quickstart, run with these settings (6,000 steps) on the dataset file the repository "
    "ships, store one seed's MLP at 65.1% and 64.6% at step 6,000 (logistic 31.5%, CNN "
    "92.3%); the table's 68% is rounded and from a run whose seed and settings are not given.",
    "* The tuned MLP row keeps the paper's model (40 -> 100 -> 100 -> 10, residual, 15,210 "
    "parameters), batch size, steps and learning-rate range; what it adds is decoupled weight "
    "decay (AdamW-style, on the weight matrices only), chosen on a validation split carved "
    "from the training set. The test set is only evaluated, never used to choose. The "
    "logistic and CNN rows are not tuned: with the paper's settings they are within 2 points.",
    "* Deviations from the reference: the data are generated from the `mnist1d` "
    "package's templates with its default arguments (seed 42), not read from the "
    "repository's stored file; the training stream reshuffles every epoch, where the "
    "reference walks the stored order in the same 40 batches every epoch; JAX's random "
    "numbers replace PyTorch's (same initialization distributions).",
    "* Run time: the CNN's seeds dominate (convolutions of five replicas in one "
    "program); its five seeds in one program take less time than five one-seed runs.",
]


def write_markdown(path: pathlib.Path, runs, summary, *, command: str, seeds, steps: int,
                   wall: float, tuning=()) -> None:
    lines = [
        "# MNIST-1D: the paper's table", "",
        "Question: do the three baselines of S. Greydanus and D. Kobak, \"Scaling Down Deep "
        "Learning with MNIST-1D\" (arXiv:2011.14439), trained with the paper's own model "
        "shapes and settings, reach the test accuracies of its table? A model counts as "
        f"reproduced when the mean over seeds is within {TOLERANCE:g} points of the paper's "
        "figure. Where one does not, its settings are tuned on a validation split and the "
        "tuned row is reported beside the paper-settings row.", "",
        "Setup: `configs/mnist1d.py` (`:logistic`, `:mlp`, `:cnn`), one phase, one model "
        "each, as in the `greydanus/mnist1d` repository (`notebooks/models.py`, `train.py` "
        "and the quickstart notebook): logistic regression 40 -> 10; MLP 40 -> 100 -> 100 "
        "-> 10 with ReLU, the second hidden layer residual; CNN of three 1-D convolutions "
        "(25 channels, kernels 5/3/3, stride 2, padding 1, ReLU) and a linear layer 125 -> "
        "10; PyTorch's default initialization. Adam, learning rate 1e-2, no weight decay, "
        f"batches of 100, {steps} steps, cross-entropy. Data: the embedded `mnist1d` "
        "(4,000 train / 1,000 test, generated from the `mnist1d` package's templates with "
        "its default arguments). Seeds: " + ", ".join(map(str, seeds)) + ", a model's "
        "seeds trained in one `num_seeds` program (fused executor). The figure is test "
        "accuracy after the last step; the test set is never used to choose anything.", "",
        "## Results", "",
        "Test accuracy %, mean ± sample std [min, max] over seeds.", "",
        "| model | parameters | paper | ours | difference | within 2 points? | run time (all seeds) |",
        "|---|---|---|---|---|---|---|"]
    for model, s in summary.items():
        lines.append(
            f"| {model} | {s['params']:,} | {s['paper']:.0f} | {s['mean']:.1f} ± {s['std']:.1f} "
            f"[{s['min']:.1f}, {s['max']:.1f}] | {s['diff']:+.1f} | "
            f"{'yes' if s['reproduced'] else '**no: not reproduced**'} | {s['wall_s']:.0f} s |")
    lines += ["", "## Verdict", "", *_verdict(summary, seeds),
              "", "## Tuning on validation", "", *tuning_lines(tuning),
              "", "## Notes", "", *NOTES,
              "", *common.provenance(command, wall, len(runs) * len(seeds)), "",
              "## Test accuracy during training", "",
              "Mean over seeds (%) at each evaluation (every 1,000 steps); logged only, "
              "never used to choose anything.", "", *_curve_lines(runs),
              "", "## Per seed", "", "| model | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for r in runs:
        lines.append(f"| {r['label']} | " + " | ".join(f"{100 * a:.1f}" for a in r["test_accuracy"])
                     + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _without_out(argv) -> list[str]:
    """The arguments minus ``--out DIR`` (a machine path; the page says where it is)."""
    from alternating.sweep_main import drop_flag  # pylint: disable=g-import-not-at-top
    return drop_flag(list(argv if argv is not None else sys.argv[1:]), "--out")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--models", nargs="+", default=list(m1d.MODELS), choices=m1d.MODELS)
    ap.add_argument("--quick", action="store_true", help="2 seeds, 100 steps, output to a temp dir")
    ap.add_argument("--out", default=None, help="output directory (default docs/results)")
    ap.add_argument("--workdir", default=None, help="run directories (default: a temp dir)")
    ap.add_argument("--tune", nargs="*", default=["mlp"], choices=m1d.MODELS,
                    help="models to tune on the validation split as well (default: mlp; "
                         "bare --tune: none)")
    args = ap.parse_args(argv)
    grid = TUNE_GRID
    if args.quick:
        args.seeds, args.steps, grid = args.seeds[:2], min(args.steps, 100), QUICK_GRID
    common.check_consecutive(args.seeds)
    out = common.output_dir(args.out, args.quick)
    base = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="mnist1d_"))
    t0 = time.perf_counter()
    runs, tuning = [], []
    for m in args.models:
        runs.append(run_model(m, args.seeds, args.steps, base / m))
        if m in args.tune:
            tuning.append({**tune(m, args.seeds, args.steps, base / f"{m}_val", grid),
                           "seeds": list(args.seeds)})
            runs.append(run_model(m, args.seeds, args.steps, base / f"{m}_tuned",
                                  tuning[-1]["chosen"]))
    summary = summarize(runs)
    wall = time.perf_counter() - t0
    cmd = common.command("mnist1d_table.py", _without_out(argv))
    write_markdown(out / "mnist1d.md", runs, summary, command=cmd, seeds=args.seeds,
                   steps=args.steps, wall=wall, tuning=tuning)
    payload = {"command": cmd, "seeds": args.seeds, "steps": args.steps,
               "tolerance_points": TOLERANCE, "wall_s": wall, "summary": summary, "runs": runs,
               "tuning": tuning, "machine": machine()}
    (out / "mnist1d.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    for model, s in summary.items():
        print(f"{model}: {s['mean']:.1f} ± {s['std']:.1f} (paper {s['paper']:.0f}, "
              f"{s['diff']:+.1f}), {s['wall_s']:.0f} s")
    return {"runs": runs, "summary": summary, "out": str(out)}


if __name__ == "__main__":
    main()

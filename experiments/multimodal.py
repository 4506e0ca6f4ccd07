r"""Unpaired two-modality co-training (scheme 1, MulModSeg): the default config's arms, tuned per arm.

Question: on this task (digits 8x8 images and MNIST-1D 40-sample signals, own stems,
shared trunk and head), does alternating co-training with a frozen per-modality
embedding reach a higher final test accuracy on each modality than training on that
modality alone? And does the embedding matter (alternating and mixed arms with vs.
without it)?

Expected answer (as published, MulModSeg): alternating co-training with modality
conditioning beats single-modality training on each modality.

Arms: ``{images_only, signals_only, mixed, alternating} x embedding {on, off}``, each
``configs/default.py:<arm>[,no_embed],steps=N,lr=X`` (every arm sees the same number
of examples per modality). Fair arms: every arm tries the same Adam peak learning
rates (``--lrs``, default :data:`LRS`; one value for every phase of the arm),
trained on the first 80% of each training set and scored on the held-out 20%
(the config's ``val`` variant) over ``--tune_seeds``; the value with the best mean
validation accuracy over the modalities the arm trains is rerun on ``--seeds`` and
reported on the test sets. ``--tuned PAGE.json`` reuses the validation scores of the
arms that page's ``grid`` lists (same grid and tuning seeds), tuning only the others.
Verdicts: the rule of ``alternating/verdict.py`` over paired seeds, through
``experiments/pages.py``.

Writes ``docs/results/multimodal.{json,md,png}``::

    .venv/bin/python experiments/multimodal.py            # 5 seeds, 72 runs, ~40 min, 2 cores
    .venv/bin/python experiments/multimodal.py --quick    # 1 seed, 20 steps, no tuning, temp dir

``--vectorized`` trains an arm's consecutive seeds in one ``num_seeds`` program
(fused executor; tested equal to one run per seed). On the 2-core CPU that was much
slower for this model (``vmap`` of the convolutional stems), so it is meant for
accelerators. ``main(argv)`` returns the summary, so tests call it in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python experiments/multimodal.py` puts only experiments/ on the path.
    sys.path.insert(0, str(ROOT))

import alternating  # noqa: E402
from configs import default  # noqa: E402
from experiments import common, pages, rerun  # noqa: E402

ARMS = ("images_only", "signals_only", "mixed", "alternating")
EMBEDS = (True, False)
MODALITIES = ("images", "signals")
DATASETS = {"images": "digits 8x8", "signals": "MNIST-1D"}
LRS = (1e-3, 3e-3, 1e-2, 3e-2)  # the grid every arm tries (3e-2: 1e-2, the top of the
# default config's grid, was the choice of most arms over 1e-3..1e-2)
QUICK_STEPS = 20


def trains(arm: str, modality: str) -> bool:
    """Whether `arm` trains `modality`'s stem (single-modality arms train only theirs)."""
    return not arm.endswith("_only") or arm == f"{modality}_only"


def label(arm: str, embed: bool) -> str:
    return arm if embed else f"{arm},no_embed"


LABELS = tuple(label(a, e) for a in ARMS for e in EMBEDS)  # this page's arms


def _config(arm: str, embed: bool, steps: int, lr: float | None, val: bool,
            data_dir: str | None):
    lr_tok = f",lr={lr!r}" if lr is not None else ""
    cfg = default.get_config(f"{label(arm, embed)},steps={steps}{lr_tok}{',val' if val else ''}")
    with cfg.unlocked():  # only the final evaluation is read: no intermediate ones, no saves
        cfg.eval_every_steps, cfg.checkpoint_every_steps = 0, 0
        if data_dir:
            cfg.data_dir = data_dir
    return cfg


def _metrics(final: dict, val: bool) -> dict[str, dict[str, float]]:
    kind = "val" if val else "test"
    return {m: {k: float(final[f"{m}_{kind}"][k]) for k in ("accuracy", "loss")}
            for m in MODALITIES}


def run_one(arm: str, embed: bool, seed: int, steps: int, workdir: pathlib.Path,
            data_dir: str | None = None, *, lr: float | None = None,
            val: bool = False) -> dict[str, Any]:
    """Trains one arm for one seed; its final test (``val``: validation) metrics.

    A `workdir` holding this run's finished ``results.json`` (a rerun of the script with
    the same ``--workdir``) is read, not trained again.

    Returns:
      ``{"arm", "embed", "seed", "lr", "seconds", "images": {"accuracy", "loss"},
      "signals": {...}}``; ``lr`` None: the config's default.

    Raises:
      FileExistsError: `workdir` holds something else (the loop would resume from it).
    """
    cfg = _config(arm, embed, steps, lr, val, data_dir)
    cfg.seed = seed
    done = _finished(workdir, cfg.total_steps)
    if done is None:
        if workdir.exists() and any(workdir.iterdir()):
            raise FileExistsError(f"{workdir} is not empty; the loop would resume from its "
                                  "checkpoint. Pass an empty --workdir.")
        alternating.train_and_evaluate(cfg, str(workdir), progress=False, plot=False,
                                       print_fn=None)
        done = _finished(workdir, cfg.total_steps)
    return {"arm": arm, "embed": embed, "seed": seed, "lr": lr,
            "seconds": float(done["wall_time_s"]), **_metrics(done["final_eval"], val)}


def _finished(workdir: pathlib.Path, total_steps: int) -> dict | None:
    """The run's ``results.json`` when it finished ``total_steps``, else None."""
    try:  # json also reads the NaN/Infinity tokens.
        res = json.loads((workdir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return res if "final_eval" in res and res.get("steps", -1) >= total_steps else None


def run_seeds(arm: str, embed: bool, seeds: Sequence[int], steps: int, workdir: pathlib.Path,
              data_dir: str | None = None, *, lr: float | None = None,
              val: bool = False) -> list[dict[str, Any]]:
    """Trains one arm for consecutive ``seeds`` in one vectorized program (``num_seeds``).

    Replica ``i`` is the run with seed ``seeds[0] + i`` (tested equal to its
    single-seed run); the fused executor runs them, without checkpoints. Returns
    one ``run_one``-style dict per seed; ``seconds`` is the shared run's time
    divided by the number of seeds.
    """
    cfg = _config(arm, embed, steps, lr, val, None)
    results, seconds, _ = common.run_seed_block(cfg, seeds, workdir, data_dir)
    return [{"arm": arm, "embed": embed, "seed": seed, "lr": lr, "seconds": seconds,
             **_metrics(final, val)}
            for seed, final in zip(seeds, results["final_eval_per_seed"])]


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": len(v), "values": v.tolist()}


def summarize(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, bool], dict[str, Any]]:
    """Groups runs by (arm, embed): ``{(arm, embed): {modality: {metric: stats}}}``."""
    out = {}
    for arm in ARMS:
        for embed in EMBEDS:
            group = sorted((r for r in runs if r["arm"] == arm and r["embed"] == embed),
                           key=lambda r: r["seed"])
            if not group:
                continue
            out[(arm, embed)] = {
                m: {k: _stats([r[m][k] for r in group]) for k in ("accuracy", "loss")}
                for m in MODALITIES}
            out[(arm, embed)]["seeds"] = [r["seed"] for r in group]
            out[(arm, embed)]["seconds"] = _stats([r["seconds"] for r in group])
    return out


def val_score(run: dict[str, Any]) -> float:
    """Validation accuracy averaged over the modalities the run's arm trains."""
    return float(np.mean([run[m]["accuracy"] for m in MODALITIES if trains(run["arm"], m)]))


# ---------------------------------------------------------------------------
# Tables and the page.


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(s: dict[str, float]) -> str:
    return f"{_pct(s['mean'])} ± {_pct(s['std'])} [{_pct(s['min'])}, {_pct(s['max'])}]"


def table(summary) -> list[str]:
    """The main table: one row per arm x embedding; '-' where the arm does not train the modality."""
    head = ["arm", "embedding"]
    for m in MODALITIES:
        head += [f"{m} ({DATASETS[m]}) test acc. %", f"{m} test loss"]
    head.append("s/run")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (arm, embed), s in summary.items():
        row = [arm, "yes" if embed else "no"]
        for m in MODALITIES:
            loss = s[m]["loss"]
            row += ([_cell(s[m]["accuracy"]), f"{loss['mean']:.3f} ± {loss['std']:.3f}"]
                    if trains(arm, m) else ["-", "-"])
        row.append(f"{s['seconds']['mean']:.1f}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def untrained_table(summary) -> list[str]:
    lines = ["| arm | embedding | untrained modality | test acc. % |", "|---|---|---|---|"]
    for (arm, embed), s in summary.items():
        for m in MODALITIES:
            if not trains(arm, m):
                lines.append(f"| {arm} | {'yes' if embed else 'no'} | {m} | "
                             f"{_cell(s[m]['accuracy'])} |")
    return lines


def results_section(summary, png: str) -> list[str]:
    """``## Results``: the per-arm table (in %), the plot, the untrained-modality reference."""
    n = max(len(s["seeds"]) for s in summary.values())
    return [
        "## Results\n\nTest accuracy in %: mean ± sample std [min, max] over "
        f"{n} seed(s); loss: mean ± std; s/run: seconds per run (noisy, shared machine). "
        "'-': the arm does not train that modality.",
        "\n".join(table(summary)),
        f"![accuracy per arm and modality]({png})",
        "Untrained modality of the single-modality arms (its stem keeps its initialization; "
        "trunk and head were trained on the other modality): a chance-level reference, not a "
        "result (chance is 10%).",
        "\n".join(untrained_table(summary)),
    ]


def comparisons() -> list[dict[str, str]]:
    """Co-training vs one modality alone, alternating vs mixed, the embedding's effect."""
    out = []
    for m in MODALITIES:
        for arm in ("alternating", "mixed"):
            out.append({"name": f"{arm} vs {m}_only, {m}", "treatment": arm,
                        "baseline": f"{m}_only", "metric": f"{m}_acc", "claim": "greater"})
    for m in MODALITIES:
        out.append({"name": f"alternating vs mixed, {m}", "treatment": "alternating",
                    "baseline": "mixed", "metric": f"{m}_acc", "claim": "greater"})
    for arm in ("alternating", "mixed"):
        for m in MODALITIES:
            out.append({"name": f"{arm}: embedding vs none, {m}", "treatment": arm,
                        "baseline": f"{arm},no_embed", "metric": f"{m}_acc",
                        "claim": "greater"})
    return out


METRICS = {"images_acc": "final test accuracy on digits images (360 examples; one is 0.28 "
                         "points)",
           "signals_acc": "final test accuracy on MNIST-1D signals (1,000 examples)",
           "images_loss": "final test cross-entropy on digits images",
           "signals_loss": "final test cross-entropy on MNIST-1D signals"}


def intro(steps: int, grid: dict | None, tune_seeds: Sequence[int]) -> list[str]:
    tuning = ("No learning-rate search in this run: every arm uses the config's default "
              f"({default.LR:g})." if grid is None else
              f"Fair arms: every arm tried the same Adam peak learning rates {grid['values']} "
              "(one value for every phase of the arm), trained on the first 80% of each "
              "training set and scored on the held-out 20% (`configs/default.py` variant "
              f"`val`; seeds {list(tune_seeds)}); the value with the best mean validation "
              "accuracy over the modalities the arm trains was rerun on the seeds below and "
              "is reported on the test sets. The test sets chose nothing.")
    return [
        "Claim (MulModSeg, scheme 1 of the project's scheme list): alternating co-training "
        "of two unpaired modalities on a shared network, with modality conditioning, beats "
        "training on each modality alone.",
        f"Setup: `configs/default.py` (digits 8x8 images + MNIST-1D signals, own stems, a "
        f"shared trunk 128-128 and 10-class head, a frozen per-modality embedding unless "
        f"`no_embed`; Adam with 50 warm-up steps and cosine decay, batch 64 per modality). "
        f"{steps} optimizer steps per modality for every arm: the alternating arm runs "
        f"{2 * steps} steps in all, the mixed arm {steps} steps on both batches with summed "
        "loss. Final test accuracy and loss after the last step. " + tuning,
        "Deviation from the paper, optimizer state: in the alternating arm each modality "
        "keeps its own Adam state on the shared trunk and head (a phase owns its optimizer "
        "state in this library), while MulModSeg trains with one optimizer; the mixed arm is "
        "one phase with one Adam state. The one-optimizer arm is measured on "
        "[multimodal_optimizer.md](multimodal_optimizer.md).",
    ]


def page_data(runs, summary, grid, *, steps, seeds, tune_seeds, command, wall,
              n_runs, reused=None) -> dict[str, Any]:
    arms = {}
    for (arm, embed), s in summary.items():
        arms[label(arm, embed)] = {f"{m}_{short}": s[m][k]["values"] for m in MODALITIES
                                   if trains(arm, m)
                                   for k, short in (("accuracy", "acc"), ("loss", "loss"))}
    return {
        "name": "multimodal",
        "title": "Unpaired two-modality co-training (scheme 1, MulModSeg)",
        "intro": intro(steps, grid, tune_seeds),
        "command": command, "provenance": pages.provenance(wall, n_runs),
        "seeds": list(seeds), "metrics": METRICS, "arms": arms,
        **({"grid": grid} if grid else {}),
        "comparisons": [c for c in comparisons()
                        if c["treatment"] in arms and c["baseline"] in arms],
        "notes": results_section(summary, "multimodal.png") + [
            "## Per run",
            rerun.table(["arm", "seed", "lr", "images acc.", "signals acc.", "seconds"],
                        [[label(r["arm"], r["embed"]), r["seed"], f"{r['lr']:g}",
                          r["images"]["accuracy"], r["signals"]["accuracy"], r["seconds"]]
                         for r in runs]),
            "Accuracy of a single-modality arm on the modality it does not train is the "
            "chance-level reference above, listed here only for completeness.",
        ] + reused_note(reused, "this page's earlier grid") + (rerun.edge_note(grid) if grid else [])
        + _left_out(arms),
    }


def reused_note(reused, source: str) -> list[str]:
    """Which validation scores came from an earlier run (``--tuned``; :func:`tune`'s
    ``reused``); ``source`` names that run's page."""
    if not reused or not reused["arms"]:
        return []
    which = "; ".join(f"`{a}` at {', '.join(f'{v:g}' for v in vs)}"
                      for a, vs in reused["arms"].items())
    return [f"Validation scores reused (`--tuned`): {which} come from {source} (page dated "
            f"{reused['date']}; the same tuning seeds, code and config), so those (arm, rate) "
            "pairs were not trained on validation again. Without `--tuned` every arm is tuned."]


def _left_out(arms) -> list[str]:
    missing = [lab for lab in LABELS if lab not in arms]
    if not missing:
        return []
    return [f"Not run here (`--arms`): {', '.join(f'`{m}`' for m in missing)}, so the "
            "comparisons that need them (alternating vs mixed batches, the embedding's effect) "
            "are absent; `experiments/multimodal.py` without `--arms` runs all eight arms."]


def write_one_seed(data: dict[str, Any], out: pathlib.Path) -> pathlib.Path:
    """The ``--quick`` page: one seed carries no verdict; ``.md`` only."""
    lines = [f"# {data['title']}", ""]
    for para in data["intro"] + [rerun.NO_VERDICT] + data["notes"]:
        lines += [para, ""]
    lines += ["## Reproduce", "", "```", data["command"], "```", ""]
    path = out / "multimodal.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def machine() -> dict[str, str]:
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import jax  # pylint: disable=g-import-not-at-top
    return {"nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else os.cpu_count()),
            "cpu": model, "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "devices": f"{jax.device_count()} x {jax.devices()[0].platform}"}


def plot(path: pathlib.Path, runs, summary) -> None:
    """Bar chart of mean accuracy per arm, one panel per modality, per-seed points on top."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    fig = Figure(figsize=(11, 4.2), constrained_layout=True)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(MODALITIES))
    colors = {True: "tab:blue", False: "tab:orange"}
    for ax, m in zip(axes, MODALITIES):
        arms = [a for a in ARMS if trains(a, m)]
        lo = 1.0
        for i, arm in enumerate(arms):
            for j, embed in enumerate(EMBEDS):
                if (arm, embed) not in summary:
                    continue
                x = i + (j - 0.5) * 0.38
                s = summary[(arm, embed)][m]["accuracy"]
                lo = min(lo, s["min"])
                ax.bar(x, s["mean"], width=0.36, color=colors[embed], alpha=0.55,
                       label=("embedding" if embed else "no embedding") if i == 0 else None)
                vals = s["values"]
                jitter = np.linspace(-0.08, 0.08, len(vals)) if len(vals) > 1 else [0.0]
                ax.scatter(x + np.asarray(jitter), vals, color="k", s=14, zorder=3,
                           label="per seed" if i == 0 and j == 0 else None)
        ax.set_xticks(range(len(arms)), arms)
        bottom = max(0.0, lo - 0.3 * (1.0 - lo) - 0.01)
        ax.set_ylim(bottom, 1.0)
        ax.set_title(f"{m} ({DATASETS[m]}) test accuracy" +
                     (" (y axis zoomed)" if bottom > 0 else ""))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds reported on test (default 0-4; --quick: 0)")
    p.add_argument("--tune_seeds", type=int, nargs="+", default=[0],
                   help="seeds of the validation runs that choose each arm's lr")
    p.add_argument("--lrs", type=float, nargs="+", default=None,
                   help=f"the learning-rate grid (default {list(LRS)}; --quick: the config's "
                        "default, no tuning)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimizer steps per modality (default {default.STEPS}; --quick: "
                        f"{QUICK_STEPS})")
    p.add_argument("--tuned", default=None,
                   help="a multimodal page JSON whose grid (same --lrs and --tune_seeds) "
                        "gives the validation scores of the arms it lists: those arms are "
                        "not tuned again")
    p.add_argument("--arms", nargs="+", default=None, choices=LABELS,
                   help="the arms to run (default: all eight)")
    p.add_argument("--quick", action="store_true",
                   help="one seed, few steps, no tuning; outputs to a temp dir unless --out")
    p.add_argument("--out", default=None,
                   help="directory for multimodal.md/.json/.png (default docs/results)")
    p.add_argument("--workdir", default=None, help="root of the per-run workdirs (temp dir)")
    p.add_argument("--vectorized", action="store_true",
                   help="train an arm's consecutive seeds in one num_seeds program (for "
                        "accelerators: slower on a 2-core CPU for this model)")
    p.add_argument("--data_dir", default=None,
                   help="prepared datasets (default TFDS_DATA_DIR or ~/tensorflow_datasets)")
    args = p.parse_args(argv)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2, 3, 4])
    args.steps = args.steps or (QUICK_STEPS if args.quick else default.STEPS)
    args.lrs = args.lrs or ([default.LR] if args.quick else list(LRS))
    return args


def run_dir(root: pathlib.Path, arm: str, embed: bool, lr: float, val: bool) -> pathlib.Path:
    """Where :func:`train_arms` keeps an (arm, lr)'s runs: ``seed<N>`` folders."""
    return root / f"{label(arm, embed).replace(',', '-')}_lr{lr:g}{'_val' if val else ''}"


def is_done(root: pathlib.Path, arm: str, embed: bool, lr: float, seed: int, steps: int,
            val: bool = False) -> bool:
    """Whether :func:`train_arms` under ``root`` finished this run (a rerun reads it)."""
    where = run_dir(root, arm, embed, lr, val) / f"seed{seed}"
    return _finished(where, _config(arm, embed, steps, lr, val, None).total_steps) is not None


def train_arms(arms, lrs_of, seeds, root: pathlib.Path, *, steps: int, val: bool,
               vectorized: bool = False, data_dir: str | None = None) -> list[dict]:
    """Every (arm, lr) over ``seeds``: one program per arm and lr with ``vectorized``.

    ``arms``: ``(arm, embed)`` pairs, ``arm`` a ``configs/default.py`` arm, possibly with
    more variant tokens (``alternating,one_optimizer``); ``lrs_of(arm, embed)``: its rates.
    Run ``(arm, embed, lr, seed)`` lives in ``run_dir(...)/seed<seed>``, so scripts that
    share ``root`` read each other's finished runs (:func:`run_one`).
    """
    runs = []
    for arm, embed in arms:
        for lr in lrs_of(arm, embed):
            where = run_dir(root, arm, embed, lr, val)
            if vectorized and len(seeds) > 1:
                new = run_seeds(arm, embed, seeds, steps, where, data_dir, lr=lr, val=val)
            else:
                new = [run_one(arm, embed, s, steps, where / f"seed{s}", data_dir, lr=lr,
                               val=val) for s in seeds]
            for r in new:
                accs = "  ".join(f"{m} {_pct(r[m]['accuracy'])}%" for m in MODALITIES
                                 if trains(arm, m))
                print(f"{'val ' if val else 'test'} {label(arm, embed):<26} lr={lr:<7g} "
                      f"seed={r['seed']}  {accs}  {r['seconds']:.1f}s", flush=True)
            runs += new
    return runs


def tuning_metric(tune_seeds: Sequence[int]) -> str:
    """The grid's metric: what chose each arm's learning rate."""
    return ("validation accuracy, mean over the modalities the arm trains and over seeds "
            f"{list(tune_seeds)}")


def tuned_scores(path: str | pathlib.Path, tune_seeds: Sequence[int]
                 ) -> tuple[dict[str, dict[str, float]], str]:
    """The validation scores of a page's ``grid`` (``--tuned``), and the date of its run:
    ``{label: {str(lr): score}}``.

    Raises:
      ValueError: the page's scores are not this run's metric (other tuning seeds).
    """
    data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    grid = data.get("grid") or {}
    if grid.get("metric") != tuning_metric(tune_seeds):
        raise ValueError(f"--tuned {path}: its grid scores {grid.get('metric')!r}, not this "
                         f"run's {tuning_metric(tune_seeds)!r}.")
    return {a: dict(s) for a, s in grid["scores"].items()}, data["provenance"]["date"]


def tune(arms, lrs: Sequence[float], tune_seeds: Sequence[int], root: pathlib.Path, *,
         steps: int, tuned: str | None = None, vectorized: bool = False,
         data_dir: str | None = None) -> tuple[dict, list[dict], dict]:
    """Each arm's validation scores over the grid ``lrs``: ``(scores, runs, reused)``.

    ``scores``: ``{label: {str(lr): mean val_score over tune_seeds}}``. ``tuned``: a page
    JSON (``--tuned``) whose ``grid`` scored some (arm, lr) on the same tuning seeds: those
    scores are reused, the other (arm, lr) trained (:func:`train_arms`, ``val``).
    ``reused``: ``{"date": that page's, "arms": {label: [lr, ...]}}``, empty without it.
    """
    got, reused = {}, {}
    if tuned:
        every, when = tuned_scores(tuned, tune_seeds)
        got = {lab: {str(lr): per[str(lr)] for lr in lrs if str(lr) in per}
               for lab, per in every.items()}
        reused = {"date": when, "arms": {label(a, e): [float(k) for k in got[label(a, e)]]
                                         for a, e in arms if got.get(label(a, e))}}
    missing = lambda a, e: [lr for lr in lrs if str(lr) not in got.get(label(a, e), {})]  # noqa: E731
    runs = train_arms(arms, missing, tune_seeds, root, steps=steps, val=True,
                      vectorized=vectorized, data_dir=data_dir)
    fresh = val_scores(runs, arms, lrs)
    scores = {}
    for lab in (label(a, e) for a, e in arms):
        both = {**fresh.get(lab, {}), **got.get(lab, {})}
        scores[lab] = {str(lr): both[str(lr)] for lr in lrs}  # in grid order
    return scores, runs, reused


def val_scores(runs, arms, lrs) -> dict[str, dict[str, float]]:
    """``{label: {str(lr): mean val_score over the tuning seeds}}``, for the (arm, lr) run."""
    out = {}
    for a, e in arms:
        for lr in lrs:
            got = [val_score(r) for r in runs if (r["arm"], r["embed"], r["lr"]) == (a, e, lr)]
            if got:
                out.setdefault(label(a, e), {})[str(lr)] = float(np.mean(got))
    return out


def _command(argv: Sequence[str]) -> str:
    """The reproducing command, without the machine paths of ``--out`` and ``--workdir``."""
    from alternating.sweep_main import drop_flag  # pylint: disable=g-import-not-at-top
    return common.command("multimodal.py", drop_flag(list(argv), "--out"))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Tunes each arm's learning rate on validation, runs the chosen ones, writes the page.

    Returns:
      ``{"runs": [...], "summary": {(arm, embed): ...}, "grid": ... or None,
      "markdown": path, "plot": path, "wall_s": float}``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from absl import logging  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)  # Orbax and TFDS log every save and read at INFO.
    out = common.output_dir(args.out, args.quick)
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="multimodal_runs_")
    root = pathlib.Path(args.workdir or tmp.name)
    arms = [(arm, embed) for arm in ARMS for embed in EMBEDS
            if args.arms is None or label(arm, embed) in args.arms]
    t0 = time.perf_counter()
    try:
        grid, tuning, reused = None, [], {}
        if len(args.lrs) > 1:
            scores, tuning, reused = tune(arms, args.lrs, args.tune_seeds, root,
                                          steps=args.steps, tuned=args.tuned,
                                          vectorized=args.vectorized, data_dir=args.data_dir)
            grid = rerun.grid_field("Adam peak learning rate (every phase of the arm)",
                                    args.lrs, tuning_metric(args.tune_seeds), scores)
        chosen = (lambda a, e: [grid["chosen"][label(a, e)]]) if grid else (
            lambda a, e: [args.lrs[0]])
        runs = train_arms(arms, chosen, args.seeds, root, steps=args.steps, val=False,
                          vectorized=args.vectorized, data_dir=args.data_dir)
    finally:
        if tmp is not None:
            tmp.cleanup()
    wall = time.perf_counter() - t0
    summary = summarize(runs)
    data = page_data(runs, summary, grid, steps=args.steps, seeds=args.seeds,
                     tune_seeds=args.tune_seeds, command=_command(argv), reused=reused,
                     wall=sum(r["seconds"] for r in runs + tuning),  # the runs' own clocks
                     n_runs=len(runs) + len(tuning))
    md, png = out / "multimodal.md", out / "multimodal.png"
    plot(png, runs, summary)
    if len(args.seeds) > 1:
        pages.write_page(data, out)
    else:
        write_one_seed(data, out)
    print("\n".join(table(summary)))
    print(f"\nwrote {md} and {png}; total {wall:.0f}s")
    return {"runs": runs, "summary": summary, "grid": grid, "markdown": md, "plot": png,
            "wall_s": wall}


if __name__ == "__main__":
    main()

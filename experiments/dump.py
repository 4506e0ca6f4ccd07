r"""DUMP (scheme 5): uniform vs UCB vs UCB without exploration over difficulty levels.

Question: when RL post-training draws prompts from several difficulty levels,
does choosing the level by UCB on its recent mean absolute advantage (schedule
``ucb``) reach a higher average test reward, and a higher area under the
reward curve, than drawing levels uniformly?

Expected answer (as published, Wang et al. 2025, arXiv:2504.09710): UCB
scheduling converges faster and ends higher than uniform sampling.

Base config ``configs/dump.py``; every arm is one ``alternating.train`` run
with one phase per level. Reported: final average (over levels) test expected
reward, its area under the curve (mean over the evaluation points), and the
share of steps each arm gave to each level; mean ± sample std over seeds.
The plain arms keep one Adam state per level (phase); the arms ending in
``_one_optimizer`` share one Adam state among the levels (``optimizer_group``),
the paper's one optimizer.

    python experiments/dump.py --seeds 0 1 2 3 4   # the page: 5 seeds, five arms
    python experiments/dump.py --quick    # smoke variant, one seed, temp dir
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import shlex
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

import alternating  # noqa: E402
from experiments import common  # noqa: E402
from alternating import metrics, plots  # noqa: E402
from configs import dump as dump_config  # noqa: E402
from experiments import seqtasks  # noqa: E402
from experiments.ccl import _cpu  # noqa: E402
from experiments.sasr import _one_device_mesh  # noqa: E402


_ANSWERS = {"mod10": "mod 10 as one token (a random policy is right 10% of the time)",
            "mod100": "mod 100 as two tokens, tens and units (right 1% of the time by chance)"}


_NOTE = (
    'Notes: each level is a phase; the plain arms give each phase its own Adam state, the '
    "`_one_optimizer` arms one Adam state shared by all levels (`optimizer_group`: one state "
    "over the union of their parameters, one step count), as the paper trains one policy with "
    "one optimizer. DUMP's window counts samples; here it counts "
    'steps, each the mean over a batch of prompts and their group. {why}UCB on the mean '
    'absolute advantage starves levels where it is 0 and favours levels where chance keeps it '
    'high. The mean absolute advantage is 0 on a level whose every sampled group gets the '
    'same reward, '
    'whether the level is too hard or its answer simply has not been found yet (level 1 of '
    'the two-token task: UCB gives it fewer steps and its reward stays near 0), and it stays '
    'high where chance-level rewards make groups mixed (the hardest levels of the one-token '
    'task, which UCB then favours).'
)


ONE_OPTIMIZER = "_one_optimizer"
ONE_OPTIMIZER_ARMS = ["uniform" + ONE_OPTIMIZER, "ucb" + ONE_OPTIMIZER]


def schedule_for(arm: str, cfg) -> dict[str, Any]:
    if arm == "uniform":
        return {"name": "weighted"}
    return {"name": "ucb", "metric": "abs_advantage", "window": cfg.window,
            "c": cfg.c if arm == "ucb" else 0.0, "temperature": cfg.temperature,
            "feedback_every": cfg.feedback_every}


def run_one(cfg, arm: str, seed: int, workdir: pathlib.Path) -> dict[str, Any]:
    """One arm, one seed; an arm ending in ``_one_optimizer`` shares one Adam state."""
    n, base = cfg.levels, arm.removesuffix(ONE_OPTIMIZER)
    group = "shared" if arm.endswith(ONE_OPTIMIZER) else None
    answer_len = {"mod10": 1, "mod100": 2}[cfg.answer]
    policy = seqtasks.Policy(n, 11, answer_len, 10, hidden=tuple(cfg.hidden))
    names = [f"level_{k}" for k in range(1, n + 1)]
    opt = {"name": "adam", "lr": cfg.lr}
    loss = functools.partial(policy.grpo_loss, group=cfg.group)
    phases = [alternating.Phase(p, loss=loss, optimizer=opt, optimizer_group=group)
              for p in names]
    data, evals = {}, {}
    for k, p in enumerate(names, start=1):
        data[p] = {"dataset": seqtasks.modular_sums(cfg.train_size, k, n, seqtasks.seed_of(0, k, seed),
                                                     cfg.answer),
                   "batch_size": cfg.batch_size}
        evals[p] = {"data": {"dataset": seqtasks.modular_sums(cfg.test_size, k, n,
                                                              seqtasks.seed_of(1, k, seed),
                                                              cfg.answer)},
                    "loss": policy.eval_loss, "batch_size": 250}
    t0 = time.time()
    alternating.train(phases=phases, schedule=schedule_for(base, cfg), data=data,
                      init=policy.init, workdir=str(workdir), total_steps=cfg.steps, seed=seed,
                      evals=evals, eval_every_steps=cfg.eval_every, log_every_steps=cfg.eval_every,
                      progress=False, plot=False, print_fn=None, mesh=_one_device_mesh())
    rows = [r for r in metrics.read_jsonl(workdir / "metrics.jsonl") if r["split"] == "eval"]
    by_step: dict[int, list[float]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append(r["expected_reward"])
    curve = [float(np.mean(v)) for _, v in sorted(by_step.items())]
    res = json.loads((workdir / "results.json").read_text())
    per_level = [res["final_eval"][p]["expected_reward"] for p in names]
    share = [res["steps_per_phase"][p] / cfg.steps for p in names]
    return {"arm": arm, "seed": seed, "final": curve[-1], "auc": float(np.mean(curve)),
            "per_level": per_level, "share": share, "seconds": time.time() - t0}


def summarize(runs):
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        rs = [r for r in runs if r["arm"] == arm]
        row = {"n": len(rs)}
        for k in ("final", "auc"):
            v = np.array([r[k] for r in rs])
            row[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                      float(v.min()), float(v.max()))
        row["per_level"] = np.mean([r["per_level"] for r in rs], axis=0).tolist()
        row["share"] = np.mean([r["share"] for r in rs], axis=0).tolist()
        out[arm] = row
    return out


def _note(summary) -> str:
    u, c = summary.get("uniform"), summary.get("ucb")
    lower = [k for k in ("auc", "final") if u and c and c[k][0] < u[k][0]]
    why = ("A hypothesis, not tested here (no run isolates it): " if not lower else
           f"Why UCB's mean{'s' if len(lower) > 1 else ''} may be lower is a hypothesis, not "
           "tested here (no run isolates it): ")
    return _NOTE.format(why=why)


def _relation(a, b) -> str:
    """Per-seed range of ``a`` vs that of ``b`` (mean, std, min, max)."""
    if a[2] > b[3]:
        return "higher"
    if a[3] < b[2]:
        return "lower"
    if b[2] <= a[2] and a[3] <= b[3]:
        return "inside"
    if a[2] <= b[2] and b[3] <= a[3]:
        return "contains"
    return "overlap"


def _vs_uniform(name: str, r, u, base: str = "uniform") -> str:
    """One arm against uniform on AUC and final reward, by per-seed ranges."""
    rng = lambda x: f"{x[2]:.3f}-{x[3]:.3f}"  # noqa: E731
    rel = {k: _relation(r[k], u[k]) for k in ("auc", "final")}
    pair = f"AUC {rng(r['auc'])} vs {rng(u['auc'])}; final {rng(r['final'])} vs {rng(u['final'])}"
    if len(set(rel.values())) == 1 and rel["auc"] in ("higher", "lower"):
        return (f"{name} is measurably {rel['auc']} than {base} ({pair}; ranges do not "
                "overlap)")
    if all(v not in ("higher", "lower") for v in rel.values()):
        verb = {"inside": "lie inside", "contains": "contain"}.get(
            rel["auc"] if rel["auc"] == rel["final"] else "", "overlap")
        return f"{name}'s per-seed ranges {verb} {base}'s ({pair})"
    word = {"higher": "measurably higher", "lower": "measurably lower"}
    return (f"{name} vs {base}: AUC {rng(r['auc'])} vs {rng(u['auc'])} "
            f"({word.get(rel['auc'], 'ranges overlap')}); final {rng(r['final'])} vs "
            f"{rng(u['final'])} ({word.get(rel['final'], 'ranges overlap')})")


def verdict(summary) -> str:
    u, c = summary.get("uniform"), summary.get("ucb")
    if u is None or c is None or c["n"] < 3:
        return "not judged (fewer than 3 seeds)."
    ne = summary.get("ucb_no_explore")
    rel = {k: _relation(c[k], u[k]) for k in ("auc", "final")}
    if rel["auc"] == rel["final"] == "inside":
        text = (f"**inconclusive (within uniform's spread)**. UCB's reward AUC "
                f"({c['auc'][0]:.3f}; seeds {c['auc'][2]:.3f}-{c['auc'][3]:.3f}) and final reward "
                f"({c['final'][0]:.3f}; seeds {c['final'][2]:.3f}-{c['final'][3]:.3f}) lie inside "
                f"uniform's per-seed ranges (AUC {u['auc'][2]:.3f}-{u['auc'][3]:.3f}, final "
                f"{u['final'][2]:.3f}-{u['final'][3]:.3f})")
        ne_overlaps = ne is not None and all(
            _relation(ne[k], u[k]) not in ("higher", "lower") for k in ("auc", "final"))
        if ne_overlaps:
            text += ", and the ranges of UCB without exploration overlap uniform's too."
        elif ne is not None:
            text += ". " + _vs_uniform("UCB without exploration", ne, u) + "."
        else:
            text += "."
        arms = [c, ne] if ne_overlaps else [c]
        wider = all(u[k][1] > abs(r[k][0] - u[k][0]) for r in arms for k in ("auc", "final"))
        diffs = ("the differences between the arms' means" if ne_overlaps else
                 "the differences between UCB's means and uniform's")
        text += (f" Uniform's seed-to-seed spread (std {u['auc'][1]:.3f} in AUC, "
                 f"{u['final'][1]:.3f} in final reward) is "
                 + (f"larger than {diffs}" if wider else
                    f"not larger than all of {diffs}, but the per-seed ranges overlap")
                 + f", so {c['n']} seeds show neither that UCB is worse than uniform nor that it "
                 "is not better: this run neither supports nor refutes the claim.")
        return text + one_optimizer_verdict(summary)
    head = {"higher": "**holds**", "lower": "**contradicted**"}.get(rel["auc"], "**inconclusive**")
    text = f"UCB vs uniform {head}: {_vs_uniform('UCB', c, u)}."
    if ne is not None:
        text += f" {_vs_uniform('UCB without exploration', ne, u)}."
    return text + one_optimizer_verdict(summary)


def one_optimizer_verdict(summary) -> str:
    """UCB vs uniform with one shared Adam state, and each against its per-level-state arm."""
    u1, c1 = (summary.get(a) for a in ONE_OPTIMIZER_ARMS)
    if u1 is None or c1 is None:
        return ""
    text = " With one shared Adam state: " + _vs_uniform(
        f"`{ONE_OPTIMIZER_ARMS[1]}`", c1, u1, f"`{ONE_OPTIMIZER_ARMS[0]}`") + "."
    for arm, r in zip(("uniform", "ucb"), (u1, c1)):
        if arm in summary:
            text += (" " + _vs_uniform(f"`{arm}{ONE_OPTIMIZER}`", r, summary[arm], f"`{arm}`")
                     + ".")
    return text


# (name, treatment, baseline): paired comparisons of the reward AUC, claim "greater".
PAIRED = [("UCB vs uniform", "ucb", "uniform"),
          ("UCB without exploration vs uniform", "ucb_no_explore", "uniform"),
          ("UCB vs uniform, one optimizer", "ucb" + ONE_OPTIMIZER, "uniform" + ONE_OPTIMIZER),
          ("uniform: one optimizer vs per-level states", "uniform" + ONE_OPTIMIZER, "uniform"),
          ("UCB: one optimizer vs per-level states", "ucb" + ONE_OPTIMIZER, "ucb")]


def paired_table(runs) -> list[str]:
    """The verdict rule of ``alternating/verdict.py`` on the reward AUC (2 seeds or more)."""
    from alternating import verdict as rule  # pylint: disable=g-import-not-at-top
    auc = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        auc.setdefault(r["arm"], []).append(r["auc"])
    rows = [rule.compare(auc[t], auc[b], claim="greater", name=n) for n, t, b in PAIRED
            if t in auc and b in auc and len(auc[t]) == len(auc[b]) >= 2]
    if not rows:
        return []
    return ["Paired verdicts on the reward AUC (the rule of `alternating/verdict.py`: paired "
            "per-seed differences, treatment minus baseline, their mean and 95% t interval; "
            "confirmed or contradicted when the interval excludes zero, else inconclusive):",
            "", rule.render_table(rows), ""]


def write_markdown(path, summary, cfg, seconds, command, runs=()):
    lines = ["# DUMP: UCB over difficulty levels for RL", "",
             "Generated by `experiments/dump.py` (config `configs/dump.py`). Claim (Wang et al. "
             "2025, arXiv:2504.09710): scheduling distributions by UCB on their mean absolute "
             "advantage gives a higher reward AUC than uniform sampling.", "",
             f"Command: `{command}`  ",
             f"Machine: {_cpu()}, {os.cpu_count()} cores, CPU only (jax {jax.__version__}). "
             f"Total run time: {seconds:.0f} s.", "",
             f"Task: the sum of k digits, k = 1..{cfg.levels} (one phase per k), answered "
             f"{_ANSWERS[cfg.answer]}, reward 1 for the exact answer; MLP {list(cfg.hidden)} "
             f"policy; batch {cfg.batch_size} prompts, "
             f"GRPO group {cfg.group}, group-normalized advantages; Adam {cfg.lr}, one state "
             "per phase (level), or one shared by the levels in the `_one_optimizer` arms; "
             f"{cfg.steps} steps per arm; UCB window {cfg.window} steps (each value a mean over "
             f"{cfg.batch_size * cfg.group} samples), c {cfg.c}, temperature {cfg.temperature}, "
             f"feedback every {cfg.feedback_every} steps; seeds {list(cfg.seeds)}. Test: "
             f"{cfg.test_size} fresh prompts per level, expected reward = mean probability of the "
             f"right answer; averaged over levels, evaluated every {cfg.eval_every} steps.", "",
             "| arm | final avg test reward | reward AUC | final reward per level (k=1..) | share of steps per level |",
             "|---|---|---|---|---|"]
    for arm, r in summary.items():
        f = lambda k: f"{r[k][0]:.3f} ± {r[k][1]:.3f} [{r[k][2]:.3f}, {r[k][3]:.3f}]"  # noqa: E731
        lines.append(f"| {arm} | {f('final')} | {f('auc')} | "
                     f"{' '.join(f'{v:.2f}' for v in r['per_level'])} | "
                     f"{' '.join(f'{v:.2f}' for v in r['share'])} |")
    lines += ["", "mean ± sample std [min, max] over seeds; per-level columns are seed means.", "",
              f"Verdict: {verdict(summary)}", ""] + paired_table(runs) + [_note(summary), ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--answer", choices=["mod10", "mod100"], default=None,
                    help="task variant (default: the config's, mod100)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--arms", nargs="+", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args(argv)
    cfg = dump_config.get_config(",".join(
        (["smoke"] if args.quick else []) + ([args.answer] if args.answer else [])))
    if args.seeds is not None:
        cfg.seeds = list(args.seeds)
    arms = args.arms or list(cfg.arms) + ONE_OPTIMIZER_ARMS
    work = pathlib.Path(args.workdir or tempfile.mkdtemp())
    t0 = time.time()
    runs = []
    for seed in cfg.seeds:
        for arm in arms:
            runs.append(run_one(cfg, arm, seed, work / f"{arm}_s{seed}"))
            print(runs[-1], flush=True)
    summary = summarize(runs)
    out = common.output_dir(args.out, args.quick)
    command = ("python experiments/dump.py " + shlex.join(common.public_args(argv))).strip()
    md = out / ("dump.md" if cfg.answer == "mod100" else f"dump_{cfg.answer}.md")
    write_markdown(md, summary, cfg, time.time() - t0, command, runs)
    if "ucb" in arms:  # the UCB run of the first seed: its level probabilities over steps
        png = plots.plot_probabilities(work / f"ucb_s{cfg.seeds[0]}", out=md.with_suffix(".png"))
        with md.open("a") as f:
            f.write(f"\n![UCB level probabilities and timeline, seed {cfg.seeds[0]}]({png.name})\n")
    print(md.read_text())
    return {"runs": runs, "summary": summary, "out": str(out)}


if __name__ == "__main__":
    main()

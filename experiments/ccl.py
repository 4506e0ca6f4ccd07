r"""Cyclical curriculum (scheme 7, CCL): vanilla vs easy-first vs cyclical (static / self-paced).

Question: on digits and MNIST-1D, at equal optimizer steps, does training on
epochs whose size cycles 0.25 -> 0.5 -> 1 -> 0.5 ... of the data, drawn by
score, give a higher best and final test accuracy than vanilla training and
than a monotone easy-first curriculum?

Expected answer (as published, Kesgin & Amasyali 2022, arXiv:2202.05531): a
small but consistent gain of cyclical over vanilla and monotone curricula,
visible over many seeds.

Base config: ``configs/ccl.py`` (one per dataset). Each arm trains the same
MLP with Adam for ``steps`` steps from a ``CurriculumStream``; test accuracy
every ``eval_every`` steps; reported: best and final accuracy, mean ± sample
std over seeds, and per-seed wins against vanilla (paired: same init seed).
The verdict "holds" needs the cyclical arm ahead of both vanilla and
easy-first on the mean and in at least 4 of 5 paired seeds.

This script drives the steps itself (a jitted Adam step over the stream's
batches) instead of ``alternating.train``: the self-paced arm re-scores the
training set with the *current* parameters when each epoch begins, and the
loop does not hand its parameters to a data stream. All arms use the same
driver, so the comparison is like for like.

    python experiments/ccl.py                 # digits and mnist1d, 5 seeds
    python experiments/ccl.py --quick         # smoke variant, one seed, temp dir

``main(argv)`` returns the summary, so tests call it in-process.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shlex
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alternating import data  # noqa: E402
from alternating.data import CurriculumStream  # noqa: E402
from alternating.models import MLP  # noqa: E402
from experiments import common  # noqa: E402
from configs import ccl  # noqa: E402


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class _Task:
    """Arrays, model and jitted functions of one dataset config (shared by arms)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.train = {k: np.asarray(v) for k, v in data.load_arrays(cfg.dataset, "train").items()}
        self.test = {k: np.asarray(v) for k, v in data.load_arrays(cfg.dataset, "test").items()}
        self.model = MLP(features=tuple(cfg.features))
        self.opt = optax.adam(cfg.lr)
        model, opt = self.model, self.opt

        def loss_fn(params, x, y):
            logits = model.apply({"params": params}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        @jax.jit
        def step(params, opt_state, x, y):
            g = jax.grad(loss_fn)(params, x, y)
            updates, opt_state = opt.update(g, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        @jax.jit
        def true_prob(params, x, y):
            p = jax.nn.softmax(model.apply({"params": params}, x))
            return jnp.take_along_axis(p, y[:, None], axis=1)[:, 0]

        @jax.jit
        def accuracy(params, x, y):
            return (model.apply({"params": params}, x).argmax(-1) == y).mean()

        self.step, self.true_prob, self.accuracy = step, true_prob, accuracy

    def init(self, seed: int):
        x0 = jnp.zeros((1,) + self.train["x"].shape[1:])
        params = self.model.init(jax.random.PRNGKey(seed), x0)["params"]
        return params, self.opt.init(params)

    def scores(self, params) -> np.ndarray:
        p = np.asarray(self.true_prob(params, self.train["x"], self.train["y"]), np.float64)
        return np.clip(p, 1e-6, None)


def _arms(cfg) -> list[str]:
    # ConfigDict sorts keys; report in the configured order, vanilla first.
    return [a for a in ccl.ARMS if a in cfg.arms] + sorted(set(cfg.arms) - set(ccl.ARMS))


def run_arm(task: _Task, arm: str, seed: int, static_scores: np.ndarray | None) -> dict[str, Any]:
    cfg, spec = task.cfg, task.cfg.arms[arm]
    params, opt_state = task.init(seed)
    holder = {"params": params}
    kw: dict[str, Any] = dict(sizes=list(spec["sizes"]), cycle=bool(spec["cycle"]),
                              sampling=cfg.sampling)
    if spec["scores"] == "static":
        kw["scores"] = static_scores
    elif spec["scores"] == "self_paced":
        kw["scorer"] = lambda epoch: task.scores(holder["params"])
    stream = CurriculumStream(task.train, batch_size=cfg.batch_size, seed=seed, **kw)
    curve = []
    t0 = time.time()
    for i in range(cfg.steps):
        b = next(stream)
        params, opt_state = task.step(params, opt_state, b["x"], b["y"])
        holder["params"] = params
        if (i + 1) % cfg.eval_every == 0 or i + 1 == cfg.steps:
            curve.append(float(task.accuracy(params, task.test["x"], task.test["y"])))
    return {"arm": arm, "seed": seed, "best": max(curve), "final": curve[-1],
            "seconds": time.time() - t0}


def run_dataset(cfg) -> list[dict[str, Any]]:
    task = _Task(cfg)
    runs = []
    for seed in cfg.seeds:
        # Scoring run: vanilla training on another seed; its true-class
        # probabilities are the static scores.
        params, opt_state = task.init(seed + 1000)
        rng = np.random.default_rng(seed + 1000)
        n = len(task.train["y"])
        for _ in range(cfg.score_steps):
            idx = rng.choice(n, cfg.batch_size, replace=False)
            params, opt_state = task.step(params, opt_state, task.train["x"][idx],
                                          task.train["y"][idx])
        static = task.scores(params)
        for arm in _arms(cfg):
            runs.append({"dataset": cfg.dataset, **run_arm(task, arm, seed, static)})
    return runs


def summarize(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for ds in dict.fromkeys(r["dataset"] for r in runs):
        base = {r["seed"]: r for r in runs if r["dataset"] == ds and r["arm"] == "vanilla"}
        for arm in dict.fromkeys(r["arm"] for r in runs if r["dataset"] == ds):
            rs = [r for r in runs if r["dataset"] == ds and r["arm"] == arm]
            row = {"n": len(rs)}
            for k in ("best", "final"):
                v = np.array([r[k] for r in rs]) * 100
                row[k] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
                row[f"wins_{k}"] = sum(r[k] > base[r["seed"]][k] for r in rs)
            out[(ds, arm)] = row
    return out


def verdict(summary, ds: str, arm: str = "cyclical") -> str:
    me = summary.get((ds, arm))
    if me is None or me["n"] < 3:
        return "not judged (fewer than 3 seeds)"
    others = [summary[(ds, a)] for a in ("vanilla", "easy_first") if (ds, a) in summary]
    ahead = all(me["best"][0] > o["best"][0] and me["final"][0] > o["final"][0] for o in others)
    wins = min(me["wins_best"], me["wins_final"])
    need = int(np.ceil(0.8 * me["n"]))
    if ahead and wins >= need:
        return f"holds ({arm} ahead of vanilla and easy-first on the mean; {wins}/{me['n']} paired wins)"
    return (f"does not show ({arm} ahead of both on the mean: {'yes' if ahead else 'no'}; "
            f"paired wins over vanilla: best {me['wins_best']}/{me['n']}, "
            f"final {me['wins_final']}/{me['n']})")


def write_markdown(path: pathlib.Path, summary, configs, seconds: float, command: str) -> None:
    lines = ["# Cyclical curriculum (CCL) on digits and MNIST-1D", "",
             "Generated by `experiments/ccl.py`; configs in `configs/ccl.py`. Claim "
             "(Kesgin & Amasyali 2022, arXiv:2202.05531): training on epochs whose size "
             "cycles 0.25 -> 0.5 -> 1 -> 0.5 ... of the data, drawn by score, gives a small "
             "but consistent gain over vanilla training and monotone curricula.", "",
             f"Command: `{command}`  ", f"Machine: {_cpu()}, {os.cpu_count()} cores, CPU only "
             f"(jax {jax.__version__}). Total run time: {seconds:.0f} s.", ""]
    for cfg in configs:
        ds = cfg.dataset
        lines += [f"## {ds}", "",
                  f"MLP {list(cfg.features)}, Adam lr {cfg.lr}, batch {cfg.batch_size}, "
                  f"{cfg.steps} steps for every arm, test accuracy every {cfg.eval_every} steps, "
                  f"seeds {list(cfg.seeds)}, sampling by score ({cfg.sampling}, without "
                  f"replacement); static scores from a {cfg.score_steps}-step vanilla scoring "
                  "run on seed+1000.", "",
                  "| arm | best test acc % | final test acc % | seeds beating vanilla (best / final) |",
                  "|---|---|---|---|"]
        for arm in _arms(cfg):
            r = summary[(ds, arm)]
            lines.append(f"| {arm} | {r['best'][0]:.2f} ± {r['best'][1]:.2f} | "
                         f"{r['final'][0]:.2f} ± {r['final'][1]:.2f} | "
                         f"{r['wins_best']}/{r['n']} / {r['wins_final']}/{r['n']} |")
        lines += ["", f"Verdict (cyclical, static scores): {verdict(summary, ds)}.  ",
                  f"Verdict (cyclical, self-paced): {verdict(summary, ds, 'cyclical_self_paced')}.",
                  ""]
    lines += ["mean ± sample std over seeds. \"holds\" requires the arm ahead of vanilla and "
              "easy-first on both means and ahead of vanilla in at least 80% of paired seeds.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv=None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist1d"])
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--quick", action="store_true", help="smoke variant, one seed, temp output")
    ap.add_argument("--out", default=None, help="folder of ccl.md (default docs/results)")
    args = ap.parse_args(argv)
    configs = []
    for ds in args.datasets:
        cfg = ccl.get_config(ds + (",smoke" if args.quick else ""))
        if args.seeds is not None:
            cfg.seeds = list(args.seeds)
        configs.append(cfg)
    t0 = time.time()
    runs = [r for cfg in configs for r in run_dataset(cfg)]
    summary = summarize(runs)
    out = common.output_dir(args.out, args.quick)
    command = "python experiments/ccl.py " + shlex.join(common.public_args(argv))
    write_markdown(out / "ccl.md", summary, configs, time.time() - t0, command.strip())
    print((out / "ccl.md").read_text())
    return {"runs": runs, "summary": summary, "out": str(out)}


if __name__ == "__main__":
    main()

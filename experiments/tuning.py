"""Fair arms (issue 16): one learning-rate grid for every arm, chosen per arm on validation.

Every arm of a reproduction runs each value of the same grid; the value whose
mean *validation* score over the tuning seeds is best becomes the arm's
choice, and the arm is reported on test at that value on every seed. Where the
tuning seeds are among the reported seeds, their runs at the chosen value are
reused (selection read only their validation figures); the other seeds run
afterwards. The result is the page's ``grid`` field (``experiments/pages.py``).

A run that stops on a non-finite loss (:class:`alternating.NonFiniteError`)
scores nothing: its value is left out of the arm's row and cannot be chosen.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Mapping, Sequence


def seeds_from(values: Sequence[int] | None, default: int) -> list[int]:
    """``--seeds N`` (one value): seeds ``0..N-1``; several values: those seeds."""
    if not values:
        return list(range(default))
    if len(values) == 1:
        if values[0] < 2:
            raise ValueError(f"--seeds {values[0]}: one value is a number of seeds, and a "
                             "page needs at least 2 (give several values for a seed list).")
        return list(range(values[0]))
    return list(values)


def add_seeds_flag(ap: argparse.ArgumentParser, default: int) -> None:
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help=f"N (seeds 0..N-1) or a list of seeds (default {default}; --quick 2)")


def tune(arms: Sequence[str], values: Sequence[float], seeds: Sequence[int],
         tune_seeds: Sequence[int], run: Callable[[str, float, list[int]], list[dict]],
         score: Callable[[dict], float], *, metric: str, maximize: bool = True,
         param: str = "learning rate",
         smoke: bool = False) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Grid per arm on ``tune_seeds``, then the chosen value on every one of ``seeds``.

    Args:
      arms: the arms, each tuned on its own.
      values: the grid (the same for every arm), at least 3 values.
      seeds: the reported seeds.
      tune_seeds: the seeds whose validation scores choose the value.
      run: ``run(arm, value, seeds)`` -> one result dict per seed, in order.
      score: a result's validation score.
      metric: what ``score`` measures (shown on the page).
      maximize: whether a higher score is better.
      param: the tuned parameter's name.
      smoke: a ``--quick`` run, which may give fewer values (each value of
        each arm is a compiled program; a smoke run checks the plumbing).

    Returns:
      ``(grid, results)``: the page's ``grid`` field and ``{arm: [result per
      seed in seeds]}`` at each arm's chosen value.

    Raises:
      ValueError: fewer than 3 values (unless ``smoke``), or an arm whose every
        value diverged.
    """
    from alternating import NonFiniteError  # pylint: disable=g-import-not-at-top
    if len(values) < 3 and not smoke:
        raise ValueError(f"tuning grid {list(values)}: the fair-arms rule needs at least 3 "
                         "values.")
    scores, chosen, results = {}, {}, {}
    for arm in arms:
        scores[arm], done = {}, {}
        for v in values:
            try:
                runs = run(arm, v, list(tune_seeds))
            except NonFiniteError as e:
                print(f"{arm} {param}={v}: non-finite loss ({e}); not a candidate", flush=True)
                continue
            done[v] = dict(zip(tune_seeds, runs))
            s = [score(r) for r in runs]
            if all(math.isfinite(x) for x in s):
                scores[arm][str(v)] = float(sum(s) / len(s))
        if not scores[arm]:
            raise ValueError(f"arm {arm!r}: every {param} in {list(values)} diverged.")
        from experiments import rerun  # pylint: disable=g-import-not-at-top
        best = rerun.choose({arm: scores[arm]}, [v for v in values if str(v) in scores[arm]],
                            maximize)[arm]  # diverged values are not candidates
        chosen[arm] = best
        have = dict(done[best])
        missing = [s for s in seeds if s not in have]
        if missing:
            have.update(zip(missing, run(arm, best, missing)))
        results[arm] = [have[s] for s in seeds]
        print(f"{arm}: {param} {best} (validation {scores[arm]})", flush=True)
    grid = {"param": param, "values": list(values), "metric": metric, "scores": scores,
            "chosen": chosen}
    return grid, results


def tune_per_seed(arms: Sequence[str], rates: Sequence[float], seeds: Sequence[int],
                  tune_seeds: Sequence[int], run, score, *, metric: str, maximize: bool = True,
                  quick: bool = False) -> tuple[dict[str, Any], dict[str, list[dict]], dict]:
    """Fair arms for scripts whose arms are run functions, not configs (one run per seed).

    ``run(arm, lr, seed) -> result`` trains one seed; its result carries the run's
    validation figures (read by ``score``) and its test figures (reported).
    :func:`tune` picks each arm's rate of ``rates`` on the mean
    validation score over ``tune_seeds`` and reports the chosen rate's runs on
    ``seeds`` (a tuning seed's run at the chosen rate is reused). Unless ``quick``,
    when an arm chooses an end of the grid the grid is widened once on that side
    (one more value, the grid's ratio beyond the end; every arm runs it) before
    the final choice. Every run is made once (cached by arm, rate and seed).

    Returns:
      ``(grid, results, info)``: the page's ``grid`` field, ``{arm: [result per
      seed]}`` at the chosen rates, and ``{"first": the grid before widening,
      "added": the values added, "runs": runs trained}``.
    """
    cache: dict[tuple[str, float, int], dict] = {}

    def cached(arm, lr, block):
        for s in block:
            if (arm, lr, s) not in cache:
                cache[(arm, lr, s)] = run(arm, lr, s)
        return [cache[(arm, lr, s)] for s in block]

    values, added = [float(r) for r in rates], []
    kw = dict(metric=metric, maximize=maximize, param="Adam learning rate (every phase)")
    if not quick:
        first, _ = tune(arms, values, list(tune_seeds), list(tune_seeds), cached, score,
                               **kw)
        ratio = values[1] / values[0]
        if values[0] in first["chosen"].values():
            added.append(float(f"{values[0] / ratio:.2g}"))
            values.insert(0, added[-1])
        if values[-1] in first["chosen"].values():
            added.append(float(f"{values[-1] * ratio:.2g}"))
            values.append(added[-1])
    grid, results = tune(arms, values, list(seeds), list(tune_seeds), cached, score,
                                smoke=quick, **kw)
    return grid, results, {"first": [float(r) for r in rates], "added": added,
                           "runs": len(cache)}


def tuning_notes(grid: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    """The widening (if any) and :func:`experiments.rerun.edge_note` (a grid of 3 or more)."""
    out = []
    if info["added"]:
        out.append(f"The first grid {info['first']} had an arm's choice at an end, so every "
                   f"arm also ran {info['added']} (the grid widened once beyond each end an "
                   "arm chose) before the choice shown.")
    return out + (edge_notes(dict(grid)) if len(grid["values"]) >= 3 else [])


def arms_table(results: Mapping[str, list], metrics: Mapping[str, str]) -> dict[str, dict]:
    """``{arm: {metric: [per seed]}}`` from ``{arm: [result per seed]}`` (metrics an arm
    lacks are left out)."""
    return {a: {k: [float(r[k]) for r in rs] for k in metrics if all(k in r for r in rs)}
            for a, rs in results.items()}


def grid_sentence(grid: dict[str, Any], tune_seeds: Sequence[int], seeds: Sequence[int],
                  scores: str = "validation") -> str:
    """One intro sentence naming the grid, the tuning seeds and the choices."""
    same = list(tune_seeds) == list(seeds)
    where = ("every reported seed (the chosen value's runs are the reported ones; the choice "
             "read only their validation figures)" if same else
             f"seed(s) {list(tune_seeds)}" + (
                 "" if set(tune_seeds) & set(seeds) else ", apart from the reported seeds"))
    picks = ", ".join(f"`{a}` {v:g}" for a, v in grid["chosen"].items())
    return (f"Tuning (issue 16, fair arms): every arm ran the {grid['param']} grid "
            f"{[float(v) for v in grid['values']]}; each arm's value was chosen on "
            f"{grid['metric']}, averaged over {where}; chosen: {picks}. The table below gives "
            + ("the validation scores." if scores == "validation" else f"the scores on {scores}."))


def edge_notes(grid: dict[str, Any], scores: str = "validation") -> list[str]:
    """A note naming the arms whose choice lies at an end of the grid (beyond it: untried)."""
    values = list(grid["values"])
    ends = {values[0]: "smallest", values[-1]: "largest"}
    at = [f"`{a}` ({ends[v]}, {v:g})" for a, v in grid["chosen"].items() if v in ends]
    if not at:
        return []
    return ["Chosen at an end of the grid, so a value beyond it might have scored better on "
            f"{scores} (not tried): " + ", ".join(at) + "."]


def variant(arm: str, steps: int, lr: float | None = None, val: bool = False) -> str:
    """A config variant string ``<arm>,steps=N[,lr=X][,val]``."""
    return (f"{arm},steps={steps}" + (f",lr={lr!r}" if lr is not None else "")
            + (",val" if val else ""))


def cli(doc: str, argv, *, seeds: int, steps: int, quick_steps: int, arms: Sequence[str],
        prefix: str, more: Callable[[argparse.ArgumentParser], None] | None = None):
    """The flags the vectorized page scripts share; ``(args, seeds, out dir, workdir)``.

    ``--seeds`` (:func:`seeds_from`), ``--steps``, ``--quick`` (2 seeds, at most
    ``quick_steps`` steps, a temp dir), ``--arms``, ``--one-run-per-seed``, ``--out``,
    ``--workdir``; ``more(parser)`` adds a script's own. With vectorized seeds
    (the default) the seeds must be consecutive.
    """
    import pathlib  # pylint: disable=g-import-not-at-top
    import tempfile  # pylint: disable=g-import-not-at-top
    from experiments import common  # pylint: disable=g-import-not-at-top
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    add_seeds_flag(ap, seeds)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--quick", action="store_true",
                    help=f"2 seeds, at most {quick_steps} steps, output to a temp dir")
    ap.add_argument("--arms", nargs="+", default=None, choices=list(arms))
    ap.add_argument("--one-run-per-seed", action="store_true",
                    help="train each seed in its own run (default: an arm's seeds in one "
                         "num_seeds program)")
    ap.add_argument("--out", default=None, help="output directory (default docs/results)")
    ap.add_argument("--workdir", default=None, help="run directories (default: a temp dir)")
    if more:
        more(ap)
    args = ap.parse_args(argv)
    chosen = seeds_from(getattr(args, "inits", None) or args.seeds, 2 if args.quick else seeds)
    if args.quick:
        args.steps = min(args.steps, quick_steps)
    if not args.one_run_per_seed:
        common.check_consecutive(chosen)
    args.arms = [a for a in arms if not args.arms or a in args.arms]
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix=prefix))
    return args, chosen, common.output_dir(args.out, args.quick), work


def page_data(*, name: str, title: str, intro: list[str], script: str, argv, wall: float,
              n_runs: int, seeds: Sequence[int], metrics: dict, arms: dict, grid: dict,
              comparisons: list[dict], notes: list[str], scores: str = "validation"
              ) -> dict[str, Any]:
    """A tuned page's data (``experiments/pages.py``): the comparisons whose two arms ran,
    and :func:`edge_notes` after the script's notes."""
    from experiments import common, pages  # pylint: disable=g-import-not-at-top
    return {"name": name, "title": title, "intro": intro,
            "command": common.command(script, argv),
            "provenance": pages.provenance(wall, n_runs), "seeds": list(seeds),
            "metrics": metrics, "arms": arms, "grid": grid,
            "comparisons": [c for c in comparisons
                            if c["treatment"] in arms and c["baseline"] in arms],
            "notes": notes + edge_notes(grid, scores)}


def write(data: dict[str, Any], out, results: dict[str, list[dict]]) -> list[dict]:
    """Writes the page (printing it); the reported runs, every arm at a seed before the next."""
    from experiments import pages  # pylint: disable=g-import-not-at-top
    md = pages.write_page(data, out)
    print(md.read_text())
    n = len(data["seeds"])
    return [rs[i] for i in range(n) for rs in results.values()]

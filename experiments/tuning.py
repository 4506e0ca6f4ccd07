"""Fair arms (issue 16): one learning-rate grid for every arm, chosen per arm on validation.

Every arm of a reproduction runs each value of the same grid; the value whose
mean *validation* score over the tuning seeds is best becomes the arm's
choice, and the arm is reported on test at that value on every seed. Where the
tuning seeds are among the reported seeds, their runs at the chosen value are
reused (selection read only their validation figures); the other seeds run
afterwards. The result is the page's ``grid`` field (``experiments/pages.py``).

A run that stops on a non-finite loss (:class:`alternating.NonFiniteError`)
scores nothing: its value is left out of the arm's row and cannot be chosen.

A method hyperparameter the paper leaves free (a loss weight, a schedule's
eta or threshold) is searched jointly with the rate by every tuner
(``method=``); :class:`Candidates` holds the scores and makes the choice for
all of them, and :func:`widen_rounds` grows both grids.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
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


def widened(values: Sequence[float], chosen: Mapping[str, float]) -> list[float]:
    """The values to add when a choice lies at an end of ``values``: one beyond each such
    end, a step of the grid's ratio one further in (so 1e-3, 3e-3, 1e-2 grows to 3e-4 and
    3e-2, and a geometric grid keeps its ratio), to 2 significant digits."""
    values = [float(v) for v in values]
    if len(values) < 2:
        return []
    k = 2 if len(values) >= 3 else 1
    picks, out = {float(v) for v in chosen.values()}, []
    if values[0] in picks:
        out.append(float(f"{values[0] * values[k - 1] / values[k]:.2g}"))
    if values[-1] in picks:
        out.append(float(f"{values[-1] * values[-k] / values[-k - 1]:.2g}"))
    return out


def method_key(value: Any) -> str:
    """A method value's key in a page's ``method`` record: ``str(float)`` for one parameter,
    the values joined by commas for several (:class:`Candidates`)."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(float(x)) for x in value)
    return str(float(value))


def method_text(value: Any, names: Sequence[str] | None = None) -> str:
    """A method value as the page shows it: ``4`` for one parameter, ``z 4, decay 0.05`` for
    several (``names``: their names, in order)."""
    if isinstance(value, (tuple, list)):
        return ", ".join(f"{n} {float(x):g}" for n, x in zip(names or [], value))
    return f"{float(value):g}"


def tune(arms: Sequence[str], values: Sequence[float], seeds: Sequence[int],
         tune_seeds: Sequence[int], run: Callable[..., list[dict]],
         score: Callable[[dict], float], *, metric: str, maximize: bool = True,
         param: str = "learning rate", widen: bool = True, smoke: bool = False,
         method: Mapping[str, Any] | None = None, method_param: str = "lambda",
         snap: Mapping[str, Callable[[float], float | None]] | None = None,
         ) -> tuple[dict[str, Any], dict[str, list[dict]]]:
    """Grid per arm on ``tune_seeds``, then the chosen value on every one of ``seeds``.

    When an arm's best value is an end of the grid and ``widen`` (not in a
    ``smoke`` run), every arm also runs one value beyond that end
    (:func:`widened`) before the choice: ``widen`` rounds at most (``True``:
    one), each adding one value beyond each end then chosen, so a choice may
    still be an end (the page says so).

    A method hyperparameter the paper leaves free is searched jointly with the
    rate, as in :func:`tune_configs`: ``method[arm]`` is the arm's value grid
    (at least 3 values), every rate runs at each value, the arm's choice is its
    best (value, rate) pair (:class:`Candidates`), and a value at an end of its
    grid widens in the same rounds. With ``method``, ``run`` takes the method
    value as a fourth argument (``None`` for an arm without a grid).

    Args:
      arms: the arms, each tuned on its own.
      values: the grid (the same for every arm), at least 3 values.
      seeds: the reported seeds.
      tune_seeds: the seeds whose validation scores choose the value.
      run: ``run(arm, value, seeds[, method value])`` -> one result dict per
        seed, in order.
      score: a result's validation score.
      metric: what ``score`` measures (shown on the page).
      maximize: whether a higher score is better.
      param: the tuned parameter's name.
      widen: the rounds of widening at an end an arm chose (``True``: one).
      smoke: a ``--quick`` run, which may give fewer values (each value of
        each arm is a compiled program; a smoke run checks the plumbing), runs
        each method grid's middle value only and never widens.
      method: ``{arm: method values}`` (or ``{arm: {name: values}}``, several
        parameters: :class:`Candidates`), above.
      method_param: the method hyperparameter's name on the page.
      snap: ``{parameter name: fn}``, the value a widened value runs at
        (:class:`Candidates`).

    Returns:
      ``(grid, results)``: the page's ``grid`` field (with ``widened: {first,
      added}`` when it grew, ``rounds`` when more than one, and with ``method``
      a ``method`` entry as :func:`tune_configs` writes it) and ``{arm:
      [result per seed in seeds]}`` at each arm's chosen value(s).

    Raises:
      ValueError: fewer than 3 values (unless ``smoke``), a method grid of an
        unknown arm or of fewer than 3 values, or an arm whose every value
        diverged.
    """
    from alternating import NonFiniteError  # pylint: disable=g-import-not-at-top
    if len(values) < 3 and not smoke:
        raise ValueError(f"tuning grid {list(values)}: the fair-arms rule needs at least 3 "
                         "values.")
    values = [float(v) for v in values]
    if method and smoke:  # each grid's middle value only
        method = {a: ({n: [list(x)[len(x) // 2]] for n, x in v.items()}
                      if isinstance(v, Mapping) else [list(v)[len(v) // 2]])
                  for a, v in method.items()}
    cands = Candidates({a: a for a in arms}, method, maximize=maximize, param=param,
                       method_param=method_param, smoke=smoke, snap=snap)
    done: dict[str, dict[tuple, dict]] = {arm: {} for arm in arms}
    call = run if method else (lambda arm, v, s, lam: run(arm, v, s))

    def trial(arm, lam, v):
        try:
            runs = call(arm, v, list(tune_seeds), lam)
        except NonFiniteError as e:
            print(f"{arm} {param}={v}" + ("" if lam is None else f" {cands.text(arm, lam)}")
                  + f": non-finite loss ({e}); not a candidate", flush=True)
            return
        done[arm][(lam, v)] = dict(zip(tune_seeds, runs))
        s = [score(r) for r in runs]
        if all(math.isfinite(x) for x in s):
            cands.add(arm, lam, v, s)

    def run_rates(more):
        for v in more:
            for arm in arms:
                for lam in cands.lams[arm]:
                    trial(arm, lam, v)

    run_rates(values)
    values, record = widen_rounds(
        values, 0 if smoke else int(widen),
        lambda vals: {a: c[1] for a, c in cands.choices(vals).items()}, run_rates,
        also=lambda vals: cands.widen_method(vals, lambda arm, lam: [
            trial(arm, lam, v) for v in vals]))
    picks, results = cands.choices(values), {}
    for arm in arms:
        lam, rate = picks[arm]
        have = dict(done[arm][(lam, rate)])
        missing = [s for s in seeds if s not in have]
        if missing:
            have.update(zip(missing, call(arm, rate, missing, lam)))
        results[arm] = [have[s] for s in seeds]
        print(f"{arm}: {param} {rate}" + ("" if lam is None else f" at {cands.text(arm, lam)}")
              + f" (validation {cands.rate_scores(arm, lam, values)})", flush=True)
    grid = {"param": param, "values": values, "metric": metric,
            "scores": {a: cands.rate_scores(a, picks[a][0], values) for a in arms},
            "chosen": {a: c[1] for a, c in picks.items()}}
    if record:
        grid["widened"] = record
    if method:
        grid["method"] = cands.method_record(values)
    return grid, results


class Candidates:
    """The scored candidates of one tuning and the choice among them, shared by :func:`tune`
    and :func:`tune_configs`.

    Each arm reads the runs of one group (``groups[arm]``: its config in
    :func:`tune_configs`, itself in :func:`tune`); a group in ``method`` has a
    grid of method values, the others one value, ``None``. A group's grid is a
    list of values (one method hyperparameter) or ``{name: values}`` (several:
    every combination, a tuple of values in the order of the names, each list
    at least 3 values). An arm's scores are kept per (method value, rate). The
    choice: at each method value the best rate (:func:`experiments.rerun.choose`:
    the first of ties in grid order; a rate with no finite score is no
    candidate), then the value whose best rate scores best; of values that tie,
    the one nearest the middle of the group's first value grid (the config's own
    value; for several parameters the sum of the log distances), so that a weight
    too small to change any prediction does not chase the grid's end.

    ``snap`` maps a parameter's name (``method_param`` for a one-parameter grid)
    to the value a widened value actually runs at (an integer count, a multiple
    of a feedback interval), or ``None`` where none can (a window below 1); a
    widened value that snaps to ``None`` or to a value already tried is not
    added, so that end stops growing.
    """

    def __init__(self, groups: Mapping[str, str], method: Mapping[str, Any] | None,
                 *, maximize: bool = True, param: str = "learning rate",
                 method_param: str = "lambda", smoke: bool = False,
                 snap: Mapping[str, Callable[[float], float | None]] | None = None):
        import itertools  # pylint: disable=g-import-not-at-top
        self.snap = dict(snap or {})
        self.groups, self.maximize = dict(groups), maximize
        self.param, self.method_param = param, method_param
        method = dict(method or {})
        unknown = sorted(set(method) - set(self.groups.values()))
        if unknown:
            raise ValueError(f"method grid for {unknown}: not a config of this tuning; valid: "
                             f"{sorted(set(self.groups.values()))}.")
        self.lams: dict[str, list] = {g: [None] for g in self.groups.values()}
        self.names: dict[str, tuple[str, ...]] = {}  # groups of several parameters
        self.centre: dict[str, Any] = {}
        for g, vals in method.items():
            if isinstance(vals, Mapping):
                if not vals:
                    raise ValueError(f"{g}: an empty method grid; give {{name: values}} with "
                                     "at least one name.")
                self.names[g] = tuple(str(n) for n in vals)
                axes = [[float(v) for v in vals[n]] for n in vals]
                for n, ax in zip(self.names[g], axes):
                    self._check(g, n, ax, smoke)
                self.lams[g] = sorted(itertools.product(*axes))
                self.centre[g] = tuple(ax[len(ax) // 2] for ax in axes)
            else:
                self.lams[g] = [float(v) for v in vals]
                self._check(g, method_param, self.lams[g], smoke)
                self.centre[g] = self.lams[g][len(self.lams[g]) // 2]
        self.method = list(method)
        self.first = {g: list(v) for g, v in self.lams.items()}
        self.added: dict[str, list] = {}
        self.per: dict[str, dict[tuple, list[float]]] = {a: {} for a in self.groups}

    @staticmethod
    def _check(group: str, name: str, values: list[float], smoke: bool) -> None:
        if len(values) < 3 and not smoke:
            raise ValueError(f"{group}: {name} grid {values}: the fair-arms rule needs at "
                             "least 3 values.")
        if len(set(values)) != len(values):
            raise ValueError(f"{group}: {name} grid {values} repeats a value.")

    def text(self, arm: str, lam: Any) -> str:
        """``lam`` with its parameter's name (:func:`method_text`): ``lambda 0.1``."""
        names = self.names.get(self.groups[arm])
        return method_text(lam, names) if names else f"{self.method_param} {lam:g}"

    def add(self, arm: str, lam: Any, rate: float, scores: Sequence[float]) -> None:
        """Validation scores of ``arm`` at (``lam``, ``rate``)."""
        self.per[arm].setdefault((lam, float(rate)), []).extend(float(s) for s in scores)

    def mean(self, arm: str, lam: Any, rate: float) -> float:
        got = self.per[arm][(lam, rate)]
        return sum(got) / len(got)

    def rate_scores(self, arm: str, lam: Any, rates: Sequence[float],
                    digits: int | None = None) -> dict[str, float]:
        """``{str(rate): mean score}`` of ``arm`` at ``lam`` (rates with a score)."""
        return {str(v): (self.mean(arm, lam, v) if digits is None
                         else round(self.mean(arm, lam, v), digits))
                for v in rates if self.per[arm].get((lam, v))}

    def best_rates(self, arm: str, rates: Sequence[float]) -> dict[Any, float]:
        """Each method value's best rate (values with no finite score left out)."""
        from experiments import rerun  # pylint: disable=g-import-not-at-top
        out = {}
        for lam in self.lams[self.groups[arm]]:
            have = [v for v in rates if self.per[arm].get((lam, v))]
            if have:
                out[lam] = rerun.choose({arm: self.rate_scores(arm, lam, have)}, have,
                                        self.maximize)[arm]
        if not out:
            raise ValueError(f"arm {arm!r}: no finite validation score at any {self.param} "
                             f"of {list(rates)} (every run diverged).")
        return out

    def choices(self, rates: Sequence[float]) -> dict[str, tuple[Any, float]]:
        """``{arm: (method value, rate)}``."""
        out = {}
        for arm in self.groups:
            rate = self.best_rates(arm, rates)
            s = {c: self.mean(arm, c, rate[c]) for c in rate}
            top = max(s.values()) if self.maximize else min(s.values())
            tied = [c for c in rate if abs(s[c] - top) <= 1e-12]
            mid = self.centre.get(self.groups[arm])
            lam = min(tied, key=lambda c, mid=mid: _distance(c, mid))
            out[arm] = (lam, rate[lam])
        return out

    def widen_method(self, rates: Sequence[float],
                     run: Callable[[str, Any], Any]) -> bool:
        """One round of widening the method grids: a value chosen at an end of its group's
        grid adds one beyond it (:func:`widened`), ``run(group, value)`` at every rate;
        whether any grid grew. For several parameters, each parameter whose chosen value
        is at an end of the values tried for it adds one beyond it, the others held at the
        choice."""
        picks, grew = self.choices(rates), False
        for g in self.method:
            chosen = {a: picks[a][0] for a, k in self.groups.items() if k == g}
            if g in self.names:
                more = []
                for i, name in enumerate(self.names[g]):
                    axis = sorted({c[i] for c in self.lams[g]})
                    for a, c in chosen.items():
                        more += [c[:i] + (v,) + c[i + 1:]
                                 for v in self._snapped(name, widened(axis, {a: c[i]}), axis)]
                more = [c for c in dict.fromkeys(more) if c not in self.lams[g]]
            else:
                more = self._snapped(self.method_param, widened(self.lams[g], chosen),
                                     self.lams[g])
            for lam in more:
                run(g, lam)
            if more:
                self.lams[g], grew = sorted(self.lams[g] + more), True
                self.added[g] = self.added.get(g, []) + more
        return grew

    def _snapped(self, name: str, values: list[float], tried: Sequence[float]) -> list[float]:
        """``values`` as they run (``snap``), less those that cannot or already ran."""
        fn = self.snap.get(name)
        out = [v if fn is None else fn(v) for v in values]
        return [float(v) for v in out if v is not None and float(v) not in tried]

    def method_record(self, rates: Sequence[float]) -> dict[str, Any]:
        """The grid's ``method`` entry (:func:`tune_configs`); with several parameters also
        ``params: {arm: names}``, and their values as lists."""
        marms = [a for a in self.groups if self.groups[a] in self.method]
        rate = {a: self.best_rates(a, rates) for a in marms}
        picks = self.choices(rates)

        def val(v):
            return list(v) if isinstance(v, tuple) else v
        out = {"param": self.method_param,
               "values": {a: [val(v) for v in self.lams[self.groups[a]]] for a in marms},
               "scores": {a: {method_key(lam): round(self.mean(a, lam, r), 4)
                              for lam, r in rate[a].items()} for a in marms},
               "rates": {a: {method_key(lam): r for lam, r in rate[a].items()} for a in marms},
               "chosen": {a: val(picks[a][0]) for a in marms}}
        several = {a: list(self.names[self.groups[a]]) for a in marms
                   if self.groups[a] in self.names}
        if several:
            out["params"] = several
        grown = {a: {"first": [val(v) for v in self.first[self.groups[a]]],
                     "added": [val(v) for v in self.added[self.groups[a]]]}
                 for a in marms if self.groups[a] in self.added}
        if grown:
            out["widened"] = grown
        limits = method_limits(out, self.snap)
        if limits:
            out["limits"] = limits
        return out


def method_limits(record: Mapping[str, Any],
                  snap: Mapping[str, Callable[[float], float | None]] | None,
                  ) -> dict[str, dict[str, list[float]]]:
    """The chosen values of a ``method`` record that sit at an end no value can go beyond:
    the next value there (:func:`widened`) snaps to nothing or to a value tried
    (:class:`Candidates`' ``snap``). ``{arm: {parameter: [value]}}``; such an end is the
    search's limit, not an untried direction (:func:`edge_notes`)."""
    out: dict[str, dict[str, list[float]]] = {}
    params = record.get("params") or {}
    for arm, v in record["chosen"].items():
        names = params.get(arm)
        for i, name in enumerate(names or [record["param"]]):
            fn = (snap or {}).get(name)
            if fn is None:
                continue
            axis = sorted({float(c[i]) if names else float(c) for c in record["values"][arm]})
            x = float(v[i]) if names else float(v)
            beyond = widened(axis, {arm: x})
            if beyond and all(fn(b) is None or float(fn(b)) in axis for b in beyond):
                out.setdefault(arm, {})[name] = [x]
    return out


def _tag(value: Any) -> str:
    """A method value in a folder name: ``0.1``, or ``4_0.05`` for several parameters."""
    if isinstance(value, tuple):
        return "_".join(f"{x:g}" for x in value)
    return f"{value:g}"


def _distance(value: Any, centre: Any) -> float:
    """Log distance of a method value from its grid's centre (summed over parameters)."""
    if value is None or centre is None:
        return 0.0
    if isinstance(value, tuple):
        return sum(abs(math.log(v / c)) for v, c in zip(value, centre))
    return abs(math.log(value / centre))


def widen_rounds(values: Sequence[float], rounds: int,
                 choose: Callable[[list[float]], Mapping[str, float]],
                 run_more: Callable[[list[float]], Any],
                 also: Callable[[list[float]], bool] | None = None,
                 ) -> tuple[list[float], dict | None]:
    """Widening in rounds, shared by the tuners: each round takes each arm's choice on the
    grid so far (``choose(values)``), adds :func:`widened`'s values for it, runs them
    (``run_more(added values)``), then ``also(values)`` (a method grid's own widening,
    :meth:`Candidates.widen_method`; whether it grew); the rounds stop when nothing grew or
    after ``rounds``. Returns the grid (grown ones sorted) and the page's ``widened`` field
    (:func:`widened_record`; ``None`` when the grid did not grow)."""
    values = [float(v) for v in values]
    first, added, n = list(values), [], 0
    for _ in range(int(rounds)):
        more = widened(values, choose(values))
        if more:
            run_more(more)
            values, added, n = sorted(values + more), added + more, n + 1
        if not (also is not None and also(values)) and not more:
            break
    return values, widened_record(first, added, n)


def widened_record(first: Sequence[float], added: Sequence[float], rounds: int) -> dict | None:
    """A grid's ``widened`` field: ``{first, added}``, and ``rounds`` when more than one."""
    if not added:
        return None
    return {"first": list(first), "added": list(added), **({"rounds": rounds} if rounds > 1
                                                             else {})}


def add_widen_flag(ap: argparse.ArgumentParser, default: int = 1) -> None:
    """``--widen N``: the rounds of widening a grid at an end an arm chose (:func:`tune`)."""
    ap.add_argument("--widen", type=int, default=default,
                    help=f"rounds of widening the grid beyond an end an arm chose, one value "
                         f"a round, stopping when no choice is at an end (default {default})")


def tune_per_seed(arms: Sequence[str], rates: Sequence[float], seeds: Sequence[int],
                  tune_seeds: Sequence[int], run, score, *, metric: str, maximize: bool = True,
                  quick: bool = False, widen: int = 1,
                  method: Mapping[str, Any] | None = None,
                  method_param: str = "lambda",
                  snap: Mapping[str, Callable[[float], float | None]] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, list[dict]], dict]:
    """Fair arms for scripts whose arms are run functions, not configs (one run per seed).

    ``run(arm, lr, seed) -> result`` trains one seed; its result carries the run's
    validation figures (read by ``score``) and its test figures (reported).
    :func:`tune` picks each arm's rate of ``rates`` on the mean validation
    score over ``tune_seeds`` (widening the grid at an end an arm chose, ``widen``
    rounds at most, unless ``quick``) and reports the chosen rate's runs on ``seeds`` (a tuning
    seed's run at the chosen rate is reused). Every run is made once (cached
    by arm, rate, method value and seed).

    ``method`` (``{arm: values}``) searches a method hyperparameter the paper
    leaves free jointly with the rate (:func:`tune`); ``run`` then takes it as a
    fourth argument, ``run(arm, lr, seed, value)`` (``None`` for an arm without
    a grid). A ``quick`` run uses each grid's middle value only.

    Returns:
      ``(grid, results, info)``: the page's ``grid`` field, ``{arm: [result per
      seed]}`` at the chosen rates, and ``{"first": the grid before widening,
      "added": the values added, "runs": runs trained}``.
    """
    cache: dict[tuple, dict] = {}

    def cached(arm, lr, block, lam=None):
        for s in block:
            if (arm, lr, lam, s) not in cache:
                cache[(arm, lr, lam, s)] = run(arm, lr, s) if not method else run(arm, lr, s,
                                                                                   lam)
        return [cache[(arm, lr, lam, s)] for s in block]

    grid, results = tune(arms, rates, list(seeds), list(tune_seeds), cached, score,
                         metric=metric, maximize=maximize,
                         param="Adam learning rate (every phase)", smoke=quick, widen=widen,
                         method=method, method_param=method_param, snap=snap)
    w = grid.get("widened") or {"first": [float(r) for r in rates], "added": []}
    return grid, results, {"first": w["first"], "added": w["added"], "runs": len(cache)}


def method_reading(grid: Mapping[str, Any], arm: str, first: Sequence[float], *,
                   maximize: bool = True, weakest: str = "") -> list[str]:
    """A note on what an arm's method search found (from the page's ``grid``): its
    validation score at each value, its choice, and ``weakest`` when the choice lies below
    the ``first`` grid and beat every value of it (the method is best at a strength weaker
    than any first tried); ``[]`` when the arm searched nothing. For several parameters,
    ``first`` is the first parameter's grid, compared on that parameter."""
    m = grid.get("method") or {}
    if arm not in (m.get("chosen") or {}):
        return []
    names = (m.get("params") or {}).get(arm)
    v, scores = m["chosen"][arm], m["scores"][arm]
    vals = (sorted(tuple(x) for x in m["values"][arm] if method_key(x) in scores) if names
            else sorted(float(x) for x in scores))
    lead = (lambda x: float(x[0])) if names else float
    sign = 1.0 if maximize else -1.0
    beat = all(sign * (scores[method_key(v)] - scores[method_key(x)]) > 0 for x in vals
               if lead(x) in {float(f) for f in first})
    text = ((", ".join(names) if names else m["param"]) + f" search for `{arm}`: validation "
            "score " + ", ".join(f"{scores[method_key(x)]:.3f} at "
                                  + (f"({method_text(x, names)})" if names else f"{x:g}")
                                  for x in vals)
            + f" (each at its best rate); chosen {method_text(v, names)}")
    if beat and lead(v) < min(first) and weakest:
        return [text + ", below the first grid: " + weakest]
    return [text + "."]


def tuning_notes(grid: Mapping[str, Any], info: Mapping[str, Any]) -> list[str]:
    """The widening (if any; a grid that records it says so in its own section) and
    :func:`experiments.rerun.edge_note` (a grid of 3 or more)."""
    out = []
    if info["added"] and "widened" not in grid:
        out.append(f"The first grid {info['first']} had an arm's choice at an end, so every "
                   f"arm also ran {info['added']} (the grid widened once beyond each end an "
                   "arm chose) before the choice shown.")
    return out + (edge_notes(dict(grid)) if len(grid["values"]) >= 3 else [])


def _entry(root: pathlib.Path, run: Mapping[str, Any], cells: int, seeds: list[int],
           index: int, block: str) -> dict[str, Any]:
    """One run's own entry of ``results.json[block]`` (a program's ``per_seed`` holds every
    replica's: the grid program's replicas are seed-major, cell-minor)."""
    res = json.loads((root / run["workdir"] / "results.json").read_text(encoding="utf-8"))
    out, vec = res[block], res.get("vectorized") or {}
    if "per_seed" not in out:
        return out
    if "replicas" in vec:  # one grid program for every (cell, seed)
        if vec["replicas"] != cells * len(seeds):
            raise ValueError(f"{root / run['workdir']}: a grid program of {vec['replicas']} "
                             f"runs, not the {cells} x {len(seeds)} of this grid (a resumed "
                             "sweep); tune in a fresh workdir.")
        i = seeds.index(run["seed"]) * cells + index
    else:  # one cell's seed block
        i = list(vec["seeds"]).index(run["seed"])
    entry = out["per_seed"][i]
    if block == "continual":  # the run's own final_eval is its last matrix row
        last = dict(zip(entry["tasks"], entry["matrix"][-1]))
        for task, acc in last.items():
            got = run["final_eval"].get(f"{task}_val", {}).get("accuracy")
            if got is not None and abs(float(got) - acc) > 1e-4:
                raise ValueError(f"{root / run['workdir']}: replica {i}'s matrix row "
                                 f"({task} {acc}) is not the run's final_eval ({got}).")
    return entry


def tune_configs(configs: Mapping[str, Any], seeds: Sequence[int], workdir: pathlib.Path,
                 score: Callable[[str, dict], float], description: str, *,
                 rates: Sequence[float], prepare: Callable[[Any], Any],
                 block: str | None = None, arms: Mapping[str, str] | None = None,
                 param: str = "lr (every phase)", widen: bool = True,
                 method: Mapping[str, Mapping[str, Any]] | None = None,
                 method_param: str = "lambda") -> dict[str, Any]:
    """Each arm's learning rate of ``rates``, chosen on validation; the page's ``grid`` field.

    The config-driven counterpart of :func:`tune`: per config, one
    ``alternating.sweep.run`` with ``vectorize='grid'`` whose cells differ only
    in every phase's optimizer ``lr`` (all rates and seeds one program), on
    ``prepare(config)`` (a validation split: ``common.validation_config``, or
    ``cl_tuning.validation_config`` for the continual pages). When an arm's
    best rate is an end of the grid and ``widen``, every config also runs one
    rate beyond that end (:func:`widened`; a second sweep in ``<key>.widened``)
    before the choice. A diverged run scores nothing; a rate with no score is
    not a candidate (the best mean validation score, the first of ties in grid
    order).

    A method hyperparameter the paper leaves free (EWC's or LwF's lambda) is
    searched jointly with the rate: ``method[key] = {"values": [...], "set":
    fn(config, value) -> config}`` runs the rate grid at each value (one more
    program per value, in ``<key>@<value>``); the arm's choice is the best
    (value, rate) pair, by its best rate's score at each value (of values that
    tie, the one nearest the middle of the first value grid, the config's own
    value, so that a weight too small to change any prediction does not chase
    the grid's end). With ``widen``, a chosen value at an end
    of the arm's value grid adds one value beyond it (:func:`widened`), run at
    every rate, after the rate widening, in each round of ``widen``.

    Args:
      configs: ``{key: config}``; each config's sweep in ``workdir / key``.
      seeds: the tuning seeds.
      workdir: an empty folder (a resumed grid program cannot be told apart by
        replica).
      score: ``score(arm, entry)``: an arm's validation score (higher is
        better) of one run's ``final_eval`` (``block=None``) or of its own
        entry of ``results.json[block]`` (``'continual'``, ``'merge'``: the
        accuracy matrix, one entry per replica).
      description: what ``score`` measures, for the page.
      rates: the grid, at least 3 values.
      prepare: the tuning copy of a config.
      block: where a run's scored figures are (above).
      arms: ``{arm: config key}`` where several arms read one config's runs
        (the merging evaluator's methods); default: each config is one arm.
      param: the tuned parameter's name on the page.
      widen: the rounds of widening (``True``: one): each round adds one value
        beyond each end an arm chose (rates, then method values), and the
        rounds stop when no choice is at an end.
      method: ``{config key: {"values", "set"}}``: the method-hyperparameter
        grids (at least 3 values each), above.
      method_param: the method hyperparameter's name on the page.

    Returns:
      The ``grid`` field: ``param``, ``values`` (the rates), ``metric``,
      ``scores`` (each arm's mean validation score per rate, at its chosen
      method value), ``chosen`` (rates), ``widened`` when the rate grid grew,
      (its ``rounds`` when more than one), and with ``method`` a ``method``
      entry: ``{"param", "values": {arm:
      [...]}, "scores": {arm: {value: its best rate's score}}, "rates": {arm:
      {value: that rate}}, "chosen": {arm: value}}`` (plus ``widened: {arm:
      {first, added}}`` when an arm's value grid grew).

    Raises:
      ValueError: fewer than 3 rates or method values, a ``method`` key that
        is not a config, or an arm with no finite score at all.
    """
    import copy  # pylint: disable=g-import-not-at-top
    from alternating import sweep  # pylint: disable=g-import-not-at-top
    arms = dict(arms or {k: k for k in configs})
    seeds, values = [int(s) for s in seeds], [float(r) for r in rates]
    if len(values) < 3:
        raise ValueError(f"tuning grid {values}: the fair-arms rule needs at least 3 values.")
    method = dict(method or {})
    cands = Candidates(arms, {k: m["values"] for k, m in method.items()}, param="rate",
                       method_param=method_param)
    prepared = {key: prepare(cfg) for key, cfg in configs.items()}

    def grid_sweep(key: str, lam: float | None, grid: list[float], suffix: str = "") -> None:
        vcfg = prepared[key]
        if lam is not None:
            vcfg = method[key]["set"](copy.deepcopy(vcfg), lam)
        cells = [{f"phases.{p}.optimizer.lr": r for p in vcfg.phases} for r in grid]
        root = pathlib.Path(workdir) / (key + ("" if lam is None else "@" + _tag(lam)) + suffix)
        out = sweep.run(vcfg, root, cells=cells, seeds=seeds, vectorize="grid", print_fn=None)
        ids = [c["id"] for c in out["cells"]]
        for run in out["runs"]:
            if run["final_eval"] is None:  # a diverged run scores nothing
                continue
            i = ids.index(run["cell"])
            entry = (run["final_eval"] if block is None
                     else _entry(root, run, len(grid), seeds, i, block))
            for arm, k in arms.items():
                if k == key:
                    cands.add(arm, lam, grid[i], [score(arm, entry)])

    rounds = [0]

    def run_rates(more: list[float]) -> None:  # a round's rates, at every method value
        rounds[0] += 1
        for key in configs:
            for lam in cands.lams[key]:
                grid_sweep(key, lam, more,
                           ".widened" + (str(rounds[0]) if rounds[0] > 1 else ""))

    for key in configs:
        for lam in cands.lams[key]:
            grid_sweep(key, lam, values)
    values, record = widen_rounds(  # each round: the rates, then the method values
        values, int(widen), lambda vals: {a: c[1] for a, c in cands.choices(vals).items()},
        run_rates, also=lambda vals: cands.widen_method(
            vals, lambda key, lam: grid_sweep(key, lam, vals)))
    picks = cands.choices(values)
    scores = {a: cands.rate_scores(a, picks[a][0], values, digits=4) for a in arms}
    for arm, s in scores.items():
        print(f"{arm}: validation {s}" + (f" at {cands.text(arm, picks[arm][0])}"
                                          if picks[arm][0] is not None else ""), flush=True)
    out = {"param": param, "values": values,
           "metric": f"{description}, mean over seeds {seeds}", "scores": scores,
           "chosen": {a: c[1] for a, c in picks.items()}}
    if record:
        out["widened"] = record
    if method:
        out["method"] = cands.method_record(values)
    return out


def tuning_runs(grid: Mapping[str, Any] | None, arms: Sequence[str],
                tune_seeds: Sequence[int]) -> int:
    """The runs of a :func:`tune_configs` grid: every arm's rates at each of its method values
    (one where it has no method grid), on every tuning seed."""
    if not grid:
        return 0
    lam = (grid.get("method") or {}).get("values", {})
    return sum(len(lam.get(a, [None])) for a in arms) * len(grid["values"]) * len(tune_seeds)


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
    m = grid.get("method") or {}
    for a, v in (m.get("chosen") or {}).items():
        names = (m.get("params") or {}).get(a)
        for i, name in enumerate(names or [m["param"]]):
            axis = sorted({float(c[i]) if names else float(c) for c in m["values"][a]})
            x = float(v[i]) if names else float(v)
            if x in (m.get("limits") or {}).get(a, {}).get(name, []):
                continue  # no value beyond it can run (method_limits)
            if x in (axis[0], axis[-1]):
                at.append(f"`{a}` ({name}, {'smallest' if x == axis[0] else 'largest'}, "
                          f"{x:g})")
    if not at:
        return []
    return ["Chosen at an end of the grid, so a value beyond it might have scored better on "
            f"{scores} (not tried): " + ", ".join(at) + "."]


def run_name(arm: str, lr: float, key: str = "", value: Any = None,
             default: Any = None) -> str:
    """A tuning run's folder name, ``<arm>_lr<lr>`` plus ``_<key><value>`` when a method value
    other than the config's ``default`` is set (so the default's runs keep their names); a
    value of several parameters is joined by ``_``."""
    return f"{arm}_lr{lr:g}" + ("" if value is None or value == default
                                else f"_{key}{_tag(value)}")


def variant(arm: str, steps: int, lr: float | None = None, val: bool = False) -> str:
    """A config variant string ``<arm>,steps=N[,lr=X][,val]``."""
    return (f"{arm},steps={steps}" + (f",lr={lr!r}" if lr is not None else "")
            + (",val" if val else ""))


def cli(doc: str, argv, *, seeds: int, steps: int, quick_steps: int, arms: Sequence[str],
        prefix: str, more: Callable[[argparse.ArgumentParser], None] | None = None):
    """The flags the vectorized page scripts share; ``(args, seeds, out dir, workdir)``.

    ``--seeds`` (:func:`seeds_from`), ``--steps``, ``--quick`` (2 seeds, at most
    ``quick_steps`` steps, a temp dir), ``--arms``, ``--one-run-per-seed``, ``--out``,
    ``--workdir``, ``--widen`` (:func:`add_widen_flag`); ``more(parser)`` adds a script's
    own. With vectorized seeds
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
    add_widen_flag(ap)
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

"""Results pages rendered from their committed JSON, by one function.

A reproduction script collects its per-seed figures into one dict (the
*page data*), and :func:`write_page` writes it twice beside each other:
``docs/results/<name>.json`` (the data) and ``docs/results/<name>.md``
(:func:`render_page` of that data). Every verdict on the page is computed
from the per-seed values in the JSON by the one rule of
:mod:`alternating.verdict` (paired differences over the same seeds, a 95%
t interval, the minimum detectable effect at power 0.8), so a page states
no verdict its data do not carry, and ``tests/pages_test.py`` re-renders
every page from its JSON and compares, so a page cannot drift from its data.

The page data (JSON-serializable; ``FORMAT`` marks it)::

    name         file stem of the page
    title        the page's heading
    intro        markdown paragraphs: the claim and its source, the setup,
                 each deviation from the paper
    command      the command that reproduces the page
    provenance   :func:`provenance`: date, machine, versions, wall time, runs
    seeds        the seeds every arm ran, in order (at least 2; 5 or more
                 for a verdict a reader can use)
    metrics      {key: description}; the first key is the primary metric
    arms         {arm: {metric key: [one value per seed, in seed order]}}
    grid         optional: {param, values, metric, scores: {arm: {value:
                 score}}, chosen: {arm: value}, widened: {first, added}
                 (when the grid grew at an end), method: a method
                 hyperparameter searched jointly with the rate
                 (``experiments/tuning.py:tune_configs``)}, the tuning each
                 arm got
    comparisons  [{name, treatment, baseline, metric, claim}], claim
                 'greater' or 'less' (what the paper predicts for treatment
                 minus baseline)
    notes        markdown paragraphs after the tables

Render one page from the command line:
``python -m experiments.pages docs/results/<name>.json`` rewrites its ``.md``.
"""

from __future__ import annotations

import datetime
import json
import math
import pathlib
import sys
from typing import Any, Mapping

FORMAT = "alternating-results-page/1"
REQUIRED = ("name", "title", "intro", "command", "provenance", "seeds", "metrics",
            "arms", "comparisons", "notes")
OPTIONAL = ("grid", "format")


def provenance(wall_seconds: float, n_runs: int) -> dict[str, Any]:
    """When, where and how long: the page's "Reproduce" facts, as data."""
    from experiments.multimodal import machine  # pylint: disable=g-import-not-at-top
    return {"date": f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
            "machine": machine(), "wall_seconds": round(float(wall_seconds), 1),
            "runs": int(n_runs)}


def check(data: Mapping[str, Any]) -> None:
    """Refuses page data that cannot carry its verdicts, naming the field at fault.

    Raises:
        ValueError: a missing or unknown field, an arm whose metric lists do
            not hold one value per seed, a comparison naming an unknown arm
            or metric, or an unknown claim.
    """
    missing = [k for k in REQUIRED if k not in data]
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if missing or unknown:
        raise ValueError(f"results page data: missing fields {missing}, unknown fields "
                         f"{unknown}; valid fields: {list(REQUIRED + OPTIONAL)}.")
    n, metrics, arms = len(data["seeds"]), list(data["metrics"]), data["arms"]
    if n < 2:
        raise ValueError(f"results page {data['name']!r}: {n} seed(s); the verdict rule "
                         "needs at least 2 (use 5 or more).")
    for arm, values in arms.items():
        for key, per_seed in values.items():
            if key not in metrics:
                raise ValueError(f"results page {data['name']!r}: arm {arm!r} has metric "
                                 f"{key!r}; declared metrics: {metrics}.")
            if len(per_seed) != n:
                raise ValueError(
                    f"results page {data['name']!r}: arm {arm!r} metric {key!r} has "
                    f"{len(per_seed)} values for {n} seeds {list(data['seeds'])}; every arm "
                    "needs one value per seed, in seed order.")
    for c in data["comparisons"]:
        for role in ("treatment", "baseline"):
            if c[role] not in arms:
                raise ValueError(f"results page {data['name']!r}: comparison {c['name']!r} "
                                 f"names {role} arm {c[role]!r}; arms: {sorted(arms)}.")
            if c["metric"] not in arms[c[role]]:
                raise ValueError(f"results page {data['name']!r}: comparison {c['name']!r} "
                                 f"uses metric {c['metric']!r}, which arm {c[role]!r} lacks "
                                 f"(it has {sorted(arms[c[role]])}).")
        if c.get("claim", "greater") not in ("greater", "less"):
            raise ValueError(f"results page {data['name']!r}: comparison {c['name']!r} has "
                             f"claim {c['claim']!r}; valid claims: ['greater', 'less'].")


def verdicts(data: Mapping[str, Any]) -> list[Any]:
    """The verdict rule applied to every comparison of the page, in order."""
    from alternating import verdict  # pylint: disable=g-import-not-at-top
    arms = data["arms"]
    return [verdict.compare(arms[c["treatment"]][c["metric"]], arms[c["baseline"]][c["metric"]],
                            claim=c.get("claim", "greater"), name=c["name"])
            for c in data["comparisons"]]


def _stats(values: list[float]) -> str:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return f"{mean:.4g} ± {sd:.2g} [{min(values):.4g}, {max(values):.4g}]"


def _arms_table(data: Mapping[str, Any]) -> list[str]:
    metrics = [m for m in data["metrics"] if any(m in a for a in data["arms"].values())]
    lines = ["| arm | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for arm, values in data["arms"].items():
        cells = [_stats(values[m]) if m in values else "" for m in metrics]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _grid(grid: Mapping[str, Any]) -> list[str]:
    values = [str(v) for v in grid["values"]]
    lines = [f"## Tuning: {grid['param']} chosen per arm on {grid['metric']}", "",
             "| arm | " + " | ".join(values) + " | chosen |",
             "|---|" + "---|" * (len(values) + 1)]
    for arm, scores in grid["scores"].items():
        cells = [f"{scores[v]:.4g}" if v in scores else "" for v in values]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {grid['chosen'][arm]} |")
    w = grid.get("widened")  # experiments/tuning.py:tune
    if w and w.get("rounds", 1) > 1:
        lines += ["", f"The first grid {w['first']} had an arm's choice at an end, so every "
                  f"arm also ran {w['added']}: {w['rounds']} rounds, each adding one value "
                  "beyond each end an arm then chose, until no choice was at an end or the "
                  "rounds ran out, before the choice shown."]
    elif w:
        lines += ["", f"The first grid {w['first']} had an arm's choice at an end, so every "
                  f"arm also ran {w['added']} (the grid widened once beyond each end an arm "
                  "chose) before the choice shown."]
    m = grid.get("method")  # experiments/tuning.py:tune_configs, a method hyperparameter
    if m:
        from experiments import tuning  # pylint: disable=g-import-not-at-top
        one = len(m["chosen"]) == 1
        what = "value" if m.get("params") else m["param"]
        lines += ["", f"The arm{'' if one else 's'} {', '.join(f'`{a}`' for a in m['chosen'])} "
                  f"also searched {'its' if one else 'their'} {m['param']} jointly with the "
                  "rate: the scores above are at the "
                  f"{what} chosen below, and below, each {what}'s best validation "
                  "score over the rates (that rate in parentheses).", "",
                  f"| arm | {m['param']}: score (rate) | chosen |", "|---|---|---|"]
        params = m.get("params") or {}  # arms searching several parameters at once
        for arm, per in m["scores"].items():
            names = params.get(arm)
            cells = "; ".join(
                f"{tuning.method_text(v, names)}: " + (
                    f"{per[k]:.4g} ({m['rates'][arm][k]:g})" if k in per else "diverged")
                for v in m["values"][arm] for k in [tuning.method_key(v)])
            lines.append(f"| {arm} | {cells} | {tuning.method_text(m['chosen'][arm], names)} |")
        for arm, names in params.items():
            if len(names) > 1:
                lines += ["", f"`{arm}` searched {', '.join(names)} together: every "
                          "combination of their first grids, each at every rate."]
        for arm, lim in (m.get("limits") or {}).items():
            lines += ["", f"`{arm}`: " + "; ".join(
                f"{name} {x:g}" for name, xs in lim.items() for x in xs)
                + " is as far as that end can go (the next value beyond it cannot run), so "
                "the choice there is the search's limit, not an untried direction."]
        for arm, w in (m.get("widened") or {}).items():
            if arm in params:
                lines += ["", f"`{arm}`: the choice had a parameter at an end of the values "
                          "tried for it, so it also ran "
                          + "; ".join(f"({tuning.method_text(v, params[arm])})"
                                      for v in w["added"])
                          + " (one value beyond that end at a time, the other parameters at "
                          "the choice) before the choice shown."]
                continue
            lines += ["", f"`{arm}`: the first {m['param']} grid {w['first']} had the choice "
                      f"at an end, so it also ran {w['added']} (one value beyond the end at a "
                      "time) before the choice shown."]
    return lines + [""]


def render_page(data: Mapping[str, Any]) -> str:
    """The page's markdown, a pure function of its data (no clock, no machine)."""
    from alternating import verdict  # pylint: disable=g-import-not-at-top
    check(data)
    seeds, p = list(data["seeds"]), data["provenance"]
    lines = [f"# {data['title']}", ""]
    for para in data["intro"]:
        lines += [para, ""]
    lines += [f"Seeds {seeds} for every arm; the data of this page: "
              f"[{data['name']}.json]({data['name']}.json).", ""]
    if data.get("grid"):
        lines += _grid(data["grid"])
    lines += ["## Arms", "", "Per metric: mean ± sample std [min, max] over the seeds.", ""]
    lines += [f"* `{k}`: {v}" for k, v in data["metrics"].items()] + [""]
    lines += _arms_table(data) + [""]
    found = verdicts(data)
    if found:
        lines += ["## Verdicts", "",
                  "The rule of `alternating/verdict.py`: paired per-seed differences "
                  "(treatment minus baseline), their mean and 95% t interval, the seeds whose "
                  "sign agrees with the claim, and the smallest effect the design detects "
                  "with power 0.8. Confirmed: the interval excludes zero on the claimed "
                  "side; contradicted: on the other side; inconclusive: it contains zero.", ""]
        lines += verdict.render_table(found).splitlines() + [""]
    for para in data["notes"]:
        lines += [para, ""]
    m = p["machine"]
    lines += ["## Reproduce", "", "```", data["command"], "```", "",
              f"* date: {p['date']}",
              f"* machine: nproc = {m['nproc']}, CPU: {m['cpu']}, {m['platform']}",
              f"* python {m['python']}, jax {m['jax']}, devices: {m['devices']}",
              f"* total wall time: {p['wall_seconds']:.0f} s for {p['runs']} runs "
              "(shared, noisy machine)", ""]
    return "\n".join(lines)


def write_page(data: Mapping[str, Any], out_dir: str | pathlib.Path) -> pathlib.Path:
    """Writes ``<name>.json`` and its rendering ``<name>.md``; returns the .md path."""
    data = {"format": FORMAT, **data}
    text = render_page(data)  # checks first: nothing is written for bad data
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{data['name']}.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    md = out / f"{data['name']}.md"
    md.write_text(text, encoding="utf-8")
    return md


def pages(results_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Every page-data JSON (``format`` = :data:`FORMAT`) in a directory."""
    found = []
    for path in sorted(pathlib.Path(results_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("format") == FORMAT:
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    for arg in argv:
        path = pathlib.Path(arg)
        data = json.loads(path.read_text(encoding="utf-8"))
        path.with_suffix(".md").write_text(render_page(data), encoding="utf-8")
        print(f"rendered {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

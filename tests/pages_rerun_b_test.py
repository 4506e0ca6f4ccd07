"""The reruns of CCL, AdvMoE, AReaL and DUMP write results pages from their JSON.

Each quick run is smoke-sized (a few steps, two seeds, one learning rate): it
checks that the page data is written beside the page, that the page is the
rendering of that data, that every arm carries one value per seed, and that
the grid records each arm's choice.
"""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments import pages, rerun  # noqa: E402


def _page(out: pathlib.Path, name: str, seeds=(0, 1)) -> dict:
    data = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
    assert (out / f"{name}.md").read_text(encoding="utf-8") == pages.render_page(data)
    assert data["seeds"] == list(seeds)
    for arm, values in data["arms"].items():
        for key, per_seed in values.items():
            assert len(per_seed) == len(seeds), (arm, key)
    assert set(data["grid"]["chosen"]) == set(data["grid"]["scores"])
    return data


def test_choose_takes_each_arms_best_validation_score_and_names_a_gap():
    scores = {"a": {"0.1": 0.5, "0.3": 0.7, "1.0": 0.6}, "b": {"0.1": 0.9, "0.3": 0.2,
                                                              "1.0": 0.9}}
    assert rerun.choose(scores, [0.1, 0.3, 1.0]) == {"a": 0.3, "b": 0.1}  # ties: the first
    assert rerun.choose(scores, [0.1, 0.3, 1.0], higher=False) == {"a": 0.1, "b": 0.3}
    with pytest.raises(ValueError, match=r"arm 'a' has no validation score for \[3.0\]"):
        rerun.choose({"a": {"1.0": 0.5}}, [1.0, 3.0])


def test_one_seed_page_says_no_verdict(tmp_path):
    md = rerun.write_one_seed("x", "X", ["intro"], rerun.table(["arm", "seed"], [["a", 0]]),
                              "cmd", tmp_path).read_text()
    assert rerun.NO_VERDICT in md and "| a | 0 |" in md and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_dump_quick_page(tmp_path):
    from experiments import dump
    result = dump.main(["--quick", "--seeds", "0", "1", "--arms", "uniform", "--lrs", "0.001",
                        "--steps", "6", "--eval-every", "3", "--out", str(tmp_path / "out"),
                        "--workdir", str(tmp_path / "w")])
    data = _page(tmp_path / "out", "dump")
    assert data["grid"]["chosen"] == {"uniform": 0.001} and len(result["runs"]) == 2
    shares = data["arms"]["uniform"]["share_easiest"]
    assert all(0.0 <= s <= 1.0 for s in shares)


@pytest.mark.slow
def test_areal_quick_page(tmp_path):
    from experiments import areal
    areal.main(["--quick", "--seeds", "0", "1", "--steps", "8", "--lrs", "0.003", "--etas", "8",
                "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w")])
    data = _page(tmp_path / "out", "areal")
    assert set(data["arms"]) == {"ppo_eta8", "decoupled_eta8"}
    # Without eta 0 only the same-staleness comparison remains.
    assert [c["name"] for c in data["comparisons"]] == [
        "eta 8: decoupled vs standard PPO (same staleness)"]


@pytest.mark.slow
def test_advmoe_quick_page(tmp_path):
    from experiments import advmoe
    result = advmoe.main(["--quick", "--seeds", "0", "1", "--steps", "2", "--lrs", "0.001",
                          "--arms", "dense", "joint", "--out", str(tmp_path / "out"),
                          "--workdir", str(tmp_path / "w")])
    data = _page(tmp_path / "out", "advmoe")
    assert list(data["arms"]) == ["dense", "joint"]
    assert [c["name"] for c in data["comparisons"]] == ["joint MoE vs dense"]
    assert all(0.0 <= r["val_robust"] <= 1.0 for r in result["runs"])
    assert "soft-gated" in " ".join(data["intro"])


@pytest.mark.slow
def test_ccl_quick_page(tmp_path):
    from experiments import ccl
    result = ccl.main(["--quick", "--datasets", "digits", "--lrs", "0.001",
                       "--out", str(tmp_path)])
    data = _page(tmp_path, "ccl")
    assert set(data["arms"]["cyclical"]) == {"digits_final", "digits_at_best_val"}
    assert {r["lr"] for r in result["runs"]} == {0.001}


def test_tune_grid_widens_once_at_an_end_and_keeps_every_run():
    made = []

    def run_values(lrs):
        made.append(list(lrs))
        return [{"arm": a, "lr": lr, "val": -abs(lr - best)}
                for a, best in (("low", 1e-5), ("mid", 3e-3)) for lr in lrs]

    def scores_of(runs, lrs):
        return {a: {str(lr): r["val"] for lr in lrs for r in runs
                    if (r["arm"], r["lr"]) == (a, lr)} for a in ("low", "mid")}

    grid, runs = rerun.tune_grid([1e-3, 3e-3, 1e-2], run_values, scores_of, "lr", "val")
    assert made == [[1e-3, 3e-3, 1e-2], [3e-4]] and len(runs) == 8
    assert grid["values"] == [3e-4, 1e-3, 3e-3, 1e-2]
    assert grid["chosen"] == {"low": 3e-4, "mid": 3e-3}
    assert grid["widened"] == {"first": [1e-3, 3e-3, 1e-2], "added": [3e-4]}
    made.clear()  # rounds: "low" (best 1e-5) keeps moving down until they run out
    grid, runs = rerun.tune_grid([1e-3, 3e-3, 1e-2], run_values, scores_of, "lr", "val",
                                 widen=3)
    assert made == [[1e-3, 3e-3, 1e-2], [3e-4], [1e-4], [3e-5]] and len(runs) == 12
    assert grid["widened"] == {"first": [1e-3, 3e-3, 1e-2], "added": [3e-4, 1e-4, 3e-5],
                               "rounds": 3}
    assert grid["chosen"]["low"] == 3e-5  # still the bottom: the page's edge note says so
    made.clear()
    grid, _ = rerun.tune_grid([1e-3], run_values, scores_of, "lr", "val")  # --quick: one value
    assert made == [[1e-3]] and "widened" not in grid

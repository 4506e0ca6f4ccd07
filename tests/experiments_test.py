"""Experiment scripts end to end, in-process, on a few steps."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import multimodal  # noqa: E402


@pytest.mark.slow
def test_multimodal_quick_writes_every_arm(tmp_path):
    out = tmp_path / "out"
    result = multimodal.main(["--quick", "--steps", "20", "--out", str(out),
                              "--workdir", str(tmp_path / "runs")])

    grid = {(arm, embed) for arm in multimodal.ARMS for embed in multimodal.EMBEDS}
    assert set(result["summary"]) == grid
    assert len(result["runs"]) == len(grid)  # --quick: one seed
    for run in result["runs"]:
        for m in multimodal.MODALITIES:
            assert 0.0 <= run[m]["accuracy"] <= 1.0, run

    md = (out / "multimodal.md").read_text()
    assert (out / "multimodal.png").stat().st_size > 0
    table = md.split("## Results", 1)[1].split("![", 1)[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")][1:]
    rows = {(cells[0].strip(), cells[1].strip()): cells for cells in rows}
    assert set(rows) == {(arm, "yes" if embed else "no") for arm, embed in grid}
    for (arm, _), cells in rows.items():
        for i, m in enumerate(multimodal.MODALITIES):
            cell = cells[2 + 2 * i].strip()
            if multimodal.trains(arm, m):
                mean = float(cell.split()[0])  # "mean ± std [min, max]", in %
                assert 0.0 <= mean <= 100.0
            else:
                assert cell == "-"  # an untrained modality is not a result
    assert "one seed" in md.lower()  # no verdict drawn from a single seed
    assert "experiments/multimodal.py --quick" in md


@pytest.mark.slow
def _page(out, name):
    """A page's JSON, after checking that its markdown is the JSON rendered."""
    from experiments import pages
    data = json.loads((out / f"{name}.json").read_text())
    assert (out / f"{name}.md").read_text() == pages.render_page(data)
    return data


def test_mean_teacher_quick_writes_every_arm(tmp_path):
    from experiments import mean_teacher
    result = mean_teacher.main(["--quick", "--steps", "20", "--out", str(tmp_path / "out"),
                                "--workdir", str(tmp_path / "runs")])
    assert set(result["summary"]) == set(mean_teacher.HEADLINE)
    for run in result["runs"]:
        assert set(run["acc"]) >= {mean_teacher.HEADLINE[run["arm"]]}
        assert all(0.0 <= a <= 1.0 for a in run["acc"].values()), run
    data = _page(tmp_path / "out", "mean_teacher")
    assert data["seeds"] == [0, 1] and set(data["grid"]["chosen"]) == set(mean_teacher.HEADLINE)


def test_run_grid_orders_runs_by_seed_then_cell_either_way():
    from experiments import common
    one = lambda cell, seed: (cell, seed)
    block = lambda cell, seeds: [(cell, s) for s in seeds]
    want = [("a", 3), ("b", 3), ("a", 4), ("b", 4)]
    assert common.run_grid("ab", [3, 4], vectorized=False, run_seeds=None, run_one=one) == want
    assert common.run_grid("ab", [3, 4], vectorized=True, run_seeds=block, run_one=None) == want


def test_mean_teacher_seeds_in_one_program_equal_one_run_per_seed(tmp_path):
    """The script's default: an arm's seeds in one num_seeds program (here the dual
    arm: two phases, two EMA teachers)."""
    from experiments import mean_teacher
    both = mean_teacher.run_seeds("dual", [3, 4], 20, tmp_path / "vec")
    one = mean_teacher.run_one("dual", 4, 20, tmp_path / "one")
    assert [r["seed"] for r in both] == [3, 4] and set(both[1]["acc"]) == set(one["acc"])
    for k, acc in one["acc"].items():
        assert both[1]["acc"][k] == pytest.approx(acc, abs=1e-6), k
    assert both[0]["acc"] != one["acc"]  # the other seed's replica is another run
    with pytest.raises(ValueError, match="not consecutive"):
        mean_teacher.run_seeds("dual", [3, 5], 20, tmp_path / "gap")


@pytest.mark.slow
def test_advmoe_seeds_in_one_program_equal_one_run_per_seed(tmp_path):
    """The script's default for the alternating arm (router and experts in turn, PGD inside)."""
    from experiments import advmoe
    both = advmoe.run_seeds("alternating", [0, 1], 20, tmp_path / "vec")
    one = advmoe.run_one("alternating", 1, 20, tmp_path / "one")
    assert [r["seed"] for r in both] == [0, 1] and both[1]["params"] == one["params"]
    for k in advmoe.METRICS:
        assert both[1][k] == pytest.approx(one[k], abs=1e-6), k


def test_areal_seeds_in_one_program_equal_one_run_per_seed(tmp_path):
    """The script's default (a snapshot ring in extras, samples drawn from each replica's rng)."""
    from experiments import areal
    both = areal.run_seeds("ppo", 8, [0, 1], 20, tmp_path / "vec")
    one = areal.run_one("ppo", 8, 1, 20, tmp_path / "one")
    assert [r["seed"] for r in both] == [0, 1] and set(both[1]["curve"]) == set(one["curve"])
    for step, reward in one["curve"].items():
        assert both[1]["curve"][step] == pytest.approx(reward, abs=1e-6), step
    assert both[0]["curve"] != one["curve"]  # the other seed's replica is another run


def test_rt_seeds_in_one_program_equal_one_run_per_seed(tmp_path):
    """The script's default: one program trains the seeds, each replica is tested alone."""
    from experiments import rt
    both = rt.run_seeds("sc", [0, 1], 20, tmp_path / "vec")
    one = rt.run_one("sc", 1, 20, tmp_path / "one")
    assert [r["seed"] for r in both] == [0, 1]
    for k in rt.METRICS:
        assert both[1][k] == pytest.approx(one[k], abs=1e-6), k
    assert both[0]["prop_mae"] != one["prop_mae"]  # the other seed's replica is another run


@pytest.mark.slow
def test_advmoe_quick_writes_every_arm(tmp_path):
    from experiments import advmoe
    result = advmoe.main(["--quick", "--steps", "4", "--out", str(tmp_path / "out"),
                          "--workdir", str(tmp_path / "runs")])
    assert [r["arm"] for r in result["runs"]] == ["dense", "joint", "alternating"]
    for run in result["runs"]:
        assert 0.0 <= run["robust"] <= 1.0 and 0.0 <= run["clean"] <= 1.0, run
    md = (tmp_path / "out" / "advmoe.md").read_text()
    assert "One seed only: no verdict." in md and "| alternating | 0 |" in md


@pytest.mark.slow
def test_areal_quick_eta_zero_makes_the_objectives_agree(tmp_path):
    from experiments import areal
    result = areal.main(["--quick", "--steps", "12", "--out", str(tmp_path / "out"),
                         "--workdir", str(tmp_path / "runs")])
    final = {(r["objective"], r["eta"]): r["final"] for r in result["runs"]}
    assert set(final) == {(o, e) for o in ("ppo", "decoupled") for e in (0, 8)}
    # eta = 0: behaviour == proximal policy and the weight is 1, so the runs are identical.
    assert final[("ppo", 0)] == final[("decoupled", 0)]
    md = (tmp_path / "out" / "areal.md").read_text()
    assert "One seed only: no verdict." in md and "| decoupled | 8 | 0 |" in md


@pytest.mark.slow
def test_admm_quick_reports_both_arms(tmp_path):
    from experiments import admm
    result = admm.main(["--quick", "--steps", "20", "--out", str(tmp_path / "out"),
                        "--workdir", str(tmp_path / "runs")])
    arms = {r["arm"]: r for r in result["runs"]}
    assert set(arms) == {"admm", "sgd"}
    assert arms["admm"]["violation"] >= 0.0 and np.isfinite(arms["admm"]["network_objective"])
    assert all(np.isfinite(r["final"]) for r in result["runs"])
    data = _page(tmp_path / "out", "admm")
    assert set(data["arms"]) == {"admm", "sgd"}


@pytest.mark.slow
def test_rt_quick_reports_both_arms(tmp_path):
    from experiments import rt
    result = rt.main(["--quick", "--steps", "6", "--out", str(tmp_path / "out"),
                      "--workdir", str(tmp_path / "runs")])
    assert [r["arm"] for r in result["runs"]] == list(rt.ARMS) * 2
    assert all(-1.0 <= r["spearman"] <= 1.0 for r in result["runs"] if r["arm"] != "predict_only")
    data = _page(tmp_path / "out", "rt")
    assert set(data["arms"]) == set(rt.ARMS)


def test_the_command_on_a_results_page_drops_the_scratch_workdir():
    from experiments import common
    argv = ["--seeds", "0", "1", "--workdir", "scratch/a", "--workdir=scratch/b", "--quick"]
    assert common.public_args(argv) == ["--seeds", "0", "1", "--quick"]
    assert common.command("advmoe.py", argv) == (
        ".venv/bin/python experiments/advmoe.py --seeds 0 1 --quick")
    lines = common.provenance("cmd", 12.4, 3)
    assert lines[:5] == ["## Reproduce", "", "```", "cmd", "```"]
    assert lines[-1] == "* total wall time: 12 s for 3 runs (shared, noisy machine)"


@pytest.mark.slow
def test_multimodal_vectorized_seeds_equal_one_run_per_seed(tmp_path):
    """The sweep's default: consecutive seeds of an arm in one num_seeds program."""
    both = multimodal.run_seeds("alternating", True, [0, 1], 20, tmp_path / "vec")
    one = multimodal.run_one("alternating", True, 1, 20, tmp_path / "one")
    assert [r["seed"] for r in both] == [0, 1]
    for m in multimodal.MODALITIES:
        for k in ("accuracy", "loss"):
            np.testing.assert_allclose(both[1][m][k], one[m][k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="not consecutive"):
        multimodal.run_seeds("alternating", True, [0, 2], 20, tmp_path / "gap")


def test_multimodal_pages_reuse_tuning_and_shared_runs(tmp_path, monkeypatch):
    """--tuned skips the validation runs whose scores a page holds; multimodal_optimizer tunes
    only its own arm and reads the runs it shares with multimodal.py from the same --workdir
    (training stubbed)."""
    import alternating
    from experiments import multimodal_optimizer, pages
    calls = []

    def fake_train(cfg, workdir, **_):
        lr = next(iter(cfg.phases.values())).optimizer.lr
        calls.append(("val" if "images_val" in cfg.eval else "test", cfg.seed, lr))
        acc = 0.9 - abs(lr - 3e-3) * 10 + 0.01 * cfg.seed
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
            json.dump({"steps": cfg.total_steps, "wall_time_s": 1.0, "final_eval": {
                k: {"accuracy": acc, "loss": 1 - acc} for k in cfg.eval}}, f)

    monkeypatch.setattr(alternating, "train_and_evaluate", fake_train)
    lrs = [1e-3, 3e-3, 1e-2]
    earlier = {"images_only": [0.95, 0.97], "signals_only": [0.5, 0.6, 0.7],  # images_only:
               "alternating": [0.7, 0.6, 0.5]}  # no score at 1e-2 (the fake's is 0.83)
    tuned = tmp_path / "earlier.json"
    tuned.write_text(json.dumps({"provenance": {"date": "2026-01-01 00:00 UTC"}, "grid": {
        "values": lrs, "metric": multimodal.tuning_metric([0]),
        "scores": {a: dict(zip(map(str, lrs), s)) for a, s in earlier.items()}}}))
    with pytest.raises(ValueError, match="not this run's"):
        multimodal.tuned_scores(tuned, [0, 1])  # other tuning seeds
    out, work = tmp_path / "out", tmp_path / "runs"
    flags = ["--steps", "5", "--lrs", *map(str, lrs), "--out", str(out), "--workdir", str(work)]
    result = multimodal.main(["--seeds", "0", "1", "--tuned", str(tuned)] + flags)
    assert sum(c[0] == "val" for c in calls) == 5 * len(lrs) + 1  # 5 arms, images_only's 1e-2
    assert sum(c[0] == "test" for c in calls) == 8 * 2
    chosen = result["grid"]["chosen"]
    assert (chosen["images_only"], chosen["signals_only"], chosen["alternating"]) == (
        lrs[1], lrs[2], lrs[0])  # the earlier scores chose these
    assert chosen["mixed"] == 3e-3  # this run's validation (the fake peaks at 3e-3)
    md = (out / "multimodal.md").read_text()
    assert "`images_only` at 0.001, 0.003; `signals_only` at 0.001, 0.003, 0.01" in md
    assert "Not run here" not in md
    assert "largest, 0.01" in md  # signals_only chose the end of the grid

    calls.clear()
    data = multimodal_optimizer.main(
        ["--seeds", "2", "--tuned", str(out / "multimodal.json")] + flags)
    assert calls == [("val", 0, lr) for lr in lrs] + [("test", s, 3e-3) for s in (0, 1)]
    assert data["grid"]["chosen"] == {"images_only": lrs[1], "signals_only": lrs[2],
                                      "alternating": lrs[0], "one_optimizer": 3e-3}
    assert set(data["arms"]["images_only"]) == {"images_acc"}
    assert any("6 of the 8 test runs" in n for n in data["notes"])
    assert (out / "multimodal_optimizer.md").read_text() == pages.render_page(data)
    assert "--out" not in data["command"] and "--workdir" not in data["command"]

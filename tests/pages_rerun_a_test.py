"""The mean teacher, ADMM, Regression Transformer and SASR scripts write results pages.

Each script's ``main`` runs with its training replaced by a fake whose
validation score peaks at a known learning rate (the real runs are covered by
``tests/experiments_test.py`` and ``tests/reproductions_test.py``): the page's
JSON and markdown are written, the markdown is the rendering of the JSON,
every arm carries one value per seed, and each arm's chosen rate is the one
that is best on validation.
"""

import json
import math

import pytest

from configs import admm as admm_config
from experiments import admm, mean_teacher, pages, rt, sasr, tuning


def _score(lr, best):
    return -abs(math.log10(lr) - math.log10(best))


def _fake_sweep(sweeps, val):
    """A stand-in for ``alternating.sweep.run``: records ``(root name, rates)`` in ``sweeps``;
    every run's validation accuracy is ``val(config, rate)`` (``None``: it diverged)."""
    def fake_run(cfg, root, *, cells, seeds, vectorize, print_fn):
        del vectorize, print_fn
        rates = [next(iter(c.values())) for c in cells]
        sweeps.append((root.name, rates))
        runs = [{"cell": f"c{i}", "seed": s, "workdir": f"w{i}_{s}", "overrides": c,
                 "final_eval": (None if val(cfg, r) is None
                                else {"val": {"accuracy": val(cfg, r)}})}
                for i, (r, c) in enumerate(zip(rates, cells)) for s in seeds]
        return {"cells": [{"id": f"c{i}"} for i in range(len(cells))], "runs": runs}
    return fake_run


def _written(tmp_path, name, seeds):
    data = json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))
    pages.check(data)
    assert (tmp_path / f"{name}.md").read_text(encoding="utf-8") == pages.render_page(data)
    assert data["seeds"] == seeds and len(data["seeds"]) >= 2
    for arm, values in data["arms"].items():
        for key, per_seed in values.items():
            assert len(per_seed) == len(seeds), (arm, key)
            assert all(math.isfinite(v) for v in per_seed), (arm, key)
    assert len(data["grid"]["values"]) >= 3
    assert set(data["grid"]["chosen"]) == set(data["arms"])
    return data


def test_sasr_page(tmp_path, monkeypatch):
    best = {"sft_only": 1e-2, "adaptive": 1e-3}
    calls = []

    def fake(cfg, arm, seed, workdir, lr=None, scale=None, warmup=None):
        # --quick: the middle scale and warm-up (the smoke config's 20 steps)
        assert (scale, warmup) == ((1.0, 20.0) if arm == "adaptive" else (None, None))
        calls.append((arm, seed, lr))
        return {"arm": arm, "seed": seed, "lr": lr, "final": 0.5 + 0.01 * seed,
                "greedy": 0.6, "sft_steps": 30, "seconds": 0.0, "val": _score(lr, best[arm])}
    monkeypatch.setattr(sasr, "run_one", fake)
    sasr.main(["--quick", "--arms", "sft_only", "adaptive", "--seeds", "3", "--noise", "0",
               "--tune-seeds", "1", "--out", str(tmp_path), "--workdir", str(tmp_path / "w")])
    data = _written(tmp_path, "sasr_noise0", [0, 1, 2])
    assert data["grid"]["chosen"] == best
    # The grid ran on seed 0 only; the other seeds ran once, at the chosen rate.
    assert sorted(c for c in calls if c[1] > 0) == [
        ("adaptive", 1, 1e-3), ("adaptive", 2, 1e-3), ("sft_only", 1, 1e-2), ("sft_only", 2, 1e-2)]
    assert "our guess" in " ".join(data["intro"])
    assert [c["name"] for c in data["comparisons"]] == ["adaptive vs sft_only"]
    # The adaptive rule's scale and warm-up are searched with the rate (--quick: only the
    # middle values).
    assert data["grid"]["method"]["values"] == {"adaptive": [[1.0, 20.0]]}
    assert data["grid"]["method"]["params"] == {"adaptive": ["scale", "warm-up"]}
    from configs import sasr as sasr_config
    cfg = sasr_config.get_config()
    assert sasr.schedule_for("adaptive", cfg, 3.0)["scale"] == 3.0
    assert sasr.warmups(cfg) == [150.0, 300.0, 600.0]
    assert sasr.schedule_for("adaptive", cfg, 3.0, 600.0)["warmup_steps"] == 600
    assert sasr.schedule_for("sft_then_rl", cfg, None, 150.0)["stages"] == [
        ["sft", 150], ["rl", cfg.steps - 150]]


def test_mean_teacher_page(tmp_path, monkeypatch):
    best = {"supervised": 3e-3, "mean_teacher": 1e-3, "dual": 3e-4}

    def fake(arm, seeds, steps, workdir, lr=None, val=False):
        assert val  # tuning reads the held-out validation sets
        head = mean_teacher.HEADLINE[arm]
        return [{"arm": arm, "seed": s, "lr": lr, "seconds": 0.0,
                 "acc": {head: 0.9, "student": 0.8, f"val_{head}": _score(lr, best[arm])}}
                for s in seeds]
    monkeypatch.setattr(mean_teacher, "run_seeds", fake)
    monkeypatch.setattr(mean_teacher, "QUICK_LRS", mean_teacher.LRS)  # the whole grid (fakes)
    result = mean_teacher.main(["--quick", "--out", str(tmp_path),
                                "--workdir", str(tmp_path / "w")])
    data = _written(tmp_path, "mean_teacher", [0, 1])
    assert data["grid"]["chosen"] == best and set(result["summary"]) == set(best)
    assert {c["treatment"] for c in data["comparisons"]} == {"mean_teacher", "dual"}


def test_rt_page_has_single_task_arms(tmp_path, monkeypatch):
    steps = {}

    def fake(arm, seeds, n_steps, workdir, lr=None, val=False, sc=None):
        assert sc == (1.0 if arm == "sc" else None)  # --quick: the middle weight only
        steps[arm] = n_steps
        good = lr == 1e-3
        return [{"arm": arm, "seed": s, "lr": lr, "seconds": 0.0, "prop_mae": 0.05,
                 "spearman": 0.5, "spearman_unchanged": 0.0,
                 "val_prop_mae": 0.05 if good else 0.15, "val_spearman": 0.6 if good else 0.1}
                for s in seeds]
    monkeypatch.setattr(rt, "run_seeds", fake)
    monkeypatch.setattr(rt, "QUICK_LRS", rt.LRS)  # the whole grid (fakes)
    rt.main(["--quick", "--out", str(tmp_path), "--workdir", str(tmp_path / "w")])
    data = _written(tmp_path, "rt", [0, 1])
    assert set(data["grid"]["chosen"].values()) == {1e-3}
    # Each single-task baseline gets the steps its task gets in the alternating arms.
    assert steps == {"plain": 20, "sc": 20, "predict_only": 10, "generate_only": 10}
    assert set(data["arms"]["predict_only"]) == {"prop_mae"}
    assert set(data["arms"]["generate_only"]) == {"spearman"}
    baselines = {c["baseline"] for c in data["comparisons"]}
    assert {"predict_only", "generate_only", "plain"} <= baselines
    # Arm sc's self-consistency weight is searched with the rate; the config refuses it
    # on another arm.
    assert data["grid"]["method"]["values"] == {"sc": [1.0]} and 1.0 in rt.SC_WEIGHTS
    from configs import rt as rt_config
    kw = rt_config.get_config("sc,sc=0.1").phases.generate.loss_kwargs
    assert kw.consistency == 0.1
    assert rt_config.get_config("sc").phases.generate.loss_kwargs.consistency == 1.0
    with pytest.raises(ValueError, match="of arm 'sc' only"):
        rt_config.get_config("plain,sc=0.1")


def test_admm_page_tunes_on_separate_initializations(tmp_path, monkeypatch):
    blocks = []

    def fake(arm, inits, steps, workdir, lr=None):
        blocks.append((arm, list(inits), lr))
        obj = 0.01 + abs(math.log10(lr / admm_config.LR[arm]))  # best at the base rate
        return [{"arm": arm, "init": i, "lr": lr, "seconds": 0.0, "final": obj + 1e-4 * i,
                 "network_objective": obj, **({"violation": 0.0} if arm == "admm" else {})}
                for i in inits]
    monkeypatch.setattr(admm, "run_seeds", fake)
    admm.main(["--quick", "--out", str(tmp_path), "--workdir", str(tmp_path / "w")])
    data = _written(tmp_path, "admm", [0, 1])
    assert data["grid"]["chosen"] == {"admm": 1.0, "sgd": 1.0}
    assert {tuple(b[1]) for b in blocks} == {tuple(admm.TUNE_SEEDS), (0, 1)}
    assert set(data["arms"]["admm"]) == {"rel_dev", "objective", "network_objective", "violation"}


def test_tuning_refuses_short_grids_and_single_seed_counts():
    with pytest.raises(ValueError, match="at least 3 values"):
        tuning.tune(["a"], [1e-3, 1e-2], [0, 1], [0], None, None, metric="m")
    with pytest.raises(ValueError, match="at least 2"):
        tuning.seeds_from([1], 5)
    assert tuning.seeds_from([3], 5) == [0, 1, 2] and tuning.seeds_from([4, 7], 5) == [4, 7]
    assert tuning.seeds_from(None, 5) == list(range(5))


def test_validation_variants_hold_data_out():
    from configs import mean_teacher as mt_config, rt as rt_config
    c = mt_config.get_config("dual,val,lr=0.003")
    assert c.data.unlabeled.split == "train[:80%]" and c.eval.val_teacher.data.split == "train[80%:]"
    assert c.phases.s0.optimizer.lr == 0.003
    train, val = rt_config.training_split(True)
    assert len(train["x"]) + len(val["x"]) == rt_config.TRAIN and len(val["x"]) == rt_config.HOLDOUT
    assert len(rt_config.get_config("predict_only,val").data.train.dataset["x"]) == len(train["x"])


def test_a_choice_at_an_end_widens_the_grid_once_and_every_run_is_made_once():
    calls = []

    def run(arm, lr, seeds):
        calls.append((arm, lr, tuple(seeds)))
        best = {"up": 0.05, "mid": 3e-3}[arm]  # "up" is best beyond the grid's top
        return [{"val": _score(lr, best) + 1e-3 * s, "test": lr} for s in seeds]

    grid, results = tuning.tune(["up", "mid"], [1e-3, 3e-3, 1e-2], [0, 1, 2], [0, 1], run,
                                lambda r: r["val"], metric="m")
    assert grid["values"] == [1e-3, 3e-3, 1e-2, 0.03]  # one value beyond the top, once
    assert grid["widened"] == {"first": [1e-3, 3e-3, 1e-2], "added": [0.03]}
    assert grid["chosen"] == {"up": 0.03, "mid": 3e-3}  # still an end for "up": said below
    assert [r["test"] for r in results["up"]] == [0.03] * 3
    tuned = [c for c in calls if c[2] == (0, 1)]
    assert len(tuned) == len(set(tuned)) == 8  # 2 arms x 4 values, each once
    assert sorted(c for c in calls if c[2] != (0, 1)) == [("mid", 3e-3, (2,)), ("up", 0.03, (2,))]
    md = "\n".join(pages._grid(grid))  # pylint: disable=protected-access
    assert "The first grid [0.001, 0.003, 0.01] had an arm's choice at an end" in md
    assert "`up` (largest, 0.03)" in tuning.edge_notes(grid)[0]
    # Both ends, and a smoke run never widens.
    assert tuning.widened([1e-3, 1e-2, 1e-1], {"a": 1e-3, "b": 1e-1}) == [1e-4, 1.0]
    smoke, _ = tuning.tune(["up"], [1e-3, 1e-2], [0, 1], [0], run, lambda r: r["val"],
                           metric="m", smoke=True)
    assert smoke["values"] == [1e-3, 1e-2] and "widened" not in smoke
    # Rounds: "up" (best 0.05) moves to 0.03, then 0.1 is tried and loses; a third round is
    # not needed (0.03 is inside [1e-3, 0.1]).
    calls.clear()
    grid, _ = tuning.tune(["up", "mid"], [1e-3, 3e-3, 1e-2], [0, 1], [0, 1], run,
                          lambda r: r["val"], metric="m", widen=3)
    assert grid["widened"] == {"first": [1e-3, 3e-3, 1e-2], "added": [0.03, 0.1], "rounds": 2}
    assert grid["chosen"] == {"up": 0.03, "mid": 3e-3} and tuning.edge_notes(grid) == []
    assert len(calls) == len(set(calls)) == 10  # 2 arms x 5 values, each once


def test_run_names_keep_the_default_method_values_runs_where_they_were():
    assert tuning.run_name("a", 3e-3) == "a_lr0.003"
    assert tuning.run_name("a", 3e-3, "eta", 0.5, 0.5) == "a_lr0.003"
    assert tuning.run_name("a", 3e-3, "eta", 5.0, 0.5) == "a_lr0.003_eta5"


def test_per_seed_tuning_searches_a_method_value_with_the_rate_and_shares_the_choice_rule():
    """tune_per_seed's method grid: arm ``m`` is best at z 8 (an end, so 16 is tried and
    loses) and rate 3e-3; arm ``plain`` has no grid and its run gets ``None``. Every
    (arm, rate, z, seed) runs once; the record is the one tune_configs writes."""
    calls = []

    def run(arm, lr, seed, z):
        calls.append((arm, lr, z, seed))
        val = _score(lr, 3e-3) + (0.0 if z is None else _score(z, 9.0))
        return {"val": val + 1e-4 * seed, "test": (lr, z)}

    grid, results, info = tuning.tune_per_seed(
        ["m", "plain"], [1e-3, 3e-3, 1e-2], [0, 1, 2], [0, 1], run, lambda r: r["val"],
        metric="v", widen=3, method={"m": [2.0, 4.0, 8.0]}, method_param="z")
    m = grid["method"]
    assert m["param"] == "z" and m["values"] == {"m": [2.0, 4.0, 8.0, 16.0]}
    assert m["chosen"] == {"m": 8.0} and m["rates"]["m"] == {str(z): 3e-3 for z in
                                                             (2.0, 4.0, 8.0, 16.0)}
    assert m["widened"] == {"m": {"first": [2.0, 4.0, 8.0], "added": [16.0]}}
    assert grid["chosen"] == {"m": 3e-3, "plain": 3e-3} and "widened" not in grid
    assert [r["test"] for r in results["m"]] == [(3e-3, 8.0)] * 3
    assert [r["test"] for r in results["plain"]] == [(3e-3, None)] * 3
    assert len(calls) == len(set(calls)) == info["runs"] == (4 * 3 + 3) * 2 + 2
    assert {c[2] for c in calls if c[0] == "plain"} == {None}
    assert "| m | 2: " in "\n".join(pages._grid(grid))  # pylint: disable=protected-access
    # A quick run uses the middle value only; a grid for an arm not tuned is refused.
    quick, _, _ = tuning.tune_per_seed(["m"], [1e-3], [0, 1], [0, 1], run, lambda r: r["val"],
                                       metric="v", quick=True, method={"m": [2.0, 4.0, 8.0]})
    assert quick["method"]["values"] == {"m": [4.0]}
    with pytest.raises(ValueError, match=r"method grid for \['x'\]: not a config"):
        tuning.tune(["m"], [1e-3, 3e-3, 1e-2], [0], [0], run, lambda r: r["val"], metric="v",
                    method={"x": [1.0, 2.0, 3.0]})
    # Minimizing: the lowest score wins, for the rate and for the method value alike.
    grid, _ = tuning.tune(["m"], [1e-3, 3e-3, 1e-2], [0], [0],
                          lambda arm, lr, seeds, z: [{"val": -run(arm, lr, s, z)["val"]}
                                                     for s in seeds],
                          lambda r: r["val"], metric="v", maximize=False, widen=0,
                          method={"m": [2.0, 4.0, 8.0]})
    assert grid["chosen"] == {"m": 3e-3} and grid["method"]["chosen"] == {"m": 8.0}


def test_several_method_parameters_search_their_product_and_widen_one_at_a_time():
    """Arm ``m`` searches z and decay together: every combination of the first grids (9)
    at each rate. The best has z 8, an end, so z 16 is tried with decay held at its choice
    (and loses); decay 0.05 is inside. Every run is made once."""
    calls = []

    def run(arm, lr, seed, lam):
        calls.append((arm, lr, lam, seed))
        return {"val": _score(lr, 3e-3) + _score(lam[0], 9.0) + _score(lam[1], 0.05),
                "test": lam}

    grids = {"z": [2.0, 4.0, 8.0], "decay": [0.02, 0.05, 0.1]}
    grid, results, info = tuning.tune_per_seed(
        ["m"], [1e-3, 3e-3, 1e-2], [0, 1], [0], run, lambda r: r["val"], metric="v",
        widen=3, method={"m": grids}, method_param="detector settings")
    m = grid["method"]
    assert m["params"] == {"m": ["z", "decay"]} and m["chosen"] == {"m": [8.0, 0.05]}
    assert m["widened"] == {"m": {"first": [[z, d] for z in grids["z"] for d in grids["decay"]],
                                  "added": [[16.0, 0.05]]}}
    assert len(m["values"]["m"]) == 10 and m["rates"]["m"]["8.0,0.05"] == 3e-3
    assert [r["test"] for r in results["m"]] == [(8.0, 0.05)] * 2
    assert len(calls) == len(set(calls)) == info["runs"] == 10 * 3 + 1
    text = "\n".join(pages._grid(grid))  # pylint: disable=protected-access
    assert "z 8, decay 0.05: " in text and "`m` searched z, decay together" in text
    assert "ran (z 16, decay 0.05)" in text and tuning.edge_notes(grid) == []
    note = tuning.method_reading(grid, "m", grids["z"])[0]
    assert note.startswith("z, decay search for `m`: validation score ")
    assert note.endswith("chosen z 8, decay 0.05.")
    assert tuning.run_name("m", 1e-3, "zd", (8.0, 0.05), (4.0, 0.05)) == "m_lr0.001_zd8_0.05"
    # A quick run takes each parameter's middle value; a short grid is refused by name.
    quick, _, _ = tuning.tune_per_seed(["m"], [1e-3], [0, 1], [0, 1], run, lambda r: r["val"],
                                       metric="v", quick=True, method={"m": grids})
    assert quick["method"]["values"] == {"m": [[4.0, 0.05]]}
    with pytest.raises(ValueError, match=r"m: decay grid \[0.02, 0.05\]: the fair-arms rule"):
        tuning.tune(["m"], [1e-3, 3e-3, 1e-2], [0], [0], run, lambda r: r["val"], metric="v",
                    method={"m": {"z": [2.0, 4.0, 8.0], "decay": [0.02, 0.05]}})
    # At an end after the rounds run out, the end note names the parameter.
    grid, _, _ = tuning.tune_per_seed(
        ["m"], [1e-3, 3e-3, 1e-2], [0], [0], run, lambda r: r["val"], metric="v", widen=0,
        method={"m": {"z": [1.0, 2.0, 4.0], "decay": [0.02, 0.05, 0.1]}})
    assert tuning.edge_notes(grid) == [
        "Chosen at an end of the grid, so a value beyond it might have scored better on "
        "validation (not tried): `m` (z, largest, 4)."]
    # ``snap``: a widened value runs as the nearest whole count; one that cannot run (below
    # 1) or snaps onto a value tried adds nothing, so that end stops growing.
    for best, added in ((0.3, []), (30.0, [[8.0, 0.05], [16.0, 0.05]])):
        grid, _, _ = tuning.tune_per_seed(
            ["m"], [1e-3, 3e-3, 1e-2], [0], [0],
            lambda arm, lr, seed, lam, best=best: {"val": _score(lr, 3e-3)
                                                   + _score(lam[0], best)},
            lambda r: r["val"], metric="v", widen=2,
            method={"m": {"n": [1.0, 2.0, 4.0], "decay": [0.02, 0.05, 0.1]}},
            snap={"n": lambda v: None if v < 1 else float(round(v))})
        assert grid["method"].get("widened", {}).get("m", {}).get("added", []) == added
        # An end that cannot grow is the search's limit: no "might have scored better" note.
        if best < 1:
            assert grid["method"]["limits"] == {"m": {"n": [1.0]}}
            assert tuning.edge_notes(grid) == []
            assert "`m`: n 1 is as far as that end can go" in "\n".join(
                pages._grid(grid))  # pylint: disable=protected-access
        else:
            assert "limits" not in grid["method"]
            assert "`m` (n, largest, 16)" in tuning.edge_notes(grid)[0]


def test_config_tuning_widens_at_an_end_and_skips_diverged_rates(monkeypatch, tmp_path):
    from alternating import sweep
    from configs import default

    sweeps = []
    monkeypatch.setattr(sweep, "run", _fake_sweep(
        sweeps, lambda cfg, r: None if r > 0.05 else _score(r, 0.03)))
    grid = tuning.tune_configs({"a": default.get_config()}, [0, 1], tmp_path,
                               lambda arm, fe: fe["val"]["accuracy"], "val acc",
                               rates=[1e-3, 3e-3, 1e-2], prepare=lambda c: c)
    assert sweeps == [("a", [1e-3, 3e-3, 1e-2]), ("a.widened", [0.03])]
    assert grid["chosen"] == {"a": 0.03} and grid["values"] == [1e-3, 3e-3, 1e-2, 0.03]
    assert grid["widened"]["added"] == [0.03]
    # A rate whose every run diverged is no candidate; it is left out of the scores.
    sweeps.clear()
    grid = tuning.tune_configs({"a": default.get_config()}, [0, 1], tmp_path / "2",
                               lambda arm, fe: fe["val"]["accuracy"], "val acc",
                               rates=[1e-2, 3e-2, 1e-1], prepare=lambda c: c)
    assert grid["chosen"] == {"a": 3e-2} and "0.1" not in grid["scores"]["a"]
    assert "widened" not in grid and len(sweeps) == 1


def test_config_tuning_searches_a_method_value_jointly_and_widens_it_once(monkeypatch, tmp_path):
    """Arm ``b`` searches its lambda with the rate: the best (lambda, rate) pair wins, a
    lambda at an end of its grid adds one beyond it (run at every rate), the page renders it
    and names an arm still at an end."""
    from alternating import sweep
    from configs import default

    sweeps = []

    def val(cfg, r):  # no method value (arm a): the rate alone scores
        lam = cfg.get("test_lam")
        return _score(r, 3e-3) + (0.0 if lam is None else _score(lam, 2000.0))

    def set_lam(cfg, v):
        with cfg.unlocked():
            cfg.test_lam = v
        return cfg

    monkeypatch.setattr(sweep, "run", _fake_sweep(sweeps, val))
    rates = [1e-3, 3e-3, 1e-2]
    configs = {"a": default.get_config(), "b": default.get_config()}
    grid = tuning.tune_configs(configs, [0, 1], tmp_path, lambda arm, fe: fe["val"]["accuracy"],
                               "val acc", rates=rates, prepare=lambda c: c,
                               method={"b": {"values": [10.0, 100.0, 1000.0], "set": set_lam}})
    assert sweeps == [("a", rates), ("b@10", rates), ("b@100", rates), ("b@1000", rates),
                      ("b@10000", rates)]
    m = grid["method"]
    assert m["values"] == {"b": [10.0, 100.0, 1000.0, 10000.0]}
    assert m["chosen"] == {"b": 1000.0} and m["rates"]["b"]["1000.0"] == 3e-3
    assert m["widened"] == {"b": {"first": [10.0, 100.0, 1000.0], "added": [10000.0]}}
    assert m["scores"]["b"]["10.0"] == round(_score(10.0, 2000.0), 4)
    assert grid["chosen"] == {"a": 3e-3, "b": 3e-3} and "widened" not in grid
    assert grid["scores"]["b"]["0.01"] == round(_score(1e-2, 3e-3) + _score(1000.0, 2000.0), 4)
    assert tuning.tuning_runs(grid, ["a", "b"], [0, 1]) == (1 + 4) * 3 * 2
    text = "\n".join(pages._grid(grid))  # pylint: disable=protected-access
    assert "| b | 10: -2.301 (0.003); 100: -1.301 (0.003); 1000: -0.301 (0.003); 10000: " \
           "-0.699 (0.003) | 1000 |" in text
    assert "`b`: the first lambda grid [10.0, 100.0, 1000.0] had the choice at an end" in text
    assert tuning.edge_notes(grid) == []
    grid["method"]["chosen"]["b"] = 10000.0
    assert "`b` (lambda, largest, 10000)" in tuning.edge_notes(grid)[0]
    with pytest.raises(ValueError, match=r"method grid for \['c'\]: not a config"):
        tuning.tune_configs(configs, [0, 1], tmp_path / "x", lambda arm, fe: 0.0, "v",
                            rates=rates, prepare=lambda c: c,
                            method={"c": {"values": [1.0, 2.0, 3.0], "set": set_lam}})
    with pytest.raises(ValueError, match=r"b: lambda grid \[1.0, 2.0\]"):
        tuning.tune_configs(configs, [0, 1], tmp_path / "y", lambda arm, fe: 0.0, "v",
                            rates=rates, prepare=lambda c: c,
                            method={"b": {"values": [1.0, 2.0], "set": set_lam}})


def test_config_tuning_widens_in_rounds_until_no_choice_is_at_an_end(monkeypatch, tmp_path):
    from alternating import sweep
    from configs import default

    sweeps = []
    monkeypatch.setattr(sweep, "run", _fake_sweep(sweeps, lambda cfg, r: _score(r, 0.06)))
    kw = dict(rates=[1e-3, 3e-3, 1e-2], prepare=lambda c: c)
    score = lambda arm, fe: fe["val"]["accuracy"]  # noqa: E731
    grid = tuning.tune_configs({"a": default.get_config()}, [0], tmp_path, score, "v",
                               widen=4, **kw)
    assert sweeps == [("a", [1e-3, 3e-3, 1e-2]), ("a.widened", [0.03]), ("a.widened2", [0.1]),
                      ("a.widened3", [0.3])]  # 0.1 is interior after the third: no fourth
    assert grid["chosen"] == {"a": 0.1}
    assert grid["widened"] == {"first": [1e-3, 3e-3, 1e-2], "added": [0.03, 0.1, 0.3],
                               "rounds": 3}
    text = "\n".join(pages._grid(grid))  # pylint: disable=protected-access
    assert "3 rounds, each adding one value" in text
    sweeps.clear()
    grid = tuning.tune_configs({"a": default.get_config()}, [0], tmp_path / "2", score, "v",
                               widen=2, **kw)
    assert grid["chosen"] == {"a": 0.1} and "`a` (largest, 0.1)" in tuning.edge_notes(grid)[0]


def test_method_values_that_tie_choose_the_one_nearest_the_configs_value(monkeypatch, tmp_path):
    """A weight too small to change a prediction ties with every smaller one: the choice
    stays nearest the config's value, so the widening stops after one value."""
    from alternating import sweep
    from configs import default

    def set_lam(cfg, v):
        with cfg.unlocked():
            cfg.test_lam = v
        return cfg

    sweeps = []
    monkeypatch.setattr(sweep, "run", _fake_sweep(
        sweeps, lambda cfg, r: _score(r, 3e-3) - (cfg.test_lam > 0.1)))
    grid = tuning.tune_configs({"c": default.get_config()}, [0], tmp_path,
                               lambda arm, fe: fe["val"]["accuracy"], "v",
                               rates=[1e-3, 3e-3, 1e-2], prepare=lambda c: c, widen=3,
                               method={"c": {"values": [0.1, 1.0, 10.0], "set": set_lam}})
    assert [name for name, _ in sweeps] == ["c@0.1", "c@1", "c@10", "c@0.01"]
    assert grid["method"]["chosen"] == {"c": 0.1}
    assert grid["method"]["scores"]["c"]["0.01"] == grid["method"]["scores"]["c"]["0.1"]

"""Smoke runs of the IMP, Skill-it and TAME reproduction scripts, and their pieces."""

import json

import numpy as np
import pytest

from configs import imp as imp_config
from experiments import imp, skill_it, tame


def test_imp_quick_writes_a_page_whose_arms_share_steps_and_examples(tmp_path):
    data = imp.main(["--quick", "--arms", "padded", "--out", str(tmp_path),
                     "--workdir", str(tmp_path / "w")])
    saved = json.loads((tmp_path / "imp.json").read_text())
    assert saved["arms"] == data["arms"] and list(saved["arms"]) == ["padded"]
    accs = saved["arms"]["padded"]["mean_acc"]
    assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    md = (tmp_path / "imp.md").read_text()
    assert "3 compiled training step(s) (digits, mnist1d, parity)" in md
    # The learning rate was chosen on validation data from the grid, and the page shows it.
    grid = saved["grid"]
    assert grid["chosen"]["padded"] in imp.RATES and len(imp.RATES) >= 3
    scores = grid["scores"]["padded"]
    assert set(scores) == {str(r) for r in imp.RATES} and all(0 <= v <= 1 for v in scores.values())
    assert grid["chosen"]["padded"] == float(max(scores, key=scores.get))
    assert "## Tuning: lr (every phase) chosen per arm" in md
    # Equal budgets: per step and per run, every arm sees the same examples of each task.
    cfgs = {a: imp_config.get_config(f"arm={a}") for a in imp_config.ARMS}
    assert len({c.total_steps for c in cfgs.values()}) == 1
    per_step = {a: sum(c.data[t]["batch_size"] for t in imp_config.TASKS) / (
        1 if a == "joint" else 3) for a, c in cfgs.items()}
    assert len(set(per_step.values())) == 1, per_step


def test_imp_padding_pads_and_refuses_longer_inputs():
    out = imp_config.pad_to({"x": np.ones((2, 40, 1)), "y": np.zeros(2)}, 64)
    assert out["x"].shape == (2, 64) and out["x"][:, 40:].sum() == 0
    with pytest.raises(ValueError, match="more than length=32"):
        imp_config.pad_to({"x": np.ones((2, 40))}, 32)
    with pytest.raises(ValueError, match="bad variant 'arm=mixed'"):
        imp_config.get_config("arm=mixed")


def test_imp_one_optimizer_arm_is_agd_with_one_shared_state():
    agd, one = (imp_config.get_config(f"arm={a},smoke") for a in ("agd", "agd_one_optimizer"))
    assert {t: one.phases[t].get("optimizer_group") for t in imp_config.TASKS} == {
        t: imp_config.GROUP for t in imp_config.TASKS}
    assert all(agd.phases[t].get("optimizer_group") is None for t in imp_config.TASKS)
    for t in imp_config.TASKS:  # everything else as agd: data, optimizer spec, parameters
        assert one.data[t] == agd.data[t]
        assert one.phases[t]["optimizer"] == agd.phases[t]["optimizer"]
        assert one.phases[t]["params"] == agd.phases[t]["params"]
    assert one.schedule == agd.schedule


def test_skill_it_weights_prerequisites_of_a_lagging_skill():
    sched = skill_it.SkillIt(skill_it.SKILLS, evals={s: f"val_{s}" for s in skill_it.SKILLS},
                             graph=skill_it.GRAPH, eta=1.0, window=2, round_steps=10)
    sched.observe_eval(10, {"val_left": {"loss": 0.1}, "val_right": {"loss": 0.1},
                            "val_sum": {"loss": 2.0}})
    p = dict(zip(skill_it.SKILLS, sched.probs))
    # left: 0.1 + 2.0, right: 0.1 + 2.0, sum: 2.0 -> softmax of (2.1, 2.1, 2.0).
    want = np.exp([2.1, 2.1, 2.0]) / np.exp([2.1, 2.1, 2.0]).sum()
    np.testing.assert_allclose([p["left"], p["right"], p["sum"]], want)
    ident = skill_it.SkillIt(skill_it.SKILLS, evals={s: f"val_{s}" for s in skill_it.SKILLS},
                             eta=1.0, round_steps=10)
    ident.observe_eval(10, {"val_left": {"loss": 0.1}, "val_right": {"loss": 0.1},
                            "val_sum": {"loss": 2.0}})
    assert ident.probs[2] > ident.probs[0]
    with pytest.raises(ValueError, match="graph names 'product'"):
        skill_it.SkillIt(skill_it.SKILLS, evals={s: s for s in skill_it.SKILLS},
                         graph={"left": ["product"]})
    with pytest.raises(ValueError, match=r"no evaluation set for phase\(s\) \['sum'\]"):
        skill_it.SkillIt(skill_it.SKILLS, evals={"left": "a", "right": "b"})


def test_skill_it_quick_writes_a_page(tmp_path):
    data = skill_it.main(["--quick", "--arms", "stratified", "skill_it", "skill_it_per_skill",
                          "--out", str(tmp_path), "--workdir", str(tmp_path / "w")])
    assert set(data["arms"]) == {"stratified", "skill_it", "skill_it_per_skill"}
    for arm in data["arms"].values():
        assert len(arm["mean_acc"]) == 2 and all(0.0 <= s <= 1.0 for s in arm["sum_share"])
    md = (tmp_path / "skill_it.md").read_text()
    assert "| Skill-it vs stratified | greater |" in md
    assert "| Skill-it: one optimizer vs per-skill states | greater |" in md
    # The shared arm has one Adam state over the union; the per-skill arm one per phase.
    states = {a: json.loads((tmp_path / "w" / f"{a}_lr{skill_it.LR:g}_s0" / "results.json")
                            .read_text()) for a in ("skill_it", "skill_it_per_skill")}
    shared = states["skill_it"]["opt_state_bytes_per_phase"]
    own = states["skill_it_per_skill"]["opt_state_bytes_per_phase"]
    assert set(shared) == {"shared"} and set(own) == set(skill_it.SKILLS)
    assert sum(own.values()) > shared["shared"]  # the trunk's moments, once per skill
    # --quick runs the page's one rate (no tuning runs); the full grid has 3 or more values.
    assert data["grid"]["values"] == [skill_it.LR] and len(skill_it.RATES) >= 3
    assert set(data["grid"]["chosen"]) == set(data["arms"])
    # eta and window are searched with the rate by the Skill-it arms only; --quick runs their
    # middle values.
    middle = [skill_it.ETA, float(skill_it.WINDOW)]
    assert data["grid"]["method"]["values"] == {"skill_it": [middle],
                                                "skill_it_per_skill": [middle]}
    assert data["grid"]["method"]["params"]["skill_it"] == ["eta", "window"]
    assert len(skill_it.ETAS) >= 3 and skill_it.ETAS[len(skill_it.ETAS) // 2] == skill_it.ETA
    assert len(skill_it.WINDOWS) >= 3 and skill_it.WINDOWS[1] == skill_it.WINDOW
    assert skill_it.schedule_for("skill_it", 10, 5.0).eta == 5.0
    assert skill_it.schedule_for("skill_it", 10, 5.0, window=9.0).window == 9
    # Each run's Skill-it draws from its own seed (a schedule object is used as given).
    assert skill_it.schedule_for("skill_it", 10, seed=3).seed == 3
    assert data["arms"]["skill_it"]["sum_share"][0] != data["arms"]["skill_it"]["sum_share"][1]


def test_tame_schedules_switch_blind_or_at_the_true_boundaries():
    size = tame.SIZES["full"]
    fixed = tame.schedule_for("fixed", size, 0)["stages"]
    oracle = tame.schedule_for("oracle", size, 0)["stages"]
    assert [n for _, n in oracle] == list(size["segments"])
    assert sum(n for _, n in fixed) == sum(size["segments"])
    assert len({n for _, n in fixed[:-1]}) == 1 and [n for _, n in fixed] != list(
        size["segments"])
    shift = tame.schedule_for("loss_shift", size, 3)
    assert shift.order == [f"expert_{i}" for i in range(len(size["segments"]))]
    assert shift.z == tame.Z and tame.schedule_for("loss_shift", size, 3, 8.0).z == 8.0
    # The minimum count follows the EMA rate's horizon: 40 records at 0.05, 20 at 0.1.
    assert (shift.decay, shift.min_count) == (0.05, 40)
    fast = tame.schedule_for("loss_shift", size, 3, 8.0, 0.1)
    assert (fast.decay, fast.min_count) == (0.1, 20)


def test_tame_scores_detections_against_the_true_boundaries():
    # Boundaries at 150, 450, 550: 150 hit at once, 450 hit 10 steps late, 550 missed, and
    # the detection at 600 (50 steps after 550) is a false alarm.
    got = tame.detection([150, 460, 600], (150, 300, 100, 250))
    assert got == {"shifts": 3.0, "missed": 1.0, "false_alarms": 1.0, "delay": 5.0}
    assert tame.detection([], (150, 300))["missed"] == 1.0


def test_tame_quick_writes_a_page(tmp_path):
    data = tame.main(["--quick", "--arms", "loss_shift", "oracle", "--out", str(tmp_path),
                      "--workdir", str(tmp_path / "w")])
    assert set(data["arms"]) == {"loss_shift", "oracle"}
    assert all(0.0 <= a <= 1.0 for a in data["arms"]["oracle"]["acc"])
    assert "shifts" not in data["arms"]["oracle"]
    assert len(data["arms"]["loss_shift"]["missed"]) == 2
    # --quick: the middle z and EMA rate
    assert data["grid"]["method"]["chosen"] == {"loss_shift": [tame.Z, tame.DECAY]}
    assert "EMA rate: score (rate)" in (tmp_path / "tame.md").read_text()
    assert "| oracle vs loss shift (the price of not knowing) | greater |" in (
        tmp_path / "tame.md").read_text()
    # --quick runs the page's one rate (no tuning runs); the full grid has 3 or more values.
    assert data["grid"]["chosen"] == {"loss_shift": tame.LR, "oracle": tame.LR}
    assert len(tame.RATES) >= 3


def test_tame_reading_blames_detection_errors_only_beyond_the_clean_seeds_spread():
    size = tame.SIZES["full"]

    def arms(bad_acc):
        return {"loss_shift": {"acc": [0.82, 0.84, 0.83, bad_acc], "missed": [0, 0, 0, 1],
                               "false_alarms": [0, 0, 0, 0]},
                "oracle": {"acc": [0.95] * 4}}
    far = tame.reading(arms(0.60), size)[0]
    near = tame.reading(arms(0.825), size)[0]
    assert "the earlier one is overwritten" in far and "do not explain" not in far
    assert "do not explain the gap" in near and "overwritten" not in near


def test_skill_it_eta_reading_says_when_the_search_ran_the_graph_down_to_uniform():
    grid = {"chosen": {"stratified": 0.006, "skill_it": 0.006},
            "scores": {"stratified": {"0.006": 0.90}},
            "method": {"param": "eta", "chosen": {"skill_it": 0.005},
                       "scores": {"skill_it": {"0.005": 0.91, "0.05": 0.89, "0.5": 0.87,
                                               "5.0": 0.70}}}}
    text = skill_it.eta_reading(grid)[0]
    assert "chosen 0.005, below the first grid" in text and "is stratified sampling" in text
    assert "eta 0.05, 0.5, 5 it scored below stratified's 0.900" in text
    grid["method"]["chosen"]["skill_it"] = 0.5  # inside the grid: no such reading
    assert "below the first grid" not in skill_it.eta_reading(grid)[0]
    # With the window searched too, each eta reads its best window.
    several = {"param": "eta and window", "params": {"skill_it": ["eta", "window"]},
               "chosen": {"skill_it": [0.005, 3.0]},
               "values": {"skill_it": [[e, w] for e in (0.005, 0.05, 0.5, 5.0)
                                       for w in (1.0, 3.0)]},
               "scores": {"skill_it": {f"{e},{w}": s - (0.0 if w == 3.0 else 0.01)
                                       for e, s in (("0.005", 0.91), ("0.05", 0.89),
                                                    ("0.5", 0.87), ("5.0", 0.70))
                                       for w in ("1.0", "3.0")}}}
    text = skill_it.eta_reading({**grid, "method": several})[0]
    assert text.startswith("eta, window search for `skill_it`")
    assert "chosen eta 0.005, window 3, below the first grid" in text
    assert "eta 0.05, 0.5, 5 it scored (at its best window) below stratified's 0.900" in text
    assert skill_it.eta_reading({"chosen": {}, "scores": {}}) == []


def test_aioli_mw_reading_names_its_largest_share_and_a_search_run_to_uniform():
    from experiments import aioli
    shares = {f"share_{g}": [0.1] for g in aioli.GROUPS}
    shares[f"share_{aioli.GROUPS[-1]}"] = [0.6]
    grid = {"method": {"param": "eta", "chosen": {"multiplicative_weights": 1e-3},
                       "scores": {"multiplicative_weights": {"0.001": 2.8, "0.01": 2.9,
                                                             "0.1": 3.2, "1.0": 3.3}}}}
    text = aioli.mw_reading({"multiplicative_weights": shares}, grid)
    assert f"largest share of steps to {aioli.GROUPS[-1]} (0.60" in text[0]
    assert "(eta 0.001)" in text[0] and "chosen 0.001, below the first grid" in text[1]
    grid["method"]["scores"]["multiplicative_weights"]["0.01"] = 2.7  # lower loss: no claim
    assert "below the first grid" not in aioli.mw_reading({"multiplicative_weights": shares},
                                                          grid)[1]

"""Smoke runs of the issue-5 reproduction scripts (tiny steps, one seed)."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import ccl  # noqa: E402


@pytest.mark.slow
def test_ccl_quick_runs_every_arm_and_writes_the_table(tmp_path):
    result = ccl.main(["--quick", "--datasets", "digits", "--out", str(tmp_path)])
    arms = {r["arm"] for r in result["runs"]}
    assert arms == {"vanilla", "easy_first", "cyclical", "cyclical_self_paced"}
    for r in result["runs"]:
        assert 0.0 <= r["final"] <= r["best"] <= 1.0
    assert result["runs"][0]["best"] > 0.3  # 40 steps already learn something on digits
    md = (tmp_path / "ccl.md").read_text()
    rows = [l for l in md.splitlines() if l.startswith("| ") and "±" in l]
    assert [r.split("|")[1].strip() for r in rows] == [
        "vanilla", "easy_first", "cyclical", "cyclical_self_paced"]
    assert "not judged (fewer than 3 seeds)" in md  # no verdict from one seed
    assert "python experiments/ccl.py --quick" in md


# The scripts below compile one step per phase for every arm; to stay within
# seconds these run only the arms that use the issue-5 schedules.


@pytest.mark.slow
def test_sasr_quick_adaptive_arm_warms_up_on_sft(tmp_path):
    from experiments import sasr
    result = sasr.main(["--quick", "--arms", "adaptive", "--out",
                        str(tmp_path / "out"), "--workdir", str(tmp_path / "w")])
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    for r in result["runs"]:
        assert 20 <= r["sft_steps"] <= 40  # the 20 warm-up steps are SFT
        assert 0.0 <= r["final"] <= 1.0
    md = (tmp_path / "out" / "sasr.md").read_text()
    assert "python experiments/sasr.py --quick" in md and "our guess" in md
    assert "--workdir" not in md  # no machine paths in the written results


@pytest.mark.slow
def test_dump_quick_ucb_arm(tmp_path):
    from experiments import dump
    result = dump.main(["--quick", "--arms", "ucb", "--out", str(tmp_path / "out"),
                        "--workdir", str(tmp_path / "w")])
    (r,) = result["runs"]
    assert len(r["per_level"]) == 3 and abs(sum(r["share"]) - 1.0) < 1e-9  # smoke: 3 levels
    assert "not judged" in (tmp_path / "out" / "dump.md").read_text()


@pytest.mark.slow
def test_aioli_quick_aioli_arm_probes_each_group(tmp_path):
    from experiments import aioli
    result = aioli.main(["--quick", "--arms", "aioli", "stratified_one_optimizer", "--seeds", "0",
                         "1", "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "w")])
    r = result["runs"][0]
    assert [(x["arm"], x["seed"]) for x in result["runs"]] == [
        ("aioli", 0), ("stratified_one_optimizer", 0), ("aioli", 1), ("stratified_one_optimizer", 1)]
    assert len(r["per_group"]) == len(aioli.GROUPS) and np.isfinite(r["avg_test_loss"])
    # The multiplicative-weights arm's eta is searched with the rate (the config's by default).
    from configs import aioli as aioli_config
    cfg = aioli_config.get_config()
    assert aioli.schedule_for("multiplicative_weights", cfg)["eta"] == cfg.mw_eta
    assert aioli.schedule_for("multiplicative_weights", cfg, 1.0)["eta"] == 1.0
    assert cfg.mw_eta in aioli.MW_ETAS and len(aioli.MW_ETAS) >= 3 and len(cfg.seeds) == 10
    # Round = 10 exploit + 5 groups x 5 probe steps; step 20 is inside probe 3, whose
    # proportions (logged at step 20) up-weight the third group to 0.625.
    from alternating import metrics
    log = tmp_path / "w" / "aioli_lr0.003_s0" / "metrics.jsonl"
    rows = [row for row in metrics.read_jsonl(log)
            if row["split"] == "schedule" and row["step"] == 20]
    assert rows and rows[-1][f"p_{aioli.GROUPS[2]}"] == 0.625
    md = (tmp_path / "out" / "aioli.md").read_text()
    assert "| aioli |" in md and "| stratified_one_optimizer |" in md
    # --quick runs the config's rate only (no tuning runs); the page shows it as the choice.
    assert result["grid"]["values"] == [0.003] and result["grid"]["chosen"]["aioli"] == 0.003
    # The one-optimizer arm trains every group with one Adam state.
    res = json.loads((tmp_path / "w" / "stratified_one_optimizer_lr0.003_s0" / "results.json")
                     .read_text())
    assert list(res["opt_state_bytes_per_phase"]) == ["shared"]

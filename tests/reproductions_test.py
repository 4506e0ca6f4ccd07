"""Smoke runs of the issue-5 reproduction scripts (tiny steps, one seed)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from experiments import ccl  # noqa: E402


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

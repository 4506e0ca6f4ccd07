"""The benchmark scripts run and report their ratios (no timing assertions here)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_step_overhead_quick_prints_its_ratios():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # 1 device, as documented
    out = subprocess.run([sys.executable, "benchmarks/step_overhead.py", "--quick"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "step_overhead" and result["devices"] == 1
    for key in ("ratio", "cpu_time_ratio", "ratio_vs_bare", "host_loop_ratio"):
        assert result[key] > 0
    assert result["library_steps_per_s"] > 0 and result["handwritten_steps_per_s"] > 0

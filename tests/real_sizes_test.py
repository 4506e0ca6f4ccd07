"""benchmarks/real_sizes.py runs and reports its ratios (no timing assertions here)."""

import json
import os
import subprocess
import sys

import pytest
from benchmarks_test import one_device_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _strict_json(line):
    def reject(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=reject)


@pytest.mark.slow
def test_real_sizes_quick_prints_strict_json():
    env = one_device_env()  # 1 device
    out = subprocess.run([sys.executable, os.path.join("benchmarks", "real_sizes.py"), "--quick"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = _strict_json(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "real_sizes" and result["quick"] is True
    assert result["target"] == 0.9 and result["nproc"] >= 1 and result["cpu"]
    smoke = result["workloads"]["smoke"]
    for key in ("host_vs_hand_loop", "fused_vs_hand_scan", "fused_vs_host"):
        assert smoke[key]["median"] > 0, key
    assert set(result["ratios"]["smoke"]) == {"host_vs_hand_loop", "fused_vs_hand_scan"}
    assert {"host", "fused", "hand_loop", "hand_scan"} == set(smoke["steps_per_s"])
    # Same scheme, data and initial parameters: the library trains what the hand loop trains.
    assert max(smoke["max_param_diff_vs_hand_loop"].values()) < 1e-4
    parts = smoke["breakdown"]
    assert {"grad_norm", "input_path_library", "switch_in_scan", "host_loop_rest"} <= set(
        parts["attribution"])
    deleted, leaves = parts["donated"]["library_state"].split("/")
    assert deleted == leaves  # every state buffer donated to the step

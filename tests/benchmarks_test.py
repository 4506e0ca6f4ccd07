"""The benchmark scripts run and report their ratios (no timing assertions here)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_device_env(*drop: str) -> dict:
    """This process's environment for a benchmark's ``--quick`` run: 1 CPU device, the
    suite's other XLA flags (its optimization level: quick figures mean nothing), without
    the variables in ``drop``."""
    from experiments import launch_local
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["XLA_FLAGS"] = launch_local.device_count_flags(1)
    return env


@pytest.mark.slow
def test_step_overhead_quick_prints_its_ratios():
    env = one_device_env()  # 1 device, as documented
    out = subprocess.run([sys.executable, "benchmarks/step_overhead.py", "--quick"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "step_overhead" and result["devices"] == 1
    for key in ("ratio", "cpu_time_ratio", "ratio_vs_bare", "host_loop_ratio"):
        assert result[key] > 0
    assert result["library_steps_per_s"] > 0 and result["handwritten_steps_per_s"] > 0


def _strict_json(line):
    def reject(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(line, parse_constant=reject)


@pytest.mark.slow
@pytest.mark.parametrize("script,checks", [
    ("fused.py", lambda r: r["tiny"]["steps_per_s"]["fused"]["median"] > 0
     and {"fused_vs_lib_scan", "host_vs_lib_loop", "fused_vs_hand_scan", "fused_vs_host"}
     <= set(r["tiny"]) and r["targets"] == {"fused_vs_lib_scan": 0.9, "host_vs_lib_loop": 0.95}),
    ("seeds.py", lambda r: r["num_seeds"] == 8 and r["replica_steps_per_s"]["vectorized"]["median"] > 0),
    ("compiles.py", lambda r: r["one_per_phase_plus_eval"] is True),
    ("opt_state.py", lambda r: r["equal"] is True and r["library_bytes"] == r["expected_bytes"]
     and r["library_bytes"] < r["full_tree_per_phase_bytes"]),
    ("data_parallel.py", lambda r: r["same_results"] is True and r["devices"] == [1, 2]),
    ("data_pipeline.py", lambda r: r["steps_per_s"]["fused_pipeline"]["median"] > 0
     and "host_pipeline_vs_in_memory" in r),
    ("periodic.py", lambda r: r["steps_per_s"]["cond"] > 0 and r["every"] == 200),
    ("pytorch_baseline.py", lambda r: "skipped" in r or r["tiny"]["host_vs_torch"]["median"] > 0),
    ("eval_stream.py", lambda r: r["metrics_equal"] is True and r["examples"] > 0
     and r["seconds_per_eval"]["stream"]["median"] > 0 and r["cpu_time_ratio"]["median"] > 0),
])
def test_benchmark_quick_mode_prints_strict_json(script, checks):
    # 1 device. compiles.py counts the compiles XLA does, so it runs without the suite's
    # compilation cache; the others keep it (their programs repeat across scripts and runs).
    env = one_device_env(*(("JAX_COMPILATION_CACHE_DIR",) if script == "compiles.py" else ()))
    out = subprocess.run([sys.executable, os.path.join("benchmarks", script), "--quick"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = _strict_json(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == script[:-3]
    assert checks(result), {k: v for k, v in result.items() if k != "per_devices"}
    if "skipped" not in result:
        assert result["nproc"] >= 1 and result["cpu"]  # the machine is recorded


@pytest.mark.slow
def test_ablation_seeds_quick_replicas_equal_runs():
    env = one_device_env()  # 1 device
    out = subprocess.run([sys.executable, "benchmarks/ablation_seeds.py", "--quick",
                          "--scripts", "areal"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = _strict_json(out.stdout.strip().splitlines()[-1])
    areal = result["scripts"]["areal"]
    assert result["benchmark"] == "ablation_seeds" and areal["steps"] == 20
    assert areal["one_program_s"] > 0 and areal["speedup"] > 0
    assert areal["max_headline_drift"] < 1e-6  # 20 steps: each replica is its run


@pytest.mark.slow
def test_streaming_quick_prints_its_ratio_and_peak_memory():
    env = one_device_env()  # 1 device
    out = subprocess.run([sys.executable, "benchmarks/streaming.py", "--quick", "--gib", "0.05"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = _strict_json(out.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "streaming" and result["gib"] == 0.05
    assert result["examples"] * 1024 * 4 <= 0.05 * 2 ** 30 < result["file_bytes"]
    assert result["ratio"]["median"] > 0 and result["steps_per_s"]["stream"]["median"] > 0
    assert 0 < result["peak_rss_mb"]["stream"] and result["nproc"] >= 1 and result["cpu"]

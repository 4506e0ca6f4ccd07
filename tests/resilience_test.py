"""Exact resume and fault tolerance: kills, signals, damaged checkpoints, NaNs,
config changes, device-count changes, init_from and load_state."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alternating
from alternating import checkpoint as ckpt_lib, metrics as metrics_lib, parallel

import resume_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _spawn(workdir, schedule, total_steps=400):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "resume_worker.py"), str(workdir), schedule,
         str(total_steps)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _last_logged_step(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return -1
    with open(path) as f:
        lines = f.read().split("\n")
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError):
            continue
    return -1


def _run_until(workdir, schedule, after_step, sig, timeout=120):
    """Starts the worker, sends ``sig`` once it has logged ``after_step``; returns (rc, output)."""
    proc = _spawn(workdir, schedule)
    deadline = time.time() + timeout
    while _last_logged_step(workdir) < after_step:
        if proc.poll() is not None:
            raise AssertionError(f"worker ended before step {after_step}:\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("worker too slow")
        time.sleep(0.005)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def _train_rows(workdir):
    rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _timeline(workdir):
    return metrics_lib.read_jsonl(os.path.join(workdir, "timeline.jsonl"))


def _final(workdir):
    state, _ = alternating.load_state(workdir)
    return jax.device_get(state)


def _assert_same_run(reference, resumed):
    ref, got = _final(reference), _final(resumed)
    assert jax.tree.structure(ref) == jax.tree.structure(got)
    jax.tree.map(np.testing.assert_array_equal, ref, got)  # bit for bit
    assert _timeline(resumed) == _timeline(reference)  # the schedule's phase sequence
    assert _train_rows(resumed) == _train_rows(reference)  # every step logged once


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    out = {}
    for schedule in ("alternate", "weighted"):
        path = tmp_path_factory.mktemp(f"ref_{schedule}")
        resume_worker.run(path, schedule, print_fn=None)
        out[schedule] = str(path)
    return out


@pytest.mark.parametrize("schedule", ["alternate", "weighted"])
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path, references, schedule):
    rng = random.Random(schedule)
    workdir = str(tmp_path / "run")
    resumed_from = []
    for low, high in ((20, 180), (200, 350)):
        rc, out = _run_until(workdir, schedule, rng.randrange(low, high), signal.SIGKILL)
        assert rc == -signal.SIGKILL, out
        resumed_from.append(ckpt_lib.Checkpointer(workdir).latest_step())
    proc = _spawn(workdir, schedule)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resumed from" in out
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["resumed_from_step"] == resumed_from[-1]
    assert all(s is not None and 0 < s < 400 for s in resumed_from), resumed_from
    if schedule == "alternate":  # at least one resume lands inside a block of 3 or 2
        assert any(s % 5 not in (0, 3) for s in resumed_from), resumed_from
    _assert_same_run(references[schedule], workdir)


def test_sigterm_saves_at_the_current_step_and_exits_75(tmp_path, references):
    workdir = str(tmp_path / "run")
    rc, out = _run_until(workdir, "alternate", 150, signal.SIGTERM)
    assert rc == alternating.EXIT_PREEMPTED == 75, out
    assert "stopped by SIGTERM after step" in out
    stopped_at = int(out.split("stopped by SIGTERM after step ")[1].split(";")[0])
    assert ckpt_lib.Checkpointer(workdir).latest_step() == stopped_at
    proc = _spawn(workdir, "alternate")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resumed from" in out and f"at step {stopped_at}" in out
    _assert_same_run(references["alternate"], workdir)

"""Two processes on localhost (jax.distributed + gloo), 2 CPU devices each, train
the default smoke scheme data-parallel, are killed, resume, and match a
single-process 4-device run. This is the slowest test (about a minute)."""

import os
import signal
import time

import jax
import numpy as np

import alternating
from alternating import checkpoint as ckpt_lib
from alternating import metrics
from configs import default
from experiments import launch_local

FLAGS = ["--config=configs/default.py:smoke", "--config.checkpoint_every_steps=10",
         "--config.log_every_steps=5"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _logged_step(workdir):
    try:
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            return max((int(line.split('"step": ')[1].split(",")[0])
                        for line in f if '"split": "train"' in line), default=-1)
    except FileNotFoundError:
        return -1


def _saved(workdir, step):
    """Whether the checkpoint of ``step`` is finalized (Orbax renames it from a tmp name)."""
    return os.path.isdir(os.path.join(workdir, "checkpoints", str(step)))


def _launch(workdir, stop_after=None, sig=None, timeout=300, saved=None):
    procs = launch_local.launch(2, 2, FLAGS + [f"--workdir={workdir}"], all_to_files=True)
    deadline = time.time() + timeout
    if stop_after is not None:
        # Quiet logs are written a few steps late, and an async save finalizes
        # in the background: wait for the step logged and the checkpoint wanted.
        while _logged_step(workdir) < stop_after or (saved and not _saved(workdir, saved)):
            assert all(p.poll() is None for p in procs), _logs(workdir)
            assert time.time() < deadline, "two-process run too slow"
            time.sleep(0.05)
        for p in procs:
            p.send_signal(sig)
    return [p.wait(timeout=timeout) for p in procs]


def _logs(workdir):
    return "\n".join(open(os.path.join(workdir, f"process_{i}.log")).read()[-3000:]
                     for i in range(2) if os.path.exists(os.path.join(workdir, f"process_{i}.log")))


def test_two_processes_killed_and_resumed_match_one_process_on_four_devices(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    workdir = str(tmp_path / "two")
    codes = _launch(workdir, stop_after=15, sig=signal.SIGKILL, saved=10)
    assert codes == [-signal.SIGKILL] * 2
    killed_at = ckpt_lib.Checkpointer(workdir).latest_step()
    assert killed_at and killed_at >= 10
    # Resume; a SIGTERM to both processes: they agree on one step, save it, exit 75.
    # Rows the killed run logged past its checkpoint would satisfy the wait
    # below at once; the resumed run drops them too.
    metrics.truncate_jsonl(os.path.join(workdir, "metrics.jsonl"),
                           lambda row: int(row.get("step", 0)) <= killed_at)
    # Sent 10 steps after the resume point: the processes agree on a stop step
    # through the coordination service, which takes some steps, so the signal
    # must leave the run enough of them (60 in all).
    codes = _launch(workdir, stop_after=killed_at + 10, sig=signal.SIGTERM)
    assert codes == [alternating.EXIT_PREEMPTED] * 2, _logs(workdir)
    log0 = open(os.path.join(workdir, "process_0.log")).read()
    assert "resumed from" in log0 and f"at step {killed_at}" in log0
    stopped = ckpt_lib.Checkpointer(workdir).latest_step()
    assert f"stopped by SIGTERM after step {stopped}" in log0
    assert f"stopped by SIGTERM after step {stopped}" in open(
        os.path.join(workdir, "process_1.log")).read()
    # Finish.
    assert _launch(workdir) == [0, 0], _logs(workdir)
    two, _ = alternating.load_state(workdir)

    config = default.get_config("smoke")
    config.checkpoint_every_steps, config.log_every_steps = 10, 5
    one = alternating.train_and_evaluate(config, str(tmp_path / "one"), progress=False,
                                         plot=False, print_fn=None)
    assert len(jax.devices()) == 4
    # Measured: max |difference| 6e-8 after 60 steps (the gloo all-reduce sums
    # in another order than the in-process one), so not bit-identical.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(two), jax.device_get(one))
    assert int(two.step) == 60

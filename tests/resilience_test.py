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


# --- In-process faults: damaged checkpoints, non-finite values, config and device changes.

class _PoisonAt:
    """Builds a digits stream whose n-th batch (1-based, global order) is all NaN."""

    @staticmethod
    def stream(calls):
        from alternating import data as data_lib

        class Poisoned(data_lib.Stream):
            def __next__(self):
                batch = super().__next__()
                self.calls = getattr(self, "calls", 0) + 1
                if self.calls in calls:
                    batch = {**batch, "x": np.full_like(batch["x"], np.nan)}
                return batch

        base = data_lib.make_stream(resume_worker.DIGITS, seed=0)
        return Poisoned(base._arrays, batch_size=32, seed=0)  # pylint: disable=protected-access


def _leaves_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


@pytest.fixture(scope="module")
def straight40(tmp_path_factory):
    path = tmp_path_factory.mktemp("straight40")
    return str(path), resume_worker.run(path, total_steps=40, print_fn=None)


@pytest.mark.parametrize("damage", ["truncated_file", "missing_item", "unfinished_save"])
def test_a_damaged_latest_checkpoint_is_set_aside_and_the_previous_one_used(
        tmp_path, caplog, straight40, damage):
    workdir = str(tmp_path / "run")
    resume_worker.run(workdir, total_steps=28, print_fn=None)  # checkpoints at 21 and 28
    ckdir = os.path.join(workdir, "checkpoints")
    assert sorted(os.listdir(ckdir))[:2] == ["21", "28"]
    expected_from = 21
    if damage == "truncated_file":
        # Every array data file cut in half, as a full disk or a kill mid-copy would leave it.
        files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(ckdir, "28", "state"))
                 for f in fs if os.path.basename(d) == "d"]
        assert files
        for path in files:
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
    elif damage == "missing_item":
        shutil.rmtree(os.path.join(ckdir, "28", "schedule"))
    else:  # a save of step 35 that never finished: Orbax's temporary directory
        shutil.copytree(os.path.join(ckdir, "28"), os.path.join(ckdir, "35.orbax-checkpoint-tmp-1"))
        os.remove(os.path.join(ckdir, "35.orbax-checkpoint-tmp-1", "meta", "metadata"))
        expected_from = 28
    with caplog.at_level("WARNING", logger="alternating"):
        state = resume_worker.run(workdir, total_steps=40, print_fn=None)
    assert any("moved to checkpoints_damaged" in r.getMessage() for r in caplog.records)
    damaged = os.listdir(os.path.join(workdir, "checkpoints_damaged"))
    assert len(damaged) == 1 and damaged[0].startswith("35" if damage == "unfinished_save" else "28")
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["resumed_from_step"] == expected_from
    _leaves_equal(state, straight40[1])
    if expected_from == 21:  # (resuming at 28, the first run's final log at 28 stays)
        assert _train_rows(workdir) == _train_rows(straight40[0])


def test_no_restorable_checkpoint_is_an_error_not_a_silent_fresh_start(tmp_path):
    workdir = str(tmp_path / "run")
    resume_worker.run(workdir, total_steps=7, print_fn=None)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "7", "state"))
    with pytest.raises(alternating.CheckpointError, match="no checkpoint .* could be restored"):
        resume_worker.run(workdir, total_steps=14, print_fn=None)
    assert os.listdir(os.path.join(workdir, "checkpoints_damaged"))  # kept, not deleted


def test_nan_policy_raise_names_step_phase_and_metric_and_saves_nothing_after(tmp_path):
    workdir = str(tmp_path / "run")
    # Batch 13 is step 12: in the pattern a,a,a,b,b it is phase a's.
    with pytest.raises(alternating.NonFiniteError, match=r"non-finite \w+ at step 12 in phase 'a'"):
        resume_worker.run(workdir, total_steps=40, data={"digits": _PoisonAt.stream({13})},
                          print_fn=None)
    ck = ckpt_lib.Checkpointer(workdir)
    assert ck.all_steps() == [7]  # the check before saving step 14 stopped the run
    state, _ = alternating.load_state(workdir)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state)))


def test_nan_policy_skip_drops_the_update_and_counts_it(tmp_path):
    workdir = str(tmp_path / "run")
    state = resume_worker.run(workdir, total_steps=20, nan_policy="skip",
                              data={"digits": _PoisonAt.stream({13})}, print_fn=None)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(jax.device_get(state)))
    results = json.load(open(os.path.join(workdir, "results.json")))
    assert results["nonfinite_skips_per_phase"] == {"a": 1, "b": 0}
    # 12 steps of phase a ran; the skipped one did not count (its update was dropped).
    assert results["steps_per_phase"] == {"a": 11, "b": 8}
    assert int(state.step) == 20
    rows = [r for r in _train_rows(workdir) if r.get("phase") == "a" and r["split"] == "train"]
    assert [r["skipped"] for r in rows] == [0.0, 1.0]
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_nan_policy_skip_stops_after_too_many_in_a_row(tmp_path):
    with pytest.raises(alternating.NonFiniteError, match="3 of its steps in a row"):
        resume_worker.run(tmp_path / "run", total_steps=40, nan_policy="skip",
                          max_consecutive_skips=3, data={"digits": _PoisonAt.stream(range(5, 40))},
                          print_fn=None)


def test_an_incompatible_resume_is_refused_listing_the_differences(tmp_path):
    workdir = str(tmp_path / "run")
    cfg = {"model": {"name": "mlp", "features": [16, 10]}, "total_steps": 14, "seed": 3}
    resume_worker.run(workdir, total_steps=14, config=cfg, print_fn=None)
    # A config change that cannot be resumed: every difference is listed.
    bad = {**cfg, "model": {"name": "mlp", "features": [16, 12]}, "seed": 4}
    with pytest.raises(alternating.CheckpointError) as e:
        resume_worker.run(workdir, total_steps=21, config=bad, print_fn=None)
    assert "config.model.features[1]: 10 -> 12" in str(e.value)
    assert "config.seed: 3 -> 4" in str(e.value)
    # A structural change (phase a now also trains Dense_1): the arrays that differ.
    phases = [alternating.Phase("a", loss=resume_worker._loss, data="digits", params=[(".*", True)],
                                optimizer={"name": "adam", "lr": 3e-3}),
              alternating.Phase("b", loss=resume_worker._loss, data="digits",
                                params=[("Dense_1/.*", True), (".*", None)],
                                optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9})]
    with pytest.raises(alternating.CheckpointError, match="opt_state/a/0/mu/Dense_1/kernel: in this run"):
        alternating.train(phases=phases, schedule=resume_worker.SCHEDULES["alternate"],
                          data={"digits": resume_worker.DIGITS},
                          init=lambda rng: resume_worker.MODEL.init(rng, jnp.zeros((1, 64)))["params"],
                          workdir=workdir, total_steps=21, seed=3, ema_decay=0.9,
                          progress=False, plot=False, print_fn=None)
    assert ckpt_lib.Checkpointer(workdir).all_steps() == [7, 14]  # nothing touched
    # A safe change is accepted and reported.
    lines = []
    resume_worker.run(workdir, total_steps=21, config={**cfg, "total_steps": 21},
                      print_fn=lines.append)
    assert "  config.total_steps changed on resume: 14 -> 21" in lines


def test_a_4_device_checkpoint_restores_on_1_and_2_devices(tmp_path, straight40):
    workdir, _ = straight40
    ck = ckpt_lib.Checkpointer(workdir)
    step = ck.latest_step()
    ref = None
    for n in (4, 2, 1):
        mesh = parallel.make_mesh(jax.devices()[:n])
        rep = parallel.replicated(mesh)
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=rep),
                              ck.metadata(step))
        params = ck.restore(step, target)["state"]["params"]
        assert all(len(x.sharding.device_set) == n for x in jax.tree.leaves(params))
        if ref is None:
            ref = params
        _leaves_equal(params, ref)
    # And training continues on 1 device from the 4-device checkpoint.
    one = str(tmp_path / "one")
    shutil.copytree(workdir, one)
    state = resume_worker.run(one, total_steps=47, mesh=parallel.make_mesh(jax.devices()[:1]),
                              print_fn=None)
    four = resume_worker.run(str(tmp_path / "four"), total_steps=47, print_fn=None)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(state.params), jax.device_get(four.params))


def test_init_from_params_or_state_of_another_run(tmp_path, straight40):
    source, final = straight40
    final = jax.device_get(final)
    # params: one step of phase a (which trains Dense_0 only) leaves Dense_1 as loaded.
    p = jax.device_get(resume_worker.run(tmp_path / "p", total_steps=1, init_from=source,
                                         print_fn=None))
    _leaves_equal(p.params["Dense_1"], final.params["Dense_1"])
    assert not np.array_equal(p.params["Dense_0"]["kernel"], final.params["Dense_0"]["kernel"])
    assert int(p.phase_steps["b"]) == 0  # fresh optimizer states and counters
    # state: optimizer states and counters carry over; the global step restarts.
    s = jax.device_get(resume_worker.run(
        tmp_path / "s", total_steps=1, init_from={"workdir": source, "mode": "state"},
        print_fn=None))
    _leaves_equal(s.opt_state["b"], final.opt_state["b"])
    assert int(s.step) == 1 and int(s.phase_steps["b"]) == int(final.phase_steps["b"])
    # A run whose model differs is refused, naming the arrays.
    narrow = resume_worker.MLP(features=(8, 10))

    def narrow_loss(params, batch, rng, extras):
        logits = narrow.apply({"params": params}, batch["x"])
        return jnp.mean((logits - jax.nn.one_hot(batch["y"], 10)) ** 2), {}

    with pytest.raises(alternating.CheckpointError, match="Dense_0/kernel: checkpoint"):
        alternating.train(
            phases=[alternating.Phase("a", loss=narrow_loss, data="digits",
                                      optimizer={"name": "sgd", "lr": 0.1})],
            schedule=None, data={"digits": resume_worker.DIGITS},
            init=lambda rng: narrow.init(rng, jnp.zeros((1, 64)))["params"],
            workdir=str(tmp_path / "bad"), total_steps=1, init_from=source,
            progress=False, plot=False, print_fn=None)


def test_load_state_rebuilds_the_train_state_from_the_saved_config(tmp_path):
    import ml_collections
    from configs import agd
    config = agd.get_config("smoke")
    config.total_steps = 6
    config.log_every_steps = 3
    config.eval = ml_collections.ConfigDict({})
    final = alternating.train_and_evaluate(config, str(tmp_path), progress=False, plot=False,
                                           print_fn=None)
    state, saved = alternating.load_state(str(tmp_path))
    assert isinstance(state, alternating.TrainState)
    assert saved.total_steps == 6
    assert json.loads(saved.model.to_json()) == json.loads(config.model.to_json())
    assert jax.tree.structure(state) == jax.tree.structure(final)  # optax states, not dicts
    _leaves_equal(state, final)
    with pytest.raises(alternating.CheckpointError, match="saved steps: \\[6\\]"):
        alternating.load_state(str(tmp_path), step=3)


def test_a_signal_under_the_fused_executor_saves_the_states_before_its_read_ahead(
        tmp_path, straight40):
    """The fused executor reads the next chunk while one computes; a stop at
    that boundary must save the streams' and schedule's states of the stop
    step, not of the read-ahead."""
    from alternating.schedules.static import Alternate

    class SignalWhilePlanning(Alternate):
        def plan(self, step, n):
            if step == 10:  # the read-ahead after the chunk ending at the log step 10
                os.kill(os.getpid(), signal.SIGINT)
            return super().plan(step, n)

    workdir = str(tmp_path / "run")
    schedule = SignalWhilePlanning(["a", "b"], pattern=[["a", 3], ["b", 2]])
    with pytest.raises(alternating.Preempted) as e:
        resume_worker.run(workdir, total_steps=40, executor="fused", schedule_obj=schedule,
                          print_fn=None)
    assert e.value.code == alternating.EXIT_PREEMPTED and e.value.step == 10
    assert ckpt_lib.Checkpointer(workdir).all_steps() == [7, 10]
    state = resume_worker.run(workdir, total_steps=40, executor="fused", print_fn=None)
    _leaves_equal(state, straight40[1])  # host executor, never interrupted
    assert _train_rows(workdir) == _train_rows(straight40[0])

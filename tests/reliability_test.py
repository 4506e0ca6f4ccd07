"""Nothing lost, nothing silently wrong: the workdir lock and write check in a
run, fresh starts that set earlier logs aside, damaged log lines on resume,
TensorBoard after a kill, harmful numbers, every config field overridable,
and a custom schedule's arguments saved with its checkpoints."""

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
from alternating import checkpoint as ckpt_lib
from alternating import metrics as metrics_lib
from alternating import workdir as workdir_lib
from alternating.phase import make_optimizer
from alternating.schedules import Schedule

import resume_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _spawn(workdir, total_steps=400, checkpoint_every=7, schedule="alternate"):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "resume_worker.py"), str(workdir), schedule,
         str(total_steps), str(checkpoint_every)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _last_logged_step(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return -1
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for line in reversed(lines):
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue
    return -1


def _wait_logged(proc, workdir, step, timeout=180):
    deadline = time.time() + timeout
    while _last_logged_step(workdir) < step:
        if proc.poll() is not None:
            raise AssertionError(f"worker ended before step {step}:\n{proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("worker too slow")
        time.sleep(0.005)


def _kill_after(workdir, step, **kw):
    proc = _spawn(workdir, **kw)
    _wait_logged(proc, workdir, step)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def _rows(workdir):
    rows = metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _timeline(workdir):
    return metrics_lib.read_jsonl(os.path.join(workdir, "timeline.jsonl"))


def _leaves_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


def _quiet(workdir, **kw):
    return resume_worker.run(workdir, print_fn=None, **kw)


# --- 1. The workdir lock and the write check, in a run.

def test_a_second_run_on_a_busy_workdir_is_refused_at_once_and_the_first_finishes(tmp_path):
    workdir = str(tmp_path / "run")
    proc = _spawn(workdir, total_steps=300)
    try:
        _wait_logged(proc, workdir, 10)
        t0 = time.time()
        with pytest.raises(workdir_lib.WorkdirLockedError) as e:
            _quiet(workdir, total_steps=300)
        assert time.time() - t0 < 5  # refused before anything was built
        assert f"pid {proc.pid} on host" in str(e.value) and "another workdir" in str(e.value)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    # The first run's outputs are whole: every log step once per phase, no set-aside logs.
    steps = sorted({r["step"] for r in _rows(workdir) if r["split"] == "train"})
    assert steps == list(range(10, 301, 10))
    train = [(r["step"], r["phase"]) for r in _rows(workdir) if r["split"] == "train"]
    assert len(train) == len(set(train))
    assert json.load(open(os.path.join(workdir, "results.json")))["steps"] == 300
    assert not os.path.exists(os.path.join(workdir, "previous"))
    assert open(os.path.join(workdir, ".lock")).read() == ""  # released
    # Once it is released, the workdir is usable again (a finished run: nothing to do).
    _quiet(workdir, total_steps=300)


def _lock_is_free(workdir):
    with workdir_lib.WorkdirLock(workdir, process_index=0) as lock:
        return lock.held


def test_the_lock_is_released_on_an_error_and_on_a_stop_signal(tmp_path):
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"unknown phase\(s\) \['c'\]"):  # raised inside the lock
        _train(workdir, _two_phases(None), {"name": "single", "phase": "c"}, total_steps=7)
    assert _lock_is_free(workdir)
    from alternating.schedules.static import Alternate

    class StopAt5(Alternate):
        def next_phase(self, step):
            if step == 5:
                os.kill(os.getpid(), signal.SIGINT)
            return super().next_phase(step)

    with pytest.raises(alternating.Preempted):
        _quiet(workdir, total_steps=20, schedule_obj=StopAt5(["a", "b"], pattern=[["a", 3], ["b", 2]]))
    assert _lock_is_free(workdir)


@pytest.mark.parametrize("where", ["a_file", "below_a_file", "too_long"])
def test_an_unusable_workdir_fails_before_any_work(tmp_path, where):
    (tmp_path / "file").write_text("x")
    workdir = {"a_file": tmp_path / "file", "below_a_file": tmp_path / "file" / "run",
               "too_long": tmp_path / ("x" * (os.pathconf(tmp_path, "PC_NAME_MAX") + 1))}[where]
    match = "characters; this file system allows" if where == "too_long" else "not a directory"
    # A data set that does not exist: reached only if the workdir check came later.
    with pytest.raises(workdir_lib.WorkdirError, match=match) as e:
        _quiet(workdir, total_steps=7, data={"digits": {"dataset": "no_such_dataset",
                                                        "batch_size": 32}})
    assert "\n" not in str(e.value) and "Pass another --workdir" in str(e.value)


def test_max_checkpoints_to_keep_below_one_is_refused_through_train(tmp_path):
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=r"max_checkpoints_to_keep=0; it must be >= 1"):
        _quiet(workdir, total_steps=7, max_checkpoints_to_keep=0)
    assert not workdir.exists()  # refused before the workdir was touched


# --- 2. A fresh start in a workdir with an earlier run's logs.

@pytest.fixture(scope="module")
def straight200(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("straight200"))
    _quiet(path, total_steps=200, checkpoint_every_steps=1000)
    return path


def test_a_run_killed_before_its_first_checkpoint_restarts_with_clean_logs(tmp_path, straight200):
    workdir = str(tmp_path / "run")
    _kill_after(workdir, random.Random(0).randrange(40, 120), total_steps=200, checkpoint_every=1000)
    assert not ckpt_lib.Checkpointer(workdir).all_steps()
    killed_rows = _rows(workdir)
    lines = []
    state = resume_worker.run(workdir, total_steps=200, checkpoint_every_steps=1000,
                              print_fn=lines.append)
    assert any(l.startswith("a fresh start (no checkpoint here)") and "previous" in l
               for l in lines), lines
    # The logs are those of an uninterrupted run; the killed run's are kept aside.
    assert _rows(workdir) == _rows(straight200)
    assert _timeline(workdir) == _timeline(straight200)
    (moved,) = os.listdir(os.path.join(workdir, "previous"))
    assert _rows(os.path.join(workdir, "previous", moved)) == killed_rows
    assert "no checkpoint here" in open(
        os.path.join(workdir, "previous", moved, "REASON.txt")).read()
    assert os.path.isdir(os.path.join(workdir, "previous", moved, "tensorboard"))
    _leaves_equal(state, alternating.load_state(straight200, target=state)[0])


def test_after_every_checkpoint_was_set_aside_the_next_run_starts_clean(tmp_path):
    workdir, straight = str(tmp_path / "run"), str(tmp_path / "straight")
    _quiet(straight, total_steps=14)
    _quiet(workdir, total_steps=14)
    for step in (7, 14):
        shutil.rmtree(os.path.join(workdir, "checkpoints", str(step), "state"))
    with pytest.raises(alternating.CheckpointError, match="no checkpoint .* could be restored"):
        _quiet(workdir, total_steps=14)  # an error, not a silent fresh start
    assert len(os.listdir(os.path.join(workdir, "checkpoints_damaged"))) == 2
    lines = []
    resume_worker.run(workdir, total_steps=14, print_fn=lines.append)
    assert any("a fresh start" in l and "2 checkpoint(s) set aside as damaged" in l
               for l in lines), lines
    assert _rows(workdir) == _rows(straight)
    assert _timeline(workdir) == _timeline(straight)
    assert len(os.listdir(os.path.join(workdir, "previous"))) == 1


def test_vectorized_seeds_rerun_from_scratch_with_clean_logs(tmp_path):
    workdir, once = str(tmp_path / "run"), str(tmp_path / "once")
    kw = dict(total_steps=10, num_seeds=2, checkpoint_every_steps=0)
    _quiet(once, **kw)
    _quiet(workdir, **kw)
    _quiet(workdir, **kw)  # (no checkpoints: runs again from scratch)
    assert _rows(workdir) == _rows(once)
    assert len(os.listdir(os.path.join(workdir, "previous"))) == 1


# --- 3. Lines in the logs that no writer produces, on resume.

GARBAGE = {
    "null": (b"null", b"null"),
    "not_an_object": (b"[1, 2, 3]", b'"a string"'),
    "missing_key": (b'{"split": "train", "phase": "a", "loss": 1.0}', b'{"start": 3, "phase": "a"}'),
    "not_an_integer": (b'{"step": "7", "split": "train", "phase": "a", "loss": 1.0}',
                       b'{"start": 0, "end": 2.5, "phase": "a"}'),
    "not_utf8": (b'{"step": 7, "split": "train", "phase": "\xff\xfe"}', b"\xc3\x28 garbage"),
}


@pytest.fixture(scope="module")
def at21(tmp_path_factory):
    """A run that ended at its step-21 checkpoint, and the same resumed to 28 (clean logs)."""
    run = str(tmp_path_factory.mktemp("at21"))
    _quiet(run, total_steps=21)
    clean = str(tmp_path_factory.mktemp("clean28") / "run")
    shutil.copytree(run, clean)
    _quiet(clean, total_steps=28)
    return run, clean


def _insert(path, line):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    lines.insert(2, line)  # among the rows the checkpoint covers
    lines.insert(len(lines) - 1, line)  # and after them
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))


@pytest.mark.parametrize("kind", sorted(GARBAGE))
def test_garbage_in_the_logs_is_dropped_and_reported_on_resume(tmp_path, at21, caplog, kind):
    workdir = str(tmp_path / "run")
    shutil.copytree(at21[0], workdir)
    metrics_line, timeline_line = GARBAGE[kind]
    _insert(os.path.join(workdir, "metrics.jsonl"), metrics_line)
    _insert(os.path.join(workdir, "timeline.jsonl"), timeline_line)
    with caplog.at_level("WARNING", logger="alternating"):
        _quiet(workdir, total_steps=28)
    assert _rows(workdir) == _rows(at21[1])
    assert _timeline(workdir) == _timeline(at21[1])
    for name in ("metrics.jsonl", "timeline.jsonl"):  # rewritten without them
        with open(os.path.join(workdir, name), "rb") as f:
            assert all(isinstance(json.loads(l), dict) for l in f.read().splitlines())
        warned = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(warned) == 1 and "dropped 2 line(s)" in warned[0] and "line 3 (" in warned[0]


def test_read_jsonl_skips_and_reports_rows_no_writer_produces(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "loss": 1.0}\nnull\n[1]\n{"loss": 2.0}\n{"step": true}\n'
                     b'\xff\n{"step": 2, "loss": 3.0}\n')
    with caplog.at_level("WARNING", logger="alternating"):
        rows = metrics_lib.read_jsonl(path)
    assert [r["step"] for r in rows] == [1, 2]
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "skipped 5 line(s)" in msg
    for n, why in ((2, "null"), (3, "not an object"), (4, "no 'step'"),
                   (5, "step=True is not an integer"), (6, "not UTF-8")):
        assert f"{n} (" in msg and why in msg, (n, why, msg)


# --- 4. TensorBoard after kills: the same series as metrics.jsonl.

def _tensorboard_series(workdir):
    from tensorboard.backend.event_processing import event_accumulator
    acc = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"),
                                             size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _jsonl_series(workdir):
    out = {}
    for row in metrics_lib.read_jsonl(os.path.join(workdir, "metrics.jsonl")):
        name = row.get("phase", row.get("set"))
        for k, v in row.items():
            if k not in ("step", "split", "phase", "set", "time"):
                out.setdefault(f"{row['split']}/{name}/{k}", []).append(
                    (row["step"], float(np.float32(v))))
    return out


def test_tensorboard_events_are_on_disk_when_written_and_a_resume_overwrites_nothing(tmp_path):
    workdir = str(tmp_path)
    first = metrics_lib.MetricWriter(workdir, jsonl=False)
    for step in (1, 2, 3):
        first.write_train(step, "a", {"loss": float(step)})
    # Read back before any flush or close: a killed process would have left this.
    assert _tensorboard_series(workdir)["train/a/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    first.close()
    # Resumed at once (the same second): a new file; events past step 2 are purged.
    with metrics_lib.MetricWriter(workdir, jsonl=False, resume_step=2) as second:
        second.write_train(3, "a", {"loss": 30.0})
        second.write_train(4, "a", {"loss": 40.0})
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 2
    assert _tensorboard_series(workdir)["train/a/loss"] == [(1, 1.0), (2, 2.0), (3, 30.0),
                                                            (4, 40.0)]


def test_tensorboard_after_kills_holds_every_logged_step_once(tmp_path):
    workdir = str(tmp_path / "run")
    rng = random.Random(4)
    for low, high in ((40, 150), (180, 330)):
        _kill_after(workdir, rng.randrange(low, high))
    proc = _spawn(workdir)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "resumed from" in out, out
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 3
    tb, jsonl = _tensorboard_series(workdir), _jsonl_series(workdir)
    assert set(tb) == set(jsonl) and "train/a/loss" in tb
    for tag, series in jsonl.items():
        assert [s for s, _ in tb[tag]] == [s for s, _ in series], tag  # none twice, none missing
        np.testing.assert_array_equal([v for _, v in tb[tag]], [v for _, v in series])
    assert [s for s, _ in tb["train/a/loss"]] == list(range(10, 401, 10))


# --- 5. Harmful numbers.

@pytest.mark.parametrize("spec,match", [
    ({"lr": -0.1}, r"optimizer\.lr=-0\.1; it must be a finite number >= 0"),
    ({"lr": float("nan")}, r"optimizer\.lr=nan; it must be a finite number >= 0"),
    ({"learning_rate": float("inf")}, r"optimizer\.learning_rate=inf; it must be a finite"),
    ({"grad_clip_norm": -1.0}, r"optimizer\.grad_clip_norm=-1\.0; it must be a finite number >= 0"),
    ({"warmup_steps": -5}, r"optimizer\.warmup_steps=-5; it must be a whole number >= 0"),
    ({"warmup_steps": 2.5}, r"optimizer\.warmup_steps=2\.5; it must be a whole number"),
    ({"decay_steps": 10.5}, r"optimizer\.decay_steps=10\.5; it must be a whole number"),
    ({"weight_decay": -1e-4}, r"optimizer\.weight_decay=-0\.0001; it must be a finite number >= 0"),
    ({"b1": 1.0}, r"optimizer\.b1=1\.0; it must be a finite number >= 0 and < 1"),
    ({"b2": -0.5}, r"optimizer\.b2=-0\.5; it must be a finite number >= 0 and < 1"),
    ({"eps": 0.0}, r"optimizer\.eps=0\.0; it must be a finite number > 0"),
    ({"momentum": 1.5}, r"optimizer\.momentum=1\.5; it must be a finite number >= 0 and < 1"),
    ({"lr": "fast"}, r"optimizer\.lr='fast'; it must be a finite number"),
])
def test_harmful_optimizer_numbers_are_refused_naming_the_field_and_range(spec, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer({"name": "adam", **spec}, where="phase 'a' optimizer")


def _two_phases(optimizer_a):
    return [alternating.Phase("a", loss=resume_worker._loss, data="digits",
                              params=[("Dense_0/.*", True), (".*", None)], optimizer=optimizer_a),
            alternating.Phase("b", loss=resume_worker._loss, data="digits",
                              params=[("Dense_1/.*", True), (".*", None)])]


def _train(workdir, phases, schedule, **kw):
    return alternating.train(
        phases=phases, schedule=schedule, data={"digits": resume_worker.DIGITS},
        init=lambda rng: resume_worker.MODEL.init(rng, jnp.zeros((1, 64)))["params"],
        workdir=str(workdir), progress=False, plot=False, print_fn=None, **kw)


def test_a_harmful_number_stops_the_run_before_anything_compiles(tmp_path):
    with pytest.raises(ValueError, match=r"phase 'a' optimizer\.lr=-0\.001"):
        _train(tmp_path, _two_phases({"name": "adam", "lr": -1e-3}), None, total_steps=4)
    assert not (tmp_path / "checkpoints").exists()


def test_a_phase_the_schedule_never_runs_is_warned_about(tmp_path):
    schedule = {"name": "sequential", "stages": [["a", 6], ["b", 6]]}
    with pytest.warns(UserWarning, match=r"phase 'b' never runs under this schedule .* in 6 steps"):
        _train(tmp_path, _two_phases(None), schedule, total_steps=6)


# --- 8. A custom schedule's arguments are saved with its checkpoints.

class EveryK(Schedule):
    """A schedule of one's own that does not describe itself (no config())."""

    name = "every_k_test"

    def __init__(self, phases, k=2, *, offset=0):
        super().__init__(phases)
        self.k, self.offset = k, offset

    def next_phase(self, step):
        return self.phases[((step + self.offset) // self.k) % len(self.phases)]


def test_a_custom_schedule_resumed_with_other_arguments_is_refused(tmp_path):
    assert EveryK(["a", "b"], 3).config() == {"name": "every_k_test", "k": 3, "offset": 0}
    workdir = str(tmp_path / "run")
    _quiet(workdir, total_steps=7, schedule_obj=EveryK(["a", "b"], k=2))
    with pytest.raises(ValueError, match=r"different schedule .*'k': 2.* than the one configured "
                                         r"now .*'k': 3"):
        _quiet(workdir, total_steps=14, schedule_obj=EveryK(["a", "b"], k=3))
    assert ckpt_lib.Checkpointer(workdir).all_steps() == [7]  # nothing touched
    _quiet(workdir, total_steps=14, schedule_obj=EveryK(["a", "b"], k=2))  # the same: resumes
    assert json.load(open(os.path.join(workdir, "results.json")))["resumed_from_step"] == 7


# --- 7. Every config declares every top-level field.

TRAIN_CONFIGS = ("admm", "advmoe", "agd", "areal", "default", "gan", "mean_teacher", "rt")


@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_every_config_declares_every_top_level_field(name):
    import importlib
    from alternating import experiment
    sys.path.insert(0, ROOT)
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    assert set(config.keys()) == set(experiment.TOP_LEVEL)
    experiment.validate(config)
    # Unset fields hold the run options' defaults.
    assert config.num_seeds == 1 and config.executor == "auto" and list(config.hooks) == []

"""The command line: one ``error: ...`` line (no traceback) and an exit code for
every way a launch can fail; ``--help`` lists the flags; any config field can
be overridden on any config."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from alternating import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_CONFIGS = ("admm", "advmoe", "agd", "areal", "default", "gan", "mean_teacher", "rt")


def _cli(*args, timeout=120):
    out = subprocess.run([sys.executable, "-m", "alternating.main", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    return out.returncode, out.stdout, out.stderr


def _one_error_line(stderr):
    lines = [l for l in stderr.splitlines() if l.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("args,match", [
    (["--config.totl_steps=5"], "--config.totl_steps: config has no field 'totl_steps'; did you "
                                "mean --config.total_steps?"),
    (["--config.phases.images.optimizer.lrr=0.1"],
     "config.phases.images.optimizer has no field 'lrr'; did you mean "
     "--config.phases.images.optimizer.lr?"),
    (["--config.total_steps=many"], "--config.total_steps=many: invalid literal for int()"),
    (["--bogus=1"], "Unknown command line flag 'bogus'"),
    (["stray"], "unexpected arguments ['stray']"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, match):
    rc, _, err = _cli("--config=configs/default.py:smoke", f"--workdir={tmp_path}", *args)
    assert rc == main_lib.EXIT_USAGE == 2
    assert match in _one_error_line(err)


def test_a_wrong_config_path_or_variant_or_no_workdir_is_a_usage_error(tmp_path):
    rc, _, err = _cli("--config=configs/nope.py:smoke", f"--workdir={tmp_path}")
    assert rc == 2 and "the config file 'configs/nope.py' does not exist" in _one_error_line(err)
    rc, _, err = _cli("--config=configs/default.py:bogus", f"--workdir={tmp_path}")
    assert rc == 2 and "unknown variant 'bogus'" in _one_error_line(err)
    rc, _, err = _cli("--config=configs/default.py:smoke")
    assert rc == 2 and "--workdir" in _one_error_line(err)


@pytest.mark.parametrize("program", ["module", "console_script"])
def test_help_lists_the_flags(program):
    script = shutil.which("alternating", path=os.path.dirname(sys.executable))
    # `make test` installs the package, console script included.
    assert program == "module" or script is not None, "no `alternating` console script"
    cmd = ([sys.executable, "-m", "alternating.main"] if program == "module" else [script])
    out = subprocess.run(cmd + ["--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--config:", "--workdir:", "--distributed:", "--coordinator_address:",
                 "--num_processes:", "--process_id:", "--config.FIELD=VALUE"):
        assert flag in out.stdout, out.stdout


def test_a_bad_value_and_an_unusable_workdir_are_one_line_and_exit_1(tmp_path):
    rc, _, err = _cli("--config=configs/default.py:smoke", f"--workdir={tmp_path}",
                      "--config.ema_decay=2.0")
    assert rc == 1 and _one_error_line(err) == "error: ema_decay=2.0; it must be in [0, 1)."
    (tmp_path / "file").write_text("x")
    rc, _, err = _cli("--config=configs/default.py:smoke", f"--workdir={tmp_path / 'file'}")
    assert rc == 1 and "is a file, not a directory. Pass another --workdir" in _one_error_line(err)


# In-process: the mapping from what train_and_evaluate raises to the message and exit code.

@pytest.fixture
def launch(monkeypatch, tmp_path):
    """Runs ``main.run`` in this process with train_and_evaluate replaced by ``fn``."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def go(fn, capsys):
        from alternating import experiment
        monkeypatch.setattr(experiment, "train_and_evaluate", fn)
        with pytest.raises(SystemExit) as e:
            main_lib.run(["alternating", "--config=" + os.path.join(ROOT, "configs/gan.py:smoke"),
                          f"--workdir={tmp_path}"])
        return e.value.code, capsys.readouterr().err

    yield go
    for s, h in previous.items():
        signal.signal(s, h)


def _raiser(exc):
    def fn(config, workdir):
        raise exc
    return fn


def test_errors_from_training_map_to_one_line_and_their_exit_codes(launch, capsys):
    from alternating.checkpoint import CheckpointError
    from alternating.nonfinite import NonFiniteError
    from alternating.workdir import WorkdirLockedError
    cases = [
        (NonFiniteError("non-finite loss at step 12 in phase 'a'"), 3, "non-finite loss at step 12"),
        (CheckpointError("no checkpoint in 'x' could be restored"), 1, "could be restored"),
        (WorkdirLockedError("runs/x is in use by another run: pid 7"), 1, "in use by another run"),
        (ValueError("phase 'a' optimizer.lr=-1; it must be a finite number >= 0."), 1, "lr=-1"),
        (TypeError("init_from must be a workdir or a dict"), 1, "init_from must be"),
        (PermissionError(13, "Permission denied", "/nowhere/metrics.jsonl"), 1,
         "Permission denied: /nowhere/metrics.jsonl"),
    ]
    for exc, code, text in cases:
        got, err = launch(_raiser(exc), capsys)
        assert got == code, (exc, err)
        line = _one_error_line(err)
        assert text in line, (exc, line)
    err = ValueError("the step does not trace")
    err.add_note("(while checking phase 'a' on a batch of stream(s) ['real'])")
    got, text = launch(_raiser(err), capsys)
    assert got == 1 and "while checking phase 'a'" in text and "Traceback" not in text


def test_a_stop_signal_before_the_loop_exits_75(launch, capsys):
    def signalled_during_set_up(config, workdir):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal should have stopped the run")

    code, err = launch(signalled_during_set_up, capsys)
    assert code == main_lib.EXIT_PREEMPTED == 75
    assert "stopped by SIGTERM outside the training loop" in err


# Any field of any config can be overridden on the command line.

@pytest.mark.parametrize("name", TRAIN_CONFIGS)
def test_any_field_can_be_overridden_on_any_config(name):
    argv = ["x", f"--config={os.path.join(ROOT, 'configs', name + '.py')}:smoke",
            "--config.num_seeds=3", "--config.executor=fused", "--config.chunk_steps=7",
            "--config.init_from=runs/other", "--config.data_dir=data", "--config.ema_decay=0.5",
            "--config.nan_policy=skip", "--config.hooks=[{'name': 'my.module:Hook'}]",
            "--config.total_steps=5"]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    c = values.config
    assert (c.num_seeds, c.executor, c.chunk_steps, c.init_from, c.data_dir, c.ema_decay,
            c.nan_policy, c.total_steps) == (3, "fused", 7, "runs/other", "data", 0.5, "skip", 5)
    assert list(c.hooks) == [{"name": "my.module:Hook"}]

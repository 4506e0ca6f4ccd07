"""The run directory: the lock, the writability check, earlier logs set aside."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys

import pytest

from alternating import workdir as workdir_lib

# The holder runs in another process: flock conflicts between open file
# descriptions, and a process's death is what releases the lock.
_HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("workdir", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.WorkdirLock(sys.argv[2], process_index=0).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def _hold_in_subprocess(workdir):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, workdir_lib.__file__, str(workdir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_a_locked_workdir_is_refused_naming_the_holder(tmp_path):
    proc = _hold_in_subprocess(tmp_path)
    try:
        with pytest.raises(workdir_lib.WorkdirLockedError) as e:
            workdir_lib.WorkdirLock(tmp_path, process_index=0).acquire()
        msg = str(e.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in msg
        assert os.path.join(str(tmp_path), ".lock") in msg and "another workdir" in msg
        # The other processes of a multi-process run do not lock.
        assert not workdir_lib.WorkdirLock(tmp_path, process_index=1).acquire().held
    finally:
        proc.kill()
        proc.wait()


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    with workdir_lib.WorkdirLock(tmp_path, process_index=0) as lock:
        assert lock.held
        record = json.load(open(lock.path))
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(workdir_lib.WorkdirLockedError, match=f"pid {os.getpid()} "):
            workdir_lib.WorkdirLock(tmp_path, process_index=0).acquire()
    assert open(lock.path).read() == ""  # released: emptied, not deleted
    with workdir_lib.WorkdirLock(tmp_path, process_index=0):
        pass


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    proc = _hold_in_subprocess(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.load(open(tmp_path / ".lock"))["pid"] == proc.pid  # the file remains
    with caplog.at_level(logging.WARNING, logger="alternating"):
        with workdir_lib.WorkdirLock(tmp_path, process_index=0):
            assert json.load(open(tmp_path / ".lock"))["pid"] == os.getpid()
    assert any("took over the lock" in r.getMessage() and f"pid {proc.pid}" in r.getMessage()
               for r in caplog.records)


def test_check_writable_creates_the_directory(tmp_path):
    path = tmp_path / "a" / "b"
    assert workdir_lib.check_writable(path) == str(path)
    assert path.is_dir() and os.listdir(path) == []


def test_check_writable_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(workdir_lib.WorkdirError,
                       match=r"is below .*file', which is a file, not a directory\. Pass another"):
        workdir_lib.check_writable(tmp_path / "file" / "run")
    with pytest.raises(workdir_lib.WorkdirError, match=r"file' is a file, not a directory"):
        workdir_lib.check_writable(tmp_path / "file")


def test_check_writable_refuses_paths_too_long_for_the_file_system(tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(workdir_lib.WorkdirError,
                       match=rf"has {name_max + 1} characters; this file system allows {name_max}"):
        workdir_lib.check_writable(tmp_path / ("x" * (name_max + 1)))
    path_max = os.pathconf(tmp_path, "PC_PATH_MAX")
    deep = os.path.join(str(tmp_path), *["y" * 200] * (path_max // 201 + 1))
    with pytest.raises(workdir_lib.WorkdirError, match=rf"allows {path_max} in all"):
        workdir_lib.check_writable(deep)
    assert os.listdir(tmp_path) == []  # refused before creating anything


def test_set_aside_logs_moves_the_logs_and_deletes_nothing(tmp_path):
    run = tmp_path / "run"
    logs = {"metrics.jsonl": '{"step": 1}\n', "timeline.jsonl": '{"start": 0}\n',
            "results.json": "{}", "curves.png": "png", "tensorboard/events.out.tfevents.1.h": "ev"}
    for name, text in logs.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    (run / "checkpoints" / "7").mkdir(parents=True)
    (run / ".lock").write_text("")
    moved = workdir_lib.set_aside_logs(run, "a fresh start: no checkpoint restores")
    assert os.path.dirname(moved) == str(run / "previous")
    for name, text in logs.items():
        assert open(os.path.join(moved, name)).read() == text
    assert "no checkpoint restores" in open(os.path.join(moved, "REASON.txt")).read()
    assert sorted(os.listdir(run)) == [".lock", "checkpoints", "previous"]
    assert workdir_lib.set_aside_logs(run, "again") is None  # nothing left to move
    (run / "metrics.jsonl").write_text('{"step": 2}\n')
    again = workdir_lib.set_aside_logs(run, "again")
    assert again != moved and len(os.listdir(run / "previous")) == 2
    assert open(os.path.join(moved, "metrics.jsonl")).read() == '{"step": 1}\n'

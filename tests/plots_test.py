"""Tests for alternating.plots."""

import os
import subprocess
import sys

import pytest

from alternating import metrics
from alternating import plots

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_run(workdir, steps=200, evals=True, timeline=True):
    recorder = metrics.TimelineRecorder()
    with metrics.MetricWriter(workdir, tensorboard=False) as w:
        for step in range(steps):
            phase = "gen" if step % 3 else "disc"
            recorder.record(step, phase)
            if step % 10 == 9:
                w.write_train(step, "gen", {"loss": 1.0 / (step + 1), "accuracy": step / steps})
                w.write_train(step, "disc", {"loss": 2.0 / (step + 1)})
                if timeline:
                    recorder.flush(w)
            if evals and step % 50 == 49:
                w.write_eval(step, "test", {"loss": 1.5 / (step + 1), "accuracy": 0.5})
                w.write_eval(step, "valid", {"loss": 1.2 / (step + 1)})
        if timeline:
            recorder.close(w)


def _assert_png(path):
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == _PNG_MAGIC


def test_plot_run_train_eval_timeline(tmp_path):
    _write_run(tmp_path)
    path = plots.plot_run(tmp_path)
    assert path == tmp_path / "curves.png"
    _assert_png(path)


def test_plot_run_train_only_to_out(tmp_path):
    _write_run(tmp_path, evals=False, timeline=False)
    out = tmp_path / "figs" / "train.png"
    assert plots.plot_run(str(tmp_path), out=out) == out
    _assert_png(out)


def test_plot_run_many_one_step_segments(tmp_path):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        w.write_train(4999, "a", {"loss": -1.0})  # Non-positive: linear scale.
        w.write_train(4999, "b", {"loss": float("nan")})
        w.write_timeline([(s, s + 1, "ab"[s % 2]) for s in range(5000)])
    assert len(plots.phase_timeline(tmp_path)) == 5000
    _assert_png(plots.plot_run(tmp_path))


def test_plot_run_empty_metrics_still_writes_png(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    _assert_png(plots.plot_run(tmp_path))


def test_plot_run_missing_metrics_says_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="--workdir"):
        plots.plot_run(tmp_path)


def test_phase_timeline_merges_and_resume_supersedes(tmp_path):
    assert plots.phase_timeline(tmp_path) == []
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        w.write_timeline([(0, 3, "a"), (3, 5, "a"), (5, 9, "b"), (9, 12, "a")])
        # Resumed from a checkpoint at step 7: steps 7.. were run again.
        w.write_timeline([(7, 8, "b"), (8, 10, "c")])
    assert plots.phase_timeline(tmp_path) == [(0, 5, "a"), (5, 8, "b"), (8, 10, "c")]


def test_latest_rows_drop_rows_redone_after_resume():
    rows = [{"step": s} for s in (10, 10, 20, 30, 20, 20, 40)]
    assert [r["step"] for r in plots._latest_rows(rows)] == [10, 10, 20, 20, 40]


def test_plot_run_leaves_pyplot_and_backend_alone(tmp_path):
    # Figure + the Agg canvas directly: no pyplot import, which would pick a
    # global backend in a user's notebook. A fresh interpreter, since another
    # test may have imported pyplot into this one.
    _write_run(tmp_path, steps=20)
    code = (
        "import sys\n"
        "from alternating import plots\n"
        f"plots.plot_run({str(tmp_path)!r})\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)

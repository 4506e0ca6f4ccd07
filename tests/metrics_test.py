"""Tests for alternating.metrics."""

import glob
import io
import json
import math
import os
import struct

import numpy as np
import pytest

from alternating import metrics


# ---------------------------------------------------------------------------
# aggregate / first_nonfinite


def test_aggregate_means_counters_and_steps():
    records = [
        (0, "gen", {"loss": 1.0, "accuracy": np.float32(0.5), "lr": 0.1, "phase_step": 1}),
        (1, "disc", {"loss": 4.0, "disc_steps": 1}),
        (2, "gen", {"loss": 2.0, "accuracy": 0.25, "lr": 0.2, "phase_step": 2}),
        (3, "gen", {"loss": np.array(6.0), "accuracy": 0.0, "lr": 0.3, "phase_step": 3}),
        (4, "disc", {"loss": 5.0, "disc_steps": 2}),
    ]
    out = metrics.aggregate(records)
    assert list(out) == ["gen", "disc"]
    assert out["gen"] == {"loss": 3.0, "accuracy": 0.25, "lr": 0.3, "phase_step": 3.0,
                          "steps": 3}
    assert out["disc"] == {"loss": 4.5, "disc_steps": 2.0, "steps": 2}


def test_aggregate_metric_missing_from_some_records_averages_where_present():
    out = metrics.aggregate([(0, "a", {"loss": 1.0, "aux": 10.0}), (1, "a", {"loss": 3.0})])
    assert out == {"a": {"loss": 2.0, "aux": 10.0, "steps": 2}}


def test_aggregate_empty_and_nan_propagates():
    assert metrics.aggregate([]) == {}
    out = metrics.aggregate([(0, "a", {"loss": 1.0}), (1, "a", {"loss": float("nan")})])
    assert math.isnan(out["a"]["loss"])


def test_aggregate_rejects_reserved_and_non_scalar():
    with pytest.raises(ValueError, match="'steps'.*rename"):
        metrics.aggregate([(0, "a", {"steps": 1.0})])
    with pytest.raises(TypeError, match="'grad'.*not a scalar"):
        metrics.aggregate([(0, "a", {"grad": np.ones(3)})])


def test_is_counter():
    assert metrics.is_counter("lr")
    assert metrics.is_counter("phase_step")
    assert metrics.is_counter("gen_steps")
    assert not metrics.is_counter("loss")
    assert not metrics.is_counter("steps_per_sec")


def test_first_nonfinite():
    records = [
        (10, "a", {"loss": 1.0, "grad_norm": 2.0}),
        (11, "b", {"grad_norm": np.float32(np.inf), "loss": float("nan")}),
        (12, "a", {"loss": float("nan")}),
    ]
    # Loss is checked first within a record, whatever the dict order.
    assert metrics.first_nonfinite(records) == (11, "b", "loss")
    assert metrics.first_nonfinite(
        [(3, "a", {"loss": 1.0}), (4, "b", {"loss": 2.0, "x": -np.inf})]) == (4, "b", "x")
    assert metrics.first_nonfinite(records[:1]) is None
    assert metrics.first_nonfinite([]) is None


# ---------------------------------------------------------------------------
# MetricWriter


def _tb_scalars(workdir):
    """Parses every TensorBoard event file under workdir/tensorboard.

    The files are TFRecords (u64 length, masked crc32c of it, an Event proto,
    masked crc32c of the proto); tensorboardX ships the Event proto, so no
    TensorFlow or tensorboard is needed to read them back.
    """
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    files = glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    assert files, "no TensorBoard event file written"
    scalars = {}
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            header = data[pos:pos + 8]
            (length,) = struct.unpack("<Q", header)
            (crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
            assert crc == masked_crc32c(header)
            body = data[pos + 12:pos + 12 + length]
            (crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
            assert crc == masked_crc32c(body)
            pos += 16 + length
            event = event_pb2.Event()
            event.ParseFromString(body)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_writer_jsonl_and_tensorboard(tmp_path):
    with metrics.MetricWriter(tmp_path) as w:
        w.write_train(10, "gen", {"loss": np.float32(0.5), "steps": 3, "lr": 0.01})
        w.write_train(10, "disc", {"loss": float("nan")})
        w.write_eval(10, "test", {"loss": 0.25, "accuracy": np.float64(0.75)})
        w.flush()
    rows = metrics.read_jsonl(tmp_path / "metrics.jsonl")
    assert len(rows) == 3
    for row in rows:
        assert isinstance(row.pop("time"), float)
    assert rows[0] == {"step": 10, "split": "train", "phase": "gen", "loss": 0.5,
                       "steps": 3, "lr": 0.01}
    assert isinstance(rows[0]["steps"], int)
    assert rows[1]["phase"] == "disc" and math.isnan(rows[1]["loss"])
    assert rows[2] == {"step": 10, "split": "eval", "set": "test", "loss": 0.25,
                       "accuracy": 0.75}
    # NaN is written as json's NaN token (documented), one object per line.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"loss": NaN' in lines[1]

    tb = _tb_scalars(str(tmp_path))
    assert tb["train/gen/loss"] == [(10, 0.5)]
    assert tb["train/gen/steps"] == [(10, 3.0)]
    assert tb["eval/test/accuracy"] == [(10, 0.75)]
    assert math.isnan(tb["train/disc/loss"][0][1])


def test_writer_rows_are_on_disk_before_close(tmp_path):
    w = metrics.MetricWriter(tmp_path, tensorboard=False)
    w.write_train(1, "a", {"loss": 1.0})
    assert len(metrics.read_jsonl(tmp_path / "metrics.jsonl")) == 1
    w.close()
    w.close()  # Idempotent.
    with pytest.raises(RuntimeError, match="closed"):
        w.write_train(2, "a", {"loss": 1.0})


def test_writer_appends_to_existing_file(tmp_path):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        w.write_train(1, "a", {"loss": 1.0})
    # A crash mid-write leaves a partial last line; the next run must not glue onto it.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 2, "spl')
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        w.write_train(3, "a", {"loss": 3.0})
    with pytest.raises(ValueError, match="metrics.jsonl:2"):
        metrics.read_jsonl(tmp_path / "metrics.jsonl")  # The fragment is no longer last.
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(lines[0])["step"], json.loads(lines[2])["step"]] == [1, 3]


def test_read_jsonl_skips_truncated_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n{"a": Infinity}\n{"a": 3, "b"')
    rows = metrics.read_jsonl(path)
    assert rows[0] == {"a": 1} and rows[1]["a"] == math.inf and len(rows) == 2


def test_writer_only_process_zero_writes(tmp_path):
    workdir = tmp_path / "run"
    with metrics.MetricWriter(workdir, process_index=1) as w:
        assert not w.active
        w.write_train(1, "a", {"loss": 1.0})
        w.write_eval(1, "test", {"loss": 1.0})
        w.write_timeline([(0, 1, "a")])
        w.flush()
    assert not workdir.exists()


def test_writer_rejects_reserved_metric_names(tmp_path):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        with pytest.raises(ValueError, match=r"\['step'\].*rename"):
            w.write_train(1, "a", {"step": 1})


def test_writer_jsonl_disabled(tmp_path):
    with metrics.MetricWriter(tmp_path, jsonl=False) as w:
        w.write_train(1, "a", {"loss": 1.0})
    assert not (tmp_path / "metrics.jsonl").exists()
    assert _tb_scalars(str(tmp_path))["train/a/loss"] == [(1, 1.0)]


# ---------------------------------------------------------------------------
# TimelineRecorder


def _timeline(path):
    return [(r["start"], r["end"], r["phase"]) for r in metrics.read_jsonl(path)]


def test_timeline_segments_exact(tmp_path):
    recorder = metrics.TimelineRecorder()
    for step, phase in enumerate("aaababb"):
        recorder.record(step, phase)
    assert recorder.segments == [(0, 3, "a"), (3, 4, "b"), (4, 5, "a"), (5, 7, "b")]
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        recorder.close(w)
    assert _timeline(tmp_path / "timeline.jsonl") == [
        (0, 3, "a"), (3, 4, "b"), (4, 5, "a"), (5, 7, "b")]


def test_timeline_flush_mid_segment_neither_splits_nor_duplicates(tmp_path):
    recorder = metrics.TimelineRecorder()
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        for step, phase in enumerate("aab"):
            recorder.record(step, phase)
        recorder.flush(w)  # "b" is still open.
        assert _timeline(tmp_path / "timeline.jsonl") == [(0, 2, "a")]
        recorder.flush(w)  # Nothing new: nothing written.
        for step, phase in enumerate("bbba", start=3):
            recorder.record(step, phase)
        recorder.flush(w)
        recorder.record(7, "a")
        recorder.close(w)
        recorder.close(w)  # Idempotent.
    assert _timeline(tmp_path / "timeline.jsonl") == [(0, 2, "a"), (2, 6, "b"), (6, 8, "a")]


def test_timeline_gap_in_steps_opens_new_segment():
    recorder = metrics.TimelineRecorder()
    for step in (0, 1, 5, 6):
        recorder.record(step, "a")
    assert recorder.segments == [(0, 2, "a"), (5, 7, "a")]


# ---------------------------------------------------------------------------
# Progress


class _Tty(io.StringIO):

    def isatty(self):
        return True


def test_progress_non_tty_prints_plain_lines():
    stream = io.StringIO()
    with metrics.Progress(100, file=stream) as progress:
        for step in range(1, 96):
            progress.update(step, "ab"[step % 2])
            if step % 10 == 0:
                progress.set_loss("ab"[step % 2], 1.0 / (step + 1))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # One line per 10% reached, plus the final one at close (95 is not a multiple of 10).
    expected = [f"{10 * i}/100" for i in range(1, 10)] + ["95/100"]
    assert [line.split()[1] for line in lines] == expected
    assert "phase=" in lines[-1] and "loss:" in lines[-1]


def test_progress_resumed_and_tty():
    stream = _Tty()
    progress = metrics.Progress(50, initial_step=20, file=stream)
    for step in range(21, 51):
        progress.update(step, "a")
    progress.set_loss("a", 0.5)
    progress.write("eval table")
    progress.close()
    progress.close()
    out = stream.getvalue()
    assert "50/50" in out and "a=0.5" in out and "eval table" in out


def test_progress_disabled_is_silent():
    stream = _Tty()
    progress = metrics.Progress(10, disable=True, file=stream)
    for step in range(1, 11):
        progress.update(step, "a")
    progress.set_loss("a", 1.0)
    progress.write("hidden")
    progress.close()
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------------
# format_table / write_results


def test_format_table():
    table = metrics.format_table(
        {"test": {"loss": 0.123456, "accuracy": 0.9},
         "train_long_name": {"accuracy": 0.95, "n": 1000}},
        title="final")
    lines = table.splitlines()
    assert lines[0] == "final"
    assert lines[1].split() == ["set", "loss", "accuracy", "n"]
    assert lines[3].split() == ["test", "0.1235", "0.9", "-"]
    assert lines[4].split() == ["train_long_name", "-", "0.95", "1000"]
    # Columns align: every row's cells end at the same offsets.
    assert len({len(line) for line in lines[1:]}) == 1


def test_write_results_atomic_round_trip(tmp_path):
    path = tmp_path / "sub" / "results.json"
    metrics.write_results(path, {"b": np.float32(0.5), "a": [1, 2], "nan": float("nan")})
    text = path.read_text()
    assert text.index('"a"') < text.index('"b"') < text.index('"nan"')  # Sorted keys.
    loaded = json.loads(text)
    assert loaded["a"] == [1, 2] and loaded["b"] == 0.5 and math.isnan(loaded["nan"])
    metrics.write_results(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    # A failed write leaves the old file intact and no temporary file behind.
    with pytest.raises(TypeError, match="convert it"):
        metrics.write_results(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(path.parent) == ["results.json"]


# ---------------------------------------------------------------------------
# StepTable (the vectorized records) and TimelineRecorder.record_ids


def _random_rows(rng, n, names, nan_at=None):
    rows, counts = [], {p: 0 for p in names}
    for t in range(n):
        p = ["a", "b"][int(rng.integers(0, 2))]
        counts[p] += 1
        m = {k: float(np.float32(rng.normal())) for k in names[p]}
        if t == nan_at:
            m[names[p][-1]] = float("nan")
        rows.append((10 + t, p, {**m, "phase_step": float(counts[p])}))
    return rows


@pytest.mark.parametrize("nan_at", [None, 0, 17])
def test_step_table_equals_the_record_functions(nan_at):
    rng = np.random.default_rng(3)
    names = {"a": ["accuracy", "grad_norm", "loss", "lr"], "b": ["grad_norm", "loss"]}
    rows = _random_rows(rng, 40, names, nan_at)
    table = metrics.StepTable.from_rows(rows, ["a", "b"], names)
    same = lambda a, b: json.dumps(a) == json.dumps(b)  # NaN == NaN here
    assert same(table.rows(), rows)
    # Sliced and concatenated back: the same records.
    again = metrics.StepTable.concat([table[:13], table[13:]])
    assert same(again.rows(), rows)
    got, want = table.aggregate(), metrics.aggregate(rows)
    assert list(got) == list(want) and all(list(got[p]) == list(want[p]) for p in want)
    for p in want:  # identical floats (fsum), NaN where it propagates
        np.testing.assert_array_equal(list(got[p].values()), list(want[p].values()))
    assert table.first_nonfinite() == metrics.first_nonfinite(rows)
    assert (table.first_nonfinite() is None) == (nan_at is None)
    dropped = table.aggregate(drop=("lr",))
    assert "lr" not in dropped.get("a", {}) and same(dropped["b"], want["b"])
    assert metrics.StepTable.empty(["a", "b"], names).aggregate() == {}


def test_step_table_errors_name_the_record():
    names = {"a": ["loss"], "b": ["steps"]}
    with pytest.raises(ValueError, match="lacks metric 'loss'"):
        metrics.StepTable.from_rows([(3, "a", {"acc": 1.0})], ["a", "b"], names)
    with pytest.raises(ValueError, match="names phase 'c'; the phases are"):
        metrics.StepTable.from_rows([(3, "c", {"loss": 1.0})], ["a", "b"], names)
    table = metrics.StepTable.from_rows([(0, "b", {"steps": 1.0})], ["a", "b"], names)
    with pytest.raises(ValueError, match="reserves"):
        table.aggregate()


def test_timeline_record_ids_equals_step_by_step():
    rng = np.random.default_rng(0)
    for _ in range(200):
        one, many = metrics.TimelineRecorder(), metrics.TimelineRecorder()
        step = int(rng.integers(0, 3))
        for _ in range(5):
            n = int(rng.integers(1, 12))
            ids = rng.integers(0, int(rng.integers(1, 4)), n)
            if rng.random() < 0.2:  # a gap (a restore)
                step += int(rng.integers(1, 3))
            for t, i in enumerate(ids):
                one.record(step + t, "abc"[i])
            many.record_ids(step, ids, ["a", "b", "c"])
            step += n
            assert one.segments == many.segments


def test_timeline_rows_are_the_json_of_each_segment(tmp_path):
    with metrics.MetricWriter(tmp_path, tensorboard=False) as w:
        w.write_timeline([(0, 3, "a"), (3, 4, 'b "quoted"')])
    lines = (tmp_path / "timeline.jsonl").read_text().splitlines()
    assert lines == [json.dumps({"start": 0, "end": 3, "phase": "a"}),
                     json.dumps({"start": 3, "end": 4, "phase": 'b "quoted"'})]

"""Streaming input: batches read by index from ArrayRecord files, in the in-memory order."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import alternating
from alternating import checkpoint as ckpt_lib
from alternating import data as data_lib
from alternating.data import arrays as arrays_lib
from alternating.data import streaming

import streaming_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SMALL = {"dataset": "gen_small", "batch_size": 96,
         "transforms": ["flatten", {"name": "permute", "seed": 1},
                        {"name": "relabel", "mapping": [0, 1] * 5}]}
BIG_EXAMPLES, DIM = 20_000, 4096  # 328 MB of float32 features
STEPS = 60


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    """Generated ArrayRecord datasets: a small one and a 328 MB one (with its tiny twin)."""
    tfds.disable_progress_bar()
    path = str(tmp_path_factory.mktemp("gen_tfds"))
    data_lib.write_generated("gen_small", path, {"train": 1000, "test": 200}, (8, 8, 1))
    data_lib.write_generated("gen_big", path, {"train": BIG_EXAMPLES, "test": 100}, (DIM,))
    data_lib.write_generated("gen_tiny", path, {"train": 500, "test": 100}, (DIM,))
    return path


def _equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_streamed_batches_are_the_in_memory_ones_across_epochs_and_a_resume(gen_dir,
                                                                           monkeypatch):
    mem = data_lib.make_stream({**SMALL, "read": "memory"}, seed=5, data_dir=gen_dir)
    st = data_lib.make_stream({**SMALL, "read": "stream"}, seed=5, data_dir=gen_dir)
    with monkeypatch.context() as m:  # records decoded by TFDS, not the batch decoder
        m.setattr(streaming, "raw_decoder", lambda *a: None)
        slow = data_lib.make_stream({**SMALL, "read": "stream"}, seed=5, data_dir=gen_dir)
    _equal(slow.next_batches(12), mem.next_batches(12))
    mem.set_state(st.get_state())
    assert type(mem) is data_lib.Stream and isinstance(st, data_lib.StreamingStream)
    assert st.element_spec == mem.element_spec and st.num_classes == mem.num_classes == 2
    assert st.prefetch >= 2 and not st.pure_order  # never device-resident: no arrays
    for i in range(24):  # 1,000 examples, batches of 96: epochs end inside batches 10 and 20
        if i % 5 == 4:
            _equal(mem.next_batches(3), st.next_batches(3))
        else:
            _equal(next(mem), next(st))
        assert st.get_state() == mem.get_state()  # the same kind of position, equal
    # Resume either way: a streamed state into a memory stream and back.
    mem2 = data_lib.make_stream({**SMALL, "read": "memory"}, seed=5, data_dir=gen_dir)
    mem2.set_state(st.get_state())
    st2 = data_lib.make_stream({**SMALL, "read": "stream"}, seed=5, data_dir=gen_dir)
    st2.set_state(json.loads(json.dumps(mem.get_state())))
    for _ in range(12):
        want = next(mem)
        _equal(want, next(mem2))
        _equal(want, next(st2))
        _equal(want, next(st))
    other = data_lib.make_stream({**SMALL, "read": "stream"}, seed=6, data_dir=gen_dir)
    with pytest.raises(ValueError, match="does not match this stream"):
        other.set_state(st.get_state())


def test_each_process_reads_only_its_shard_and_the_shards_make_the_global_batch(
        gen_dir, monkeypatch):
    sources = []
    monkeypatch.setattr(arrays_lib, "open_split", streaming_worker.counting_open_split(sources))
    spec = {**SMALL, "read": "stream"}
    one = data_lib.make_stream(spec, seed=2, data_dir=gen_dir)
    parts = [data_lib.make_stream(spec, seed=2, data_dir=gen_dir, process_index=i,
                                  process_count=2) for i in range(2)]
    n = 14  # crosses an epoch boundary (batch 10)
    for _ in range(n):
        whole = next(one)
        halves = [next(p) for p in parts]
        _equal(whole, {k: np.concatenate([h[k] for h in halves]) for k in whole})
    for i, p in enumerate(parts):
        read = sources[1 + i].read
        # Its shard of every batch served or read ahead, and nothing else.
        ahead = n + p.prefetch + 1
        own = {int(j) for b in range(ahead) for j in p._indices(b)}  # pylint: disable=protected-access
        assert set(read) <= own
        assert n * p.local_batch_size <= len(read) <= ahead * p.local_batch_size
        theirs = parts[1 - i]
        first_epoch_theirs = {int(j) for b in range(10) for j in theirs._indices(b)}  # pylint: disable=protected-access
        assert not set(read) & first_epoch_theirs - own


def test_bad_input_names_the_field_the_dataset_and_the_fix(gen_dir, tmp_path, monkeypatch):
    spec = {**SMALL, "read": "stream"}
    with pytest.raises(ValueError, match=r"Data spec key \"read\" must be one of "
                                         r"\['auto', 'memory', 'stream'\], got 'disk'"):
        data_lib.make_stream({**spec, "read": "disk"}, seed=0, data_dir=gen_dir)
    with pytest.raises(ValueError, match="not divisible by process_count 5"):
        data_lib.make_stream(spec, seed=0, data_dir=gen_dir, process_count=5)
    empty = str(tmp_path / "empty")
    where = re.escape(empty)
    for name, reason in (("no_such_set_xyz", "is unknown"), ("mnist", "is not prepared")):
        with pytest.raises(ValueError, match=rf"Dataset '{name}' {reason} in data_dir "
                                             rf"'{where}'.*`tfds build {name} --data_dir={where} "
                                             r"--file_format=array_record` prepares it"):
            data_lib.make_stream({**spec, "dataset": name}, seed=0, data_dir=empty)
    arrays = {"x": np.zeros((10, 2), np.float32), "y": np.zeros(10, np.int32)}
    with pytest.raises(ValueError, match="read.*stream.*in-memory arrays"):
        data_lib.make_stream({"dataset": arrays, "batch_size": 2, "read": "stream"}, seed=0)
    for transform in ({"name": "noise", "std": 0.1, "seed": 0},
                      {"name": "class_subset", "classes": [1, 2]}):
        with pytest.raises(ValueError, match=f"Transform '{transform['name']}' needs the whole "
                                             "split.*'gen_small'.*read=\"memory\""):
            data_lib.make_stream({**spec, "transforms": [transform]}, seed=0, data_dir=gen_dir)
    with pytest.raises(ValueError, match="one entry per class"):  # before any read
        data_lib.make_stream({**spec, "transforms": [{"name": "relabel", "mapping": [0, 1]}]},
                             seed=0, data_dir=gen_dir)
    # 'auto': the embedded datasets and splits within the host budget stay in memory.
    assert type(data_lib.make_stream({"dataset": "digits", "batch_size": 8}, seed=0)) is (
        data_lib.Stream)
    assert type(data_lib.make_stream(SMALL, seed=0, data_dir=gen_dir)) is data_lib.Stream
    monkeypatch.setenv(streaming.HOST_BUDGET_ENV, "0.1")  # MiB; gen_small's train: 0.26
    assert isinstance(data_lib.make_stream(SMALL, seed=0, data_dir=gen_dir),
                      data_lib.StreamingStream)
    with pytest.raises(ValueError, match="Transform 'noise' needs the whole split.*0.1 MiB"):
        data_lib.make_stream({**SMALL, "transforms": [{"name": "noise", "std": 1, "seed": 0}]},
                             seed=0, data_dir=gen_dir)
    monkeypatch.setenv(streaming.HOST_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="ALTERNATING_HOST_DATA_MB must be a number"):
        data_lib.make_stream(SMALL, seed=0, data_dir=gen_dir)


def test_fused_training_on_a_streamed_split_equals_training_in_memory(gen_dir, tmp_path):
    kw = dict(executor="fused", chunk_steps=6, total_steps=12, print_fn=None,
              checkpoint_every_steps=0, log_every_steps=12)
    runs = {}
    for read in ("memory", "stream"):
        spec = {"dataset": "gen_small", "batch_size": 32, "transforms": ["flatten"], "read": read}
        runs[read] = jax.device_get(streaming_worker.run(
            tmp_path / read, gen_dir, "gen_small", dim=64, spec=spec, **kw)[1])
    jax.tree.map(np.testing.assert_array_equal, runs["memory"], runs["stream"])


# --- Training from a 328 MB ArrayRecord split: memory, and kill -9 + resume. ------------


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                **{streaming.HOST_BUDGET_ENV: "64"})


def _worker(workdir, gen_dir, *extra):
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "streaming_worker.py"), str(workdir), gen_dir,
         "gen_big", str(STEPS), str(DIM), *extra], env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def reference(gen_dir, tmp_path_factory):
    """An uninterrupted streamed run (after a baseline run on 500 examples in the same process)."""
    workdir = tmp_path_factory.mktemp("stream_ref") / "run"
    proc = _worker(workdir, gen_dir, "gen_tiny")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return str(workdir), json.loads(out.strip().splitlines()[-1])


def test_the_streamed_run_stays_under_a_memory_cap_the_in_memory_path_exceeds(reference):
    _, result = reference
    assert result["read"] == "stream"
    x_bytes_mb = BIG_EXAMPLES * DIM * 4 / 2 ** 20  # the split's features alone, in memory
    # The in-memory path holds at least the arrays on top of the same baseline.
    cap = result["baseline_peak_rss_mb"] + x_bytes_mb / 2
    assert result["peak_rss_mb"] < cap, (result, cap)


def test_kill_9_mid_run_then_resume_is_bit_identical(gen_dir, reference, tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    proc = _worker(workdir, gen_dir)
    deadline = time.time() + 120
    while not os.path.isdir(workdir / "checkpoints" / "20"):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed_at = ckpt_lib.Checkpointer(str(workdir)).latest_step()
    assert killed_at is not None and 20 <= killed_at < STEPS
    monkeypatch.setenv(streaming.HOST_BUDGET_ENV, "64")
    read, _ = streaming_worker.run(workdir, gen_dir, "gen_big", STEPS, dim=DIM, print_fn=None)
    assert read == "stream"
    assert json.load(open(workdir / "results.json"))["resumed_from_step"] == killed_at
    ref, got = (jax.device_get(alternating.load_state(w)[0]) for w in (reference[0], workdir))
    assert jax.tree.structure(ref) == jax.tree.structure(got)
    jax.tree.map(np.testing.assert_array_equal, ref, got)  # bit for bit

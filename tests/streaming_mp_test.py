"""Streaming with two real processes (jax.distributed + gloo on localhost, 2 CPU
devices each): each process reads only its own shard of every global batch from
the ArrayRecord files, and the run equals one process on four devices reading
the split into memory."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import tensorflow_datasets as tfds

import alternating
from alternating import data as data_lib
from experiments import launch_local

import streaming_mp_worker

HERE = os.path.dirname(os.path.abspath(__file__))


def test_two_processes_stream_their_own_shards_and_match_one_process(tmp_path):
    tfds.disable_progress_bar()
    data_dir = str(tmp_path / "tfds")
    data_lib.write_generated("gen_small", data_dir, {"train": 1000, "test": 200}, (8, 8, 1))
    port = launch_local.free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=launch_local.device_count_flags(2))
    procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "streaming_mp_worker.py"),
                               f"localhost:{port}", "2", str(i), data_dir, str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    two, _ = alternating.load_state(str(tmp_path / "run"))
    assert int(two["step"]) == streaming_mp_worker.STEPS

    assert len(jax.devices()) == 4
    one = streaming_mp_worker.train(tmp_path / "one", data_dir, "memory")
    # The gloo all-reduce sums in another order than the in-process one.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(two["params"]), jax.device_get(one.params))

    reads = [sorted({i for src in json.loads((tmp_path / f"reads_{p}.json").read_text())
                     for i in src}) for p in range(2)]
    # 12 global batches of 32 (16 per process), prefetch included: each process read
    # at least its own 12 x 16 records, and no record the other one read.
    assert all(len(r) >= 12 * 16 for r in reads)
    assert not set(reads[0]) & set(reads[1])

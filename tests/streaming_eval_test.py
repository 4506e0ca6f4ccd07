"""Evaluation on a streamed split: the in-memory batches, read by index at each evaluation."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

import alternating
from alternating import data as data_lib
from alternating import parallel
from alternating.data import arrays as arrays_lib
from alternating.data import streaming
from loop_test import MODEL, _loss
from streaming_test import _equal
from streaming_worker import counting_open_split

SPEC = {"dataset": "gen_eval", "split": "test",
        "transforms": ["flatten", {"name": "permute", "seed": 1},
                       {"name": "relabel", "mapping": [0, 1] * 5}]}


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory):
    tfds.disable_progress_bar()
    path = str(tmp_path_factory.mktemp("gen_eval_tfds"))
    data_lib.write_generated("gen_eval", path, {"train": 256, "test": 150}, (8, 8, 1))
    return path


@pytest.mark.parametrize("process_count", [1, 2])
def test_streamed_eval_batches_are_the_in_memory_ones_and_read_only_this_process_slice(
        gen_dir, monkeypatch, process_count):
    sources = []
    monkeypatch.setattr(arrays_lib, "open_split", counting_open_split(sources))
    for p in range(process_count):
        kw = dict(batch_size=64, data_dir=gen_dir, process_index=p, process_count=process_count)
        memory = data_lib.eval_batches({**SPEC, "read": "memory"}, **kw)
        streamed = data_lib.eval_batches({**SPEC, "read": "stream"}, **kw)
        assert isinstance(streamed, streaming.EvalBatches) and len(streamed) == len(memory) == 3
        for _ in range(2):  # iterated again at the next evaluation: the same batches
            got = list(streamed)
            assert len(got) == 3
            for a, b in zip(got, memory):
                _equal(a, b)
        _equal(streamed[-1], memory[-1])
        assert [float(b["mask"].sum()) for b in streamed[:3]] == [
            float(b["mask"].sum()) for b in memory]
        local = 64 // process_count
        mine = [i for b in range(3) for i in range(b * 64 + p * local, b * 64 + (p + 1) * local)
                if i < 150]
        read = sources[-1].read
        assert sorted(set(read)) == mine  # this process's slice of every batch, nothing else
        last = [i for i in mine if i >= 128]
        # Two passes, batch -1, then batches 0-2: every read was asked for.
        assert read == mine + mine + last + mine


def test_a_run_evaluated_on_a_streamed_split_equals_one_evaluated_in_memory(gen_dir, tmp_path):
    out = {}
    for read in ("memory", "stream"):
        alternating.train(
            phases=[alternating.Phase("a", loss=_loss, data="train",
                                      optimizer={"name": "sgd", "lr": 0.1})],
            schedule={"name": "single"},
            data={"train": {"dataset": "gen_eval", "batch_size": 32, "transforms": ["flatten"],
                            "read": "memory"}},
            evals={"test": {"data": {"dataset": "gen_eval", "split": "test", "read": read,
                                     "transforms": ["flatten"]},
                            "phase": "a", "batch_size": 64}},
            init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"],
            workdir=str(tmp_path / read), total_steps=6, eval_every_steps=3, data_dir=gen_dir,
            mesh=parallel.make_mesh(jax.devices()[:1]), progress=False, plot=False,
            print_fn=None, executor="host", keep_best={"metric": "test/loss", "mode": "min"})
        with open(os.path.join(tmp_path / read, "results.json")) as f:
            out[read] = json.load(f)["final_eval"]
    assert out["stream"] == out["memory"]
    assert np.isfinite(out["stream"]["test"]["loss"]) and out["stream"]["test"]["loss"] > 0

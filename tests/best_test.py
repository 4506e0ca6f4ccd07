"""keep_best: the state of the best evaluation is kept under WORKDIR/best."""

import json
import os

import jax
import numpy as np
import pytest
from executor_test import _same_state, _tiny_run

import alternating
from alternating import metrics, parallel

EVALS = {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                  "phase": "a", "batch_size": 360}}


def _run(workdir, **kw):
    kw.setdefault("total_steps", 18)
    return _tiny_run(workdir, mesh=parallel.make_mesh(jax.devices()[:1]), executor="host",
                     evals=EVALS, eval_every_steps=3, checkpoint_every_steps=6,
                     keep_best={"metric": "test/loss", "mode": "min"}, **kw)


def _best_row(workdir):
    rows = [r for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
            if r["split"] == "eval" and "loss" in r and r.get("name", "test") == "test"]
    assert len(rows) == 6, rows
    best = min(rows, key=lambda r: (r["loss"], r["step"]))
    return best["step"], best["loss"]


def test_the_best_evaluation_is_saved_and_loads(tmp_path):
    final = _run(tmp_path / "run")
    with open(tmp_path / "run" / "results.json") as f:
        best = json.load(f)["best"]
    step, loss = _best_row(tmp_path / "run")
    assert (best["step"], best["mode"], best["metric"]) == (step, "min", "test/loss")
    assert best["value"] == pytest.approx(loss)
    assert os.listdir(tmp_path / "run" / "best" / "checkpoints") == [str(step)]
    state, _ = alternating.load_state(str(tmp_path / "run" / "best"), target=final)
    assert int(state.step) == step
    shorter = _tiny_run(tmp_path / "short", mesh=parallel.make_mesh(jax.devices()[:1]),
                        executor="host", total_steps=step)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(shorter.params),
                 jax.device_get(state.params))


def test_a_resumed_run_keeps_the_same_best(tmp_path):
    final = _run(tmp_path / "straight")
    _run(tmp_path / "split", total_steps=12)
    _run(tmp_path / "split")  # resumes from step 12 with the best so far in its checkpoint
    read = lambda d: json.load(open(tmp_path / d / "results.json"))["best"]
    assert read("split") == read("straight")
    a, _ = alternating.load_state(str(tmp_path / "straight" / "best"), target=final)
    b, _ = alternating.load_state(str(tmp_path / "split" / "best"), target=final)
    _same_state(a.params, b.params)


@pytest.mark.parametrize("spec, message", [
    ({"metric": "test/loss", "mode": "maximum"}, r"keep_best.mode='maximum'; valid modes: "
                                                  r"\['max', 'min'\]"),
    ({"metric": "train/loss"}, r"names evaluation set 'train'; the run's evaluation sets "
                               r"\(eval\): \['test'\]"),
    ({"metric": "loss"}, r"expected 'SET/METRIC'"),
    ({"metric": "test/loss", "every": 3}, r"keys \['metric', 'mode'\]"),
    ({"metric": "test/acc"}, r"evaluation set 'test' reports \['loss'\]; name one of them"),
])
def test_bad_keep_best_names_the_field_and_the_choices(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        _tiny_run(tmp_path, executor="host", evals=EVALS, eval_every_steps=3, keep_best=spec,
                  total_steps=3)


def test_keep_best_is_refused_with_vectorized_seeds(tmp_path):
    with pytest.raises(ValueError, match=r"num_seeds=2: keep_best is not supported"):
        _tiny_run(tmp_path, evals=EVALS, eval_every_steps=3, num_seeds=2,
                  keep_best={"metric": "test/loss", "mode": "min"}, total_steps=3)

"""Vectorized seeds: every replica equals its single-seed run; per-seed outputs."""

import json

import jax
import numpy as np
import pytest
from executor_test import _loss, _tiny_run

import alternating
from alternating import metrics, parallel
from alternating.schedules import Alternate


def test_each_replica_equals_its_single_seed_run(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:2])
    sched = {"name": "weighted", "weights": {"a": 1.0, "b": 2.0}}  # draws differ per seed
    evals = {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                      "phase": "a", "batch_size": 128}}
    kw = dict(mesh=mesh, total_steps=12, schedule=sched, log_every_steps=6, evals=evals)
    stacked = _tiny_run(tmp_path / "seeds", seed=5, num_seeds=3, executor="fused",
                        chunk_steps=6, **kw)
    with open(tmp_path / "seeds" / "results.json") as f:
        res = json.load(f)
    singles = []
    for i in range(3):
        single = _tiny_run(tmp_path / f"single{i}", seed=5 + i, **kw)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7),
                     jax.device_get(stacked), jax.device_get(single))
        with open(tmp_path / f"single{i}" / "results.json") as f:
            one = json.load(f)
        singles.append(one)
        assert res["steps_per_phase_per_seed"][i] == one["steps_per_phase"]
        assert res["final_eval_per_seed"][i]["test"]["loss"] == pytest.approx(
            one["final_eval"]["test"]["loss"], rel=1e-5)
    # The draws really differ between seeds, so each replica ran its own schedule.
    assert len({json.dumps(s["steps_per_phase"]) for s in singles}) > 1
    losses = [s["final_eval"]["test"]["loss"] for s in singles]
    test = res["final_eval"]["test"]
    assert test["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert test["loss_std"] == pytest.approx(np.std(losses), rel=1e-3, abs=1e-7)
    assert res["seeds"] == [5, 6, 7] and res["compiles"] == {"fused:6": 1, "eval:test": 1}
    for key in ("num_params", "trained_params_per_phase", "opt_state_bytes_per_phase"):
        assert res[key] == singles[0][key], key  # sizes of one replica
    row = [r for r in metrics.read_jsonl(tmp_path / "seeds" / "metrics.jsonl")
           if r["split"] == "train" and r["phase"] == "b"][-1]
    assert row["step"] == 12
    per = [row[f"loss_seed{i}"] for i in range(3)]
    assert row["loss"] == pytest.approx(np.mean(per)) and row["loss_std"] == pytest.approx(np.std(per))


@pytest.mark.parametrize("kw,match", [
    (dict(checkpoint_every_steps=4), r"checkpoints are not supported with vectorized seeds"),
    (dict(schedule=Alternate(["a", "b"])), r"needs the schedule as a spec"),
    (dict(num_seeds=0), r"num_seeds=0; it must be an integer >= 1"),
    (dict(nan_policy="skip"), r"nan_policy='skip' is not supported with vectorized seeds"),
    (dict(init_from="elsewhere"), r"init_from is not supported with vectorized seeds"),
    (dict(sharding_rules=[(".*", None)]), r"sharding_rules are not supported with vectorized"),
])
def test_vectorized_seed_errors(tmp_path, kw, match):
    kw = {"num_seeds": 2, **kw}
    with pytest.raises(ValueError, match=match):
        _tiny_run(tmp_path, **kw)


def test_replicas_on_one_pattern_share_a_real_switch(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    stacked = _tiny_run(tmp_path / "seeds", mesh=mesh, num_seeds=2, executor="fused",
                        chunk_steps=6, total_steps=6, log_every_steps=0)
    with open(tmp_path / "seeds" / "results.json") as f:
        assert json.load(f)["compiles"] == {"fused:6:shared": 1}
    single = _tiny_run(tmp_path / "one", mesh=mesh, seed=1, total_steps=6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-6, atol=1e-7),
                 jax.device_get(stacked), jax.device_get(single))


def test_replicas_carry_their_own_extras(tmp_path):
    """A phase's EMA teacher is per replica and equals the single-seed run's."""
    phases = [
        alternating.Phase("a", loss=_loss, data="digits", params=[("Dense_0/.*", True), (".*", None)],
                          optimizer={"name": "adam", "lr": 1e-2},
                          updates=[{"extra": "teacher", "rule": "ema", "decay": 0.5}]),
        alternating.Phase("b", loss=_loss, data="digits", params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.1}),
    ]
    kw = dict(mesh=parallel.make_mesh(jax.devices()[:1]), phases=phases, total_steps=6,
              log_every_steps=0, extras={"teacher": {"kind": "copy"}})
    stacked = jax.device_get(_tiny_run(tmp_path / "seeds", num_seeds=2, executor="fused",
                                       chunk_steps=6, **kw))
    for i in range(2):
        single = jax.device_get(_tiny_run(tmp_path / f"one{i}", seed=i, **kw))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7),
                     stacked.extras["teacher"], single.extras["teacher"])
    # The teacher moved, and differently per seed.
    first = jax.tree.leaves(stacked.extras["teacher"])[0]
    assert not np.allclose(first[0], first[1])

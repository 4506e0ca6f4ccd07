"""BatchNorm: running averages live in the TrainState's extras, one set per phase,
written by the training step, read by evaluation, checkpointed and resumed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from executor_test import _same_state

import alternating
from alternating import losses, models, parallel

SPEC = {"name": "mlp", "features": [16, 10], "input_shape": [64], "batch_norm": True}
MODEL = models.get_model(SPEC)
STATE = {"kind": "init", "init": "alternating.models:initial_state", "kwargs": {"model": SPEC}}
DATA = {"digits": {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]}}
EVALS = {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                  "phase": "a", "batch_size": 360}}


def _phase(name, stats, lr=1e-2):
    return alternating.Phase(name, loss="classification", data="digits",
                             loss_kwargs={"state": stats}, optimizer={"name": "adam", "lr": lr})


def _run(workdir, phases=None, schedule=None, mesh=None, **kw):
    kw.setdefault("total_steps", 12)
    return alternating.train(
        phases=phases or [_phase("a", "bn_a"), _phase("b", "bn_b", lr=1e-3)],
        schedule=schedule or {"name": "alternate", "pattern": ["a", "b"]}, data=DATA,
        init=MODEL, model=MODEL, workdir=str(workdir), evals=EVALS,
        extras={"bn_a": STATE, "bn_b": STATE}, mesh=mesh or parallel.make_mesh(jax.devices()[:1]),
        progress=False, plot=False, print_fn=None, log_every_steps=3, executor="host", **kw)


def _stats(state, name):
    return state.extras[name]["batch_stats"]["BatchNorm_0"]


def test_each_phase_updates_its_own_running_averages(tmp_path):
    only_a = _run(tmp_path / "a", schedule={"name": "single", "phase": "a"})
    mean = np.asarray(_stats(only_a, "bn_a")["mean"])
    assert np.abs(mean).max() > 1e-3  # moved from the initial zeros
    np.testing.assert_array_equal(_stats(only_a, "bn_b")["mean"], np.zeros(16))  # b never ran
    np.testing.assert_array_equal(_stats(only_a, "bn_b")["var"], np.ones(16))
    both = _run(tmp_path / "ab")
    assert not np.array_equal(_stats(both, "bn_a")["mean"], _stats(both, "bn_b")["mean"])


def test_evaluation_normalizes_by_the_running_averages(tmp_path):
    final = _run(tmp_path / "run")
    import json
    got = json.load(open(tmp_path / "run" / "results.json"))["final_eval"]["test"]
    from alternating.data import eval_batches
    batch = next(iter(eval_batches(EVALS["test"]["data"], batch_size=360)))
    logits = MODEL.apply(final.params, jnp.asarray(batch["x"]), state=final.extras["bn_a"])
    acc = float((np.argmax(logits, -1) == batch["y"]).mean())
    assert got["accuracy"] == pytest.approx(acc, abs=1e-6)
    train_mode, _ = MODEL.apply(final.params, jnp.asarray(batch["x"]),
                                state=final.extras["bn_a"], training=True)
    assert not np.allclose(logits, train_mode)  # the batch's statistics differ


def test_resumed_fused_and_four_device_runs_agree(tmp_path):
    straight = _run(tmp_path / "straight")
    _run(tmp_path / "split", total_steps=6, checkpoint_every_steps=6)
    _same_state(straight, _run(tmp_path / "split"))
    fused = alternating.train(
        phases=[_phase("a", "bn_a"), _phase("b", "bn_b", lr=1e-3)],
        schedule={"name": "alternate", "pattern": ["a", "b"]}, data=DATA, init=MODEL,
        model=MODEL, workdir=str(tmp_path / "fused"), evals=EVALS,
        extras={"bn_a": STATE, "bn_b": STATE}, mesh=parallel.make_mesh(jax.devices()[:1]),
        progress=False, plot=False, print_fn=None, log_every_steps=3, executor="fused",
        chunk_steps=4, total_steps=12)
    _same_state(straight, fused)
    four = _run(tmp_path / "four", mesh=parallel.make_mesh(jax.devices()))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=1e-5),
                 jax.device_get(straight.extras), jax.device_get(four.extras))


def test_a_loss_writing_an_undeclared_extra_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"classification loss: state='bn_c' names no extra; "
                                         r"extras: \['bn_a', 'bn_b'\]"):
        _run(tmp_path, phases=[_phase("a", "bn_c"), _phase("b", "bn_b")])
    plain = {"name": "mlp", "features": [16, 10], "input_shape": [64]}
    with pytest.raises(ValueError, match="has no mutable state"):
        models.initial_state(None, jax.random.key(0), model=plain)
    assert losses.metrics_of({"accuracy": 1.0, losses.WRITES: {}}) == {"accuracy": 1.0}
    from alternating.phase import write_extras
    with pytest.raises(ValueError, match=r"phase 'a': its loss writes extra 'z', which is not "
                                         r"declared; extras: \['y'\]"):
        write_extras({"y": jnp.zeros(2)}, {"z": jnp.zeros(2)}, "a")
    with pytest.raises(ValueError, match="another structure or shapes"):
        write_extras({"y": jnp.zeros(2)}, {"y": jnp.zeros(3)}, "a")

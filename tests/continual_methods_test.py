"""Continual-learning methods: the EWC/L2 anchor hook and loss, the replay memory and loss."""

import json
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alternating
from alternating import hooks as hooks_lib
from alternating import losses
from alternating.continual import regularizers, replay
from alternating.models import MLP, Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import continual as continual_config  # noqa: E402


def _tiny():
    model = Model(MLP(features=(5, 3)), {"x": (4,)})
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(11, 4)).astype(np.float32),
              "y": rng.integers(0, 3, size=11).astype(np.int32)}
    return model, params, arrays


def _batches(arrays, batch_size):
    """Padded batches with a mask, like ctx.batches."""
    n = len(arrays["y"])
    out = []
    for s in range(0, n, batch_size):
        b = {k: v[s:s + batch_size] for k, v in arrays.items()}
        pad = batch_size - len(b["y"])
        b = {k: np.concatenate([v, np.zeros((pad, *v.shape[1:]), v.dtype)]) for k, v in b.items()}
        b["mask"] = np.concatenate([np.ones(batch_size - pad), np.zeros(pad)]).astype(np.float32)
        out.append(b)
    return out


class _Ctx:
    def __init__(self, phases, batches, dry_run=False):
        self.phases, self._b, self.dry_run = phases, batches, dry_run

    def batches(self, spec, batch_size=256):
        return self._b

    def jit(self, fn, name):
        return jax.jit(fn)


def _state(params, extras):
    return alternating.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state={},
                                  phase_steps={}, rng=jax.random.PRNGKey(3), extras=extras)


def test_fisher_hook_equals_a_hand_written_diagonal_fisher():
    model, params, arrays = _tiny()
    base = losses.classification(model)
    loss = regularizers.ewc_classification(model, lam=5.0)
    assert loss.base is not None
    phase = types.SimpleNamespace(name="t0", loss_fn=loss)
    hook = regularizers.TaskAnchor({"t0": {"dataset": "unused"}}, mode="ewc", gamma=0.5,
                                   batch_size=4)
    assert hook.extras == {"anchor": {"kind": "copy"}, "fisher": {"kind": "zeros"}}
    old = jax.tree.map(lambda p: jnp.full_like(p, 2.0), params)
    state = _state(params, {"anchor": jax.tree.map(jnp.zeros_like, params), "fisher": old})
    event = hooks_lib.Event(step=10, phase="t0", ended="t0", why=("phase_end",))
    out = hook(state, event, _Ctx([phase], _batches(arrays, 4)))  # 11 examples: 1 padded

    # By hand: -log p(y|x) per example, its gradient, squared, averaged over the 11.
    def nll(p, x, y):
        logits = model.apply(p, x[None])
        return -jax.nn.log_softmax(logits)[0, y]
    grads = [jax.grad(nll)(params, arrays["x"][i], arrays["y"][i]) for i in range(11)]
    fisher = jax.tree.map(lambda *g: sum(x ** 2 for x in g) / 11.0, *grads)
    expected = jax.tree.map(lambda o, f: 0.5 * o + f, old, fisher)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 out.extras["fisher"], expected)
    jax.tree.map(np.testing.assert_array_equal, out.extras["anchor"], params)
    # base_loss unwraps the EWC wrapper, so the penalty never enters the Fisher.
    assert regularizers.base_loss(loss) is loss.base
    del base
    # l2: importance ones, not accumulated.
    l2 = regularizers.TaskAnchor({"t0": {}}, mode="l2")
    out = l2(state, event, _Ctx([phase], []))
    jax.tree.map(lambda f: np.testing.assert_array_equal(f, np.ones_like(f)), out.extras["fisher"])
    # Not one of its tasks: nothing; bad arguments: errors.
    assert hook(state, hooks_lib.Event(3, "x", "x", ("phase_end",)), _Ctx([phase], [])) is None
    with pytest.raises(ValueError, match="valid modes"):
        regularizers.TaskAnchor({"t0": {}}, mode="si")


def test_penalty_is_zero_at_the_anchor_and_matches_a_hand_computation():
    model, params, arrays = _tiny()
    loss = regularizers.ewc_classification(model, lam=3.0)
    base = losses.classification(model)
    batch = {k: jnp.asarray(v) for k, v in arrays.items()}
    rng = jax.random.PRNGKey(0)
    fisher = jax.tree.map(lambda p: jnp.abs(jax.random.normal(jax.random.PRNGKey(1), p.shape)),
                          params)
    extras = {"anchor": params, "fisher": fisher}
    value, aux = loss(params, batch, rng, extras)
    assert float(aux["penalty"]) == 0.0
    assert float(value) == pytest.approx(float(base(params, batch, rng, {})[0]))
    moved = jax.tree.map(lambda p: p + 0.1, params)
    value, aux = loss(moved, batch, rng, extras)
    hand = sum(float(np.sum(np.asarray(f) * 0.1 ** 2)) for f in jax.tree.leaves(fisher))
    assert float(aux["penalty"]) == pytest.approx(hand, rel=1e-4)
    assert float(value) == pytest.approx(float(base(moved, batch, rng, {})[0]) + 1.5 * hand,
                                         rel=1e-5)
    # The penalty's gradient is lam * fisher * (p - anchor); the anchor gets none.
    g = jax.grad(lambda p: loss(p, batch, rng, extras)[0] - base(p, batch, rng, {})[0])(moved)
    jax.tree.map(lambda a, f: np.testing.assert_allclose(a, 3.0 * f * 0.1, rtol=1e-3, atol=1e-6),
                 g, fisher)
    with pytest.raises(ValueError, match="TaskAnchor"):
        loss(params, batch, rng, {})


def test_reservoir_memory_is_a_uniform_sample_and_deterministic_per_seed():
    n, size, draws = 50, 10, 2000
    examples = {"x": np.arange(n, dtype=np.float32)[:, None], "y": np.arange(n, dtype=np.int32)}
    empty = {k: np.asarray(v) for k, v in replay.init_buffer(None, None, size=size,
                                                              x_shape=[1]).items()}
    counts = np.zeros(n)
    for seed in range(draws):
        # Two tasks offered in turn: 20 examples, then 30; the memory samples all 50.
        key = jax.random.PRNGKey(seed)
        first = replay.reservoir_fill(empty, {k: v[:20] for k, v in examples.items()}, key)
        assert sorted(first["y"].tolist()) == list(range(10)) or int(first["seen"]) == 20
        out = replay.reservoir_fill(first, {k: v[20:] for k, v in examples.items()},
                                    jax.random.fold_in(key, 1))
        assert int(out["seen"]) == n and len(set(out["y"].tolist())) == size
        np.testing.assert_array_equal(out["x"][:, 0], out["y"])  # rows stay whole
        counts[out["y"]] += 1
    freq = counts / draws
    # Each example kept with probability size / n = 0.2; binomial sd over 2000 draws ~ 0.009.
    assert np.all(np.abs(freq - size / n) < 0.045), freq
    assert abs(freq[:20].mean() - freq[20:].mean()) < 0.02  # the tasks share the memory fairly
    a = replay.reservoir_fill(empty, examples, jax.random.PRNGKey(7))
    b = replay.reservoir_fill(empty, examples, jax.random.PRNGKey(7))
    c = replay.reservoir_fill(empty, examples, jax.random.PRNGKey(8))
    np.testing.assert_array_equal(a["y"], b["y"])
    assert not np.array_equal(a["y"], c["y"])
    # Fewer examples than slots: the first ones fill in order.
    few = replay.reservoir_fill(empty, {k: v[:4] for k, v in examples.items()}, jax.random.PRNGKey(0))
    assert few["y"][:4].tolist() == [0, 1, 2, 3] and int(few["seen"]) == 4


def test_replay_loss_draws_from_the_filled_memory_only():
    model, params, arrays = _tiny()
    loss = replay.replay_classification(model, batch_size=8, weight=2.0)
    base = losses.classification(model)
    batch = {k: jnp.asarray(v) for k, v in arrays.items()}
    mem = replay.init_buffer(None, None, size=6, x_shape=[4])
    rng = jax.random.PRNGKey(0)
    value, aux = loss(params, batch, rng, {"replay": mem})  # empty: no replay term
    assert float(aux["replay_loss"]) == 0.0
    assert float(value) == pytest.approx(float(base(params, batch, jax.random.fold_in(rng, 0), {})[0]))
    # One filled slot: every replayed example is it.
    mem = {**mem, "x": mem["x"].at[0].set(batch["x"][3]), "y": mem["y"].at[0].set(batch["y"][3]),
           "seen": jnp.ones((), jnp.int32)}
    one = {"x": batch["x"][3:4], "y": batch["y"][3:4]}
    value, aux = loss(params, batch, rng, {"replay": mem})
    assert float(aux["replay_loss"]) == pytest.approx(float(base(params, one, rng, {})[0]), rel=1e-5)


def _run(tmp_path, variant, steps_per_task=None, plot=True, **overrides):
    c = continual_config.get_config(variant)
    if steps_per_task:
        c.schedule = {"name": "sequential",
                      "stages": [[s[0], steps_per_task] for s in c.schedule["stages"]]}
        c.total_steps = steps_per_task * len(c.schedule["stages"])
    if not plot:  # neither curves.png nor the accuracy-matrix heatmap
        c.evaluators = [dict(e, plot=False) for e in c.evaluators]
    for k, v in overrides.items():
        setattr(c, k, v)
    wd = str(tmp_path / variant.replace(",", "_"))
    state = alternating.train_and_evaluate(c, wd, progress=False, print_fn=None, plot=plot)
    with open(os.path.join(wd, "results.json")) as f:
        return state, json.load(f), wd


def test_config_variants_parse_and_refuse_two_methods():
    assert continual_config.parse("split_digits_task,ewc,smoke") == ("split_digits_task", True,
                                                                     "ewc")
    with pytest.raises(ValueError, match="method"):
        continual_config.parse("ewc,replay")
    c = continual_config.get_config("split_digits_task,l2,smoke")
    assert c.hooks[0]["mode"] == "l2" and "classes" in c.phases["task_0"]["loss_kwargs"]


def test_ewc_smoke_run_writes_the_matrix_and_checkpoints_the_anchor(tmp_path):
    state, results, wd = _run(tmp_path, "split_digits_task,ewc,smoke")
    cont = results["continual"]
    assert len(cont["matrix"]) == 5 and cont["acc"] > 0.5
    assert results["compiles"]["hook:task_anchor"] == 1  # one switch over the tasks' losses
    assert os.path.exists(os.path.join(wd, "accuracy_matrix.png"))
    # The config-rebuilt target lacks hook-declared extras, so the run's state is the target.
    saved, _ = alternating.load_state(wd, target=state)
    saved = {"extras": jax.device_get(saved.extras)}
    jax.tree.map(np.testing.assert_array_equal, saved["extras"]["anchor"],
                 jax.device_get(state.extras["anchor"]))
    # The anchor is the parameters at the last task's end (the run's end); the Fisher is > 0.
    jax.tree.map(np.testing.assert_array_equal, saved["extras"]["anchor"],
                 jax.device_get(state.params))
    assert all(float(np.sum(f)) > 0 for f in jax.tree.leaves(saved["extras"]["fisher"]))


def test_replay_smoke_run_writes_the_matrix_and_checkpoints_the_memory(tmp_path):
    # The memory is filled from each task's data at the task's end, whatever the steps.
    short = dict(steps_per_task=20, plot=False)
    state, results, wd = _run(tmp_path, "split_digits,replay,smoke", **short)
    cont = results["continual"]
    assert len(cont["matrix"]) == 5
    saved, _ = alternating.load_state(wd, target=state)
    mem = jax.device_get(saved.extras["replay"])
    np.testing.assert_array_equal(mem["y"], np.asarray(jax.device_get(state.extras["replay"]["y"])))
    assert int(mem["seen"]) > 200 and len(set(mem["y"].tolist())) == 10  # every task's classes
    # Deterministic per seed: a second run has the same memory.
    state2, _, _ = _run(tmp_path / "again", "split_digits,replay,smoke", **short)
    np.testing.assert_array_equal(np.asarray(jax.device_get(state2.extras["replay"]["x"])),
                                  mem["x"])

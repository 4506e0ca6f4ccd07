"""``executor: auto`` (the default) and convolution steps on CPU (alternating/executor_choice.py)."""

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alternating
from alternating import executor_choice, parallel
from alternating.schedules.adaptive import UCB
from alternating.schedules.static import Alternate


class _Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3,))(x.reshape(len(x), 64, 1)))
        return nn.Dense(10)(x.reshape(len(x), -1))


class _Dense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(16)(x.reshape(len(x), -1))))


def _loss_of(net):
    def loss(params, batch, rng, extras):
        logits = net.apply({"params": params}, batch["x"])
        y = jax.nn.one_hot(batch["y"], 10)
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(logits), -1)), {}
    return loss


class _Spec:
    element_spec = {"x": ((8, 64), np.float32), "y": ((8,), np.int32)}


def _step_of(net):
    loss = _loss_of(net)

    def step(params, batch):
        g = jax.grad(lambda p: loss(p, batch, None, None)[0])(params)
        return jax.tree.map(lambda a, b: a - 0.1 * b, params, g), jnp.zeros((1,))
    return step


def _abstract(net):
    return jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"])


def test_loop_slow_finds_a_convolution_gradient_on_cpu_and_nothing_in_an_mlp():
    mesh = parallel.make_mesh(jax.devices()[:1])
    args = ({"s": _Spec()}, {"a": ["s"]}, {"a": False})
    assert executor_choice.loop_slow({"a": _step_of(_Conv())}, *args, _abstract(_Conv()), mesh)
    assert not executor_choice.loop_slow({"a": _step_of(_Dense())}, *args, _abstract(_Dense()),
                                         mesh)


def test_choose_keeps_steps_that_are_slow_in_a_loop_out_of_loops():
    planned, adaptive = Alternate(["a", "b"]), UCB(["a", "b"], seed=0)
    slow, fast = (lambda: True), (lambda: False)
    assert executor_choice.choose("auto", 100, planned, False, fast)[:2] == ("fused", 100)
    kind, chunk, note, _ = executor_choice.choose("auto", 100, planned, False, slow)
    assert (kind, chunk) == ("host", 1) and "convolution" in note
    assert executor_choice.choose("auto", 100, adaptive, False, fast)[:2] == ("host", 1)
    # An explicit 'fused' and vectorized seeds keep their executor, in 1-step chunks.
    assert executor_choice.choose("fused", 100, planned, False, slow)[:2] == ("fused", 1)
    assert executor_choice.choose("host", 100, planned, True, slow)[:2] == ("host", 1)
    assert executor_choice.choose("fused", 100, planned, True, fast)[:2] == ("fused", 100)

    def never():
        raise AssertionError("the host executor never asks")
    assert executor_choice.choose("host", 100, planned, False, never) == ("host", 1, "", False)


def _run(net, workdir, said, **kw):
    return alternating.train(
        phases=[alternating.Phase(n, loss=_loss_of(net), data="digits",
                                  optimizer={"name": "sgd", "lr": 0.1}) for n in ("a", "b")],
        schedule={"name": "alternate", "pattern": ["a", "b"]},
        data={"digits": {"dataset": "digits", "batch_size": 8, "transforms": ["flatten"]}},
        init=lambda rng: net.init(rng, jnp.zeros((1, 64)))["params"], workdir=str(workdir),
        total_steps=6, log_every_steps=3, progress=False, plot=False, print_fn=said.append,
        mesh=parallel.make_mesh(jax.devices()[:1]), **kw)


def _compiles(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)["compiles"]


@pytest.mark.parametrize("net,expected", [
    (_Dense(), {"fused:3": 1}),
    (_Conv(), {"a": 1, "b": 1}),
], ids=["mlp_fused", "conv_host"])
def test_the_default_executor_fuses_planned_mlp_steps_and_not_convolutions_on_cpu(
        tmp_path, net, expected):
    said = []
    state = _run(net, tmp_path / "auto", said)
    assert _compiles(tmp_path / "auto") == expected
    assert any(s.startswith("executor: ") for s in said), said
    host = _run(net, tmp_path / "host", [], executor="host")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 jax.device_get(state.params), jax.device_get(host.params))


def test_vectorized_convolution_seeds_run_one_step_chunks_equal_to_single_runs(tmp_path):
    said = []
    stacked = _run(_Conv(), tmp_path / "seeds", said, num_seeds=2, executor="fused",
                   chunk_steps=50)
    # Every replica runs the same phase each step: that phase's step, no scan or switch.
    assert _compiles(tmp_path / "seeds") == {"fused:1:shared:a": 1, "fused:1:shared:b": 1}
    assert any("chunks of 1 step" in s for s in said), said
    for i in range(2):
        one = _run(_Conv(), tmp_path / f"seed{i}", [], seed=i, executor="host")
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-6),
                     jax.device_get(stacked.params), jax.device_get(one.params))

"""Shared optimizer groups: one optax state over several phases, one optimizer's semantics."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from executor_test import MODEL, _loss, _tiny_run

import alternating
from alternating import build, data as data_lib, parallel, partition
from alternating.state import tree_bytes

DIGITS = {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]}


def _phases(tx, group="shared"):
    return [
        alternating.Phase("a", loss=_loss, data="digits", params=None, optimizer=tx,
                          optimizer_group=group),
        alternating.Phase("b", loss=_loss, data="digits", params=[("Dense_1/.*", True), (".*", None)],
                          optimizer=tx, optimizer_group=group),
    ]


def _hand_written(tx, steps, pattern):
    """One optax state over all parameters; a step moves only its phase's leaves."""
    params = MODEL.init(build.run_rngs(0)[0], jnp.zeros((1, 64)))["params"]
    state = tx.init(params)
    stream = data_lib.make_stream(DIGITS, seed=build.stream_seed(0, "digits"))
    rules = {"a": None, "b": [("Dense_1/.*", True), (".*", None)]}
    for step in range(steps):
        phase = pattern[step % len(pattern)]
        batch = next(stream)
        trainable = partition.resolve(rules[phase], partition.flatten(params))
        own, rest = partition.split(params, trainable)
        grads = jax.grad(lambda o: _loss(partition.merge(o, rest), batch, None, {})[0])(own)
        flat_g = partition.flatten(grads)
        full = partition.unflatten({p: flat_g.get(p, jnp.zeros_like(v))
                                    for p, v in partition.flatten(params).items()})
        updates, new = tx.update(full, state, params)
        # PyTorch's one optimizer: leaves without a gradient keep their moments.
        def keep(new_tree, old_tree):
            n, o = partition.flatten(new_tree), partition.flatten(old_tree)
            return partition.unflatten({p: n[p] if p in flat_g else o[p] for p in n})
        adam = new[0]._replace(mu=keep(new[0].mu, state[0].mu), nu=keep(new[0].nu, state[0].nu))
        state = (adam,) + tuple(new[1:])
        flat_u = partition.flatten(updates)
        own = optax.apply_updates(own, partition.unflatten({p: flat_u[p] for p in flat_g}))
        params = partition.merge(own, rest)
    return params, state


def test_a_shared_group_equals_one_hand_written_optimizer(tmp_path):
    tx = optax.adam(1e-2)
    mesh = parallel.make_mesh(jax.devices()[:1])
    lib = _tiny_run(tmp_path, mesh=mesh, phases=_phases(tx), total_steps=9,
                    schedule={"name": "alternate", "pattern": [["a", 2], ["b", 1]]})
    params, state = _hand_written(tx, 9, ["a", "a", "b"])
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-7),
                 jax.device_get(lib.params), jax.device_get(params))
    got = jax.device_get(lib.opt_state["shared"])
    assert int(got[0].count) == 9  # the step count is shared by both phases
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-6, atol=1e-9),
                 got[0].mu, jax.device_get(state[0].mu))
    assert set(lib.opt_state) == {"shared"}


def test_a_step_leaves_the_other_phases_moments_and_values_unchanged(tmp_path):
    tx = optax.adam(1e-2)
    mesh = parallel.make_mesh(jax.devices()[:1])
    kw = dict(mesh=mesh, phases=_phases(tx), schedule={"name": "alternate", "pattern": [["a", 2], ["b", 1]]})
    two = jax.device_get(_tiny_run(tmp_path / "two", total_steps=2, **kw))
    three = jax.device_get(_tiny_run(tmp_path / "three", total_steps=3, **kw))  # + one 'b' step
    for key in ("Dense_0",):  # not trained by 'b'
        jax.tree.map(np.testing.assert_array_equal, two.params[key], three.params[key])
        jax.tree.map(np.testing.assert_array_equal, two.opt_state["shared"][0].mu[key],
                     three.opt_state["shared"][0].mu[key])
    assert not np.array_equal(two.params["Dense_1"]["kernel"], three.params["Dense_1"]["kernel"])


def test_opt_state_bytes_equal_one_state_over_the_union(tmp_path):
    tx = optax.adam(1e-2)
    _tiny_run(tmp_path, phases=_phases(tx), total_steps=3)
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    params = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
    assert res["opt_state_bytes_per_phase"] == {"shared": tree_bytes(tx.init(params))}


def test_config_specs_share_a_group_and_mismatches_are_refused(tmp_path):
    spec = {"name": "adam", "lr": 1e-2}
    phases = [alternating.Phase("a", loss=_loss, data="digits", optimizer=spec, optimizer_group="g"),
              alternating.Phase("b", loss=_loss, data="digits", optimizer=dict(spec),
                                params=[("Dense_1/.*", True), (".*", None)], optimizer_group="g")]
    state = _tiny_run(tmp_path / "ok", phases=phases, total_steps=4)
    assert set(state.opt_state) == {"g"}
    bad = [phases[0], alternating.Phase("b", loss=_loss, data="digits", optimizer={"name": "sgd"},
                                        optimizer_group="g")]
    with pytest.raises(ValueError, match=r"optimizer_group 'g': phases \['a', 'b'\] have different "
                                         r"optimizer specs"):
        _tiny_run(tmp_path / "bad", phases=bad)

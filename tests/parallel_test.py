"""Mesh with data and fsdp axes: sharding rules, and the same results as data only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from executor_test import _tiny_run
from jax.sharding import PartitionSpec as P

from alternating import parallel, partition


def test_default_rule_splits_large_leaves_on_a_divisible_dimension():
    mesh = parallel.make_mesh(fsdp=2)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2}
    tree = {"big": jax.ShapeDtypeStruct((4096, 6), jnp.float32),
            "odd": jax.ShapeDtypeStruct((16385, 3), jnp.float32),
            "small": jax.ShapeDtypeStruct((64, 16), jnp.float32),
            "count": jax.ShapeDtypeStruct((), jnp.int32)}
    sh = parallel.state_shardings(tree, mesh)
    assert sh["big"].spec == P("fsdp")
    assert sh["odd"].spec == P()  # neither 16385 nor 3 splits in two
    assert sh["small"].spec == P() and sh["count"].spec == P()
    # A data-only mesh replicates everything.
    assert all(s.spec == P() for s in jax.tree.leaves(
        parallel.state_shardings(tree, parallel.make_mesh())))
    assert parallel.batch_sharding(mesh).spec == P(("data", "fsdp"))


@pytest.mark.parametrize("rules,match", [
    ([("big", P("model"))], r"'big': axis 'model' is not a mesh axis; mesh axes: \['data', 'fsdp'\]"),
    ([("big", P(None, "fsdp"))], r"'big': dimension 3 of \(4096, 3\) does not split over axis 'fsdp'"),
])
def test_bad_rules_name_the_leaf(rules, match):
    tree = {"big": jax.ShapeDtypeStruct((4096, 3), jnp.float32)}
    with pytest.raises(ValueError, match=match):
        parallel.state_shardings(tree, parallel.make_mesh(fsdp=2), rules)


def test_fsdp_must_divide_the_devices():
    with pytest.raises(ValueError, match=r"fsdp=3 must be >= 1 and divide the 4 devices; valid: \[1, 2, 4\]"):
        parallel.make_mesh(fsdp=3)


def test_fsdp_mesh_matches_data_only_and_shards_params_and_opt_state(tmp_path):
    rules = [("Dense_0/kernel", P(None, "fsdp"))]  # the tiny model is below the default threshold
    data_only = _tiny_run(tmp_path / "data", mesh=parallel.make_mesh())
    fsdp = _tiny_run(tmp_path / "fsdp", mesh=parallel.make_mesh(fsdp=2), sharding_rules=rules)
    fused = _tiny_run(tmp_path / "fused", mesh=parallel.make_mesh(fsdp=2), sharding_rules=rules,
                      executor="fused", chunk_steps=6)
    kernel = fsdp.params["Dense_0"]["kernel"]
    assert kernel.sharding.spec == P(None, "fsdp")
    assert kernel.addressable_shards[0].data.shape == (64, 8)  # half of 16 columns per shard
    mu = partition.flatten(fsdp.opt_state["a"][0].mu)["Dense_0/kernel"]
    assert mu.sharding.spec == P(None, "fsdp")
    for other in (fsdp, fused):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     jax.device_get(data_only), jax.device_get(other))


def test_an_evaluation_of_many_batches_on_four_cpu_devices_does_not_deadlock():
    # 64 batches whose programs (each with an all-reduce) do not depend on each
    # other, evaluated 20 times on 4 CPU devices: with a wait every 32 batches
    # (the old bound) 1 of 2 runs aborted, with none 1 of 1 ("Termination
    # timeout for all reduce" after 40 s, a crash of the test process);
    # parallel.bound_queue waits every QUEUE_INDEPENDENT (4) dispatches.
    from types import SimpleNamespace

    from alternating import evaluation

    mesh = parallel.make_mesh()
    assert mesh.size == 4 and jax.devices()[0].platform == "cpu"

    def loss(params, batch, rng, extras):
        del rng, extras
        return jnp.mean(jnp.tanh(batch["x"] @ params["w"]) ** 2), {}

    rng = np.random.default_rng(0)
    w = rng.normal(size=(256, 256)).astype(np.float32) / 16
    xs = [rng.normal(size=(512, 256)).astype(np.float32) for _ in range(64)]
    batches = [parallel.shard_batch({"x": x, "mask": np.ones(512, np.float32)}, mesh)
               for x in xs]
    fn = evaluation.make_eval_fn(loss, mesh, None, "eval:many")
    sets = [evaluation.BoundEval("many", fn, batches)]
    state = SimpleNamespace(params={"w": jax.device_put(w, parallel.replicated(mesh))},
                            extras={}, step=jnp.zeros((), jnp.int32))
    want = np.mean([np.mean(np.tanh(x @ w) ** 2) for x in xs])
    for _ in range(20):
        got = evaluation.evaluate(sets, state)
        np.testing.assert_allclose(got["many"]["loss"], want, rtol=1e-4)

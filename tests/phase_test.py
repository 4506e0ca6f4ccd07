import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alternating import partition
from alternating.models import MLP
from alternating.phase import Phase, bind, make_optimizer, make_step
from alternating.state import init_state, tree_bytes

MODEL = MLP(features=(8, 3))
PARAMS = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
BATCH = {"x": jnp.asarray(np.random.RandomState(0).randn(16, 4), jnp.float32),
         "y": jnp.asarray(np.arange(16) % 3, jnp.int32)}


def loss_fn(params, batch, rng, extras):
    logits = MODEL.apply({"params": params}, batch["x"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


def _bound(rules, opt=None, index=0, name="p"):
    return bind(Phase(name, loss=loss_fn, params=rules, optimizer=opt or {"name": "adam", "lr": 0.1}),
                index, params=PARAMS)


def test_frozen_leaves_bit_identical_and_trained_leaves_move():
    b = _bound([("Dense_1/.*", True), (".*", None)])
    state = init_state(PARAMS, [b], jax.random.PRNGKey(1))
    step = jax.jit(make_step(b))
    for _ in range(3):
        state, metrics = step(state, BATCH)
    np.testing.assert_array_equal(state.params["Dense_0"]["kernel"], PARAMS["Dense_0"]["kernel"])
    np.testing.assert_array_equal(state.params["Dense_0"]["bias"], PARAMS["Dense_0"]["bias"])
    assert not np.allclose(state.params["Dense_1"]["kernel"], PARAMS["Dense_1"]["kernel"])
    assert int(state.phase_steps["p"]) == 3 and int(state.step) == 3
    assert set(metrics) == {"loss", "grad_norm", "lr", "accuracy"}


def test_masked_would_have_moved_frozen_leaves():
    # The pitfall this design avoids: optax.masked passes the frozen gradient through.
    grads = jax.grad(lambda p: loss_fn(p, BATCH, None, None)[0])(PARAMS)
    mask = jax.tree.map(lambda _: False, PARAMS)
    mask["Dense_1"] = jax.tree.map(lambda _: True, PARAMS["Dense_1"])
    tx = optax.masked(optax.adam(0.1), mask)
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    assert np.abs(updates["Dense_0"]["kernel"]).max() > 0


def test_optimizer_state_exists_only_for_own_leaves():
    b0 = _bound([("Dense_0/.*", True), (".*", None)], name="a")
    b1 = _bound([("Dense_1/kernel", True), (".*", None)], index=1, name="b")
    state = init_state(PARAMS, [b0, b1], jax.random.PRNGKey(1))
    adam_a = state.opt_state["a"][0]
    assert set(partition.flatten(adam_a.mu)) == {"Dense_0/kernel", "Dense_0/bias"}
    assert set(partition.flatten(state.opt_state["b"][0].mu)) == {"Dense_1/kernel"}
    own_bytes = {"a": (4 * 8 + 8) * 4, "b": 8 * 3 * 4}
    for name in ("a", "b"):  # mu + nu over own leaves, plus the adam and lr int32 counts
        assert tree_bytes(state.opt_state[name]) == 2 * own_bytes[name] + 8


def test_step_matches_hand_written_optax_on_the_subtree():
    b = _bound([("Dense_1/.*", True), (".*", None)], opt={"name": "sgd", "lr": 0.5})
    state = init_state(PARAMS, [b], jax.random.PRNGKey(1))
    new, _ = make_step(b)(state, BATCH)
    g = jax.grad(lambda p: loss_fn(p, BATCH, None, None)[0])(PARAMS)["Dense_1"]
    expect = jax.tree.map(lambda p, gg: p - 0.5 * gg, PARAMS["Dense_1"], g)
    for k in ("kernel", "bias"):
        np.testing.assert_allclose(new.params["Dense_1"][k], expect[k], rtol=1e-6, atol=1e-7)


def test_lr_schedule_counts_the_phases_own_steps():
    tx, lr = make_optimizer({"name": "sgd", "lr": 1.0, "schedule": "cosine", "warmup_steps": 10},
                            default_decay_steps=110)
    assert float(lr(0)) == 0.0 and float(lr(10)) == pytest.approx(1.0)
    assert float(lr(60)) == pytest.approx(0.5, abs=1e-6) and float(lr(110)) == pytest.approx(0.0, abs=1e-6)
    b = bind(Phase("p", loss=loss_fn, optimizer={"name": "sgd", "lr": 1.0, "schedule": "linear",
                                                  "decay_steps": 4}), 0, params=PARAMS)
    state = init_state(PARAMS, [b], jax.random.PRNGKey(0))
    lrs = []
    for _ in range(3):
        state, m = make_step(b)(state, BATCH)
        lrs.append(float(m["lr"]))
    np.testing.assert_allclose(lrs, [1.0, 0.75, 0.5])


def test_ema_extra_tracks_params():
    b = _bound(None)
    state = init_state(PARAMS, [b], jax.random.PRNGKey(1), ema_decay=0.5)
    new, _ = make_step(b, ema_decay=0.5)(state, BATCH)
    expect = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, PARAMS, new.params)
    jax.tree.map(lambda a, b_: np.testing.assert_allclose(a, b_, rtol=1e-6), new.extras["ema"], expect)


@pytest.mark.parametrize("spec,match", [
    ({"name": "adamm"}, r"'adamm' is not an optimizer; valid names: \['adam', 'adamw'"),
    ({"name": "adam", "learning_rte": 1}, r"unknown keys \['learning_rte'\]; valid keys"),
    ({"name": "adam", "schedule": "cosin"}, r"valid schedules: \['constant', 'cosine', 'linear', 'infinite'\]"),
])
def test_bad_optimizer_specs(spec, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(spec, where="phase 'p' optimizer")


def test_unknown_loss_names_the_registry():
    with pytest.raises(ValueError, match=r"'crossentropy' is not a registered loss; valid names: \["):
        bind(Phase("p", loss="crossentropy"), 0, params=PARAMS)
    with pytest.raises(ValueError, match="cannot import 'no_such_module:f'"):
        bind(Phase("p", loss="no_such_module:f"), 0, params=PARAMS)


def test_rules_that_train_nothing_are_an_error():
    with pytest.raises(ValueError, match="its rules train no parameter"):
        bind(Phase("p", loss=loss_fn, params=[(".*", None)]), 0, params=PARAMS)

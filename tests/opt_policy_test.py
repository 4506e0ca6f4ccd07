import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alternating import opt_policy, partition
from alternating.models import MLP
from alternating.phase import Phase, bind, make_step
from alternating.state import init_state

MODEL = MLP(features=(8, 3))
PARAMS = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
BATCH = {"x": jnp.asarray(np.random.RandomState(0).randn(16, 4), jnp.float32),
         "y": jnp.asarray(np.arange(16) % 3, jnp.int32)}
ADAM = {"name": "adam", "lr": 0.05}


def loss_fn(params, batch, rng, extras):
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def _bound(name, rules, policy=None, index=0, opt=ADAM):
    return bind(Phase(name, loss=loss_fn, params=rules, optimizer=opt, opt_policy=policy),
                index, params=PARAMS)


def _assert_trees_equal(a, b):
    chex.assert_trees_all_equal(a, b)  # exact, leaf by leaf, structure included


def _run(bounds, order, state=None):
    state = state or init_state(PARAMS, bounds, jax.random.PRNGKey(1))
    steps = {b.name: jax.jit(make_step(b)) for b in bounds}
    for name in order:
        state, _ = steps[name](state, BATCH)
    return state, steps


def _grads(params, trainable):
    own, rest = partition.split(params, trainable)
    return jax.grad(lambda o: loss_fn(partition.merge(o, rest), BATCH, None, None)[0])(own)


def test_keep_is_default_and_other_phase_state_is_bit_untouched():
    a = _bound("a", [("Dense_0/.*", True), (".*", None)], policy="on_enter")
    b = _bound("b", [("Dense_1/.*", True), (".*", None)], index=1)
    state, steps = _run([a, b], ["a", "b", "a", "b"])
    before_b = jax.device_get(state.opt_state["b"])
    state, _ = steps["a"](state, BATCH)  # a re-enters: its state resets, b's must not move
    _assert_trees_equal(jax.device_get(state.opt_state["b"]), before_b)
    assert b.policy.keeps and opt_policy.LAST_STEP in state.extras
    assert set(state.extras[opt_policy.LAST_STEP]) == {"a"}  # bookkeeping only where needed


def test_whole_reset_on_enter_equals_a_fresh_optimizer():
    a = _bound("a", [("Dense_0/.*", True), (".*", None)], policy="on_enter")
    b = _bound("b", [("Dense_1/.*", True), (".*", None)], index=1)
    state, steps = _run([a, b], ["a", "a", "b"])
    assert int(state.opt_state["a"][0].count) == 2
    params_before = state.params
    new, metrics = steps["a"](state, BATCH)
    # Expected: one Adam step from tx.init on the current parameters.
    own, _ = partition.split(params_before, a.trainable)
    g = _grads(params_before, a.trainable)
    upd, expect_opt = a.tx.update(g, a.tx.init(own), own)
    expect_own = optax.apply_updates(own, upd)
    chex.assert_trees_all_close(new.opt_state["a"], expect_opt, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(partition.split(new.params, a.trainable)[0], expect_own,
                                rtol=1e-6, atol=1e-7)
    assert int(new.opt_state["a"][0].count) == 1
    # ... whereas consecutive steps of the same phase keep the state.
    again, _ = steps["a"](new, BATCH)
    assert int(again.opt_state["a"][0].count) == 2


def test_subset_reset_leaves_other_moments_bit_identical():
    p = _bound("p", None, policy={"reset": "every", "every": 2, "leaves": "Dense_1/.*"})
    state = init_state(PARAMS, [p], jax.random.PRNGKey(1))
    own = partition.split(PARAMS, p.trainable)[0]
    # The reset itself, applied to a state with non-zero moments:
    state, _ = _run([p], ["p", "p"], state)
    opt = state.opt_state["p"]
    out = opt_policy.apply(p.policy, p.tx, opt, own, p.policy_mask, jnp.asarray(True))
    for moment in ("mu", "nu"):
        old, new = getattr(opt[0], moment), getattr(out[0], moment)
        _assert_trees_equal(new["Dense_0"], old["Dense_0"])  # not reset: bit-identical
        _assert_trees_equal(new["Dense_1"], jax.tree.map(jnp.zeros_like, old["Dense_1"]))
        assert float(jnp.abs(old["Dense_1"]["kernel"]).max()) > 0
    assert int(out[0].count) == int(opt[0].count) == 2  # shared counter kept
    off = opt_policy.apply(p.policy, p.tx, opt, own, p.policy_mask, jnp.asarray(False))
    _assert_trees_equal(off, opt)


def test_every_n_own_steps_inside_the_step():
    p = _bound("p", None, policy={"reset": "every", "every": 2, "leaves": "Dense_1/.*"})
    state, steps = _run([p], ["p", "p"])
    state, _ = steps["p"](state, BATCH)  # third step: count 2 -> reset Dense_1 first
    mu = state.opt_state["p"][0].mu
    nu = state.opt_state["p"][0].nu["Dense_1"]["kernel"]
    mu1 = mu["Dense_1"]["kernel"]
    # After a restart, nu = (1 - b2) g^2 and mu = (1 - b1) g exactly, so mu^2 / nu = 0.01 / 0.001.
    np.testing.assert_allclose(np.asarray(mu1 ** 2), np.asarray(10.0 * nu), rtol=1e-4, atol=1e-12)
    nu0 = state.opt_state["p"][0].nu["Dense_0"]["kernel"]
    assert not np.allclose(np.asarray(mu["Dense_0"]["kernel"] ** 2), np.asarray(10.0 * nu0),
                           rtol=1e-2)


def test_at_steps_resets_once_per_boundary_even_if_the_phase_was_away():
    a = _bound("a", [("Dense_0/.*", True), (".*", None)], policy={"reset": "at_steps", "steps": [3]})
    b = _bound("b", [("Dense_1/.*", True), (".*", None)], index=1)
    # a runs at global steps 0, 1; b at 2, 3, 4; a again at 5 (boundary 3 passed), 6.
    state, steps = _run([a, b], ["a", "a", "b", "b", "b", "a"])
    assert int(state.opt_state["a"][0].count) == 1
    state, _ = steps["a"](state, BATCH)
    assert int(state.opt_state["a"][0].count) == 2


def test_whole_reset_restarts_the_lr_schedule_and_reports_it():
    opt = {"name": "sgd", "lr": 1.0, "warmup_steps": 2}
    p = _bound("p", None, policy={"reset": "every", "every": 3}, opt=opt)
    state = init_state(PARAMS, [p], jax.random.PRNGKey(1))
    step = jax.jit(make_step(p))
    lrs = []
    for _ in range(5):
        state, m = step(state, BATCH)
        lrs.append(float(m["lr"]))
    np.testing.assert_allclose(lrs, [0.0, 0.5, 1.0, 0.0, 0.5])


def test_no_retrace_across_resets():
    p = _bound("p", None, policy="on_enter")
    q = _bound("q", None, index=1)
    state = init_state(PARAMS, [p, q], jax.random.PRNGKey(1))
    traces = {"n": 0}
    raw = make_step(p)

    def counted(s, b):
        traces["n"] += 1
        return raw(s, b)

    sp, sq = jax.jit(counted), jax.jit(make_step(q))
    for _ in range(3):
        state, _ = sp(state, BATCH)
        state, _ = sq(state, BATCH)
    assert traces["n"] == 1


@pytest.mark.parametrize("spec,match", [
    ({"reset": "sometimes"}, r"reset='sometimes'; valid: \['keep', 'on_enter'"),
    ({"reset": "every"}, r"needs every=N >= 1"),
    ({"reset": "at_steps"}, r"needs steps="),
    ({"reset": "keep", "leaves": "x"}, r"given with reset='keep'"),
    ({"rest": "keep"}, r"unknown keys \['rest'\]"),
])
def test_bad_policies(spec, match):
    with pytest.raises(ValueError, match=match):
        opt_policy.parse(spec, where="phase 'p' opt_policy")


def test_leaves_matching_nothing_names_the_paths():
    with pytest.raises(ValueError, match=r"phase 'p' opt_policy: leaves='Dense_9/.\*' matches none"):
        _bound("p", None, policy={"reset": "on_enter", "leaves": "Dense_9/.*"})

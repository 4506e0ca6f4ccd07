import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alternating
from alternating import extras as extras_lib
from alternating.models import MLP
from alternating.phase import Phase, bind, make_step
from alternating.state import init_state

MODEL = MLP(features=(8, 3))
PARAMS = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))["params"]
RNG = np.random.RandomState(0)
BATCH = {"x": jnp.asarray(RNG.randn(16, 4), jnp.float32),
         "y": jnp.asarray(np.arange(16) % 3, jnp.int32)}
A_RULES = [("Dense_0/.*", True), (".*", None)]
B_RULES = [("Dense_1/.*", True), (".*", None)]


def loss_fn(params, batch, rng, extras):
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def teacher_loss(params, batch, rng, extras):
    """Reads another phase's product: CE to the teacher's pseudo-labels (no labels used)."""
    pseudo = MODEL.apply({"params": extras["teacher"]}, batch["x"]).argmax(-1)
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, pseudo).mean(), {}


def _bind(name, rules, updates=(), index=0, loss=loss_fn):
    return bind(Phase(name, loss=loss, params=rules, optimizer={"name": "sgd", "lr": 0.1},
                      updates=updates), index, params=PARAMS)


def test_ring_push_and_get():
    ring = extras_lib.ring_init({"w": jnp.zeros(2)}, 3)
    assert int(ring["count"]) == 1
    for v in (1.0, 2.0, 3.0, 4.0):
        ring = extras_lib.ring_push(ring, {"w": jnp.full(2, v)})
    got = [float(extras_lib.ring_get(ring, lag)["w"][0]) for lag in range(5)]
    assert got == [4.0, 3.0, 2.0, 2.0, 2.0]  # only 3 kept; older lags clip to the oldest
    young = extras_lib.ring_push(extras_lib.ring_init({"w": jnp.zeros(2)}, 4), {"w": jnp.ones(2)})
    assert float(jax.jit(extras_lib.ring_get)(young, jnp.int32(3))["w"][0]) == 0.0


def test_each_phase_updates_only_its_own_teacher():
    specs = {"teacher_a": {"kind": "copy"}, "teacher_b": {"kind": "copy"}}
    a = _bind("a", A_RULES, [{"extra": "teacher_a", "rule": "ema", "decay": 0.5}])
    b = _bind("b", B_RULES, [{"extra": "teacher_b", "rule": "ema", "decay": 0.5}], index=1)
    state = init_state(PARAMS, [a, b], jax.random.PRNGKey(1), extra_specs=specs)
    sa, sb = jax.jit(make_step(a)), jax.jit(make_step(b))
    state, _ = sa(state, BATCH)
    expect_a = jax.tree.map(lambda t, p: 0.5 * t + 0.5 * p, PARAMS, state.params)
    chex.assert_trees_all_close(state.extras["teacher_a"], expect_a, rtol=1e-6)
    chex.assert_trees_all_equal(state.extras["teacher_b"], PARAMS)  # b has not run
    before = state.extras["teacher_a"]
    state, _ = sb(state, BATCH)
    chex.assert_trees_all_equal(state.extras["teacher_a"], before)


def test_push_every_two_steps():
    specs = {"snaps": {"kind": "ring", "size": 4}}
    p = _bind("p", None, [{"extra": "snaps", "rule": "push", "every": 2}])
    state = init_state(PARAMS, [p], jax.random.PRNGKey(1), extra_specs=specs)
    step = jax.jit(make_step(p))
    history = []
    for _ in range(4):
        state, _ = step(state, BATCH)
        history.append(state.params)
    assert int(state.extras["snaps"]["count"]) == 3  # init + pushes after steps 2 and 4
    chex.assert_trees_all_equal(extras_lib.ring_get(state.extras["snaps"], 0), history[3])
    chex.assert_trees_all_equal(extras_lib.ring_get(state.extras["snaps"], 1), history[1])
    chex.assert_trees_all_equal(extras_lib.ring_get(state.extras["snaps"], 2), PARAMS)


def test_ramp_first_update_copies_the_params():
    p = _bind("p", None, [{"extra": "t", "rule": "ema", "decay": 0.99, "ramp": True}])
    state = init_state(PARAMS, [p], jax.random.PRNGKey(1), extra_specs={"t": {"kind": "copy"}})
    state, _ = jax.jit(make_step(p))(state, BATCH)
    chex.assert_trees_all_close(state.extras["t"], state.params, rtol=1e-6)


def test_a_loss_reads_another_groups_teacher_and_a_custom_dual_rule():
    # Phase "student" learns from the teacher's pseudo-labels; "dual" ascends a
    # dual variable on the constraint sum(Dense_1 kernel) = 0 (a callable rule).
    def dual_rule(value, params, extras, rng, count):
        return value + 0.5 * params["Dense_1"]["kernel"].sum()

    specs = {"teacher": {"kind": "copy"},
             "lam": {"kind": "init", "init": "jax.numpy:zeros_like", "kwargs": {}}}
    student = _bind("student", B_RULES, loss=teacher_loss)
    dual = _bind("dual", A_RULES, [{"extra": "lam", "rule": dual_rule}], index=1)
    with pytest.raises(TypeError):  # jnp.zeros_like(params, rng): init gets (params, rng)
        init_state(PARAMS, [student, dual], jax.random.PRNGKey(1), extra_specs=specs)
    specs["lam"] = {"kind": "init", "init": f"{__name__}:zero_scalar"}
    state = init_state(PARAMS, [student, dual], jax.random.PRNGKey(1), extra_specs=specs)
    assert state.extras["lam"].shape == ()
    s_step, d_step = jax.jit(make_step(student)), jax.jit(make_step(dual))
    state, m = s_step(state, BATCH)
    state, _ = d_step(state, BATCH)
    np.testing.assert_allclose(float(state.extras["lam"]),
                               0.5 * float(state.params["Dense_1"]["kernel"].sum()), rtol=1e-5)
    # The teacher's parameters were read, never trained.
    chex.assert_trees_all_equal(state.extras["teacher"], PARAMS)
    assert np.isfinite(float(m["loss"]))


def zero_scalar(params, rng):
    del params, rng
    return jnp.zeros((), jnp.float32)


def test_errors_name_the_phase_and_the_choices():
    p = _bind("p", None, [{"extra": "nope", "rule": "copy"}])
    with pytest.raises(ValueError, match=r"phase 'p' updates extra 'nope', which is not declared; "
                                         r"declared extras: \['t'\]"):
        init_state(PARAMS, [p], jax.random.PRNGKey(1), extra_specs={"t": {"kind": "copy"}})
    with pytest.raises(ValueError, match=r"extras.r: kind='ring' needs size"):
        extras_lib.init_extras({"r": {"kind": "ring"}}, PARAMS, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"kind='cpy'; valid kinds: \['copy'"):
        extras_lib.init_extras({"r": {"kind": "cpy"}}, PARAMS, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"phase 'q' updates\[0\].rule='avg' is not a registered extras update rule; valid names"):
        _bind("q", None, [{"extra": "t", "rule": "avg"}])
    with pytest.raises(ValueError, match=r"decay=1.5; it must be in \[0, 1\)"):
        _bind("q", None, [{"extra": "t", "decay": 1.5}])
    q = _bind("q", None)
    with pytest.raises(ValueError, match="an extra named 'ema' is declared too"):
        init_state(PARAMS, [q], jax.random.PRNGKey(1), ema_decay=0.9,
                   extra_specs={"ema": {"kind": "copy"}})


def test_extras_are_checkpointed_and_restored_by_the_loop(tmp_path):
    x = RNG.randn(64, 4).astype(np.float32)
    data = {"d": {"dataset": {"x": x, "y": (np.arange(64) % 3).astype(np.int32)}, "batch_size": 16}}
    phases = [Phase("a", loss_fn, data="d", params=A_RULES, opt_policy="on_enter",
                    updates=[{"extra": "teacher", "rule": "ema", "decay": 0.9}]),
              Phase("b", loss_fn, data="d", params=B_RULES,
                    updates=[{"extra": "snaps", "rule": "push"}])]
    kw = dict(phases=phases, schedule={"name": "alternate", "pattern": ["a", "b"]}, data=data,
              init=lambda rng: MODEL.init(rng, jnp.zeros((1, 4)))["params"],
              extras={"teacher": {"kind": "copy"}, "snaps": {"kind": "ring", "size": 3}},
              progress=False, plot=False, print_fn=None, log_every_steps=2)
    full = alternating.train(workdir=str(tmp_path / "full"), total_steps=8, **kw)
    alternating.train(workdir=str(tmp_path / "resumed"), total_steps=5, **kw)
    resumed = alternating.train(workdir=str(tmp_path / "resumed"), total_steps=8, **kw)
    assert int(full.extras["snaps"]["count"]) == 5
    chex.assert_trees_all_equal(jax.device_get(resumed.extras), jax.device_get(full.extras))
    chex.assert_trees_all_equal(jax.device_get(resumed.opt_state), jax.device_get(full.opt_state))
    assert not np.allclose(full.extras["teacher"]["Dense_0"]["kernel"],
                           full.params["Dense_0"]["kernel"])

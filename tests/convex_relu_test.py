import jax
import jax.numpy as jnp
import numpy as np

from alternating.schemes import convex_relu
from alternating.models import get_model
from alternating.phase import Phase, bind, make_step
from alternating.state import init_state

R = np.random.RandomState(0)
X = jnp.asarray(np.concatenate([R.rand(12, 5), np.ones((12, 1))], 1), jnp.float32)
Y = jnp.asarray(np.sign(R.randn(12)), jnp.float32)
MODEL = get_model({"name": "convex_relu", "patterns": 4, "dim": 6})


def test_network_from_convex_matches_when_constraints_hold():
    # u_i = c * g_i satisfies (2 D_i - 1) X u_i = c |X g_i| >= 0 for c >= 0.
    g = MODEL.module.directions().T  # [P, d]
    coef = jnp.asarray(R.rand(4, 2), jnp.float32)
    u = coef[..., None] * g[:, None, :]
    params = {"u": u}
    assert float(MODEL.apply(params, X, part="constraints").min()) >= 0.0
    f = convex_relu.network_from_convex(u, X)
    np.testing.assert_allclose(np.asarray(f(X)), np.asarray(MODEL.apply(params, X)), rtol=1e-5,
                               atol=1e-6)
    # With a violated constraint the two differ (the convex value is not a network's).
    bad = {"u": u.at[0, 0].set(-u[0, 0])}
    assert float(MODEL.apply(bad, X, part="constraints").min()) < 0
    assert not np.allclose(np.asarray(convex_relu.network_from_convex(bad["u"], X)(X)),
                           np.asarray(MODEL.apply(bad, X)), atol=1e-4)


def test_admm_slack_then_dual_rules_every_k_steps():
    data = {"x": np.asarray(X)}
    zeros = {"kind": "init", "init": "alternating.schemes.convex_relu:zeros_like_constraints",
             "kwargs": {"n": 12}}
    rules = [{"extra": "slack", "rule": "alternating.schemes.convex_relu:slack_rule", "every": 2,
              "kwargs": {"data": data, "rho": 2.0}},
             {"extra": "dual", "rule": "alternating.schemes.convex_relu:dual_rule", "every": 2,
              "kwargs": {"data": data, "rho": 2.0}}]
    params = MODEL.init(jax.random.PRNGKey(0))
    b = bind(Phase("primal", loss="admm_primal", loss_kwargs={"rho": 2.0}, updates=rules,
                   optimizer={"name": "sgd", "lr": 0.01}), 0, params=params, model=MODEL)
    state = init_state(params, [b], jax.random.PRNGKey(1),
                       extra_specs={"slack": zeros, "dual": dict(zeros)})
    batch = {"x": X, "y": Y, "idx": jnp.arange(12)}
    step = jax.jit(make_step(b))
    state, _ = step(state, batch)
    assert float(jnp.abs(state.extras["slack"]).max()) == 0.0  # not yet: every=2
    state, m = step(state, batch)
    g = MODEL.apply(state.params, X, part="constraints")
    np.testing.assert_allclose(np.asarray(state.extras["slack"]), np.maximum(0, np.asarray(g)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(state.extras["dual"]),
                               2.0 * np.asarray(g - state.extras["slack"]), rtol=1e-5, atol=1e-6)
    assert float(state.extras["dual"].max()) <= 0.0 < float(jnp.abs(state.extras["dual"]).max())
    assert {"objective", "violation"} <= set(m)

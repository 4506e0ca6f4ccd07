import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alternating import losses
from alternating.schemes import cross_phase
from alternating.models import get_model

MODEL = get_model({"name": "mlp", "features": (16, 3), "input_shape": (4,)})
PARAMS = MODEL.init(jax.random.PRNGKey(0))
R = np.random.RandomState(0)
BATCH = {"x": jnp.asarray(R.rand(32, 4), jnp.float32), "y": jnp.asarray(R.randint(3, size=32))}


def _ce(params, x):
    return optax.softmax_cross_entropy_with_integer_labels(
        MODEL.apply(params, x), BATCH["y"]).mean()


def test_pgd_stays_in_the_ball_and_raises_the_loss():
    f = lambda z: MODEL.apply(PARAMS, z)
    obj = lambda lg: optax.softmax_cross_entropy_with_integer_labels(lg, BATCH["y"]).mean()
    xa = cross_phase.pgd(f, obj, BATCH["x"], jax.random.PRNGKey(1), eps=0.1, step_size=0.03,
                         steps=10)
    assert float(jnp.abs(xa - BATCH["x"]).max()) <= 0.1 + 1e-6
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    assert float(_ce(PARAMS, xa)) > float(_ce(PARAMS, BATCH["x"])) + 1e-3


def test_adversarial_loss_with_zero_steps_is_the_clean_loss():
    clean = losses.resolve_loss("adversarial", MODEL, {"steps": 0})
    value, aux = clean(PARAMS, BATCH, jax.random.PRNGKey(0), {})
    np.testing.assert_allclose(float(value), float(_ce(PARAMS, BATCH["x"])), rtol=1e-6)
    adv = losses.resolve_loss("adversarial", MODEL, {"steps": 5, "eps": 0.2})
    v2, aux2 = adv(PARAMS, BATCH, jax.random.PRNGKey(0), {})
    assert float(v2) > float(value) and float(aux2["adv_accuracy"]) <= float(aux2["accuracy"])


def test_mean_teacher_reads_the_teacher_from_extras():
    batch = {"labeled": BATCH, "unlabeled": {"x": BATCH["x"], "y": BATCH["y"]}}
    fn = losses.resolve_loss("mean_teacher", MODEL, {"weight": 3.0})
    same, aux = fn(PARAMS, batch, jax.random.PRNGKey(0), {"teacher": PARAMS})
    assert float(aux["consistency"]) == 0.0  # teacher == student, no noise
    np.testing.assert_allclose(float(same), float(_ce(PARAMS, BATCH["x"])), rtol=1e-6)
    other = MODEL.init(jax.random.PRNGKey(5))
    diff, aux = fn(PARAMS, batch, jax.random.PRNGKey(0), {"teacher": other})
    assert float(aux["consistency"]) > 0
    np.testing.assert_allclose(float(diff), float(aux["ce"]) + 3.0 * float(aux["consistency"]),
                               rtol=1e-6)
    # Only the student is differentiated: the teacher gets no gradient.
    g = jax.grad(lambda t: fn(PARAMS, batch, jax.random.PRNGKey(0), {"teacher": t})[0])(other)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g))


def test_classification_can_evaluate_an_extra():
    fn = losses.resolve_loss("classification", MODEL, {"params_from": "teacher"})
    other = MODEL.init(jax.random.PRNGKey(5))
    v, _ = fn(PARAMS, BATCH, None, {"teacher": other})
    np.testing.assert_allclose(float(v), float(_ce(other, BATCH["x"])), rtol=1e-6)
    with pytest.raises(KeyError):
        fn(PARAMS, BATCH, None, {})


def test_trades_terms_and_router_gradient_only_through_router_terms():
    moe = get_model({"name": "moe", "num_experts": 2, "expert_features": (8, 3),
                     "router_features": (4,), "input_shape": (4,)})
    params = moe.init(jax.random.PRNGKey(0))
    ce_only = losses.resolve_loss("trades", moe, {"beta": 0.0})
    v, aux = ce_only(params, BATCH, jax.random.PRNGKey(1), {})
    ce = optax.softmax_cross_entropy_with_integer_labels(
        moe.apply(params, BATCH["x"]), BATCH["y"]).mean()
    np.testing.assert_allclose(float(v), float(ce), rtol=1e-6)
    assert float(aux["kl"]) > 0  # the attack found a perturbation that moves the output
    router_only = losses.resolve_loss("trades", moe, {"beta": 0.0, "ce": False,
                                                       "router_beta": 6.0, "attack_router": True})
    g = jax.grad(lambda p: router_only(p, BATCH, jax.random.PRNGKey(1), {})[0])(params)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g["expert_0"]))
    assert float(jnp.abs(g["router"]["Dense_0"]["kernel"]).max()) > 0

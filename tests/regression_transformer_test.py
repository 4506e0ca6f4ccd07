import jax
import jax.numpy as jnp
import numpy as np

from alternating import losses
from alternating.schemes import regression_transformer as rt
from alternating.models import get_model

MODEL = get_model({"name": "seq_model", "length": 6, "dim": 16, "heads": 2, "layers": 1})
PARAMS = MODEL.init(jax.random.PRNGKey(0))
DATA = rt.make_sequences(64, 6, seed=0)
BATCH = {"x": jnp.asarray(DATA["x"], jnp.float32), "y": jnp.asarray(DATA["y"])}


def test_sequences_have_a_spread_of_computable_properties():
    d = rt.make_sequences(2000, 10, seed=1)
    assert d["x"].min() >= 0 and d["x"].max() <= 9
    np.testing.assert_array_equal(d["y"], rt.property_bin(d["x"]))
    assert len(np.unique(d["y"])) >= 6  # the tilt spreads the property over the bins
    assert rt.property_bin(np.full((1, 4), 9))[0] == rt.BINS - 1


def test_self_consistency_term_is_off_at_weight_zero_and_reaches_the_generator():
    plain = losses.resolve_loss("rt_generate", MODEL, {"consistency": 0.0})
    sc = losses.resolve_loss("rt_generate", MODEL, {"consistency": 1.0})
    v0, a0 = plain(PARAMS, BATCH, jax.random.PRNGKey(1), {})
    v1, a1 = sc(PARAMS, BATCH, jax.random.PRNGKey(1), {})
    assert float(a0["sc"]) == 0.0 and float(a1["sc"]) > 0.0
    np.testing.assert_allclose(float(v1), float(a1["gen_ce"]) + float(a1["sc"]), rtol=1e-5)
    # The soft fill makes the SC term differentiable w.r.t. the sequence head.
    only_sc = lambda p: sc(p, BATCH, jax.random.PRNGKey(1), {})[1]["sc"]
    g = jax.grad(only_sc)(PARAMS)
    assert float(jnp.abs(g["seq_head"]["kernel"]).max()) > 0


def test_predict_loss_and_evaluate_shapes():
    v, aux = losses.resolve_loss("rt_predict", MODEL, {})(PARAMS, BATCH, None, {})
    assert np.isfinite(float(v)) and 0.0 <= float(aux["prop_mae"]) <= 1.0
    ev = rt.evaluate(MODEL, PARAMS, DATA)
    assert set(ev) == {"prop_mae", "spearman", "spearman_unchanged"}
    assert -1.0 <= ev["spearman"] <= 1.0

"""Mixed precision: bfloat16 compute with float32 parameters and optimizer states."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from executor_test import _loss, _tiny_run

import alternating
from alternating import metrics, parallel


def _phases(dtype):
    return [
        alternating.Phase("a", loss=_loss, data="digits", params=[("Dense_0/.*", True), (".*", None)],
                          optimizer={"name": "adam", "lr": 1e-2}, compute_dtype=dtype),
        alternating.Phase("b", loss=_loss, data="digits", params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.1}, compute_dtype=dtype),
    ]


def _float_dtypes(tree):
    return {str(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


def test_bf16_keeps_float32_state_and_both_executors_agree(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    host = _tiny_run(tmp_path / "host", mesh=mesh, phases=_phases("bfloat16"), total_steps=12)
    fused = _tiny_run(tmp_path / "fused", mesh=mesh, phases=_phases("bfloat16"), total_steps=12,
                      executor="fused", chunk_steps=12)
    assert _float_dtypes(host.params) == {"float32"}
    assert _float_dtypes(host.opt_state) == {"float32"}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(host), jax.device_get(fused))
    f32 = _tiny_run(tmp_path / "f32", mesh=mesh, phases=_phases(None), total_steps=12)
    # Different arithmetic, the same training: close, not equal.
    a, b = jax.device_get(host.params), jax.device_get(f32.params)
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=0.05), a, b)
    rows = [r for r in metrics.read_jsonl(tmp_path / "host" / "metrics.jsonl") if r["split"] == "train"]
    assert all(np.isfinite(r["loss"]) for r in rows)


def test_bf16_with_vectorized_seeds(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    kw = dict(mesh=mesh, phases=_phases("bfloat16"), total_steps=6, log_every_steps=0)
    stacked = _tiny_run(tmp_path / "seeds", num_seeds=2, executor="fused", chunk_steps=6, **kw)
    assert _float_dtypes(stacked.params) == {"float32"}
    single = _tiny_run(tmp_path / "one", seed=1, **kw)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6),
                 jax.device_get(stacked.params), jax.device_get(single.params))


def test_unknown_compute_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"phase 'a' compute_dtype='fp8'; valid: \['float32', 'bfloat16'\]"):
        _tiny_run(tmp_path, phases=_phases("fp8"))

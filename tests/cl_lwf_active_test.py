"""Class-incremental LwF as van de Ven & Tolias: the expanding head and the zero-padded target."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alternating.continual import distill
from alternating.continual.losses import active_classification
from alternating.models import MLP, Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import cl_methods  # noqa: E402


def _setup():
    model = Model(MLP(features=(5, 6)), {"x": (3,)})
    params = model.init(jax.random.PRNGKey(0))
    moved = jax.tree.map(lambda p: p + 0.3 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(6, 3)).astype(np.float32),
             "y": np.array([2, 3, 2, 3, 2, 3], np.int32),
             "mask": np.array([1, 1, 1, 1, 1, 0], np.float32)}
    return model, params, moved, batch


def _log_softmax(z, classes):
    z = z[:, classes]
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _mean(v, batch):
    return (v * batch["mask"]).sum() / batch["mask"].sum()


def test_active_classification_trains_the_active_classes_and_scores_every_output():
    model, _, moved, batch = _setup()
    value, aux = jax.jit(active_classification(model, active=[0, 1, 2, 3]))(
        moved, batch, None, {})
    z = np.asarray(model.apply(moved, batch["x"]))
    ls = _log_softmax(z, [0, 1, 2, 3])
    want = _mean(-ls[np.arange(6), batch["y"]], batch)
    np.testing.assert_allclose(float(value), want, rtol=1e-5)
    # The accuracy is over every output (class-incremental testing), not only the active ones.
    acc = (z.argmax(-1) == batch["y"]).astype(np.float32)
    np.testing.assert_allclose(float(aux["accuracy"]), _mean(acc, batch), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 9 outputs"):
        active_classification(model, active=[0, 8])(moved, batch, None, {})


def test_lwf_active_softmax_is_the_zero_padded_target_and_pushes_new_classes_down():
    model, params, moved, batch = _setup()
    snap = {"snapshot": {"params": params, "seen": jnp.asarray([1, 1, 0, 0, 0, 0], jnp.float32),
                         "tasks": jnp.asarray(1, jnp.int32)}}
    kw = dict(lam=1.0, temperature=2.0, base="alternating.continual.losses:active_classification",
              active=[0, 1, 2, 3])
    active = distill.lwf_classification(model, softmax="active", **kw)
    _, aux = jax.jit(active)(moved, batch, None, snap)
    new = np.asarray(model.apply(moved, batch["x"])) / 2.0
    old = np.asarray(model.apply(params, batch["x"])) / 2.0
    log_p, log_q = _log_softmax(old, [0, 1]), _log_softmax(new, [0, 1, 2, 3])[:, :2]
    want = _mean(4.0 * (np.exp(log_p) * (log_p - log_q)).sum(-1), batch)
    np.testing.assert_allclose(float(aux["distill"]), want, rtol=1e-5)

    # The distilled term's gradient on the bias of a new class (2): the zero-padded target
    # pulls it down; the old-classes-only softmax leaves the new classes' logits free.
    def bias_grad(softmax):
        loss = distill.lwf_classification(model, softmax=softmax, **kw)
        grads = jax.grad(lambda p: loss(p, batch, None, snap)[1]["distill"])(moved)
        return np.asarray(grads["Dense_1"]["bias"])
    assert bias_grad("active")[2] > 1e-3
    assert bias_grad("old")[2] == 0.0


def test_lwf_task_weighting_and_bad_options():
    model, params, moved, batch = _setup()
    snap = {"snapshot": {"params": params, "seen": jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32),
                         "tasks": jnp.asarray(2, jnp.int32)}}
    plain = distill.lwf_classification(model, lam=0.5)(moved, batch, None, snap)
    tasks = distill.lwf_classification(model, lam=0.5, weighting="tasks")(
        moved, batch, None, snap)
    base = float(plain[0]) - 0.5 * float(plain[1]["distill"])
    np.testing.assert_allclose(float(tasks[0]), base / 3 + 0.5 * (2 / 3) * float(
        plain[1]["distill"]), rtol=1e-5)
    with pytest.raises(ValueError, match="valid choices.*old.*active"):
        distill.lwf_classification(model, softmax="all")
    with pytest.raises(ValueError, match="valid choices.*lam.*tasks"):
        distill.lwf_classification(model, weighting="balanced")
    with pytest.raises(ValueError, match="softmax='old'"):
        distill.lwf_classification(
            model, softmax="active", base="alternating.continual.losses:task_masked_classification",
            classes=[[0, 1]])


def test_config_active_token_gives_each_task_the_classes_seen_so_far():
    c = cl_methods.get_config("split_digits,lwf,active,smoke")
    got = [list(dict(c.phases[f"task_{k}"]["loss_kwargs"])["active"]) for k in range(5)]
    assert got == [list(range(2 * k + 2)) for k in range(5)]
    assert dict(c.phases["task_1"]["loss_kwargs"])["softmax"] == "active"
    joint = cl_methods.get_config("split_digits,joint,active,smoke").phases["joint"]
    assert joint["loss"].endswith(":active_classification")
    assert list(dict(joint["loss_kwargs"])["active"]) == list(range(10))
    with pytest.raises(ValueError, match="'active' is for class-incremental"):
        cl_methods.get_config("split_digits_task,lwf,active,smoke")

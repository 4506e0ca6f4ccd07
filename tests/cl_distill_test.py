"""Distillation (LwF, feature) and class-mean heads (NMC, LDA) of continual learning."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alternating
from alternating.continual import distill, heads
from alternating.models import MLP, Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import cl_methods  # noqa: E402
from experiments.cl_three_scenarios import shrink  # noqa: E402


def _tiny():
    model = Model(MLP(features=(5, 4)), {"x": (3,)})
    params = model.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(6, 3)).astype(np.float32),
             "y": np.array([0, 1, 2, 3, 0, 1], np.int32),
             "task": np.array([0, 0, 1, 1, 0, 0], np.int32),
             "mask": np.array([1, 1, 1, 1, 1, 0], np.float32)}
    return model, params, batch


def _moved(params, scale=0.3):
    return jax.tree.map(lambda p: p + scale * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)


def _np_logits(params, x):
    h = np.maximum(x @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(params["Dense_0"]["bias"]), 0)
    return h, h @ np.asarray(params["Dense_1"]["kernel"]) + np.asarray(params["Dense_1"]["bias"])


def _np_kl(new, old, classes, t):
    def soft(z):
        z = z[:, classes] / t
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    p, q = soft(old), soft(new)
    return t * t * (p * (np.log(p) - np.log(q))).sum(-1)


def _snap(params, seen, tasks):
    return {"snapshot": {"params": params, "seen": jnp.asarray(seen, jnp.float32),
                         "tasks": jnp.asarray(tasks, jnp.int32)}}


def test_lwf_penalty_is_zero_at_the_snapshot_and_before_a_task_ends_and_matches_numpy():
    model, params, batch = _tiny()
    moved = _moved(params)
    rng = jax.random.PRNGKey(0)
    loss = jax.jit(distill.lwf_classification(model, lam=2.0, temperature=3.0))
    seen = [1, 1, 0, 0]
    _, aux = loss(params, batch, rng, _snap(params, seen, 1))
    assert abs(float(aux["distill"])) < 1e-6
    _, aux = loss(moved, batch, rng, _snap(params, seen, 0))  # no task ended yet
    assert float(aux["distill"]) == 0.0
    value, aux = loss(moved, batch, rng, _snap(params, seen, 1))
    _, new = _np_logits(moved, batch["x"])
    _, old = _np_logits(params, batch["x"])
    kl = _np_kl(new, old, [0, 1], 3.0)
    want = (kl * batch["mask"]).sum() / batch["mask"].sum()
    np.testing.assert_allclose(float(aux["distill"]), want, rtol=1e-5)
    base, _ = jax.jit(alternating.losses.resolve_loss("classification", model))(
        moved, batch, rng, {})
    np.testing.assert_allclose(float(value), float(base) + 2.0 * want, rtol=1e-5)
    # Task-incremental: one softmax per finished task, averaged over them.
    loss_t = jax.jit(distill.lwf_classification(
        model, lam=1.0, temperature=2.0,
        base="alternating.continual.losses:task_masked_classification", classes=[[0, 1], [2, 3]]))
    _, aux = loss_t(moved, batch, rng, _snap(params, [1, 1, 1, 1], 2))
    kl = (_np_kl(new, old, [0, 1], 2.0) + _np_kl(new, old, [2, 3], 2.0)) / 2
    np.testing.assert_allclose(float(aux["distill"]),
                               (kl * batch["mask"]).sum() / batch["mask"].sum(), rtol=1e-5)


def test_feature_penalty_is_zero_at_the_snapshot_and_matches_numpy():
    model, params, batch = _tiny()
    moved = _moved(params)
    rng = jax.random.PRNGKey(0)
    loss = distill.feature_distill_classification(model, lam=0.5)
    _, aux = loss(params, batch, rng, _snap(params, [1, 1, 0, 0], 1))
    assert float(aux["distill"]) == 0.0
    _, aux = loss(moved, batch, rng, _snap(params, [1, 1, 0, 0], 1))
    f_new, _ = _np_logits(moved, batch["x"])
    f_old, _ = _np_logits(params, batch["x"])
    d = ((f_new - f_old) ** 2).sum(-1)
    np.testing.assert_allclose(float(aux["distill"]),
                               (d * batch["mask"]).sum() / batch["mask"].sum(), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(distill.penultimate(model, moved, batch["x"])), f_new,
                               rtol=1e-5, atol=1e-6)


def test_nmc_and_lda_heads_equal_a_numpy_hand_computation():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(40, 3)) + np.repeat(np.eye(3)[[0, 1, 2, 0]] * 2, 10, 0)
    y = np.repeat([0, 1, 2, 0], 10)
    c = 5  # classes 3 and 4 unseen
    sums = np.zeros((c, 3))
    counts = np.zeros(c)
    np.add.at(sums, y, f)
    np.add.at(counts, y, 1)
    scatter = f.T @ f
    test = rng.normal(size=(25, 3)) * 2
    means = np.stack([f[y == k].mean(0) for k in range(3)])
    w, b = heads.head_weights(sums, counts, scatter, "nmc", 0.0)
    want = np.argmin(((test[:, None] - means[None]) ** 2).sum(-1), -1)
    np.testing.assert_array_equal(np.argmax(test @ w + b, -1), want)
    assert np.all(b[3:] <= -1e8)
    alpha = 0.2
    centred = f - means[y]
    cov = centred.T @ centred / (40 - 3)
    cov = (1 - alpha) * cov + alpha * np.trace(cov) / 3 * np.eye(3)
    inv = np.linalg.inv(cov)
    g = test @ inv @ means.T - 0.5 * np.einsum("cd,de,ce->c", means, inv, means)
    w, b = heads.head_weights(sums, counts, scatter, "lda", alpha)
    np.testing.assert_allclose((test @ w + b)[:, :3], g, rtol=1e-8, atol=1e-8)


class _Ctx:
    def __init__(self, model, batches):
        self.model, self._b, self.dry_run = model, batches, False

    def batches(self, spec, batch_size=256):
        return self._b[spec["dataset"]]

    def jit(self, fn, name):
        return jax.jit(fn)


def test_class_statistics_hook_accumulates_means_of_the_frozen_body_over_tasks():
    model, params, batch = _tiny()
    t0 = {k: v[:3] for k, v in batch.items()}
    t1 = {k: v[3:] for k, v in batch.items()}
    hook = heads.ClassStatistics({"a": {"dataset": "a"}, "b": {"dataset": "b"}}, num_classes=4,
                                 dim=5, head="nmc")
    ctx = _Ctx(model, {"a": [t0], "b": [t1]})
    extras = alternating.extras.init_extras(hook.extras, params, jax.random.PRNGKey(0))
    state = alternating.TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state={},
                                   phase_steps={}, rng=jax.random.PRNGKey(0), extras=extras)
    ev = alternating.hooks.Event(step=1, phase="a", ended="a", why=("phase_end",))
    state = hook(state, ev, ctx)
    state = hook(state, ev.__class__(step=2, phase="b", ended="b", why=("phase_end",)), ctx)
    f, _ = _np_logits(params, batch["x"])
    real = batch["mask"] > 0
    stats = jax.device_get(state.extras["class_stats"])
    for k in range(4):
        sel = real & (batch["y"] == k)
        np.testing.assert_allclose(stats["sum"][k], f[sel].sum(0), rtol=1e-5, atol=1e-6)
        assert stats["count"][k] == sel.sum()


def test_config_refuses_unknown_options_naming_the_valid_ones():
    with pytest.raises(ValueError, match="lwf.*nmc"):
        cl_methods.get_config("split_digits,distil")
    with pytest.raises(ValueError, match="joint.*split_digits"):
        cl_methods.get_config("split_digits_task,joint,smoke")
    with pytest.raises(ValueError, match="valid heads"):
        heads.ClassStatistics({"a": {"dataset": "a"}}, num_classes=3, dim=2, head="knn")
    model, _, _ = _tiny()
    with pytest.raises(ValueError, match="temperature"):
        distill.lwf_classification(model, temperature=0.0)


def _run(tmp_path, variant):
    c = shrink(cl_methods.get_config(variant), 20)
    c.checkpoint_every_steps = c.total_steps
    c.evaluators = [dict(c.evaluators[0], plot=False)]  # the matrix, not its heatmap
    wd = str(tmp_path / variant.replace(",", "_"))
    state = alternating.train_and_evaluate(c, wd, progress=False, print_fn=None, plot=False)
    with open(os.path.join(wd, "results.json")) as f:
        return state, json.load(f), wd


@pytest.mark.parametrize("method,extra", [("lwf", "snapshot"), ("feature", "snapshot"),
                                          ("nmc", "class_stats"), ("lda", "class_stats")])
def test_smoke_run_writes_the_matrix_and_checkpoints_the_extra(tmp_path, method, extra):
    state, results, wd = _run(tmp_path, f"split_digits,{method},pretrained,smoke")
    cont = results["continual"]
    assert len(cont["matrix"]) == 3 and cont["learning_accuracy"][0] > 0.5  # pre-training learned
    saved, _ = alternating.load_state(wd, target=state)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(saved.extras[extra]),
                 jax.device_get(state.extras[extra]))
    if extra == "snapshot":  # the snapshot is the parameters at the last task's end
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.extras[extra]["params"]),
                     jax.device_get(state.params))
        assert int(state.extras[extra]["tasks"]) == 3
    else:  # every class seen, the head's accuracy is what the matrix scored
        assert np.all(np.asarray(state.extras[extra]["count"]) > 0)


# Joint training is one phase: the cheapest arm with a comparison to write.
@pytest.mark.parametrize("script,arms", [("cl_three_scenarios", ["class_joint", "class_replay"]),
                                         ("cl_rehearsal_free", ["lwf"]), ("cl_nmc", ["nmc"])])
def test_quick_run_of_each_reproduction_writes_its_page(tmp_path, script, arms):
    module = __import__(f"experiments.{script}", fromlist=["main"])
    data = module.main(["--quick", "--arms", *arms, "--out", str(tmp_path),
                        "--workdir", str(tmp_path / "runs")])
    assert sorted(data["arms"]) == sorted(arms) and data["seeds"] == [0, 1]
    page = json.loads((tmp_path / f"{data['name']}.json").read_text())
    first = next(iter(data["metrics"]))
    assert all(0.0 <= v <= 1.0 for arm in arms for v in page["arms"][arm][first])
    assert (tmp_path / f"{data['name']}.md").read_text().startswith("# ")
    if len(arms) == 2:
        assert [c["name"] for c in page["comparisons"]] == ["class: joint vs replay"]

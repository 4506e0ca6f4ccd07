"""Model merging (weight averaging, task arithmetic, AdaMerging) and the infinite lr schedule."""

import math
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

import alternating
from alternating import metrics
from alternating.continual import merging
from alternating.experiment import base_config
from alternating.phase import make_optimizer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tree(seed, hidden=4):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"Dense_0": {"kernel": jax.random.normal(k[0], (3, hidden)),
                        "bias": jax.random.normal(k[1], (hidden,))},
            "Dense_1": {"kernel": jax.random.normal(k[2], (hidden, 5)),
                        "bias": jax.random.normal(k[3], (5,))}}


def _logits(params, x, task=0):
    h = jax.nn.relu(x @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
    return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(x)


_MLP = _Tiny()


def _close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw), a, b)


# --- Merging. -------------------------------------------------------------------------


def test_task_arithmetic_with_zero_coefficients_returns_the_start_exactly():
    base, tuned = _tree(0), [_tree(1), _tree(2), _tree(3)]
    merged = merging.task_arithmetic(base, tuned, lam=[0.0, 0.0, 0.0])
    jax.tree.map(np.testing.assert_array_equal, merged, base)
    merged = merging.task_arithmetic(base, tuned, lam=0.0)
    jax.tree.map(np.testing.assert_array_equal, merged, base)


def test_task_arithmetic_with_one_vector_and_coefficient_one_returns_that_model():
    base, tuned = _tree(0), _tree(1)
    _close(merging.task_arithmetic(base, [tuned], lam=1.0), tuned, rtol=0, atol=1e-6)
    # Two vectors, coefficients (0, 1): the second model.
    _close(merging.task_arithmetic(base, [_tree(5), tuned], lam=[0.0, 1.0]), tuned, atol=1e-6)


def test_weight_average_equals_the_numpy_mean():
    trees = [_tree(i) for i in range(4)]
    got = merging.weight_average(trees)
    want = jax.tree.map(lambda *xs: np.mean(np.stack([np.asarray(x) for x in xs]), 0), *trees)
    _close(got, want, rtol=1e-6, atol=1e-7)


def test_leaf_groups_by_granularity():
    base = _tree(0)
    assert merging.leaf_groups(base, "task") == ([0, 0, 0, 0], ["all"])
    groups, names = merging.leaf_groups(base, "layer")
    assert len(set(groups)) == 4 and names[groups[0]] in ("Dense_0/bias", "Dense_0/kernel")
    groups, names = merging.leaf_groups(base, "module")
    assert names == ["Dense_0", "Dense_1"] and groups == [0, 0, 1, 1]
    with pytest.raises(ValueError, match=r"granularity='block'.*valid: \['task', 'layer'"):
        merging.leaf_groups(base, "block")


@pytest.mark.parametrize("granularity", ["task", "layer"])
def test_adamerging_moves_the_coefficients_and_lowers_the_entropy(granularity):
    base = _tree(0, hidden=8)
    tuned = [jax.tree.map(lambda b, n: b + 0.5 * n, base, _tree(10 + t, hidden=8))
             for t in range(3)]
    inputs = [np.asarray(jax.random.normal(jax.random.PRNGKey(20 + t), (64, 3))) for t in range(3)]
    res = merging.adamerging(_logits, base, tuned, inputs, granularity=granularity, init=0.3,
                             steps=60, lr=2e-2, batch_size=16)
    assert res.coefficients.shape == (3, 1 if granularity == "task" else 4)
    assert np.abs(res.coefficients - 0.3).max() > 0.05  # the coefficients moved
    assert np.all((res.coefficients >= 0) & (res.coefficients <= 1))

    def full_entropy(params):  # on every unlabeled input, not the sampled batches
        return sum(float(merging.entropy(_logits(params, jnp.asarray(x)))) for x in inputs)

    start = merging.task_arithmetic(base, tuned, lam=0.3)
    assert full_entropy(res.params) < full_entropy(start) - 1e-3
    assert res.entropy[-10:].mean() < res.entropy[:10].mean()


def test_merging_trees_of_different_structures_is_an_error_naming_the_leaves():
    with pytest.raises(merging.MergeError, match=r"Dense_0/kernel.*\(3, 6\)"):
        merging.check_same_structure([_tree(0), _tree(1, hidden=6)], ["a", "b"])
    with pytest.raises(merging.MergeError, match="Dense_1/bias"):
        merging.task_arithmetic(_tree(0), [{**_tree(1), "Dense_1": {"kernel": jnp.ones((4, 5))}}])


def _tiny_config(hidden, steps=4):
    c = base_config()
    c.total_steps = steps
    c.log_every_steps = 1
    c.checkpoint_every_steps = steps
    c.model = dict(name="mlp", features=(hidden, 10), input_shape=(8, 8, 1))
    c.data = dict(digits=dict(dataset="digits", split="train", batch_size=32))
    c.phases = dict(digits=dict(loss="classification", optimizer=dict(name="adam", lr=1e-2)))
    c.schedule = dict(name="single", phase="digits")
    return c


def test_load_params_from_workdirs_restores_with_a_target_and_refuses_other_structures(tmp_path):
    quiet = dict(progress=False, plot=False, print_fn=None)  # only the checkpoints are read
    a = alternating.train_and_evaluate(_tiny_config(16), str(tmp_path / "a"), **quiet)
    alternating.train_and_evaluate(_tiny_config(8), str(tmp_path / "b"), **quiet)
    got = merging.load_params([str(tmp_path / "a"), str(tmp_path / "a")])
    jax.tree.map(np.testing.assert_array_equal, got[0], jax.device_get(a.params))
    with pytest.raises(merging.MergeError, match=r"Dense_0/bias.*\(8,\)"):
        merging.load_params([str(tmp_path / "a"), str(tmp_path / "b")])


# --- The infinite learning-rate schedule. -----------------------------------------------

SPEC = dict(name="adam", lr=1.0, schedule="infinite", warmup_steps=4, cooldown_steps=4,
            const_lr_factor=0.5, end_lr_factor=0.1, anneal_steps=2, anneal_at=[12, 20])


def _hand(s, lr=1.0, w=4, c=4, const=0.5, end=0.1, k=2, at=(12, 20)):
    for a in at:
        if a - k <= s < a:
            return const * lr * (end / const) ** ((s - a + k + 1) / k)
    if s < w:
        return lr * s / w
    if s < w + c:
        return const * lr + (lr - const * lr) * 0.5 * (1 + math.cos(math.pi * (s - w) / c))
    return const * lr


def test_infinite_schedule_equals_the_hand_written_piecewise_function():
    _, lr_fn = make_optimizer(SPEC, default_decay_steps=100)
    for s in [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 18, 19, 20, 50]:
        assert float(lr_fn(s)) == pytest.approx(_hand(s), rel=1e-6, abs=1e-7), s
    assert float(lr_fn(11)) == pytest.approx(0.1)  # the last step before an anneal point
    assert float(lr_fn(12)) == pytest.approx(0.5)  # back to the constant, not to lr
    # Default anneal_at: the expected number of steps.
    spec = {k: v for k, v in SPEC.items() if k != "anneal_at"}
    _, lr_fn = make_optimizer(spec, default_decay_steps=30)
    assert float(lr_fn(29)) == pytest.approx(0.1) and float(lr_fn(27)) == pytest.approx(0.5)
    _, cyc = make_optimizer(dict(name="adam", lr=1.0, schedule="cosine", decay_steps=10,
                                 cycle_steps=10))
    assert float(cyc(13)) == pytest.approx(float(cyc(3)))


def test_bad_schedule_keys_are_errors_naming_the_valid_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['anneal_every'\]; valid keys: .*"
                       r"'cooldown_steps'.*'anneal_at'"):
        make_optimizer({**SPEC, "anneal_every": 5})
    with pytest.raises(ValueError, match=r"keys \['cooldown_steps'\] belong to schedule "
                       r"'infinite', not 'cosine'; valid keys of 'cosine'"):
        make_optimizer(dict(name="adam", schedule="cosine", cooldown_steps=3))
    with pytest.raises(ValueError, match=r"const_lr_factor=1.5; it must be a number >= 0.0"):
        make_optimizer({**SPEC, "const_lr_factor": 1.5})
    with pytest.raises(ValueError, match=r"anneal_at=\[12, 10\]: positions must increase"):
        make_optimizer({**SPEC, "anneal_at": [12, 10]})
    with pytest.raises(ValueError, match=r"before the cool-down ends"):
        make_optimizer({**SPEC, "anneal_at": [7]})
    with pytest.raises(ValueError, match=r"schedule='step'; valid schedules: .*'infinite'"):
        make_optimizer(dict(name="adam", schedule="step"))


def _two_tasks(tmp_path, group):
    def loss(params, batch, rng, extras):
        logits = _MLP.apply({"params": params}, batch["x"])
        return jnp.mean((logits - 0.1) ** 2), {}
    spec = {**SPEC, "anneal_at": [6, 12], "cooldown_steps": 2, "warmup_steps": 2}
    phases = [alternating.Phase(n, loss=loss, data="digits", optimizer=spec, optimizer_group=group)
              for n in ("a", "b")]
    alternating.train(phases=phases, schedule={"name": "sequential", "stages": [["a", 6], ["b", 6]]},
                      data={"digits": {"dataset": "digits", "batch_size": 16,
                                       "transforms": ["flatten"]}},
                      init=lambda rng: _MLP.init(rng, jnp.zeros((1, 64)))["params"],
                      workdir=str(tmp_path), total_steps=12, progress=False, plot=False,
                      print_fn=None, log_every_steps=1)
    rows = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
    return [r for r in rows if r["split"] == "train"]


def test_a_shared_group_gives_the_infinite_schedule_one_position_across_tasks(tmp_path):
    rows = _two_tasks(tmp_path / "shared", "tasks")
    lrs = [r["lr"] for r in sorted(rows, key=lambda r: r["step"])]
    want = [_hand(s, w=2, c=2, at=(6, 12)) for s in range(12)]
    np.testing.assert_allclose(lrs, want, rtol=1e-5, atol=1e-7)
    assert lrs[6] == pytest.approx(0.5)  # task b starts at the constant rate: no re-warm-up
    own = _two_tasks(tmp_path / "own", None)  # per-phase states: each task restarts it
    lrs = [r["lr"] for r in sorted(own, key=lambda r: r["step"])]
    assert lrs[6] == pytest.approx(0.0) and lrs[:6] == pytest.approx(want[:6])


# --- The reproduction scripts, tiny. ----------------------------------------------------


@pytest.mark.parametrize("script", ["cl_adamerging", "cl_infinite_lr"])
def test_reproduction_quick_runs(script, tmp_path):
    sys.path.insert(0, str(ROOT))
    module = __import__(f"experiments.{script}", fromlist=["main"])
    data = module.main(["--quick", "--out", str(tmp_path)])
    assert (tmp_path / f"{script}.md").exists() and (tmp_path / f"{script}.json").exists()
    assert all(len(v) == len(data["seeds"]) for arm in data["arms"].values() for v in arm.values())

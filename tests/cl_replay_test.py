"""The in-step replay memory: reservoir and class-balanced filling, rehearsal weights,
the memory budget, and a kill -9 mid-stream resumed bit for bit (replay + EWC)."""

import contextlib
import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alternating
from alternating.continual import replay
from alternating.models import MLP, Model

import cl_replay_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from configs import cl_replay  # noqa: E402


def _offer_stream(rule, mem, labels, key, batch_size=8):
    """Offers ``labels`` (x = the label) in padded batches; the pad is masked out."""
    n = len(labels)
    pad = -n % batch_size
    ys = jnp.concatenate([jnp.asarray(labels, jnp.int32), jnp.full((pad,), 999, jnp.int32)])
    mask = jnp.concatenate([jnp.ones((n,)), jnp.zeros((pad,))])
    for s in range(0, n + pad, batch_size):
        batch = {"x": ys[s:s + batch_size, None].astype(jnp.float32), "y": ys[s:s + batch_size],
                 "mask": mask[s:s + batch_size]}
        mem = rule(mem, None, {}, jax.random.fold_in(key, s), jnp.int32(0), batch=batch)
    return mem


def test_in_step_reservoir_is_a_uniform_sample_deterministic_per_seed():
    n, size, draws = 50, 10, 2000
    rule = replay.fill_rule(task=1)
    assert rule.takes_batch

    def run(key):
        mem = replay.init_memory(None, None, size=size, x_shape=[1], num_tasks=2)
        return _offer_stream(rule, mem, np.arange(n), key, batch_size=16)

    keys = jax.random.split(jax.random.PRNGKey(0), draws)
    fill = jax.jit(jax.vmap(run))  # jit + vmap, as vectorized seeds
    mems = jax.device_get(fill(keys))
    y = np.asarray(mems["y"])
    assert np.all(mems["seen"] == n) and np.all(mems["clock"] == 4)  # 4 steps, the pad skipped
    np.testing.assert_array_equal(mems["last_step"][0], [-1, 3])
    np.testing.assert_array_equal(mems["x"][..., 0], y)  # rows stay whole
    assert np.all(mems["task"] == 1) and y.max() < n  # padded examples never enter
    assert all(len(set(row)) == size for row in y)
    freq = np.bincount(y.ravel(), minlength=n) / draws
    # Each example kept with probability size / n = 0.2; binomial sd over 2000 draws ~ 0.009.
    assert np.all(np.abs(freq - size / n) < 0.045), freq
    assert abs(freq[:25].mean() - freq[25:].mean()) < 0.02  # early and late examples alike
    again = jax.device_get(fill(keys[::-1]))  # the same shape: no second compile
    np.testing.assert_array_equal(again["y"][::-1], y)  # deterministic per key, wherever it sits
    assert not np.array_equal(y[0], y[1])
    # Fewer examples than slots: they fill in order.
    few = replay.init_memory(None, None, size=size, x_shape=[1], num_tasks=2)
    few = _offer_stream(jax.jit(rule), few, np.arange(6), jax.random.PRNGKey(5))
    assert np.asarray(few["y"])[:6].tolist() == list(range(6)) and int(few["seen"]) == 6


def test_class_balanced_memory_gives_each_class_seen_equal_slots():
    rule = jax.jit(replay.fill_rule(task=0, mode="class_balanced"))
    mem = replay.init_memory(None, None, size=12, x_shape=[1], num_tasks=1, num_classes=4)
    # Imbalanced: 40 of class 0 and 15 of class 1 first, then 30 of class 2 and 9 of class 3.
    first = np.repeat([0, 1], [40, 15])
    mem = _offer_stream(rule, mem, first, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.bincount(np.asarray(mem["y"]), minlength=4), [6, 6, 0, 0])
    mem = _offer_stream(rule, mem, np.repeat([2, 3], [30, 9]), jax.random.PRNGKey(1))
    np.testing.assert_array_equal(np.bincount(np.asarray(mem["y"]), minlength=4), [3, 3, 3, 3])
    np.testing.assert_array_equal(mem["class_seen"], [40, 15, 30, 9])
    np.testing.assert_array_equal(mem["x"][:, 0], mem["y"])
    with pytest.raises(ValueError, match="num_classes > 0"):
        replay.fill_rule(task=0, mode="class_balanced")(
            replay.init_memory(None, None, size=4, x_shape=[1], num_tasks=1), None, {},
            jax.random.PRNGKey(0), 0, batch={"x": jnp.zeros((2, 1)), "y": jnp.zeros(2, jnp.int32)})


def test_rehearsal_weights_equal_a_hand_computation():
    last = jnp.asarray([10, 70, -1, 130], jnp.int32)  # task 2 never trained
    clock, tau = 150, 60.0
    d = np.array([140, 80, 0, 20]) / tau
    hand = {"uniform": [1, 1, 0, 1],
            "exponential": [np.exp(-0.5 * d[0]), np.exp(-0.5 * d[1]), 0, np.exp(-0.5 * d[3])],
            "power_law": [(1 + d[0]) ** -0.5, (1 + d[1]) ** -0.5, 0, (1 + d[3]) ** -0.5]}
    for name, want in hand.items():
        got = jax.jit(lambda l, c, w=name: replay.task_weights(l, c, w, alpha=0.5, tau=tau))(
            last, clock)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # Slots: 3 of task 0, 1 of task 1, 2 of task 3 (the current task), 2 unfilled.
    mem = {"y": jnp.zeros(8, jnp.int32), "task": jnp.asarray([0, 0, 0, 1, 3, 3, 0, 0]),
           "seen": jnp.int32(6), "clock": jnp.int32(clock), "last_step": last}
    p = np.asarray(jax.jit(lambda m: replay.slot_probabilities(m, "power_law", alpha=0.5,
                                                               tau=tau, task=3))(mem))
    w0, w1 = hand["power_law"][:2]
    want = np.array([w0 / 3] * 3 + [w1] + [0, 0, 0, 0]) / (w0 + w1)
    np.testing.assert_allclose(p, want, rtol=1e-6)
    np.testing.assert_allclose(replay.slot_probabilities(mem, None), [1 / 6] * 6 + [0, 0])
    # The loss draws from those slots only: with only the current task stored, nothing.
    model = Model(MLP(features=(5, 3)), {"x": (4,)})
    params = model.init(jax.random.PRNGKey(0))
    loss = jax.jit(replay.replay_classification(model, batch_size=8, weighting="uniform", task=0))
    own = replay.init_memory(None, None, size=4, x_shape=[4], num_tasks=2)
    own = {**own, "seen": jnp.int32(4), "clock": jnp.int32(3), "last_step": jnp.asarray([2, -1])}
    batch = {"x": jnp.ones((2, 4)), "y": jnp.zeros(2, jnp.int32)}
    _, aux = loss(params, batch, jax.random.PRNGKey(1), {"replay": own})
    assert float(aux["replay_loss"]) == 0.0
    own["last_step"] = jnp.asarray([2, 1])
    own["task"] = jnp.asarray([1, 1, 1, 1])
    _, aux = loss(params, batch, jax.random.PRNGKey(1), {"replay": own})
    assert float(aux["replay_loss"]) > 0.0
    with pytest.raises(ValueError, match=r"valid weightings: \['uniform', 'exponential', "
                                         r"'power_law'\]"):
        replay.replay_classification(model, weighting="powerlaw")


def test_a_memory_over_the_budget_or_bad_names_fail_before_compiling():
    c = cl_replay.get_config("split_digits,smoke")
    assert c.phases["task_2"]["updates"][0]["kwargs"] == {"task": 2, "mode": "reservoir"}
    base = cl_replay.continual.get_config("split_digits,smoke")
    with pytest.raises(ValueError, match=r"replay.size=100000: .* take 26400000 bytes, over the "
                                         r"memory budget of 1000000 bytes \(replay.budget_bytes\)"):
        replay.add_replay(base, size=100000, budget_bytes=10 ** 6)
    with pytest.raises(ValueError, match=r"replay.size=.*over the memory budget of 67108864"):
        replay.init_memory(None, None, size=10 ** 6, x_shape=[64, 64], num_tasks=2)
    with pytest.raises(ValueError, match=r"valid weightings: \['uniform', 'exponential'"):
        replay.add_replay(base, size=10, weighting="zipf")
    with pytest.raises(ValueError, match=r"valid modes: \['reservoir', 'class_balanced'\]"):
        replay.add_replay(base, size=10, mode="ring")
    with pytest.raises(ValueError, match="at most one mode"):
        cl_replay.get_config("split_digits,reservoir,class_balanced")


@contextlib.contextmanager
def _compile_cache(path):
    """JAX's persistent compilation cache in ``path`` while the block runs, then off again.

    The reference run writes the step functions it compiles; the killed process
    (``JAX_COMPILATION_CACHE_DIR``) and the resumed run load those executables instead of
    compiling them again, so all three runs execute the same programs.
    """
    from jax.experimental.compilation_cache import compilation_cache  # noqa: PLC0415
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update(names[0], str(path))
    # Not 0: one-op eager programs stay out of the cache. JAX writes an entry in
    # place, and the killed process can die mid-write (orbax's threads run eager ops),
    # leaving a truncated entry the resumed run would load and abort on (seen once).
    jax.config.update(names[1], 0.2)
    compilation_cache.reset_cache()
    try:
        yield {"JAX_COMPILATION_CACHE_DIR": str(path),
               "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}
    finally:
        for n, v in old.items():
            jax.config.update(n, v)
        compilation_cache.reset_cache()


def _state(workdir, target):
    state, _ = alternating.load_state(str(workdir), target=target)
    return jax.device_get(state)


def test_kill_9_in_task_3_then_resume_gives_the_same_matrix_memory_and_fisher(tmp_path):
    ref, work = tmp_path / "ref", tmp_path / "run"
    with _compile_cache(tmp_path / "jax_cache") as cache_env:
        target = cl_replay_worker.run(ref)
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   **cache_env)
        cmd = [sys.executable, os.path.join(HERE, "cl_replay_worker.py"), str(work), "55"]
        killed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        cl_replay_worker.run(work)  # the resume, in this process (no second start-up)
    results = [json.load(open(d / "results.json")) for d in (ref, work)]
    assert 40 < results[1]["resumed_from_step"] < 60  # inside task 3 (steps 40..59)
    assert results[1]["continual"] == results[0]["continual"]
    assert np.asarray(results[0]["continual"]["matrix"]).shape == (5, 5)
    a, b = _state(ref, target), _state(work, target)
    for name in ("replay", "fisher", "anchor"):
        jax.tree.map(np.testing.assert_array_equal, a.extras[name], b.extras[name])
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    assert int(a.extras["replay"]["seen"]) == 100 * 32
    assert float(sum(np.sum(f) for f in jax.tree.leaves(a.extras["fisher"]))) > 0

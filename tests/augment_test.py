"""Per-batch augmentation inside the step: what each draws, and that a run draws
the same augmentations resumed, fused or on 4 devices as straight on 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from executor_test import _same_state, _tiny_run
from loop_test import _loss

import alternating
from alternating import augment, parallel

AUG = [{"name": "noise", "std": 0.05}, {"name": "shift", "max_shift": 3}]


def _phases(aug=AUG):
    return [
        alternating.Phase("a", loss=_loss, data="digits", augment=aug,
                          params=[("Dense_0/.*", True), (".*", None)],
                          optimizer={"name": "adam", "lr": 1e-2}),
        alternating.Phase("b", loss=_loss, data="digits",
                          params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.1}),
    ]


def test_each_augmentation_draws_what_its_doc_says():
    x = jnp.arange(12.0).reshape(2, 6, 1)
    key = jax.random.key(3)
    shifted = augment.build([{"name": "shift", "max_shift": 2}], "p")({"x": x}, key)["x"]
    for i in range(2):  # each example is its own roll, by at most 2
        rolls = [k for k in range(-2, 3) if np.array_equal(np.roll(x[i], k, 0), shifted[i])]
        assert len(rolls) == 1
    img = jnp.ones((64, 4, 4, 1))
    cropped = augment.build([{"name": "crop", "pad": 1}], "p")({"x": img}, key)["x"]
    assert cropped.shape == img.shape
    sums = set(np.asarray(cropped.sum(axis=(1, 2, 3))).tolist())
    assert sums <= {16.0, 12.0, 9.0} and len(sums) > 1  # shifted by 0 or 1 on each axis
    flipped = augment.build([{"name": "flip", "p": 1.0, "axis": 0}], "p")({"x": x}, key)["x"]
    np.testing.assert_array_equal(flipped, x[:, ::-1])
    same = augment.build(AUG, "p")
    np.testing.assert_array_equal(same({"x": x}, key)["x"], same({"x": x}, key)["x"])
    assert not np.array_equal(same({"x": x}, key)["x"], same({"x": x}, jax.random.key(4))["x"])


def test_bad_augment_specs_name_the_phase_and_the_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"phase 'a' augment\[0\].name='rotate' is not a "
                       r"registered augmentation; valid names: \['crop', 'flip', 'noise', 'shift'\]"):
        _tiny_run(tmp_path / "bad", phases=_phases([{"name": "rotate"}]), executor="host")
    with pytest.raises(ValueError, match=r"augment\[0\] \('shift'\).*unexpected keyword"):
        _tiny_run(tmp_path / "kw", phases=_phases([{"name": "shift", "size": 2}]),
                  executor="host")
    assert augment.build((), "p") is None


def test_augmented_runs_agree_resumed_fused_and_on_four_devices(tmp_path):
    one = parallel.make_mesh(jax.devices()[:1])
    straight = _tiny_run(tmp_path / "straight", mesh=one, phases=_phases(), executor="host")
    plain = _tiny_run(tmp_path / "plain", mesh=one, phases=_phases(aug=()), executor="host")
    assert not np.array_equal(straight.params["Dense_0"]["kernel"], plain.params["Dense_0"]["kernel"])
    # Stopped at step 7 and resumed: the same draws after the resume.
    _tiny_run(tmp_path / "split", mesh=one, phases=_phases(), executor="host", total_steps=7,
              checkpoint_every_steps=7)
    resumed = _tiny_run(tmp_path / "split", mesh=one, phases=_phases(), executor="host")
    _same_state(straight, resumed)
    fused = _tiny_run(tmp_path / "fused", mesh=one, phases=_phases(), executor="fused",
                      chunk_steps=5)
    _same_state(straight, fused)
    four = _tiny_run(tmp_path / "four", phases=_phases(), executor="host")  # 4 fake devices
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 jax.device_get(straight.params), jax.device_get(four.params))


def test_augmented_batches_are_the_same_after_a_kill_9_and_resume(tmp_path):
    import signal
    import time
    import resilience_test as rt
    import resume_worker
    schedule = "alternate" + resume_worker.AUGMENTED
    # The worker's augmentation changes training (3 steps with and without it).
    short = [resume_worker.run(tmp_path / s, s, total_steps=3, print_fn=None)
             for s in (schedule, "alternate")]
    assert not np.array_equal(*(jax.device_get(x.params["Dense_0"]["kernel"]) for x in short))
    steps = 120  # checkpoints every 7 steps; SIGKILL once step 40 is logged
    resume_worker.run(tmp_path / "ref", schedule, total_steps=steps, print_fn=None)
    proc = rt._spawn(tmp_path / "run", schedule, total_steps=steps)
    deadline = time.time() + 120
    while rt._last_logged_step(str(tmp_path / "run")) < 40 and proc.poll() is None:
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("worker too slow")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, out  # killed mid-run, not already done
    proc = rt._spawn(tmp_path / "run", schedule, total_steps=steps)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "resumed from" in out, out
    rt._assert_same_run(tmp_path / "ref", tmp_path / "run")  # bit for bit, every logged row

"""Device-resident data: the same batches in the same order as host-gathered ones."""

import jax
import numpy as np
import pytest
from executor_test import _tiny_run

from alternating import data as data_lib, parallel
from alternating.data import resident

SPEC = {"dataset": "digits", "batch_size": 100, "transforms": ["flatten"]}


def test_positions_are_the_batches_next_would_return_across_epochs_and_a_resume():
    a, b = data_lib.make_stream(SPEC, seed=3), data_lib.make_stream(SPEC, seed=3)
    assert b.pure_order
    for i in range(40):  # 40 batches of 100 from 1,437 examples: three epoch boundaries
        if i % 7 == 3:
            idx = b.next_indices_many(3)
            for j in idx:
                np.testing.assert_array_equal(b.arrays["x"][j], next(a)["x"])
        else:
            np.testing.assert_array_equal(b.arrays["y"][b.next_indices()], next(a)["y"])
        assert a.get_state() == b.get_state()
    c = data_lib.make_stream(SPEC, seed=3)
    c.set_state(b.get_state())
    np.testing.assert_array_equal(c.arrays["x"][c.next_indices()], next(a)["x"])


def test_a_subclass_with_its_own_order_is_not_resident():
    from alternating.data import CurriculumStream
    arrays = {"x": np.zeros((50, 2), np.float32), "y": np.arange(50) % 2}
    cur = CurriculumStream(arrays, batch_size=10, seed=0, sizes=[0.5, 1.0], scores=np.arange(1, 51))
    assert not cur.pure_order
    said = []
    mesh = parallel.make_mesh(jax.devices()[:1])
    plain = data_lib.make_stream(SPEC, seed=0)
    chosen = resident.choose({"cur": cur, "plain": plain}, mesh, 512, said.append)
    assert set(chosen) == {"plain"} and not said
    # Over the budget: gathered on the host, said once.
    assert resident.choose({"plain": plain}, mesh, 0.1, said.append) == {}
    assert len(said) == 1 and "exceed the device budget (device_data_mb=0.1)" in said[0]


@pytest.mark.parametrize("executor", ["host", "fused"])
def test_resident_and_host_gathered_runs_are_bit_identical_across_epochs_and_a_resume(
        tmp_path, executor):
    mesh = parallel.make_mesh(jax.devices()[:1])
    # Batch 32 of 1,437 examples: an epoch every 45 batches; 100 steps cross two.
    kw = dict(mesh=mesh, executor=executor, chunk_steps=16, log_every_steps=10)
    host = _tiny_run(tmp_path / "host", total_steps=100, device_data_mb=0, **kw)
    dev = _tiny_run(tmp_path / "dev", total_steps=100, **kw)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(host), jax.device_get(dev))
    # Half with host gathering, resumed with resident data (a resume-safe option).
    _tiny_run(tmp_path / "mixed", total_steps=50, checkpoint_every_steps=50, device_data_mb=0,
              **kw)
    mixed = _tiny_run(tmp_path / "mixed", total_steps=100, checkpoint_every_steps=50, **kw)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(host), jax.device_get(mixed))

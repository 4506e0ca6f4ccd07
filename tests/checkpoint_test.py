"""Checkpointer: the checksum manifest, every kind of damage set aside with a
fallback to the previous checkpoint, non-finite states, and its limits."""

import json
import logging
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alternating import checkpoint as ckpt_lib
from alternating import integrity


def _state(scale=1.0):
    """A TrainState-like tree; ``w`` is large enough for its own data file."""
    w = jnp.arange(64 * 64, dtype=jnp.float32).reshape(64, 64) / 4096.0
    return {"step": jnp.asarray(int(scale), jnp.int32),
            "params": {"w": w * scale, "b": jnp.full((8,), scale, jnp.float32)},
            "opt_state": {"a": {"mu": jnp.zeros((8,), jnp.float32)}},
            "rng": jax.random.key_data(jax.random.key(0))}


def _save(workdir, step, state, **kw):
    ck = ckpt_lib.Checkpointer(workdir, **kw)
    ck.save(step, state, schedule={"position": step}, data={"digits": {"index": 10 * step}},
            meta={"step": step, "config": {"seed": 0}})
    ck.close()


def _restore(workdir, **kw):
    """As the loop does: ``check`` reads the array metadata and ``meta`` first."""
    ck = ckpt_lib.Checkpointer(workdir, **kw)

    def check(step):
        ck.metadata(step)
        ck.read_meta(step)

    try:
        return ck.restore_latest_good(ckpt_lib.abstract_like(_state()), check=check)
    finally:
        ck.close()


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """Checkpoints at steps 1 and 2 (the state at step s is ``_state(s)``)."""
    path = str(tmp_path_factory.mktemp("two_steps"))
    _save(path, 1, _state(1.0))
    _save(path, 2, _state(2.0))
    return path


@pytest.fixture
def workdir(tmp_path, two_steps):
    path = str(tmp_path / "run")
    shutil.copytree(two_steps, path)
    return path


def _step_dir(workdir, step):
    return os.path.join(workdir, "checkpoints", str(step))


def _assert_fell_back_to_1(workdir, caplog, why):
    with caplog.at_level(logging.WARNING, logger="alternating"):
        step, items = _restore(workdir)
    assert step == 1
    np.testing.assert_array_equal(items["state"]["params"]["w"], _state(1.0)["params"]["w"])
    assert items["data"] == {"digits": {"index": 10}}
    moved = [r.getMessage() for r in caplog.records
             if "moved to checkpoints_damaged" in r.getMessage()]
    assert len(moved) == 1 and "step 2" in moved[0] and why in moved[0], moved
    damaged = os.listdir(os.path.join(workdir, "checkpoints_damaged"))
    assert [n.split("-")[0] for n in damaged] == ["2"]
    assert ckpt_lib.Checkpointer(workdir).all_steps() == [1]


@pytest.mark.parametrize("async_save", [True, False])
def test_every_saved_file_is_in_the_manifest(tmp_path, async_save):
    workdir = str(tmp_path / "run")
    _save(workdir, 3, _state(3.0), async_save=async_save)
    manifest = json.load(open(os.path.join(_step_dir(workdir, 3), ckpt_lib.MANIFEST)))
    assert manifest["step"] == 3
    on_disk = {os.path.relpath(os.path.join(d, f), _step_dir(workdir, 3))
               for d, _, fs in os.walk(_step_dir(workdir, 3)) for f in fs}
    assert set(manifest["files"]) == on_disk - {ckpt_lib.MANIFEST, *integrity.NOT_COVERED}
    assert {"state/_METADATA", "data/metadata", "meta/metadata", "schedule/metadata"} <= set(
        manifest["files"])
    assert ckpt_lib.Checkpointer(workdir).verify(3) is True


def test_the_manifest_is_written_before_the_checkpoint_is_committed(tmp_path, monkeypatch):
    """A save whose manifest cannot be written never becomes a checkpoint."""
    def fail(step_dir, step=None):
        assert ckpt_lib.TMP_MARKER in os.path.basename(step_dir)  # not renamed yet
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_lib, "write_manifest", fail)
    ck = ckpt_lib.Checkpointer(str(tmp_path / "run"))
    ck.save(1, _state(), schedule={}, data={}, meta={})
    with pytest.raises(OSError, match="disk full"):
        ck.wait()
    assert ckpt_lib.Checkpointer(str(tmp_path / "run")).all_steps() == []


def _largest_state_file(workdir, step):
    root = os.path.join(_step_dir(workdir, step), "state")
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    return max(files, key=os.path.getsize)


def test_a_bit_flip_that_keeps_the_size_is_detected(workdir, caplog):
    path = _largest_state_file(workdir, 2)  # the data file of params/w
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        byte = f.read(1)[0]
        f.seek(size // 2)
        f.write(bytes([byte ^ 0x10]))
    assert os.path.getsize(path) == size
    _assert_fell_back_to_1(workdir, caplog, "checksum mismatch")


def test_a_missing_state_metadata_is_damage_not_a_mismatch(workdir, caplog):
    os.remove(os.path.join(_step_dir(workdir, 2), "state", "_METADATA"))
    _assert_fell_back_to_1(workdir, caplog, "state/_METADATA: missing")
    # Without the manifest (a checkpoint of an older version) the same damage
    # is still set aside: reading the metadata fails in ``check``.
    _save(workdir, 3, _state(3.0))
    os.remove(os.path.join(_step_dir(workdir, 3), ckpt_lib.MANIFEST))
    os.remove(os.path.join(_step_dir(workdir, 3), "state", "_METADATA"))
    assert _restore(workdir)[0] == 1


@pytest.mark.parametrize("garble", ["invalid_json", "another_position"])
def test_garbled_data_iterator_json_is_detected(workdir, caplog, garble):
    path = os.path.join(_step_dir(workdir, 2), "data", "metadata")
    text = open(path).read()
    assert '"index": 20' in text
    # Valid JSON with another position (same size) would resume the data
    # stream at the wrong batch: only the checksum can tell.
    if garble == "invalid_json":
        text = text[:-1] + "]"
    else:
        text = text.replace('"index": 20', '"index": 21')
    with open(path, "w") as f:
        f.write(text)
    _assert_fell_back_to_1(workdir, caplog, "data/metadata: contents differ")


def test_a_non_finite_state_is_set_aside(tmp_path, two_steps, caplog):
    workdir = str(tmp_path / "run")
    shutil.copytree(two_steps, workdir)
    shutil.rmtree(_step_dir(workdir, 2))
    bad = _state(2.0)
    bad["params"]["b"] = bad["params"]["b"].at[3].set(jnp.nan)
    _save(workdir, 2, bad)  # its manifest matches: the values themselves are bad
    _assert_fell_back_to_1(workdir, caplog, "non-finite values in params/b")
    # An infinity in an optimizer state is a legal value
    # (optax.contrib.reduce_on_plateau starts its best value at +inf).
    ok = _state(3.0)
    ok["opt_state"]["a"]["mu"] = ok["opt_state"]["a"]["mu"].at[0].set(jnp.inf)
    _save(workdir, 3, ok)
    assert _restore(workdir)[0] == 3


def test_restore_alone_raises_on_damage_and_moves_nothing(workdir):
    os.remove(os.path.join(_step_dir(workdir, 2), "schedule", "metadata"))
    ck = ckpt_lib.Checkpointer(workdir, create=False, async_save=False, max_to_keep=None)
    with pytest.raises(ckpt_lib.DamagedCheckpointError, match="schedule/metadata: missing"):
        ck.restore(2)
    assert ck.all_steps() == [1, 2]
    assert not os.path.exists(os.path.join(workdir, "checkpoints_damaged"))
    assert ck.restore(1)["schedule"] == {"position": 1}


def test_a_checkpoint_without_a_manifest_is_used_unverified(workdir, caplog):
    os.remove(os.path.join(_step_dir(workdir, 2), ckpt_lib.MANIFEST))
    with caplog.at_level(logging.WARNING, logger="alternating"):
        step, items = _restore(workdir)
    assert step == 2 and items["schedule"] == {"position": 2}
    assert any("no manifest.json" in r.getMessage() and "unverified" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_max_to_keep_below_one_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=r"max_checkpoints_to_keep=.*integer >= 1, or None"):
        ckpt_lib.Checkpointer(str(tmp_path / "run"), max_to_keep=bad)
    assert not os.path.exists(tmp_path / "run")


def test_checkpoints_damaged_keeps_the_newest_max_to_keep(workdir):
    damaged = os.path.join(workdir, "checkpoints_damaged")
    for i, name in enumerate(["7-20000101-000000", "14-20000101-000001", "21-20000101-000002"]):
        os.makedirs(os.path.join(damaged, name))
        os.utime(os.path.join(damaged, name), (time.time() - 100 + i, time.time() - 100 + i))
    os.remove(os.path.join(_step_dir(workdir, 2), "state", "_METADATA"))
    assert _restore(workdir, max_to_keep=2)[0] == 1
    kept = sorted(os.listdir(damaged))
    assert len(kept) == 2 and kept[0].startswith("2-") and kept[1] == "21-20000101-000002", kept

"""Checkpoints: one Orbax composite item per saved step, and everything that reads them.

Items of a checkpoint (``WORKDIR/checkpoints/<step>/``):

* ``state``: the whole TrainState (params, every phase's optimizer state, the
  per-phase step counters, the rng, the extras), saved with ``StandardSave``;
* ``schedule``: the schedule's JSON state (position in a block, random draws,
  adaptive statistics);
* ``data``: every stream's iterator state (JSON);
* ``meta``: the config (JSON), the package version, the step, and the host-side
  records a resume needs to continue exactly: metrics not yet logged or not
  yet seen by the schedule, and the non-finite skip streaks;
* ``manifest.json``: every file of the items above with its size and a
  BLAKE2b checksum (see below).

Restores always go through an abstract target (``jax.ShapeDtypeStruct`` with
shardings): without one Orbax returns ``MaskedNode``/``None`` leaves and optax
states as plain dicts, and the restored state would not fit the compiled steps.
Where the caller has no target (another run's checkpoint, a notebook), the
target is built from the checkpoint's own metadata, which gives plain nested
dicts.

Saves are atomic: Orbax writes into a temporary directory and renames it when
every item is complete, and deletes checkpoints beyond ``max_to_keep`` only
after that rename.

The manifest is part of that atomic write. Orbax calls the manager's
``post_finalization_callback`` on process 0 after every process has written
its files and before the rename, so the manifest is written into the
temporary directory (from a background thread, while training goes on) and
every checkpoint this module saves has one from the moment it exists. (The
rejected alternative, writing manifests at the next save/wait/close, leaves
the newest checkpoint without one whenever a run is killed between saves,
which is the usual case.) To get the callback, saves always use Orbax's async
checkpointer; ``async_save=False`` waits for each save to finish. Only the two
files Orbax writes during the rename itself are not covered:
``_CHECKPOINT_METADATA`` (Orbax adds a commit time to it) and
``commit_success.txt``. A checkpoint without a manifest was written by a
version of this library without manifests (or by another tool): it is
restored *unverified*, with a warning, and must still pass every other check.

What counts as damage, all handled one way: a manifest that does not match
(a file missing, truncated, or with a flipped bit that keeps its size), a
manifest that cannot be read, a restore that raises for any reason (a missing
``state/_METADATA``, garbled iterator JSON, a truncated array file, a missing
item), and a restored state with a NaN in any float leaf or an infinity
outside ``opt_state`` (optimizer states may hold one by design:
``optax.contrib.reduce_on_plateau`` starts its best value at +inf).
``restore_latest_good`` moves such a checkpoint whole to
``WORKDIR/checkpoints_damaged/`` with a warning and uses the next newest one;
nothing is deleted there except the oldest set-aside checkpoints beyond
``max_to_keep``, so that folder stays bounded. A checkpoint that is readable
but does not fit the run (``check`` raises ``CheckpointError``) is not damage:
the search stops and nothing is moved. ``restore`` alone (``load_state``,
``init_from``) raises ``DamagedCheckpointError`` and moves nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from alternating.integrity import (MANIFEST, key_str, manifest_problems,  # noqa: F401
                                   nonfinite_leaves, write_manifest)

ITEMS = ("state", "schedule", "data", "meta")
TMP_MARKER = ".orbax-checkpoint-tmp"
DAMAGED_DIR = "checkpoints_damaged"

log = logging.getLogger("alternating")


class CheckpointError(ValueError):
    """A checkpoint cannot be used: none found, none restorable, or it does not fit."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint's files are damaged: its manifest does not match, an item
    cannot be read, or the restored state is not finite.

    ``restore_latest_good`` sets such a checkpoint aside and tries the previous
    one (a plain ``CheckpointError`` from ``check`` stops the search instead).
    """


def _handlers() -> dict[str, Any]:
    return {"state": ocp.StandardCheckpointHandler(), "schedule": ocp.JsonCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` under ``WORKDIR/checkpoints``.

    Args:
      workdir: the run directory.
      max_to_keep: newest checkpoints kept (``None``: all); also the number of
        set-aside checkpoints kept in ``checkpoints_damaged/``.
      async_save: write in a background thread (the step loop goes on);
        ``False`` returns from ``save`` once the checkpoint is complete.
      create: create the directory; ``False`` opens another run's checkpoints
        read-only and fails if there are none.

    Raises:
      ValueError: ``max_to_keep`` is not ``None`` or an integer >= 1.
      CheckpointError: ``create=False`` and there is no checkpoint directory.
    """

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, async_save: bool = True,
                 create: bool = True):
        if max_to_keep is not None and (isinstance(max_to_keep, bool)
                                        or not isinstance(max_to_keep, (int, np.integer))
                                        or max_to_keep < 1):
            raise ValueError(f"max_checkpoints_to_keep={max_to_keep!r}: keep at least the "
                             "newest checkpoint; valid: an integer >= 1, or None to keep all.")
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.directory = os.path.join(self.workdir, "checkpoints")
        self.max_to_keep = max_to_keep
        self.async_save = async_save
        self._saving: int | None = None  # the step whose manifest the callback writes
        if not create and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoints in {self.workdir!r} (expected a "
                                  f"'checkpoints' directory written by a run).")
        # Always the async checkpointer: only it runs a callback before the
        # rename, where the manifest is written (``async_save=False`` waits).
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=create, enable_async_checkpointing=True,
            read_only=not create,
            async_options=ocp.AsyncOptions(post_finalization_callback=self._write_manifest))
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        if not create:  # Orbax warns that a read-only manager is read-only.
            absl_logger.setLevel(logging.ERROR)
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options,
                                                 item_handlers=_handlers())
        finally:
            absl_logger.setLevel(level)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, *, schedule: Mapping[str, Any],
             data: Mapping[str, Any], meta: Mapping[str, Any], force: bool = False) -> bool:
        """Saves (asynchronously, unless ``async_save=False``), with a manifest.

        Returns False when ``step`` is already saved.
        """
        if step in self.manager.all_steps():
            return False
        # Orbax waits for the previous save inside ``save`` too; waiting here
        # first keeps its manifest callback from seeing the new step.
        self.manager.wait_until_finished()
        self._saving = step
        saved = self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            schedule=ocp.args.JsonSave(dict(schedule)),
            data=ocp.args.JsonSave(dict(data)),
            meta=ocp.args.JsonSave(dict(meta)),
        ), force=force)
        if not self.async_save:
            self.manager.wait_until_finished()
        return saved

    def _write_manifest(self) -> None:
        """Orbax's post-finalization callback (process 0, before the rename).

        An exception here keeps the checkpoint from being committed, and Orbax
        raises it at the next ``save``/``wait``/``close``: a checkpoint whose
        files cannot be read back is not one to keep.
        """
        step = self._saving
        if step is None:
            return
        names = [n for n in os.listdir(self.directory)
                 if n == f"{step}{TMP_MARKER}" or n.startswith(f"{step}{TMP_MARKER}")]
        if names:  # the newest, should a crashed save of the same step have left one
            where = max((os.path.join(self.directory, n) for n in names), key=os.path.getmtime)
        else:  # Orbax's commit-file mode (object stores) writes in place
            where = os.path.join(self.directory, str(step))
        write_manifest(where, step)

    def verify(self, step: int, items: Iterable[str] | None = None) -> bool:
        """Checks ``step``'s files against its manifest (process 0 reads them).

        Args:
          step: a saved step.
          items: check only these items' files (``["meta"]``); default all.

        Returns:
          True when verified; False when the checkpoint has no manifest (it
          was written without one: unverified, with a warning).

        Raises:
          DamagedCheckpointError: a file is missing or differs from the
            manifest, or the manifest cannot be read.
        """
        problems: list[str] | None = []
        if jax.process_index() == 0:
            problems = manifest_problems(os.path.join(self.directory, str(step)), items)
        if _any_process(bool(problems)):
            raise DamagedCheckpointError(
                f"checkpoint {step} does not match its {MANIFEST}: "
                + ("; ".join(problems) if problems else "(found by process 0)"))
        if problems is None:
            log.warning("checkpoint %d in %s has no %s (written by a version without "
                        "checksums): restoring it unverified.", step, self.directory, MANIFEST)
            return False
        return True

    def restore(self, step: int, abstract_state: Any = None, *,
                verify: bool = True) -> dict[str, Any]:
        """Restores every item of ``step``.

        Args:
          step: a saved step.
          abstract_state: the target (``abstract_like(state)``); ``None``
            builds one from the checkpoint's metadata (plain nested dicts,
            arrays on the first local device).
          verify: check the files against the manifest first and the
            restored state for non-finite values after; ``False`` reads a
            damaged checkpoint as it is (to inspect it).

        Raises:
          DamagedCheckpointError: ``verify`` found damage.
        """
        if verify:
            self.verify(step)
        if abstract_state is None:
            abstract_state = self.abstract_from_metadata(step)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            schedule=ocp.args.JsonRestore(),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ))
        items = {k: out[k] for k in ITEMS}
        if verify:
            _check_finite(step, items["state"])
        return items

    def read_meta(self, step: int) -> dict[str, Any]:
        """The ``meta`` item alone (config, version, step): cheap, no arrays read.

        Its files are checked against the manifest; a damaged one raises
        ``DamagedCheckpointError``.
        """
        if self._has_manifest(step):
            self.verify(step, items=["meta"])
        return dict(self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"])

    def _has_manifest(self, step: int) -> bool:
        # (The warning about a missing manifest comes once, from ``restore``.)
        return os.path.exists(os.path.join(self.directory, str(step), MANIFEST))

    def metadata(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes, dtypes).

        Raises:
          DamagedCheckpointError: the ``state`` item's metadata is unreadable.
        """
        md = self.manager.item_metadata(step)["state"]
        if md is None:
            raise DamagedCheckpointError(f"checkpoint {step} in {self.directory!r} has no "
                                         "readable 'state' item.")
        return md

    def abstract_from_metadata(self, step: int, sharding: Any = None) -> Any:
        """A restore target built from the checkpoint itself (nested dicts/lists)."""
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                            self.metadata(step))

    def restore_latest_good(self, abstract_state: Any = None, *,
                            check: Callable[[int], None] | None = None,
                            steps: Iterable[int] | None = None,
                            ) -> tuple[int, dict[str, Any]] | None:
        """Restores the newest checkpoint that is intact; damaged ones are set aside.

        Each candidate is checked against its manifest, then given to
        ``check(step)``, then restored and checked for non-finite values. A
        damaged one (see the module docstring: every kind of damage is
        handled this way) is moved whole to
        ``WORKDIR/checkpoints_damaged/<step>-<time>`` with a warning, and the
        next newest one is tried. Directories left by a save that never
        finished (Orbax's ``*.orbax-checkpoint-tmp*``) are reported and moved
        there too. ``check`` may refuse a readable checkpoint that does not
        fit the run by raising ``CheckpointError``; that stops the search (a
        mismatch is not damage). Returns ``(step, items)``, or ``None`` when
        there is no checkpoint at all.

        Raises:
          CheckpointError: checkpoints exist but none of them is intact, or
            ``check`` refused one.
        """
        self._set_aside_unfinished()
        candidates = sorted(steps if steps is not None else self.all_steps(), reverse=True)
        failures = []
        for step in candidates:
            try:
                self.verify(step)
                if check is not None:
                    check(step)
                items = self.restore(step, abstract_state, verify=False)
                _check_finite(step, items["state"])
                return step, items
            except Exception as e:  # pylint: disable=broad-except
                if isinstance(e, CheckpointError) and not isinstance(e, DamagedCheckpointError):
                    raise
                where = self._set_aside(str(step))
                first = str(e).splitlines()[0][:300] if str(e) else ""
                msg = (f"checkpoint at step {step} could not be restored "
                       f"({type(e).__name__}: {first}); moved to {where}; trying the "
                       "previous one.")
                log.warning(msg)
                failures.append(msg)
        if failures:
            raise CheckpointError("no checkpoint in {!r} could be restored:\n  {}".format(
                self.directory, "\n  ".join(failures)))
        return None

    def _set_aside_unfinished(self) -> None:
        names = sorted(n for n in os.listdir(self.directory)
                       if TMP_MARKER in n) if os.path.isdir(self.directory) else []
        # Every process lists before process 0 moves anything: otherwise a
        # process that lists late sees nothing and the processes disagree.
        _sync("alternating:unfinished_listed")
        for name in names:
            where = self._set_aside(name, sync=False)
            log.warning("found %s, a checkpoint whose save never finished (the process "
                        "died mid-save); moved to %s.", name, where)
        _sync("alternating:unfinished_set_aside")
        self.manager.reload()

    def _set_aside(self, name: str, sync: bool = True) -> str:
        """Moves ``checkpoints/<name>`` to ``checkpoints_damaged/`` (process 0 only)."""
        src = os.path.join(self.directory, name)
        dst_dir = os.path.join(self.workdir, DAMAGED_DIR)
        base = os.path.join(dst_dir, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        dst, k = base, 0
        while os.path.exists(dst):  # moving onto a directory would nest inside it
            k += 1
            dst = f"{base}-{k}"
        if jax.process_index() == 0 and os.path.exists(src):
            os.makedirs(dst_dir, exist_ok=True)
            shutil.move(src, dst)
            os.utime(dst)  # the moment it was set aside orders the pruning
            self._prune_damaged(keep=os.path.basename(dst))
        if sync:
            _sync(f"alternating:set_aside:{name}")
            self.manager.reload()
        return os.path.join(DAMAGED_DIR, os.path.basename(dst))

    def _prune_damaged(self, keep: str) -> None:
        """Deletes all but the newest ``max_to_keep`` set-aside checkpoints."""
        if self.max_to_keep is None:
            return
        root = os.path.join(self.workdir, DAMAGED_DIR)
        entries = sorted(os.listdir(root),
                         key=lambda n: (n == keep, os.path.getmtime(os.path.join(root, n)), n))
        for name in entries[:-self.max_to_keep]:
            path = os.path.join(root, name)
            log.warning("deleting %s: %s keeps the newest %d set-aside checkpoints "
                        "(max_checkpoints_to_keep).", os.path.join(DAMAGED_DIR, name),
                        DAMAGED_DIR, self.max_to_keep)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _sync(name: str) -> None:
    """A barrier across processes (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
        multihost_utils.sync_global_devices(name)


def _any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (so all decide alike)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _check_finite(step: int, state: Any) -> None:
    bad = nonfinite_leaves(state)
    if _any_process(bool(bad)):
        shown = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise DamagedCheckpointError(f"checkpoint {step} holds non-finite values in "
                                     f"{shown or 'a shard another process holds'}.")


def abstract_like(state: Any) -> Any:
    """``ShapeDtypeStruct`` tree (with shardings) to restore ``state``'s structure into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)


def _leaves_by_path(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = "/".join(key_str(k) for k in path)
        out[key] = (tuple(leaf.shape), str(leaf.dtype))
    return out


def structure_diff(saved: Any, expected: Any, *, limit: int = 20) -> list[str]:
    """Differences between a checkpoint's array tree and the tree a run expects.

    Both trees are compared by leaf path (``params/Dense_0/kernel``,
    ``opt_state/a/0/mu/...``), shape and dtype. Returns human-readable lines,
    at most ``limit`` (plus a count of the rest); empty when they fit.
    """
    a, b = _leaves_by_path(saved), _leaves_by_path(expected)
    lines = []
    for k in sorted(set(a) | set(b)):
        if k not in b:
            lines.append(f"  {k}: in the checkpoint {a[k][0]} {a[k][1]}, not in this run")
        elif k not in a:
            lines.append(f"  {k}: in this run {b[k][0]} {b[k][1]}, not in the checkpoint")
        elif a[k] != b[k]:
            lines.append(f"  {k}: checkpoint {a[k][0]} {a[k][1]}, this run {b[k][0]} {b[k][1]}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"  ... and {len(lines) - limit} more"]
    return lines


def config_diff(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted path, old value, new value)`` for every difference of two JSON trees."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{k}" if prefix else str(k)
            if k not in old:
                out.append((path, "<absent>", new[k]))
            elif k not in new:
                out.append((path, old[k], "<absent>"))
            else:
                out.extend(config_diff(old[k], new[k], path))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (x, y) in enumerate(zip(old, new)):
            out.extend(config_diff(x, y, f"{prefix}[{i}]"))
        return out
    return [] if old == new else [(prefix, old, new)]

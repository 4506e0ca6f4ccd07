"""Checkpoints: one Orbax composite item per saved step, and everything that reads them.

Items of a checkpoint (``WORKDIR/checkpoints/<step>/``):

* ``state``: the whole TrainState (params, every phase's optimizer state, the
  per-phase step counters, the rng, the extras), saved with ``StandardSave``;
* ``schedule``: the schedule's JSON state (position in a block, random draws,
  adaptive statistics);
* ``data``: every stream's iterator state (JSON);
* ``meta``: the config (JSON), the package version, the step, and the host-side
  records a resume needs to continue exactly: metrics not yet logged or not
  yet seen by the schedule, and the non-finite skip streaks.

Restores always go through an abstract target (``jax.ShapeDtypeStruct`` with
shardings): without one Orbax returns ``MaskedNode``/``None`` leaves and optax
states as plain dicts, and the restored state would not fit the compiled steps.
Where the caller has no target (another run's checkpoint, a notebook), the
target is built from the checkpoint's own metadata, which gives plain nested
dicts.

Saves are atomic: Orbax writes into a temporary directory and renames it when
every item is complete, and deletes checkpoints beyond ``max_to_keep`` only
after that rename. A checkpoint that still fails to restore (a truncated file,
a missing item) is moved to ``WORKDIR/checkpoints_damaged/`` with a warning and
the next newest one is used: nothing is deleted.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import orbax.checkpoint as ocp

ITEMS = ("state", "schedule", "data", "meta")
TMP_MARKER = ".orbax-checkpoint-tmp"
DAMAGED_DIR = "checkpoints_damaged"

log = logging.getLogger("alternating")


class CheckpointError(ValueError):
    """A checkpoint cannot be used: none found, none restorable, or it does not fit."""


def _handlers() -> dict[str, Any]:
    return {"state": ocp.StandardCheckpointHandler(), "schedule": ocp.JsonCheckpointHandler(),
            "data": ocp.JsonCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` under ``WORKDIR/checkpoints``.

    Args:
      workdir: the run directory.
      max_to_keep: newest checkpoints kept (``None``: all).
      async_save: write in a background thread (the step loop goes on).
      create: create the directory; ``False`` opens another run's checkpoints
        read-only and fails if there are none.
    """

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, async_save: bool = True,
                 create: bool = True):
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.directory = os.path.join(self.workdir, "checkpoints")
        if not create and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoints in {self.workdir!r} (expected a "
                                  f"'checkpoints' directory written by a run).")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=create, enable_async_checkpointing=async_save,
            read_only=not create)
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
        """Saves (asynchronously). Returns False when ``step`` is already saved."""
        if step in self.manager.all_steps():
            return False
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            schedule=ocp.args.JsonSave(dict(schedule)),
            data=ocp.args.JsonSave(dict(data)),
            meta=ocp.args.JsonSave(dict(meta)),
        ), force=force)

    def restore(self, step: int, abstract_state: Any = None) -> dict[str, Any]:
        """Restores every item of ``step``.

        Args:
          step: a saved step.
          abstract_state: the target (``abstract_like(state)``); ``None``
            builds one from the checkpoint's metadata (plain nested dicts,
            arrays on the first local device).
        """
        if abstract_state is None:
            abstract_state = self.abstract_from_metadata(step)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            schedule=ocp.args.JsonRestore(),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ))
        return {k: out[k] for k in ITEMS}

    def read_meta(self, step: int) -> dict[str, Any]:
        """The ``meta`` item alone (config, version, step): cheap, no arrays read."""
        return dict(self.manager.restore(step, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"])

    def metadata(self, step: int) -> Any:
        """The saved state's tree of array metadata (shapes, dtypes)."""
        md = self.manager.item_metadata(step)["state"]
        if md is None:
            raise CheckpointError(f"checkpoint {step} in {self.directory!r} has no readable "
                                  "'state' item.")
        return md

    def abstract_from_metadata(self, step: int, sharding: Any = None) -> Any:
        """A restore target built from the checkpoint itself (nested dicts/lists)."""
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                            self.metadata(step))

    def restore_latest_good(self, abstract_state: Any = None, *,
                            check: Callable[[int], None] | None = None,
                            steps: Iterable[int] | None = None) -> tuple[int, dict[str, Any]] | None:
        """Restores the newest checkpoint that restores; damaged ones are set aside.

        A checkpoint that raises on restore is moved (whole) to
        ``WORKDIR/checkpoints_damaged/<step>-<time>`` with a warning, and the
        next newest one is tried. Directories left by a save that never
        finished (Orbax's ``*.orbax-checkpoint-tmp*``) are reported and moved
        there too. ``check(step)``, called first, may refuse a readable
        checkpoint that does not fit the run by raising ``CheckpointError``;
        that stops the search (a mismatch is not damage). Returns
        ``(step, items)``, or ``None`` when there is no checkpoint at all.

        Raises:
          CheckpointError: checkpoints exist but none of them restores.
        """
        self._set_aside_unfinished()
        candidates = sorted(steps if steps is not None else self.all_steps(), reverse=True)
        failures = []
        for step in candidates:
            try:
                if check is not None:
                    check(step)
                return step, self.restore(step, abstract_state)
            except Exception as e:  # pylint: disable=broad-except
                if isinstance(e, CheckpointError):
                    raise
                where = self._set_aside(str(step))
                msg = (f"checkpoint at step {step} could not be restored "
                       f"({type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}); "
                       f"moved to {where}; trying the previous one.")
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
        dst = os.path.join(dst_dir, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if jax.process_index() == 0 and os.path.exists(src):
            os.makedirs(dst_dir, exist_ok=True)
            shutil.move(src, dst)
        if sync:
            _sync(f"alternating:set_aside:{name}")
            self.manager.reload()
        return os.path.join(DAMAGED_DIR, os.path.basename(dst))

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


def abstract_like(state: Any) -> Any:
    """``ShapeDtypeStruct`` tree (with shardings) to restore ``state``'s structure into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)


def _leaves_by_path(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = "/".join(_key_str(k) for k in path)
        out[key] = (tuple(leaf.shape), str(leaf.dtype))
    return out


def _key_str(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


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

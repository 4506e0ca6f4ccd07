"""Checkpoints: one Orbax composite item per saved step.

Items: ``state`` (the whole TrainState, saved with ``StandardSave``),
``schedule`` (the schedule's JSON state), ``data`` (every stream's iterator
state, JSON) and ``meta`` (the config as JSON and the package version).

Restores always go through an abstract target built with ``jax.eval_shape``:
without one Orbax returns ``MaskedNode``/``None`` leaves and optax states as
plain dicts, and the restored state would not fit the compiled steps.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

ITEMS = ("state", "schedule", "data", "meta")


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` under ``WORKDIR/checkpoints``."""

    def __init__(self, workdir: str, *, max_to_keep: int | None = 3, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

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

    def restore(self, step: int, abstract_state: Any) -> dict[str, Any]:
        """Restores every item of ``step`` against ``abstract_state``."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            schedule=ocp.args.JsonRestore(),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ))
        return {k: out[k] for k in ITEMS}

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_like(state: Any) -> Any:
    """``ShapeDtypeStruct`` tree (with shardings) to restore ``state``'s structure into."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        state)

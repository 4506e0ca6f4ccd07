"""Experience replay from a rehearsal memory filled at task boundaries.

Design. A phase's extras update rules (``rule(value, params, extras, rng,
count)``) never see the batch, and a loss cannot write the state, so a buffer
filled from every training batch would need a per-step host hook (slow) or a
change to the step. Instead the memory is filled where the library already
has a deterministic pass over a task's data: at the end of each task
(:class:`ReplayMemory`, a hook with ``when={'phase_end': [tasks]}``), which is
what the common "update the memory at the task boundary" strategies do
(e.g. Avalanche's ``ReplayPlugin`` with its ``ExperienceBalancedBuffer``, or
GDumb-style memories).

* ``extras['replay']`` (declared by the hook, ``kind='init'`` through
  :func:`init_buffer`) holds ``size`` examples, ``{x, y[, task]}``, and
  ``seen``, the number of examples offered so far. It is part of the
  ``TrainState``: checkpointed, resumed, one per vectorized seed.
* At each task's end the hook offers that task's training examples, in the
  order of ``ctx.batches`` (deterministic, padding dropped), to the memory by
  reservoir sampling (Vitter's algorithm R): the i-th example offered in the
  whole run (counting from 0) takes slot i while ``i < size``, and afterwards
  replaces slot ``j ~ U{0..i}`` when ``j < size``. The memory is thus a
  uniform sample of every example of the finished tasks (each kept with
  probability ``size / seen``), so tasks share it in proportion to their
  sizes. The draws come from the state's key (``state.rng`` folded with
  ``seen``): the same seed gives the same memory, a resumed run included.
* :func:`replay_classification` (a loss, registered
  ``replay_classification``) adds to the base loss on the current batch
  ``weight`` times the base loss on ``batch_size`` examples drawn uniformly
  (with replacement, from the step's rng) from the filled part of the memory;
  while the memory is empty that term is 0. The aux ``accuracy`` is the
  current batch's (what evaluators read); ``replay_loss`` is added.

The memory is read on the host at task ends (single-process runs; a few
milliseconds per task at these sizes). The first task trains without replay.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alternating import losses, registry
from alternating.continual.regularizers import task_specs

_RNG_TAG = 0x4E9A  # folds the state's key into the memory's own stream


def init_buffer(params: Any, rng: Any, *, size: int, x_shape: Sequence[int],
                x_dtype: str = "float32", task: bool = False) -> dict[str, Any]:
    """An empty memory of ``size`` examples (``extras`` kind ``init``)."""
    del params, rng
    size = int(size)
    out = {"x": jnp.zeros((size, *[int(d) for d in x_shape]), jnp.dtype(x_dtype)),
           "y": jnp.zeros((size,), jnp.int32), "seen": jnp.zeros((), jnp.int32)}
    if task:
        out["task"] = jnp.zeros((size,), jnp.int32)
    return out


def reservoir_slots(key: Any, seen: int, n: int, size: int) -> np.ndarray:
    """Slot of each of ``n`` examples offered after ``seen`` (-1: not kept), algorithm R."""
    i = seen + np.arange(n, dtype=np.int64)
    if n == 0:
        return np.zeros((0,), np.int64)
    j = np.asarray(jax.random.randint(key, (n,), 0, jnp.asarray(i + 1, jnp.int32)), np.int64)
    slots = np.where(i < size, i, j)
    return np.where(slots < size, slots, -1)


def reservoir_fill(buffer: dict[str, np.ndarray], examples: dict[str, np.ndarray],
                   key: Any) -> dict[str, np.ndarray]:
    """The memory after offering ``examples`` in order (host arrays; see the module)."""
    size = buffer["y"].shape[0]
    seen = int(buffer["seen"])
    n = len(examples["y"])
    slots = reservoir_slots(key, seen, n, size)
    kept = np.nonzero(slots >= 0)[0]
    # Later offers overwrite earlier ones in the same slot: keep each slot's last writer.
    rev = slots[kept][::-1]
    _, first = np.unique(rev, return_index=True)
    last = kept[::-1][first]
    out = {k: np.array(v, copy=True) for k, v in buffer.items()}
    for k in out:
        if k != "seen":
            out[k][slots[last]] = np.asarray(examples[k], out[k].dtype)[last]
    out["seen"] = np.asarray(seen + n, buffer["seen"].dtype)
    return out


class ReplayMemory:
    """Hook: a reservoir-sampled rehearsal memory, filled at each task's end (see the module).

    Args:
      tasks: ``{phase: training data spec}`` (``TaskStream.data()``) or a list
        of ``{name|phase, data}``.
      size: examples kept.
      x_shape, x_dtype: the shape of one input and its dtype.
      task: also keep ``batch['task']`` (task-incremental streams).
      batch_size: batch size of the pass over a task's data.
      buffer: the extra's name.
    """

    name = "replay_memory"

    def __init__(self, tasks: Any, size: int, x_shape: Sequence[int], x_dtype: str = "float32",
                 task: bool = False, batch_size: int = 256, buffer: str = "replay"):
        self.tasks = task_specs(tasks, "ReplayMemory")
        if int(size) < 1:
            raise ValueError(f"ReplayMemory: size={size}; it must be >= 1.")
        self.size, self.batch_size, self.buffer = int(size), int(batch_size), str(buffer)
        self.keys = ("x", "y", "task") if task else ("x", "y")
        self.when = {"phase_end": list(self.tasks)}
        self.extras = {self.buffer: {
            "kind": "init", "init": "alternating.continual.replay:init_buffer",
            "kwargs": {"size": self.size, "x_shape": [int(d) for d in x_shape],
                       "x_dtype": str(x_dtype), "task": bool(task)}}}

    def examples(self, phase: str, ctx: Any) -> dict[str, np.ndarray]:
        """The task's training examples in ``ctx.batches`` order, padding dropped (host)."""
        parts = {k: [] for k in self.keys}
        for batch in ctx.batches(self.tasks[phase], self.batch_size):
            host = jax.device_get(batch)
            real = np.asarray(host["mask"]) > 0
            for k in self.keys:
                if k not in host:
                    raise ValueError(f"hook {self.name!r}: task {phase!r}'s batches have no "
                                     f"{k!r} (keys {sorted(host)}).")
                parts[k].append(np.asarray(host[k])[real])
        return {k: np.concatenate(v) for k, v in parts.items()}

    def __call__(self, state: Any, event: Any, ctx: Any) -> Any:
        if getattr(ctx, "dry_run", False) or event.ended not in self.tasks:
            return None
        buffer = {k: np.asarray(v) for k, v in jax.device_get(state.extras[self.buffer]).items()}
        examples = self.examples(event.ended, ctx)
        if examples["x"].shape[1:] != buffer["x"].shape[1:]:
            raise ValueError(f"hook {self.name!r}: task {event.ended!r}'s inputs have shape "
                             f"{list(examples['x'].shape[1:])}, the memory "
                             f"{list(buffer['x'].shape[1:])}; fix x_shape.")
        key = jax.random.fold_in(jax.random.fold_in(state.rng, _RNG_TAG), int(buffer["seen"]))
        new = reservoir_fill(buffer, examples, key)
        old = state.extras[self.buffer]
        filled = {k: jnp.asarray(v, old[k].dtype) for k, v in new.items()}
        return state.replace(extras={**state.extras, self.buffer: filled})


@losses.register_loss("replay_classification")
def replay_classification(model: Any, *, batch_size: int = 32, weight: float = 1.0,
                          buffer: str = "replay", base: Any = "classification",
                          **base_kwargs) -> losses.LossFn:
    """The base loss on the batch plus ``weight`` times it on a batch drawn from the memory.

    Args:
      model: the config's model.
      batch_size: replayed examples per step (drawn with replacement).
      weight: the replay term's weight.
      buffer: the extra :class:`ReplayMemory` fills.
      base: the base loss (name, ``module:function`` or callable), built with
        ``base_kwargs``; it must honour the ``mask`` key (the built-in
        classification losses do).
    """
    base_fn = losses.resolve_loss(base, model, base_kwargs,
                                  where="loss 'replay_classification' base")
    batch_size, weight = int(batch_size), float(weight)

    def loss(params, batch, rng, extras):
        if buffer not in extras:
            raise ValueError(f"loss 'replay_classification': extras has no {buffer!r} (it has "
                             f"{sorted(extras)}); add the ReplayMemory hook, which declares it.")
        value, aux = base_fn(params, batch, jax.random.fold_in(rng, 0), extras)
        mem = extras[buffer]
        filled = jnp.minimum(mem["seen"], mem["y"].shape[0])
        idx = jax.random.randint(jax.random.fold_in(rng, 1), (batch_size,), 0,
                                 jnp.maximum(filled, 1))
        replayed = {k: v[idx] for k, v in mem.items() if k != "seen"}
        replayed["mask"] = jnp.full((batch_size,), filled > 0, jnp.float32)
        r_value, _ = base_fn(params, replayed, jax.random.fold_in(rng, 2), extras)
        return value + weight * r_value, {**aux, "replay_loss": r_value}

    loss.base = base_fn
    return loss


registry.HOOKS.register("replay_memory", ReplayMemory)

r"""Experience replay: a rehearsal memory in the ``TrainState`` and the loss that replays it.

**The in-step memory** (the default). Each task's phase updates the extra
``replay`` after every optimizer step with the rule ``replay_fill`` (an
extras rule with ``takes_batch = True``, so it sees the step's global
training batch; see :mod:`alternating.extras`). The memory is an ordinary
extra (``kind='init'``, :func:`init_memory`): checkpointed, resumed exactly,
one per vectorized seed, pure JAX (it runs under ``jit``, ``vmap`` and the
fused executor). It holds ``size`` slots ``{x, y, task}`` and the counters
``seen`` (real examples offered), ``clock`` (steps trained), ``last_step[t]``
(the clock of the last step that trained task ``t``, -1: never) and, for the
class-balanced mode, ``class_seen`` and ``class_full`` per class. Two modes:

* ``reservoir`` (Vitter's algorithm R over every example the run trained
  on): the ``i``-th real example (from 0, padding skipped) takes slot ``i``
  while ``i < size``, else slot ``j ~ U{0..i}`` when ``j < size``. Each draw
  is independent of the memory, so a batch's draws are made at once; when two
  examples of a batch pick one slot the later one wins, as in the sequential
  algorithm. Every example seen is kept with probability ``size / seen``.
* ``class_balanced`` (class-balanced reservoir, CBRS, Chrysakis & Moens,
  "Online Continual Learning from Imbalanced Data", ICML 2020): while the
  memory has free slots an example takes the next one; once full, an example
  of a class that is not *full* (never the largest class in the memory)
  replaces a random slot of a largest class, and an example of a full class
  ``c`` replaces a random slot of class ``c`` with probability
  ``m_c / n_c`` (stored over seen: a reservoir within the class). The classes
  seen so far end with equal slots (within one) when each has enough
  examples. Examples are processed in order (``lax.scan`` over the batch).

The draws come from the step's key (the state's key folded with the step), so
a seed gives one memory, a resumed run included.

**Rehearsal weights.** :func:`replay_classification` adds ``weight`` times the
base loss on ``batch_size`` examples drawn from the memory (with
replacement). With ``weighting`` set, each task ``t`` present in the memory
gets the probability mass ``w_t / sum(w)`` (spread evenly over its slots),
with ``d_t = (clock - last_step[t]) / tau`` the time since task ``t`` was
last trained in units of ``tau`` steps (a task's length makes ``d`` count
tasks) and

* ``uniform``: ``w_t = 1``;
* ``exponential``: ``w_t = exp(-alpha * d_t)``;
* ``power_law``: ``w_t = (1 + d_t) ** -alpha``: the probability of meeting a
  task again falls as a power of the time since it was last met (Anderson &
  Schooler 1991), the environment of Gandhi, Shah, Marupudi & Varma,
  "Catastrophic Interference is Mitigated in Naturalistic Power-Law Learning
  Environments", arXiv:2401.10393.

The current task (the loss's ``task``) is left out (``past_only``): the
batch trains it. Without ``weighting`` the draw is uniform over the filled
slots. While nothing can be drawn the replay term is 0.

**Memory budget.** A memory is refused, before anything is compiled, when
its bytes (``size * (bytes of one x + 8)``) exceed ``budget_bytes``
(default :data:`MEMORY_BUDGET_BYTES`, 64 MiB per seed; the error names
``replay.size``, the bytes and the budget).

**The task-end memory** (:class:`ReplayMemory`, hook ``replay_memory``), kept
for ``configs/continual.py``'s ``replay`` method: the same algorithm R, but
offered each finished task's examples on the host at the task's end (the
common "update the memory at the experience boundary" strategy, e.g.
Avalanche's ``ReplayPlugin``). Its memory has no task clock, so it replays
uniformly. The in-step memory replaces it wherever a config can name phase
updates; :func:`add_replay` sets one up on a task-stream config.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alternating import losses, registry
from alternating.continual.regularizers import task_specs

_RNG_TAG = 0x4E9A  # folds the state's key into the memory's own stream


def init_buffer(params: Any, rng: Any, *, size: int, x_shape: Sequence[int],
                x_dtype: str = "float32", task: bool = False) -> dict[str, Any]:
    """An empty task-end memory of ``size`` examples (``extras`` kind ``init``)."""
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
    """Hook: the task-end memory (see the module), reservoir-sampled at each task's end.

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


# --- The in-step memory. -----------------------------------------------------------

MODES = ("reservoir", "class_balanced")
WEIGHTINGS = ("uniform", "exponential", "power_law")
MEMORY_BUDGET_BYTES = 64 * 2 ** 20  # per seed


def memory_bytes(size: int, x_shape: Sequence[int], x_dtype: str = "float32") -> int:
    """Bytes of a memory's slots: ``size * (bytes of one x + 4 (y) + 4 (task))``."""
    return int(size) * (int(np.prod([int(d) for d in x_shape])) * jnp.dtype(x_dtype).itemsize + 8)


def check_memory(size: Any, x_shape: Sequence[int], x_dtype: str = "float32",
                 budget_bytes: Any = MEMORY_BUDGET_BYTES, where: str = "replay") -> None:
    """Raises ValueError for a size < 1 or a memory over its byte budget (see the module)."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{where}.size={size!r}; give the number of examples kept, an int >= 1.")
    need = memory_bytes(size, x_shape, x_dtype)
    if need > int(budget_bytes):
        raise ValueError(f"{where}.size={size}: {size} examples of shape {list(x_shape)} "
                         f"({x_dtype}) take {need} bytes, over the memory budget of "
                         f"{int(budget_bytes)} bytes ({where}.budget_bytes); lower size, or "
                         "raise budget_bytes if the device has the room.")


def init_memory(params: Any, rng: Any, *, size: int, x_shape: Sequence[int], num_tasks: int,
                x_dtype: str = "float32", num_classes: int = 0,
                budget_bytes: int = MEMORY_BUDGET_BYTES) -> dict[str, Any]:
    """An empty in-step memory (``extras`` kind ``init``; see the module)."""
    del params, rng
    check_memory(size, x_shape, x_dtype, budget_bytes)
    size = int(size)
    out = {"x": jnp.zeros((size, *[int(d) for d in x_shape]), jnp.dtype(x_dtype)),
           "y": jnp.zeros((size,), jnp.int32), "task": jnp.zeros((size,), jnp.int32),
           "seen": jnp.zeros((), jnp.int32), "clock": jnp.zeros((), jnp.int32),
           "last_step": jnp.full((int(num_tasks),), -1, jnp.int32)}
    if num_classes:
        out["class_seen"] = jnp.zeros((int(num_classes),), jnp.int32)
        out["class_full"] = jnp.zeros((int(num_classes),), jnp.int32)
    return out


def _write(mem: dict[str, Any], idx: Any, x: Any, y: Any, task: Any) -> dict[str, Any]:
    """``mem`` with slots ``idx`` set (an index == size is dropped)."""
    return {**mem, "x": mem["x"].at[idx].set(x.astype(mem["x"].dtype), mode="drop"),
            "y": mem["y"].at[idx].set(y.astype(jnp.int32), mode="drop"),
            "task": mem["task"].at[idx].set(task, mode="drop")}


def reservoir_offer(mem: dict[str, Any], x: Any, y: Any, real: Any, task: Any,
                    key: Any) -> dict[str, Any]:
    """Algorithm R over one batch's real examples, in batch order (see the module)."""
    size, n = mem["y"].shape[0], y.shape[0]
    i = mem["seen"] + jnp.cumsum(real.astype(jnp.int32)) - 1
    j = jax.random.randint(key, (n,), 0, jnp.maximum(i + 1, 1))
    slot = jnp.where(i < size, i, j)
    keep = real & (slot < size)
    order = jnp.arange(n)
    later = (slot[None, :] == slot[:, None]) & keep[None, :] & (order[None, :] > order[:, None])
    idx = jnp.where(keep & ~later.any(axis=1), slot, size)
    out = _write(mem, idx, x, y, jnp.full((n,), task, jnp.int32))
    return {**out, "seen": mem["seen"] + real.sum().astype(jnp.int32)}


def class_balanced_offer(mem: dict[str, Any], x: Any, y: Any, real: Any, task: Any,
                         key: Any) -> dict[str, Any]:
    """The class-balanced reservoir over one batch, one example at a time (see the module)."""
    size = mem["y"].shape[0]
    if "class_seen" not in mem:
        raise ValueError("replay_fill mode='class_balanced': the memory has no class counters; "
                         "build it with num_classes > 0 (add_replay does).")
    num_classes = mem["class_seen"].shape[0]
    slots = jnp.arange(size)

    def one(carry, inp):
        m, stored = carry
        xe, ye, re, ke = inp
        k_pick, k_keep = jax.random.split(ke)
        n_c = m["class_seen"][ye] + 1
        free = m["seen"] < size
        largest = stored == stored.max()
        full = (m["class_full"][ye] > 0) | largest[ye]
        valid = slots < jnp.minimum(m["seen"], size)
        noise = jax.random.uniform(k_pick, (size,))
        pool = jnp.where(full, m["y"] == ye, largest[m["y"]]) & valid
        pick = jnp.argmax(jnp.where(pool, noise, -1.0))
        take = free | ~full | (jax.random.uniform(k_keep) * n_c < stored[ye])
        slot = jnp.where(free, m["seen"], pick)
        write = re & take
        old_y = m["y"][slot]
        idx = jnp.where(write, slot, size)
        m = _write(m, idx[None], xe[None], ye[None], jnp.full((1,), task, jnp.int32))
        stored = stored + write * (jax.nn.one_hot(ye, num_classes, dtype=jnp.int32)
                                   - (~free) * jax.nn.one_hot(old_y, num_classes, dtype=jnp.int32))
        m = {**m, "seen": m["seen"] + re,
             "class_seen": m["class_seen"].at[ye].add(re.astype(jnp.int32)),
             "class_full": m["class_full"].at[ye].max((re & ~free & full).astype(jnp.int32))}
        return (m, stored), None

    valid = slots < jnp.minimum(mem["seen"], size)
    stored = (jax.nn.one_hot(mem["y"], num_classes, dtype=jnp.int32) * valid[:, None]).sum(0)
    keys = jax.random.split(key, y.shape[0])
    (out, _), _ = jax.lax.scan(one, (mem, stored), (x, y.astype(jnp.int32), real, keys))
    return out


def fill_rule(model: Any = None, *, task: int, mode: str = "reservoir") -> Any:
    """The rule ``replay_fill``: offer the step's batch to the memory, tick the task clock.

    Args:
      model: unused (the rule factory's signature).
      task: the index of the task this phase trains (stored with each example).
      mode: one of :data:`MODES`.
    """
    del model
    if mode not in MODES:
        raise ValueError(f"replay_fill: mode={mode!r}; valid modes: {list(MODES)}.")
    offer = reservoir_offer if mode == "reservoir" else class_balanced_offer
    task = int(task)

    def rule(value, params, extras, rng, count, batch=None):
        del params, extras, count
        x, y = batch["x"], batch["y"]
        if tuple(x.shape[1:]) != tuple(value["x"].shape[1:]):
            raise ValueError(f"replay_fill: the batch's x has shape {list(x.shape[1:])} per "
                             f"example, the memory {list(value['x'].shape[1:])}; fix x_shape.")
        real = batch["mask"] > 0 if "mask" in batch else jnp.ones(y.shape, bool)
        out = offer(value, x, y, real, task, rng)
        return {**out, "clock": value["clock"] + 1,
                "last_step": value["last_step"].at[task].set(value["clock"])}

    rule.takes_batch = True
    return rule


registry.RULES.register("replay_fill", fill_rule)


def task_weights(last_step: Any, clock: Any, weighting: str, alpha: float = 1.0,
                 tau: float = 1.0) -> Any:
    """Each task's rehearsal weight (0 for a task never trained); see the module."""
    d = (clock - last_step).astype(jnp.float32) / float(tau)
    if weighting == "uniform":
        w = jnp.ones_like(d)
    elif weighting == "exponential":
        w = jnp.exp(-float(alpha) * d)
    elif weighting == "power_law":
        w = (1.0 + d) ** -float(alpha)
    else:
        raise ValueError(f"replay weighting={weighting!r}; valid weightings: {list(WEIGHTINGS)}.")
    return jnp.where(last_step >= 0, w, 0.0)


def slot_probabilities(mem: Mapping[str, Any], weighting: str | None, *, alpha: float = 1.0,
                       tau: float = 1.0, task: int | None = None) -> Any:
    """The probability of drawing each slot (all zeros when nothing can be drawn)."""
    size = mem["y"].shape[0]
    p = (jnp.arange(size) < jnp.minimum(mem["seen"], size)).astype(jnp.float32)
    if weighting is not None:
        num_tasks = mem["last_step"].shape[0]
        w = task_weights(mem["last_step"], mem["clock"], weighting, alpha, tau)
        if task is not None:
            w = w.at[int(task)].set(0.0)
        per_task = jnp.zeros((num_tasks,), jnp.float32).at[mem["task"]].add(p)
        p = p * (w / jnp.maximum(per_task, 1.0))[mem["task"]]
    total = p.sum()
    return jnp.where(total > 0, p / jnp.maximum(total, 1e-30), 0.0)


@losses.register_loss("replay_classification")
def replay_classification(model: Any, *, batch_size: int = 32, weight: float = 1.0,
                          buffer: str = "replay", base: Any = "classification",
                          weighting: str | None = None, alpha: float = 1.0, tau: float = 1.0,
                          task: int | None = None, base_spec: Mapping[str, Any] | None = None,
                          **base_kwargs) -> losses.LossFn:
    """The base loss on the batch plus ``weight`` times it on a batch drawn from the memory.

    Args:
      model: the config's model.
      batch_size: replayed examples per step (drawn with replacement).
      weight: the replay term's weight.
      buffer: the memory's extra.
      base: the base loss (name, ``module:function`` or callable), built with
        ``base_kwargs``; it must honour the ``mask`` key (the built-in
        classification losses do).
      weighting: None (uniform over the filled slots, the current task's
        included) or one of :data:`WEIGHTINGS` (rehearsal weights over the
        past tasks; needs the in-step memory); see the module.
      alpha, tau: the weighting's exponent or rate, and its time unit in steps.
      task: the index of the task the phase trains (left out of a weighted draw).
      base_spec: ``{loss, kwargs}``, given instead of ``base`` and its kwargs
        (used when this loss is itself the base of ``ewc_classification``,
        which takes ``base`` for its own).
    """
    if weighting is not None and weighting not in WEIGHTINGS:
        raise ValueError(f"loss 'replay_classification': weighting={weighting!r}; valid "
                         f"weightings: {list(WEIGHTINGS)} (or None: uniform over the memory).")
    if float(tau) <= 0:
        raise ValueError(f"loss 'replay_classification': tau={tau}; it must be > 0 (steps).")
    if base_spec is not None:
        base, base_kwargs = base_spec["loss"], dict(base_spec.get("kwargs") or {})
    base_fn = losses.resolve_loss(base, model, base_kwargs,
                                  where="loss 'replay_classification' base")
    batch_size, weight = int(batch_size), float(weight)

    def loss(params, batch, rng, extras):
        if buffer not in extras:
            raise ValueError(f"loss 'replay_classification': extras has no {buffer!r} (it has "
                             f"{sorted(extras)}); declare the memory (add_replay) or add the "
                             "ReplayMemory hook.")
        value, aux = base_fn(params, batch, jax.random.fold_in(rng, 0), extras)
        mem = extras[buffer]
        key = jax.random.fold_in(rng, 1)
        if weighting is None:
            filled = jnp.minimum(mem["seen"], mem["y"].shape[0])
            idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(filled, 1))
            some = filled > 0
        else:
            if "last_step" not in mem:
                raise ValueError(f"loss 'replay_classification': weighting={weighting!r} needs "
                                 "the in-step memory (its task clock); the task-end memory "
                                 "replays uniformly (weighting=None).")
            p = slot_probabilities(mem, weighting, alpha=alpha, tau=tau, task=task)
            some = p.sum() > 0
            logits = jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)
            idx = jax.random.categorical(key, jnp.where(some, logits, 0.0), shape=(batch_size,))
        replayed = {k: mem[k][idx] for k in ("x", "y", "task") if k in mem}
        replayed["mask"] = jnp.full((batch_size,), some, jnp.float32)
        r_value, _ = base_fn(params, replayed, jax.random.fold_in(rng, 2), extras)
        return value + weight * r_value, {**aux, "replay_loss": r_value}

    loss.base = base_fn
    return loss


REPLAY_LOSS = "alternating.continual.replay:replay_classification"


def add_replay(config: Any, *, size: int, mode: str = "reservoir", weighting: str | None = None,
               alpha: float = 1.0, tau: float | None = None, batch_size: int = 32,
               weight: float = 1.0, budget_bytes: int = MEMORY_BUDGET_BYTES,
               buffer: str = "replay") -> Any:
    """Adds the in-step memory and its replay loss to a task-stream config, in place.

    Each task phase (the ``sequential`` schedule's stages, in order) gets the
    loss :func:`replay_classification` around its own loss (kept as
    ``base``, with its kwargs; an ``ewc_classification`` phase gets it as its
    base, so EWC and replay combine) and the update ``replay_fill``; the
    memory is declared in ``config.extras``. ``tau`` defaults to the first
    task's steps. Returns the config.

    Raises:
      ValueError: an unknown mode or weighting, or a memory over
        ``budget_bytes`` (naming ``replay.size``), before anything is built.
    """
    if mode not in MODES:
        raise ValueError(f"replay.mode={mode!r}; valid modes: {list(MODES)}.")
    if weighting is not None and weighting not in WEIGHTINGS:
        raise ValueError(f"replay.weighting={weighting!r}; valid weightings: {list(WEIGHTINGS)} "
                         "(or None: uniform over the memory).")
    x_shape = [int(d) for d in config.model["input_shape"]]
    check_memory(size, x_shape, "float32", budget_bytes)
    stages = [s[0] for s in config.schedule["stages"]]
    tau = float(tau if tau is not None else config.schedule["stages"][0][1])
    classes = int(config.model["features"][-1]) if mode == "class_balanced" else 0
    extras = dict(config.extras or {})
    extras[buffer] = {"kind": "init", "init": "alternating.continual.replay:init_memory",
                      "kwargs": {"size": int(size), "x_shape": x_shape, "num_tasks": len(stages),
                                 "num_classes": classes, "budget_bytes": int(budget_bytes)}}
    replay_kw = dict(batch_size=int(batch_size), weight=float(weight), buffer=buffer,
                     weighting=weighting, alpha=float(alpha), tau=tau)
    phases = {}
    for name, spec in config.phases.items():
        spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
        t = stages.index(name)
        kw = dict(spec.get("loss_kwargs") or {})
        if str(spec["loss"]).endswith("ewc_classification"):
            inner = {k: kw.pop(k) for k in list(kw) if k not in ("lam", "anchor", "fisher")}
            spec_ = {"loss": inner.pop("base", "classification"), "kwargs": inner}
            kw.update(base=REPLAY_LOSS, **replay_kw, task=t, base_spec=spec_)
        else:
            kw = dict(base=spec["loss"], **replay_kw, task=t, **kw)
            spec["loss"] = REPLAY_LOSS
        spec["loss_kwargs"] = kw
        spec["updates"] = list(spec.get("updates") or []) + [
            {"extra": buffer, "rule": "replay_fill", "kwargs": {"task": t, "mode": mode}}]
        phases[name] = spec
    config.phases, config.extras = phases, extras
    return config


registry.HOOKS.register("replay_memory", ReplayMemory)

"""Distillation from a task-boundary snapshot: prediction (LwF) and feature distillation.

Two kinds of pieces, like :mod:`.regularizers`:

* :class:`TaskSnapshot`, a hook (registered ``task_snapshot``) that runs at
  the end of each task's phase and writes one extra it declares itself
  (``hook.extras``; kind ``init`` through :func:`init_snapshot`), so it lives
  in the ``TrainState`` and is checkpointed and resumed with it::

      extras['snapshot'] = {'params': the parameters at the last task end,
                            'seen':   [num_classes] float32, 1 for every class
                                      of the tasks ended so far,
                            'tasks':  int32, the number of task ends so far}

  A task's classes are read from its data spec's ``class_subset`` transform
  (``make_tasks`` puts one on every class- and task-incremental task); a
  task without one (domain-incremental) holds every class.

* Losses that read it, each the base loss plus ``lam`` times a penalty that
  is exactly 0 while ``tasks == 0`` (before the first task ends):

  - :func:`lwf_classification` (Learning without Forgetting, Li & Hoiem,
    ECCV 2016 / TPAMI 2017): ``T**2 * KL(softmax(old / T) || softmax(new /
    T))`` on the current batch, ``old`` the snapshot's logits. Which logits:
    with a plain (class- or domain-incremental) base loss, ``softmax``
    chooses: ``'old'`` (the default), both softmaxes over the classes of the
    finished tasks (``seen``), so a new task's own classes are left to the
    base loss and their logits are free; ``'active'``, the current model's
    softmax over every class its base loss scores (the active classes of
    :func:`~alternating.continual.losses.active_classification`, else every
    output) against the old model's softmax over the finished tasks'
    classes with probability 0 on the others, as in van de Ven & Tolias'
    class-incremental LwF ("Three scenarios for continual learning",
    arXiv:1904.07734): the penalty also pulls the new classes' probability
    down on the new task's inputs, which keeps the new classes from taking
    every prediction (docs/continual.md, "Why LwF ..."). With the task-masked base loss (``classes`` given: task-incremental),
    one softmax per finished task over that task's classes (its "head"),
    the KL averaged over the finished tasks.
  - :func:`feature_distill_classification`: the squared L2 distance between
    the current and the snapshot's penultimate features (the input of the
    model's last ``Dense`` layer, :func:`penultimate`), summed over feature
    dimensions and averaged over the batch's real examples.

  Both put the snapshot under ``stop_gradient``; their aux adds ``distill``
  (the penalty), ``accuracy`` stays the base loss's.

Configs name them by path (``alternating.continual.distill:TaskSnapshot``,
``...:lwf_classification``, ``...:feature_distill_classification``);
importing this module registers the short names.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alternating import losses, registry
from alternating.continual.losses import class_table
from alternating.continual.regularizers import task_specs

# Logits outside a softmax group: far below any real logit but finite (no inf - inf).
_MASKED = -1e9
# lwf_classification's choices of the softmaxes with a plain base loss (see the module).
SOFTMAXES = ("old", "active")
WEIGHTINGS = ("lam", "tasks")


def init_snapshot(params: Any, rng: Any, *, num_classes: int) -> dict[str, Any]:
    """The snapshot extra before any task ended (``extras`` kind ``init``)."""
    del rng
    return {"params": jax.tree.map(jnp.copy, params),
            "seen": jnp.zeros((int(num_classes),), jnp.float32),
            "tasks": jnp.zeros((), jnp.int32)}


def penultimate(model: Any, params: Any, x: jax.Array, **apply_kwargs) -> jax.Array:
    """The input of the last ``nn.Dense`` the model calls: its penultimate features.

    The model's module is applied under ``flax.linen.intercept_methods``, so
    no model file needs a features method; for the library's MLP (and the
    CNNs' classifier head) this is the last hidden layer after its ReLU.

    Raises:
      ValueError: the model calls no ``Dense`` layer.
    """
    seen: list[jax.Array] = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.Dense) and context.method_name == "__call__":
            seen.append(args[0])
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(params, x, **apply_kwargs)
    if not seen:
        raise ValueError(f"penultimate features: the model {type(model.module).__name__} calls "
                         "no flax.linen.Dense layer; feature distillation and the class-mean "
                         "heads read the input of the last Dense layer.")
    return seen[-1]


def spec_classes(spec: dict[str, Any]) -> list[int] | None:
    """The classes of a task's data spec (its last ``class_subset``), or None (all)."""
    found = None
    for t in spec.get("transforms") or ():
        t = dict(t) if not isinstance(t, str) else {"name": t}
        if t.get("name") == "class_subset":
            found = [int(c) for c in t.get("classes") or ()]
    return found


class TaskSnapshot:
    """Hook: at each task's end, the parameters and the classes seen so far (see the module).

    Args:
      tasks: ``{phase: training data spec}`` (``TaskStream.data()``) or a list
        of ``{name|phase, data}``; the hook runs at the end of these phases.
      num_classes: the model's number of outputs.
      snapshot: the extra's name.
    """

    name = "task_snapshot"

    def __init__(self, tasks: Any, num_classes: int, snapshot: str = "snapshot"):
        self.tasks = task_specs(tasks, "TaskSnapshot")
        if int(num_classes) < 1:
            raise ValueError(f"TaskSnapshot: num_classes={num_classes}; it must be >= 1.")
        self.num_classes, self.snapshot = int(num_classes), str(snapshot)
        self.rows = {}
        for phase, spec in self.tasks.items():
            classes = spec_classes(spec)
            row = np.ones(self.num_classes, np.float32)
            if classes is not None:
                bad = [c for c in classes if c >= self.num_classes]
                if bad:
                    raise ValueError(f"TaskSnapshot: task {phase!r} has classes {bad}, but "
                                     f"num_classes={self.num_classes}; give the model's "
                                     "number of outputs.")
                row = np.zeros(self.num_classes, np.float32)
                row[classes] = 1.0
            self.rows[phase] = row
        self.when = {"phase_end": list(self.tasks)}
        self.extras = {self.snapshot: {"kind": "init",
                                       "init": "alternating.continual.distill:init_snapshot",
                                       "kwargs": {"num_classes": self.num_classes}}}

    def __call__(self, state: Any, event: Any, ctx: Any) -> Any:
        dry = getattr(ctx, "dry_run", False)
        if not dry and event.ended not in self.tasks:
            return None
        row = np.zeros(self.num_classes, np.float32) if dry else self.rows[event.ended]
        old = state.extras[self.snapshot]
        new = {"params": jax.tree.map(lambda a, p: jnp.array(p, a.dtype, copy=True),
                                      old["params"], state.params),
               "seen": jnp.maximum(old["seen"], jnp.asarray(row)).astype(old["seen"].dtype),
               "tasks": (old["tasks"] + 1).astype(old["tasks"].dtype)}
        return state.replace(extras={**state.extras, self.snapshot: new})


def _snapshot(extras: Any, name: str, loss: str) -> Any:
    if name not in extras:
        raise ValueError(f"loss {loss!r}: extras has no {name!r} (it has {sorted(extras)}); add "
                         "the TaskSnapshot hook, which declares it.")
    return extras[name]


def _check(lam: float, temperature: float, loss: str) -> None:
    if not lam >= 0.0:
        raise ValueError(f"loss {loss!r}: lam={lam}; it must be >= 0.")
    if not temperature > 0.0:
        raise ValueError(f"loss {loss!r}: temperature={temperature}; it must be > 0.")


def kl_on_groups(new: jax.Array, old: jax.Array, groups: jax.Array,
                 temperature: float) -> jax.Array:
    """Per example, the mean over active groups of ``T**2 KL(p_old || p_new)`` on each group.

    ``groups``: ``[G, C]`` 0/1; each row a set of classes with its own
    softmax (rows that are all 0 are inactive). Returns ``[batch]``; 0 where
    no group is active.
    """
    g = groups.astype(bool)[None]                              # [1, G, C]
    t = jnp.float32(temperature)
    new = jnp.where(g, new.astype(jnp.float32)[:, None] / t, _MASKED)  # [B, G, C]
    old = jnp.where(g, old.astype(jnp.float32)[:, None] / t, _MASKED)
    log_q = jax.nn.log_softmax(new, -1)
    log_p = jax.nn.log_softmax(old, -1)
    kl = jnp.where(g, jnp.exp(log_p) * (log_p - log_q), 0.0).sum(-1)  # [B, G]
    active = groups.astype(bool).any(-1).astype(jnp.float32)    # [G]
    return t * t * (kl * active).sum(-1) / jnp.maximum(active.sum(), 1.0)


def kl_zero_padded(new: jax.Array, old: jax.Array, old_classes: jax.Array,
                   student_classes: jax.Array, temperature: float) -> jax.Array:
    """Per example, ``T**2 KL(p || q)``: ``p`` the softmax of ``old / T`` over
    ``old_classes`` (0 elsewhere), ``q`` that of ``new / T`` over ``student_classes``
    and ``old_classes``. Both ``[C]`` 0/1; returns ``[batch]``.
    """
    t = jnp.float32(temperature)
    o = old_classes.astype(bool)[None]
    s = o | student_classes.astype(bool)[None]
    log_q = jax.nn.log_softmax(jnp.where(s, new.astype(jnp.float32) / t, _MASKED), -1)
    log_p = jax.nn.log_softmax(jnp.where(o, old.astype(jnp.float32) / t, _MASKED), -1)
    return t * t * jnp.where(o, jnp.exp(log_p) * (log_p - log_q), 0.0).sum(-1)


@losses.register_loss("lwf_classification")
def lwf_classification(model: Any, *, lam: float = 1.0, temperature: float = 2.0,
                       softmax: str = "old", weighting: str = "lam", base: Any = "classification",
                       snapshot: str = "snapshot", **base_kwargs) -> losses.LossFn:
    """The base loss plus ``lam * T**2 * KL(old || new)`` on the old classes; aux adds ``distill``.

    With ``weighting='tasks'`` the loss is ``base / t + lam * (1 - 1/t) * penalty``
    instead, ``t`` the current task's number (1 + the finished tasks): van de
    Ven & Tolias' weighting of the current and the distilled term (1/t each
    task's share), with ``lam`` 1 theirs.

    Args:
      model: the config's model.
      lam: the distillation term's weight (>= 0).
      temperature: ``T`` (> 0) of both softmaxes.
      softmax: with a plain base loss, ``'old'`` (both softmaxes over the
        finished tasks' classes) or ``'active'`` (the current model's over
        every class the base scores, the old model's padded with zeros); see
        the module.
      weighting: ``'lam'`` (``base + lam * penalty``) or ``'tasks'`` (see above).
      base: the base loss (a name, ``module:function`` or callable), built
        with ``base_kwargs``; with ``classes`` in them (the task-masked loss)
        the KL is taken per finished task (see the module).
      snapshot: the extra :class:`TaskSnapshot` writes.
    """
    lam, temperature = float(lam), float(temperature)
    _check(lam, temperature, "lwf_classification")
    if softmax not in SOFTMAXES:
        raise ValueError(f"loss 'lwf_classification': softmax={softmax!r}; valid choices: "
                         f"{list(SOFTMAXES)}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss 'lwf_classification': weighting={weighting!r}; valid choices: "
                         f"{list(WEIGHTINGS)}.")
    base_fn = losses.resolve_loss(base, model, base_kwargs, where="loss 'lwf_classification' base")
    table = (jnp.asarray(class_table(base_kwargs["classes"], "loss 'lwf_classification'"),
                         jnp.float32) if "classes" in base_kwargs else None)
    if softmax == "active" and table is not None:
        raise ValueError("loss 'lwf_classification': softmax='active' is for a plain base loss; "
                         "the task-masked base (classes given) distils one softmax per "
                         "finished task: give softmax='old'.")
    student = getattr(base_fn, "active", None)
    x_key = base_kwargs.get("x", "x")

    def loss(params, batch, rng, extras):
        snap = _snapshot(extras, snapshot, "lwf_classification")
        value, aux = base_fn(params, batch, rng, extras)
        new = model.apply(params, batch[x_key])
        old = model.apply(jax.lax.stop_gradient(snap["params"]), batch[x_key])
        seen = snap["seen"][:new.shape[-1]]
        seen = jnp.pad(seen, (0, new.shape[-1] - seen.shape[0]))
        if table is None and softmax == "active":
            classes = (jnp.ones_like(seen) if student is None else jnp.pad(
                jnp.asarray(student, jnp.float32), (0, seen.shape[0] - len(student))))
            kl = kl_zero_padded(new, jax.lax.stop_gradient(old), seen, classes, temperature)
        elif table is None:
            kl = kl_on_groups(new, jax.lax.stop_gradient(old), seen[None], temperature)
        else:
            t = jnp.pad(table, ((0, 0), (0, new.shape[-1] - table.shape[1])))
            finished = ((t * seen).sum(-1) == t.sum(-1)).astype(jnp.float32)
            kl = kl_on_groups(new, jax.lax.stop_gradient(old), t * finished[:, None],
                              temperature)
        pen = jnp.where(snap["tasks"] > 0, losses.masked_mean(kl, batch), 0.0)
        if weighting == "tasks":
            share = 1.0 / (snap["tasks"] + 1).astype(jnp.float32)
            return share * value + lam * (1.0 - share) * pen, {**aux, "distill": pen}
        return value + lam * pen, {**aux, "distill": pen}

    loss.base = base_fn
    return loss


@losses.register_loss("feature_distill_classification")
def feature_distill_classification(model: Any, *, lam: float = 1.0,
                                   base: Any = "classification", snapshot: str = "snapshot",
                                   **base_kwargs) -> losses.LossFn:
    """The base loss plus ``lam * ||f(x) - f_old(x)||^2`` (penultimate features); aux: ``distill``.

    Args:
      model: the config's model (it must call a ``Dense`` layer last).
      lam: the penalty's weight (>= 0).
      base: the base loss, built with ``base_kwargs``.
      snapshot: the extra :class:`TaskSnapshot` writes.
    """
    lam = float(lam)
    _check(lam, 1.0, "feature_distill_classification")
    base_fn = losses.resolve_loss(base, model, base_kwargs,
                                  where="loss 'feature_distill_classification' base")
    x_key = base_kwargs.get("x", "x")

    def loss(params, batch, rng, extras):
        snap = _snapshot(extras, snapshot, "feature_distill_classification")
        value, aux = base_fn(params, batch, rng, extras)
        f_new = penultimate(model, params, batch[x_key]).astype(jnp.float32)
        f_old = penultimate(model, jax.lax.stop_gradient(snap["params"]), batch[x_key])
        dist = ((f_new - f_old.astype(jnp.float32)) ** 2).reshape(f_new.shape[0], -1).sum(-1)
        pen = jnp.where(snap["tasks"] > 0, losses.masked_mean(dist, batch), 0.0)
        return value + lam * pen, {**aux, "distill": pen}

    loss.base = base_fn
    return loss


registry.HOOKS.register("task_snapshot", TaskSnapshot)

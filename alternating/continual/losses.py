"""Losses of continual-learning scenarios.

``task_masked_classification`` is the task-incremental loss: each example
carries its task id (``batch['task']``, added by the ``task_id`` transform of
:mod:`alternating.data.tasks`), and the softmax runs over that task's classes
only, so the model is told which task an example comes from. Labels stay
global (a task's classes keep their ids), so one output layer serves every
task.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
import optax

from alternating import losses

# Logits of classes outside an example's task: far below any real logit, but
# finite, so no inf - inf appears in the softmax or its gradient.
_MASKED = -1e9


def class_table(classes: Sequence[Sequence[int]], where: str) -> np.ndarray:
    """``[num_tasks, max class + 1]`` booleans: which classes each task has.

    Raises:
      ValueError: an empty task, or a class that is not an integer >= 0.
    """
    if not isinstance(classes, (list, tuple)) or not classes:
        raise ValueError(f"{where}: classes must be a non-empty list of per-task class lists, "
                         f"got {classes!r}.")
    groups = []
    for t, group in enumerate(classes):
        if not isinstance(group, (list, tuple)) or not group:
            raise ValueError(f"{where}: classes[{t}] must be a non-empty list of class ids, "
                             f"got {group!r}.")
        for c in group:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                raise ValueError(f"{where}: classes[{t}] contains {c!r}; class ids are "
                                 "integers >= 0.")
        groups.append([int(c) for c in group])
    table = np.zeros((len(groups), max(max(g) for g in groups) + 1), bool)
    for t, group in enumerate(groups):
        table[t, group] = True
    return table


@losses.register_loss("task_masked_classification")
def task_masked_classification(model: Any, *, classes: Sequence[Sequence[int]], x: str = "x",
                               y: str = "y", task: str = "task", **apply_kwargs) -> losses.LossFn:
    """Softmax cross-entropy over the example's task's classes; aux: ``accuracy``.

    Args:
      model: a :class:`~alternating.models.Model` whose output has at least
        ``max class + 1`` logits.
      classes: ``classes[t]``: the global class ids of task ``t``.
      x, y, task: batch keys of the inputs, the global labels and the task ids.
      **apply_kwargs: passed to ``model.apply``.

    Raises:
      ValueError: malformed ``classes`` (when built); a model with fewer
        outputs than the largest class id (when traced, before compiling).
    """
    table = class_table(classes, "loss 'task_masked_classification'")

    def loss(params, batch, rng, extras):
        del rng, extras
        logits = model.apply(params, batch[x], **apply_kwargs)
        n = logits.shape[-1]
        if n < table.shape[1]:
            raise ValueError(f"loss 'task_masked_classification': the model has {n} outputs, but "
                             f"the tasks use class ids up to {table.shape[1] - 1}; give the model "
                             f"at least {table.shape[1]} outputs.")
        allowed = jnp.asarray(np.pad(table, ((0, 0), (0, n - table.shape[1]))))[batch[task]]
        return _allowed_ce(logits, allowed, batch[y], batch)
    return loss


def _allowed_ce(logits, allowed, labels, batch):
    """Cross-entropy and accuracy with the logits outside ``allowed`` left out."""
    masked = jnp.where(allowed, logits, _MASKED)
    ce = optax.softmax_cross_entropy_with_integer_labels(masked, labels)
    acc = (jnp.argmax(masked, -1) == labels).astype(jnp.float32)
    return losses.masked_mean(ce, batch), {"accuracy": losses.masked_mean(acc, batch)}


@losses.register_loss("active_classification")
def active_classification(model: Any, *, active: Sequence[int], x: str = "x", y: str = "y",
                          **apply_kwargs) -> losses.LossFn:
    """Softmax cross-entropy over the ``active`` classes only; aux: ``accuracy`` over every output.

    The class-incremental "expanding head" of van de Ven & Tolias ("Three
    scenarios for continual learning", arXiv:1904.07734): each task's phase
    scores the classes of every task seen so far (its own included); logits
    of classes not yet seen are left out of the softmax, so they are neither
    trained. Labels stay global. The ``accuracy`` is the argmax over every
    output, so an accuracy matrix that scores an old task with that task's
    phase loss still scores it against all classes, as class-incremental
    testing does (scoring it over its own phase's active classes would hand
    the model the task).

    Args:
      model: a :class:`~alternating.models.Model`.
      active: the class ids in the softmax (non-empty, integers >= 0).
      x, y: batch keys of the inputs and integer labels.
      **apply_kwargs: passed to ``model.apply``.

    Raises:
      ValueError: empty or malformed ``active`` (when built); a model with
        fewer outputs than the largest active class (when traced).
    """
    row = class_table([list(active)], "loss 'active_classification' (active)")[0]

    def loss(params, batch, rng, extras):
        del rng, extras
        logits = model.apply(params, batch[x], **apply_kwargs)
        n = logits.shape[-1]
        if n < row.shape[0]:
            raise ValueError(f"loss 'active_classification': the model has {n} outputs, but "
                             f"active names class {row.shape[0] - 1}; give the model at least "
                             f"{row.shape[0]} outputs.")
        value, _ = _allowed_ce(logits, jnp.asarray(np.pad(row, (0, n - row.shape[0]))),
                               batch[y], batch)
        acc = (jnp.argmax(logits, -1) == batch[y]).astype(jnp.float32)
        return value, {"accuracy": losses.masked_mean(acc, batch)}
    loss.active = row
    return loss

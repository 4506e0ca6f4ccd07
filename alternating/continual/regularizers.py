"""Regularization methods of continual learning: EWC and L2 to the previous task.

Two pieces, both ordinary library components:

* :class:`TaskAnchor`, a hook (registered ``task_anchor``) that runs at the
  end of each task's phase (``when={'phase_end': [its tasks]}``) and writes
  two extras it declares itself (``hook.extras``), so they live in the
  ``TrainState`` and are checkpointed and resumed with it:

  - ``extras['anchor']``: the parameters at the end of the task just trained;
  - ``extras['fisher']``: the importance of each parameter. ``mode='ewc'``:
    the diagonal empirical Fisher of the finished task,
    ``F = mean over its training examples of (d log p(y|x) / d theta)^2``
    (one deterministic pass of the task's training data through
    ``ctx.batches``; padded examples masked out; one ``ctx.jit``-ed function,
    compiled once), accumulated as ``fisher = gamma * fisher + F``: ``gamma=1``
    sums the tasks' Fishers (the single-penalty approximation of EWC, Kirkpatrick
    et al. 2017, as in Huszár 2018), ``gamma < 1`` is online EWC (Schwarz et
    al., "Progress & Compress", 2018). ``mode='l2'``: ones, i.e. an L2
    pull towards the previous task's parameters.

  The hook also runs after the last task (the run's last phase end); the
  values it writes then are in the final state but no step reads them.
  ``log p(y|x)`` is the phase's own loss on one example (its base loss when
  the phase trains with :func:`ewc_classification`), so the task-incremental
  Fisher uses the task-masked softmax.

* :func:`ewc_classification`, a loss factory (registered
  ``ewc_classification``): a base loss (``classification`` by default, or any
  loss name with its keyword arguments, e.g. the task-masked one) plus
  ``lam / 2 * sum(fisher * (params - anchor) ** 2)``. Before the first task
  ends the Fisher is zero, so the penalty is zero (in both modes). Its aux
  adds ``penalty``; ``accuracy`` stays the base loss's.

Configs name them by path (``alternating.continual.regularizers:TaskAnchor``,
``...:ewc_classification``); importing :mod:`alternating.continual` also
registers the short names.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alternating import losses, parallel, registry

MODES = ("ewc", "l2")


def task_specs(tasks: Any, where: str) -> dict[str, dict[str, Any]]:
    """``{phase: training data spec}`` from a mapping or a list of ``{name|phase, data}``."""
    if hasattr(tasks, "to_dict"):
        tasks = tasks.to_dict()
    if isinstance(tasks, Mapping):
        out = {str(k): dict(v.to_dict() if hasattr(v, "to_dict") else v)
               for k, v in tasks.items()}
    elif isinstance(tasks, (list, tuple)):
        out = {}
        for i, t in enumerate(tasks):
            t = dict(t.to_dict() if hasattr(t, "to_dict") else t)
            if "data" not in t:
                raise ValueError(f"{where}: tasks[{i}] needs 'data' (and 'phase' or 'name').")
            out[str(t.get("phase") or t.get("name"))] = dict(t["data"])
    else:
        raise ValueError(f"{where}: tasks must map phase names to training data specs "
                         f"(TaskStream.data()), got {type(tasks).__name__}.")
    if not out:
        raise ValueError(f"{where}: tasks is empty; give {{phase: training data spec}}.")
    return out


def base_loss(loss_fn: Any) -> Any:
    """The loss a wrapper (EWC, replay) was built on, or the loss itself."""
    while getattr(loss_fn, "base", None) is not None:
        loss_fn = loss_fn.base
    return loss_fn


def diagonal_fisher(loss_fn: Any, params: Any, extras: Any, batches: Sequence[Any]) -> Any:
    """Mean over real examples of the squared per-example gradient of ``loss_fn``.

    ``loss_fn(params, batch, rng, extras)`` on a batch of one is ``-log p(y|x)``
    for a classification loss. Unjitted reference; the hook jits the per-batch sum.
    """
    sums = jax.tree.map(jnp.zeros_like, params)
    count = 0.0
    fn = _fisher_sum(loss_fn)
    for batch in batches:
        s, n = fn(params, extras, batch)
        sums = jax.tree.map(jnp.add, sums, s)
        count = count + n
        parallel.bound_queue(sums)
    return jax.tree.map(lambda s: s / jnp.maximum(count, 1.0), sums)


def _fisher_sum(loss_fn: Any) -> Any:
    """``(params, extras, batch) -> (sum over real examples of grad^2, count)``."""
    rng = jax.random.PRNGKey(0)

    def run(params, extras, batch):
        mask = batch["mask"]
        examples = {k: v for k, v in batch.items() if k != "mask"}

        def one(example):
            one_batch = jax.tree.map(lambda v: v[None], example)
            return jax.grad(lambda p: loss_fn(p, one_batch, rng, extras)[0])(params)

        grads = jax.vmap(one)(examples)
        sq = jax.tree.map(
            lambda g: jnp.einsum("b,b...->...", mask.astype(g.dtype), g.astype(jnp.float32) ** 2)
            .astype(g.dtype), grads)
        return sq, mask.sum()

    return run


class TaskAnchor:
    """Hook: at each task's end, the anchor parameters and their importance (see the module).

    Args:
      tasks: ``{phase: training data spec}`` (``TaskStream.data()``), or a list
        of ``{name|phase, data}``; the hook runs at the end of these phases.
      mode: ``ewc`` (diagonal empirical Fisher) or ``l2`` (importance 1).
      gamma: online-EWC decay of the earlier tasks' Fisher (1: their sum).
      batch_size: batch size of the Fisher pass.
      anchor, fisher: the extras' names.
    """

    name = "task_anchor"

    def __init__(self, tasks: Any, mode: str = "ewc", gamma: float = 1.0,
                 batch_size: int = 256, anchor: str = "anchor", fisher: str = "fisher"):
        self.tasks = task_specs(tasks, "TaskAnchor")
        if mode not in MODES:
            raise ValueError(f"TaskAnchor: mode={mode!r}; valid modes: {list(MODES)}.")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"TaskAnchor: gamma={gamma}; it must be in [0, 1].")
        self.mode, self.gamma, self.batch_size = mode, float(gamma), int(batch_size)
        self.anchor, self.fisher = str(anchor), str(fisher)
        self.when = {"phase_end": list(self.tasks)}
        self.extras = {self.anchor: {"kind": "copy"}, self.fisher: {"kind": "zeros"}}
        self._fn: Any = None
        self._branch: dict[str, int] = {}

    def _build(self, ctx: Any) -> None:
        """One jitted Fisher pass for every task: a ``lax.switch`` over the tasks' losses."""
        by_name = {p.name: p for p in ctx.phases}
        missing = sorted(set(self.tasks) - set(by_name))
        if missing:
            raise ValueError(f"hook {self.name!r}: tasks {missing} are not phases; the phases "
                             f"are {sorted(by_name)}.")
        fns: list[Any] = []
        for phase in self.tasks:
            loss_fn = base_loss(by_name[phase].loss_fn)
            if loss_fn not in fns:
                fns.append(loss_fn)
            self._branch[phase] = fns.index(loss_fn)
        branches = [_fisher_sum(f) for f in fns]

        def fn(branch, params, extras, batch):
            return jax.lax.switch(branch, branches, params, extras, batch)

        self._fn = ctx.jit(fn, f"hook:{self.name}")

    def importance(self, state: Any, phase: str, ctx: Any) -> Any:
        """This task's importance of each parameter: its Fisher, or ones (``l2``)."""
        if self.mode == "l2":
            return jax.tree.map(jnp.ones_like, state.params)
        if self._fn is None:
            self._build(ctx)
        sums, count = None, None
        for batch in ctx.batches(self.tasks[phase], self.batch_size):
            s, n = self._fn(np.int32(self._branch[phase]), state.params, state.extras, batch)
            sums = s if sums is None else jax.tree.map(jnp.add, sums, s)
            count = n if count is None else count + n
            parallel.bound_queue(sums)
        return jax.tree.map(lambda s: s / jnp.maximum(count, 1.0), sums)

    def __call__(self, state: Any, event: Any, ctx: Any) -> Any:
        if getattr(ctx, "dry_run", False):
            # The structure check (abstract arrays): ctx.batches, called under its
            # eval_shape, would cache traced batches, so no data is read here.
            new = jax.tree.map(jnp.zeros_like, state.params)
        elif event.ended not in self.tasks:
            return None
        else:
            new = self.importance(state, event.ended, ctx)
        old = state.extras[self.fisher]
        if self.mode == "l2":
            fisher = jax.tree.map(lambda o, n: n.astype(o.dtype), old, new)
        else:
            fisher = jax.tree.map(lambda o, n: (self.gamma * o + n).astype(o.dtype), old, new)
        anchor = jax.tree.map(lambda a, p: jnp.array(p, a.dtype, copy=True),
                              state.extras[self.anchor], state.params)
        return state.replace(extras={**state.extras, self.anchor: anchor, self.fisher: fisher})


def penalty(params: Any, anchor: Any, fisher: Any) -> jax.Array:
    """``sum(fisher * (params - anchor) ** 2)`` over every leaf (float32)."""
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f.astype(jnp.float32) * (
        p.astype(jnp.float32) - jax.lax.stop_gradient(a).astype(jnp.float32)) ** 2),
        params, anchor, fisher)
    return sum(jax.tree.leaves(terms), jnp.zeros((), jnp.float32))


@losses.register_loss("ewc_classification")
def ewc_classification(model: Any, *, lam: float = 1.0, base: Any = "classification",
                       anchor: str = "anchor", fisher: str = "fisher",
                       **base_kwargs) -> losses.LossFn:
    """The base loss plus ``lam / 2 * sum(fisher * (params - anchor) ** 2)``; aux adds ``penalty``.

    Args:
      model: the config's model.
      lam: the penalty's weight.
      base: the base loss (a name, ``module:function`` or callable), built with
        ``base_kwargs`` (e.g. ``classes`` for the task-masked loss).
      anchor, fisher: the extras :class:`TaskAnchor` writes.
    """
    base_fn = losses.resolve_loss(base, model, base_kwargs, where="loss 'ewc_classification' base")
    lam = float(lam)

    def loss(params, batch, rng, extras):
        for name in (anchor, fisher):
            if name not in extras:
                raise ValueError(f"loss 'ewc_classification': extras has no {name!r} (it has "
                                 f"{sorted(extras)}); add the TaskAnchor hook, which declares it.")
        value, aux = base_fn(params, batch, rng, extras)
        pen = penalty(params, extras[anchor], extras[fisher])
        return value + 0.5 * lam * pen, {**aux, "penalty": pen}

    loss.base = base_fn
    return loss


registry.HOOKS.register("task_anchor", TaskAnchor)

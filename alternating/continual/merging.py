r"""Model merging: weight averaging, task arithmetic and AdaMerging.

With :math:`\theta_0` a start (pre-trained) and :math:`\theta_t` the parameters
fine-tuned on task :math:`t`, the task vector is :math:`\tau_t = \theta_t -
\theta_0` and every method here returns

.. math:: \theta = \theta_0 + \sum_t \lambda_{t,g(\ell)} \tau_{t,\ell}

for each parameter leaf :math:`\ell` with group :math:`g(\ell)`:

* :func:`weight_average`: the mean of the :math:`\theta_t`
  (:math:`\lambda = 1/T`, one group);
* :func:`task_arithmetic` (Ilharco et al., "Editing Models with Task
  Arithmetic", ICLR 2023): one given :math:`\lambda` (or one per task);
* :func:`adamerging` (Yang et al., "AdaMerging: Adaptive Model Merging for
  Multi-Task Learning", ICLR 2024, arXiv:2310.02575): the coefficients are
  learned by minimizing the Shannon entropy of the merged model's predictions
  on unlabeled test batches of every task, with Adam; ``granularity='task'``
  learns one coefficient per task vector (task-wise AdaMerging),
  ``'layer'`` one per task vector and parameter tensor (layer-wise, as the
  authors' code does), ``'module'`` one per task vector and module (a
  layer's kernel and bias together). Coefficients start at ``init`` (0.3 in
  the paper) and are clipped to ``[0, 1]`` where the model is built.

Per-task parameters come from

* a run's own task ends: the hook :class:`TaskSnapshots` (registered
  ``task_snapshots``) writes each task's end parameters into the extra
  ``task_params`` (stacked, a leading task axis) and, with ``reset=True``,
  starts the next task from the start again, so every task is fine-tuned
  independently from the same start inside one run (the paper's setting);
  the start is the initial parameters, or those at the end of the phase
  ``base_phase`` (a pre-training phase), kept in the extra ``merge_base``;
* other runs' workdirs: :func:`load_params` restores each run's parameters
  with its own config's state as the target, after checking that every run's
  parameters have the same structure (:class:`MergeError` names the leaves
  that differ, before anything is restored or compiled).

:class:`MergeEvaluator` (registered ``merge``) merges the snapshots at the end
of a run with every listed method and writes each task's test accuracy of
each merged model (and of each task's own fine-tuned model, and of the start)
to ``results.json`` under ``merge``. See ``docs/continual.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from alternating import checkpoint as ckpt_lib
from alternating import partition, registry

GRANULARITIES = ("task", "layer", "module")
METHODS = ("average", "task_arithmetic", "adamerging")
BASE, SNAPSHOTS = "merge_base", "task_params"


class MergeError(ValueError):
    """Parameter trees that cannot be merged (different structures)."""


def check_same_structure(trees: Sequence[Any], names: Sequence[str] | None = None) -> None:
    """Raises :class:`MergeError` naming the leaves where a tree differs from the first.

    Compares leaf paths, shapes and dtypes (``checkpoint.structure_diff``).
    """
    names = list(names) if names is not None else [f"tree {i}" for i in range(len(trees))]
    problems = []
    for name, tree in zip(names[1:], trees[1:]):
        diff = ckpt_lib.structure_diff(tree, trees[0], limit=10)
        if diff:
            problems.append(f"{name} vs {names[0]} ('in the checkpoint' = {name}, 'this run' = "
                            f"{names[0]}):\n" + "\n".join(diff))
    if problems:
        raise MergeError("cannot merge parameters of different structures; every model must "
                         "have the same leaves, shapes and dtypes:\n" + "\n".join(problems))


def leaf_groups(params: Any, granularity: str) -> tuple[list[int], list[str]]:
    """``(group index of each leaf in tree order, group names)`` for a granularity.

    Raises:
      ValueError: an unknown granularity (naming the valid ones).
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r}; valid: {list(GRANULARITIES)}.")
    paths = list(partition.flatten(params))  # the same order as jax.tree.leaves
    if granularity == "task":
        keys = ["all"] * len(paths)
    elif granularity == "layer":
        keys = paths
    else:
        keys = [p.rsplit("/", 1)[0] if "/" in p else p for p in paths]
    names = list(dict.fromkeys(keys))
    return [names.index(k) for k in keys], names


def stack(trees: Sequence[Any]) -> Any:
    """The trees stacked on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any) -> list[Any]:
    n = jax.tree.leaves(tree)[0].shape[0]
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def task_vectors(base: Any, tuned: Any) -> Any:
    """``tuned - base`` leaf by leaf; ``tuned`` stacked (leading task axis)."""
    return jax.tree.map(lambda t, b: t - b[None], tuned, base)


def merge(base: Any, vectors: Any, coefficients: jax.Array, groups: Sequence[int]) -> Any:
    """``base + sum_t coefficients[t, groups[leaf]] * vectors[t]`` (``vectors`` stacked)."""
    leaves, treedef = jax.tree.flatten(base)
    vecs = jax.tree.leaves(vectors)
    out = [b + jnp.tensordot(coefficients[:, g].astype(v.dtype), v, axes=1)
           for b, v, g in zip(leaves, vecs, groups)]
    return jax.tree.unflatten(treedef, out)


def task_arithmetic(base: Any, tuned: Sequence[Any] | Any, lam: Any = 0.3) -> Any:
    """``base + sum_t lam_t (tuned_t - base)``; ``lam`` one number or one per task.

    Raises:
      MergeError: a model whose structure differs from ``base`` (naming the leaves).
    """
    if isinstance(tuned, (list, tuple)):
        check_same_structure([base, *tuned], ["base"] + [f"tuned[{i}]" for i in range(len(tuned))])
        tuned = stack(tuned)
    num = jax.tree.leaves(tuned)[0].shape[0]
    lam = jnp.broadcast_to(jnp.asarray(lam, jnp.float32).reshape(-1), (num,))
    groups, _ = leaf_groups(base, "task")
    return merge(base, task_vectors(base, tuned), lam[:, None], groups)


def weight_average(trees: Sequence[Any] | Any) -> Any:
    """The mean of the trees (a list, or stacked on a leading axis).

    Raises:
      MergeError: trees of different structures (naming the leaves).
    """
    if isinstance(trees, (list, tuple)):
        check_same_structure(list(trees), [f"trees[{i}]" for i in range(len(trees))])
    stacked = stack(trees) if isinstance(trees, (list, tuple)) else trees
    return jax.tree.map(lambda x: jnp.mean(x, axis=0), stacked)


def entropy(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean Shannon entropy of ``softmax(logits)`` over the (unmasked) examples."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    h = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    if mask is None:
        return jnp.mean(h)
    m = mask.astype(jnp.float32)
    return jnp.sum(h * m) / jnp.maximum(jnp.sum(m), 1.0)


@dataclasses.dataclass
class AdaMergeResult:
    """What :func:`adamerging` learned."""

    params: Any  # the merged parameters
    coefficients: np.ndarray  # [tasks, groups], clipped to [0, 1]
    groups: list[str]  # the group names (parameter paths, modules, or 'all')
    entropy: np.ndarray  # the objective at each step (before its update)


def adamerging(logits_fn: Callable[[Any, jax.Array, int], jax.Array], base: Any,
               tuned: Sequence[Any] | Any, inputs: Sequence[Any], *,
               granularity: str = "layer", init: float = 0.3, steps: int = 500,
               lr: float = 1e-3, batch_size: int = 16, seed: int = 0) -> AdaMergeResult:
    """AdaMerging: merge coefficients learned by entropy minimization (see the module).

    Args:
      logits_fn: ``logits_fn(params, x, task) -> logits`` (``task``: the task's
        index, a Python int, e.g. to restrict a head to the task's classes).
      base: the start's parameters.
      tuned: each task's fine-tuned parameters (a list, or stacked).
      inputs: each task's unlabeled inputs (arrays, leading example axis).
      granularity: ``task``, ``layer`` (one per parameter tensor) or ``module``.
      init: the coefficients' initial value (0.3 in the paper).
      steps, lr, batch_size: Adam steps, learning rate, examples per task a
        step (the paper: 500, 1e-3, 16).
      seed: draws the mini-batches.

    Raises:
      ValueError: an unknown granularity, or a count of inputs that is not
        one per task.
    """
    tuned = stack(tuned) if isinstance(tuned, (list, tuple)) else tuned
    num = jax.tree.leaves(tuned)[0].shape[0]
    if len(inputs) != num:
        raise ValueError(f"adamerging: {len(inputs)} input sets for {num} task vectors; give "
                         "one set of unlabeled inputs per task.")
    check_same_structure([base, jax.tree.map(lambda x: x[0], tuned)], ["base", "tuned[0]"])
    groups, names = leaf_groups(base, granularity)
    vectors = task_vectors(base, tuned)
    xs = [jnp.asarray(x) for x in inputs]
    tx = optax.adam(lr)

    def objective(raw, key):
        params = merge(base, vectors, jnp.clip(raw, 0.0, 1.0), groups)
        total = jnp.zeros((), jnp.float32)
        for t, x in enumerate(xs):
            idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, x.shape[0])
            total = total + entropy(logits_fn(params, x[idx], t))
        return total

    @jax.jit
    def run(raw):
        def body(carry, i):
            raw, opt = carry
            value, grad = jax.value_and_grad(objective)(raw, jax.random.fold_in(
                jax.random.PRNGKey(seed), i))
            updates, opt = tx.update(grad, opt, raw)
            return (optax.apply_updates(raw, updates), opt), value

        (raw, _), values = jax.lax.scan(body, (raw, tx.init(raw)), jnp.arange(steps))
        return raw, values

    raw0 = jnp.full((num, len(names)), float(init), jnp.float32)
    raw, values = run(raw0)
    coeffs = jnp.clip(raw, 0.0, 1.0)
    return AdaMergeResult(merge(base, vectors, coeffs, groups), np.asarray(coeffs), names,
                          np.asarray(values))


# --- Per-task parameters from other runs. -----------------------------------------------


def load_params(workdirs: Sequence[str], step: int | None = None) -> list[Any]:
    """Each run's parameters, restored with a target; structures checked first.

    The structures are compared on the checkpoints' metadata (nothing restored
    or compiled yet); each state is then restored through
    :func:`alternating.experiment.load_state`, whose target is the state its
    saved config builds (never a target-less restore, which returns optax
    states and masked leaves as plain dicts).

    Raises:
      MergeError: the runs' parameters differ in structure (naming the leaves).
      CheckpointError: a workdir without a checkpoint at ``step``.
    """
    from alternating import experiment  # pylint: disable=g-import-not-at-top
    metas = []
    for w in workdirs:
        ck = ckpt_lib.Checkpointer(w, create=False, async_save=False, max_to_keep=None)
        try:
            steps = ck.all_steps()
            s = step if step is not None else (steps[-1] if steps else None)
            if s is None or s not in steps:
                raise ckpt_lib.CheckpointError(f"no checkpoint at step {s} in {w!r}; saved "
                                               f"steps: {steps}.")
            metas.append(ck.metadata(s)["params"])
        finally:
            ck.close()
    check_same_structure(metas, [str(w) for w in workdirs])
    return [experiment.load_state(w, step)[0].params for w in workdirs]


# --- In a run: task-end snapshots and the merge at the end. ------------------------------


def stacked_copies(params: Any, rng: Any, num: int) -> Any:
    """Extra ``init``: ``num`` copies of ``params`` on a leading axis."""
    del rng
    return jax.tree.map(lambda p: jnp.repeat(p[None], int(num), axis=0), params)


class TaskSnapshots:
    """Hook: each task's end parameters in ``extras[task_params][t]`` (see the module).

    Args:
      tasks: the task phases, in order (slot ``t`` is ``tasks[t]``).
      reset: start every task from the start again (independent fine-tuning).
      base_phase: a phase (e.g. pre-training) whose end parameters are the
        start; default: the initial parameters.
    """

    name = "task_snapshots"

    def __init__(self, tasks: Sequence[str], reset: bool = False, base_phase: str | None = None):
        self.tasks = [str(t) for t in (tasks.to_list() if hasattr(tasks, "to_list") else tasks)]
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"TaskSnapshots: tasks={self.tasks}; give distinct task phases.")
        if base_phase is not None and str(base_phase) in self.tasks:
            raise ValueError(f"TaskSnapshots: base_phase={base_phase!r} is one of the tasks.")
        self.reset, self.base_phase = bool(reset), base_phase
        self.when = {"phase_end": self.tasks + ([str(base_phase)] if base_phase else [])}
        self.extras = {BASE: {"kind": "copy"},
                       SNAPSHOTS: {"kind": "init", "init": f"{__name__}:stacked_copies",
                                   "kwargs": {"num": len(self.tasks)}}}

    def __call__(self, state: Any, event: Any, ctx: Any) -> Any:
        extras = dict(state.extras)
        params = state.params
        if getattr(ctx, "dry_run", False) or event.ended in self.tasks:
            t = self.tasks.index(event.ended) if event.ended in self.tasks else 0
            extras[SNAPSHOTS] = jax.tree.map(lambda s, p: s.at[t].set(p.astype(s.dtype)),
                                             extras[SNAPSHOTS], params)
            if self.reset:
                params = jax.tree.map(lambda b, p: jnp.array(b, p.dtype, copy=True),
                                      extras[BASE], params)
        elif event.ended == self.base_phase:
            extras[BASE] = jax.tree.map(lambda b, p: jnp.array(p, b.dtype, copy=True),
                                        extras[BASE], params)
        else:
            return None
        return state.replace(params=params, extras=extras)


def _method(spec: Any, i: int) -> dict[str, Any]:
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    where = f"MergeEvaluator methods[{i}]"
    if spec.get("name") not in METHODS:
        raise ValueError(f"{where}.name={spec.get('name')!r}; valid methods: {list(METHODS)}.")
    valid = {"average": {"name", "label"}, "task_arithmetic": {"name", "label", "lam"},
             "adamerging": {"name", "label", "granularity", "init", "steps", "lr",
                            "batch_size"}}[spec["name"]]
    unknown = sorted(set(spec) - valid)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys of {spec['name']!r}: "
                         f"{sorted(valid)}.")
    if spec["name"] == "adamerging":
        leaf_groups({}, spec.setdefault("granularity", "layer"))  # checks the value
    default = spec["name"] if spec["name"] != "adamerging" else f"adamerging_{spec['granularity']}"
    spec["label"] = str(spec.get("label") or default)
    return spec


class MergeEvaluator:
    """Evaluator: at the run's end, merge the task snapshots and test every merged model.

    Args:
      tasks: ``[{name, data}]`` (``TaskStream.matrix_tasks()`` fits): each
        task's test data, in the order of :class:`TaskSnapshots`' tasks.
      methods: ``[{name: average | task_arithmetic | adamerging, label, ...}]``
        (``lam`` for task arithmetic; ``granularity``, ``init``, ``steps``,
        ``lr``, ``batch_size`` for AdaMerging, whose unlabeled inputs are the
        tasks' test inputs, as in the paper).
      classes: per task, the classes its predictions are restricted to
        (task-incremental heads); default all.
      batch_size: evaluation batch size.
      seed: draws AdaMerging's mini-batches.
    """

    name = "merge"

    def __init__(self, tasks: Sequence[Any], methods: Sequence[Any] = (), batch_size: int = 128,
                 classes: Sequence[Sequence[int]] | None = None, seed: int = 0):
        self.tasks = [dict(t.to_dict() if hasattr(t, "to_dict") else t) for t in tasks]
        if not self.tasks or any("data" not in t for t in self.tasks):
            raise ValueError("MergeEvaluator: tasks must be a non-empty list of {name, data}.")
        self.methods = [_method(m, i) for i, m in enumerate(methods)]
        labels = [m["label"] for m in self.methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"MergeEvaluator: method labels {labels} repeat; give each a label.")
        if classes is not None and len(classes) != len(self.tasks):
            raise ValueError(f"MergeEvaluator: classes lists {len(classes)} tasks, tasks "
                             f"{len(self.tasks)}; give one class list per task.")
        self.classes, self.batch_size, self.seed = classes, int(batch_size), int(seed)
        self.when = {"end": True}
        self._data: dict[int, dict[str, Any]] = {}
        self._acc: Any = None

    def _mask(self, num_classes: int) -> np.ndarray:
        mask = np.ones((len(self.tasks), num_classes), bool)
        if self.classes is not None:
            mask[:] = False
            for t, cs in enumerate(self.classes):
                mask[t, list(cs)] = True
        return mask

    def _accuracy(self, params: Any, t: int, ctx: Any) -> float:
        total = count = 0.0
        for batch in ctx.batches(self.tasks[t]["data"], self.batch_size):
            s, n = self._acc(params, batch, np.int32(t))
            total, count = total + float(s), count + float(n)
        return total / max(count, 1.0)

    def __call__(self, state: Any, event: Any, ctx: Any) -> dict[str, dict[str, float]] | None:
        if getattr(ctx, "dry_run", False):
            return None
        base, tuned = state.extras[BASE], state.extras[SNAPSHOTS]
        first = ctx.batches(self.tasks[0]["data"], self.batch_size)[0]
        mask = jnp.asarray(self._mask(ctx.model.apply(base, first["x"][:1]).shape[-1]))

        def logits_fn(params, x, t):
            return jnp.where(mask[t], ctx.model.apply(params, x), -1e9)

        if self._acc is None:
            def acc(params, batch, t):
                hit = jnp.argmax(logits_fn(params, batch["x"], t), -1) == batch["y"]
                m = batch["mask"].astype(jnp.float32)
                return jnp.sum(hit * m), jnp.sum(m)
            self._acc = ctx.jit(acc, f"eval:{self.name}")
        num = len(self.tasks)
        out: dict[str, Any] = {
            "base": [self._accuracy(base, t, ctx) for t in range(num)],
            "tuned": [self._accuracy(jax.tree.map(lambda x, t=t: x[t], tuned), t, ctx)
                      for t in range(num)]}
        inputs = None
        for m in self.methods:
            entry: dict[str, Any] = {}
            if m["name"] == "average":
                merged = weight_average(tuned)
            elif m["name"] == "task_arithmetic":
                merged = task_arithmetic(base, tuned, m.get("lam", 0.3))
            else:
                if inputs is None:
                    inputs = [np.concatenate([np.asarray(b["x"])[np.asarray(b["mask"]) > 0]
                                              for b in ctx.batches(t["data"], self.batch_size)])
                              for t in self.tasks]
                kw = {k: m[k] for k in ("granularity", "init", "steps", "lr", "batch_size")
                      if k in m}
                res = adamerging(logits_fn, base, tuned, inputs, seed=self.seed, **kw)
                merged = res.params
                entry = {"coefficients": res.coefficients.tolist(), "groups": res.groups,
                         "entropy_first": float(res.entropy[0]),
                         "entropy_last": float(res.entropy[-1])}
            accs = [self._accuracy(merged, t, ctx) for t in range(num)]
            out[m["label"]] = {"acc": accs, "mean": float(np.mean(accs)), **entry}
        replica = getattr(ctx, "replica", None)
        self._data[int(replica) if replica is not None else len(self._data)] = out
        row = {"base": float(np.mean(out["base"])), "tuned": float(np.mean(out["tuned"]))}
        row.update({m["label"]: out[m["label"]]["mean"] for m in self.methods})
        return {self.name: row}

    def summary(self) -> dict[str, Any]:
        per = [self._data[i] for i in sorted(self._data)]
        if not per:
            return {self.name: {}}
        mean = {"base": float(np.mean([np.mean(d["base"]) for d in per])),
                "tuned": float(np.mean([np.mean(d["tuned"]) for d in per]))}
        mean.update({m["label"]: float(np.mean([d[m["label"]]["mean"] for d in per]))
                     for m in self.methods})
        return {self.name: {"tasks": [t.get("name") for t in self.tasks], "mean": mean,
                            "per_seed": per}}


registry.HOOKS.register("task_snapshots", TaskSnapshots)
registry.EVALUATORS.register("merge", MergeEvaluator)

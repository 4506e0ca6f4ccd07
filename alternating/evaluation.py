"""Evaluation: evaluators with their own timing, and the built-in loss evaluator.

An evaluator is any object with

* ``name``: a unique name (its key in ``results.json``);
* ``when``: a :class:`~alternating.triggers.When` (or a dict; see there);
* ``__call__(state, event, ctx) -> {row name: {metric: value}} | None``: the
  rows the loop writes as evaluation rows (``metrics.jsonl`` with
  ``split='eval'``, TensorBoard ``eval/<row>/<metric>``) at ``event.step``;
* optionally ``summary() -> dict``, merged into ``results.json`` at the end,
  and ``state_dict()`` / ``load_state_dict(d)`` (JSON) for what it keeps
  between calls, saved in every checkpoint so that a resume continues it.

``ctx`` is the run's :class:`~alternating.hooks.Context` (evaluate the run's
evaluation sets, read a deterministic pass of a data spec, jit a counted
function). The loop runs evaluators after hooks and before the checkpoint.

The built-in :class:`LossEvaluator` is ``train(evals=...)`` /
``config.eval``: each set's loss and aux, averaged exactly over its examples,
every ``eval_every_steps`` and at the end (with the EMA parameters too when
``ema_decay > 0``); its last values are ``results.json``'s ``final_eval``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from alternating import data as data_lib
from alternating import losses, parallel, registry
from alternating.triggers import When


@dataclasses.dataclass
class EvalSet:
    """An evaluation set: a data spec plus the loss whose value and aux are reported.

    Attributes:
      data: a data spec (``dataset``, ``split``, ``transforms``); its
        ``batch_size`` is ignored in favour of ``batch_size`` here.
      phase: evaluate with this phase's loss (the usual case), or
      loss: a loss spec (callable, name or ``module:function``) with
        ``loss_kwargs``.
      batch_size: evaluation batch size (the last batch is padded and masked).

    The loss runs on each example as a batch of one (``vmap``) and values are
    averaged over real examples, so padding never biases the result; a loss
    whose value depends on the rest of its batch is evaluated per example.
    """

    data: Mapping[str, Any]
    phase: str | None = None
    loss: Any = None
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 256


@dataclasses.dataclass
class BoundEval:
    """An evaluation set ready to run: its jitted function and device batches."""

    name: str
    fn: Callable
    batches: list


def _as_eval_set(set_name: str, spec: Any) -> EvalSet:
    if isinstance(spec, EvalSet):
        return spec
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    valid = [f.name for f in dataclasses.fields(EvalSet)]
    unknown = sorted(set(spec) - set(valid))
    if unknown:
        raise ValueError(f"eval set {set_name!r}: unknown keys {unknown}; valid: {valid}.")
    return EvalSet(**spec)


class _Placed:
    """Streamed evaluation batches, each placed on the devices as it is read."""

    def __init__(self, batches: Any, mesh: Any):
        self.batches, self.mesh = batches, mesh

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: Any) -> Any:
        got = self.batches[i]
        if isinstance(i, slice):
            return [parallel.shard_batch(b, self.mesh) for b in got]
        return parallel.shard_batch(got, self.mesh)

    def __iter__(self):
        return (parallel.shard_batch(b, self.mesh) for b in self.batches)


def device_batches(data_spec: Mapping[str, Any], batch_size: int, mesh: Any,
                   data_dir: str | None) -> Any:
    """Every example of a data spec once, in order, padded and masked, on the devices.

    Placed once (a list) when the split is held in memory; a streamed split
    (``read``, :mod:`alternating.data.streaming`) is read and placed batch by
    batch at every evaluation instead, so neither host nor device holds it.
    """
    spec = {k: v for k, v in dict(data_spec).items() if k != "batch_size"}
    batches = data_lib.eval_batches(
        spec, batch_size=batch_size, data_dir=data_dir, process_index=jax.process_index(),
        process_count=jax.process_count())
    if isinstance(batches, list):
        return [parallel.shard_batch(b, mesh) for b in batches]
    return _Placed(batches, mesh)


def build_evals(evals: Mapping[str, Any], bound: Any, model: Any, mesh: Any,
                data_dir: str | None, counter: parallel.TraceCounter) -> list[BoundEval]:
    """Resolves ``{set name: EvalSet or dict}`` against the bound phases.

    Raises:
      ValueError: unknown keys, an unknown phase or loss, a batch size that
        does not divide over the devices (each naming the set).
    """
    out = []
    by_name = {b.name: b for b in bound}
    cache: dict[int, Callable] = {}
    for set_name in sorted(evals):
        spec = _as_eval_set(set_name, evals[set_name])
        if spec.phase is not None:
            if spec.phase not in by_name:
                raise ValueError(f"eval set {set_name!r} names phase {spec.phase!r}; the phases "
                                 f"are {sorted(by_name)}.")
            loss_fn = by_name[spec.phase].loss_fn
        elif spec.loss is not None:
            loss_fn = losses.resolve_loss(spec.loss, model, spec.loss_kwargs,
                                          where=f"eval set {set_name!r} loss")
        else:
            raise ValueError(f"eval set {set_name!r}: give either phase=<phase name> or loss=...")
        parallel.check_batch_size(spec.batch_size, mesh, f"eval set {set_name!r}")
        # In memory: placed on the devices once; streamed: read at each evaluation.
        batches = device_batches(spec.data, spec.batch_size, mesh, data_dir)
        key = id(loss_fn)
        if key not in cache:
            # Sets sharing a loss share one jitted function ("eval:<first set>");
            # it compiles once per distinct batch shape.
            cache[key] = make_eval_fn(loss_fn, mesh, counter, f"eval:{set_name}")
        out.append(BoundEval(set_name, cache[key], batches))
    return out


def make_eval_fn(loss_fn: Callable, mesh: Any, counter: parallel.TraceCounter | None,
                 name: str) -> Callable:
    """Per-example evaluation, so padding is exact whatever the loss does with ``mask``.

    The loss runs on each example as a batch of one (``vmap``) and the results
    are averaged over real examples only. A loss that averages over its batch
    (the usual case) gives exactly the per-example values; relying on every
    user loss to honour a padding mask instead would silently bias the last
    batch. ``fn(params, extras, batch, step) -> (sums, count)``.
    """
    rng = jax.random.PRNGKey(0)
    loss_fn = losses.with_step(loss_fn)

    def fn(params, extras, batch, step):
        mask = batch["mask"]
        examples = {k: v for k, v in batch.items() if k != "mask"}
        info = losses.StepInfo(step, jnp.zeros((), jnp.int32))

        def one(example):
            loss, aux = loss_fn(params, jax.tree.map(lambda x: x[None], example), rng, extras,
                                info)
            return {"loss": loss, **losses.metrics_of(aux)}

        per = jax.vmap(one)(examples)
        sums = {k: (jnp.asarray(v, jnp.float32).reshape(mask.shape) * mask).sum()
                for k, v in per.items()}
        return sums, mask.sum()

    rep = parallel.replicated(mesh)
    fn = counter.wrap(name, fn) if counter is not None else fn
    # Params and extras keep the sharding they come with (replicated, or fsdp-split).
    return jax.jit(fn, in_shardings=(None, None, parallel.batch_sharding(mesh), rep),
                   out_shardings=rep)


def evaluate(eval_sets: list[BoundEval], state: Any) -> dict[str, dict[str, float]]:
    """``{set: {metric: mean}}`` of every set, with ``<set>_ema`` when the state has an EMA."""
    variants = [("", state.params)]
    if "ema" in state.extras:
        variants.append(("_ema", state.extras["ema"]))
    pending = []
    for ev in eval_sets:
        for suffix, params in variants:
            total, count = None, 0.0
            for batch in ev.batches:
                sums, n = ev.fn(params, state.extras, batch, state.step)
                total = sums if total is None else jax.tree.map(jnp.add, total, sums)
                count = count + n
                parallel.bound_queue(total)
            pending.append((ev.name + suffix, total, count))
    host = parallel.get([(t, c) for _, t, c in pending])
    return {name: {k: float(v) / max(float(count), 1.0) for k, v in total.items()}
            for (name, _, _), (total, count) in zip(pending, host)}


class LossEvaluator:
    """The run's evaluation sets (``evals``), every ``eval_every_steps`` and at the end."""

    name = "final_eval"

    def __init__(self, eval_sets: list[BoundEval], eval_every_steps: int = 0):
        self.eval_sets = eval_sets
        self.when = When(every=int(eval_every_steps), end=True)
        self.last: dict[str, dict[str, float]] = {}

    def __call__(self, state, event, ctx):  # pylint: disable=unused-argument
        if not self.eval_sets:
            return None
        self.last = evaluate(self.eval_sets, state)
        return self.last

    def summary(self) -> dict[str, Any]:
        return {"final_eval": self.last}


def resolve_evaluator(spec: Any, where: str, **context) -> Any:
    """An evaluator from an object or ``{name, when, **kwargs}`` (name: registry or path).

    ``context`` (``phases``, ``total_steps``) checks its ``when``.
    """
    return registry.build(registry.EVALUATORS, spec, where, **context)

"""Phases: a named pure update (loss, data stream, partition, optimizer).

:class:`Phase` is the user-facing description (plain data, or Python objects
in a notebook). :func:`bind` resolves it against a model and its parameters
into a :class:`BoundPhase`, and :func:`make_step` turns that into the pure
``step(state, batch) -> (state, metrics)`` that the loop jits once.

Freezing is done by differentiating only the phase's own sub-tree, never by
``optax.masked``: ``masked`` passes masked-out updates through unchanged, so
frozen parameters would move whenever the loss touches them. Here the frozen
leaves are not inputs of the gradient at all, the optimizer state holds only
the phase's own leaves, and the frozen leaves are returned as the very arrays
that came in, so they stay bit-identical.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from alternating import extras as extras_lib
from alternating import losses, opt_policy, partition
from alternating.state import TrainState, ema_update


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of a scheme.

    Attributes:
      name: unique name; also the default data stream name.
      loss: ``loss(params, batch, rng, extras) -> (loss, aux)`` (with a
        keyword ``step``, it also gets a :class:`~alternating.losses.StepInfo`:
        the global and the phase step), a registered loss name, or
        ``'module:function'`` (names are factories, see :mod:`alternating.losses`).
      data: name of the data stream this phase reads (default: ``name``), or a
        list of stream names: the batch is then ``{stream: batch}`` (e.g. a
        mixed batch of two modalities for one step).
      params: ordered partition rules ``[(regex, True|None), ...]`` over
        parameter paths; ``None`` trains every parameter.
      optimizer: an ``optax.GradientTransformation`` or a spec dict (see
        :func:`make_optimizer`); default Adam at 1e-3.
      loss_kwargs: keyword arguments for a named loss factory.
      opt_policy: when this phase's optimizer state is re-initialized, and
        which of its leaves (see :mod:`alternating.opt_policy`); default: kept.
      updates: extras this phase's steps update after the optimizer step,
        ``[{'extra': name, 'rule': 'ema' | 'copy' | 'push' | 'module:function',
        ...}]`` (see :mod:`alternating.extras`).
    """

    name: str
    loss: Any
    data: str | None = None
    params: Any = None
    optimizer: Any = None
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    opt_policy: Any = None
    updates: Any = ()

    @property
    def streams(self) -> tuple[str, ...]:
        """The stream names this phase reads."""
        if self.data is None:
            return (self.name,)
        if isinstance(self.data, str):
            return (self.data,)
        return tuple(self.data)

    @property
    def multi_stream(self) -> bool:
        return not (self.data is None or isinstance(self.data, str))


@dataclasses.dataclass(frozen=True)
class BoundPhase:
    """A phase resolved against a model: what :func:`make_step` needs."""

    name: str
    index: int
    streams: tuple[str, ...]
    multi_stream: bool
    loss_fn: Callable
    tx: optax.GradientTransformation
    lr_fn: Callable[[jax.Array], jax.Array] | None
    trainable: Mapping[str, bool]
    policy: opt_policy.OptPolicy = opt_policy.OptPolicy()
    policy_mask: Any = None
    updates: tuple = ()


OPTIMIZER_KEYS = ("name", "lr", "learning_rate", "schedule", "warmup_steps", "decay_steps",
                  "end_lr_factor", "weight_decay", "grad_clip_norm", "b1", "b2", "eps",
                  "momentum", "nesterov")
OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop", "adagrad", "lamb", "lion",
              "adafactor")
LR_SCHEDULES = ("constant", "cosine", "linear")


def _decay_mask(params):
    # Decay weight matrices and kernels, not biases, scales or embeddings of rank 1.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(spec: Any, *, default_decay_steps: int = 1,
                   where: str = "optimizer") -> tuple[optax.GradientTransformation, Callable | None]:
    """Builds an optax optimizer from a spec.

    Spec keys: ``name`` (one of ``OPTIMIZERS``), ``lr`` (alias
    ``learning_rate``), ``schedule`` (``constant`` | ``cosine`` | ``linear``),
    ``warmup_steps`` (linear from 0), ``decay_steps`` (default: the phase's
    expected number of steps), ``end_lr_factor`` (final lr / lr, default 0),
    ``weight_decay`` (decoupled, on parameters of rank >= 2),
    ``grad_clip_norm``, ``b1``, ``b2``, ``eps``, ``momentum``, ``nesterov``.
    Schedules count the phase's own steps, not the global step.

    Returns:
      ``(tx, lr_fn)``; ``lr_fn`` is ``None`` when ``spec`` is already an optax
      transformation.
    """
    if spec is None:
        spec = {"name": "adam", "lr": 1e-3}
    if isinstance(spec, optax.GradientTransformation):
        return spec, None
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    unknown = sorted(set(spec) - set(OPTIMIZER_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {list(OPTIMIZER_KEYS)}.")
    name = spec.get("name", "adam")
    if name not in OPTIMIZERS:
        raise ValueError(f"{where}.name={name!r} is not an optimizer; valid names: {list(OPTIMIZERS)}.")
    lr = float(spec.get("lr", spec.get("learning_rate", 1e-3)))
    kind = spec.get("schedule", "constant")
    warmup = int(spec.get("warmup_steps", 0))
    decay_steps = int(spec.get("decay_steps") or default_decay_steps)
    end = float(spec.get("end_lr_factor", 0.0)) * lr
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(lr, max(decay_steps - warmup, 1), alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        main = optax.linear_schedule(lr, end, max(decay_steps - warmup, 1))
    else:
        raise ValueError(f"{where}.schedule={kind!r}; valid schedules: {list(LR_SCHEDULES)}.")
    lr_fn = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup]) if warmup else main

    b1, b2, eps = float(spec.get("b1", 0.9)), float(spec.get("b2", 0.999)), float(spec.get("eps", 1e-8))
    wd = float(spec.get("weight_decay", 0.0))
    parts = []
    if spec.get("grad_clip_norm"):
        parts.append(optax.clip_by_global_norm(float(spec["grad_clip_norm"])))
    if name in ("adam", "adamw", "lamb"):
        parts.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    elif name == "momentum" or (name == "sgd" and spec.get("momentum")):
        parts.append(optax.trace(decay=float(spec.get("momentum", 0.9)),
                                 nesterov=bool(spec.get("nesterov", False))))
    elif name == "rmsprop":
        parts.append(optax.scale_by_rms(decay=b2, eps=eps))
    elif name == "adagrad":
        parts.append(optax.scale_by_rss())
    elif name == "lion":
        parts.append(optax.scale_by_lion(b1=b1, b2=float(spec.get("b2", 0.99))))
    elif name == "adafactor":
        parts.append(optax.scale_by_factored_rms())
    if wd:
        parts.append(optax.add_decayed_weights(wd, _decay_mask))
    if name == "lamb":
        parts.append(optax.scale_by_trust_ratio())
    parts.append(optax.scale_by_learning_rate(lr_fn))
    return optax.chain(*parts), lr_fn


def bind(phase: Phase, index: int, *, params: Any, model: Any = None,
         expected_steps: int = 1) -> BoundPhase:
    """Resolves a phase's loss, partition and optimizer.

    Raises:
      ValueError: unknown loss or optimizer, or partition rules that do not
        cover the parameters exactly (each error names the phase).
    """
    where = f"phase {phase.name!r}"
    loss_fn = losses.resolve_loss(phase.loss, model, phase.loss_kwargs, where=f"{where} loss")
    trainable = partition.resolve(phase.params, partition.flatten(params), where=where)
    if not any(trainable.values()):
        raise partition.PartitionError(f"{where}: its rules train no parameter.")
    tx, lr_fn = make_optimizer(phase.optimizer, default_decay_steps=expected_steps,
                               where=f"{where} optimizer")
    policy = opt_policy.parse(phase.opt_policy, where=f"{where} opt_policy")
    own, _ = partition.split(params, trainable)
    mask = opt_policy.leaf_mask(policy, own, where=f"{where} opt_policy")
    updates = extras_lib.bind_updates(phase.updates, model, where=f"{where} updates")
    return BoundPhase(phase.name, index, phase.streams, phase.multi_stream, loss_fn, tx, lr_fn,
                      trainable, policy, mask, updates)


def make_step(bound: BoundPhase, *, ema_decay: float = 0.0) -> Callable:
    """Returns the pure ``step(state, batch) -> (state, metrics)`` of a phase.

    Metrics are float32 scalars: ``loss``, ``grad_norm``, ``lr`` (when known)
    and the loss's aux values. The phase's step count is in the state; the
    loop reports it as ``phase_step`` from its own host-side count, because
    returning it from the step as a metric measured about 25 us a step on a
    2-core CPU (the metrics output then waits on the counter update).
    """
    name = bound.name
    loss_fn = losses.with_step(bound.loss_fn)

    def step(state: TrainState, batch: Mapping[str, jax.Array]):
        rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), bound.index)
        own, rest = partition.split(state.params, bound.trainable)
        count = state.phase_steps[name]
        info = losses.StepInfo(state.step, count)

        def f(own_params):
            return loss_fn(partition.merge(own_params, rest), batch, rng, state.extras, info)

        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(own)
        opt = state.opt_state[name]
        policy = bound.policy
        if not policy.keeps:
            reset = opt_policy.reset_flag(policy, name, state.step, count, state.extras)
            opt = opt_policy.apply(policy, bound.tx, opt, own, bound.policy_mask, reset)
        # The schedule's position: the phase's step count, unless a whole-state
        # reset restarted the schedule's own count.
        lr_count = opt_policy.schedule_count(opt) if policy.resets_counts else None
        lr_count = count if lr_count is None else lr_count
        updates, opt = bound.tx.update(grads, opt, own)
        own = optax.apply_updates(own, updates)
        params = partition.merge(own, rest)
        extras = dict(state.extras)
        if ema_decay > 0:
            extras["ema"] = ema_update(extras["ema"], params, ema_decay)
        if bound.updates:
            extras = extras_lib.apply_updates(bound.updates, extras, params, rng, count)
        if policy.needs_last_step:
            extras[opt_policy.LAST_STEP] = {**extras[opt_policy.LAST_STEP], name: state.step}
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
        if bound.lr_fn is not None:
            metrics["lr"] = bound.lr_fn(lr_count)
        metrics.update(aux)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new_state = state.replace(
            step=state.step + 1, params=params,
            opt_state={**state.opt_state, name: opt},
            phase_steps={**state.phase_steps, name: count + 1},
            extras=extras)
        return new_state, metrics

    step.__name__ = f"step_{name}"
    return step

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
import math
import numbers
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from alternating import augment as augment_lib
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
      optimizer_group: phases naming the same group share one optimizer state
        over the union of their parameters (``opt_state[group]``), with one
        optimizer's semantics: a step changes only the leaves its phase
        trains (the others' values and moments stay as they are) and the
        step count is shared. Their ``optimizer`` and ``opt_policy`` must be
        equal. Default: the phase's own state.
      compute_dtype: ``'bfloat16'`` runs the loss (forward and backward) in
        bfloat16: parameters and floating inputs are cast when the loss reads
        them, while the parameters, their gradients and the optimizer state
        stay float32 (no loss scaling: bfloat16 has float32's range).
        Default: the parameters' own dtype.
      augment: random per-batch augmentations of the training inputs, inside
        the step, keyed by the step (so a resumed run draws the same ones):
        ``[{'name': 'shift' | 'noise' | 'flip' | 'crop' | 'module:function',
        **kwargs}]`` (see :mod:`alternating.augment`). Default: none.
    """

    name: str
    loss: Any
    data: str | None = None
    params: Any = None
    optimizer: Any = None
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    opt_policy: Any = None
    updates: Any = ()
    optimizer_group: str | None = None
    compute_dtype: str | None = None
    augment: Any = ()

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
    group: str | None = None  # the shared optimizer group, if any
    group_trainable: Mapping[str, bool] | None = None  # the union of the group's phases
    group_phases: tuple[str, ...] = ()
    compute_dtype: Any = None  # a jnp dtype, or None
    augment: Callable | None = None  # f(batch, key) -> batch, see alternating.augment

    @property
    def opt_key(self) -> str:
        """This phase's key in ``state.opt_state`` (its group's when shared)."""
        return self.group or self.name


# extras[LR_SCALE][opt key]: a factor on the phase's updates (replica_lr, alternating.seeds).
LR_SCALE = "replica_lr_scale"

OPTIMIZER_KEYS = ("name", "lr", "learning_rate", "schedule", "warmup_steps", "decay_steps",
                  "end_lr_factor", "weight_decay", "grad_clip_norm", "b1", "b2", "eps",
                  "momentum", "nesterov", "cooldown_steps", "const_lr_factor", "anneal_steps",
                  "anneal_at", "cycle_steps")
OPTIMIZERS = ("adam", "adamw", "sgd", "momentum", "rmsprop", "adagrad", "lamb", "lion",
              "adafactor")
LR_SCHEDULES = ("constant", "cosine", "linear", "infinite")


# The numeric keys of an optimizer spec: (low, low open, high, high open, whole number).
# Each range is the one in which the optimizer does what its name says.
_NUMBERS = {
    "lr": (0.0, False, None, False, False),
    "learning_rate": (0.0, False, None, False, False),
    "warmup_steps": (0, False, None, False, True),
    "decay_steps": (0, False, None, False, True),  # 0 or None: the phase's expected steps
    "end_lr_factor": (0.0, False, None, False, False),
    "weight_decay": (0.0, False, None, False, False),
    "grad_clip_norm": (0.0, False, None, False, False),  # 0 or None: no clipping
    "b1": (0.0, False, 1.0, True, False),
    "b2": (0.0, False, 1.0, True, False),
    "eps": (0.0, True, None, False, False),
    "momentum": (0.0, False, 1.0, True, False),
}


def _check_numbers(spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The spec's numbers checked against ``_NUMBERS`` (whole numbers as ints).

    Raises:
      ValueError: naming the key, its value and the valid range.
    """
    out = dict(spec)
    for key, (low, low_open, high, high_open, whole) in _NUMBERS.items():
        value = spec.get(key)
        if value is None:
            continue
        lo = f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f" and {'<' if high_open else '<='} {high:g}"
        rng = f"{'a whole number' if whole else 'a finite number'} {lo}{hi}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{where}.{key}={value!r}; it must be {rng}.")
        if not math.isfinite(value):
            raise ValueError(f"{where}.{key}={value!r}; it must be {rng}.")
        if whole and not float(value).is_integer():
            raise ValueError(f"{where}.{key}={value!r}; it must be {rng} (steps are counted "
                             "in whole steps).")
        if ((value <= low) if low_open else (value < low)) or (
                high is not None and ((value >= high) if high_open else (value > high))):
            raise ValueError(f"{where}.{key}={value!r}; it must be {rng}.")
        out[key] = int(value) if whole else float(value)
    return out


def _decay_mask(params):
    # Decay weight matrices and kernels, not biases, scales or embeddings of rank 1.
    return jax.tree.map(lambda p: p.ndim > 1, params)


def _lr_schedule(spec: Mapping[str, Any], default_decay_steps: int, where: str) -> Callable:
    """The spec's learning rate as a function of the schedule's position."""
    from alternating import lr_schedules  # pylint: disable=g-import-not-at-top
    kind = spec.get("schedule", "constant")
    lr = float(spec.get("lr", spec.get("learning_rate", 1e-3)))
    warmup = int(spec.get("warmup_steps", 0))
    decay_steps = int(spec.get("decay_steps") or default_decay_steps)
    end = float(spec.get("end_lr_factor", 0.0)) * lr
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(lr, max(decay_steps - warmup, 1), alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        main = optax.linear_schedule(lr, end, max(decay_steps - warmup, 1))
    elif kind == "infinite":  # its own warm-up (alternating/lr_schedules.py)
        main = lr_schedules.from_spec(spec, lr, default_steps=decay_steps, where=where)
    else:
        raise ValueError(f"{where}.schedule={kind!r}; valid schedules: {list(LR_SCHEDULES)}.")
    lr_fn = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup]) if (
        warmup and kind != "infinite") else main
    if spec.get("cycle_steps"):  # repeated: the schedule restarts every cycle_steps positions
        lr_fn = lr_schedules.cycled(lr_fn, int(spec["cycle_steps"]))
    return lr_fn


def make_optimizer(spec: Any, *, default_decay_steps: int = 1,
                   where: str = "optimizer") -> tuple[optax.GradientTransformation, Callable | None]:
    """Builds an optax optimizer from a spec.

    Spec keys: ``name`` (one of ``OPTIMIZERS``), ``lr`` (alias
    ``learning_rate``), ``schedule`` (``constant`` | ``cosine`` | ``linear``
    | ``infinite``), ``warmup_steps`` (linear from 0), ``decay_steps``
    (default: the phase's expected number of steps), ``end_lr_factor`` (final
    lr / lr, default 0), the infinite schedule's ``cooldown_steps``,
    ``const_lr_factor`` (its constant lr / lr, default 1), ``anneal_steps`` and
    ``anneal_at`` (positions an anneal ends at; default ``[decay_steps]``; see
    :mod:`alternating.lr_schedules`), ``cycle_steps`` (restart the schedule
    every that many positions: repeated cosine in a shared optimizer group),
    ``weight_decay`` (decoupled, on parameters of rank >= 2),
    ``grad_clip_norm``, ``b1``, ``b2``, ``eps``, ``momentum``, ``nesterov``.
    Schedules count the phase's own steps, not the global step.

    Returns:
      ``(tx, lr_fn)``; ``lr_fn`` is ``None`` when ``spec`` is already an optax
      transformation.

    Raises:
      ValueError: an unknown key, optimizer or lr schedule, a key of the
        infinite schedule given with another, or a number out of its range
        (named with the range): ``lr``, ``weight_decay``,
        ``grad_clip_norm``, ``end_lr_factor`` finite and >= 0; ``b1``,
        ``b2``, ``momentum`` in [0, 1); ``eps`` > 0; ``warmup_steps``,
        ``decay_steps`` whole numbers >= 0.
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
    from alternating import lr_schedules  # pylint: disable=g-import-not-at-top
    lr_schedules.check_keys(spec, spec.get("schedule", "constant"), OPTIMIZER_KEYS, where)
    spec = _check_numbers(spec, where)
    lr_fn = _lr_schedule(spec, default_decay_steps, where)

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
                      trainable, policy, mask, updates,
                      compute_dtype=_compute_dtype(phase.compute_dtype, where),
                      augment=augment_lib.build(phase.augment, where))


def spec_lr(spec: Any) -> float | None:
    """An optimizer spec's peak learning rate (``None`` for an optax object)."""
    if isinstance(spec, optax.GradientTransformation):
        return None
    spec = {} if spec is None else spec
    return float(spec.get("lr", spec.get("learning_rate", 1e-3)))


COMPUTE_DTYPES = ("float32", "bfloat16")


def _compute_dtype(name: Any, where: str) -> Any:
    if name is None or name == "float32":
        return None
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"{where} compute_dtype={name!r}; valid: {list(COMPUTE_DTYPES)}.")
    return jnp.bfloat16


def _cast(tree: Any, dtype: Any) -> Any:
    """Floating leaves of ``tree`` as ``dtype`` (integers, labels, masks' ints kept)."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)


def bind_groups(phases: Sequence[Phase], bound: Sequence[BoundPhase], *, params: Any,
                expected: Mapping[str, int]) -> list[BoundPhase]:
    """Binds shared optimizer groups (``Phase.optimizer_group``).

    The group's optimizer is built once over the union of its phases'
    parameters, its decay length the sum of their expected steps.

    Raises:
      ValueError: phases of one group with different optimizer or
        opt_policy specs, or a group named like a phase outside it.
    """
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(phases):
        if p.optimizer_group is not None:
            groups.setdefault(str(p.optimizer_group), []).append(i)
    out = list(bound)
    names = {p.name for p in phases}
    for group, idx in groups.items():
        members = [phases[i] for i in idx]
        if group in names and group not in {m.name for m in members}:
            raise ValueError(f"optimizer_group {group!r} is also the name of a phase outside "
                             f"it; rename the group (its state is opt_state[{group!r}]).")
        for field in ("optimizer", "opt_policy"):
            specs = [_spec_key(getattr(m, field)) for m in members]
            if len(set(specs)) > 1:
                raise ValueError(
                    f"optimizer_group {group!r}: phases {[m.name for m in members]} have different "
                    f"{field} specs ({[getattr(m, field) for m in members]}); one shared "
                    f"optimizer state needs one {field}: give them the same.")
        union = {path: any(bound[i].trainable[path] for i in idx) for path in bound[idx[0]].trainable}
        steps = max(sum(expected.get(m.name, 0) for m in members), 1)
        tx, lr_fn = make_optimizer(members[0].optimizer, default_decay_steps=steps,
                                   where=f"optimizer_group {group!r} optimizer")
        own, _ = partition.split(params, union)
        mask = opt_policy.leaf_mask(bound[idx[0]].policy, own, where=f"optimizer_group {group!r}")
        for i in idx:
            out[i] = dataclasses.replace(bound[i], tx=tx, lr_fn=lr_fn, policy_mask=mask,
                                         group=group, group_trainable=union,
                                         group_phases=tuple(m.name for m in members))
    return out


def _spec_key(spec: Any) -> str:
    if isinstance(spec, optax.GradientTransformation):
        return f"object:{id(spec)}"
    plain = spec.to_dict() if hasattr(spec, "to_dict") else spec
    return repr(sorted(plain.items())) if isinstance(plain, Mapping) else repr(plain)


def make_step(bound: BoundPhase, *, ema_decay: float = 0.0, grad_norm: bool = True) -> Callable:
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
        info = losses.StepInfo(state.step, count, True)
        if bound.augment is not None:  # keyed by the step: a resumed run draws the same
            batch = bound.augment(batch, rng)

        def f(own_params):
            params, inputs = partition.merge(own_params, rest), batch
            if bound.compute_dtype is not None:  # mixed precision: float32 master weights
                params, inputs = _cast(params, bound.compute_dtype), _cast(batch, bound.compute_dtype)
            loss, aux = loss_fn(params, inputs, rng, state.extras, info)
            return jnp.asarray(loss, jnp.float32), aux

        (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(own)
        aux, writes = losses.metrics_of(aux), aux.get(losses.WRITES)
        opt = state.opt_state[bound.opt_key]
        target = own if bound.group is None else partition.split(state.params,
                                                                  bound.group_trainable)[0]
        policy = bound.policy
        if not policy.keeps:
            reset = opt_policy.reset_flag(policy, name, state.step, count, state.extras)
            opt = opt_policy.apply(policy, bound.tx, opt, target, bound.policy_mask, reset)
        # The schedule's position: the phase's (or its group's) step count,
        # unless a whole-state reset restarted the schedule's own count.
        lr_count = opt_policy.schedule_count(opt) if policy.resets_counts else None
        if lr_count is None:
            lr_count = count if bound.group is None else sum(
                state.phase_steps[p] for p in bound.group_phases)
        if bound.group is None:
            updates, opt = bound.tx.update(grads, opt, own)
        else:
            updates, opt = _group_update(bound, grads, opt, target)
        scale = state.extras.get(LR_SCALE, {}).get(bound.opt_key)
        if scale is not None:  # this replica's learning rate over the spec's
            updates = jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
        own = optax.apply_updates(own, updates)
        params = partition.merge(own, rest)
        extras = write_extras(dict(state.extras), writes, name) if writes else dict(state.extras)
        if ema_decay > 0:
            extras["ema"] = ema_update(extras["ema"], params, ema_decay)
        if bound.updates:
            extras = extras_lib.apply_updates(bound.updates, extras, params, rng, count, batch)
        if policy.needs_last_step:
            extras[opt_policy.LAST_STEP] = {**extras[opt_policy.LAST_STEP], name: state.step}
        metrics = {"loss": loss}
        if grad_norm:  # a pass over the gradients: 13-16% of a large MLP step's memory traffic
            metrics["grad_norm"] = optax.global_norm(grads)
        if bound.lr_fn is not None:
            metrics["lr"] = bound.lr_fn(lr_count) * (1.0 if scale is None else scale)
        metrics.update(aux)
        metrics = {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}
        new_state = state.replace(
            step=state.step + 1, params=params,
            opt_state={**state.opt_state, bound.opt_key: opt},
            phase_steps={**state.phase_steps, name: count + 1},
            extras=extras)
        return new_state, metrics

    step.__name__ = f"step_{name}"
    return step


def write_extras(extras: dict[str, Any], writes: Mapping[str, Any], phase: str) -> dict:
    """A loss's extras writes (``aux[losses.WRITES]``), checked against the extras.

    Raises:
      ValueError (when the step is traced): an extra that does not exist, or a
        value whose structure or shapes differ from the extra's.
    """
    for key, new in writes.items():
        if key not in extras:
            raise ValueError(f"phase {phase!r}: its loss writes extra {key!r}, which is not "
                             f"declared; extras: {sorted(extras)}.")
        old = extras[key]
        if (jax.tree.structure(new) != jax.tree.structure(old) or
                [jnp.shape(a) for a in jax.tree.leaves(new)] !=
                [jnp.shape(a) for a in jax.tree.leaves(old)]):
            raise ValueError(f"phase {phase!r}: its loss writes extra {key!r} with another "
                             "structure or shapes than the extra's (declare it with the "
                             "model's own initial state).")
        extras[key] = jax.tree.map(lambda n, o: jnp.asarray(n, o.dtype), new, old)
    return extras


def _group_update(bound: BoundPhase, grads: Any, opt: Any, union: Any) -> tuple[Any, Any]:
    """One shared optimizer's update restricted to the phase's own leaves.

    The group's transformation runs over the union (zero gradients for the
    leaves this phase does not train); those leaves' moments are then kept as
    they were and their updates dropped, so a step changes only what its phase
    trains, as one PyTorch optimizer does for parameters without a gradient.
    """
    flat_g, flat_u = partition.flatten(grads), partition.flatten(union)
    full = partition.unflatten({p: flat_g[p] if p in flat_g else jnp.zeros_like(v)
                                for p, v in flat_u.items()})
    updates, new = bound.tx.update(full, opt, union)
    mask = partition.unflatten({p: p in flat_g for p in flat_u})
    new = opt_policy.keep_untouched(bound.tx, new, opt, mask)
    flat_up = partition.flatten(updates)
    return partition.unflatten({p: flat_up[p] for p in flat_g}), new

"""Loss registry.

A phase's loss, once bound, has one signature::

    loss(params, batch, rng, extras) -> (scalar loss, {name: scalar aux})

In Python you may pass that function directly to :class:`~alternating.Phase`.
In a config, a loss is named: either a registered name (``'classification'``)
or ``'package.module:function'``. A named loss is a *factory*
``factory(model, **loss_kwargs) -> loss`` so that it can close over the
config's model.

Evaluation calls a loss on one example at a time (under ``vmap``) and
averages over real examples, so losses need not know about padding. A loss
whose value for an example depends on the rest of its batch (contrastive
losses, batch statistics) is evaluated per example all the same. The built-in
losses also honour an optional float ``mask`` key (1 real, 0 padding) for
callers that pad training batches themselves.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

LossFn = Callable[[Any, Mapping[str, jax.Array], jax.Array, Mapping[str, Any]],
                  tuple[jax.Array, Mapping[str, jax.Array]]]

from alternating import registry

LOSSES = registry.LOSSES  # {name: factory}; see alternating.registry


class StepInfo(NamedTuple):
    """Where a loss runs: the global step and the phase's own step (int32 arrays).

    A loss that declares a keyword argument ``step`` is called with one
    (``loss(params, batch, rng, extras, step=StepInfo(...))``); others are
    called as before. Evaluation passes the state's global step and the
    evaluated phase's count (0 for a loss named outside any phase).
    ``training`` is True in a training step and False in evaluation (a model
    with batch statistics normalizes by the batch's in training and by its
    running averages in evaluation).
    """

    global_step: Any
    phase_step: Any
    training: bool = False


# A loss may write extras: ``aux[WRITES] = {extra name: new value}`` (e.g. the
# running averages of a BatchNorm model). A training step writes them into
# ``state.extras`` after its optimizer update (same structure and dtypes as the
# extra, checked when the step is traced); evaluation ignores them.
WRITES = "extras_writes"


def metrics_of(aux: Mapping[str, Any]) -> dict[str, Any]:
    """A loss's aux without its extras writes: what is reported as metrics."""
    return {k: v for k, v in aux.items() if k != WRITES}


def register_loss(name: str):
    """Decorator registering a loss factory ``factory(model, **kwargs) -> loss``."""
    return LOSSES.register(name)


def wants_step(loss: Callable) -> bool:
    """Whether ``loss`` takes the ``step`` keyword (a :class:`StepInfo`)."""
    try:
        params = inspect.signature(loss).parameters
    except (TypeError, ValueError):
        return False
    p = params.get("step")
    return p is not None and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)


def with_step(loss: Callable) -> Callable:
    """``loss`` as ``f(params, batch, rng, extras, step)``, whether or not it reads the step."""
    if wants_step(loss):
        return lambda params, batch, rng, extras, step: loss(params, batch, rng, extras, step=step)
    return lambda params, batch, rng, extras, step: loss(params, batch, rng, extras)


def masked_mean(values: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Mean over the batch, ignoring padded examples when ``batch['mask']`` exists."""
    mask = batch.get("mask")
    if mask is None:
        return values.mean()
    return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


@register_loss("classification")
def classification(model, *, x: str = "x", y: str = "y", params_from: str | None = None,
                   state: str | None = None, **apply_kwargs) -> LossFn:
    """Softmax cross-entropy with integer labels; aux: ``accuracy``.

    Args:
      model: a :class:`~alternating.models.Model`.
      x, y: batch keys of the inputs and integer labels.
      params_from: evaluate ``extras[params_from]`` (e.g. a teacher) instead
        of the parameters (for evaluation sets).
      state: the extra holding the model's mutable state (BatchNorm running
        averages; see :func:`alternating.models.initial_state`). A training
        step normalizes by the batch and writes the updated averages back
        (:data:`WRITES`); evaluation reads them. Phases naming different
        extras keep their own statistics.
      **apply_kwargs: passed to ``model.apply`` (e.g. ``stem='images'``).
    """
    def loss(params, batch, rng, extras, step=None):
        del rng
        if params_from is not None:
            params = extras[params_from]
        writes = None
        if state is not None and state not in extras:
            raise ValueError(f"classification loss: state={state!r} names no extra; extras: "
                             f"{sorted(extras)} (declare it with kind 'init' and "
                             "'alternating.models:initial_state').")
        if state is None:
            logits = model.apply(params, batch[x], **apply_kwargs)
        elif step is not None and step.training:
            logits, new = model.apply(params, batch[x], state=extras[state], training=True,
                                      **apply_kwargs)
            writes = {state: new}
        else:
            logits = model.apply(params, batch[x], state=extras[state], **apply_kwargs)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch[y])
        acc = (jnp.argmax(logits, -1) == batch[y]).astype(jnp.float32)
        aux = {"accuracy": masked_mean(acc, batch)}
        if writes:
            aux[WRITES] = writes
        return masked_mean(ce, batch), aux
    return loss


@register_loss("binary")
def binary(model, *, x: str = "x", y: str = "y", **apply_kwargs) -> LossFn:
    """Sigmoid cross-entropy with 0/1 labels on a 1-unit output; aux: ``accuracy``."""
    def loss(params, batch, rng, extras):
        del rng, extras
        logits = model.apply(params, batch[x], **apply_kwargs)[..., 0]
        labels = batch[y].astype(jnp.float32)
        bce = optax.sigmoid_binary_cross_entropy(logits, labels)
        acc = ((logits > 0) == (labels > 0.5)).astype(jnp.float32)
        return masked_mean(bce, batch), {"accuracy": masked_mean(acc, batch)}
    return loss


@register_loss("regression")
def regression(model, *, x: str = "x", y: str = "y", **apply_kwargs) -> LossFn:
    """Mean squared error against float targets; aux: ``mae``."""
    def loss(params, batch, rng, extras):
        del rng, extras
        pred = model.apply(params, batch[x], **apply_kwargs)
        target = batch[y].astype(jnp.float32).reshape(pred.shape)
        err = (pred - target).reshape(pred.shape[0], -1)
        mse = (err ** 2).mean(-1)
        return masked_mean(mse, batch), {"mae": masked_mean(jnp.abs(err).mean(-1), batch)}
    return loss


@register_loss("sum")
def sum_of(model, *, parts: Mapping[str, Mapping[str, Any]]) -> LossFn:
    """Sum of named losses, each on its own sub-batch ``batch[part]``.

    For a phase that reads several streams at once (``data=[a, b]``), e.g. a
    mixed batch of two modalities in one optimizer step. ``parts`` maps a
    stream name to ``{'loss': name, **loss_kwargs}``; aux values are reported
    as ``<part>_<name>`` along with each part's loss.
    """
    fns = {}
    for part, spec in parts.items():
        spec = dict(spec)
        fns[part] = resolve_loss(spec.pop("loss", "classification"), model, spec,
                                 where=f"loss 'sum' part {part!r}")

    def loss(params, batch, rng, extras):
        total, aux = 0.0, {}
        for i, (part, fn) in enumerate(fns.items()):
            value, part_aux = fn(params, batch[part], jax.random.fold_in(rng, i), extras)
            total = total + value
            aux[f"{part}_loss"] = value
            aux.update({f"{part}_{k}": v for k, v in part_aux.items()})
        return total, aux
    return loss


def resolve_loss(spec: Any, model: Any = None, kwargs: Mapping[str, Any] | None = None,
                 where: str = "loss") -> LossFn:
    """Turns a loss spec into a bound loss function.

    Args:
      spec: a callable ``loss(params, batch, rng, extras)`` (returned as is), a
        registered name, or ``'module:function'`` naming a factory.
      model: the config's model, given to factories.
      kwargs: keyword arguments for the factory.
      where: the config field, for error messages.

    Raises:
      ValueError: unknown name or unimportable ``module:function``.
    """
    kwargs = dict(kwargs or {})
    if callable(spec):
        if kwargs:
            raise ValueError(f"{where}: loss_kwargs {sorted(kwargs)} given with a Python "
                             "callable loss; bind them yourself (functools.partial).")
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"{where}: expected a loss name, 'module:function' or a callable, "
                         f"got {spec!r}.")
    factory = LOSSES.resolve(spec, where)
    try:
        return factory(model, **kwargs)
    except TypeError as e:
        raise ValueError(f"{where} ({spec}): bad loss_kwargs {sorted(kwargs)}: {e}.") from e

"""Small Flax models used by the configs, built by name from config data.

Every config model is wrapped in :class:`Model`, which knows how to build its
own parameters (it declares its input shapes), so a config never needs example
inputs. Parameter paths are regex-friendly (``stem_images/...``,
``trunk/...``, ``head_classes/...``) because partitions select them by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from alternating import registry
from alternating.models.nets import CNN1D, CNN2D, GAN, MLP, Ensemble, MoE, MultiStem

__all__ = ["Model", "MLP", "CNN1D", "CNN2D", "GAN", "Ensemble", "MoE", "MultiStem", "get_model", "MODELS", "register_model"]


@dataclasses.dataclass(frozen=True)
class Model:
    """A Flax module plus the inputs it is initialized with.

    Attributes:
      module: the Flax linen module.
      init_inputs: ``{name: shape}`` of one example for each input the module
        takes at initialization (a single-input model has one entry, ``x``).
      init_method: method of ``module`` called at init with those inputs as
        keyword arguments (``None``: ``__call__``).
    """

    module: Any
    init_inputs: Mapping[str, tuple[int, ...]]
    init_method: str | None = None

    def _variables(self, rng: jax.Array) -> dict:
        inputs = {k: jnp.zeros((1, *s), jnp.float32) for k, s in self.init_inputs.items()}
        method = getattr(type(self.module), self.init_method) if self.init_method else None
        return dict(self.module.init(rng, **inputs, method=method))

    def init(self, rng: jax.Array) -> dict:
        """Returns freshly initialized parameters (no batch statistics)."""
        return dict(self._variables(rng)["params"])

    def init_state(self, rng: jax.Array) -> dict:
        """The module's mutable collections at initialization (``{}`` for most
        models; ``{'batch_stats': ...}`` with BatchNorm)."""
        return {k: v for k, v in self._variables(rng).items() if k != "params"}

    def apply(self, params: Any, x: jax.Array, *, state: Any = None, training: bool = False,
              **kwargs) -> Any:
        """Applies the module to one input batch.

        With ``state`` (the mutable collections, e.g. ``{'batch_stats': ...}``)
        the module is called with ``train=training``: in training it returns
        ``(output, new state)`` (BatchNorm normalizes by the batch and updates
        its running averages), otherwise the output, normalized by the
        running averages.
        """
        if state is None:
            return self.module.apply({"params": params}, x, **kwargs)
        variables = {"params": params, **state}
        if training:
            return self.module.apply(variables, x, train=True, mutable=list(state), **kwargs)
        return self.module.apply(variables, x, train=False, **kwargs)


def _mlp(*, features, input_shape, batch_norm=False) -> Model:
    return Model(MLP(features=tuple(features), batch_norm=bool(batch_norm)),
                 {"x": tuple(input_shape)})


def _cnn2d(*, num_classes, input_shape, channels=(16, 32), width=128) -> Model:
    return Model(CNN2D(num_classes=num_classes, channels=tuple(channels), width=width),
                 {"x": tuple(input_shape)})


def _cnn1d(*, num_classes, input_shape, channels=(32, 32, 32), width=128,
           batch_norm=False) -> Model:
    return Model(CNN1D(num_classes=num_classes, channels=tuple(channels), width=width,
                       batch_norm=bool(batch_norm)), {"x": tuple(input_shape)})


def initial_state(params: Any, rng: jax.Array, *, model: Any) -> dict:
    """A model's initial mutable state, as an extra: ``{'kind': 'init', 'init':
    'alternating.models:initial_state', 'kwargs': {'model': <model spec>}}``.

    Raises:
      ValueError: the model has no mutable state (nothing to keep).
    """
    del params
    built = get_model(model)
    state = built.init_state(rng)
    if not state:
        raise ValueError(f"extras: model {getattr(built.module, '__class__').__name__} has no "
                         "mutable state (no BatchNorm); drop the extra and the loss's `state`.")
    return state


def _multistem(*, stems, trunk, heads, modality_embedding=True) -> Model:
    stems = {k: dict(v) for k, v in stems.items()}
    for name, spec in stems.items():
        if "input_shape" not in spec:
            raise ValueError(f"model.stems.{name}: missing 'input_shape' (e.g. (8, 8, 1)).")
    module = MultiStem(
        stems={k: {kk: (tuple(vv) if isinstance(vv, (list, tuple)) else vv)
                   for kk, vv in v.items() if kk != "input_shape"} for k, v in stems.items()},
        trunk=tuple(trunk), heads=dict(heads), modality_embedding=bool(modality_embedding))
    return Model(module, {f"x_{k}": tuple(v["input_shape"]) for k, v in stems.items()},
                 init_method="init_all")


def _gan(*, z_dim=2, data_dim=2, hidden=(64, 64)) -> Model:
    return Model(GAN(z_dim=int(z_dim), data_dim=int(data_dim), hidden=tuple(hidden)),
                 {"z": (int(z_dim),), "x": (int(data_dim),)}, init_method="init_all")


def _ensemble(*, features, input_shape, members=2) -> Model:
    return Model(Ensemble(features=tuple(features), members=int(members)),
                 {"x": tuple(input_shape)})


def _moe(*, num_experts, expert_features, input_shape, router_features=(32,)) -> Model:
    return Model(MoE(num_experts=int(num_experts), expert_features=tuple(expert_features),
                     router_features=tuple(router_features)), {"x": tuple(input_shape)})


MODELS = registry.MODELS  # {name: factory(**kwargs) -> Model}; see alternating.registry
for _name, _factory in {
    "ensemble": _ensemble,
    "moe": _moe,
    "gan": _gan,
    "mlp": _mlp,
    "cnn2d": _cnn2d,
    "cnn1d": _cnn1d,
    "multistem": _multistem,
}.items():
    MODELS.register(_name, _factory)


def register_model(name: str):
    """Decorator registering a model factory ``factory(**kwargs) -> Model``."""
    return MODELS.register(name)


def get_model(spec: Any) -> Model:
    """Builds a model from ``{'name': ..., **kwargs}`` (a dict or ConfigDict).

    ``name`` is a registered name or ``'package.module:attr'`` naming a
    factory ``f(**kwargs) -> Model`` or a :class:`Model` of your own. A
    :class:`Model` given instead of a spec is returned as is.

    Raises:
      ValueError: unknown model name or bad keyword arguments, naming the
        valid choices.
    """
    if isinstance(spec, Model):
        return spec
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
    name = spec.pop("name", None)
    if not isinstance(name, str):
        raise MODELS.error("config.model.name", name)
    found = MODELS.resolve(name, "config.model.name")
    if isinstance(found, Model):
        if spec:
            raise ValueError(f"config.model: {name!r} is a Model object; it takes no arguments "
                             f"(got {sorted(spec)}).")
        return found
    try:
        model = found(**spec)
    except TypeError as e:
        raise ValueError(f"config.model ({name}): {e}.") from e
    if not isinstance(model, Model):
        raise ValueError(f"config.model.name={name!r} returned {type(model).__name__}, not an "
                         "alternating.models.Model (wrap the Flax module: Model(module, "
                         "{'x': input_shape})).")
    return model

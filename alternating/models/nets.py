"""Flax linen modules: MLP, 2-D CNN, 1-D CNN, a multi-stem network and a small GAN."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Flatten, then Dense layers with ReLU between them (none after the last);
    ``batch_norm``: BatchNorm before each ReLU (call with ``train``)."""

    features: Sequence[int]
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = x.reshape((x.shape[0], -1))
        last = len(self.features) - 1
        for i, f in enumerate(self.features):
            # No bias before a BatchNorm: it would be subtracted right away (a zero gradient
            # that Adam's normalization turns into noise-driven steps).
            x = nn.Dense(f, use_bias=not (self.batch_norm and i < last))(x)
            if i < last:
                x = nn.relu(_norm(self.batch_norm, train)(x))
        return x


def _norm(on: bool, train: bool):
    """BatchNorm (momentum 0.9) when ``on``, else the identity."""
    if not on:
        return lambda x: x
    return nn.BatchNorm(use_running_average=not train, momentum=0.9)


class CNN2D(nn.Module):
    """Small 2-D CNN for 8x8 (or larger) images, NHWC; ``num_classes=0`` returns features."""

    num_classes: int = 10
    channels: Sequence[int] = (16, 32)
    width: int = 128

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for c in self.channels:
            x = nn.relu(nn.Conv(c, (3, 3))(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.num_classes)(x) if self.num_classes else x


class CNN1D(nn.Module):
    """Small 1-D CNN for (length, channels) signals; ``num_classes=0`` returns features."""

    num_classes: int = 10
    channels: Sequence[int] = (32, 32, 32)
    width: int = 128
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim == 2:
            x = x[..., None]
        for i, c in enumerate(self.channels):
            x = nn.Conv(c, (5,), strides=(2,) if i else (1,), use_bias=not self.batch_norm)(x)
            x = nn.relu(_norm(self.batch_norm, train)(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.width)(x))
        return nn.Dense(self.num_classes)(x) if self.num_classes else x


_STEMS = {"mlp": MLP, "cnn2d": CNN2D, "cnn1d": CNN1D}


def _make_stem(kind: str, width: int, spec: Mapping[str, Any], name: str) -> nn.Module:
    if kind not in _STEMS:
        raise ValueError(f"stem {name!r}: kind={kind!r}; valid kinds: {sorted(_STEMS)}.")
    if kind == "mlp":
        return MLP(features=tuple(spec.get("features", ())) + (width,), name=name)
    return _STEMS[kind](num_classes=0, width=width, name=name,
                        **{k: v for k, v in spec.items() if k in ("channels",)})


class MultiStem(nn.Module):
    """One input stem per modality/task, a shared trunk, one head per output.

    Parameter paths: ``stem_<name>/...``, ``embed_<name>`` (the per-modality
    embedding added to the stem output; partitions usually freeze it),
    ``trunk/...`` and ``head_<name>/...``.

    Attributes:
      stems: ``{name: {'kind': 'mlp'|'cnn2d'|'cnn1d', ...}}``.
      trunk: widths of the shared Dense layers; the first is the stem width.
      heads: ``{name: output size}``.
      modality_embedding: add a per-stem embedding to the stem features.
    """

    stems: Mapping[str, Mapping[str, Any]]
    trunk: Sequence[int]
    heads: Mapping[str, int]
    modality_embedding: bool = True

    def setup(self):
        width = self.trunk[0]
        self.stem = {k: _make_stem(v.get("kind", "mlp"), width, v, f"stem_{k}")
                     for k, v in self.stems.items()}
        if self.modality_embedding:
            # A fixed random code per modality (unit normal, the scale of the
            # stem features), added before the trunk so the shared layers can
            # tell the modalities apart; partitions keep it frozen.
            self.embed = {k: self.param(f"embed_{k}", nn.initializers.normal(1.0), (width,))
                          for k in self.stems}
        self.trunk_layers = [nn.Dense(w, name=f"trunk_{i}") for i, w in enumerate(self.trunk)]
        self.head = {k: nn.Dense(n, name=f"head_{k}") for k, n in self.heads.items()}

    def __call__(self, x: jax.Array, *, stem: str, head: str) -> jax.Array:
        if stem not in self.stems:
            raise ValueError(f"stem={stem!r}; valid stems: {sorted(self.stems)}.")
        if head not in self.heads:
            raise ValueError(f"head={head!r}; valid heads: {sorted(self.heads)}.")
        h = self.stem[stem](x)
        if self.modality_embedding:
            h = h + self.embed[stem]
        for layer in self.trunk_layers:
            h = nn.relu(layer(nn.relu(h)))
        return self.head[head](h)

    def init_all(self, **xs: jax.Array) -> jax.Array:
        """Touches every stem and head once so that all parameters exist."""
        out = []
        for name in self.stems:
            for head in self.heads:
                out.append(self(xs[f"x_{name}"], stem=name, head=head).sum())
        return jnp.stack(out).sum()


class GAN(nn.Module):
    """A generator and a critic in one parameter tree: ``generator/...`` and ``critic/...``.

    Two disjoint parameter groups, so a config gives each its own phase and
    optimizer. ``part='generator'`` maps noise ``z`` to samples,
    ``part='critic'`` maps samples to one logit each.
    """

    z_dim: int = 2
    data_dim: int = 2
    hidden: Sequence[int] = (64, 64)

    def setup(self):
        self.generator = MLP(features=tuple(self.hidden) + (self.data_dim,), name="generator")
        self.critic = MLP(features=tuple(self.hidden) + (1,), name="critic")

    def __call__(self, x: jax.Array, *, part: str = "critic") -> jax.Array:
        if part == "generator":
            return self.generator(x)
        if part == "critic":
            return self.critic(x)[..., 0]
        raise ValueError(f"part={part!r}; valid parts: ['critic', 'generator'].")

    def init_all(self, z: jax.Array, x: jax.Array) -> jax.Array:
        """Touches both networks so that all parameters exist."""
        return self.critic(self.generator(z)).sum() + self.critic(x).sum()


class Ensemble(nn.Module):
    """``members`` MLPs side by side (``s0/...``, ``s1/...``): one parameter group each.

    ``member=i`` applies member ``i``; ``member=-1`` averages the members' outputs.
    """

    features: Sequence[int]
    members: int = 2

    def setup(self):
        self.nets = [MLP(features=tuple(self.features), name=f"s{i}") for i in range(self.members)]

    def __call__(self, x: jax.Array, *, member: int = -1) -> jax.Array:
        if member == -1:
            return jnp.mean(jnp.stack([n(x) for n in self.nets]), 0)
        if not 0 <= member < self.members:
            raise ValueError(f"member={member}; valid: -1 (average) or 0..{self.members - 1}.")
        return self.nets[member](x)


class MoE(nn.Module):
    """A soft mixture of MLP experts: ``sum_i router(x)_i * expert_i(x)``.

    Parameter groups: ``router/...`` and ``expert_<i>/...`` (for router/expert
    block-coordinate training). ``part='router'`` returns the router's gate
    probabilities instead of the output.
    """

    num_experts: int
    expert_features: Sequence[int]
    router_features: Sequence[int] = (32,)

    def setup(self):
        self.router = MLP(features=tuple(self.router_features) + (self.num_experts,),
                          name="router")
        self.experts = [MLP(features=tuple(self.expert_features), name=f"expert_{i}")
                        for i in range(self.num_experts)]

    def __call__(self, x: jax.Array, *, part: str = "output") -> jax.Array:
        gates = jax.nn.softmax(self.router(x), -1)
        if part == "router":
            return gates
        outs = jnp.stack([e(x) for e in self.experts], 1)  # [B, E, C]
        return jnp.einsum("be,bec->bc", gates, outs)

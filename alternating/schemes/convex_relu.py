"""The convex program of a two-layer ReLU network, solved by ADMM phases.

For data ``X`` (n x d) and targets ``y``, a two-layer ReLU network with
weight decay ``beta`` has the same optimal value as a convex group-lasso
program over fixed activation patterns ``D_i = diag(1[X g_i >= 0])``
(Pilanci and Ergen, 2020)::

    min_{v, w}  1/(2n) ||sum_i D_i X (v_i - w_i) - y||^2 + beta sum_i (||v_i|| + ||w_i||)
    s.t.        (2 D_i - I) X v_i >= 0,  (2 D_i - I) X w_i >= 0.

Here the patterns come from ``P`` sampled directions ``g_i``. The
constraints are split off with a slack ``s >= 0`` (``G u = s``, one row per
example, pattern and sign) and handled by ADMM on the augmented Lagrangian
``f(u) + lam . (G u - s) + rho/2 ||G u - s||^2``:

* primal phase: ``K`` gradient steps on ``u`` (the parameters; an inexact
  primal minimization, since the group norm has no closed-form joint prox);
* slack: ``s = max(0, G u + lam / rho)`` (an extra update rule, every ``K``);
* dual: ``lam = lam + rho (G u - s)`` (the next rule, same step).

Slack and duals live in ``state.extras``, so they are checkpointed with the
parameters. Each training example carries its index ``idx`` so that the
per-example slack rows follow the (shuffled) full batch.

The non-convex baseline is the network itself, ``relu(X W1) w2`` with
``beta/2 (||W1||^2 + ||w2||^2)``, trained by gradient descent.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from alternating.losses import register_loss
from alternating.models import Model, register_model


class ConvexReLU(nn.Module):
    """``u``: ``[P, 2, d]`` (``v_i``, ``w_i``); the pattern directions are fixed."""

    patterns: int
    dim: int
    pattern_seed: int = 0
    init_scale: float = 0.1

    def directions(self) -> jax.Array:
        return jnp.asarray(np.random.RandomState(self.pattern_seed).randn(self.dim, self.patterns),
                           jnp.float32)

    @nn.compact
    def __call__(self, x: jax.Array, *, part: str = "output"):
        u = self.param("u", nn.initializers.normal(self.init_scale),
                       (self.patterns, 2, self.dim))
        d = (x @ self.directions() >= 0).astype(x.dtype)  # [B, P]
        xu = jnp.einsum("bd,pkd->bpk", x, u)  # [B, P, 2]
        if part == "constraints":
            # (2 D - 1) X u >= 0 for both v and w: one row per example, pattern, sign.
            return (2 * d - 1)[..., None] * xu
        return (d * (xu[..., 0] - xu[..., 1])).sum(-1)


def group_norms(u: jax.Array) -> jax.Array:
    return jnp.sqrt((u ** 2).sum(-1) + 1e-12).sum()


def convex_objective(model, params, x, y, beta):
    r = model.apply(params, x) - y
    return 0.5 * (r ** 2).mean() + beta * group_norms(params["u"])


@register_loss("admm_primal")
def admm_primal(model, *, beta: float = 1e-3, rho: float = 1.0, slack: str = "slack",
                dual: str = "dual") -> Callable:
    """The augmented Lagrangian in ``u`` with slack and duals read from extras.

    Aux: ``objective`` (the convex objective at ``u``) and ``violation`` (the
    largest constraint violation, ``max(0, -G u)``).
    """
    def loss(params, batch, rng, extras):
        del rng
        idx = batch["idx"]
        g = model.apply(params, batch["x"], part="constraints")  # [B, P, 2]
        s, lam = extras[slack][idx], extras[dual][idx]
        n = g.shape[0]
        obj = convex_objective(model, params, batch["x"], batch["y"], beta)
        resid = g - s
        value = obj + ((lam * resid).sum() + 0.5 * rho * (resid ** 2).sum()) / n
        return value, {"objective": obj, "violation": jnp.maximum(-g, 0).max()}
    return loss


def slack_rule(model, *, data: Any, rho: float = 1.0, dual: str = "dual") -> Callable:
    """``s = max(0, G u + lam / rho)`` over the whole training set ``data['x']``."""
    x = jnp.asarray(np.asarray(data["x"]), jnp.float32)

    def rule(value, params, extras, rng, count):
        del value, rng, count
        g = model.apply(params, x, part="constraints")
        return jnp.maximum(0.0, g + extras[dual] / rho)
    return rule


def dual_rule(model, *, data: Any, rho: float = 1.0, slack: str = "slack") -> Callable:
    """``lam = lam + rho (G u - s)`` (runs after the slack rule)."""
    x = jnp.asarray(np.asarray(data["x"]), jnp.float32)

    def rule(value, params, extras, rng, count):
        del rng, count
        return value + rho * (model.apply(params, x, part="constraints") - extras[slack])
    return rule


def zeros_like_constraints(params, rng, *, n: int):
    """Initial slack or duals: zeros ``[n, P, 2]``."""
    del rng
    return jnp.zeros((n, params["u"].shape[0], 2), jnp.float32)


class ReLUNet(nn.Module):
    """``relu(x W1) w2``, no biases (append a constant feature for one)."""

    width: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.relu(nn.Dense(self.width, use_bias=False, name="W1")(x))
        return nn.Dense(1, use_bias=False, name="w2")(h)[:, 0]


@register_loss("relu_weight_decay")
def relu_weight_decay(model, *, beta: float = 1e-3) -> Callable:
    """The non-convex objective ``1/(2n) ||f(X) - y||^2 + beta/2 ||theta||^2``.

    Aux: ``objective`` (the same value, for tables shared with the convex runs).
    """
    def loss(params, batch, rng, extras):
        del rng, extras
        r = model.apply(params, batch["x"]) - batch["y"]
        sq = sum((p ** 2).sum() for p in jax.tree.leaves(params))
        value = 0.5 * (r ** 2).mean() + 0.5 * beta * sq
        return value, {"objective": value}
    return loss


def network_from_convex(u: jax.Array, x: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The ReLU network the convex solution stands for (exact when constraints hold).

    Neuron ``i`` of ``v``: ``W1 = v_i / sqrt(||v_i||)``, ``w2 = sqrt(||v_i||)``;
    of ``w``: the same with ``w2 = -sqrt(||w_i||)``. Returns ``f(x)``.
    """
    del x
    norms = jnp.sqrt((u ** 2).sum(-1) + 1e-12)  # [P, 2]
    w1 = u / jnp.sqrt(norms)[..., None]
    w2 = jnp.sqrt(norms) * jnp.asarray([1.0, -1.0])

    def f(z):
        return (jax.nn.relu(jnp.einsum("bd,pkd->bpk", z, w1)) * w2).sum((1, 2))
    return f


@register_model("convex_relu")
def _convex_relu(*, patterns, dim, pattern_seed=0, init_scale=0.1) -> Model:
    return Model(ConvexReLU(patterns=int(patterns), dim=int(dim), pattern_seed=int(pattern_seed),
                            init_scale=float(init_scale)), {"x": (int(dim),)})


@register_model("relu_net")
def _relu_net(*, width, dim) -> Model:
    return Model(ReLUNet(width=int(width)), {"x": (int(dim),)})

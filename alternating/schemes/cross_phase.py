"""Losses whose inputs are other phases' products.

A loss gets the *full* current parameters (the phase's own leaves, which it
differentiates, and every other group's leaves, which it only reads) and the
state's extras (teachers, snapshots, dual variables). So a phase can compute
its inputs from what other phases made, inside its own pure step:

* ``gan_critic`` / ``gan_generator``: generator samples drawn from the
  current generator parameters (``rng`` gives the noise) score the critic,
  and the current critic scores the generator;
* ``mean_teacher``: cross-entropy on labelled examples plus a consistency
  term to an EMA teacher's predictions (``extras[teacher]``) on unlabelled
  ones (pseudo-targets from a teacher);
* ``adversarial``: cross-entropy on PGD examples computed against the current
  model, optionally plus the clean loss.

All are registered with :mod:`alternating.losses`, so configs name them.
Nothing here has side effects: the "products" are read from the arguments.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from alternating.losses import masked_mean, register_loss

# --- Generator / critic. ------------------------------------------------------------


def _noise(model, rng, n):
    return jax.random.normal(rng, (n, model.module.z_dim), jnp.float32)


def nearest_mode_distance(samples: jax.Array, modes: jax.Array) -> jax.Array:
    """Per-sample Euclidean distance to the nearest of ``modes`` ``[M, D]``."""
    d = jnp.linalg.norm(samples[:, None, :] - modes[None, :, :], axis=-1)
    return d.min(-1)


@register_loss("gan_critic")
def gan_critic(model, *, x: str = "x") -> Callable:
    """Logistic critic loss: real ``batch[x]`` vs samples of the current generator.

    The generator's parameters are read, not trained (the critic phase's
    partition freezes them; ``stop_gradient`` keeps the graph small).
    Aux: ``real_prob`` and ``fake_prob``, the critic's mean probabilities.
    """
    def loss(params, batch, rng, extras):
        del extras
        real = batch[x]
        fake = jax.lax.stop_gradient(
            model.apply(params, _noise(model, rng, real.shape[0]), part="generator"))
        d_real = model.apply(params, real, part="critic")
        d_fake = model.apply(params, fake, part="critic")
        value = masked_mean(jax.nn.softplus(-d_real) + jax.nn.softplus(d_fake), batch)
        return value, {"real_prob": jax.nn.sigmoid(d_real).mean(),
                       "fake_prob": jax.nn.sigmoid(d_fake).mean()}
    return loss


@register_loss("gan_generator")
def gan_generator(model, *, modes: Any = None) -> Callable:
    """Non-saturating generator loss ``softplus(-critic(G(z)))`` under the current critic.

    Reads no data (the batch only sets the sample count). With ``modes``
    (``[[x, y], ...]``), aux ``mode_dist`` is the generator samples' mean
    distance to the nearest mode, a direct measure of sample quality.
    """
    modes_arr = None if modes is None else jnp.asarray(modes, jnp.float32)

    def loss(params, batch, rng, extras):
        del extras
        n = jax.tree.leaves(batch)[0].shape[0]
        fake = model.apply(params, _noise(model, rng, n), part="generator")
        value = jax.nn.softplus(-model.apply(params, fake, part="critic")).mean()
        aux = {}
        if modes_arr is not None:
            aux["mode_dist"] = nearest_mode_distance(fake, modes_arr).mean()
        return value, aux
    return loss


# --- Teachers. -----------------------------------------------------------------------


def _apply(model, params, xs, kwargs):
    return model.apply(params, xs, **kwargs)


@register_loss("mean_teacher")
def mean_teacher(model, *, teacher: str = "teacher", labeled: str = "labeled",
                 unlabeled: str = "unlabeled", weight: float = 1.0, noise: float = 0.0,
                 teacher_kwargs: Mapping[str, Any] | None = None,
                 x: str = "x", y: str = "y", **apply_kwargs) -> Callable:
    """Supervised CE plus consistency to a teacher held in ``extras[teacher]``.

    The batch is ``{labeled: batch, unlabeled: batch}`` (a phase reading two
    streams). Consistency is the mean squared difference of the student's and
    the teacher's class probabilities on the unlabelled inputs, each with its
    own Gaussian input noise (``noise`` std; the labelled inputs get noise
    too). The teacher is read, never differentiated; ``teacher_kwargs``
    (default: the student's ``apply`` keywords) apply it, e.g. another member
    of an ensemble. ``weight=0`` gives the supervised-only baseline.
    Aux: ``ce``, ``consistency``, ``accuracy`` (on the labelled batch).
    """
    t_kwargs = dict(apply_kwargs if teacher_kwargs is None else teacher_kwargs)

    def loss(params, batch, rng, extras):
        lab, unl = batch[labeled], batch[unlabeled]
        k0, k1, k2 = jax.random.split(rng, 3)
        xl = lab[x] + noise * jax.random.normal(k0, lab[x].shape, lab[x].dtype)
        logits = _apply(model, params, xl, apply_kwargs)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, lab[y]).mean()
        acc = (logits.argmax(-1) == lab[y]).astype(jnp.float32).mean()
        if weight == 0:
            return ce, {"ce": ce, "consistency": jnp.zeros(()), "accuracy": acc}
        xu = unl[x]
        xs = xu + noise * jax.random.normal(k1, xu.shape, xu.dtype)
        xt = xu + noise * jax.random.normal(k2, xu.shape, xu.dtype)
        p_s = jax.nn.softmax(_apply(model, params, xs, apply_kwargs))
        p_t = jax.lax.stop_gradient(jax.nn.softmax(_apply(model, extras[teacher], xt, t_kwargs)))
        cons = ((p_s - p_t) ** 2).sum(-1).mean()
        return ce + weight * cons, {"ce": ce, "consistency": cons, "accuracy": acc}
    return loss


# --- Adversarial examples against the current model. --------------------------------


def pgd(logit_fn: Callable[[jax.Array], jax.Array], objective: Callable, x: jax.Array,
        rng: jax.Array, *, eps: float, step_size: float, steps: int,
        lo: float = 0.0, hi: float = 1.0) -> jax.Array:
    """L-infinity PGD from a random start: maximizes ``objective(logit_fn(x_adv))``.

    Pure and differentiable-free (the result is ``stop_gradient``-ed), so a
    loss can build its own inputs against the current parameters.
    """
    x0 = x
    xa = jnp.clip(x + jax.random.uniform(rng, x.shape, x.dtype, -eps, eps), lo, hi)
    grad = jax.grad(lambda z: objective(logit_fn(z)))

    def body(_, xa):
        xa = xa + step_size * jnp.sign(grad(xa))
        return jnp.clip(jnp.clip(xa, x0 - eps, x0 + eps), lo, hi)

    return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, xa))


@register_loss("adversarial")
def adversarial(model, *, eps: float = 0.1, step_size: float = 0.025, steps: int = 5,
                clean_weight: float = 0.0, x: str = "x", y: str = "y",
                **apply_kwargs) -> Callable:
    """CE on PGD examples made against the current parameters (Madry-style).

    ``clean_weight`` adds that multiple of the clean CE. With ``steps=0`` it
    is the clean loss. Aux: ``accuracy`` (clean), ``adv_accuracy``.
    """
    def loss(params, batch, rng, extras):
        del extras
        frozen = jax.lax.stop_gradient(params)
        f = lambda z: _apply(model, frozen, z, apply_kwargs)
        labels = batch[y]
        ce_of = lambda logits: optax.softmax_cross_entropy_with_integer_labels(
            logits, labels).mean()
        xa = (pgd(f, ce_of, batch[x], rng, eps=eps, step_size=step_size, steps=steps)
              if steps else batch[x])
        adv_logits = _apply(model, params, xa, apply_kwargs)
        clean_logits = _apply(model, params, batch[x], apply_kwargs)
        value = masked_mean(optax.softmax_cross_entropy_with_integer_labels(adv_logits, labels),
                            batch)
        if clean_weight:
            value = value + clean_weight * masked_mean(
                optax.softmax_cross_entropy_with_integer_labels(clean_logits, labels), batch)
        acc = lambda lg: masked_mean((lg.argmax(-1) == labels).astype(jnp.float32), batch)
        return value, {"accuracy": acc(clean_logits), "adv_accuracy": acc(adv_logits)}
    return loss


def _kl(p_logits, q_logits):
    """Mean KL(softmax(p) || softmax(q)) over the batch."""
    lp, lq = jax.nn.log_softmax(p_logits), jax.nn.log_softmax(q_logits)
    return (jnp.exp(lp) * (lp - lq)).sum(-1).mean()


def _kl_probs(p, q):
    return (p * (jnp.log(p + 1e-8) - jnp.log(q + 1e-8))).sum(-1).mean()


@register_loss("trades")
def trades(model, *, beta: float = 6.0, router_beta: float = 0.0, attack_router: bool = False,
           eps: float = 0.1, step_size: float = 0.025, steps: int = 5, ce: bool = True,
           x: str = "x", y: str = "y") -> Callable:
    """TRADES-style robust loss, with optional router terms for a mixture of experts.

    ``x_adv`` maximizes ``KL(f(x) || f(x_adv))`` (plus the router gates' KL when
    ``attack_router``) by PGD against the current parameters. The loss is
    ``CE(f(x), y) + beta * KL(f(x_adv) || f(x)) + router_beta * KL(r(x_adv) ||
    r(x))`` (``r``: the router's gate probabilities, ``model.apply(...,
    part='router')``). A router/expert scheme gives each phase its own terms
    (AdvMoE: experts ``beta=6``, router ``router_beta=6``) and draws a fresh
    ``x_adv`` each step against the parameters as they are then.
    Aux: ``accuracy``, ``adv_accuracy``, ``kl``.
    """
    def loss(params, batch, rng, extras):
        del extras
        xs, labels = batch[x], batch[y]
        frozen = jax.lax.stop_gradient(params)
        clean_ref = model.apply(frozen, xs)
        gates_ref = model.apply(frozen, xs, part="router") if attack_router else None

        def objective(z):
            obj = _kl(clean_ref, model.apply(frozen, z))
            if attack_router:
                obj = obj + _kl_probs(gates_ref, model.apply(frozen, z, part="router"))
            return obj

        # PGD's random start matters here: the KL objective has zero gradient at x.
        xa = pgd(lambda z: z, objective, xs, rng, eps=eps, step_size=step_size, steps=steps)
        logits, adv_logits = model.apply(params, xs), model.apply(params, xa)
        kl = _kl(adv_logits, logits)
        value = beta * kl
        if ce:
            value = value + optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        if router_beta:
            value = value + router_beta * _kl_probs(model.apply(params, xa, part="router"),
                                                    model.apply(params, xs, part="router"))
        acc = lambda lg: (lg.argmax(-1) == labels).astype(jnp.float32).mean()
        return value, {"accuracy": acc(logits), "adv_accuracy": acc(adv_logits), "kl": kl}
    return loss


# --- Stale behaviour policies (snapshots in a ring). ----------------------------------


@register_loss("stale_policy_gradient")
def stale_policy_gradient(model, *, eta: int = 0, objective: str = "ppo", clip: float = 0.2,
                          cap: float = 5.0, ring: str = "snapshots", x: str = "x",
                          y: str = "y") -> Callable:
    """One-step bandit policy gradient on rollouts from a policy ``eta`` versions old.

    The behaviour policy is ``ring_get(extras[ring], eta)`` (a snapshot pushed
    ``eta`` pushes ago); the proximal policy is the newest snapshot. Actions are
    sampled from the behaviour policy with ``rng``; the reward is 1 when the
    action equals ``batch[y]``; the advantage is the reward minus the batch
    mean. ``objective``:

    * ``ppo``: clipped ratio ``pi / pi_behav`` (standard PPO on stale data);
    * ``decoupled``: clipped ratio ``pi / pi_prox``, weighted by
      ``min(pi_prox / pi_behav, cap)`` (the decoupled objective, AReaL-style).

    With ``eta=0`` both are the same objective. Aux: ``reward`` (of the
    behaviour rollouts), ``clip_frac``.
    """
    from alternating.extras import ring_get  # extras imports nothing from this module
    if objective not in ("ppo", "decoupled"):
        raise ValueError(f"objective={objective!r}; valid: ['ppo', 'decoupled'].")

    def loss(params, batch, rng, extras):
        xs, target = batch[x], batch[y]
        behav = jax.lax.stop_gradient(ring_get(extras[ring], eta))
        prox = jax.lax.stop_gradient(ring_get(extras[ring], 0))
        logp_b = jax.nn.log_softmax(model.apply(behav, xs))
        actions = jax.random.categorical(rng, logp_b)
        reward = (actions == target).astype(jnp.float32)
        adv = reward - reward.mean()
        pick = lambda lp: jnp.take_along_axis(lp, actions[:, None], -1)[:, 0]
        logp = pick(jax.nn.log_softmax(model.apply(params, xs)))
        lb = pick(logp_b)
        if objective == "ppo":
            ratio, weight = jnp.exp(logp - lb), 1.0
        else:
            lp = pick(jax.nn.log_softmax(model.apply(prox, xs)))
            ratio, weight = jnp.exp(logp - lp), jnp.minimum(jnp.exp(lp - lb), cap)
        clipped = jnp.clip(ratio, 1 - clip, 1 + clip)
        obj = weight * jnp.minimum(ratio * adv, clipped * adv)
        frac = (jnp.abs(ratio - 1) > clip).astype(jnp.float32).mean()
        return -obj.mean(), {"reward": reward.mean(), "clip_frac": frac}
    return loss


r"""Class-mean heads on a frozen body: the nearest-mean classifier (NMC) and LDA.

* :class:`ClassStatistics`, a hook (registered ``class_statistics``) that
  runs at the end of each task's phase, passes that task's training data
  (``ctx.batches``, deterministic, padding masked, one jitted function)
  through the body and accumulates, in an extra it declares itself (kind
  ``init``, :func:`init_stats`; checkpointed and resumed with the state)::

      extras['class_stats'] = {'sum':     [C, D] per-class feature sums,
                               'count':   [C]    per-class example counts,
                               'scatter': [D, D] sum of f f^T over every example,
                               'w': [D, C], 'b': [C]  the head: logits = f @ w + b}

  ``f`` is the penultimate feature vector (the input of the model's last
  ``Dense`` layer, :func:`alternating.continual.distill.penultimate`).
  Sums are accumulated over the tasks, so with a frozen body the means are
  exact class means over every example seen; with a body that keeps
  training, an old class keeps the mean of the body it was computed with.
  The head is recomputed from the sums at every task end (on the host, in
  float64), for the classes with at least one example; the others get
  ``b = -1e9`` and are never predicted:

  - ``head='nmc'``: nearest mean in Euclidean distance,
    :math:`\arg\min_c \|f - \mu_c\|^2 = \arg\max_c 2\mu_c^\top f - \|\mu_c\|^2`,
    so ``w = 2 mu^T``, ``b = -|mu|^2``.
  - ``head='lda'``: the shared within-class covariance
    :math:`\Sigma = (\sum f f^\top - \sum_c n_c \mu_c \mu_c^\top) / (N - K)`
    (``K`` classes seen, ``N`` examples), shrunk towards a scaled identity,
    :math:`\Sigma_\alpha = (1 - \alpha)\Sigma + \alpha \frac{\mathrm{tr}\Sigma}{D} I`
    (``alpha = shrinkage``), and the linear discriminant with equal class
    priors, :math:`g_c(f) = \mu_c^\top \Sigma_\alpha^{-1} f - \frac12
    \mu_c^\top \Sigma_\alpha^{-1} \mu_c`.

* :func:`head_classification`, a loss (registered ``head_classification``):
  the base loss's value (what the phase trains, if anything), and
  ``accuracy`` from the head, so the accuracy-matrix evaluator, which scores
  a task by its phase loss's aux ``accuracy``, scores the head; the base
  loss's own accuracy is kept as ``linear_accuracy``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alternating import losses, registry
from alternating.continual.distill import penultimate
from alternating.continual.regularizers import task_specs

HEADS = ("nmc", "lda")
_NEVER = -1e9  # bias of a class without examples: never the argmax


def init_stats(params: Any, rng: Any, *, num_classes: int, dim: int) -> dict[str, Any]:
    """The statistics extra before any task ended (``extras`` kind ``init``)."""
    del params, rng
    c, d = int(num_classes), int(dim)
    return {"sum": jnp.zeros((c, d), jnp.float32), "count": jnp.zeros((c,), jnp.float32),
            "scatter": jnp.zeros((d, d), jnp.float32), "w": jnp.zeros((d, c), jnp.float32),
            "b": jnp.full((c,), _NEVER, jnp.float32)}


def head_weights(sums: np.ndarray, counts: np.ndarray, scatter: np.ndarray, head: str,
                 shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
    """``(w [D, C], b [C])`` of a head from the class statistics (float64; see the module)."""
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    seen = counts > 0
    means = np.where(seen[:, None], sums / np.maximum(counts, 1.0)[:, None], 0.0)
    if head == "nmc":
        w, b = 2.0 * means.T, -(means ** 2).sum(-1)
    else:
        d = means.shape[1]
        n, k = counts.sum(), max(int(seen.sum()), 1)
        between = (counts[:, None, None] * means[:, :, None] * means[:, None, :]).sum(0)
        cov = (np.asarray(scatter, np.float64) - between) / max(n - k, 1.0)
        cov = (1.0 - shrinkage) * cov + shrinkage * np.trace(cov) / d * np.eye(d)
        w = np.linalg.solve(cov + 1e-12 * np.eye(d), means.T)
        b = -0.5 * (means * w.T).sum(-1)
    w = np.where(seen[None], w, 0.0)
    return w, np.where(seen, b, _NEVER)


def _stats_pass(model: Any, num_classes: int) -> Any:
    """``(params, batch) -> (sum [C, D], count [C], scatter [D, D])`` over real examples."""
    def run(params, batch):
        f = penultimate(model, params, batch["x"]).astype(jnp.float32)
        f = f.reshape(f.shape[0], -1)
        m = batch["mask"].astype(jnp.float32)
        onehot = jax.nn.one_hot(batch["y"], num_classes, dtype=jnp.float32) * m[:, None]
        fm = f * m[:, None]
        return onehot.T @ f, onehot.sum(0), fm.T @ f
    return run


class ClassStatistics:
    """Hook: class feature statistics and the NMC / LDA head at each task's end (see the module).

    Args:
      tasks: ``{phase: training data spec}`` (``TaskStream.data()``) or a list
        of ``{name|phase, data}``.
      num_classes: the model's number of outputs (classes).
      dim: the penultimate feature size.
      head: ``nmc`` or ``lda``.
      shrinkage: LDA's ``alpha`` in [0, 1].
      batch_size: batch size of the pass over a task's data.
      stats: the extra's name.
    """

    name = "class_statistics"

    def __init__(self, tasks: Any, num_classes: int, dim: int, head: str = "nmc",
                 shrinkage: float = 0.1, batch_size: int = 256, stats: str = "class_stats"):
        self.tasks = task_specs(tasks, "ClassStatistics")
        if head not in HEADS:
            raise ValueError(f"ClassStatistics: head={head!r}; valid heads: {list(HEADS)}.")
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"ClassStatistics: shrinkage={shrinkage}; it must be in [0, 1].")
        if int(num_classes) < 1 or int(dim) < 1:
            raise ValueError(f"ClassStatistics: num_classes={num_classes}, dim={dim}; both "
                             "must be >= 1.")
        self.head, self.shrinkage = head, float(shrinkage)
        self.num_classes, self.dim = int(num_classes), int(dim)
        self.batch_size, self.stats = int(batch_size), str(stats)
        self.when = {"phase_end": list(self.tasks)}
        self.extras = {self.stats: {"kind": "init", "init": "alternating.continual.heads:init_stats",
                                    "kwargs": {"num_classes": self.num_classes, "dim": self.dim}}}
        self._fn: Any = None

    def accumulate(self, state: Any, phase: str, ctx: Any) -> dict[str, np.ndarray]:
        """The statistics after adding task ``phase``'s training data (host, float64 sums)."""
        if self._fn is None:
            self._fn = ctx.jit(_stats_pass(ctx.model, self.num_classes), f"hook:{self.name}")
        old = jax.device_get(state.extras[self.stats])
        out = {k: np.asarray(old[k], np.float64) for k in ("sum", "count", "scatter")}
        for batch in ctx.batches(self.tasks[phase], self.batch_size):
            s, n, sc = jax.device_get(self._fn(state.params, batch))
            if s.shape[1] != self.dim:
                raise ValueError(f"hook {self.name!r}: the model's penultimate features have "
                                 f"{s.shape[1]} dimensions, dim={self.dim}; fix dim.")
            out["sum"] += s
            out["count"] += n
            out["scatter"] += sc
        return out

    def __call__(self, state: Any, event: Any, ctx: Any) -> Any:
        if getattr(ctx, "dry_run", False) or event.ended not in self.tasks:
            return None
        new = self.accumulate(state, event.ended, ctx)
        new["w"], new["b"] = head_weights(new["sum"], new["count"], new["scatter"], self.head,
                                          self.shrinkage)
        old = state.extras[self.stats]
        stats = {k: jnp.asarray(new[k], old[k].dtype) for k in old}
        return state.replace(extras={**state.extras, self.stats: stats})


@losses.register_loss("head_classification")
def head_classification(model: Any, *, stats: str = "class_stats", base: Any = "classification",
                        **base_kwargs) -> losses.LossFn:
    """The base loss; aux ``accuracy`` from the class-mean head, ``linear_accuracy`` the base's.

    Args:
      model: the config's model (it must call a ``Dense`` layer last).
      stats: the extra :class:`ClassStatistics` writes.
      base: the base loss (name, ``module:function`` or callable), built with
        ``base_kwargs``; it must report ``accuracy``.
    """
    base_fn = losses.resolve_loss(base, model, base_kwargs,
                                  where="loss 'head_classification' base")
    x_key, y_key = base_kwargs.get("x", "x"), base_kwargs.get("y", "y")

    def loss(params, batch, rng, extras):
        if stats not in extras:
            raise ValueError(f"loss 'head_classification': extras has no {stats!r} (it has "
                             f"{sorted(extras)}); add the ClassStatistics hook, which declares "
                             "it.")
        value, aux = base_fn(params, batch, rng, extras)
        f = penultimate(model, params, batch[x_key]).astype(jnp.float32)
        logits = f.reshape(f.shape[0], -1) @ extras[stats]["w"] + extras[stats]["b"]
        acc = (jnp.argmax(logits, -1) == batch[y_key]).astype(jnp.float32)
        return value, {**aux, "linear_accuracy": aux.get("accuracy", jnp.float32(0.0)),
                       "accuracy": losses.masked_mean(acc, batch)}

    loss.base = base_fn
    return loss


registry.HOOKS.register("class_statistics", ClassStatistics)

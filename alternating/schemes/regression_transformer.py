"""One small sequence model that both predicts a property and generates conditioned on it.

Regression-Transformer-style (scheme 13): a sequence is ``[property token,
s_1, ..., s_L]``; the property is a bin of a number computable from the
sequence. One transformer encoder reads it with some tokens masked:

* property prediction (phase ``predict``): the property token is masked and
  predicted from the sequence;
* conditional generation (phase ``generate``): a fraction of the sequence
  tokens is masked and predicted given the (true) property token;
* self-consistency (added to ``generate``): a *requested* property is primed
  instead, the masked tokens are filled with the model's soft predictions
  (probability-weighted embeddings, so the term is differentiable), and the
  model's own property prediction on that filled sequence must match the
  request.

The synthetic task: digits 0-9, property = mean digit / 9 in ``BINS`` bins.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from alternating.losses import register_loss
from alternating.models import Model, register_model

VOCAB, BINS = 10, 10


def make_sequences(n: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` sequences whose digit distribution is tilted per sequence, so properties spread."""
    r = np.random.RandomState(seed)
    tilt = r.uniform(-1.0, 1.0, size=(n, 1))
    logits = tilt * np.arange(VOCAB)[None] / 2.0
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    u = r.rand(n, length, 1)
    seq = (u > np.cumsum(probs, -1)[:, None, :]).sum(-1).astype(np.int32)
    return {"x": seq, "y": property_bin(seq)}


def property_value(seq) -> np.ndarray:
    return np.asarray(seq).mean(-1) / (VOCAB - 1)


def property_bin(seq) -> np.ndarray:
    return np.minimum((property_value(seq) * BINS).astype(np.int32), BINS - 1)


class SeqModel(nn.Module):
    """A tiny transformer encoder over ``[property, s_1..s_L]``.

    Token ids: the property slot takes ``0..BINS-1`` or ``BINS`` (mask); the
    sequence slots ``0..VOCAB-1`` or ``VOCAB`` (mask). ``soft`` (``[B, L,
    VOCAB]`` probabilities) replaces the sequence embeddings by their
    expectation where ``soft_mask`` is 1.
    """

    length: int
    dim: int = 64
    heads: int = 4
    layers: int = 2

    @nn.compact
    def __call__(self, prop, seq, soft=None, soft_mask=None):
        pe = nn.Embed(BINS + 1, self.dim, name="prop_embed")(prop)[:, None]
        emb = nn.Embed(VOCAB + 1, self.dim, name="seq_embed")
        se = emb(seq)
        if soft is not None:
            soft_e = soft @ emb.embedding[:VOCAB]
            se = jnp.where(soft_mask[..., None] > 0, soft_e, se)
        h = jnp.concatenate([pe, se], 1)
        h = h + self.param("pos", nn.initializers.normal(0.02), (self.length + 1, self.dim))
        for i in range(self.layers):
            a = nn.SelfAttention(num_heads=self.heads, name=f"attn_{i}")(nn.LayerNorm()(h))
            h = h + a
            m = nn.Dense(self.dim)(nn.gelu(nn.Dense(2 * self.dim)(nn.LayerNorm()(h))))
            h = h + m
        h = nn.LayerNorm()(h)
        return nn.Dense(BINS, name="prop_head")(h[:, 0]), nn.Dense(VOCAB, name="seq_head")(h[:, 1:])

    def init_all(self, x):
        seq = x.astype(jnp.int32)
        return self(jnp.zeros(seq.shape[:1], jnp.int32), seq)


def _apply(model, params, prop, seq, **kw):
    return model.module.apply({"params": params}, prop, seq, **kw)


def _mask(rng, shape, frac):
    return (jax.random.uniform(rng, shape) < frac).astype(jnp.int32)


@register_loss("rt_predict")
def rt_predict(model) -> Callable:
    """CE of the masked property token. Aux: ``prop_mae`` (|bin error| / BINS)."""
    def loss(params, batch, rng, extras):
        del rng, extras
        seq = batch["x"].astype(jnp.int32)
        masked = jnp.full(seq.shape[:1], BINS, jnp.int32)
        logits, _ = _apply(model, params, masked, seq)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        mae = jnp.abs(logits.argmax(-1) - batch["y"]).mean() / BINS
        return ce, {"prop_mae": mae}
    return loss


@register_loss("rt_generate")
def rt_generate(model, *, mask_frac: float = 0.4, consistency: float = 0.0) -> Callable:
    """Conditional masked-token CE given the true property, plus ``consistency`` x SC.

    Aux: ``gen_ce``, ``sc`` (the self-consistency CE, 0 when off).
    """
    def loss(params, batch, rng, extras):
        del extras
        seq = batch["x"].astype(jnp.int32)
        k1, k2, k3 = jax.random.split(rng, 3)
        m = _mask(k1, seq.shape, mask_frac)
        _, seq_logits = _apply(model, params, batch["y"], jnp.where(m > 0, VOCAB, seq))
        ce = optax.softmax_cross_entropy_with_integer_labels(seq_logits, seq)
        gen_ce = (ce * m).sum() / jnp.maximum(m.sum(), 1)
        value, sc = gen_ce, jnp.zeros(())
        if consistency:
            want = jax.random.randint(k2, seq.shape[:1], 0, BINS)
            m2 = _mask(k3, seq.shape, mask_frac)
            masked = jnp.where(m2 > 0, VOCAB, seq)
            _, logits2 = _apply(model, params, want, masked)
            soft = jax.nn.softmax(logits2)
            prop_logits, _ = _apply(model, params, jnp.full(seq.shape[:1], BINS, jnp.int32),
                                    masked, soft=soft, soft_mask=m2)
            sc = optax.softmax_cross_entropy_with_integer_labels(prop_logits, want).mean()
            value = value + consistency * sc
        return value, {"gen_ce": gen_ce, "sc": sc}
    return loss


def evaluate(model, params, data, *, mask_frac: float = 0.4, seed: int = 0) -> dict[str, float]:
    """Property MAE (in property units) and the Spearman correlation of requested vs achieved.

    For generation each test sequence gets a random requested bin; a random
    ``mask_frac`` of its tokens is refilled by the model's argmax given that
    bin, and the filled sequence's true property is computed.
    """
    from scipy import stats  # pylint: disable=g-import-not-at-top
    seq = jnp.asarray(data["x"], jnp.int32)
    n = seq.shape[0]
    masked_prop = jnp.full((n,), BINS, jnp.int32)
    logits, _ = _apply(model, params, masked_prop, seq)
    pred = (np.asarray(logits.argmax(-1)) + 0.5) / BINS
    mae = float(np.abs(pred - property_value(data["x"])).mean())
    r = np.random.RandomState(seed)
    want = r.randint(0, BINS, size=n)
    m = r.rand(*seq.shape) < mask_frac
    inp = jnp.where(jnp.asarray(m), VOCAB, seq)
    _, seq_logits = _apply(model, params, jnp.asarray(want, jnp.int32), inp)
    filled = np.where(m, np.asarray(seq_logits.argmax(-1)), np.asarray(seq))
    achieved = property_value(filled)
    rho = float(stats.spearmanr(want, achieved).correlation)
    # Reference: the correlation when masked tokens are left as they were.
    base = float(stats.spearmanr(want, property_value(data["x"])).correlation)
    return {"prop_mae": mae, "spearman": rho, "spearman_unchanged": base}


@register_model("seq_model")
def _seq_model(*, length, dim=64, heads=4, layers=2) -> Model:
    return Model(SeqModel(length=int(length), dim=int(dim), heads=int(heads), layers=int(layers)),
                 {"x": (int(length),)}, init_method="init_all")

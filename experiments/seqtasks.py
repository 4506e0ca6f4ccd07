"""Small verifiable token tasks and their losses, shared by the SASR and DUMP reproductions.

A policy is an MLP over the one-hot prompt that outputs ``L`` independent
categorical tokens (``L x V`` logits): sampling a whole answer is one
``jax.random.categorical`` call, and the probability of the exact answer is a
product over positions, so the expected reward is computed exactly.

Losses follow the library's ``loss(params, batch, rng, extras) -> (loss, aux)``:

* :func:`sft_loss`: cross-entropy on the batch's (possibly noisy)
  demonstrations ``y``;
* :func:`grpo_loss`: GRPO-style policy gradient: ``group`` answers sampled
  per prompt, reward 1 for the exact answer ``y`` (the verifier), advantages
  normalized within each prompt's group, ``-mean(adv * log pi(answer))``;
  aux ``reward`` and ``abs_advantage`` (DUMP's learnability signal);
* :func:`eval_loss`: ``-log p(exact)``; aux ``expected_reward`` (``p(exact)``)
  and ``greedy_accuracy``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from alternating.models import MLP


class Policy:
    """An MLP over one-hot prompts of ``prompt_len`` tokens (vocabulary ``in_vocab``)."""

    def __init__(self, prompt_len: int, in_vocab: int, answer_len: int, vocab: int,
                 hidden=(256,)):
        self.prompt_len, self.in_vocab = prompt_len, in_vocab
        self.answer_len, self.vocab = answer_len, vocab
        self.net = MLP(features=tuple(hidden) + (answer_len * vocab,))

    def init(self, rng):
        return self.net.init(rng, jnp.zeros((1, self.prompt_len * self.in_vocab)))["params"]

    def logits(self, params, x):
        tokens = x.astype(jnp.int32)
        h = jax.nn.one_hot(tokens, self.in_vocab).reshape(tokens.shape[0], -1)
        return self.net.apply({"params": params}, h).reshape(-1, self.answer_len, self.vocab)

    def sft_loss(self, params, batch, rng, extras):
        logp = jax.nn.log_softmax(self.logits(params, batch["x"]))
        y = batch["y"].reshape(-1, self.answer_len)
        return -jnp.take_along_axis(logp, y[..., None], -1).mean(), {}

    def grpo_loss(self, params, batch, rng, extras, group: int = 8):
        logp = jax.nn.log_softmax(self.logits(params, batch["x"]))  # B, L, V
        y = batch["y"].reshape(-1, self.answer_len)
        b = logp.shape[0]
        samples = jax.random.categorical(rng, jax.lax.stop_gradient(logp),
                                         shape=(group, b, self.answer_len))  # G, B, L
        reward = (samples == y[None]).all(-1).astype(jnp.float32)  # G, B
        adv = (reward - reward.mean(0)) / (reward.std(0) + 1e-6)
        lp = jnp.take_along_axis(logp[None].repeat(group, 0), samples[..., None], -1)[..., 0]
        loss = -(jax.lax.stop_gradient(adv) * lp.sum(-1)).mean()
        return loss, {"reward": reward.mean(), "abs_advantage": jnp.abs(adv).mean()}

    def eval_loss(self, params, batch, rng, extras):
        logp = jax.nn.log_softmax(self.logits(params, batch["x"]))
        y = batch["y"].reshape(-1, self.answer_len)
        lp_exact = jnp.take_along_axis(logp, y[..., None], -1)[..., 0].sum(-1)
        greedy = (logp.argmax(-1) == y).all(-1).astype(jnp.float32)
        return -lp_exact.mean(), {"expected_reward": jnp.exp(lp_exact).mean(),
                                  "greedy_accuracy": greedy.mean()}


# --- data ---------------------------------------------------------------------------------------


def pair_sums(n: int, length: int, seed: int, noise: float = 0.0) -> dict[str, np.ndarray]:
    """Prompts of ``length`` digits; answer ``y_k = (x_k + x_{k+1 mod L}) mod 10``.

    A fraction ``noise`` of the demonstrations is systematically wrong: every
    token off by one (``+1 mod 10``), the kind of error a flawed demonstrator
    makes consistently.
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, (n, length))
    y = (x + np.roll(x, -1, axis=1)) % 10
    bad = rng.random(n) < noise
    y_demo = np.where(bad[:, None], (y + 1) % 10, y)
    return {"x": x.astype(np.float32), "y": y.astype(np.int32),
            "y_demo": y_demo.astype(np.int32)}


PAD = 10


def modular_sums(n: int, operands: int, max_operands: int, seed: int,
                 answer: str = "mod10") -> dict[str, np.ndarray]:
    """Prompts of ``operands`` digits (padded with token 10 to ``max_operands``).

    ``answer='mod10'``: one token, the sum mod 10 (a random policy is right
    10% of the time); ``'mod100'``: two tokens, tens and units of the sum
    mod 100 (right 1% of the time by chance).
    """
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, (n, operands))
    x = np.full((n, max_operands), PAD)
    x[:, :operands] = digits
    total = digits.sum(1)
    if answer == "mod10":
        y = (total % 10)[:, None]
    elif answer == "mod100":
        y = np.stack([(total % 100) // 10, total % 10], axis=1)
    else:
        raise ValueError(f"answer={answer!r}; valid: ['mod10', 'mod100'].")
    return {"x": x.astype(np.float32), "y": y.astype(np.int32)}


def seed_of(*parts: Any) -> int:
    """A stable data seed from small ints (split, level, run seed)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])

r"""SASR-style adaptive SFT/RL switching (scheme 9 of the project's scheme list).

Task (``experiments/seqtasks.py``): prompts of 3 digits, answer
``y_k = (x_k + x_{k+1}) mod 10``; reward 1 only for the exact 3-token answer.
A fraction ``noise`` of the demonstrations is systematically off by one. The
policy is an MLP with 3 independent output tokens. Phase ``sft``:
cross-entropy on the (noisy) demonstrations; phase ``rl``: GRPO-style policy
gradient with ``group`` samples per prompt. Each phase has its own Adam.

Arms at equal total steps: ``sft_only``, ``rl_only``, ``sft_then_rl``
(``warmup_steps`` of SFT then RL), ``mix_50_50`` (each step SFT or RL with
probability 1/2) and ``adaptive`` (schedule ``sasr``: SFT warm-up, then SFT
with probability ``min(1, g_t / g_warm)`` of the SFT gradient norm).

``val_size`` prompts drawn with the training set (scored against the true
answers) are the validation set on which ``experiments/sasr.py`` chooses each
arm's learning rate; ``lr`` is the rate a plain run uses.

Command (5 seeds and a learning-rate grid per arm; writes
docs/results/sasr.{json,md}; the figures and run time are on that page)::

    .venv/bin/python experiments/sasr.py

Variants: ``smoke`` (a few steps, tests).
"""

import ml_collections


def get_config(arg=None):
    opts = [t for t in (arg or "").split(",") if t]
    bad = [t for t in opts if t != "smoke"]
    if bad:
        raise ValueError(f"configs/sasr.py: unknown variant(s) {bad}; valid: 'smoke'.")
    c = ml_collections.ConfigDict()
    c.length = 3
    c.noise = 0.4
    c.train_size = 4000
    c.test_size = 500
    c.val_size = 500
    c.hidden = [512]
    c.batch_size = 64
    c.group = 8
    c.lr = 3e-3
    c.steps = 1500
    c.warmup_steps = 300
    c.feedback_every = 10
    c.eval_every = 150
    c.seeds = [0, 1, 2, 3, 4]
    c.arms = ["sft_only", "rl_only", "sft_then_rl", "mix_50_50", "adaptive"]
    if "smoke" in opts:
        c.steps, c.warmup_steps, c.eval_every, c.seeds = 40, 20, 20, [0, 1]
        c.train_size, c.val_size, c.test_size = 400, 100, 100
    return c

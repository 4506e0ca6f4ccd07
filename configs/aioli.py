r"""Aioli online data mixing vs stratified sampling and multiplicative weights (scheme 6).

A tiny language model (an MLP over the one-hot last ``context`` tokens,
vocabulary 32) trained on several data groups, one phase per group (same
loss, own stream, own Adam). Groups (``experiments/aioli.py``): first-order
Markov chains of low, middle and high entropy, a fourth chain that shares
half of its transition rows with the middle one, and text from Python's
standard-library sources (characters folded into 32 tokens).

Arms at equal steps: ``stratified`` (each step a group drawn uniformly),
``multiplicative_weights`` (schedule ``multiplicative_weights`` on the
training loss) and ``aioli`` (schedule ``aioli``: probe sweeps of
``probe_steps`` steps, ``exploit_steps`` between rounds, eta 0.2, probe weight
0.625, smoothing 0.1; its probe steps count toward the budget) and
``aioli_shuffled`` (the same with each round's probe order drawn at random,
our addition). ``stratified_one_optimizer`` and ``aioli_one_optimizer``:
the same with one Adam state shared by every phase (``optimizer_group``), as
the paper trains one model with one optimizer. Metric: average over groups
of the test loss.

Command (10 seeds, six arms; writes docs/results/aioli.md and its JSON)::

    python experiments/aioli.py

Figures: docs/results/aioli.md.

Variants: ``smoke`` (a few steps, tests).
"""

import ml_collections


def get_config(arg=None):
    opts = [t for t in (arg or "").split(",") if t]
    bad = [t for t in opts if t != "smoke"]
    if bad:
        raise ValueError(f"configs/aioli.py: unknown variant(s) {bad}; valid: 'smoke'.")
    c = ml_collections.ConfigDict()
    c.vocab = 32
    c.context = 4
    c.train_size = 20000
    c.val_size = 1000
    c.hidden = [128]
    c.batch_size = 64
    c.lr = 3e-3
    c.steps = 2400
    c.probe_steps = 20
    c.exploit_steps = 200
    c.eta = 0.2
    c.mw_eta = 0.1
    c.feedback_every = 20
    c.seeds = list(range(10))  # an arm's 10 seeds take about 40 s on 2 cores
    c.arms = ["stratified", "multiplicative_weights", "aioli", "aioli_shuffled",
              "stratified_one_optimizer", "aioli_one_optimizer"]
    if "smoke" in opts:
        c.steps, c.probe_steps, c.exploit_steps, c.seeds = 60, 5, 10, [0, 1]
        c.train_size, c.val_size = 2000, 200
    return c

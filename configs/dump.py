r"""DUMP: UCB over data distributions for RL post-training (scheme 5 of the project's list).

Task (``experiments/seqtasks.py``): prompts of k digits (k = 1..6, padded to
6), answer: their sum mod 100 as two tokens (variant ``mod10``: the sum mod
10 as one token, which a random policy gets right 10% of the time); reward 1
for the exact answer. One phase per
difficulty level (``level_k``), each a GRPO-style policy-gradient step on its
own prompt stream (``group`` samples per prompt, group-normalized
advantages; each phase has its own Adam state, or one shared by the levels in the
``_one_optimizer`` arms of ``experiments/dump.py``).

Arms at equal steps: ``uniform`` (each step a level drawn uniformly),
``ucb`` (schedule ``ucb`` on the mean absolute advantage: window, c=1,
temperature 0.1) and ``ucb_no_explore`` (c=0); ``experiments/dump.py`` adds
``uniform_one_optimizer`` and ``ucb_one_optimizer``. Each arm's Adam learning
rate is chosen from ``lrs`` on ``val_size`` generated validation prompts per
level (not the test prompts).

Command of the page (5 seeds, 600 steps; writes docs/results/dump.json and
.md; 1335 s on a 2-core CPU shared with other jobs, 40 runs)::

    python experiments/dump.py --seeds 0 1 2 3 4 --steps 600 --eval-every 100

Expected: docs/results/dump.md (UCB vs uniform inconclusive; one shared Adam
state above per-level states).

Variants: ``smoke`` (a few steps, tests), ``mod10`` (the one-token task;
``python experiments/dump.py --answer mod10`` writes docs/results/dump_mod10.md).
"""

import ml_collections


def get_config(arg=None):
    opts = [t for t in (arg or "").split(",") if t]
    bad = [t for t in opts if t not in ("smoke", "mod10", "mod100")]
    if bad:
        raise ValueError(f"configs/dump.py: unknown variant(s) {bad}; valid: 'smoke', 'mod10', "
                         "'mod100'.")
    c = ml_collections.ConfigDict()
    c.levels = 6
    c.answer = "mod10" if "mod10" in opts else "mod100"
    c.train_size = 4000
    c.test_size = 500
    c.hidden = [256, 256]
    c.batch_size = 64
    c.group = 8
    c.lr = 1e-3  # run_one's default; the pages choose from lrs
    c.lrs = [3e-4, 1e-3, 3e-3]
    c.val_size = 250
    c.steps = 2400
    c.eval_every = 200
    c.window = 20  # steps; each step's value averages batch_size * group samples
    c.c = 1.0
    c.temperature = 0.1
    c.feedback_every = 10
    c.seeds = [0, 1, 2, 3, 4]
    c.arms = ["uniform", "ucb", "ucb_no_explore"]
    if "smoke" in opts:
        c.steps, c.eval_every, c.seeds, c.levels = 40, 20, [0], 3
    return c

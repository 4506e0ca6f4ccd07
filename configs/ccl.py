r"""Cyclical curriculum learning (scheme 7 of the project's scheme list, CCL).

One classification phase on ``digits`` or ``mnist1d``; its training stream is a
``CurriculumStream`` (``alternating/data/curriculum.py``). Arms, at equal
optimizer steps:

* ``vanilla``: every epoch is the whole shuffled training set;
* ``easy_first``: monotone curriculum, epoch sizes 0.25, 0.5, 0.75, then 1 of
  the data, examples drawn by static score;
* ``cyclical``: epoch sizes cycle 0.25, 0.5, 1, 0.5, 0.25, ... (CCL), drawn by
  static score;
* ``cyclical_self_paced``: the same cycle, scores re-computed at each epoch
  start from the current model (true-class probability).

Static scores are the true-class probabilities of a vanilla scoring run (a
different seed, ``score_steps`` steps). Sampling: by score, without
replacement (``sampling``).

Command (both datasets, 5 seeds, a 3-value learning-rate grid chosen per arm
on 20% of the training split; writes ``docs/results/ccl.json`` and ``.md``)::

    python experiments/ccl.py

Expected: docs/results/ccl.md.

Variants: ``digits`` (default), ``mnist1d``, ``smoke`` (a few steps, tests).
"""

import ml_collections

ARMS = {
    "vanilla": dict(sizes=[1.0], cycle=True, scores="none"),
    "easy_first": dict(sizes=[0.25, 0.5, 0.75, 1.0], cycle=False, scores="static"),
    "cyclical": dict(sizes=[0.25, 0.5, 1.0, 0.5], cycle=True, scores="static"),
    "cyclical_self_paced": dict(sizes=[0.25, 0.5, 1.0, 0.5], cycle=True, scores="self_paced"),
}


def get_config(arg=None):
    opts = [t for t in (arg or "").split(",") if t]
    dataset = "mnist1d" if "mnist1d" in opts else "digits"
    unknown = [t for t in opts if t not in ("digits", "mnist1d", "smoke")]
    if unknown:
        raise ValueError(f"configs/ccl.py: unknown variant(s) {unknown}; valid: 'digits', "
                         "'mnist1d', 'smoke'.")
    c = ml_collections.ConfigDict()
    c.dataset = dataset
    c.features = [128, 10] if dataset == "digits" else [256, 256, 10]
    c.batch_size = 64 if dataset == "digits" else 128
    c.lr = 1e-3
    c.steps = 900 if dataset == "digits" else 3000
    c.eval_every = 30
    c.score_steps = 300 if dataset == "digits" else 1000
    c.sampling = "weighted"
    c.seeds = [0, 1, 2, 3, 4]
    c.arms = {k: dict(v) for k, v in ARMS.items()}
    if "smoke" in opts:
        c.steps, c.eval_every, c.score_steps, c.seeds = 40, 10, 20, [0, 1]
    return c

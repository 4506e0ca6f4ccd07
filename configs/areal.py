r"""Stale rollouts on a synthetic reward task: standard PPO vs the decoupled objective (scheme 4).

A policy (MLP 16-64-10) picks one of 10 actions for a 16-dim Gaussian
context; the reward is 1 when it picks ``argmax(W x)`` for a fixed random
``W``. Rollouts come from a parameter snapshot ``eta`` versions old: the
phase pushes its parameters into a ring of snapshots (``extras['snapshots']``,
9 slots) every ``VERSION_STEPS`` updates, and the loss samples actions from
the snapshot ``eta`` pushes back (``ring_get``). ``ppo`` clips the ratio to
that stale behaviour policy; ``decoupled`` clips the ratio to the newest
snapshot (the proximal policy) and weights by ``pi_prox / pi_behav`` capped at
5 (AReaL-style).

Command (a few seconds on a 2-core CPU)::

    python -m alternating.main --config=configs/areal.py:decoupled,eta=4 --workdir=runs/areal

Results over 10 seeds and eta in {0, 1, 4, 8}: ``docs/results/areal.md``
(``experiments/areal.py``). Evaluation: greedy reward (the accuracy of the
policy's most likely action) on 2,048 held-out contexts.

Evaluation set ``val`` (2,048 other contexts) is for choosing the learning
rate; ``experiments/areal.py`` reports ``test``.

Variants: ``ppo`` | ``decoupled`` (default); ``eta=N`` (0-8); ``smoke``; ``steps=N``;
``lr=X`` (Adam, default 3e-3).
"""

import numpy as np

from alternating.experiment import base_config

OBJECTIVES = ("ppo", "decoupled")
DIM, ACTIONS, VERSION_STEPS, RING = 16, 10, 4, 9


def contexts(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` contexts and their rewarded action (the task's ``W`` is fixed, seed 0)."""
    w = np.random.RandomState(0).randn(DIM, ACTIONS).astype(np.float32)
    x = np.random.RandomState(seed).randn(n, DIM).astype(np.float32)
    return {"x": x, "y": (x @ w).argmax(-1).astype(np.int32)}


def parse(arg):
    opts = {"objective": "decoupled", "eta": 0, "smoke": False, "steps": 800, "lr": 3e-3}
    for tok in filter(None, (arg or "").split(",")):
        if tok in OBJECTIVES:
            opts["objective"] = tok
        elif tok == "smoke":
            opts["smoke"] = True
        elif tok.startswith(("eta=", "steps=")):
            k, v = tok.split("=", 1)
            opts[k] = int(v)
        elif tok.startswith("lr="):
            opts["lr"] = float(tok.split("=", 1)[1])
        else:
            raise ValueError(f"configs/areal.py: unknown variant {tok!r}; valid: "
                             f"{list(OBJECTIVES)}, 'eta=N', 'smoke', 'steps=N', 'lr=X'.")
    if not 0 <= opts["eta"] < RING:
        raise ValueError(f"configs/areal.py: eta={opts['eta']}; it must be in 0..{RING - 1} "
                         f"(the ring holds {RING} snapshots).")
    return opts


def get_config(arg=None):
    opts = parse(arg)
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = 0
    c.total_steps = 40 if opts["smoke"] else opts["steps"]
    c.log_every_steps = 20 if opts["smoke"] else 100
    c.eval_every_steps = 0 if opts["smoke"] else 200
    c.checkpoint_every_steps = 0
    c.max_checkpoints_to_keep = 1
    c.ema_decay = 0.0
    c.model = dict(name="mlp", features=(64, ACTIONS), input_shape=(DIM,))
    c.data = dict(contexts=dict(dataset=contexts(8192, seed=1), batch_size=128))
    c.extras = dict(snapshots=dict(kind="ring", size=RING))
    c.phases = dict(policy=dict(
        loss="stale_policy_gradient",
        loss_kwargs=dict(eta=opts["eta"], objective=opts["objective"], clip=0.2, cap=5.0,
                         ring="snapshots"),
        data="contexts", optimizer=dict(name="adam", lr=opts["lr"]),
        updates=[dict(extra="snapshots", rule="push", every=VERSION_STEPS)]))
    c.schedule = dict(name="single", phase="policy")
    # val: other contexts of the same task, for choosing the learning rate (never test).
    c.eval = dict(test=dict(data=dict(dataset=contexts(2048, seed=2)), loss="classification",
                            batch_size=256),
                  val=dict(data=dict(dataset=contexts(2048, seed=3)), loss="classification",
                           batch_size=256))
    return c

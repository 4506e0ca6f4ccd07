r"""Adversarial training of a small mixture of experts on digits (scheme 3, AdvMoE-style).

Arms (variants):

* ``dense``: an MLP 64-256-10 (about the MoE's parameter count), TRADES-style
  robust loss (CE + 6 KL(f(x_adv) || f(x)), ``x_adv`` by 5-step PGD on the KL
  against the current model), one Adam.
* ``joint``: a soft MoE (router MLP 64-32-4, four expert MLPs 64-64-10), one
  phase training everything on CE + 6 KL(output) + 6 KL(router gates), with
  ``x_adv`` attacking both KLs; one Adam.
* ``alternating``: the same MoE, two phases with separate Adam states over
  disjoint groups, alternating every step: ``experts`` (CE + 6 KL(output)),
  then ``router`` (CE + 6 KL(router gates)); each draws a fresh ``x_adv``
  (both KLs) against the parameters as they are at that step, and reads its
  own next batch.

Budget: ``steps`` minibatches for every arm; the alternating arm gives each
group ``steps`` steps, so it runs ``2 * steps`` global steps (twice the PGD
work of ``joint``). Evaluation: clean accuracy and robust accuracy under a
10-step CE PGD (eps 0.1, step 0.025, pixels in [0, 1]) on the 360 test images.

Command (2-4 min per run on a 2-core CPU)::

    python -m alternating.main --config=configs/advmoe.py:alternating --workdir=runs/advmoe

Results over 10 seeds, each arm at its validation-chosen learning rate:
``docs/results/advmoe.md`` (``experiments/advmoe.py``, 449 s on a 2-core shared CPU).

Variants: ``dense`` | ``joint`` | ``alternating`` (default); ``smoke``; ``steps=N``;
``lr=X`` (Adam, every phase; default 1e-3); ``holdout`` (train on the first 80%
of the training images, evaluate the rest as set ``val``: the learning-rate
grid of ``experiments/advmoe.py`` chooses on it).
"""

from alternating.experiment import base_config

ARMS = ("dense", "joint", "alternating")
EPS, STEP, PGD_STEPS = 0.1, 0.025, 5


def parse(arg):
    opts = {"arm": "alternating", "smoke": False, "steps": 1500, "lr": 1e-3, "holdout": False}
    for tok in filter(None, (arg or "").split(",")):
        if tok in ARMS:
            opts["arm"] = tok
        elif tok == "smoke":
            opts["smoke"] = True
        elif tok.startswith("steps="):
            opts["steps"] = int(tok.split("=", 1)[1])
        elif tok.startswith("lr="):
            opts["lr"] = float(tok.split("=", 1)[1])
        elif tok == "holdout":
            opts["holdout"] = True
        else:
            raise ValueError(f"configs/advmoe.py: unknown variant {tok!r}; valid: {list(ARMS)}, "
                             "'smoke', 'steps=N', 'lr=X', 'holdout'.")
    return opts


def get_config(arg=None):
    opts = parse(arg)
    arm = opts["arm"]
    steps = 20 if opts["smoke"] else opts["steps"]
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = 0
    c.total_steps = 2 * steps if arm == "alternating" else steps
    c.log_every_steps = 10 if opts["smoke"] else 100
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.max_checkpoints_to_keep = 1
    c.ema_decay = 0.0
    c.extras = {}
    train = "train[:80%]" if opts["holdout"] else "train"
    c.data = dict(train=dict(dataset="digits", split=train, batch_size=64))
    opt = dict(name="adam", lr=opts["lr"])
    attack = dict(eps=EPS, step_size=STEP, steps=PGD_STEPS)
    if arm == "dense":
        c.model = dict(name="mlp", features=(256, 10), input_shape=(8, 8, 1))
        c.phases = dict(dense=dict(loss="trades", loss_kwargs=dict(attack, beta=6.0),
                                   data="train", optimizer=opt))
        c.schedule = dict(name="single", phase="dense")
    else:
        c.model = dict(name="moe", num_experts=4, expert_features=(64, 10),
                       router_features=(32,), input_shape=(8, 8, 1))
        if arm == "joint":
            c.phases = dict(joint=dict(
                loss="trades", loss_kwargs=dict(attack, beta=6.0, router_beta=6.0,
                                                attack_router=True),
                data="train", optimizer=opt))
            c.schedule = dict(name="single", phase="joint")
        else:
            c.phases = dict(
                experts=dict(loss="trades",
                             loss_kwargs=dict(attack, beta=6.0, attack_router=True),
                             data="train", params=[("expert_.*", True), ("router/.*", None)],
                             optimizer=opt),
                router=dict(loss="trades",
                            loss_kwargs=dict(attack, beta=0.0, router_beta=6.0,
                                             attack_router=True),
                            data="train", params=[("router/.*", True), ("expert_.*", None)],
                            optimizer=opt))
            c.schedule = dict(name="alternate", pattern=["experts", "router"])
    robust = dict(loss="adversarial", loss_kwargs=dict(eps=EPS, step_size=STEP, steps=10),
                  batch_size=120)
    evals = dict(test=dict(data=dict(dataset="digits", split="test"), **robust))
    if opts["holdout"]:  # the last 20% of the training images, for choosing lr (never test)
        evals["val"] = dict(data=dict(dataset="digits", split="train[80%:]"), **robust)
    c.eval = evals
    return c

r"""ADMM on the convex program of a two-layer ReLU network vs gradient descent on the network (scheme 15).

Binary digits task: 3 vs 5 from scikit-learn's 8x8 digits (the first 360
such images), pixels / 16 plus a constant feature (d = 65), targets +-1.
Objective: ``1/(2n) ||f(X) - y||^2`` plus weight decay ``beta = 1e-3``
(group norms in the convex form, ``beta/2 ||theta||^2`` for the network).

* ``admm``: ``alternating.schemes.convex_relu``: sampled activation patterns,
  parameters ``u`` (``[P, 2, 65]``, P = 256); one phase takes Adam steps (3e-3, cosine) on the
  augmented Lagrangian, and every ``K = 10`` of them its update rules set the
  slack (``extras['slack']``) and then ascend the duals (``extras['dual']``),
  rho = 1. Full batch (360 examples, each with its index for the slack rows).
* ``sgd``: the network ``relu(X W1) w2`` with 64 hidden units, full-batch
  gradient descent with momentum (0.9) at lr 0.05.

``init=N`` sets the run seed, which changes only the initialization (the
pattern directions and data are fixed, and every batch is the whole set), so runs with different ``init`` answer "does the
final objective depend on the start?".

Command (seconds on a 2-core CPU)::

    python -m alternating.main --config=configs/admm.py:admm,init=1 --workdir=runs/admm

Results: ``docs/results/admm.md`` (``experiments/admm.py``).

Variants: ``admm`` (default) | ``sgd``; ``init=N``; ``smoke``; ``steps=N``;
``lr=X`` (the arm's learning rate; default ``LR``: Adam 3e-3 for ADMM, 0.05
for gradient descent).
"""

import numpy as np

from alternating.experiment import base_config

ARMS = ("admm", "sgd")
N, PATTERNS, WIDTH, BETA, RHO, K = 360, 256, 64, 1e-3, 1.0, 10
INIT_SCALE = 0.01
LR = {"admm": 3e-3, "sgd": 0.05}  # each arm's base learning rate (variant ``lr=X`` replaces it)


def dataset(n: int = N) -> dict[str, np.ndarray]:
    """Digits 3 (+1) vs 5 (-1): ``x`` [n, 65] (pixels / 16 and a 1), ``y``, ``idx``."""
    from sklearn import datasets
    d = datasets.load_digits()
    keep = np.flatnonzero((d.target == 3) | (d.target == 5))[:n]
    x = np.concatenate([d.data[keep] / 16.0, np.ones((len(keep), 1))], 1).astype(np.float32)
    y = np.where(d.target[keep] == 3, 1.0, -1.0).astype(np.float32)
    return {"x": x, "y": y, "idx": np.arange(len(keep), dtype=np.int32)}


def parse(arg):
    opts = {"arm": "admm", "init": 0, "smoke": False, "steps": 3000, "lr": None}
    for tok in filter(None, (arg or "").split(",")):
        if tok in ARMS:
            opts["arm"] = tok
        elif tok == "smoke":
            opts["smoke"] = True
        elif tok.startswith(("init=", "steps=")):
            k, v = tok.split("=", 1)
            opts[k] = int(v)
        elif tok.startswith("lr="):
            opts["lr"] = float(tok.split("=", 1)[1])
        else:
            raise ValueError(f"configs/admm.py: unknown variant {tok!r}; valid: {list(ARMS)}, "
                             "'init=N', 'smoke', 'steps=N', 'lr=X'.")
    return opts


def get_config(arg=None):
    opts = parse(arg)
    data = dataset()
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = opts["init"]
    c.total_steps = 40 if opts["smoke"] else opts["steps"]
    c.log_every_steps = 10 if opts["smoke"] else 50
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.max_checkpoints_to_keep = 1
    c.ema_decay = 0.0
    c.data = dict(train=dict(dataset=data, batch_size=N))
    dim = data["x"].shape[1]
    lr = LR[opts["arm"]] if opts["lr"] is None else opts["lr"]
    if opts["arm"] == "admm":
        c.model = dict(name="convex_relu", patterns=PATTERNS, dim=dim, init_scale=INIT_SCALE)
        zeros = dict(kind="init", init="alternating.schemes.convex_relu:zeros_like_constraints",
                     kwargs=dict(n=N))
        c.extras = dict(slack=zeros, dual=dict(zeros))
        rule_data = dict(x=data["x"])
        c.phases = dict(primal=dict(
            loss="admm_primal", loss_kwargs=dict(beta=BETA, rho=RHO), data="train",
            optimizer=dict(name="adam", lr=lr, schedule="cosine"),
            updates=[dict(extra="slack", rule="alternating.schemes.convex_relu:slack_rule", every=K,
                          kwargs=dict(data=rule_data, rho=RHO)),
                     dict(extra="dual", rule="alternating.schemes.convex_relu:dual_rule", every=K,
                          kwargs=dict(data=rule_data, rho=RHO))]))
        c.schedule = dict(name="single", phase="primal")
    else:
        c.model = dict(name="relu_net", width=WIDTH, dim=dim)
        c.extras = {}
        c.phases = dict(sgd=dict(loss="relu_weight_decay", loss_kwargs=dict(beta=BETA),
                                 data="train", optimizer=dict(name="sgd", lr=lr, momentum=0.9)))
        c.schedule = dict(name="single", phase="sgd")
    return c

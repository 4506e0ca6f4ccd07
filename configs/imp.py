r"""IMP's comparison (scheme 2): alternating gradient descent vs a summed joint loss vs padding.

The three tasks of ``configs/agd.py`` (digits 8x8 10-way, MNIST-1D 40-sample
10-way, "is the digit odd" on 64 flattened values, binary) share a trunk, each
with its own head. Arms, all at the same number of optimizer steps and the
same examples per task:

* ``agd``: round-robin over the tasks, one full optimizer step per batch, each
  task at its own input shape through its own stem (``configs/agd.py``);
  batches of 60 / 60 / 30 examples; each task's phase keeps its own Adam
  state (and its own learning-rate schedule, counted in its own steps);
* ``agd_one_optimizer``: ``agd`` with one Adam state shared by the three
  phases (``optimizer_group``: one state over the union of their parameters,
  one step count and schedule over all 300 steps), the paper's one optimizer;
* ``joint``: one phase whose loss is the sum of the three task losses, each
  step on a batch of every task (20 / 20 / 10 examples, so the same examples
  per step and per run as ``agd``);
* ``padded``: every input flattened and zero-padded to 64 values and read by
  one shared MLP stem (the common shape padding buys), round-robin as ``agd``.

Command: ``.venv/bin/python experiments/imp.py`` (5 seeds, writes
docs/results/imp.md). Variants: ``arm=agd|agd_one_optimizer|joint|padded``; ``smoke`` (batches of 24 / 24 / 12,
a third of them for ``joint``, so that they split across 4 test devices);
``steps=N``.
"""

import numpy as np

from alternating.data import transforms
from configs import agd

ARMS = ("agd", "agd_one_optimizer", "joint", "padded")
GROUP = "tasks"  # the shared optimizer group of agd_one_optimizer
TASKS = ("digits", "mnist1d", "parity")
BATCH = {"digits": 60, "mnist1d": 60, "parity": 30}  # agd / padded, per step of that task
SMOKE_BATCH = {"digits": 24, "mnist1d": 24, "parity": 12}  # joint's thirds divide by 4 devices
WIDTH = 64  # the common shape of the padded arm


def pad_to(arrays, length: int):
    """Flattens features and zero-pads them to ``length`` values."""
    x = arrays["x"].reshape(len(arrays["x"]), -1)
    if x.shape[1] > length:
        raise ValueError(f"transform 'pad_to': inputs have {x.shape[1]} values, more than "
                         f"length={length}.")
    return {**arrays, "x": np.pad(x, ((0, 0), (0, length - x.shape[1])))}


if "pad_to" not in transforms.transform_names():
    transforms.register_transform("pad_to", pad_to)


def _plain(d):
    return d.to_dict() if hasattr(d, "to_dict") else dict(d)


def _options(arg):
    opts = {"arm": "agd", "smoke": False, "steps": None}
    for tok in filter(None, (arg or "").split(",")):
        key, _, value = tok.partition("=")
        if key == "smoke" and not value:
            opts["smoke"] = True
        elif key == "arm" and value in ARMS:
            opts["arm"] = value
        elif key == "steps" and value.isdigit() and int(value) > 0:
            opts["steps"] = int(value)
        else:
            raise ValueError(f"configs/imp.py: bad variant {tok!r}; valid: arm=<one of "
                             f"{list(ARMS)}>, smoke, steps=<positive int>.")
    return opts


def get_config(arg=None):
    opts = _options(arg)
    c = agd.get_config("smoke" if opts["smoke"] else None)
    if opts["steps"]:
        c.total_steps = opts["steps"]
    c.eval_every_steps = 0
    c.log_every_steps = max(1, min(100, c.total_steps // 10))
    arm = opts["arm"]
    opt = dict(c.phases["digits"]["optimizer"])
    data = {t: dict(c.data[t]) for t in TASKS}
    for t in TASKS:
        batch = SMOKE_BATCH if opts["smoke"] else BATCH
        data[t]["batch_size"] = batch[t] // (3 if arm == "joint" else 1)
    if arm == "padded":
        pad = [dict(name="pad_to", length=WIDTH)]
        for t in TASKS:
            data[t]["transforms"] = pad + list(data[t].get("transforms", []))[1:] \
                if t == "parity" else pad
        model = dict(c.model)
        model["stems"] = dict(shared=dict(kind="mlp", input_shape=(WIDTH,), features=(64,)))
        c.model = model
        for ev in c.eval.values():
            extra = list(ev["data"].get("transforms", []))[1:]
            ev["data"]["transforms"] = [dict(name="pad_to", length=WIDTH)] + extra
    c.data = data
    stem = (lambda t: "shared") if arm == "padded" else (lambda t: t)
    if arm == "joint":
        parts = {t: dict(loss=c.phases[t]["loss"], stem=t, head=t) for t in TASKS}
        c.phases = dict(joint=dict(loss="sum", loss_kwargs=dict(parts=parts), data=list(TASKS),
                                   params=[("stem_.*", True), ("trunk_.*", True),
                                           ("head_.*", True), (".*", None)],
                                   optimizer=opt))
        c.schedule = dict(name="single", phase="joint")
        evals = {}
        for name, ev in c.eval.items():
            t = name[:-len("_test")]
            evals[name] = dict(data=_plain(ev["data"]), batch_size=ev["batch_size"],
                               loss="binary" if t == "parity" else "classification",
                               loss_kwargs=dict(stem=t, head=t))
        c.eval = evals
    else:
        for t in TASKS:
            c.phases[t]["loss_kwargs"] = dict(stem=stem(t), head=t)
            c.phases[t]["params"] = [(f"stem_{stem(t)}/.*", True), ("trunk_.*", True),
                                     (f"head_{t}/.*", True), (".*", None)]
            if arm == "agd_one_optimizer":
                c.phases[t]["optimizer_group"] = GROUP
    return c

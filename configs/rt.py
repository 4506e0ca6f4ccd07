r"""Regression-Transformer-style alternation on synthetic digit sequences (scheme 13).

One small transformer (``alternating.schemes.regression_transformer.SeqModel``, 1
layer, width 64) reads ``[property bin, 10 digits]``; the property is the
mean digit / 9 in 10 bins. The schedule switches every ``N = 50`` steps
between phase ``predict`` (mask the property, predict it) and phase
``generate`` (mask 40% of the digits, predict them given the true property);
both train the whole model, each with its own Adam state. Arm ``sc`` adds the
self-consistency term to ``generate``: prime a random requested property,
fill the masked digits with the model's soft predictions, and ask the model
to predict the requested property from the filled sequence.

Command (about a minute on a 2-core CPU)::

    python -m alternating.main --config=configs/rt.py:sc --workdir=runs/rt

Results: ``docs/results/rt.md`` (``experiments/rt.py``).

Variants: ``plain`` (default) | ``sc`` | ``predict_only`` | ``generate_only``
(one phase, the single-task baselines); ``smoke``; ``steps=N``; ``lr=X``
(Adam's rate, default 1e-3); ``sc=W`` (arm ``sc`` only: the self-consistency
term's weight, default 1); ``val``: the last 512 of the 4,096 training
sequences are held out (``training_split``), the validation set on which
``experiments/rt.py`` chooses the learning rate.
"""


from alternating.experiment import base_config
from alternating.schemes import regression_transformer as rt

ARMS = ("plain", "sc")
SINGLE = {"predict_only": "predict", "generate_only": "generate"}  # single-task arms
LENGTH, SWITCH = 10, 50
TRAIN, HOLDOUT = 4096, 512


def training_split(val: bool):
    """The training sequences; with ``val`` the last ``HOLDOUT`` are held out and returned too.

    Returns ``(train, val)`` (``val`` is ``None`` without ``val``).
    """
    data = rt.make_sequences(TRAIN, LENGTH, seed=1)
    if not val:
        return data, None
    return ({k: v[:-HOLDOUT] for k, v in data.items()},
            {k: v[-HOLDOUT:] for k, v in data.items()})


def parse(arg):
    opts = {"arm": "plain", "smoke": False, "steps": 1000, "lr": 1e-3, "val": False, "sc": None}
    for tok in filter(None, (arg or "").split(",")):
        if tok in ARMS or tok in SINGLE:
            opts["arm"] = tok
        elif tok in ("smoke", "val"):
            opts[tok] = True
        elif tok.startswith("steps="):
            opts["steps"] = int(tok.split("=", 1)[1])
        elif tok.startswith("lr="):
            opts["lr"] = float(tok.split("=", 1)[1])
        elif tok.startswith("sc="):
            opts["sc"] = float(tok.split("=", 1)[1])
        else:
            raise ValueError(f"configs/rt.py: unknown variant {tok!r}; valid: "
                             f"{list(ARMS) + list(SINGLE)}, 'smoke', 'steps=N', 'lr=X', "
                             "'sc=W', 'val'.")
    if opts["sc"] is not None and opts["arm"] != "sc":
        raise ValueError(f"configs/rt.py: 'sc={opts['sc']:g}' is the self-consistency weight "
                         f"of arm 'sc' only; this variant's arm is {opts['arm']!r}.")
    return opts


def get_config(arg=None):
    opts = parse(arg)
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = 0
    c.total_steps = 40 if opts["smoke"] else opts["steps"]
    c.log_every_steps = 10 if opts["smoke"] else 100
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.max_checkpoints_to_keep = 1
    c.ema_decay = 0.0
    c.extras = {}
    c.model = dict(name="seq_model", length=LENGTH, layers=1)
    c.data = dict(train=dict(dataset=training_split(opts["val"])[0], batch_size=128))
    opt = dict(name="adam", lr=opts["lr"])
    phases = dict(
        predict=dict(loss="rt_predict", data="train", optimizer=opt),
        generate=dict(loss="rt_generate", data="train", optimizer=opt,
                      loss_kwargs=dict(mask_frac=0.4,
                                       consistency=(1.0 if opts["sc"] is None else opts["sc"])
                                       if opts["arm"] == "sc" else 0.0)))
    if opts["arm"] in SINGLE:
        only = SINGLE[opts["arm"]]
        c.phases = {only: phases[only]}
        c.schedule = dict(name="single", phase=only)
        return c
    c.phases = phases
    switch = 10 if opts["smoke"] else SWITCH
    c.schedule = dict(name="alternate", pattern=[["predict", switch], ["generate", switch]])
    return c

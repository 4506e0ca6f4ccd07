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

Results over 3 seeds: ``docs/results/rt.md`` (``experiments/rt.py``).

Variants: ``plain`` (default) | ``sc``; ``smoke``; ``steps=N``.
"""


from alternating.experiment import base_config
from alternating.schemes import regression_transformer as rt

ARMS = ("plain", "sc")
LENGTH, SWITCH = 10, 50


def parse(arg):
    opts = {"arm": "plain", "smoke": False, "steps": 1000}
    for tok in filter(None, (arg or "").split(",")):
        if tok in ARMS:
            opts["arm"] = tok
        elif tok == "smoke":
            opts["smoke"] = True
        elif tok.startswith("steps="):
            opts["steps"] = int(tok.split("=", 1)[1])
        else:
            raise ValueError(f"configs/rt.py: unknown variant {tok!r}; valid: {list(ARMS)}, "
                             "'smoke', 'steps=N'.")
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
    c.data = dict(train=dict(dataset=rt.make_sequences(4096, LENGTH, seed=1), batch_size=128))
    opt = dict(name="adam", lr=1e-3)
    c.phases = dict(
        predict=dict(loss="rt_predict", data="train", optimizer=opt),
        generate=dict(loss="rt_generate", data="train", optimizer=opt,
                      loss_kwargs=dict(mask_frac=0.4,
                                       consistency=1.0 if opts["arm"] == "sc" else 0.0)))
    switch = 10 if opts["smoke"] else SWITCH
    c.schedule = dict(name="alternate", pattern=[["predict", switch], ["generate", switch]])
    return c

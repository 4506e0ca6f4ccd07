r"""Unpaired two-modality co-training (scheme 1 of the project's scheme list, MulModSeg-style).

Phase ``images`` reads scikit-learn's digits (8x8 images), phase ``signals``
reads MNIST-1D (40-sample signals). Each has its own input stem and a fixed
per-modality embedding (frozen: no phase trains it); both share the trunk and
the 10-class head. The schedule alternates one step of each.

Command (10-20 s on a 2-core CPU; expect about 97.5% on digits test and
86-88% on MNIST-1D test over seeds 0-2; see docs/results/multimodal.md)::

    python -m alternating.main --config=configs/default.py --workdir=runs/default

Variants (comma-separated after the colon, e.g. ``:signals_only,no_embed``):

* ``smoke``: a few dozen steps, runs in seconds (tests).
* arms: ``alternating`` (default), ``images_only``, ``signals_only``, ``mixed``
  (one step on a batch holding both modalities, summed loss).
* ``no_embed``: no modality embedding.
* ``one_optimizer``: the alternating arm's two phases share one Adam state
  (``optimizer_group``, one optimizer over the union of their parameters,
  as MulModSeg trains) instead of one state per phase.
* ``steps=N``: optimizer steps per modality (default 2000).

Each arm sees the same number of examples per modality: single-modality and
mixed arms run ``steps`` steps, the alternating arm ``2 * steps``.
"""

from alternating.experiment import base_config


ARMS = ("alternating", "images_only", "signals_only", "mixed")


def parse(arg):
    opts = {"arm": "alternating", "smoke": False, "embed": True, "steps": 2000,
            "one_optimizer": False}
    for tok in filter(None, (arg or "").split(",")):
        if tok in ARMS:
            opts["arm"] = tok
        elif tok == "smoke":
            opts["smoke"] = True
        elif tok == "no_embed":
            opts["embed"] = False
        elif tok == "one_optimizer":
            opts["one_optimizer"] = True
        elif tok.startswith("steps="):
            opts["steps"] = int(tok.split("=", 1)[1])
        else:
            raise ValueError(f"configs/default.py: unknown variant {tok!r}; valid: {list(ARMS)}, "
                             "'smoke', 'no_embed', 'one_optimizer', 'steps=N'.")
    if opts["one_optimizer"] and opts["arm"] != "alternating":
        raise ValueError(f"configs/default.py: 'one_optimizer' shares one optimizer between the "
                         f"alternating arm's two phases; arm {opts['arm']!r} has one phase.")
    return opts


def _phase(modality, embed):
    rules = [(f"stem_{modality}/.*", True), ("trunk_.*", True), ("head_.*", True)]
    if embed:
        rules.append(("embed_.*", None))  # fixed modality codes: never trained
    rules.append(("stem_.*", None))  # the other modality's stem
    return dict(
        loss="classification",
        loss_kwargs=dict(stem=modality, head="classes"),
        data=modality,
        params=rules,
        optimizer=dict(name="adam", lr=1e-3, schedule="cosine", warmup_steps=50),
    )


def get_config(arg=None):
    opts = parse(arg)
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = 0
    steps = 30 if opts["smoke"] else opts["steps"]
    c.total_steps = 2 * steps if opts["arm"] == "alternating" else steps
    c.log_every_steps = 10 if opts["smoke"] else 100
    c.eval_every_steps = 0 if opts["smoke"] else 1000
    c.checkpoint_every_steps = 0 if opts["smoke"] else 1000
    c.max_checkpoints_to_keep = 2
    c.ema_decay = 0.0
    c.nan_policy = "raise"  # or "skip": drop non-finite updates
    c.max_consecutive_skips = 10
    c.init_from = ""  # another run's workdir: start from its params (when this one has no checkpoint)

    c.model = dict(
        name="multistem",
        stems=dict(images=dict(kind="cnn2d", input_shape=(8, 8, 1)),
                   signals=dict(kind="cnn1d", input_shape=(40, 1))),
        trunk=(32, 32) if opts["smoke"] else (128, 128),
        heads=dict(classes=10),
        modality_embedding=opts["embed"],
    )
    bs = 64
    c.data = dict(images=dict(dataset="digits", split="train", batch_size=bs),
                  signals=dict(dataset="mnist1d", split="train", batch_size=bs))

    arm = opts["arm"]
    if arm == "alternating":
        c.phases = dict(images=_phase("images", opts["embed"]), signals=_phase("signals", opts["embed"]))
        c.schedule = dict(name="alternate", pattern=["images", "signals"])
        if opts["one_optimizer"]:
            for p in c.phases.values():
                p["optimizer_group"] = "shared"
    elif arm in ("images_only", "signals_only"):
        m = arm.split("_")[0]
        c.phases = {m: _phase(m, opts["embed"])}
        c.schedule = dict(name="single", phase=m)
    else:  # mixed: one step on both modalities' batches, summed loss
        rules = [("stem_.*", True), ("trunk_.*", True), ("head_.*", True)]
        if opts["embed"]:
            rules.append(("embed_.*", None))
        c.phases = dict(mixed=dict(
            loss="sum",
            loss_kwargs=dict(parts=dict(
                images=dict(loss="classification", stem="images", head="classes"),
                signals=dict(loss="classification", stem="signals", head="classes"))),
            data=["images", "signals"], params=rules,
            optimizer=dict(name="adam", lr=1e-3, schedule="cosine", warmup_steps=50)))
        c.schedule = dict(name="single", phase="mixed")

    c.eval = dict(
        images_test=dict(data=dict(dataset="digits", split="test"), loss="classification",
                         loss_kwargs=dict(stem="images", head="classes"), batch_size=200),
        signals_test=dict(data=dict(dataset="mnist1d", split="test"), loss="classification",
                          loss_kwargs=dict(stem="signals", head="classes"), batch_size=200),
    )
    return c

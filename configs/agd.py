r"""Alternating gradient descent over three tasks on one shared trunk (scheme 2, IMP-style).

Three tasks with different input shapes and objectives share a trunk; each has
its own stem and head and takes a full optimizer step on its own batch:

* ``digits``: 8x8 images, 10-way softmax cross-entropy (2-D CNN stem);
* ``mnist1d``: 40-sample signals, 10-way softmax cross-entropy (1-D CNN stem);
* ``parity``: digits flattened to 64 values, binary cross-entropy on "is the
  digit odd" (MLP stem).

No input is padded to a common shape: each phase is compiled once for its own
shapes (``results.json`` reports ``compiles``: one per phase plus evaluation).

Command (about 10 s on a 2-core CPU)::

    python -m alternating.main --config=configs/agd.py --workdir=runs/agd

Expected (seed 0, measured on a 2-core CPU): digits test accuracy about 0.98,
MNIST-1D about 0.83, parity about 0.98; ``compiles`` one per task and one per
evaluation set. ``:random`` gave 0.98 / 0.83 / 0.98 (single-seed figures). The
comparison with a summed joint loss and with padding to one input shape, at
equal steps and examples, is ``configs/imp.py`` / ``experiments/imp.py``
(``docs/results/imp.md``).

Variants: ``smoke`` (seconds), ``random`` (draw the task uniformly at random
each step instead of round-robin).
"""

from alternating.experiment import base_config


PARITY = [i % 2 for i in range(10)]


def get_config(arg=None):
    toks = set(filter(None, (arg or "").split(",")))
    bad = toks - {"smoke", "random"}
    if bad:
        raise ValueError(f"configs/agd.py: unknown variant(s) {sorted(bad)}; valid: smoke, random.")
    smoke = "smoke" in toks
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = 0
    c.total_steps = 30 if smoke else 3000
    c.log_every_steps = 10 if smoke else 100
    c.eval_every_steps = 0 if smoke else 1000
    c.checkpoint_every_steps = 0
    c.max_checkpoints_to_keep = 1
    c.ema_decay = 0.0
    c.nan_policy = "raise"  # or "skip": drop non-finite updates
    c.max_consecutive_skips = 10
    c.init_from = ""  # another run's workdir: start from its params (when this one has no checkpoint)
    c.model = dict(
        name="multistem",
        stems=dict(digits=dict(kind="cnn2d", input_shape=(8, 8, 1)),
                   mnist1d=dict(kind="cnn1d", input_shape=(40, 1)),
                   parity=dict(kind="mlp", input_shape=(64,), features=(64,))),
        trunk=(32,) if smoke else (128,),
        heads=dict(digits=10, mnist1d=10, parity=1),
        modality_embedding=False,
    )
    c.data = dict(
        digits=dict(dataset="digits", batch_size=64),
        mnist1d=dict(dataset="mnist1d", batch_size=64),
        parity=dict(dataset="digits", batch_size=32,
                    transforms=[dict(name="flatten"), dict(name="relabel", mapping=PARITY)]),
    )
    opt = dict(name="adam", lr=1e-3, schedule="cosine", warmup_steps=30)

    def phase(task, loss):
        return dict(loss=loss, loss_kwargs=dict(stem=task, head=task), data=task,
                    params=[(f"stem_{task}/.*", True), ("trunk_.*", True), (f"head_{task}/.*", True),
                            (".*", None)],
                    optimizer=opt)

    c.phases = dict(digits=phase("digits", "classification"),
                    mnist1d=phase("mnist1d", "classification"),
                    parity=phase("parity", "binary"))
    if "random" in toks:
        c.schedule = dict(name="weighted", weights=dict(digits=1.0, mnist1d=1.0, parity=1.0))
    else:
        c.schedule = dict(name="alternate", pattern=["digits", "mnist1d", "parity"])
    c.eval = dict(
        digits_test=dict(data=dict(dataset="digits", split="test"), phase="digits", batch_size=200),
        mnist1d_test=dict(data=dict(dataset="mnist1d", split="test"), phase="mnist1d",
                          batch_size=200),
        parity_test=dict(data=dict(dataset="digits", split="test",
                                   transforms=[dict(name="flatten"),
                                               dict(name="relabel", mapping=PARITY)]),
                         phase="parity", batch_size=200),
    )
    return c

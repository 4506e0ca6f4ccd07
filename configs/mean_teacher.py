r"""Semi-supervised digits with 10% labels: supervised only vs mean teacher vs dual students.

Labelled stream: the first 10% of the digits training split (144 images);
unlabelled stream: the whole training split with its labels unused. Every arm
runs the same number of steps on the same batches (32 labelled + 128
unlabelled), with Gaussian input noise on every input.

* ``supervised``: cross-entropy on the labelled batch only (the
  ``mean_teacher`` loss with weight 0).
* ``mean_teacher``: plus a consistency term (squared distance of class
  probabilities) to an EMA teacher held in ``extras['teacher']``; the phase
  updates the teacher after each step (``ema``, decay 0.99 with the usual
  ramp). The teacher is evaluated.
* ``dual``: two students ``s0/`` and ``s1/`` in one parameter tree, two
  phases alternating every epoch of the unlabelled set (22 steps), each with
  its own Adam state; phase ``s<i>`` trains only its student, updates only
  its own teacher ``teacher<i>``, and takes its consistency target from the
  *other* student's teacher (cross-teaching). Evaluated: the average of the
  two teachers' probabilities. This is our reading of "student groups
  alternating by epoch with EMA teachers" (RAIL-style); the paper's exact
  rule was not checked.

Command (each run 10-30 s on a 2-core CPU)::

    python -m alternating.main --config=configs/mean_teacher.py:mean_teacher --workdir=runs/mt

Results: ``docs/results/mean_teacher.md``
(``experiments/mean_teacher.py``).

Variants: ``supervised`` | ``mean_teacher`` (default) | ``dual``; ``smoke``;
``steps=N``; ``lr=X`` (Adam's rate, default 1e-3); ``val``: the unlabelled
stream reads only the first 80% of the training split (the labelled 10% lie
inside it), the dual arm alternates every 8 steps (that part's epoch), and
every evaluator also runs on the last 20% as ``val_<name>`` (the validation set
on which ``experiments/mean_teacher.py`` chooses the learning rate).
"""

import jax
import jax.numpy as jnp

from alternating.experiment import base_config

ARMS = ("supervised", "mean_teacher", "dual")
EPOCH = 22  # unlabelled batches of 128 in the 1,437 training images (rounded down)
EPOCH_VAL = 8  # the same in the first 80% of them (1,150 images; variant ``val``)


def dual_teachers(model, *, teachers=("teacher0", "teacher1")):
    """Evaluation loss: average of teacher ``i``'s member ``i`` probabilities."""
    def loss(params, batch, rng, extras):
        del params, rng
        probs = jnp.mean(jnp.stack([
            jax.nn.softmax(model.apply(extras[t], batch["x"], member=i))
            for i, t in enumerate(teachers)]), 0)
        nll = -jnp.log(jnp.take_along_axis(probs, batch["y"][:, None], -1)[:, 0] + 1e-12)
        acc = (probs.argmax(-1) == batch["y"]).astype(jnp.float32)
        return nll.mean(), {"accuracy": acc.mean()}
    return loss


def parse(arg):
    opts = {"arm": "mean_teacher", "smoke": False, "steps": 3000, "lr": 1e-3, "val": False}
    for tok in filter(None, (arg or "").split(",")):
        if tok in ARMS:
            opts["arm"] = tok
        elif tok in ("smoke", "val"):
            opts[tok] = True
        elif tok.startswith("steps="):
            opts["steps"] = int(tok.split("=", 1)[1])
        elif tok.startswith("lr="):
            opts["lr"] = float(tok.split("=", 1)[1])
        else:
            raise ValueError(f"configs/mean_teacher.py: unknown variant {tok!r}; valid: "
                             f"{list(ARMS)}, 'smoke', 'steps=N', 'lr=X', 'val'.")
    return opts


def get_config(arg=None):
    opts = parse(arg)
    arm = opts["arm"]
    c = base_config()  # every field, at its default; set below what this scheme changes
    c.seed = 0
    c.total_steps = 60 if opts["smoke"] else opts["steps"]
    c.log_every_steps = 20 if opts["smoke"] else 200
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.max_checkpoints_to_keep = 1
    c.ema_decay = 0.0
    features = (128, 128, 10)
    pool = "train[:80%]" if opts["val"] else "train"
    c.data = dict(labeled=dict(dataset="digits", split="train[:10%]", batch_size=32),
                  unlabeled=dict(dataset="digits", split=pool, batch_size=128))
    opt = dict(name="adam", lr=opts["lr"])
    mt = dict(noise=0.2, weight=0.0 if arm == "supervised" else 10.0)
    test = dict(dataset="digits", split="test")
    if arm in ("supervised", "mean_teacher"):
        c.model = dict(name="mlp", features=features, input_shape=(8, 8, 1))
        phase = dict(loss="mean_teacher", loss_kwargs=mt, data=["labeled", "unlabeled"],
                     optimizer=opt)
        c.extras = {}
        c.eval = dict(student=dict(data=test, loss="classification", batch_size=200))
        if arm == "mean_teacher":
            c.extras = dict(teacher=dict(kind="copy"))
            phase["updates"] = [dict(extra="teacher", rule="ema", decay=0.99, ramp=True)]
            c.eval.teacher = dict(data=test, loss="classification",
                                  loss_kwargs=dict(params_from="teacher"), batch_size=200)
        c.phases = dict(student=phase)
        c.schedule = dict(name="single", phase="student")
    else:
        c.model = dict(name="ensemble", features=features, input_shape=(8, 8, 1), members=2)
        c.extras = dict(teacher0=dict(kind="copy"), teacher1=dict(kind="copy"))
        phases = {}
        for i in (0, 1):
            other = 1 - i
            phases[f"s{i}"] = dict(
                loss="mean_teacher",
                loss_kwargs=dict(mt, member=i, teacher=f"teacher{other}",
                                 teacher_kwargs=dict(member=other)),
                data=["labeled", "unlabeled"],
                params=[(f"s{i}/.*", True), (f"s{other}/.*", None)], optimizer=opt,
                updates=[dict(extra=f"teacher{i}", rule="ema", decay=0.99, ramp=True)])
        c.phases = phases
        epoch = EPOCH_VAL if opts["val"] else EPOCH
        c.schedule = dict(name="alternate", pattern=[["s0", epoch], ["s1", epoch]])
        c.eval = dict(
            teacher=dict(data=test, loss="configs.mean_teacher:dual_teachers", batch_size=200),
            student0=dict(data=test, loss="classification", loss_kwargs=dict(member=0),
                          batch_size=200),
            student1=dict(data=test, loss="classification", loss_kwargs=dict(member=1),
                          batch_size=200))
    if opts["val"]:
        # Every test evaluator again on the last 20% of the training split, which
        # variant ``val`` keeps out of training: the validation set.
        val = dict(dataset="digits", split="train[80%:]")
        for name in list(c.eval):
            c.eval[f"val_{name}"] = dict(c.eval[name].to_dict(), data=val)
    return c



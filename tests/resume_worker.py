"""A small two-phase run for the kill-and-resume tests, runnable as a script.

``python tests/resume_worker.py WORKDIR SCHEDULE [TOTAL_STEPS [CHECKPOINT_EVERY
[MAX_TO_KEEP]]]`` trains it (or resumes it: same command); the tests also call :func:`run` in-process for the
uninterrupted reference.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import alternating  # noqa: E402
from alternating.models import MLP  # noqa: E402

MODEL = MLP(features=(16, 10))
DIGITS = {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]}
SCHEDULES = {
    # Blocks of 3 and 2 with checkpoints every 7 steps: checkpoints fall mid-block.
    "alternate": {"name": "alternate", "pattern": [["a", 3], ["b", 2]]},
    "weighted": {"name": "weighted", "weights": {"a": 0.7, "b": 0.3}},
}


def _loss(params, batch, rng, extras):
    logits = MODEL.apply({"params": params}, batch["x"])
    noise = 1e-3 * jax.random.normal(rng, logits.shape)  # uses the per-step rng
    loss = optax.softmax_cross_entropy_with_integer_labels(logits + noise, batch["y"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


# A schedule name ending in this also augments phase a's batches in the step.
AUGMENTED = "_augmented"
AUGMENT = [{"name": "noise", "std": 0.1}, {"name": "shift", "max_shift": 4}]


def run(workdir, schedule="alternate", total_steps=400, data=None, schedule_obj=None, **kw):
    augment = AUGMENT if schedule.endswith(AUGMENTED) else ()
    schedule = schedule.removesuffix(AUGMENTED)
    phases = [
        alternating.Phase("a", loss=_loss, data="digits",
                          params=[("Dense_0/.*", True), (".*", None)],
                          optimizer={"name": "adam", "lr": 3e-3}, augment=augment),
        alternating.Phase("b", loss=_loss, data="digits",
                          params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}),
    ]
    return alternating.train(
        phases=phases, schedule=schedule_obj or SCHEDULES[schedule],
        data=data or {"digits": DIGITS},
        init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"],
        workdir=str(workdir), total_steps=total_steps, ema_decay=0.9, seed=3,
        progress=False, plot=False, **{"print_fn": print, "log_every_steps": 10,
                                       "checkpoint_every_steps": 7, "max_checkpoints_to_keep": 2,
                                       "executor": "host", **kw})  # tests pass 'fused'


if __name__ == "__main__":
    # WORKDIR SCHEDULE [TOTAL_STEPS [CHECKPOINT_EVERY [MAX_TO_KEEP]]]
    extra = dict(zip(("checkpoint_every_steps", "max_checkpoints_to_keep"),
                     (int(a) for a in sys.argv[4:6])))
    run(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]), **extra)

"""A two-phase run with a state-changing phase-end hook and a stateful evaluator.

``python tests/hook_worker.py WORKDIR EXECUTOR [TOTAL_STEPS]`` trains it (or
resumes it: same command); the kill -9 test also calls :func:`run`
in-process for the uninterrupted reference.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

import alternating
from alternating.models import MLP

MODEL = MLP(features=(16, 10))
DIGITS = {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]}
SCHEDULE = {"name": "alternate", "pattern": [["a", 5], ["b", 3]]}


def _loss(params, batch, rng, extras):
    logits = MODEL.apply({"params": params}, batch["x"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


class SnapshotAtTaskEnd:
    """At the end of every run of phase 'a': snapshot the params, count the ends,
    and pull the params a little towards the previous snapshot (a state change
    that later steps depend on)."""

    name = "snapshot"
    extras = {"snap": {"kind": "copy"}, "ends": {"kind": "init",
                                                  "init": "hook_worker:zero_counter"}}

    def __init__(self, phase="a"):
        self.when = {"phase_end": phase}
        self._fn = None

    def __call__(self, state, event, ctx):
        if self._fn is None:
            def update(state):
                mixed = jax.tree.map(lambda p, s: 0.9 * p + 0.1 * s, state.params,
                                     state.extras["snap"])
                extras = {**state.extras, "snap": mixed, "ends": state.extras["ends"] + 1}
                return state.replace(params=mixed, extras=extras)
            self._fn = ctx.jit(update, "hook:snapshot", donate_argnums=0)
        return self._fn(state)


def zero_counter(params, rng):
    del params, rng
    return jnp.zeros((), jnp.int32)


class CountingEvaluator:
    """Writes how often it ran and the params' norm; keeps its count across a resume."""

    name = "counting"

    def __init__(self, every=6):
        self.when = {"every": every}
        self.calls = 0

    def __call__(self, state, event, ctx):
        self.calls += 1
        norm = float(optax.global_norm(state.params))
        return {"counting": {"calls": float(self.calls), "norm": norm}}

    def summary(self):
        return {"counting": {"calls": self.calls}}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, d):
        self.calls = int(d["calls"])


def run(workdir, executor="host", total_steps=120, **kw):
    phases = [
        alternating.Phase("a", loss=_loss, data="digits",
                          params=[("Dense_0/.*", True), (".*", None)],
                          optimizer={"name": "adam", "lr": 3e-3}),
        alternating.Phase("b", loss=_loss, data="digits",
                          params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.05}),
    ]
    return alternating.train(
        phases=phases, schedule=SCHEDULE, data={"digits": DIGITS},
        init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"],
        workdir=str(workdir), total_steps=total_steps, seed=1, progress=False, plot=False,
        executor=executor, chunk_steps=16,
        **{"print_fn": print, "log_every_steps": 4, "checkpoint_every_steps": 7,
           "hooks": [SnapshotAtTaskEnd()], "evaluators": [CountingEvaluator()], **kw})


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    run(sys.argv[1], sys.argv[2], *(int(a) for a in sys.argv[3:4]))

"""One process of a two-process streaming run, for ``tests/streaming_mp_test.py``.

``python tests/streaming_mp_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID DATA_DIR OUT``
joins the others (``jax.distributed`` + gloo), trains two alternating phases
on a generated ArrayRecord split read with ``read: 'stream'``, and writes
``OUT/reads_<PROCESS_ID>.json`` (the record indices this process read from
the split, in order); the final state is the checkpoint in ``OUT/run``.
Also importable: :func:`train` is the same run in one process.
"""

import json
import os
import sys

import jax.numpy as jnp
import optax

import alternating
from alternating.data import arrays as arrays_lib
from alternating.models import MLP

import streaming_worker  # noqa: E402  (this directory)

MODEL = MLP(features=(16, 10))
SPEC = {"dataset": "gen_small", "batch_size": 32, "transforms": ["flatten"]}
STEPS = 12


def _loss(params, batch, rng, extras):
    del rng, extras
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def train(workdir, data_dir, read):
    phases = [
        alternating.Phase("a", loss=_loss, data="d", optimizer={"name": "adam", "lr": 1e-2}),
        alternating.Phase("b", loss=_loss, data="d", params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.1}),
    ]
    return alternating.train(
        phases=phases, schedule={"name": "alternate", "pattern": [["a", 2], ["b", 1]]},
        data={"d": {**SPEC, "read": read}},
        init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"],
        workdir=str(workdir), data_dir=data_dir, seed=4, total_steps=STEPS,
        log_every_steps=6, progress=False, plot=False, print_fn=None, executor="host")


def main(coordinator, num, pid, data_dir, out):
    from alternating.main import initialize_distributed  # pylint: disable=g-import-not-at-top
    initialize_distributed(coordinator, int(num), int(pid))
    counted = []
    arrays_lib.open_split = streaming_worker.counting_open_split(counted)
    train(os.path.join(out, "run"), data_dir, "stream")
    with open(os.path.join(out, f"reads_{pid}.json"), "w") as f:
        json.dump([c.read for c in counted], f)


if __name__ == "__main__":
    main(*sys.argv[1:6])

"""A two-phase run that reads a generated ArrayRecord dataset, for the streaming tests.

``python tests/streaming_worker.py WORKDIR DATA_DIR DATASET TOTAL_STEPS DIM
[BASELINE_DATASET]`` trains it (or resumes it: the same command) with the data
spec's ``read: 'auto'`` and prints, last, one JSON line: the process's peak
resident memory (``ru_maxrss``), and with a baseline dataset the peak after a
first run on that one, and how the run read its split ('stream' or 'memory'). The streaming tests run it
under ``$ALTERNATING_HOST_DATA_MB`` below the dataset's size, so 'auto'
streams it.
"""

import json
import resource
import sys

import jax.numpy as jnp
import optax

import alternating
from alternating.data import arrays as arrays_lib
from alternating.data import streaming
from alternating.models import MLP

class Counting:
    """A data source that records the indices read from it."""

    def __init__(self, source):
        self.source, self.read = source, []

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.read.append(int(i))
        return self.source[i]

    def __getitems__(self, idx):
        self.read.extend(int(i) for i in idx)
        return self.source.__getitems__(idx)


def counting_open_split(into):
    """``arrays.open_split`` whose sources record the indices read (each appended to ``into``)."""
    real = arrays_lib.open_split

    def counting(*args):
        b, source = real(*args)
        source.data_source = Counting(source.data_source)  # the records a stream reads
        into.append(source.data_source)
        return b, source
    return counting


MODEL = MLP(features=(32, 10))
BATCH = 64


def _loss(params, batch, rng, extras):
    del rng, extras
    logits = MODEL.apply({"params": params}, batch["x"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
    return loss, {"accuracy": (logits.argmax(-1) == batch["y"]).mean()}


def run(workdir, data_dir, dataset, total_steps=None, **kw):
    phases = [
        alternating.Phase("a", loss=_loss, data="big", optimizer={"name": "adam", "lr": 1e-3}),
        alternating.Phase("b", loss=_loss, data="big",
                          params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.05}),
    ]
    spec = kw.pop("spec", None) or {"dataset": dataset, "batch_size": BATCH,
                                    "transforms": ["flatten"], "read": "auto"}
    dim = kw.pop("dim")
    return streaming.choose_read(spec, data_dir), alternating.train(
        phases=phases, schedule={"name": "alternate", "pattern": [["a", 3], ["b", 2]]},
        data={"big": spec}, init=lambda rng: MODEL.init(rng, jnp.zeros((1, dim)))["params"],
        workdir=str(workdir), data_dir=data_dir, seed=3,
        progress=False, plot=False, **{"print_fn": print, "log_every_steps": 10,
                                       "checkpoint_every_steps": 20,
                                       "max_checkpoints_to_keep": 2, "total_steps": total_steps,
                                       "executor": "host", **kw})  # tests pass 'fused'


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    # WORKDIR DATA_DIR DATASET TOTAL_STEPS DIM [BASELINE_DATASET]: the baseline
    # dataset's run first (its own workdir), its peak memory the baseline.
    workdir, data_dir, dataset, steps, dim = sys.argv[1:6]
    out = {}
    if len(sys.argv) > 6:
        run(workdir + "_baseline", data_dir, sys.argv[6], int(steps), dim=int(dim))
        out["baseline_peak_rss_mb"] = peak_rss_mb()
    out["read"], _ = run(workdir, data_dir, dataset, int(steps), dim=int(dim))
    out["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(out), flush=True)

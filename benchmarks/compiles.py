"""Compiles: one per phase (plus evaluation), independent of steps and switches.

Trains the ``tiny`` workload (``harness.py``) with a random ``weighted``
schedule (a phase switch on about half the steps) and an evaluation set
evaluated every 10 steps, for ``N`` and ``10 N`` steps, under both executors,
and counts:

* ``traced``: the library's own count of traces per jitted function
  (``results.json``'s ``compiles``): one per phase and per evaluation function
  for the host executor, one per chunk length for the fused one;
* ``xla``: every XLA backend compile in the process during the run (JAX's
  ``/jax/core/compile/backend_compile_duration`` event), which also counts
  the small start-up programs (initial state, evaluation sums).

Both must be the same for ``N`` and ``10 N`` steps.

Usage::

    python benchmarks/compiles.py            # about half a minute
    python benchmarks/compiles.py --quick

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import warnings

import harness
from jax._src import monitoring  # the public jax.monitoring has no unregister

from alternating import loop as loop_lib

EVENT = "/jax/core/compile/backend_compile_duration"


def run(n: int, executor: str) -> dict:
    model = harness.model_of("tiny")
    data = harness.arrays("tiny")
    workdir = tempfile.mkdtemp(prefix="bench_compiles_")
    events = []

    def listener(event, duration, **kw):
        if event == EVENT:
            events.append(duration)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        loop_lib.train(
            phases=harness.library_phases("tiny"),
            schedule={"name": "weighted", "weights": {"a": 1.0, "b": 1.0}},
            data={"train": {"dataset": data, "batch_size": 8}}, init=model, model=model,
            workdir=workdir, total_steps=n, log_every_steps=10, eval_every_steps=10,
            evals={"train_set": {"data": {"dataset": data}, "phase": "a", "batch_size": 512}},
            progress=False, plot=False, print_fn=None, executor=executor, chunk_steps=10)
        with open(os.path.join(workdir, "results.json")) as f:
            res = json.load(f)
    finally:
        monitoring.unregister_event_duration_listener(listener)
        shutil.rmtree(workdir, ignore_errors=True)
    return {"traced": res["compiles"], "xla": len(events), "steps_per_phase": res["steps_per_phase"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100, help="N (runs of N and 10 N steps)")
    ap.add_argument("--quick", action="store_true", help="N = 20, one warm-up run")
    args = ap.parse_args(argv)
    n = 20 if args.quick else args.steps
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    result = {"benchmark": "compiles", "steps": [n, 10 * n], **harness.machine()}
    ok = True
    for executor in ("host", "fused"):
        if executor == "host" or not args.quick:  # --quick: one warm-up, before the host runs
            run(n, executor)  # warm-up: the process's first small programs compile once
        short, long = run(n, executor), run(10 * n, executor)
        same = short["traced"] == long["traced"] and short["xla"] == long["xla"]
        if executor == "host":
            expected = {"a": 1, "b": 1, "eval:train_set": 1}
        else:
            expected = {"fused:10": 1, "eval:train_set": 1}
        ok = ok and same and long["traced"] == expected
        result[executor] = {"short": short, "long": long, "independent_of_steps": same,
                            "expected_traced": expected}
        print(f"{executor}: traced {short['traced']} (N={n}) vs {long['traced']} (N={10 * n}); "
              f"xla compiles {short['xla']} vs {long['xla']}; switches over "
              f"{long['steps_per_phase']} phase steps", flush=True)
    result["one_per_phase_plus_eval"] = ok
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

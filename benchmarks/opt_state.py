"""Optimizer-state bytes: the sum over phases of the state for each phase's own parameters.

Trains the ``mlp`` workload (``harness.py``: phase ``a`` trains every
parameter with Adam, phase ``b`` only the last layer with its own Adam) for a
few steps with ``alternating.train`` and compares the bytes of the returned
``state.opt_state`` with what plain optax allocates for each phase's own
parameters (``optax.adam(lr).init(own sub-tree)``, split by hand), summed
over phases. For reference it also prints the bytes of one full-tree Adam
state per phase, what keeping each phase's optimizer over all parameters
would cost.

Usage::

    python benchmarks/opt_state.py

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import warnings

import harness
import jax
import optax

from alternating import loop as loop_lib
from alternating.state import tree_bytes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="mlp", choices=sorted(harness.WORKLOADS))
    ap.add_argument("--quick", action="store_true", help="same run (it is already seconds)")
    args = ap.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    w = args.workload
    model = harness.model_of(w)
    workdir = tempfile.mkdtemp(prefix="bench_opt_state_")
    try:
        state = loop_lib.train(
            phases=harness.library_phases(w), schedule={"name": "alternate", "pattern": ["a", "b"]},
            data={"train": {"dataset": harness.arrays(w), "batch_size": harness.WORKLOADS[w]["batch"]}},
            init=model, model=model, workdir=workdir, total_steps=4, progress=False, plot=False,
            print_fn=None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    params = jax.device_get(state.params)
    last = harness.last_layer(w)
    own = {"a": params, "b": {last: params[last]}}
    expected = {p: tree_bytes(optax.adam(harness.LR).init(t)) for p, t in own.items()}
    library = {p: tree_bytes(s) for p, s in state.opt_state.items()}
    full = {p: tree_bytes(optax.adam(harness.LR).init(params)) for p in own}
    result = {
        "benchmark": "opt_state", "workload": w,
        "param_bytes": tree_bytes(params),
        "library_bytes_per_phase": library, "expected_bytes_per_phase": expected,
        "library_bytes": sum(library.values()), "expected_bytes": sum(expected.values()),
        "full_tree_per_phase_bytes": sum(full.values()),
        "equal": library == expected, **harness.machine(),
    }
    print(f"optimizer state: library {result['library_bytes']:,} bytes {library}; "
          f"sum over phases of Adam on own params {result['expected_bytes']:,} bytes {expected}; "
          f"(a full-tree Adam per phase would be {result['full_tree_per_phase_bytes']:,})")
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

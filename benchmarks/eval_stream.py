"""Streamed evaluation vs an eval set held in memory: seconds per evaluation of one split.

A generated ArrayRecord split (``--gib`` GiB of float32 features, default 1;
``data.write_generated``, the files TFDS's own writer would make) is
evaluated with the library's evaluation path (``evaluation.device_batches``,
``make_eval_fn``, ``evaluate``: every example once, padded batches, exact
means) by an MLP ``dim-hidden-hidden-10`` (default 4096-1024-1024-10, eval
batch 512), in one process on one CPU device, two ways:

* ``memory``: ``read: 'memory'``: the split read and placed once (``load_s``),
  then every evaluation runs over the placed batches;
* ``stream``: ``read: 'stream'``: every evaluation reads its padded batches
  by index from the files, one batch ahead (``streaming.EvalBatches``), and
  places each.

Each arm evaluates ``--repeats`` times after one warm-up evaluation (the
compile); the arms alternate. Reported: seconds per evaluation (wall and
process CPU time), the ratio memory / stream of evaluations per second (1.0:
streaming costs nothing), and that both arms give the same metrics (checked
to 1e-6 relative: the same batches in the same order).

Usage::

    python benchmarks/eval_stream.py            # 1 GiB: generation ~15 s, then ~3 minutes
    python benchmarks/eval_stream.py --quick    # seconds

The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of the generated features")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3, help="timed evaluations per arm")
    ap.add_argument("--quick", action="store_true", help="a tiny split and model")
    args = ap.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.quick:
        args.gib, args.dim, args.hidden, args.batch, args.repeats = 0.01, 256, 64, 128, 2

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import harness
    from alternating import data as data_lib, evaluation, parallel
    from alternating.models import MLP

    model = MLP(features=(args.hidden, args.hidden, 10))

    def loss(params, batch, rng, extras):
        del rng, extras
        logits = model.apply({"params": params}, batch["x"])
        acc = (jnp.argmax(logits, -1) == batch["y"]).mean()
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {
            "accuracy": acc}

    data_dir = tempfile.mkdtemp(prefix="bench_eval_stream_")
    name = f"eval_stream_bench_{args.dim}"
    try:
        n = int(args.gib * 2 ** 30 // (4 * args.dim))
        t0 = time.perf_counter()
        nbytes = data_lib.write_generated(name, data_dir, {"train": n}, (args.dim,), seed=0)
        gen_s = time.perf_counter() - t0
        print(f"generated {n} examples, {nbytes / 2 ** 30:.2f} GiB of files in {gen_s:.1f} s",
              flush=True)
        mesh = parallel.make_mesh()
        params = jax.device_put(model.init(jax.random.PRNGKey(0),
                                           jnp.zeros((1, args.dim)))["params"],
                                parallel.replicated(mesh))
        state = type("State", (), {"params": params, "extras": {},
                                   "step": jnp.zeros((), jnp.int32)})()
        fn = evaluation.make_eval_fn(loss, mesh, None, "eval:bench")
        sets, load_s = {}, {}
        for arm in ("memory", "stream"):
            t0 = time.perf_counter()
            batches = evaluation.device_batches(
                {"dataset": name, "split": "train", "read": arm}, args.batch, mesh, data_dir)
            load_s[arm] = round(time.perf_counter() - t0, 2)
            sets[arm] = [evaluation.BoundEval(arm, fn, batches)]
        first = {arm: evaluation.evaluate(sets[arm], state)[arm] for arm in sets}  # compiles
        wall, cpu = {a: [] for a in sets}, {a: [] for a in sets}
        for r in range(args.repeats):
            for arm in (("memory", "stream") if r % 2 == 0 else ("stream", "memory")):
                t0, c0 = time.perf_counter(), time.process_time()
                got = evaluation.evaluate(sets[arm], state)[arm]
                wall[arm].append(time.perf_counter() - t0)
                cpu[arm].append(time.process_time() - c0)
                assert got == first[arm], (arm, got, first[arm])
            print(f"  repeat {r}: memory {wall['memory'][-1]:.2f} s, stream "
                  f"{wall['stream'][-1]:.2f} s", flush=True)
        same = all(np.isclose(first["memory"][k], first["stream"][k], rtol=1e-6)
                   for k in first["memory"])
        if not same:
            raise SystemExit(f"the arms' metrics differ: {first}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    ratio = lambda t: harness.summary([m / s for m, s in zip(t["memory"], t["stream"])])  # noqa: E731
    result = {
        "benchmark": "eval_stream", "gib": args.gib, "examples": n, "file_bytes": nbytes,
        "quick": args.quick, "model": f"mlp {args.dim}-{args.hidden}-{args.hidden}-10",
        "eval_batch": args.batch, "repeats": args.repeats,
        "seconds_per_eval": {a: harness.summary(v) for a, v in wall.items()},
        "cpu_seconds_per_eval": {a: harness.summary(v) for a, v in cpu.items()},
        "ratio": ratio(wall), "cpu_time_ratio": ratio(cpu), "load_s": load_s,
        "metrics_equal": same, **harness.machine()}
    print(f"stream / memory evaluations per second: x{result['ratio']['median']} wall, "
          f"x{result['cpu_time_ratio']['median']} CPU time", flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

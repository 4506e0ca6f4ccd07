"""Convolution train steps inside a compiled loop on CPU, and what the library does about it.

Found while profiling ``executor: auto`` on the default scheme: XLA:CPU runs a
train step that takes convolution gradients many times slower inside a
``lax.scan`` (a while loop) than as a jitted program of its own, even for a
one-step scan; the forward pass alone is not slower (jax-ml/jax#12868
reports the same for convolutions in loop bodies). The library therefore
never puts such a step in a loop on CPU (``alternating/executor_choice.py``):
``auto`` picks the host executor and ``fused`` / vectorized seeds run chunks
of one step.

Part 1, hand-written (the cause): a CNN1D train step (two convolutions of 32
channels, kernel 5, then MLP 128-10, batch 64, MNIST-1D-sized input
``[40, 1]``, plain SGD), process CPU time per step of

* ``jit``: one jitted step per call;
* ``scan10`` / ``scan1``: ``lax.scan`` of 10 / 1 steps;
* ``scan10_unrolled``: the same 10 steps unrolled (no loop);
* ``forward_jit`` / ``forward_scan10``: the forward pass only;
* ``vmap5_jit`` / ``vmap5_scan1``: 5 replicas (vectorized seeds) per step.

Part 2, the library: the default scheme (``configs/default.py``, two CNN
stems) trained with ``executor`` ``host``, ``auto`` and ``fused``; steps/s
by the ``diff`` clock (a run of ``--short`` and of ``--steps`` steps, each
its own ``wall_time_s``; compilation cancels). Arms alternate.

Usage::

    python benchmarks/conv_loop.py            # about 3 minutes on 2 cores
    python benchmarks/conv_loop.py --quick    # smoke check

The last line is one JSON object: ``scan_vs_jit`` (part 1: per-step CPU time
of ``scan10`` over ``jit``, the slowdown avoided), ``per_step_ms`` and
``library`` (``{executor: steps/s}`` and ``auto_vs_host``, ``fused_vs_host``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from alternating import experiment  # noqa: E402
from configs import default as default_config  # noqa: E402


class _CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(2):
            x = nn.relu(nn.Conv(32, (5,))(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(10)(nn.relu(nn.Dense(128)(x)))


def _programs():
    net, x, y = _CNN(), jnp.ones((64, 40, 1)), jnp.arange(64) % 10
    params = net.init(jax.random.PRNGKey(0), x)

    def loss(p):
        return -jnp.mean(jax.nn.log_softmax(net.apply(p, x))[jnp.arange(64), y])

    def step(p, _=None):
        g = jax.grad(loss)(p)
        return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), None

    def forward(p, _=None):
        return jax.tree.map(lambda a: a + 1e-6 * loss(p), p), None

    vstep = jax.vmap(lambda p: step(p)[0])
    stacked = jax.tree.map(lambda a: jnp.stack([a] * 5), params)

    def scan(f, n, unroll=1):
        return lambda p: jax.lax.scan(f, p, None, length=n, unroll=unroll)[0]

    return {  # name: (program, steps per call, initial argument)
        "jit": (jax.jit(lambda p: step(p)[0]), 1, params),
        "scan10": (jax.jit(scan(step, 10)), 10, params),
        "scan1": (jax.jit(scan(step, 1)), 1, params),
        "scan10_unrolled": (jax.jit(scan(step, 10, unroll=10)), 10, params),
        "forward_jit": (jax.jit(lambda p: forward(p)[0]), 1, params),
        "forward_scan10": (jax.jit(scan(forward, 10)), 10, params),
        "vmap5_jit": (jax.jit(vstep), 1, stacked),
        "vmap5_scan1": (jax.jit(scan(lambda c, _: (vstep(c), None), 1)), 1, stacked),
    }


def hand_written(steps: int, repeats: int) -> dict:
    out = {}
    for name, (fn, per_call, arg) in _programs().items():
        arg = jax.block_until_ready(fn(arg))  # compile
        times = []
        for _ in range(repeats):
            t = time.process_time()
            for _ in range(max(steps // per_call, 1)):
                arg = fn(arg)
            jax.block_until_ready(arg)
            times.append(1e3 * (time.process_time() - t) / (max(steps // per_call, 1) * per_call))
        out[name] = round(statistics.median(times), 3)
    return out


def _wall(executor: str, steps: int) -> float:
    c = default_config.get_config(f"steps={steps // 2}")
    c.executor, c.eval_every_steps, c.checkpoint_every_steps = executor, 0, 0
    c.log_every_steps = max(steps // 4, 1)
    with tempfile.TemporaryDirectory() as workdir:
        experiment.train_and_evaluate(c, workdir, plot=False, progress=False, print_fn=None)
        with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
            return float(json.load(f)["wall_time_s"])


def library(short: int, steps: int, repeats: int) -> dict:
    rates = {e: [] for e in ("host", "auto", "fused")}
    for _ in range(repeats):
        for e in rates:  # alternate, so a change in load hits every arm
            dt = _wall(e, steps) - _wall(e, short)
            rates[e].append((steps - short) / dt if dt > 0 else float("nan"))
    med = {e: round(statistics.median(v), 1) for e, v in rates.items()}
    return {"steps_per_s": med, "auto_vs_host": round(med["auto"] / med["host"], 3),
            "fused_vs_host": round(med["fused"] / med["host"], 3)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--short", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.short, a.repeats = 40, 20, 1
    per_step = hand_written(min(a.steps, 200), a.repeats)
    for k, v in per_step.items():
        print(f"{k:16s} {v:8.3f} ms CPU per step", flush=True)
    lib = library(a.short, a.steps, a.repeats)
    print("library, default scheme:", lib, flush=True)
    result = {"benchmark": "conv_loop", "platform": jax.devices()[0].platform,
              "scan_vs_jit": round(per_step["scan10"] / per_step["jit"], 2),
              "per_step_ms": per_step, "library": lib}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

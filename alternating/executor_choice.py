"""Which executor a run gets, and how long its fused chunks may be.

``executor: auto`` (the default) picks the fused executor where the schedule
plans ahead, else the host executor (:func:`resolve`). One exception, found
by profiling the default scheme on a 2-core CPU: XLA:CPU runs convolution
gradients many times slower inside a compiled loop than as a program of
their own (``_LOOP_SLOW_ON_CPU``), so on CPU a step that takes them gets the
host executor under ``auto`` and one-step chunks (no loop) under ``fused``
or vectorized seeds (:func:`choose`). docs/benchmarks.md, "The fused executor
and convolutions on CPU".
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from jax.extend import core as jax_core


def resolve(name: str, schedule: Any, loop_slow: bool = False) -> str:
    """The executor ``'auto'`` stands for: ``'fused'`` when the schedule plans
    ahead (no feedback decides its phases) and the step runs at full speed
    inside a compiled loop, else ``'host'``; other names as given.

    ``loop_slow``: the step is slower inside an XLA loop than as its own
    program (:func:`loop_slow`: convolution gradients on CPU). Both executors
    train the same TrainState (bit for bit on the tested MLPs; to float
    rounding where XLA compiles a step differently inside the loop), so
    ``'auto'`` changes speed, not results: a planned chunk is one program
    (fused/host 1.4x on the ``mlp`` benchmark on a 2-core CPU, about 10x on an
    H200; docs/benchmarks.md).
    """
    if name != "auto":
        return name
    return "fused" if getattr(schedule, "can_plan", False) and not loop_slow else "host"


def choose(name: str, chunk_steps: int, schedule: Any, vectorized: bool,
           is_loop_slow: Callable[[], bool]) -> tuple[str, int, str, bool]:
    """``(executor, chunk length cap, message or '', loop-slow)`` for a run.

    ``name`` resolves as :func:`resolve`. Where fused chunks would run
    (``'fused'``, ``'auto'``, vectorized seeds) ``is_loop_slow()`` is asked
    once; when True, chunks are one step long and run their phase's step
    directly (no loop, no conditional: XLA:CPU is as slow in a ``switch``
    branch), and ``'auto'`` picks the host executor.
    """
    slow = (name != "host" or vectorized) and is_loop_slow()
    kind = resolve(name, schedule, slow)
    why = "the steps take convolution gradients, which XLA:CPU runs ~10x slower in a loop or switch"
    if slow and kind == "host" and not vectorized:
        note = f"executor: host (auto: {why})"
    elif slow:
        seeds = " (vectorized seeds)" if vectorized else ""
        note = f"executor: fused{seeds}, chunks of 1 step ({why})"
    elif name == "auto" and not vectorized:
        note = f"executor: {kind} (auto: " + (
            "the schedule plans ahead)" if kind == "fused" else "the schedule adapts to feedback)")
    else:
        note = ""
    return kind, (chunk_steps if kind == "fused" and not slow else 1), note, slow


# Primitives XLA:CPU runs many times slower inside a loop body than as a
# program of their own: convolution gradients (``conv_general_dilated`` in a
# ``lax.scan``: 27 ms against 3 ms a step for a two-layer CNN1D train step,
# 144 vs 20 ms vmapped over 5 replicas; the forward pass alone is not slower;
# jax-ml/jax#12868). docs/benchmarks.md, "Fused executor and convolutions".
_LOOP_SLOW_ON_CPU = frozenset({"conv_general_dilated"})


def _primitives(jaxpr: Any) -> set[str]:
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax_core.jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


def batch_spec(streams: Mapping[str, Any], reads: Sequence[str], multi: bool) -> Any:
    """A phase's abstract batch: ``{stream: {key: ShapeDtypeStruct}}`` or one stream's."""
    specs = {st: {k: jax.ShapeDtypeStruct(shape, dtype)
                  for k, (shape, dtype) in streams[st].element_spec.items()}
             for st in reads}
    return specs if multi else specs[reads[0]]


def loop_slow(steps: Mapping[str, Callable], streams: Mapping[str, Any],
              reads: Mapping[str, Sequence[str]], multi: Mapping[str, bool],
              abstract_state: Any, mesh: Any) -> bool:
    """Whether some phase's step uses a primitive that XLA:CPU runs many times
    slower inside a loop (``_LOOP_SLOW_ON_CPU``); False off CPU (one trace
    of each step, on CPU only)."""
    if not all(d.platform == "cpu" for d in np.ravel(mesh.devices)):
        return False
    for n, fn in steps.items():
        closed = jax.make_jaxpr(fn)(abstract_state, batch_spec(streams, reads[n], multi[n]))
        if _primitives(closed.jaxpr) & _LOOP_SLOW_ON_CPU:
            return True
    return False

"""Vectorized seeds: S independent replicas of a run in one compiled program.

Replica ``i`` is the run with seed ``seed + i``: its own initialization, its
own data order (streams seeded from its seed) and its own schedule draws. The
replicas' TrainStates are stacked on a leading axis and every chunk of steps
is the fused executor's ``lax.scan`` + ``lax.switch`` program under
``jax.vmap`` (:class:`alternating.executor.Fused` with ``vectorized=True``),
run by the same loop as one run (:mod:`alternating.loop`). Small models
leave most of a device idle, so S seeds in one program cost far less than S
runs one after the other.

This module holds only what is seed-specific: the per-replica schedules and
streams, the stacked initial state, evaluating each replica, and combining
per-replica figures. It imports nothing of the loop.

Where the replicas' schedules pick different phases at a step, ``switch``
under ``vmap`` runs every phase's step for all replicas and keeps each
replica's own, so a random schedule costs up to the sum of its phases' steps
(a fixed pattern costs nothing extra: every replica runs the same phase).

Outputs: ``metrics.jsonl``/TensorBoard rows per phase with each metric's mean
over seeds, its ``_std`` and its value per seed (``<metric>_seed<i>``);
``results.json`` with ``final_eval`` as mean over seeds (plus ``_std``), and
``final_eval_per_seed``, ``seeds``, ``steps_per_phase_per_seed``.

Extras (teachers, snapshot rings, dual variables) are per replica, like the
parameters. Not supported with several seeds (errors say so): checkpoints
and resume, ``init_from``, ``nan_policy='skip'``, ``sharding_rules``,
schedules that observe feedback, a ``Stream`` or ``Schedule`` object (a spec
is needed to make one per seed).
The learning-rate decay length of each phase (when its optimizer spec leaves
``decay_steps`` unset) comes from the first seed's schedule.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from alternating import data as data_lib
from alternating import options as options_lib
from alternating import parallel
from alternating.build import make_streams
from alternating.metrics.tables import combine_replicas
from alternating.phase import spec_lr
from alternating import phase as phase_lib
from alternating.schedules import Schedule, make_schedule

_combine = combine_replicas  # the name earlier code used


def check_seeds(options: options_lib.RunOptions, *, schedule: Any,
                data: Mapping[str, Any]) -> None:
    """Raises a clear error for settings vectorized seeds cannot honour.

    The settings that change training and that the vectorized path does not
    carry out are refused here, so none is silently ignored. (It writes no
    plot: ``plot`` has no effect there.)
    """
    num_seeds = options.num_seeds
    if num_seeds == 1:
        return
    if isinstance(schedule, Schedule):
        raise ValueError(f"num_seeds={num_seeds} needs the schedule as a spec "
                         "({'name': ..., **kwargs}) to build one per seed, not a Schedule object.")
    streams = sorted(k for k, v in data.items() if isinstance(v, data_lib.Stream))
    if streams:
        raise ValueError(f"num_seeds={num_seeds} needs data specs to seed one stream per seed; "
                         f"stream(s) {streams} are Stream objects.")
    options_lib.check_with_seeds(options)


def replicas(phases: Sequence[Any], schedule: Any, data: Mapping[str, Any],
             options: options_lib.RunOptions, mesh: Any) -> tuple[list[int], list, list, Any]:
    """``(seeds, schedules, stream sets, lr scales)``: a schedule and streams per replica.

    The seeds are ``replica_seeds`` or ``seed, seed + 1, ...``; the lr scales
    are :func:`lr_scales` of ``replica_lr`` (``None`` without it).

    Raises:
      ValueError: a schedule that observes feedback (not supported yet).
    """
    names = [p.name for p in phases]
    seeds = (list(options.replica_seeds) if options.replica_seeds is not None
             else [options.seed + i for i in range(options.num_seeds)])
    schedules = [make_schedule(schedule, names, seed=s) for s in seeds]
    if any(sch.feedback_every for sch in schedules):
        raise ValueError("num_seeds > 1 does not support schedules that observe feedback yet; "
                         "use one seed per run.")
    stream_sets = [make_streams(phases, data, seed=s, mesh=mesh, data_dir=options.data_dir)
                   for s in seeds]
    return seeds, schedules, stream_sets, lr_scales(phases, options.replica_lr)


def lr_scales(phases: Sequence[Any], replica_lr: Mapping[str, Sequence[float]] | None,
              ) -> dict[str, np.ndarray] | None:
    """``{opt key: per-replica factor on its updates}`` for ``replica_lr``, or ``None``.

    A replica's factor is its learning rate over the phase's spec ``lr``:
    every optimizer here applies its learning rate last (optax's
    ``scale_by_learning_rate``, after moments, weight decay and trust
    ratio), so scaling a step's updates by it is training at that peak lr
    under the same schedule shape. Phases of one optimizer group share one
    factor.

    Raises:
      ValueError: an unknown phase, a phase whose optimizer is not a spec, or
        phases of one group given different learning rates.
    """
    if not replica_lr:
        return None
    by_name = {p.name: p for p in phases}
    unknown = sorted(set(replica_lr) - set(by_name))
    if unknown:
        raise ValueError(f"replica_lr names phase(s) {unknown}; valid phases: {sorted(by_name)}.")
    out: dict[str, np.ndarray] = {}
    for name, values in replica_lr.items():
        p = by_name[name]
        base = spec_lr(p.optimizer)
        if not base:
            raise ValueError(f"replica_lr[{name!r}]: phase {name!r} has an optax object or lr 0 "
                             "as its optimizer; replica_lr needs an optimizer spec with lr > 0.")
        key = str(p.optimizer_group or name)
        factors = np.asarray(values, np.float32) / np.float32(base)
        if key in out and not np.array_equal(out[key], factors):
            raise ValueError(f"replica_lr: phases of optimizer group {key!r} share one learning "
                             "rate; give them the same values.")
        out[key] = factors
    return out


def init_state(make_state: Any, rngs: tuple[Any, Any], mesh: Any,
               scales: Mapping[str, np.ndarray] | None = None) -> Any:
    """The replicas' initial TrainStates, stacked on a leading axis.

    ``scales``: :func:`lr_scales`, written to ``extras[phase.LR_SCALE]`` per replica.
    """
    state = jax.jit(jax.vmap(make_state), out_shardings=parallel.replicated(mesh))(*rngs)
    if scales:
        put = lambda v: jax.device_put(np.asarray(v, np.float32), parallel.replicated(mesh))
        state = state.replace(extras={**state.extras,
                                      phase_lib.LR_SCALE: {k: put(v) for k, v in scales.items()}})
    return state


def replica(state: Any, i: int) -> Any:
    """Replica ``i`` of a stacked state."""
    return jax.tree.map(lambda x: x[i], state)


def evaluate(evaluator: Any, state: Any, event: Any, ctx: Any,
             count: int) -> tuple[dict | None, list]:
    """Runs ``evaluator`` on each replica; ``(combined rows, rows per replica)``."""
    per = []
    for i in range(count):
        ctx.replica = i
        per.append(evaluator(replica(state, i), event, ctx))
    ctx.replica = None
    if per[0] is None:
        return None, per
    return {k: combine_replicas([r[k] for r in per]) for k in per[0]}, per


def results(state: Any, seeds: Sequence[int], per_seed_eval: list) -> dict[str, Any]:
    """The seed-specific fields of ``results.json``."""
    phase_steps = parallel.get(state.phase_steps)
    return {
        "final_eval_per_seed": per_seed_eval,
        "seeds": list(seeds),
        "num_seeds": len(seeds),
        "steps_per_phase_per_seed": [{k: int(np.asarray(v)[i]) for k, v in phase_steps.items()}
                                     for i in range(len(seeds))],
    }

"""Vectorized seeds: S independent replicas of a run in one compiled program.

Replica ``i`` is the run with seed ``seed + i``: its own initialization, its
own data order (streams seeded from its seed) and its own schedule draws. The
replicas' TrainStates are stacked on a leading axis and every chunk of steps
is the fused executor's ``lax.scan`` + ``lax.switch`` program under
``jax.vmap`` (:class:`alternating.executor.Fused` with ``vectorized=True``).
Small models leave most of a device idle, so S seeds in one program cost far
less than S runs one after the other.

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

import math
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from alternating import data as data_lib
from alternating import executor as executor_lib
from alternating import metrics as metrics_lib
from alternating import parallel
from alternating import phase as phase_lib
from alternating.schedules import Schedule, make_schedule
from alternating.state import init_state, size_report


def check_seeds(num_seeds: int, *, schedule: Any, data: Mapping[str, Any],
                checkpoint_every_steps: int, nan_policy: str = "raise", init_from: Any = None,
                sharding_rules: Sequence[Any] = ()) -> None:
    """Raises a clear error for settings vectorized seeds cannot honour.

    The settings that change training and that the vectorized path does not
    carry out are refused here, so none is silently ignored. (It writes no
    plot: ``plot`` has no effect there.)
    """
    if not isinstance(num_seeds, (int, np.integer)) or num_seeds < 1:
        raise ValueError(f"num_seeds={num_seeds!r}; it must be an integer >= 1.")
    if num_seeds == 1:
        return
    if isinstance(schedule, Schedule):
        raise ValueError(f"num_seeds={num_seeds} needs the schedule as a spec "
                         "({'name': ..., **kwargs}) to build one per seed, not a Schedule object.")
    streams = sorted(k for k, v in data.items() if isinstance(v, data_lib.Stream))
    if streams:
        raise ValueError(f"num_seeds={num_seeds} needs data specs to seed one stream per seed; "
                         f"stream(s) {streams} are Stream objects.")
    if checkpoint_every_steps:
        raise ValueError(f"num_seeds={num_seeds}: checkpoints are not supported with vectorized "
                         "seeds; set checkpoint_every_steps=0.")
    if nan_policy != "raise":
        raise ValueError(f"num_seeds={num_seeds}: nan_policy={nan_policy!r} is not supported "
                         "with vectorized seeds (valid there: 'raise'); use one seed per run.")
    if init_from:
        raise ValueError(f"num_seeds={num_seeds}: init_from is not supported with vectorized "
                         "seeds (each replica initializes from its own seed); use one seed "
                         "per run.")
    if sharding_rules:
        raise ValueError(f"num_seeds={num_seeds}: sharding_rules are not supported with "
                         "vectorized seeds (replicas are replicated over the devices); use "
                         "one seed per run.")


def _combine(per_seed: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean over seeds, ``_std`` and ``_seed<i>`` of every metric some seed has."""
    out: dict[str, float] = {}
    keys = sorted({k for m in per_seed for k in m})
    for k in keys:
        vals = [m[k] for m in per_seed if k in m]
        out[k] = math.fsum(vals) / len(vals)
        out[f"{k}_std"] = float(np.std(vals))
        for i, m in enumerate(per_seed):
            if k in m:
                out[f"{k}_seed{i}"] = m[k]
    return out


def train_seeds(*, phases, schedule, data, init: Callable, workdir: str, total_steps: int,
                model: Any, seed: int, num_seeds: int, evals: Any, log_every_steps: int,
                eval_every_steps: int, ema_decay: float, extras: Any, data_dir: str | None,
                mesh: Any,
                chunk_steps: int, progress: bool, print_fn, stream_seed: Callable,
                build_evals: Callable, evaluate: Callable, pack: Callable,
                check_steps: Callable, count_phase_steps: Callable) -> Any:
    """Trains ``num_seeds`` replicas; see the module docstring.

    Called by :func:`alternating.loop.train` (which has checked the common
    arguments) with its helpers, so both paths build phases, evaluations and
    steps the same way.

    Returns:
      The stacked TrainState (leading axis: seed).
    """
    t_start = time.time()
    say = print_fn or (lambda s: None)
    names = [p.name for p in phases]
    seeds = [seed + i for i in range(num_seeds)]
    pidx, pcount = jax.process_index(), jax.process_count()
    schedules = [make_schedule(schedule, names, seed=s) for s in seeds]
    for p in phases:
        for s in p.streams:
            if s not in data:
                raise ValueError(f"phase {p.name!r} reads data stream {s!r}, which is not "
                                 f"defined; streams: {sorted(data)}.")
    stream_names = sorted({s for p in phases for s in p.streams})
    stream_sets = []
    for s in seeds:
        sets = {}
        for name in stream_names:
            spec = dict(data[name].to_dict() if hasattr(data[name], "to_dict") else data[name])
            parallel.check_batch_size(int(spec.get("batch_size", 0)), mesh,
                                      f"data stream {name!r}")
            sets[name] = data_lib.make_stream(spec, seed=stream_seed(s, name), data_dir=data_dir,
                                              process_index=pidx, process_count=pcount)
        stream_sets.append(sets)

    keys = np.stack([np.asarray(jax.random.split(jax.random.PRNGKey(s))) for s in seeds])
    init_rngs, state_rngs = keys[:, 0], keys[:, 1]
    abstract_params = jax.eval_shape(init, init_rngs[0])
    expected = schedules[0].expected_steps(total_steps)
    bound = [phase_lib.bind(p, i, params=abstract_params, model=model,
                            expected_steps=max(expected.get(p.name, 1), 1))
             for i, p in enumerate(phases)]
    counter = parallel.TraceCounter()
    eval_sets = build_evals(evals or {}, bound, model, mesh, data_dir, pidx, pcount, counter)
    say(f"alternating: {num_seeds} seeds {seeds} vectorized, {len(phases)} phases {names}, "
        f"schedule {schedules[0].config()}, {total_steps} steps")

    def make_state(init_rng, state_rng):
        return init_state(init(init_rng), bound, state_rng, ema_decay=ema_decay,
                          extra_specs=extras)

    packed = {b.name: pack(phase_lib.make_step(b, ema_decay=ema_decay)) for b in bound}
    one_state = jax.eval_shape(make_state, init_rngs[0], state_rngs[0])
    check_steps(bound, {n: fn for n, (fn, _) in packed.items()}, one_state, stream_sets[0])
    rep = parallel.replicated(mesh)
    state = jax.jit(jax.vmap(make_state), out_shardings=rep)(init_rngs, state_rngs)

    feedback = [sch.feedback_every or 0 for sch in schedules]
    if any(feedback):
        raise ValueError("num_seeds > 1 does not support schedules that observe feedback yet; "
                         "use one seed per run.")
    fused = executor_lib.Fused(
        steps={name: fn for name, (fn, _) in packed.items()},
        reads={b.name: b.streams for b in bound}, multi={b.name: b.multi_stream for b in bound},
        streams=stream_sets, schedule=schedules, mesh=mesh, chunk_steps=chunk_steps,
        abstract_state=one_state, counter=counter,
        stops=executor_lib.boundaries(log_every_steps, eval_every_steps),
        no_prefetch_after=lambda step: False, total_steps=total_steps, vectorized=True)
    metric_names = {name: n for name, (_, n) in packed.items()}

    writer = metrics_lib.MetricWriter(workdir, process_index=pidx)
    bar = metrics_lib.Progress(total_steps, disable=not progress or pidx != 0)
    pending: list[tuple[int, np.ndarray, Any]] = []  # (first step, ids [S, n], metrics)
    counts = [{n: 0 for n in names} for _ in seeds]
    final_eval: dict[str, dict[str, float]] = {}
    per_seed_eval: list[dict[str, dict[str, float]]] = []

    def log(step):
        host = jax.device_get([m for _, _, m in pending])
        tables = []
        for i in range(num_seeds):
            parts = []
            for (start, ids, _), chunk in zip(pending, host):
                n = ids.shape[1]
                parts.append(metrics_lib.StepTable(
                    start + np.arange(n), ids[i], chunk[i],
                    count_phase_steps(ids[i], counts[i], fused.names), fused.names,
                    metric_names))
            tables.append(metrics_lib.StepTable.concat(parts))
        pending.clear()
        for i, table in enumerate(tables):
            bad = table.first_nonfinite()
            if bad is not None:
                from alternating.loop import NonFiniteError  # the loop owns the error
                raise NonFiniteError(f"non-finite {bad[2]} at step {bad[0]} in phase {bad[1]!r} "
                                     f"of seed {seeds[i]}; stopping.")
        aggs = [t.aggregate() for t in tables]
        for p in names:
            present = [a[p] for a in aggs if p in a]
            if present:
                scalars = _combine([a.get(p, {}) for a in aggs])
                writer.write_train(step, p, scalars)
                if "loss" in scalars:
                    bar.set_loss(p, scalars["loss"])
        writer.flush()

    def run_evals(step):
        nonlocal final_eval, per_seed_eval
        per_seed_eval = [evaluate(eval_sets, jax.tree.map(lambda x: x[i], state), step, None)
                         for i in range(num_seeds)]
        final_eval = {k: _combine([r[k] for r in per_seed_eval]) for k in per_seed_eval[0]}
        for k, v in final_eval.items():
            writer.write_eval(step, k, v)
        writer.flush()

    try:
        step = 0
        while step < total_steps:
            state, ids, chunk_metrics = fused.run_chunk(state, step)
            pending.append((step, ids, chunk_metrics))
            step += ids.shape[1]
            if (log_every_steps and step % log_every_steps == 0) or step == total_steps:
                log(step)
            if eval_sets and ((eval_every_steps and step % eval_every_steps == 0)
                              or step == total_steps):
                run_evals(step)
            bar.update(step, fused.names[ids[0, -1]])
    finally:
        bar.close()
        writer.close()

    phase_steps = jax.device_get(state.phase_steps)
    wall = time.time() - t_start
    results = {
        "final_eval": final_eval,
        "final_eval_per_seed": per_seed_eval,
        "seeds": seeds,
        "num_seeds": num_seeds,
        "steps": total_steps,
        "steps_per_phase_per_seed": [{k: int(v[i]) for k, v in phase_steps.items()}
                                     for i in range(num_seeds)],
        "compiles": dict(counter.counts),
        "wall_time_s": round(wall, 3),
        "total_steps": total_steps,
        "num_devices": int(mesh.size),
        "num_processes": pcount,
        **size_report(one_state, bound),  # of one replica
        "schedule": schedules[0].config(),
    }
    if pidx == 0:
        metrics_lib.write_results(os.path.join(workdir, "results.json"), results)
        say(f"done in {wall:.1f}s; outputs in {workdir}")
    return state

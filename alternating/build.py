"""Run set-up: from the scheme and the options to what the loop runs.

:func:`build` resolves and checks everything before anything is compiled:
the schedule, the data streams, the phases bound to the model's abstract
parameters, the evaluators and hooks (their names, their ``when``, the
structure of what a hook returns), every phase's step traced on abstract
inputs, and the state's shardings. The loop (:mod:`alternating.loop`) then
only starts, runs and finishes. Vectorized seeds build their per-replica
schedules and streams with the same functions (:mod:`alternating.seeds`).
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from alternating import data as data_lib
from alternating import evaluation, hooks as hooks_lib, parallel
from alternating import phase as phase_lib
from alternating import triggers
from alternating.nonfinite import Policy
from alternating.options import RunOptions
from alternating.schedules import check_feedback
from alternating.state import init_state


def stream_seed(seed: int, name: str) -> int:
    # Stable across processes and Python runs (unlike hash()).
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def pack_metrics(step: Callable) -> tuple[Callable, list[str]]:
    """The step with its scalar metrics stacked into one float32 vector.

    One output array per step instead of one per metric: each array costs
    about a microsecond to dispatch and ~10 us to ``device_get``. The names
    (sorted) are filled in when the step is traced and never change after.
    """
    names: list[str] = []

    def packed(state, batch):
        state, metrics = step(state, batch)
        names[:] = sorted(metrics)
        return state, jnp.stack([jnp.asarray(metrics[k], jnp.float32) for k in names])

    packed.__name__ = getattr(step, "__name__", "step")
    return packed, names


def check_steps(bound, fns, abstract_state, streams) -> None:
    """Traces every phase's step on abstract inputs before anything compiles.

    A loss that reads a missing batch key, names a stem the model lacks or
    has mismatched shapes fails here, in seconds, with the phase named in the
    error's notes, instead of after other phases have compiled and run.
    """
    for b in bound:
        specs = {s: {k: jax.ShapeDtypeStruct((streams[s].batch_size,) + tuple(shape[1:]), dtype)
                     for k, (shape, dtype) in streams[s].element_spec.items()}
                 for s in b.streams}
        batch = specs if b.multi_stream else specs[b.streams[0]]
        try:
            jax.eval_shape(fns[b.name], abstract_state, batch)
        except Exception as e:
            e.add_note(f"(while checking phase {b.name!r} on a batch of stream(s) "
                       f"{list(b.streams)} with keys {sorted(specs[b.streams[0]])})")
            raise


def resolve_init(init: Any) -> Callable[[jax.Array], Any]:
    if hasattr(init, "init") and callable(init.init):
        return init.init
    if callable(init):
        return init
    return lambda rng: init


def bind_phases(phases, schedule, init_fn, *, model, init_rng, total_steps):
    """Binds every phase to the model's abstract params: ``(bound, abstract params)``.

    A phase's learning-rate decay length (when its optimizer leaves
    ``decay_steps`` unset) is its expected step count under ``schedule``.
    """
    abstract_params = jax.eval_shape(init_fn, init_rng)
    expected = schedule.expected_steps(total_steps)
    bound = [phase_lib.bind(p, i, params=abstract_params, model=model,
                            expected_steps=max(expected.get(p.name, 1), 1))
             for i, p in enumerate(phases)]
    bound = phase_lib.bind_groups(phases, bound, params=abstract_params, expected=expected)
    return bound, abstract_params


def run_rngs(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(init_rng, state_rng)`` of a run: both from ``PRNGKey(seed)``."""
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    return init_rng, state_rng




def make_streams(phases: Sequence[phase_lib.Phase], data: Mapping[str, Any], *, seed: int,
                 mesh: Any, data_dir: str | None) -> dict[str, Any]:
    """``{stream: Stream}`` of every stream a phase reads, seeded from the run seed.

    Raises:
      ValueError: a phase reads an undefined stream, or a batch size does not
        divide over the devices (checked before a dataset is prepared).
    """
    for p in phases:
        for s in p.streams:
            if s not in data:
                raise ValueError(f"phase {p.name!r} reads data stream {s!r}, which is not "
                                 f"defined; streams: {sorted(data)}.")
    pidx, pcount = jax.process_index(), jax.process_count()
    streams = {}
    for name in sorted({s for p in phases for s in p.streams}):
        spec = data[name]
        if isinstance(spec, data_lib.Stream):
            parallel.check_batch_size(spec.batch_size, mesh, f"data stream {name!r}")
            streams[name] = spec
            continue
        spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
        parallel.check_batch_size(int(spec.get("batch_size", 0)), mesh, f"data stream {name!r}")
        streams[name] = data_lib.make_stream(spec, seed=stream_seed(seed, name),
                                             data_dir=data_dir, process_index=pidx,
                                             process_count=pcount)
    return streams


@dataclasses.dataclass
class Run:
    """Everything the loop needs, built and checked (see :func:`build`)."""

    options: RunOptions
    names: list[str]
    schedule: Any  # the run's schedule (vectorized: the first replica's)
    streams: dict[str, Any]  # vectorized: the first replica's
    bound: list[phase_lib.BoundPhase]
    packed: dict[str, tuple[Callable, list[str]]]  # {phase: (packed step, metric names)}
    abstract_state: Any  # one replica's
    state_sharding: Any
    target: Any  # abstract state with shardings (checkpoint restores)
    make_state: Callable  # (init_rng, state_rng) -> TrainState
    from_params: Callable  # params -> TrainState (same rngs)
    rngs: tuple[Any, Any]  # (init_rng, state_rng); vectorized: stacked per replica
    eval_sets: list[evaluation.BoundEval]
    evaluators: list[Any]  # the loss evaluator first
    hooks: list[Any]
    untraced_hooks: set[str]
    ctx: hooks_lib.Context
    counter: parallel.TraceCounter
    mesh: Any
    policy: Policy
    stops: triggers.Stops
    phase_ends: triggers.PhaseEnds | None
    seeds: list[int] | None = None  # vectorized seeds
    schedules: list[Any] | None = None  # vectorized: one per replica
    stream_sets: list[dict[str, Any]] | None = None  # vectorized: one per replica
    lr_scales: dict[str, Any] | None = None  # vectorized: replica_lr's factors per opt key


def declared_extras(extras: Mapping[str, Any] | None, hooks: Sequence[Any]) -> dict[str, Any]:
    """The run's extras specs: ``config.extras`` plus those its hooks declare."""
    out = dict(extras or {})
    for h in hooks:
        for name, spec in (getattr(h, "extras", None) or {}).items():
            if name in out and out[name] != spec:
                raise ValueError(f"hook {h.name!r} declares extra {name!r}, which is already "
                                 f"declared differently ({out[name]!r}); rename one.")
            out[name] = spec
    return out


def build(*, phases: Sequence[phase_lib.Phase], schedule: Any, data: Mapping[str, Any],
          init: Any, model: Any, evals: Mapping[str, Any] | None, extras: Any,
          options: RunOptions, mesh: Any, workdir: str, say: Callable[[str], None],
          replicas: Any = None) -> Run:
    """Builds and checks a run (see the module docstring).

    ``replicas``: vectorized seeds, ``(seeds, schedules, stream_sets, lr scales)`` from
    :mod:`alternating.seeds`; None for one run.
    """
    o = options
    names = [p.name for p in phases]
    if replicas is None:
        from alternating.schedules import make_schedule  # pylint: disable=g-import-not-at-top
        schedule = make_schedule(schedule, names, seed=o.seed)
        streams = make_streams(phases, data, seed=o.seed, mesh=mesh, data_dir=o.data_dir)
        rngs = run_rngs(o.seed)
    else:
        seeds, schedules, stream_sets, _ = replicas
        schedule, streams = schedules[0], stream_sets[0]
        keys = jnp.stack([jax.random.split(jax.random.PRNGKey(s)) for s in seeds])
        rngs = (keys[:, 0], keys[:, 1])
    init_fn = resolve_init(init)
    first = (rngs[0] if replicas is None else rngs[0][0],
             rngs[1] if replicas is None else rngs[1][0])
    bound, _ = bind_phases(phases, schedule, init_fn, model=model, init_rng=first[0],
                           total_steps=o.total_steps)
    counter = parallel.TraceCounter()
    eval_sets = evaluation.build_evals(evals or {}, bound, model, mesh, o.data_dir, counter)
    context = {"phases": names, "total_steps": o.total_steps}
    hooks = [hooks_lib.resolve_hook(h, f"hooks[{i}]", **context) for i, h in enumerate(o.hooks)]
    evaluators = [evaluation.LossEvaluator(eval_sets, o.eval_every_steps)] + [
        evaluation.resolve_evaluator(e, f"evaluators[{i}]", **context)
        for i, e in enumerate(o.evaluators)]
    _check_names(hooks, evaluators)
    whens = {f"hook {h.name!r}": h.when for h in hooks}
    whens.update({f"evaluator {e.name!r}": e.when for e in evaluators})
    triggers.check_phase_ends(whens, schedule)
    specs = declared_extras(extras, hooks)

    scales = None if replicas is None else replicas[3]
    ones = {k: jnp.float32(1.0) for k in scales or {}}  # set per replica at the start

    def make_state(init_rng, state_rng):
        st = init_state(init_fn(init_rng), bound, state_rng, ema_decay=o.ema_decay,
                        extra_specs=specs)
        return st.replace(extras={**st.extras, phase_lib.LR_SCALE: ones}) if ones else st

    def from_params(params):
        fn = lambda p, r: init_state(p, bound, r, ema_decay=o.ema_decay, extra_specs=specs)
        return jax.jit(fn, out_shardings=state_sharding)(params, first[1])

    policy = Policy(o.nan_policy, names, o.max_consecutive_skips)
    packed = {b.name: pack_metrics(policy.wrap(phase_lib.make_step(
        b, ema_decay=o.ema_decay, grad_norm=o.grad_norm))) for b in bound}
    abstract_state = jax.eval_shape(make_state, *first)
    check_steps(bound, {n: fn for n, (fn, _) in packed.items()}, abstract_state, streams)
    # Metric names are known once traced: a schedule's feedback is checked here.
    check_feedback(schedule, {n: m for n, (_, m) in packed.items()}, [e.name for e in eval_sets])
    # Replicated on a data-only mesh; split over an fsdp axis where the mesh has one.
    state_sharding = parallel.state_shardings(abstract_state, mesh, o.sharding_rules)
    target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                          abstract_state, state_sharding)
    ctx = hooks_lib.Context(model=model, phases=bound, mesh=mesh, workdir=workdir,
                            total_steps=o.total_steps, data_dir=o.data_dir, counter=counter,
                            eval_sets=eval_sets, say=say)
    untraced = hooks_lib.check_hooks(hooks, abstract_state, ctx)
    all_whens = list(whens.values())
    phase_ends = (triggers.PhaseEnds(schedule, o.total_steps)
                  if any(w.needs_phase_ends for w in all_whens) else None)
    feedback = schedule.feedback_every or 0
    stops = triggers.Stops((o.log_every_steps, o.checkpoint_every_steps, feedback),
                           all_whens, phase_ends, o.chunk_steps, o.total_steps)
    run = Run(o, names, schedule, streams, bound, packed, abstract_state, state_sharding, target,
              make_state, from_params, rngs, eval_sets, evaluators, hooks, untraced, ctx,
              counter, mesh, policy, stops, phase_ends)
    if replicas is not None:
        run.seeds, run.schedules, run.stream_sets = list(seeds), schedules, stream_sets
        run.lr_scales = scales
    return run


def _check_names(hooks: Sequence[Any], evaluators: Sequence[Any]) -> None:
    for kind, items in (("hook", hooks), ("evaluator", evaluators)):
        seen = [x.name for x in items]
        dup = sorted({n for n in seen if seen.count(n) > 1})
        if dup:
            raise ValueError(f"{kind} names must be unique (they key results and checkpoints); "
                             f"repeated: {dup}. Give each a 'name'.")

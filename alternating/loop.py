"""The training loop: the only code with side effects.

Order of one iteration (host executor):

1. ``phase = schedule.next_phase(step)``
2. ``batch = next(streams[phase.stream])``, placed on the batch sharding
3. ``state, metrics = steps[phase](state, batch)``: jitted once per phase,
   the state's buffers donated
4. periodic actions, after the step: schedule feedback (every
   ``schedule.feedback_every`` steps), logging (one ``device_get`` for all the
   metrics since the last log, non-finite check), evaluation, checkpoint,
   progress bar.

Metrics stay on the device between logs, so ordinary steps never wait for the
device: Python dispatches step ``t+1`` while step ``t`` computes.

The fused executor (``executor='fused'``, :mod:`alternating.executor`) does
1-3 for a chunk of steps in one compiled program; chunks end where 4 has
something to do, so 4 is the same code for both.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import zlib
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from alternating import checkpoint as ckpt_lib
from alternating import data as data_lib
from alternating import executor as executor_lib
from alternating import losses, metrics as metrics_lib, parallel, partition, phase as phase_lib
from alternating import plots
from alternating import seeds as seeds_lib
from alternating.schedules import make_schedule
from alternating.state import TrainState, init_state, param_count, tree_bytes

class NonFiniteError(FloatingPointError):
    """A logged training metric became NaN or infinite."""


@dataclasses.dataclass
class EvalSet:
    """An evaluation set: a data spec plus the loss whose value and aux are reported.

    Attributes:
      data: a data spec (``dataset``, ``split``, ``transforms``); its
        ``batch_size`` is ignored in favour of ``batch_size`` here.
      phase: evaluate with this phase's loss (the usual case), or
      loss: a loss spec (callable, name or ``module:function``) with
        ``loss_kwargs``.
      batch_size: evaluation batch size (the last batch is padded and masked).

    The loss runs on each example as a batch of one (``vmap``) and values are
    averaged over real examples, so padding never biases the result; a loss
    whose value depends on the rest of its batch is evaluated per example.
    """

    data: Mapping[str, Any]
    phase: str | None = None
    loss: Any = None
    loss_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 256


def _stream_seed(seed: int, name: str) -> int:
    # Stable across processes and Python runs (unlike hash()).
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


class _Records:
    """Per-step metrics kept on the device until a log or the schedule needs them.

    Logging and schedule feedback read the same records at their own intervals,
    each through its own cursor; a record is dropped once both have read it.
    Each read costs one ``device_get`` for all records not fetched yet.
    """

    def __init__(self, feedback: bool, names: Mapping[str, Sequence[str]]):
        self.names = names  # {phase: metric names of its packed metrics vector}
        self.items: list[tuple[int, str, Any]] = []  # (step, phase, metrics)
        self.fetched = 0
        self.cursors = {"log": 0, "feedback": 0} if feedback else {"log": 0}

    def add(self, step: int, phase: str, metrics: Any, phase_step: int) -> None:
        self.items.append((step, phase, (metrics, phase_step)))

    def take(self, reader: str) -> list[tuple[int, str, dict[str, float]]]:
        """The records ``reader`` has not seen yet, as host floats."""
        todo = self.items[self.fetched:]
        if todo:
            host = jax.device_get([m for _, _, (m, _) in todo])
            for i, ((s, p, (_, ps)), m) in enumerate(zip(todo, host)):
                self.items[self.fetched + i] = (
                    s, p, {**dict(zip(self.names[p], m.tolist())), "phase_step": float(ps)})
            self.fetched = len(self.items)
        out = self.items[self.cursors[reader]:]
        self.cursors[reader] = len(self.items)
        done = min(self.cursors.values())
        if done:
            del self.items[:done]
            self.fetched -= done
            self.cursors = {k: v - done for k, v in self.cursors.items()}
        return out


def _pack_metrics(step: Callable) -> tuple[Callable, list[str]]:
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


def _check_steps(bound, fns, abstract_state, streams) -> None:
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


def _resolve_init(init: Any) -> Callable[[jax.Array], Any]:
    if hasattr(init, "init") and callable(init.init):
        return init.init
    if callable(init):
        return init
    return lambda rng: init


def train(*, phases: Sequence[phase_lib.Phase], schedule: Any, data: Mapping[str, Any],
          init: Any, workdir: str, total_steps: int, model: Any = None, seed: int = 0,
          evals: Mapping[str, EvalSet | Mapping[str, Any]] | None = None,
          log_every_steps: int = 100, eval_every_steps: int = 0,
          checkpoint_every_steps: int = 0, max_checkpoints_to_keep: int = 3,
          ema_decay: float = 0.0, data_dir: str | None = None, mesh: Any = None,
          config: Any = None, progress: bool = True, plot: bool = True,
          print_fn: Callable[[str], None] | None = print, executor: str = "host",
          chunk_steps: int = 100, num_seeds: int = 1,
          sharding_rules: Sequence[tuple[str, Any]] = ()) -> TrainState:
    """Trains a scheme and returns the final TrainState.

    Args:
      phases: the phases; their names must be unique.
      schedule: a :class:`~alternating.schedules.Schedule` or a spec
        ``{'name': ..., **kwargs}``.
      data: ``{stream name: data spec or Stream}``; each phase reads
        ``phase.data`` (default: its name).
      init: a config model (with ``.init``), ``init(rng) -> params``, or params.
        The init key is ``jax.random.split(jax.random.PRNGKey(seed))[0]``;
        params passed as is are copied, never donated.
      workdir: output directory (metrics, TensorBoard, checkpoints, results).
      total_steps: global steps to run (all phases together).
      model: the model given to named loss factories.
      seed: run seed (initialization, data order, random schedules).
      evals: ``{set name: EvalSet or dict}``, evaluated every
        ``eval_every_steps`` (0: only at the end) and at the end.
      log_every_steps: interval of metric logging and the non-finite check.
      checkpoint_every_steps: interval of checkpoints (0: only at the end).
      ema_decay: > 0 keeps an EMA of the params in ``extras['ema']``, also evaluated.
      data_dir: where embedded datasets are prepared (default ``TFDS_DATA_DIR``).
      mesh: a ``jax.sharding.Mesh`` with a ``data`` axis (default: all devices),
        and optionally an ``fsdp`` axis (``parallel.make_mesh(fsdp=k)``) over
        which parameters and optimizer states are sharded.
      sharding_rules: ``[(regex, PartitionSpec or None)]`` over state leaf
        paths, before the default rule (see ``parallel.state_shardings``).
      config: the config to save with checkpoints (any JSON-able dict).
      progress: show a progress bar.
      plot: write ``curves.png`` at the end.
      print_fn: where the start-up and final tables go (``None``: nowhere).
      executor: ``'host'`` (one jitted step per global step) or ``'fused'``
        (chunks of up to ``chunk_steps`` steps in one compiled program; see
        :mod:`alternating.executor`). Both give the same TrainState.
      chunk_steps: the fused executor's longest chunk.
      num_seeds: > 1 trains that many replicas (seeds ``seed .. seed +
        num_seeds - 1``) in one vectorized program and returns their stacked
        TrainState; see :mod:`alternating.seeds` (no checkpoints).

    Returns:
      The final TrainState (replicated over the mesh).

    Raises:
      ValueError: bad phases, streams, schedule, partitions or batch sizes, all
        before anything is compiled.
      NonFiniteError: a logged metric became NaN/inf (names step and phase).
    """
    t_start = time.time()
    say = print_fn or (lambda s: None)
    workdir = os.fspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}; it must be >= 1.")
    for field, value in (("log_every_steps", log_every_steps), ("eval_every_steps", eval_every_steps),
                         ("checkpoint_every_steps", checkpoint_every_steps)):
        if value < 0:
            raise ValueError(f"{field}={value}; it must be >= 0 (0 disables the periodic action).")
    executor_lib.check_executor(executor, chunk_steps)
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay={ema_decay}; it must be in [0, 1) (0 disables the EMA).")
    names = [p.name for p in phases]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"phase names must be unique and non-empty, got {names}.")
    mesh = mesh or parallel.make_mesh()
    pidx, pcount = jax.process_index(), jax.process_count()

    seeds_lib.check_seeds(num_seeds, schedule=schedule, data=data,
                          checkpoint_every_steps=checkpoint_every_steps)
    if num_seeds > 1:
        return seeds_lib.train_seeds(
            phases=phases, schedule=schedule, data=data, init=_resolve_init(init),
            workdir=workdir, total_steps=total_steps, model=model, seed=seed,
            num_seeds=num_seeds, evals=evals, log_every_steps=log_every_steps,
            eval_every_steps=eval_every_steps, ema_decay=ema_decay, data_dir=data_dir,
            mesh=mesh, chunk_steps=chunk_steps if executor == "fused" else 1,
            progress=progress, print_fn=print_fn, stream_seed=_stream_seed,
            build_evals=_build_evals, evaluate=_evaluate, pack=_pack_metrics,
            check_steps=_check_steps)

    # --- Everything that can be wrong with the input is checked before compiling.
    schedule = make_schedule(schedule, names, seed=seed)
    for p in phases:
        for s in p.streams:
            if s not in data:
                raise ValueError(f"phase {p.name!r} reads data stream {s!r}, which is not "
                                 f"defined; streams: {sorted(data)}.")
    streams = {}
    for name in sorted({s for p in phases for s in p.streams}):
        spec = data[name]
        if isinstance(spec, data_lib.Stream):
            parallel.check_batch_size(spec.batch_size, mesh, f"data stream {name!r}")
            streams[name] = spec
            continue
        spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
        # Checked before the stream is built: building may prepare a dataset.
        parallel.check_batch_size(int(spec.get("batch_size", 0)), mesh, f"data stream {name!r}")
        streams[name] = data_lib.make_stream(spec, seed=_stream_seed(seed, name),
                                             data_dir=data_dir, process_index=pidx,
                                             process_count=pcount)

    root = jax.random.PRNGKey(seed)
    init_rng, state_rng = jax.random.split(root)
    init_fn = _resolve_init(init)
    abstract_params = jax.eval_shape(init_fn, init_rng)
    expected = schedule.expected_steps(total_steps)
    bound = [phase_lib.bind(p, i, params=abstract_params, model=model,
                            expected_steps=max(expected.get(p.name, 1), 1))
             for i, p in enumerate(phases)]
    counter = parallel.TraceCounter()
    eval_sets = _build_evals(evals or {}, bound, model, mesh, data_dir, pidx, pcount, counter)

    say(f"alternating: {len(phases)} phases {names}, schedule {schedule.config()}, "
        f"{total_steps} steps, {mesh.shape[parallel.DATA]} device(s) x {pcount} process(es)")
    say(partition.table(abstract_params, {b.name: b.trainable for b in bound}))

    # --- State: built by a jitted init so that it is a global array (replicated,
    # or split over an fsdp axis) on every process (multi-host safe).
    def make_state(init_rng, state_rng):
        return init_state(init_fn(init_rng), bound, state_rng, ema_decay=ema_decay)

    packed = {b.name: _pack_metrics(phase_lib.make_step(b, ema_decay=ema_decay)) for b in bound}
    abstract_state = jax.eval_shape(make_state, init_rng, state_rng)
    _check_steps(bound, {n: fn for n, (fn, _) in packed.items()}, abstract_state, streams)
    # Replicated on a data-only mesh; split over an fsdp axis where the mesh has one.
    state_sh = parallel.state_shardings(abstract_state, mesh, sharding_rules)
    state = jax.jit(make_state, out_shardings=state_sh)(init_rng, state_rng)

    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=max_checkpoints_to_keep)
    start_step = 0
    latest = checkpointer.latest_step()
    if latest is not None:
        restored = checkpointer.restore(latest, ckpt_lib.abstract_like(state))
        state = restored["state"]
        schedule.load_state_dict(restored["schedule"])
        for name, st in restored["data"].items():
            if name in streams:
                streams[name].set_state(st)
        start_step = int(latest)
        say(f"resumed from {checkpointer.directory} at step {start_step}")

    steps = {name: parallel.jit_step(fn, mesh, counter=counter, name=name, state_sharding=state_sh)
             for name, (fn, _) in packed.items()}
    by_name = {b.name: b for b in bound}
    fused = None
    if executor == "fused":
        fused = executor_lib.Fused(
            steps={name: fn for name, (fn, _) in packed.items()},
            reads={b.name: b.streams for b in bound}, multi={b.name: b.multi_stream for b in bound},
            streams=streams, schedule=schedule, mesh=mesh, chunk_steps=chunk_steps,
            abstract_state=abstract_state, counter=counter, state_sharding=state_sh,
            stops=executor_lib.boundaries(log_every_steps, eval_every_steps,
                                          checkpoint_every_steps, schedule.feedback_every or 0),
            no_prefetch_after=executor_lib.boundaries(checkpoint_every_steps,
                                                      schedule.feedback_every or 0),
            total_steps=total_steps)

    writer = metrics_lib.MetricWriter(workdir, process_index=pidx)
    timeline = metrics_lib.TimelineRecorder()
    records = _Records(feedback=bool(schedule.feedback_every),
                       names={name: names for name, (_, names) in packed.items()})
    # Host copy of state.phase_steps (one transfer here, none per step).
    phase_counts = {k: int(v) for k, v in jax.device_get(state.phase_steps).items()}
    bar = metrics_lib.Progress(total_steps, initial_step=start_step,
                               disable=not progress or pidx != 0)
    meta = {"config": _jsonable_config(config), "version": _version()}
    final_eval: dict[str, dict[str, float]] = {}
    feedback_every = schedule.feedback_every or 0

    def checkpoint(step, force=False):
        checkpointer.save(step, state, schedule=schedule.state_dict(),
                          data={n: s.get_state() for n, s in streams.items()}, meta=meta,
                          force=force)

    try:
        step = start_step
        while step < total_steps:
            if fused is not None:
                # 1-3 for a chunk of steps ending before the next periodic action.
                state, plan, rows = fused.run_chunk(state, step)
                for name, m in zip(plan, rows):
                    phase_counts[name] += 1
                    records.add(step, name, m, phase_counts[name])
                    timeline.record(step, name)
                    step += 1
            else:
                # 1. which phase
                name = schedule.next_phase(step)
                b = by_name[name]
                # 2. its batch
                if b.multi_stream:
                    batch = {s: parallel.shard_batch(next(streams[s]), mesh) for s in b.streams}
                else:
                    batch = parallel.shard_batch(next(streams[b.streams[0]]), mesh)
                # 3. the step
                state, m = steps[name](state, batch)
                phase_counts[name] += 1
                records.add(step, name, m, phase_counts[name])
                timeline.record(step, name)
                step += 1
            # 4. periodic actions
            if feedback_every and step % feedback_every == 0:
                for s, p, hm in records.take("feedback"):
                    schedule.observe(s, p, hm)
            if (log_every_steps and step % log_every_steps == 0) or step == total_steps:
                _log(records.take("log"), step, writer, bar)
                timeline.flush(writer)
            if (eval_every_steps and step % eval_every_steps == 0) or step == total_steps:
                final_eval = _evaluate(eval_sets, state, step, writer)
            if (checkpoint_every_steps and step % checkpoint_every_steps == 0) or step == total_steps:
                checkpoint(step, force=step == total_steps)
            bar.update(step, name)
    finally:
        bar.close()
        checkpointer.close()
        timeline.close(writer)
        writer.close()

    if eval_sets and not final_eval:
        # Resumed at or past total_steps: nothing ran, but the results still
        # report the final evaluation rather than an empty one.
        final_eval = _evaluate(eval_sets, state, int(jax.device_get(state.step)), writer=None)
    wall = time.time() - t_start
    results = {
        "final_eval": final_eval,
        "steps": int(jax.device_get(state.step)),
        "steps_per_phase": {k: int(v) for k, v in jax.device_get(state.phase_steps).items()},
        "compiles": dict(counter.counts),
        "wall_time_s": round(wall, 3),
        "seed": seed,
        "total_steps": total_steps,
        "num_devices": int(mesh.size),
        "num_processes": pcount,
        "num_params": param_count(state.params),
        "trained_params_per_phase": {
            b.name: int(sum(np.prod(np.shape(v)) for p, v in
                            partition.flatten(state.params).items() if b.trainable[p]))
            for b in bound},
        "opt_state_bytes_per_phase": {k: tree_bytes(v) for k, v in state.opt_state.items()},
        "schedule": schedule.config(),
    }
    if pidx == 0:
        metrics_lib.write_results(os.path.join(workdir, "results.json"), results)
        if final_eval:
            say(metrics_lib.format_table(final_eval, title=f"final evaluation (step {step})"))
        if plot:
            path = plots.plot_run(workdir)
            say(f"wrote {path}")
        say(f"done in {wall:.1f}s; outputs in {workdir}")
    return state


def _log(items, step, writer, bar) -> None:
    if not items:
        return
    bad = metrics_lib.first_nonfinite(items)
    if bad is not None:
        s, p, metric = bad
        raise NonFiniteError(f"non-finite {metric} at step {s} in phase {p!r}; stopping. "
                             "Lower the learning rate or clip gradients (optimizer.grad_clip_norm).")
    for phase, scalars in metrics_lib.aggregate(items).items():
        writer.write_train(step, phase, scalars)
        if "loss" in scalars:
            bar.set_loss(phase, scalars["loss"])
    writer.flush()


@dataclasses.dataclass
class _BoundEval:
    name: str
    fn: Callable
    batches: list


def _build_evals(evals, bound, model, mesh, data_dir, pidx, pcount,
                 counter) -> list[_BoundEval]:
    out = []
    by_name = {b.name: b for b in bound}
    cache: dict[int, Callable] = {}
    for set_name in sorted(evals):
        spec = evals[set_name]
        if not isinstance(spec, EvalSet):
            spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec)
            valid = [f.name for f in dataclasses.fields(EvalSet)]
            unknown = sorted(set(spec) - set(valid))
            if unknown:
                raise ValueError(f"eval set {set_name!r}: unknown keys {unknown}; valid: {valid}.")
            spec = EvalSet(**spec)
        if spec.phase is not None:
            if spec.phase not in by_name:
                raise ValueError(f"eval set {set_name!r} names phase {spec.phase!r}; the phases "
                                 f"are {sorted(by_name)}.")
            loss_fn = by_name[spec.phase].loss_fn
        elif spec.loss is not None:
            loss_fn = losses.resolve_loss(spec.loss, model, spec.loss_kwargs,
                                          where=f"eval set {set_name!r} loss")
        else:
            raise ValueError(f"eval set {set_name!r}: give either phase=<phase name> or loss=...")
        parallel.check_batch_size(spec.batch_size, mesh, f"eval set {set_name!r}")
        data_spec = {k: v for k, v in dict(spec.data).items() if k != "batch_size"}
        # Placed on the devices once: the same batches are evaluated every time.
        batches = [parallel.shard_batch(b, mesh) for b in data_lib.eval_batches(
            data_spec, batch_size=spec.batch_size, data_dir=data_dir,
            process_index=pidx, process_count=pcount)]
        key = id(loss_fn)
        if key not in cache:
            # Sets sharing a loss share one jitted function ("eval:<first set>");
            # it compiles once per distinct batch shape.
            cache[key] = _make_eval_fn(loss_fn, mesh, counter, f"eval:{set_name}")
        out.append(_BoundEval(set_name, cache[key], batches))
    return out


def _make_eval_fn(loss_fn, mesh, counter, name):
    """Per-example evaluation, so padding is exact whatever the loss does with ``mask``.

    The loss runs on each example as a batch of one (``vmap``) and the results
    are averaged over real examples only. A loss that averages over its batch
    (the usual case) gives exactly the per-example values; relying on every
    user loss to honour a padding mask instead would silently bias the last
    batch.
    """
    rng = jax.random.PRNGKey(0)

    def fn(params, extras, batch):
        mask = batch["mask"]
        examples = {k: v for k, v in batch.items() if k != "mask"}

        def one(example):
            loss, aux = loss_fn(params, jax.tree.map(lambda x: x[None], example), rng, extras)
            return {"loss": loss, **aux}

        per = jax.vmap(one)(examples)
        sums = {k: (jnp.asarray(v, jnp.float32).reshape(mask.shape) * mask).sum()
                for k, v in per.items()}
        return sums, mask.sum()

    rep = parallel.replicated(mesh)
    # Params and extras keep the sharding they come with (replicated, or fsdp-split).
    return jax.jit(counter.wrap(name, fn), in_shardings=(None, None, parallel.batch_sharding(mesh)),
                   out_shardings=rep)


def _evaluate(eval_sets, state, step, writer) -> dict[str, dict[str, float]]:
    results = {}
    variants = [("", state.params)]
    if "ema" in state.extras:
        variants.append(("_ema", state.extras["ema"]))
    pending = []
    for ev in eval_sets:
        for suffix, params in variants:
            total, count = None, 0.0
            for batch in ev.batches:
                sums, n = ev.fn(params, state.extras, batch)
                total = sums if total is None else jax.tree.map(jnp.add, total, sums)
                count = count + n
            pending.append((ev.name + suffix, total, count))
    host = jax.device_get([(t, c) for _, t, c in pending])
    for (name, _, _), (total, count) in zip(pending, host):
        results[name] = {k: float(v) / max(float(count), 1.0) for k, v in total.items()}
        if writer is not None:
            writer.write_eval(step, name, results[name])
    if writer is not None:
        writer.flush()
    return results


def _jsonable_config(config: Any) -> Any:
    if config is None:
        return {}
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    try:
        return json.loads(json.dumps(config, default=str))
    except (TypeError, ValueError):
        return {"repr": repr(config)}


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("alternating")
    except Exception:  # not installed (running from a checkout)
        return "unknown"

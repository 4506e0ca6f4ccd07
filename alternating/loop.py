"""The training loop: the only code with side effects.

The order of one iteration (do not change it: the fused executor's chunk
ends, the checkpoint's coverage and exact resume depend on it):

1. ``executor.run(state, step)``: the host executor asks the schedule for
   the phase (``next_phase``), reads its batch and dispatches the jitted step;
   the fused executor plans a chunk that ends where 3 has something to do,
   reads its batches and dispatches one program (metrics stay on the device).
2. A log that was due earlier and deferred is written now, while the device
   computes (:mod:`alternating.metrics.log`); the step's records are noted.
3. After the step(s), where something is due, in this order:
   a. schedule feedback (every ``schedule.feedback_every`` steps);
   b. the log (every ``log_every_steps``, and at the end): one fetch of the
      records since the last log, the non-finite policy, the rows;
   c. hooks (:mod:`alternating.hooks`), in the order given; a returned state
      replaces the run's;
   d. evaluators (:mod:`alternating.evaluation`): the loss evaluator
      (``evals``), then the others;
   e. the checkpoint (every ``checkpoint_every_steps``, and at the end); it
      covers everything above;
   f. the progress bar, then the stop signal (save and raise ``Preempted``).

Hooks and evaluators with ``start=True`` run once before step 0 of a fresh
run. Everything is built and checked before this loop starts
(:mod:`alternating.build`); where a run starts is :mod:`alternating.resume`;
stop signals, non-finite handling and the log each have their own module.
"""

from __future__ import annotations

import os
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from alternating import best as best_lib
from alternating import build as build_lib
from alternating import checkpoint as ckpt_lib
from alternating import executor as executor_lib
from alternating import hooks as hooks_lib
from alternating import metrics as metrics_lib
from alternating import options as options_lib
from alternating import parallel, partition, plots, resume
from alternating import seeds as seeds_lib
from alternating import workdir as workdir_lib
from alternating.data import resident
from alternating.evaluation import EvalSet  # noqa: F401  (re-exported)
from alternating.metrics.log import TrainLog
from alternating.metrics.records import Records
from alternating.nonfinite import EXIT_NONFINITE, NonFiniteError  # noqa: F401  (re-exported)
from alternating.options import NAN_POLICIES, RESUME_SAFE_FIELDS  # noqa: F401  (re-exported)
from alternating.signals import EXIT_PREEMPTED, Preempted, StopSignals  # noqa: F401
from alternating.state import TrainState, size_report

bind_phases = build_lib.bind_phases  # re-exported
_RING_ROWS = 1024  # the host executor fetches its metrics at least this often


def train(*, phases: Sequence[Any], schedule: Any, data: Mapping[str, Any], init: Any,
          workdir: str, model: Any = None, evals: Mapping[str, Any] | None = None,
          extras: Mapping[str, Any] | None = None, mesh: Any = None, config: Any = None,
          handle_signals: bool = True, progress: bool = True, plot: bool = True,
          print_fn: Callable[[str], None] | None = print, **options: Any) -> TrainState:
    """Trains a scheme and returns the final TrainState.

    Re-running the same call with the same ``workdir`` resumes from the newest
    good checkpoint there (:mod:`alternating.resume`); a fresh start there
    moves an earlier run's logs to ``WORKDIR/previous/<time>/``. The run holds
    the workdir's lock (:class:`alternating.workdir.WorkdirLock`) until it
    returns or raises.

    Args:
      phases: the phases; their names must be unique.
      schedule: a :class:`~alternating.schedules.Schedule` or a spec
        ``{'name': ..., **kwargs}``.
      data: ``{stream name: data spec or Stream}``; each phase reads
        ``phase.data`` (default: its name).
      init: a config model (with ``.init``), ``init(rng) -> params`` (the key is
        ``split(PRNGKey(seed))[0]``), or params (copied, never donated).
      workdir: output directory (metrics, TensorBoard, checkpoints, results).
      model: the model given to named loss factories.
      evals: ``{set name: EvalSet or dict}``, evaluated every
        ``eval_every_steps`` (0: only at the end) and at the end.
      extras: declared extras ``{name: {'kind': ...}}`` (teachers, snapshot
        rings, duals), built into ``state.extras``; see :mod:`alternating.extras`.
      mesh: a ``jax.sharding.Mesh`` with a ``data`` axis (default: all
        devices, with an ``fsdp`` axis of size ``fsdp``).
      config: the config saved with checkpoints; a resume compares it.
      handle_signals: install SIGTERM/SIGINT handlers that save and stop.
      progress: show a progress bar.
      plot: write ``curves.png`` at the end.
      print_fn: where the start-up and final tables go (``None``: nowhere).
      **options: the run options, declared once in
        :class:`alternating.options.RunOptions` (``total_steps`` required);
        an unknown keyword is an error listing the valid ones.

    Returns:
      The final TrainState (``num_seeds > 1``: the replicas' stacked).

    Raises:
      ValueError: bad options, phases, streams, schedule, partitions, hooks,
        evaluators or batch sizes, all before anything is compiled.
      CheckpointError: the workdir's checkpoint does not fit this run (the
        differences are listed), or no checkpoint there restores.
      NonFiniteError: a metric became NaN/inf (names step, phase and metric).
      Preempted: a stop signal arrived; a checkpoint was saved.
      WorkdirError: ``workdir`` cannot hold a run, or another live run holds
        it (``WorkdirLockedError``); both before any work.
    """
    t_start = time.time()
    opts = options_lib.parse(options)
    say = print_fn or (lambda s: None)
    workdir = os.fspath(workdir)
    names = [p.name for p in phases]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"phase names must be unique and non-empty, got {names}.")
    init_from = resume.parse_init_from(opts.init_from)
    seeds_lib.check_seeds(opts, schedule=schedule, data=data)
    # Before any work: a workdir that cannot hold a run fails now, in one
    # line, and a second run on the same workdir is refused at once. The lock
    # is held until train returns or raises (Preempted included).
    workdir_lib.check_writable(workdir)
    with workdir_lib.WorkdirLock(workdir, process_index=jax.process_index()):
        if mesh is None:
            mesh = parallel.make_mesh(fsdp=opts.fsdp)
        replicas = (seeds_lib.replicas(phases, schedule, data, opts, mesh)
                    if opts.num_seeds > 1 else None)
        run = build_lib.build(phases=phases, schedule=schedule, data=data, init=init,
                              model=model, evals=evals, extras=extras, options=opts, mesh=mesh,
                              workdir=workdir, say=say, replicas=replicas)
        _say_start(run, names, say)
        _warn_idle_phases(run, opts.total_steps, say)
        loop = Loop(run, workdir=workdir, config=resume.jsonable_config(config),
                    init_from=init_from, progress=progress, handle_signals=handle_signals,
                    say=say)
        state = loop.run()
        loop.finish(state, wall=time.time() - t_start, plot=plot)
    return state


def _say_start(run: build_lib.Run, names: Sequence[str], say: Callable[[str], None]) -> None:
    """The start-up lines: what runs, and each phase's parameters."""
    o = run.options
    if run.seeds:
        say(f"alternating: {len(run.seeds)} seeds {run.seeds} vectorized, {len(names)} "
            f"phases {list(names)}, schedule {run.schedule.config()}, {o.total_steps} steps")
        return
    say(f"alternating: {len(names)} phases {list(names)}, schedule {run.schedule.config()}, "
        f"{o.total_steps} steps, {run.mesh.shape[parallel.DATA]} device(s) x "
        f"{jax.process_count()} process(es)")
    say(partition.table(run.abstract_state.params, {b.name: b.trainable for b in run.bound}))


def _warn_idle_phases(run: build_lib.Run, total_steps: int, say: Callable[[str], None]) -> None:
    """Warns about phases the schedule gives no step in ``total_steps`` steps."""
    expected = run.schedule.expected_steps(total_steps)
    idle = [n for n in run.names if expected.get(n, 1) == 0]
    for name in idle:
        msg = (f"phase {name!r} never runs under this schedule ({run.schedule.config()}) in "
               f"{total_steps} steps: its parameters are not trained by it and its "
               "optimizer state stays at its initial value.")
        warnings.warn(msg, stacklevel=3)
        say(f"warning: {msg}")


class Loop:
    """One run's loop (see the module docstring for its order)."""

    def __init__(self, run: build_lib.Run, *, workdir: str, config: Any, init_from: Any,
                 progress: bool, handle_signals: bool, say: Callable[[str], None]):
        self.run_, self.o, self.workdir, self.say = run, run.options, workdir, say
        self.pidx = jax.process_index()
        self.meta = {"config": config, "version": resume.version()}
        self.vectorized = bool(run.seeds)
        self.best = best_lib.keeper(self.o.keep_best, workdir, run)  # None unless asked
        self.checkpointer = (None if self.vectorized else
                             ckpt_lib.Checkpointer(workdir, max_to_keep=self.o.max_checkpoints_to_keep))
        self.start = self._start(init_from)
        self.handle_signals = handle_signals and not self.vectorized
        self.executor = self._executor()
        start_step = self.start.step if self.start.resumed else None
        self.writer = metrics_lib.MetricWriter(workdir, process_index=self.pidx,
                                               resume_step=start_step)
        run.ctx.writer = self.writer
        self.timeline = None
        if not self.vectorized:
            self.timeline = metrics_lib.TimelineRecorder()
            if self.start.resumed:
                self.timeline.resume(self.start.host.get("timeline"), self.start.step,
                                     workdir if self.pidx == 0 else None)
        # Host copy of the phase step counts (one transfer here, none per step).
        counts = {k: int(v) for k, v in parallel.get(
            seeds_lib.replica(self.start.state, 0).phase_steps if self.vectorized
            else self.start.state.phase_steps).items()}
        self.records = Records(feedback=bool(run.schedule.feedback_every),
                               names={n: m for n, (_, m) in run.packed.items()}, counts=counts,
                               timeline=self.timeline,
                               ring=getattr(self.executor, "ring", None),
                               replicas=len(run.seeds or [0]))
        self.records.load_state_dict(self.start.host.get("records"))
        run.policy.load_state_dict(self.start.host.get("skips"))
        self._load_components(self.start.host)
        if self.best:
            self.best.load_state_dict(self.start.host.get("best"))
        self.bar = metrics_lib.Progress(self.o.total_steps, initial_step=self.start.step,
                                        disable=not progress or self.pidx != 0)
        self.log = TrainLog(self.records, self.writer, self.bar, run.policy, self.timeline,
                            seeds=run.seeds)
        self.iterations = 0
        self.per_seed_eval: list = []

    # --- Set-up -----------------------------------------------------------------------

    def _start(self, init_from: Any) -> resume.Start:
        run = self.run_
        if self.vectorized:
            self._set_aside_logs("vectorized seeds write no checkpoints, so every run of them "
                                 "starts from scratch")
            return resume.Start(seeds_lib.init_state(run.make_state, run.rngs, run.mesh,
                                                     run.lr_scales))
        scratch = lambda: jax.jit(run.make_state, out_shardings=run.state_sharding)(*run.rngs)
        with parallel.fetching():  # the checkpoint's finite check reads the state
            st = resume.start(self.checkpointer, target=run.target, config=self.meta["config"],
                              init_from=init_from, scratch=scratch,
                              from_params=run.from_params, shardings=run.state_sharding,
                              replicated=parallel.replicated(run.mesh), say=self.say)
        if st.resumed:
            run.schedule.load_state_dict(st.schedule)
            for name, saved in st.data.items():
                if name in run.streams:
                    run.streams[name].set_state(saved)
        else:
            self._set_aside_logs(resume.fresh_start_reason(self.checkpointer, init_from))
        return st

    def _set_aside_logs(self, reason: str) -> None:
        """A fresh start: an earlier run's logs here are moved aside, not appended to."""
        if self.pidx != 0:
            return
        moved = workdir_lib.set_aside_logs(self.workdir, reason)
        if moved:
            self.say(f"a fresh start ({reason}): moved the logs of an earlier run in this "
                     f"workdir to {moved}")

    def _executor(self) -> Any:
        run, o = self.run_, self.o
        steps = {n: fn for n, (fn, _) in run.packed.items()}
        reads = {b.name: b.streams for b in run.bound}
        multi = {b.name: b.multi_stream for b in run.bound}
        placed = resident.place(run.stream_sets or [run.streams], run.mesh, o.device_data_mb,
                                self.say)
        kind, chunk, note, slow = executor_lib.choose(
            o.executor, o.chunk_steps, run.schedule, self.vectorized,
            lambda: executor_lib.loop_slow(steps, placed[0], reads, multi,
                                           run.abstract_state, run.mesh))
        if note and self.pidx == 0:
            self.say(note)
        if kind == "host" and not self.vectorized:
            width = max(len(m) for _, m in run.packed.values())
            return executor_lib.Host(steps=steps, reads=reads, multi=multi, streams=placed[0],
                                     schedule=run.schedule, mesh=run.mesh, counter=run.counter,
                                     state_sharding=run.state_sharding, width=width,
                                     ring_rows=_RING_ROWS)
        feedback = run.schedule.feedback_every or 0
        return executor_lib.Fused(
            steps=steps, reads=reads, multi=multi,
            streams=placed if self.vectorized else placed[0],
            schedule=run.schedules if self.vectorized else run.schedule, mesh=run.mesh,
            chunk_steps=chunk,
            abstract_state=run.abstract_state, counter=run.counter,
            state_sharding=None if self.vectorized else run.state_sharding, stops=run.stops,
            no_prefetch_after=executor_lib.boundaries(
                0 if self.vectorized else o.checkpoint_every_steps, feedback),
            total_steps=o.total_steps, vectorized=self.vectorized, loop_free=slow)

    def _components(self) -> list[Any]:
        return list(self.run_.hooks) + list(self.run_.evaluators)

    def _load_components(self, host: Mapping[str, Any]) -> None:
        saved = host.get("components") or {}
        for c in self._components():
            if hasattr(c, "load_state_dict") and c.name in saved:
                c.load_state_dict(saved[c.name])

    # --- The loop ---------------------------------------------------------------------

    def run(self) -> Any:
        """Runs from the start step to ``total_steps``; returns the final state."""
        state, step, total = self.start.state, self.start.step, self.o.total_steps
        stopped = None
        try:
            with StopSignals(self.handle_signals, jax.process_count() > 1) as stop:
                if not self.start.resumed:
                    state = self._act_at_start(state)
                next_stop = self._next_stop(step)
                while step < total:
                    self.iterations += 1
                    # 1-2. the step(s), then late logs while the device computes
                    state, ids, out = self.executor.run(state, step)
                    self.log.after_dispatch(step, self.executor.one_step)
                    self.executor.record(self.records, step, ids, out)
                    step += 1 if self.executor.one_step else ids.shape[-1]
                    phase = self._phase_name(ids)
                    # 3. what is due after them
                    if step >= next_stop:
                        state = self._act(state, step, phase)
                        next_stop = self._next_stop(step)
                    self.bar.update(step, phase)
                    # Asked once per iteration (a step, or a fused chunk), the same
                    # on every process: JAX's sync point needs consecutive ids.
                    if stop.should_stop(self.iterations):
                        self._checkpoint(state, step, force=True)
                        stopped = Preempted(step, stop.signum)
                        break
        finally:
            self._close(stopped)
        if stopped is not None:
            self.say(str(stopped))
            raise stopped
        return state

    def _phase_name(self, ids: Any) -> str:
        if self.executor.one_step:
            return self.executor.names[ids]
        return self.executor.names[ids[0, -1] if ids.ndim == 2 else ids[-1]]

    def _next_stop(self, step: int) -> int:
        """The next step count after which something may be due (a superset)."""
        run, total = self.run_, self.o.total_steps
        cands = [total, run.stops.next_after(step)]
        if run.phase_ends is not None:
            cands.append(step + max(self.o.chunk_steps, 1))
        return min(c for c in cands if c is not None)

    def _act(self, state: Any, step: int, phase: str) -> Any:
        """3a-e after ``step`` steps: feedback, log, hooks, evaluators, checkpoint."""
        o, run, total = self.o, self.run_, self.o.total_steps
        feedback_every = run.schedule.feedback_every or 0
        feedback = bool(feedback_every and step % feedback_every == 0)
        ended = run.phase_ends.ended(step) if run.phase_ends is not None else None
        hooks = [(h, why) for h in run.hooks if (why := h.when.due(step, total, ended))]
        evals = [(e, why) for e in run.evaluators if (why := e.when.due(step, total, ended))]
        save = bool(o.checkpoint_every_steps and step % o.checkpoint_every_steps == 0) or (
            step == total)
        if feedback:
            self._feed_schedule(state, step)
        if (o.log_every_steps and step % o.log_every_steps == 0) or step == total:
            quiet = not (evals or save or feedback or hooks)
            scalars = {} if self.vectorized else run.schedule.log_scalars(step)
            self.log.log(step, scalars, defer=quiet)
        if hooks or evals:
            self.log.catch_up()
            for h, why in hooks:
                state = self._run_hook(h, state, hooks_lib.Event(step, phase, ended, why))
            for e, why in evals:
                self._run_evaluator(e, state, hooks_lib.Event(step, phase, ended, why))
            last = run.evaluators[0].last  # the loss evaluator's, watched by keep_best
            if self.best and evals and evals[0][0] is run.evaluators[0] and self.best.improved(last):
                self.best.save(step, last, lambda ck: self._checkpoint(state, step, True, ck))
        if save:
            self._checkpoint(state, step, force=step == total)
        return state

    def _act_at_start(self, state: Any) -> Any:
        event = hooks_lib.Event(0, None, None, ("start",))
        for h in self.run_.hooks:
            if h.when.start:
                state = self._run_hook(h, state, event)
        for e in self.run_.evaluators:
            if e.when.start:
                self._run_evaluator(e, state, event)
        return state

    def _run_hook(self, hook: Any, state: Any, event: hooks_lib.Event) -> Any:
        run = self.run_
        if not self.vectorized:
            out = hook(state, event, run.ctx)
            return state if out is None else self._adopt(hook, state, out)
        outs = []
        for i in range(len(run.seeds)):
            run.ctx.replica = i
            one = seeds_lib.replica(state, i)
            out = hook(one, event, run.ctx)
            outs.append(one if out is None else self._adopt(hook, one, out))
        run.ctx.replica = None
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

    def _adopt(self, hook: Any, old: Any, new: Any) -> Any:
        """A hook's state, checked against the old one's structure and placed like it."""
        diff = hooks_lib.same_structure(old, new)
        if diff:
            raise hooks_lib.structure_error(hook.name, diff)
        new = hooks_lib.unalias(new)  # the next step donates every leaf once
        if self.vectorized:
            return new
        return jax.device_put(new, self.run_.state_sharding)

    def _run_evaluator(self, evaluator: Any, state: Any, event: hooks_lib.Event) -> None:
        if self.vectorized:
            rows, per = seeds_lib.evaluate(evaluator, state, event, self.run_.ctx,
                                           len(self.run_.seeds))
            if evaluator is self.run_.evaluators[0] and rows is not None:
                self.per_seed_eval = per
                evaluator.last = rows
        else:
            rows = evaluator(state, event, self.run_.ctx)
        for key, scalars in (rows or {}).items():
            self.writer.write_eval(event.step, key, scalars)
        if rows:
            self.writer.flush()

    def _feed_schedule(self, state: Any, step: int) -> None:
        """Feedback point: the step records since the last one, then (only for a
        schedule that asks, e.g. Aioli) its evaluation sets. The evaluation's
        ``device_get`` is the only sync it adds, and only at these points."""
        schedule = self.run_.schedule
        for s, p, m in self.records.take("feedback").rows():
            schedule.observe(s, p, m)
        if schedule.feedback_evals and schedule.needs_eval(step):
            schedule.observe_eval(step, self.run_.ctx.evaluate(state, schedule.feedback_evals))

    def _checkpoint(self, state: Any, step: int, force: bool = False,
                    checkpointer: Any = None) -> None:
        checkpointer = checkpointer or self.checkpointer
        if checkpointer is None:
            return
        self.log.catch_up()
        self.writer.flush(force=True)  # TensorBoard up to date with what the checkpoint covers
        self.records.sync()  # also completes the timeline that is saved below
        self.run_.policy.check_saveable(self.records.pending())
        self.timeline.flush(self.writer)
        host = {"records": self.records.state_dict(), "timeline": self.timeline.state_dict(),
                "skips": self.run_.policy.state_dict(),
                "components": {c.name: c.state_dict() for c in self._components()
                               if hasattr(c, "state_dict")},
                "best": self.best.state_dict() if self.best else None}
        data = {n: s.get_state() for n, s in self.run_.streams.items()}
        schedule = self.run_.schedule.state_dict()
        ahead = self.executor.states_for_checkpoint(step)
        if ahead is not None:  # the fused executor has read the next chunk already
            data, schedule = ahead
        with parallel.fetching():
            checkpointer.save(step, state, schedule=schedule, data=data,
                              meta={**self.meta, "step": step, "host": host}, force=force)

    def _close(self, stopped: Any) -> None:
        self.bar.close()
        if self.checkpointer is not None:
            self.checkpointer.close()
        if self.best:
            self.best.close()
        if stopped is None:
            try:  # the steps run since the last log, after an error too
                self.records.sync()
            except Exception:  # pylint: disable=broad-except
                pass
            if self.timeline is not None:
                self.timeline.close(self.writer)
        self.writer.close()

    # --- The end ----------------------------------------------------------------------

    def finish(self, state: Any, *, wall: float, plot: bool) -> None:
        """Writes ``results.json``, prints the final table and plots."""
        run, o = self.run_, self.o
        loss_eval = run.evaluators[0]
        if run.eval_sets and not loss_eval.last and not self.vectorized:
            # Resumed at or past total_steps: nothing ran, but the results still
            # report the final evaluation rather than an empty one.
            loss_eval(state, None, run.ctx)
        results = {"steps": o.total_steps if self.vectorized else int(parallel.get(state.step)),
                   "compiles": dict(run.counter.counts), "wall_time_s": round(wall, 3),
                   "seed": o.seed, "total_steps": o.total_steps,
                   "num_devices": int(run.mesh.size), "num_processes": jax.process_count(),
                   **size_report(run.abstract_state, run.bound),
                   "schedule": run.schedule.config()}
        for c in run.evaluators + ([self.best] if self.best else []):
            if hasattr(c, "summary"):
                results.update(c.summary())
        if self.vectorized:
            results.update(seeds_lib.results(state, run.seeds, self.per_seed_eval))
        else:
            results["steps_per_phase"] = {k: int(v) for k, v in
                                          parallel.get(state.phase_steps).items()}
            results["resumed_from_step"] = self.start.step if self.start.resumed else None
        if o.nan_policy == "skip":
            results["nonfinite_skips_per_phase"] = dict(run.policy.total)
        if self.pidx != 0:
            return
        metrics_lib.write_results(os.path.join(self.workdir, "results.json"), results)
        if loss_eval.last:
            self.say(metrics_lib.format_table(loss_eval.last,
                                              title=f"final evaluation (step {results['steps']})"))
        if plot and not self.vectorized:
            self.say(f"wrote {plots.plot_run(self.workdir)}")
        self.say(f"done in {wall:.1f}s; outputs in {self.workdir}")

"""The training loop: the only code with side effects.

Order of one iteration (host executor):

1. ``phase = schedule.next_phase(step)``
2. ``batch = next(streams[phase.stream])`` (numpy; the jitted step places it)
3. ``state, ring = steps[phase](state, batch, ring)``: jitted once per phase,
   the state's buffers donated; the step writes its metrics into a row of
   the device-side ``ring`` (:class:`_MetricRing`)
4. periodic actions, after the step: schedule feedback (every
   ``schedule.feedback_every`` steps), logging (one fetch for all the
   metrics since the last log, non-finite check), evaluation, checkpoint,
   progress bar.

Metrics stay on the device between logs, so ordinary steps never wait for the
device: Python dispatches step ``t+1`` while step ``t`` computes.

The fused executor (``executor='fused'``, :mod:`alternating.executor`) does
1-3 for a chunk of steps in one compiled program; chunks end where 4 has
something to do, so 4 is the same code for both.

Where a run starts (the resume order):

1. the newest checkpoint in ``WORKDIR/checkpoints`` that restores (damaged
   ones are set aside with a warning); the config may differ only in fields
   that cannot change the trajectory's structure (``RESUME_SAFE_FIELDS``);
2. else ``init_from``: another run's checkpoint, params only or full state;
3. else from scratch.

So re-running the same command after a crash, a kill or a preemption resumes
it, and on CPU the final state is bit-identical to an uninterrupted run.
A SIGTERM or SIGINT finishes the current step, saves, and exits with
``EXIT_PREEMPTED``; a second SIGINT interrupts at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
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
from alternating.schedules import check_feedback, make_schedule
from alternating.state import TrainState, init_state, size_report

log = logging.getLogger("alternating")

EXIT_NONFINITE = 3
# Several CPU devices in one process (``--xla_force_host_platform_device_count``):
# XLA's in-process all-reduce can deadlock when many host steps are queued
# ahead (some device threads wait for one that never joins, and XLA aborts
# after 40 s: "Termination timeout for all reduce"). The host executor then
# waits for its step every ``_DRAIN_EVERY`` steps, which bounds the queue
# (README example, 4 CPU devices on 2 cores: 5 aborts in 24 runs without,
# none in 24 with). Other platforms and one device never wait.
_DRAIN_EVERY = 32
_LOG_LAG = 32  # host steps a quiet log waits before it is fetched and written,
_LOG_LAG_S = 0.05  # or seconds, whichever comes first (slow steps: rows stay prompt)
_RING_ROWS = 1024  # the host executor fetches its metrics at least this often
EXIT_PREEMPTED = 75  # sysexits.h EX_TEMPFAIL: "temporary failure, retry": rerun to resume.
NAN_POLICIES = ("raise", "skip")
# Config fields a resumed run may change: none of them alters what the
# checkpoint holds or how the saved schedule and data continue.
RESUME_SAFE_FIELDS = ("total_steps", "log_every_steps", "eval_every_steps",
                      "checkpoint_every_steps", "max_checkpoints_to_keep", "data_dir", "eval",
                      "init_from", "nan_policy", "max_consecutive_skips",
                      # Execution and layout only: fused equals host bit for bit,
                      # and restores reshard to the current mesh.
                      "executor", "chunk_steps", "fsdp", "sharding_rules")


class NonFiniteError(FloatingPointError):
    """A training loss, gradient norm or metric became NaN or infinite."""


class Preempted(SystemExit):
    """A stop signal arrived; the run saved a checkpoint and stops.

    A ``SystemExit`` with code ``EXIT_PREEMPTED`` (75), so a script that does
    not catch it exits with that code, which a job scheduler can treat as
    "requeue me". Rerunning the same command resumes from the saved step.
    """

    def __init__(self, step: int, signum: int | None):
        super().__init__(EXIT_PREEMPTED)
        self.step = step
        self.signum = signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name if self.signum else "a preemption notice"
        return (f"stopped by {name} after step {self.step}; checkpoint saved. Run the same "
                f"command again to resume (exit code {EXIT_PREEMPTED}).")


class _StopSignals:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step.

    Single process: Python handlers set the flag (a second SIGINT raises
    KeyboardInterrupt at once). Several processes: a signal reaches one host,
    but all must save at the same step, so the loop asks JAX's preemption sync
    point (``multihost_utils.reached_preemption_sync_point``), which the
    coordination service turns into one agreed step; JAX's own SIGTERM
    notifier feeds it, so no Python SIGTERM handler is installed there.
    """

    def __init__(self, enabled: bool, multiprocess: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.multiprocess = multiprocess
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._sync_point = multiprocess

    def _handler(self, signum, frame):  # pylint: disable=unused-argument
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: finishing the current step, then saving and stopping "
                    "(SIGINT again to stop at once).", signal.Signals(signum).name)

    def __enter__(self):
        if self.enabled:
            sigs = [signal.SIGINT] if self.multiprocess else [signal.SIGTERM, signal.SIGINT]
            for sig in sigs:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous = {}

    def should_stop(self, step: int) -> bool:
        if self._sync_point:
            from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    self.signum = self.signum or signal.SIGTERM
                    return True
            except RuntimeError:  # preemption service disabled
                self._sync_point = False
            return False
        return self.signum is not None


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


class _MetricRing:
    """The host executor's per-step metrics, written on the device into rows of a ring.

    Each host step is jitted as ``step(state, batch, ring) -> (state, ring)``
    (:meth:`wrap`): it writes its packed metrics into row ``count % capacity``
    of ``ring = (rows f32[capacity, width], count)``, which is donated, so a
    log interval of steps costs one transfer to fetch instead of one array
    per step (about 1-10 us each on a CPU, more on an accelerator) and no
    per-step output array. The host reads the last ``k`` rows (``read``) at
    least every ``capacity`` steps.
    """

    def __init__(self, capacity: int, width: int, mesh: Any):
        self.capacity, self.width = int(capacity), max(int(width), 1)
        cap, w = self.capacity, self.width
        self.buf = jax.jit(lambda: (jnp.zeros((cap, w), jnp.float32), jnp.zeros((), jnp.int32)),
                           out_shardings=parallel.replicated(mesh))()
        self.pos = 0  # the first row not read yet

    def wrap(self, step: Callable) -> Callable:
        cap = self.capacity

        def ringed(state, batch, ring):
            rows, count = ring
            state, m = step(state, batch)
            m = jnp.pad(m, (0, rows.shape[1] - m.shape[0]))[None].astype(rows.dtype)
            rows = jax.lax.dynamic_update_slice(rows, m, (count, jnp.zeros_like(count)))
            return state, (rows, (count + 1) % cap)

        ringed.__name__ = getattr(step, "__name__", "step")
        return ringed

    def read(self, k: int) -> np.ndarray:
        """The rows of the last ``k`` steps (``k <= capacity``), oldest first."""
        rows = np.asarray(self.buf[0].addressable_data(0))
        out = rows[(self.pos + np.arange(k)) % self.capacity]  # a copy
        self.pos = (self.pos + k) % self.capacity
        return out


class _Records:
    """Per-step metrics kept on the device until a log or the schedule needs them.

    Logging and schedule feedback read the same records at their own intervals,
    each through its own cursor; a record is dropped once both have read it.
    Each read fetches everything not fetched yet in one go (the host
    executor's rows from its :class:`_MetricRing`, the fused executor's chunk
    arrays), and the fetched records are kept as one
    :class:`~alternating.metrics.StepTable` (arrays, not a dict per step),
    which the log reduces with numpy. Fetching also feeds the phase timeline,
    so the loop does no per-step bookkeeping beyond a list append.
    """

    def __init__(self, feedback: bool, names: Mapping[str, Sequence[str]],
                 counts: Mapping[str, int], timeline: metrics_lib.TimelineRecorder,
                 ring: _MetricRing | None = None):
        self.names = names  # {phase: metric names of its packed metrics vector}
        self.phases = list(names)
        self.width = max([len(n) for n in names.values()] + [0])
        self.counts = dict(counts)  # {phase: its steps so far}, advanced as rows are fetched
        self.timeline, self.ring = timeline, ring
        self._start, self._ids = 0, []  # host steps whose metrics are in the ring
        self._chunks: list[tuple[int, np.ndarray, Any]] = []  # fused chunks not fetched
        self.table = metrics_lib.StepTable.empty(self.phases, names)
        self.cursors = {"log": 0, "feedback": 0} if feedback else {"log": 0}

    def add(self, step: int, index: int) -> None:
        """Host step ``step`` ran phase ``phases[index]``; its metrics are in the ring."""
        if not self._ids:
            self._start = step
        self._ids.append(index)
        if len(self._ids) == self.ring.capacity:
            self.sync()

    def add_chunk(self, step: int, ids: np.ndarray, metrics: Any) -> None:
        """A fused chunk: ``ids[t]`` ran step ``step + t``; ``metrics`` is ``[n, W]``."""
        self._chunks.append((step, ids, metrics))

    def _part(self, step: int, ids: np.ndarray, rows: np.ndarray) -> metrics_lib.StepTable:
        n = len(ids)
        values = np.zeros((n, self.width))
        values[:, :rows.shape[-1]] = rows[:, :self.width]
        self.timeline.record_ids(step, ids, self.phases)
        return metrics_lib.StepTable(step + np.arange(n), ids, values,
                                     _count_phase_steps(ids, self.counts, self.phases),
                                     self.phases, self.names)

    def sync(self) -> None:
        """Fetches every step run so far into the table (and the timeline)."""
        parts = []
        if self._chunks:
            host = parallel.fetch([m for _, _, m in self._chunks])
            parts += [self._part(step, ids, m) for (step, ids, _), m in zip(self._chunks, host)]
            self._chunks = []
        if self._ids:
            ids = np.asarray(self._ids, np.int32)
            parts.append(self._part(self._start, ids, self.ring.read(len(ids))))
            self._ids = []
        if parts:
            self.table = metrics_lib.StepTable.concat([self.table] + parts)

    def pending(self, reader: str = "log") -> metrics_lib.StepTable:
        """What ``reader`` has not seen yet, without consuming it."""
        self.sync()
        return self.table[self.cursors[reader]:]

    def state_dict(self) -> dict[str, Any]:
        """Every unconsumed record as host floats, for a checkpoint."""
        self.sync()
        return {"items": [[s, p, m] for s, p, m in self.table.rows()],
                "cursors": dict(self.cursors)}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        self.table = metrics_lib.StepTable.from_rows(
            [(int(s), str(p), dict(m)) for s, p, m in state["items"]], self.phases, self.names)
        n = len(self.table)
        self.cursors = {k: int(state["cursors"].get(k, n)) for k in self.cursors}

    def take(self, reader: str, upto: int | None = None) -> metrics_lib.StepTable:
        """The records ``reader`` has not seen yet (of steps before ``upto``)."""
        self.sync()
        end = len(self.table)
        if upto is not None:  # rows are in step order
            end = int(np.searchsorted(self.table.steps, upto))
        out = self.table[self.cursors[reader]:end]
        self.cursors[reader] = end
        done = min(self.cursors.values())
        if done:
            self.table = self.table[done:]
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


def bind_phases(phases, schedule, init_fn, *, model, seed, total_steps):
    """Binds every phase to the model's abstract params: ``(bound, abstract params, rngs)``.

    ``rngs`` is ``(init_rng, state_rng)``, both from ``PRNGKey(seed)``.
    """
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    abstract_params = jax.eval_shape(init_fn, init_rng)
    expected = schedule.expected_steps(total_steps)
    bound = [phase_lib.bind(p, i, params=abstract_params, model=model,
                            expected_steps=max(expected.get(p.name, 1), 1))
             for i, p in enumerate(phases)]
    return bound, abstract_params, (init_rng, state_rng)


def train(*, phases: Sequence[phase_lib.Phase], schedule: Any, data: Mapping[str, Any],
          init: Any, workdir: str, total_steps: int, model: Any = None, seed: int = 0,
          evals: Mapping[str, EvalSet | Mapping[str, Any]] | None = None,
          log_every_steps: int = 100, eval_every_steps: int = 0,
          checkpoint_every_steps: int = 0, max_checkpoints_to_keep: int = 3,
          ema_decay: float = 0.0, extras: Mapping[str, Any] | None = None,
          data_dir: str | None = None, mesh: Any = None,
          nan_policy: str = "raise", max_consecutive_skips: int = 10,
          init_from: Any = None, handle_signals: bool = True,
          config: Any = None, progress: bool = True, plot: bool = True,
          print_fn: Callable[[str], None] | None = print, executor: str = "host",
          chunk_steps: int = 100, num_seeds: int = 1,
          sharding_rules: Sequence[tuple[str, Any]] = ()) -> TrainState:
    """Trains a scheme and returns the final TrainState.

    Re-running the same call with the same ``workdir`` resumes from the newest
    good checkpoint there (see the module docstring for the resume order).

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
      checkpoint_every_steps: interval of checkpoints (0: only at the end and
        on a stop signal).
      max_checkpoints_to_keep: newest checkpoints kept.
      ema_decay: > 0 keeps an EMA of the params in ``extras['ema']``, also evaluated.
      extras: declared extras ``{name: {'kind': ...}}`` (teachers, snapshot
        rings, dual variables), built into ``state.extras``; see
        :mod:`alternating.extras`.
      data_dir: where embedded datasets are prepared (default ``TFDS_DATA_DIR``).
      mesh: a ``jax.sharding.Mesh`` with a ``data`` axis (default: all devices),
        and optionally an ``fsdp`` axis (``parallel.make_mesh(fsdp=k)``) over
        which parameters and optimizer states are sharded.
      nan_policy: ``'raise'``: a non-finite metric stops the run with
        :class:`NonFiniteError` naming the step, phase and metric, and no
        checkpoint is written after it; ``'skip'``: a step whose loss or
        gradient norm is non-finite leaves the state unchanged (the step
        counter still advances), skips are counted per phase in the metrics
        (``skipped``), and ``max_consecutive_skips`` in a row in one phase stop
        the run.
      max_consecutive_skips: see ``nan_policy``.
      init_from: start a new run from another run's checkpoint when this
        workdir has none: ``{'workdir': ..., 'step': None (latest), 'mode':
        'params' | 'state'}`` or just the workdir (params). ``'state'`` takes
        the whole TrainState (optimizer states, counters, rng, extras) with
        the global step reset to 0; the schedule and data start afresh.
      handle_signals: install SIGTERM/SIGINT handlers that save and stop.
      config: the config to save with checkpoints (any JSON-able dict); a
        resume compares it with the saved one.
      sharding_rules: ``[(regex, PartitionSpec or None)]`` over state leaf
        paths, before the default rule (see ``parallel.state_shardings``).
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
      CheckpointError: the workdir's checkpoint does not fit this run (the
        differences are listed), or no checkpoint there restores.
      NonFiniteError: a metric became NaN/inf (names step, phase and metric).
      Preempted: a stop signal arrived; a checkpoint was saved.
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
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy={nan_policy!r}; valid: {list(NAN_POLICIES)}.")
    if max_consecutive_skips < 1:
        raise ValueError(f"max_consecutive_skips={max_consecutive_skips}; it must be >= 1.")
    init_from = _parse_init_from(init_from)
    names = [p.name for p in phases]
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"phase names must be unique and non-empty, got {names}.")
    mesh = mesh or parallel.make_mesh()
    pidx, pcount = jax.process_index(), jax.process_count()

    seeds_lib.check_seeds(num_seeds, schedule=schedule, data=data,
                          checkpoint_every_steps=checkpoint_every_steps, nan_policy=nan_policy,
                          init_from=init_from, sharding_rules=sharding_rules)
    if num_seeds > 1:
        return seeds_lib.train_seeds(
            phases=phases, schedule=schedule, data=data, init=_resolve_init(init),
            workdir=workdir, total_steps=total_steps, model=model, seed=seed,
            num_seeds=num_seeds, evals=evals, log_every_steps=log_every_steps,
            eval_every_steps=eval_every_steps, ema_decay=ema_decay, extras=extras,
            data_dir=data_dir,
            mesh=mesh, chunk_steps=chunk_steps if executor == "fused" else 1,
            progress=progress, print_fn=print_fn, stream_seed=_stream_seed,
            build_evals=_build_evals, evaluate=_evaluate, pack=_pack_metrics,
            check_steps=_check_steps, count_phase_steps=_count_phase_steps)

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

    init_fn = _resolve_init(init)
    bound, abstract_params, (init_rng, state_rng) = bind_phases(
        phases, schedule, init_fn, model=model, seed=seed, total_steps=total_steps)
    counter = parallel.TraceCounter()
    eval_sets = _build_evals(evals or {}, bound, model, mesh, data_dir, pidx, pcount, counter)

    say(f"alternating: {len(phases)} phases {names}, schedule {schedule.config()}, "
        f"{total_steps} steps, {mesh.shape[parallel.DATA]} device(s) x {pcount} process(es)")
    say(partition.table(abstract_params, {b.name: b.trainable for b in bound}))

    # --- State: built by a jitted init so that it is a global array (replicated,
    # or split over an fsdp axis) on every process (multi-host safe).
    def make_state(init_rng, state_rng):
        return init_state(init_fn(init_rng), bound, state_rng, ema_decay=ema_decay,
                          extra_specs=extras)

    def wrap(step_fn):
        return _skip_nonfinite(step_fn) if nan_policy == "skip" else step_fn

    packed = {b.name: _pack_metrics(wrap(phase_lib.make_step(b, ema_decay=ema_decay)))
              for b in bound}
    abstract_state = jax.eval_shape(make_state, init_rng, state_rng)
    _check_steps(bound, {n: fn for n, (fn, _) in packed.items()}, abstract_state, streams)
    # Metric names are known once traced: a schedule's feedback is checked here.
    check_feedback(schedule, {n: names for n, (_, names) in packed.items()},
                   [e.name for e in eval_sets])
    # Replicated on a data-only mesh; split over an fsdp axis where the mesh has one.
    state_sh = parallel.state_shardings(abstract_state, mesh, sharding_rules)
    target = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                          abstract_state, state_sh)

    # --- Where the run starts. The order: (1) the newest checkpoint in this
    # workdir that restores, (2) init_from, (3) scratch. See the module docstring.
    checkpointer = ckpt_lib.Checkpointer(workdir, max_to_keep=max_checkpoints_to_keep)
    meta = {"config": _jsonable_config(config), "version": _version()}
    changed: list[tuple[str, Any, Any]] = []

    def fits(step):
        changed[:] = _check_resumable(checkpointer, step, target, meta["config"])

    resumed = checkpointer.restore_latest_good(target, check=fits)
    start_step, host = 0, {}
    if resumed is not None:
        start_step, restored = resumed
        state = restored["state"]
        schedule.load_state_dict(restored["schedule"])
        for name, st in restored["data"].items():
            if name in streams:
                streams[name].set_state(st)
        host = dict(restored["meta"].get("host") or {})
        say(f"resumed from {checkpointer.directory} at step {start_step}")
        for path, old, new in changed:
            say(f"  config.{path} changed on resume: {old!r} -> {new!r}")
        if init_from:
            say("  (init_from ignored: this workdir has its own checkpoint)")
    elif init_from:
        state = _load_init_from(
            init_from, target, state_sh, parallel.replicated(mesh), say,
            lambda p, r: init_state(p, bound, r, ema_decay=ema_decay, extra_specs=extras),
            state_rng)
    else:
        state = jax.jit(make_state, out_shardings=state_sh)(init_rng, state_rng)

    by_name = {b.name: b for b in bound}
    fused = ring = None
    if executor == "host":
        ring = _MetricRing(_RING_ROWS, max(len(n) for _, n in packed.values()), mesh)
        steps = {name: parallel.jit_step(ring.wrap(fn), mesh, counter=counter, name=name,
                                         state_sharding=state_sh, carry=True)
                 for name, (fn, _) in packed.items()}
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

    writer = metrics_lib.MetricWriter(workdir, process_index=pidx,
                                      resume_step=start_step if resumed is not None else None)
    timeline = metrics_lib.TimelineRecorder()
    if resumed is not None:
        timeline.resume(host.get("timeline"), start_step, workdir if pidx == 0 else None)
    # Host copy of state.phase_steps (one transfer here, none per step).
    phase_counts = {k: int(v) for k, v in jax.device_get(state.phase_steps).items()}
    records = _Records(feedback=bool(schedule.feedback_every),
                       names={name: names for name, (_, names) in packed.items()},
                       counts=phase_counts, timeline=timeline, ring=ring)
    records.load_state_dict(host.get("records"))
    skips = {"streak": {n: 0 for n in names}, "total": {n: 0 for n in names}}
    for k in skips:
        skips[k].update({p: int(v) for p, v in (host.get("skips") or {}).get(k, {}).items()})
    bar = metrics_lib.Progress(total_steps, initial_step=start_step,
                               disable=not progress or pidx != 0)
    final_eval: dict[str, dict[str, float]] = {}
    feedback_every = schedule.feedback_every or 0

    # A log at a step where nothing else happens (no evaluation, checkpoint,
    # feedback, end) is written a little later (``catch_up``): after the next
    # fused chunk is dispatched, or ``_LOG_LAG`` host steps or ``_LOG_LAG_S``
    # seconds later, whichever comes first. Fetching the
    # records waits for the device to reach the log step; written at once, the
    # device would then sit idle while the host reduces and writes them, and
    # later it has queued work. The rows are the same; a non-finite metric is
    # reported that much later (never after a checkpoint: saving catches up).
    deferred: list[tuple[int, Any, float]] = []  # (step, the schedule's scalars, when)

    def write_log(at, scalars, when=None):  # pylint: disable=unused-argument
        _log(records.take("log", upto=at), at, writer, bar, nan_policy, skips,
             max_consecutive_skips)
        writer.write_schedule(at, scalars)
        timeline.flush(writer)  # the timeline is complete to ``at``: take() fetched it

    def catch_up():
        while deferred:
            write_log(*deferred.pop(0))

    def checkpoint(step, force=False):
        catch_up()
        writer.flush(force=True)  # TensorBoard up to date with what the checkpoint covers
        records.sync()  # also completes the timeline that is saved below
        if nan_policy == "raise":
            # Never save a state that followed a non-finite step.
            _raise_if_nonfinite(records.pending())
        timeline.flush(writer)
        host_state = {"records": records.state_dict(), "timeline": timeline.state_dict(),
                      "skips": skips}
        data_state = {n: s.get_state() for n, s in streams.items()}
        schedule_state = schedule.state_dict()
        ahead = fused.states_for_checkpoint(step) if fused is not None else None
        if ahead is not None:  # the fused executor has read the next chunk already
            data_state, schedule_state = ahead
        checkpointer.save(step, state, schedule=schedule_state, data=data_state,
                          meta={**meta, "step": step, "host": host_state}, force=force)

    stopped = None
    drain_every = _DRAIN_EVERY if (mesh.size > 1 and mesh.devices.flat[0].platform == "cpu") else 0
    try:
        with _StopSignals(handle_signals, pcount > 1) as stop:
            step, iteration = start_step, 0
            while step < total_steps:
                iteration += 1
                if fused is not None:
                    # 1-3 for a chunk of steps ending before the next periodic action.
                    state, ids, chunk_metrics = fused.run_chunk(state, step)
                    catch_up()  # the previous boundary's log, while this chunk computes
                    records.add_chunk(step, ids, chunk_metrics)
                    step += len(ids)
                    name = fused.names[ids[-1]]
                else:
                    # 1. which phase
                    name = schedule.next_phase(step)
                    b = by_name[name]
                    # 2. its batch
                    if b.multi_stream:
                        batch = {s: parallel.step_batch(next(streams[s]), mesh) for s in b.streams}
                    else:
                        batch = parallel.step_batch(next(streams[b.streams[0]]), mesh)
                    # 3. the step
                    state, ring.buf = steps[name](state, batch, ring.buf)
                    if drain_every and step % drain_every == 0:
                        jax.block_until_ready(ring.buf)
                    if deferred and (step - deferred[0][0] >= _LOG_LAG
                                     or time.monotonic() - deferred[0][2] >= _LOG_LAG_S):
                        catch_up()
                    records.add(step, b.index)
                    step += 1
                # 4. periodic actions
                if feedback_every and step % feedback_every == 0:
                    _feed_schedule(schedule, records, eval_sets, state, step)
                evaluate_now = ((eval_every_steps and step % eval_every_steps == 0)
                                or step == total_steps)
                save_now = ((checkpoint_every_steps and step % checkpoint_every_steps == 0)
                            or step == total_steps)
                if (log_every_steps and step % log_every_steps == 0) or step == total_steps:
                    scalars = schedule.log_scalars(step)
                    if (not evaluate_now and not save_now
                            and not (feedback_every and step % feedback_every == 0)):
                        deferred.append((step, scalars, time.monotonic()))
                    else:
                        catch_up()
                        write_log(step, scalars)
                if evaluate_now:
                    final_eval = _evaluate(eval_sets, state, step, writer)
                if save_now:
                    checkpoint(step, force=step == total_steps)
                bar.update(step, name)
                # Asked once per iteration (a step, or a fused chunk), the same
                # on every process: JAX's sync point needs consecutive ids.
                if stop.should_stop(iteration):
                    checkpoint(step, force=True)
                    stopped = Preempted(step, stop.signum)
                    break
    finally:
        bar.close()
        checkpointer.close()
        if stopped is None:
            try:  # the steps run since the last log, after an error too
                records.sync()
            except Exception:  # pylint: disable=broad-except
                pass
            timeline.close(writer)
        writer.close()
    if stopped is not None:
        say(str(stopped))
        raise stopped

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
        "resumed_from_step": start_step if resumed is not None else None,
        "num_devices": int(mesh.size),
        "num_processes": pcount,
        **size_report(state, bound),
        "schedule": schedule.config(),
    }
    if nan_policy == "skip":
        results["nonfinite_skips_per_phase"] = dict(skips["total"])
    if pidx == 0:
        metrics_lib.write_results(os.path.join(workdir, "results.json"), results)
        if final_eval:
            say(metrics_lib.format_table(final_eval, title=f"final evaluation (step {step})"))
        if plot:
            path = plots.plot_run(workdir)
            say(f"wrote {path}")
        say(f"done in {wall:.1f}s; outputs in {workdir}")
    return state


def _count_phase_steps(ids: np.ndarray, counts: dict[str, int],
                       names: Sequence[str]) -> np.ndarray:
    """Each row's phase step count (``counts`` advanced past the chunk)."""
    out = np.empty(len(ids), np.int64)
    for i, name in enumerate(names):
        mask = ids == i
        k = int(np.count_nonzero(mask))
        if k:
            out[mask] = counts[name] + np.arange(1, k + 1)
            counts[name] += k
    return out


def _feed_schedule(schedule, records, eval_sets, state, step) -> None:
    """Feedback point: the step records since the last one, then (only for a
    schedule that asks, e.g. Aioli) its evaluation sets. The evaluation's
    ``device_get`` is the only sync it adds, and only at these points."""
    for s, p, hm in records.take("feedback").rows():
        schedule.observe(s, p, hm)
    if schedule.feedback_evals and schedule.needs_eval(step):
        wanted = [e for e in eval_sets if e.name in schedule.feedback_evals]
        schedule.observe_eval(step, _evaluate(wanted, state, step, writer=None))


def _skip_nonfinite(step: Callable) -> Callable:
    """``nan_policy='skip'``: a step with a non-finite loss or gradient norm changes nothing.

    The whole new state (params, optimizer state, counters, extras) is
    replaced by the old one except the global step, inside the jitted step,
    so no host sync is needed. The metric ``skipped`` (0 or 1) reports it.
    """
    def guarded(state, batch):
        new, metrics = step(state, batch)
        ok = jnp.isfinite(metrics["loss"])
        if "grad_norm" in metrics:
            ok = ok & jnp.isfinite(metrics["grad_norm"])
        kept = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        kept = kept.replace(step=new.step)
        return kept, {**metrics, "skipped": jnp.where(ok, 0.0, 1.0)}

    guarded.__name__ = getattr(step, "__name__", "step")
    return guarded


def _parse_init_from(init_from: Any) -> dict[str, Any] | None:
    if not init_from:
        return None
    if isinstance(init_from, (str, os.PathLike)):
        init_from = {"workdir": os.fspath(init_from)}
    spec = dict(init_from.to_dict() if hasattr(init_from, "to_dict") else init_from)
    valid = ("workdir", "step", "mode")
    bad = sorted(set(spec) - set(valid))
    if bad or not spec.get("workdir"):
        raise ValueError(f"init_from={spec}: unknown keys {bad}; give 'workdir' and optionally "
                         f"'step' (default: latest) and 'mode' ('params' or 'state').")
    spec.setdefault("mode", "params")
    spec.setdefault("step", None)
    if spec["mode"] not in ("params", "state"):
        raise ValueError(f"init_from.mode={spec['mode']!r}; valid: ['params', 'state'].")
    return spec


def _check_resumable(checkpointer, step, target, config) -> list[tuple[str, Any, Any]]:
    """Refuses a checkpoint this run cannot continue; returns the safe config changes.

    Raises ``CheckpointError`` listing every difference when the saved arrays
    (phases, partitions, model shapes, optimizer structure) or the unsafe
    config fields differ. Any other exception means the checkpoint is damaged.
    """
    diff = ckpt_lib.structure_diff(checkpointer.metadata(step), target)
    if diff:
        raise ckpt_lib.CheckpointError(
            f"the checkpoint at step {step} in {checkpointer.directory} does not fit this run "
            "(its phases, partitions, model shapes or optimizers differ):\n" + "\n".join(diff)
            + "\nUse a new workdir, or start a new run from it with init_from.")
    saved = checkpointer.read_meta(step).get("config") or {}
    if not saved or not config:
        return []
    changes = ckpt_lib.config_diff(saved, config)
    unsafe = [c for c in changes if c[0].split(".")[0].split("[")[0] not in RESUME_SAFE_FIELDS]
    if unsafe:
        lines = "\n".join(f"  config.{p}: {o!r} -> {n!r}" for p, o, n in unsafe)
        raise ckpt_lib.CheckpointError(
            f"the config differs from the one the checkpoint at step {step} in "
            f"{checkpointer.directory} was trained with, in fields a resumed run cannot change:\n"
            f"{lines}\nOnly {list(RESUME_SAFE_FIELDS)} may change on resume. Use a new workdir "
            "(with init_from to start from this checkpoint), or restore the old values.")
    return [c for c in changes if c not in unsafe]


def _load_init_from(spec, target, shardings, rep, say, make_state_from,
                    state_rng) -> TrainState:
    other = ckpt_lib.Checkpointer(spec["workdir"], create=False, async_save=False,
                                  max_to_keep=None)
    steps = other.all_steps()
    step = spec["step"] if spec["step"] is not None else (steps[-1] if steps else None)
    if step is None or step not in steps:
        raise ckpt_lib.CheckpointError(
            f"init_from: no checkpoint at step {step} in {spec['workdir']!r}; saved steps: {steps}.")
    if spec["mode"] == "state":
        diff = ckpt_lib.structure_diff(other.metadata(step), target)
        if diff:
            raise ckpt_lib.CheckpointError(
                f"init_from (mode 'state'): the state at step {step} in {spec['workdir']!r} does "
                "not fit this run:\n" + "\n".join(diff) + "\nUse mode 'params' to take only "
                "the parameters.")
        state = other.restore(step, target)["state"]
        state = jax.jit(lambda s: s.replace(step=jnp.zeros((), jnp.int32)),
                        out_shardings=shardings)(state)
    else:
        saved = other.metadata(step)["params"]
        diff = ckpt_lib.structure_diff(saved, target.params)
        if diff:
            raise ckpt_lib.CheckpointError(
                f"init_from: the params at step {step} in {spec['workdir']!r} do not fit this "
                "run's model:\n" + "\n".join(diff))
        raw = other.restore(step, other.abstract_from_metadata(step, rep))["state"]["params"]
        params = jax.tree.unflatten(jax.tree.structure(target.params), jax.tree.leaves(raw))
        state = jax.jit(make_state_from, out_shardings=shardings)(params, state_rng)
    other.close()
    say(f"initialized from {spec['workdir']} step {step} ({spec['mode']})")
    return state


def _metric_column(table, name: str) -> np.ndarray:
    """The values of metric ``name`` in every row of ``table`` (0 where a phase lacks it)."""
    out = np.zeros(len(table))
    for i, phase in enumerate(table.phases):
        names = list(table.names[phase])
        if name in names:
            mask = table.ids == i
            out[mask] = table.values[mask, names.index(name)]
    return out


def _raise_if_nonfinite(items) -> None:
    """``items``: a StepTable or a list of ``(step, phase, metrics)`` records."""
    bad = (items.first_nonfinite() if isinstance(items, metrics_lib.StepTable)
           else metrics_lib.first_nonfinite(items))
    if bad is not None:
        s, p, metric = bad
        raise NonFiniteError(f"non-finite {metric} at step {s} in phase {p!r}; stopping. "
                             "Lower the learning rate, clip gradients (optimizer.grad_clip_norm) "
                             "or set nan_policy='skip'.")


def _log(table, step, writer, bar, nan_policy="raise", skips=None,
         max_consecutive_skips=10) -> None:
    """Writes the per-phase means of ``table`` (a StepTable) at ``step``."""
    if not len(table):
        return
    skipped: dict[str, int] = {}
    items, drop = table, ()
    if nan_policy == "skip":
        col = _metric_column(table, "skipped")
        if not col.any():  # no skipped step: every streak ends, no row is dropped
            for i in np.unique(table.ids).tolist():
                skips["streak"][table.phases[i]] = 0
            drop = ("skipped",)
        else:
            items = table.rows()
    if nan_policy == "skip" and not drop:
        kept = []
        for s, p, m in items:
            if m.get("skipped", 0.0) > 0:
                skipped[p] = skipped.get(p, 0) + 1
                skips["total"][p] += 1
                skips["streak"][p] += 1
                if skips["streak"][p] >= max_consecutive_skips:
                    raise NonFiniteError(
                        f"phase {p!r} had a non-finite loss or gradient norm on "
                        f"{skips['streak'][p]} of its steps in a row (the last at step {s}); "
                        f"stopping (nan_policy='skip', max_consecutive_skips="
                        f"{max_consecutive_skips}).")
            else:
                skips["streak"][p] = 0
                kept.append((s, p, {k: v for k, v in m.items() if k != "skipped"}))
        items = kept
    _raise_if_nonfinite(items)
    agg = (items.aggregate(drop=drop) if isinstance(items, metrics_lib.StepTable)
           else metrics_lib.aggregate(items))
    for p, n in skipped.items():
        agg.setdefault(p, {})["skipped"] = float(n)
    for phase, scalars in agg.items():
        if nan_policy == "skip":
            scalars.setdefault("skipped", 0.0)
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

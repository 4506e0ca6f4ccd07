"""Executors: how the loop runs the next steps, behind one small protocol.

An executor has ``run(state, step) -> (state, ids, metrics)``: it runs the
steps from global step ``step`` (the host executor one, the fused executor a
chunk ending where the loop has something to do) and returns the new state,
the phase index of each step run and their metrics (on the device);
``record(records, step, ids, metrics)`` hands those to the run's
:class:`~alternating.metrics.records.Records`; and
``states_for_checkpoint(step)`` returns ``(stream states, schedule state)`` at
``step`` when it has read ahead past it (else None: the live ones are right).

* :class:`Host`: one jitted step per global step; Python picks each step's
  phase (any schedule, feedback included). Each step writes its metrics into
  a device-side :class:`MetricRing`.
* :class:`Fused`: a planned chunk of steps in one ``lax.scan`` + ``lax.switch``
  program; with ``vectorized=True``, over a replica axis (vectorized seeds).

Host dispatch costs tens of microseconds of Python and runtime work a step.
The fused executor asks the schedule for the phases of the next ``n``
steps, gathers their ``n`` batches in schedule order, and runs one jitted
``lax.scan`` whose body ``lax.switch``-es over the phases' steps. The steps
are the very functions the host executor jits, so the final TrainState is the
same: bit for bit on CPU for the tested MLPs; where XLA compiles a step
differently inside the loop (the default scheme's CNNs), to float rounding.
Which executor a run gets: :mod:`alternating.executor_choice`.

Chunks end where the loop acts on the host: every log, evaluation,
checkpoint, schedule-feedback and final step. A schedule that adapts to
feedback therefore sees exactly what it sees under the host executor (its
feedback arrives at its own ``feedback_every`` boundaries, which are chunk
boundaries), but a small ``feedback_every`` means short chunks.

Compiles: one per distinct chunk length (typically ``chunk_steps`` and the
remainder before a boundary), independent of the number of steps and switches.

Batches: every stream gets a ``[n, batch, ...]`` stack whose row ``t`` is the
batch of step ``t`` when that step's phase reads the stream, zeros otherwise.
When all phases read one stream (the common case) nothing is padded; with
several streams the chunk carries some zero rows, which costs host-to-device
bandwidth but keeps one program per chunk length.

Metrics: each phase's packed metrics vector is padded to the longest one, so
the chunk returns one ``[n, M]`` array, kept on the device with the chunk's
phase indices until the next log fetches it; the loop's records, phase counts
and timeline take a chunk at a time (numpy), never a step at a time.

Prefetch: after dispatching a chunk (which returns at once), the host gathers
the next chunk's batches (one ``next_batches`` gather per stream) and places
them on the devices while the device computes (on CPU devices the program
takes the host arrays directly: there is no transfer to overlap). It never
reads ahead across a checkpoint (the saved stream positions must match the
saved state) or a schedule feedback (the next phases are not known yet).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from alternating import parallel
from alternating.data import resident as resident_lib
from alternating.executor_choice import batch_spec, choose, loop_slow, resolve  # noqa: F401

from alternating.options import EXECUTORS  # noqa: F401  (re-exported)

# Several CPU devices in one process (``--xla_force_host_platform_device_count``):
# XLA's in-process all-reduce can deadlock when many host steps are queued
# ahead (some device threads wait for one that never joins, and XLA aborts
# after 40 s: "Termination timeout for all reduce"). The host executor then
# waits for its step every ``DRAIN_EVERY`` steps, which bounds the queue
# (README example, 4 CPU devices on 2 cores: 5 aborts in 24 runs without,
# none in 24 with), and the fused executor for its chunks every
# ``DRAIN_EVERY`` steps (1-step chunks of convolution steps, vectorized CNN
# seeds on 4 CPU devices: tests/mnist1d_test.py aborted every time without).
# Other platforms and one device never wait.
DRAIN_EVERY = parallel.DRAIN_EVERY  # independent programs: parallel.bound_queue



class MetricRing:
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

        def ringed(state, batch, ring, *extra):
            rows, count = ring
            state, m = step(state, batch, *extra)
            m = jnp.pad(m, (0, rows.shape[1] - m.shape[0]))[None].astype(rows.dtype)
            rows = jax.lax.dynamic_update_slice(rows, m, (count, jnp.zeros_like(count)))
            return state, (rows, (count + 1) % cap)

        ringed.__name__ = getattr(step, "__name__", "step")
        return ringed

    def read(self, k: int) -> np.ndarray:
        """The rows of the last ``k`` steps (``k <= capacity``), oldest first."""
        with parallel.fetching():
            rows = np.asarray(self.buf[0].addressable_data(0))
        out = rows[(self.pos + np.arange(k)) % self.capacity]  # a copy
        self.pos = (self.pos + k) % self.capacity
        return out


class Host:
    """One jitted step per global step; the schedule picks each step's phase.

    Args:
      steps: ``{phase: packed step}`` in phase-index order.
      reads, multi: as for :class:`Fused`.
      streams: ``{stream: Stream or Resident}`` (resident streams serve positions).
      schedule: the run's schedule.
      mesh, counter, state_sharding: as for :class:`Fused`.
      width: the longest packed metrics vector.
      ring_rows: rows of the metric ring (the records are fetched at least
        that often).
    """

    one_step = True

    def __init__(self, *, steps: Mapping[str, Callable], reads: Mapping[str, Sequence[str]],
                 multi: Mapping[str, bool], streams: Mapping[str, Any], schedule: Any,
                 mesh: Any, counter: parallel.TraceCounter | None, state_sharding: Any,
                 width: int, ring_rows: int):
        self.names = list(steps)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.reads, self.multi, self.streams = dict(reads), dict(multi), streams
        self.schedule, self.mesh = schedule, mesh
        self.ring = MetricRing(ring_rows, width, mesh)
        resident = [n for n, st in streams.items() if isinstance(st, resident_lib.Resident)]
        self.data = {n: streams[n].arrays for n in resident}
        self._next = {n: (st.next_input if n in resident else st.__next__)
                      for n, st in streams.items()}
        self.steps = {n: parallel.jit_step(
            self.ring.wrap(with_inputs(fn, self.reads[n], self.multi[n], resident)), mesh,
            counter=counter, name=n, state_sharding=state_sharding, carry=True, data=True)
            for n, fn in steps.items()}
        cpu = mesh.devices.flat[0].platform == "cpu"
        self.drain_every = DRAIN_EVERY if (mesh.size > 1 and cpu) else 0

    def run(self, state: Any, step: int) -> tuple[Any, np.ndarray, None]:
        name = self.schedule.next_phase(step)
        inputs = {s: parallel.step_batch(self._next[s](), self.mesh) for s in self.reads[name]}
        state, self.ring.buf = self.steps[name](state, inputs, self.ring.buf, self.data)
        if self.drain_every and step % self.drain_every == 0:
            jax.block_until_ready(self.ring.buf)
        return state, self.index[name], None

    @staticmethod
    def record(records: Any, step: int, ids: Any, metrics: Any) -> None:
        del metrics  # in the ring
        records.add(step, ids)

    @staticmethod
    def states_for_checkpoint(step: int) -> None:
        del step  # the live stream and schedule states are those at ``step``
        return None



class boundaries:  # noqa: N801 (used like a function: boundaries(log, eval)(step))
    """``is_boundary(step)``: True when ``step`` is a multiple of a nonzero interval."""

    def __init__(self, *intervals: int):
        self.every = [int(i) for i in intervals if i]

    def __call__(self, step: int) -> bool:
        return any(step % e == 0 for e in self.every)

    def next_after(self, step: int) -> int | None:
        """The first boundary after ``step`` (None: there is none)."""
        return min(((step // e + 1) * e for e in self.every), default=None)


def with_inputs(step: Callable, reads: Sequence[str], multi: bool,
                resident: Sequence[str]) -> Callable:
    """``step(state, batch)`` as ``f(state, inputs, data)``: ``inputs[s]`` is stream
    ``s``'s batch, or its positions when ``s`` is device-resident (gathered
    here, inside the jitted step, from ``data[s]``)."""
    def f(state, inputs, data):
        batch = {s: resident_lib.gather(data[s], inputs[s]) if s in resident else inputs[s]
                 for s in reads}
        return step(state, batch if multi else batch[reads[0]])

    f.__name__ = getattr(step, "__name__", "step")
    return f


def _zeros(stream: Any, n: int) -> dict[str, np.ndarray]:
    if isinstance(stream, resident_lib.Resident):
        return {resident_lib.IDX: np.zeros((n, stream.element_spec["y"][0][0]), np.int32)}
    return {k: np.zeros((n,) + tuple(shape), dtype) for k, (shape, dtype) in
            stream.element_spec.items()}


def read_batches(stream: Any, k: int) -> dict[str, np.ndarray]:
    """The next ``k`` batches of ``stream``, stacked: ``{key: [k, batch, ...]}``.

    A stream with ``next_batches(k)`` (the library's :class:`~alternating.data.Stream`)
    gathers them in one call; any other iterator is read batch by batch; a
    device-resident stream gives its positions.
    """
    if isinstance(stream, resident_lib.Resident):
        return stream.next_inputs(k)
    many = getattr(stream, "next_batches", None)
    if many is not None:
        return many(k)
    batches = [next(stream) for _ in range(k)]
    return {key: np.stack([b[key] for b in batches]) for key in stream.element_spec}


def stack_batches(plan: Sequence[str] | np.ndarray, reads: Mapping[str, Sequence[str]],
                  streams: Mapping[str, Any],
                  names: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Reads the batches of a plan, in schedule order, stacked per stream.

    Row ``t`` of stream ``s`` is the batch of step ``t`` when ``plan[t]`` reads
    ``s``, zeros otherwise. Each stream hands out its batches in the order the
    host executor reads them (streams are independent, so reading one
    stream's batches for the whole chunk at once changes nothing), and both
    executors see the same batches.

    ``plan``: phase names, or phase indices into ``names``.
    """
    n = len(plan)
    ids = np.asarray(plan) if names is not None else None
    out = {}
    for s, stream in streams.items():
        if ids is not None:
            rows = np.flatnonzero(np.asarray([s in reads[p] for p in names])[ids])
        else:
            rows = np.asarray([t for t, name in enumerate(plan) if s in reads[name]], np.int64)
        if len(rows) == n:
            out[s] = read_batches(stream, n)
            continue
        stacked = _zeros(stream, n)
        if len(rows):
            got = read_batches(stream, len(rows))
            for k in stacked:
                stacked[k][rows] = got[k]
        out[s] = stacked
    return out


class Fused:
    """Runs chunks of scheduled steps as one ``lax.scan`` + ``lax.switch`` program.

    Args:
      steps: ``{phase: packed step}``: ``step(state, batch) -> (state, f32[m])``,
        in phase-index order (the order of the switch branches).
      reads: ``{phase: stream names}``; a phase reading several streams gets
        ``{stream: batch}``, one stream its batch.
      multi: ``{phase: whether its batch is {stream: batch}}``.
      streams: ``{stream: Stream}``; only streams some phase reads.
      schedule: the run's schedule (``plan`` when it ``can_plan``, else
        ``next_phase`` step by step, valid because chunks end on feedback).
      mesh: the device mesh (batches sharded on its ``data`` axis).
      chunk_steps: the longest chunk.
      abstract_state: the TrainState's shapes (to size the metrics padding).
      counter: a :class:`~alternating.parallel.TraceCounter`; compiles are
        counted as ``fused:<chunk length>``.
      stops: ``is_stop(step)``: the loop acts on the host after ``step``
        steps (log, eval, checkpoint, feedback); chunks end there.
      no_prefetch_after: ``f(step)``: True where reading ahead is unsafe
        (checkpoints, feedback).
      total_steps: the run's end (always a stop).
      state_sharding: the state's shardings (default replicated).
      vectorized: ``schedule`` and ``streams`` are lists, one per replica
        (seed); the state has a leading replica axis and the chunk program is
        ``jax.vmap``-ped over it. Replicas whose phases differ at a step run
        every phase's step and keep their own (``switch`` under ``vmap``).
    """

    def __init__(self, *, steps: Mapping[str, Callable], reads: Mapping[str, Sequence[str]],
                 multi: Mapping[str, bool], streams: Mapping[str, Any], schedule: Any,
                 mesh: Any, chunk_steps: int, abstract_state: Any,
                 counter: parallel.TraceCounter | None, stops: Callable[[int], bool],
                 no_prefetch_after: Callable[[int], bool], total_steps: int,
                 vectorized: bool = False, state_sharding: Any = None,
                 loop_free: bool = False):
        self.names = list(steps)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.reads, self.multi = dict(reads), dict(multi)
        used = sorted({s for n in self.names for s in reads[n]})
        self.vectorized = vectorized
        # Replicas (vectorized seeds): each its own schedule and streams.
        self.schedules = list(schedule) if vectorized else [schedule]
        self.stream_sets = [{s: st[s] for s in used} for st in (streams if vectorized else [streams])]
        self.streams = self.stream_sets[0]
        # Device-resident streams: every replica's serves positions into the
        # first replica's arrays (the same data; only the order differs).
        self.resident = [s for s, st in self.streams.items()
                         if isinstance(st, resident_lib.Resident)]
        self.data = {s: self.streams[s].arrays for s in self.resident}
        self.schedule, self.mesh = self.schedules[0], mesh
        self.chunk_steps, self.total_steps = int(chunk_steps), int(total_steps)
        self.stops, self.no_prefetch_after = stops, no_prefetch_after
        self.counter = counter
        self.state_sharding = state_sharding
        self._on_cpu = all(d.platform == "cpu" for d in np.ravel(mesh.devices))
        # Steps XLA:CPU runs slowly in a loop or a conditional (executor_choice):
        # a 1-step chunk whose phase is known runs that phase's step directly.
        self.loop_free = loop_free
        # Short chunks on several CPU devices queue as host steps do: bounded alike.
        self.drain_every, self._queued = (DRAIN_EVERY if mesh.size > 1 and self._on_cpu
                                          else 0), 0
        # Metric widths, from the steps' shapes (which also fills their names).
        widths = {n: jax.eval_shape(fn, abstract_state,
                                    batch_spec(self.streams, reads[n], multi[n]))[1].shape[0]
                  for n, fn in steps.items()}
        self.width = max(widths.values())
        self._branches = [self._branch(n, steps[n], widths[n]) for n in self.names]
        self._compiled: dict[int, Callable] = {}
        self._pending: tuple[int, Any] | None = None
        self.states_at_end: tuple[int, Any] | None = None

    def _branch(self, name, step, width):
        streams, multi, pad = self.reads[name], self.multi[name], self.width - width

        inner = with_inputs(step, streams, multi, self.resident)

        def branch(state, batches, data):
            state, m = inner(state, batches, data)
            return state, jnp.pad(m, (0, pad)) if pad else m

        return branch

    def _program(self, n: int, shared: bool = False, fixed: int | None = None) -> Callable:
        fn = self._compiled.get((n, shared, fixed))
        if fn is not None:
            return fn
        branches = self._branches

        def chunk(state, batches, phase_ids, data):
            if fixed is not None:  # one step of a known phase: no scan, no switch
                state, m = branches[fixed](state, jax.tree.map(lambda v: v[0], batches), data)
                return state, m[None]

            def body(state, xs):
                ids, b = xs
                if len(branches) == 1:
                    return branches[0](state, b, data)
                return jax.lax.switch(ids, branches, state, b, data)
            # A one-step chunk is not a loop: XLA:CPU runs some steps (convolution
            # gradients) many times slower inside one (see ``_LOOP_SLOW_ON_CPU``).
            return jax.lax.scan(body, state, (phase_ids, batches), unroll=n == 1)

        if self.vectorized:
            # Replicas running the same phases share one phase index: a real
            # switch, instead of every branch for every replica.
            chunk = jax.vmap(chunk, in_axes=(0, 0, None if shared else 0, None))
        if self.counter is not None:
            chunk = self.counter.wrap(f"fused:{n}" + (":shared" if shared else "") + (
                f":{self.names[fixed]}" if fixed is not None else ""), chunk)
        rep = parallel.replicated(self.mesh)
        st = rep if self.state_sharding is None else self.state_sharding
        stacked = self._batch_sharding()
        fn = jax.jit(chunk, in_shardings=(st, stacked, rep, rep), out_shardings=(st, rep),
                     donate_argnums=0)
        self._compiled[(n, shared, fixed)] = fn
        return fn

    def chunk_length(self, step: int) -> int:
        """Steps from ``step`` to the next stop, at most ``chunk_steps``."""
        end = min(step + self.chunk_steps, self.total_steps)
        after = getattr(self.stops, "next_after", None)
        if after is not None:
            stop = after(step)
            return (end if stop is None else min(end, stop)) - step
        n = 1
        while step + n < end and not self.stops(step + n):
            n += 1
        return n

    def _batch_sharding(self) -> NamedSharding:
        lead = (None, None) if self.vectorized else (None,)
        return NamedSharding(self.mesh, P(*lead, parallel.batch_axes(self.mesh)))

    @staticmethod
    def _plan(schedule, step: int, n: int) -> list[str]:
        if getattr(schedule, "can_plan", False):
            return list(schedule.plan(step, n))
        return [schedule.next_phase(step + i) for i in range(n)]

    def _prepare(self, step: int):
        n = self.chunk_length(step)
        index = self.index
        ids = np.asarray([[index[p] for p in self._plan(sch, step, n)] for sch in self.schedules],
                         np.int32)
        hosts = [stack_batches(i, self.reads, st, self.names) for i, st in zip(ids, self.stream_sets)]
        if self.vectorized:
            host = jax.tree.map(lambda *xs: np.stack(xs), *hosts)
            if (ids == ids[0]).all():
                ids = ids[0]  # shared by every replica (see _program)
        else:
            host, ids = hosts[0], ids[0]
        stacked = self._batch_sharding()
        if jax.process_count() == 1 and self._on_cpu:
            # On CPU there is no transfer to overlap: the program takes the host
            # arrays as they are (about 8 us against 50-200 us for a
            # device_put of the chunk on JAX 0.10's CPU backend).
            batches = host
        elif jax.process_count() == 1:
            batches = jax.device_put(host, stacked)
        else:
            batches = jax.tree.map(
                lambda v: jax.make_array_from_process_local_data(stacked, v), host)
        return step, (batches, ids)

    def resume_states(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(stream states, schedule state)`` as they are now (not vectorized)."""
        return ({n: s.get_state() for n, s in self.streams.items()},
                self.schedule.state_dict())

    def states_for_checkpoint(self, step: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The states at ``step`` if a read-ahead has moved the live ones past it."""
        if self._pending is not None and self.states_at_end and self.states_at_end[0] == step:
            return self.states_at_end[1]
        return None

    def run_chunk(self, state: Any, step: int) -> tuple[Any, np.ndarray, jax.Array]:
        """Runs the chunk starting at global step ``step``.

        Returns:
          ``(state, ids, metrics)``: the new state, the phase index (into
          ``names``) of each step run, ``int32[n]``, and the chunk's metrics,
          ``[n, width]`` on the device (each phase's packed vector, padded).
          Vectorized: ``ids`` is ``[replicas, n]`` and ``metrics``
          ``[replicas, n, width]``.
        """
        if self._pending is not None and self._pending[0] == step:
            _, (batches, ids) = self._pending
        else:
            _, (batches, ids) = self._prepare(step)
        self._pending = None
        n = ids.shape[-1]
        shared = self.vectorized and ids.ndim == 1
        one = ids[0] if n == 1 and ids.ndim == 1 else None  # one phase for every replica
        fixed = int(one) if self.loop_free and one is not None else None
        state, metrics = self._program(n, shared, fixed)(state, batches, ids, self.data)
        end = step + n
        # Dispatch returned at once; prepare the next chunk while it computes.
        # Reading ahead moves the streams (and a stepwise schedule) past
        # ``end``; their states at ``end`` are kept for a checkpoint there
        # (a stop signal can end the run at any chunk boundary).
        self.states_at_end = None
        if end < self.total_steps and not self.no_prefetch_after(end):
            self.states_at_end = (end, self.resume_states())
            self._pending = self._prepare(end)
        if self.drain_every:
            self._queued += n
            if self._queued >= self.drain_every:  # see DRAIN_EVERY
                jax.block_until_ready(metrics)
                self._queued = 0
        if shared:
            ids = np.broadcast_to(ids, (len(self.schedules), n))
        return state, ids, metrics

    run = run_chunk
    one_step = False

    @staticmethod
    def record(records: Any, step: int, ids: Any, metrics: Any) -> None:
        records.add_chunk(step, ids, metrics)

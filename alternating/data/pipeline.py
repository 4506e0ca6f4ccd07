"""In-memory arrays, training streams and evaluation batches.

A split that fits host memory is read once into memory (`load_arrays`),
transformed once (`transforms.apply_transforms`) and then served by index; a
larger one is streamed from its ArrayRecord files in the same order
(`streaming.StreamingStream`, spec key `read`):

* `make_stream` returns a `Stream`, an endless, checkpointable iterator of
  fixed-shape shuffled batches. The grain pipeline runs over *batch numbers*
  and each batch is gathered with one numpy fancy-indexing call, which keeps a
  `next()` at a few microseconds (a per-example grain pipeline,
  `range(n).shuffle().repeat().batch()`, costs ~2.5 ms for a batch of 128,
  mostly grain's per-index shuffle, too slow for a training step).
* `eval_batches` returns every example of a split once, in order, in padded
  batches with a `mask`.

Both take a data *spec*, a mapping (or ml_collections ConfigDict) with keys:

    dataset     a dataset name (see `builders`) or a dict of numpy arrays with
                at least `x` and `y`
    split       split name, default 'train' (ignored for array dicts)
    batch_size  the GLOBAL batch size, summed over processes
    transforms  list of transform specs, default [] (see `transforms`)
    curriculum  optional: epochs over score-chosen subsets of varying size,
                {sizes, cycle, sampling, scores (a list or a .npy path)}
                (see `curriculum.CurriculumStream`; training streams only)
    read        'auto' (default), 'memory' or 'stream': how a training stream
                reads a named split; 'stream' reads each batch from the
                ArrayRecord files by index, never the whole split, and 'auto'
                streams a split over the host budget (see `streaming`)

Multi-process: every process computes the same global batch and keeps its
contiguous slice `[i * B / P, (i + 1) * B / P)`, so the global batch (and a
checkpointed position) does not depend on the number of processes.
"""

import sys
import threading
from typing import Any, Mapping, Optional, Sequence

import grain
import numpy as np

from alternating.data.arrays import (Arrays, SPEC_KEYS, clear_cache, load_arrays,  # noqa: F401
                                     local_batch_size, resolve_arrays, spec_dict)

__all__ = [
    'SPEC_KEYS',
    'Stream',
    'clear_cache',
    'eval_batches',
    'load_arrays',
    'make_stream',
]



# `Stream.__next__` reads this many bytes of batches at a time (at most
# READ_AHEAD_MAX batches) in one gather and serves them one by one: a batch
# then costs a slice instead of a trip through grain's iterator and its own
# gather (2-core CPU, digits batch 8: 12 us a batch one by one, 4 us in blocks
# of 64). Only for the base order, a pure function of (seed, batch number), so
# serving a batch later than it was gathered changes nothing.
READ_AHEAD_BYTES = 1 << 20
READ_AHEAD_MAX = 64
_IDX = '__indices__'  # a read-ahead block of positions rather than data


# --- Training streams. ---------------------------------------------------------------


class Stream:
    """Endless iterator of shuffled, fixed-shape batches with exact resume.

    The stream is the concatenation of epochs, each a fresh permutation of the
    examples drawn from (seed, epoch); global batch `b` holds positions
    `[b * B, (b + 1) * B)` of it, so no example is dropped and a batch may
    straddle two epochs. The order is a pure function of the seed, the data and
    the global batch size; this process returns its slice of each batch.

    The position is a grain iterator over batch numbers, so `get_state` is
    grain's JSON state (plus a fingerprint that `set_state` checks).

    `next()` gathers `read_ahead` batches at once (a block of at most
    `READ_AHEAD_BYTES`) and serves them one by one; `get_state` still gives
    the position of the batches served. Set `read_ahead = 1` to read one
    batch at a time; a subclass with its own `_indices` or `_batch` always
    does.

    Attributes:
        batch_size: global batch size.
        local_batch_size: this process's share of it.
        num_examples: examples in the (transformed) split.
        num_classes: number of classes, or None if unknown.
        element_spec: `{key: (shape, dtype)}` of one local batch.
        read_ahead: batches `next()` gathers at once (1: none read ahead).
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        num_classes: Optional[int] = None,
        description: str = 'in-memory dataset',
    ):
        self._arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self._init_order(len(self._arrays['y']), batch_size=batch_size, seed=seed,
                         process_index=process_index, process_count=process_count,
                         num_classes=num_classes, description=description)
        self.element_spec = {
            k: ((self.local_batch_size,) + v.shape[1:], v.dtype) for k, v in self._arrays.items()
        }
        # The per-batch work is one numpy gather, so threads or prefetching
        # would only add hand-off latency (grain's defaults: 16 threads).
        self._init_iterator(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        batch_bytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                          for shape, dtype in self.element_spec.values())
        pure = (type(self)._indices is Stream._indices and type(self)._batch is Stream._batch)
        self.read_ahead = (max(1, min(READ_AHEAD_MAX, READ_AHEAD_BYTES // max(1, batch_bytes)))
                           if pure else 1)

    def _init_order(self, num_examples: int, *, batch_size: int, seed: int, process_index: int,
                    process_count: int, num_classes: Optional[int], description: str) -> None:
        """Checks and sets what the batch order depends on (the data are the caller's)."""
        self.num_examples = int(num_examples)
        self.local_batch_size = local_batch_size(batch_size, process_index, process_count)
        self.batch_size = int(batch_size)
        if self.batch_size > self.num_examples:
            raise ValueError(
                f'batch_size {self.batch_size} is larger than {description}, which '
                f'has {self.num_examples} examples; use a smaller batch_size.'
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f'seed must be a non-negative int, got {seed!r}.')
        self.seed = int(seed)
        self.num_classes = num_classes
        self._offset = process_index * self.local_batch_size
        self._perms: dict[int, np.ndarray] = {}
        # Streaming reads batches in worker threads, which share this cache.
        self._perms_lock = threading.Lock()

    def _init_iterator(self, options: grain.ReadOptions) -> None:
        """The position: a grain iterator over batch numbers, mapped through `_batch`."""
        dataset = grain.MapDataset.range(sys.maxsize).map(self._batch)
        self._iterator = iter(dataset.to_iter_dataset(options))
        self.read_ahead = 1
        self._ahead: dict[str, np.ndarray] = {}  # the block read ahead, [k, local batch, ...]
        self._ahead_next = self._ahead_len = 0  # next batch of the block to serve; its length

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_examples)
            with self._perms_lock:
                # A batch spans at most two epochs (batch_size <= num_examples).
                if len(self._perms) >= 2:
                    self._perms.pop(min(self._perms))
                self._perms[epoch] = perm
        return perm

    def _indices(self, batch: int) -> np.ndarray:
        n = self.num_examples
        start = batch * self.batch_size + self._offset
        stop = start + self.local_batch_size
        first, last = start // n, (stop - 1) // n
        if first == last:
            return self._permutation(first)[start - first * n:stop - first * n]
        return np.concatenate([
            self._permutation(first)[start - first * n:],
            self._permutation(last)[:stop - last * n],
        ])

    def _batch(self, batch: int) -> dict[str, np.ndarray]:
        idx = self._indices(batch)
        return {k: v[idx] for k, v in self._arrays.items()}

    def _indices_many(self, first: int, k: int) -> np.ndarray:
        """`_indices` of batches `first .. first + k - 1`, concatenated."""
        if type(self)._indices is not Stream._indices:  # a subclass's own order
            return np.concatenate([self._indices(b) for b in range(first, first + k)])
        n = self.num_examples
        pos = ((first + np.arange(k))[:, None] * self.batch_size + self._offset
               + np.arange(self.local_batch_size)[None, :]).ravel()
        epochs = pos // n
        lo, hi = int(epochs[0]), int(epochs[-1])
        if lo == hi:
            return self._permutation(lo)[pos - lo * n]
        perms = np.stack([self._permutation(e) for e in range(lo, hi + 1)])
        return perms[epochs - lo, pos - epochs * n]

    def __iter__(self) -> 'Stream':
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        i = self._ahead_next
        if i < self._ahead_len and _IDX not in self._ahead:
            self._ahead_next = i + 1
            return {k: v[i] for k, v in self._ahead.items()}
        self._unread()
        if self.read_ahead > 1:
            block = self._gather(self.read_ahead)
            if block is not None:
                self._ahead, self._ahead_len, self._ahead_next = block, self.read_ahead, 1
                return {k: v[0] for k, v in block.items()}
        return next(self._iterator)

    resident_ok = False  # see pure_order

    @property
    def pure_order(self) -> bool:
        """Whether the order is the base one (a pure function of seed and batch number),
        so batches can be served as indices into :attr:`arrays` (device-resident data)."""
        t = type(self)
        # A subclass that serves other data from next() is never bypassed, unless
        # it says its batches are still arrays[next_indices()] (resident_ok).
        methods = ('_indices', '_batch') + (() if t.resident_ok else ('__next__', 'next_batches'))
        return all(getattr(t, m) is getattr(Stream, m) for m in methods)

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        """The (transformed) examples the batches are gathered from."""
        return self._arrays

    def next_indices(self) -> np.ndarray:
        """The next batch as positions into :attr:`arrays`, ``int32 [local batch]``.

        Advances the stream exactly as ``next()`` does (the same batch, the same
        state afterwards); the data are gathered elsewhere (on the device).
        """
        i = self._ahead_next
        if i < self._ahead_len and _IDX in self._ahead:
            self._ahead_next = i + 1
            return self._ahead[_IDX][i]
        self._unread()
        block = self._gather(max(self.read_ahead, 1), indices_only=True)
        if block is None:
            raise ValueError('this stream cannot serve indices (its iterator state has no '
                             'batch number)')
        self._ahead, self._ahead_len, self._ahead_next = block, max(self.read_ahead, 1), 1
        return block[_IDX][0]

    def next_indices_many(self, k: int) -> np.ndarray:
        """The next ``k`` batches as positions, ``int32 [k, local batch]`` (as ``next_batches``)."""
        self._unread()
        return self._gather(k, indices_only=True)[_IDX]

    def _unread(self) -> None:
        """Drops the unserved rest of the read-ahead block; the iterator steps back over it."""
        left = self._ahead_len - self._ahead_next
        self._ahead, self._ahead_next, self._ahead_len = {}, 0, 0
        if left:
            state = self._iterator.get_state()
            self._iterator.set_state({**state, 'next_index': state['next_index'] - left})

    def _gather(self, k: int, indices_only: bool = False) -> Optional[dict[str, np.ndarray]]:
        """The next `k` batches in one gather, the iterator advanced by `k`; None
        if the iterator's state has no batch number (then read batch by batch).
        `indices_only`: `{_IDX: positions [k, local batch]}` instead of the data."""
        state = self._iterator.get_state()
        first = state.get('next_index') if isinstance(state, Mapping) else None
        if not isinstance(first, int):
            return None
        idx = self._indices_many(first, k)
        if indices_only:
            out = {_IDX: idx.astype(np.int32).reshape(k, self.local_batch_size)}
        else:
            out = {key: v[idx].reshape((k, self.local_batch_size) + v.shape[1:])
                   for key, v in self._arrays.items()}
        self._iterator.set_state({**state, 'next_index': first + k})
        return out

    def next_batches(self, k: int) -> dict[str, np.ndarray]:
        """The next `k` batches stacked, `{key: [k, local batch, ...]}`, in one gather.

        Exactly the batches `k` calls of `next()` return, and the stream's
        state afterwards is the same: the position is still the grain
        iterator's, advanced by `k`. The fused executor reads a chunk this
        way: one numpy gather instead of `k` trips through the iterator
        (about 6 us each) and a stack. A subclass that overrides `__next__`
        is read batch by batch unless it overrides this too.
        """
        own_next = (type(self).__next__ is not Stream.__next__
                    and type(self).next_batches is Stream.next_batches)
        out = None
        if not own_next:
            self._unread()
            out = self._gather(k)
        if out is None:
            batches = [next(self) for _ in range(k)]
            return {key: np.stack([b[key] for b in batches]) for key in self.element_spec}
        return out

    def _fingerprint(self) -> dict[str, int]:
        return {'seed': self.seed, 'num_examples': self.num_examples, 'batch_size': self.batch_size}

    def get_state(self) -> dict[str, Any]:
        """Returns the position as a JSON-serializable dict."""
        state = self._iterator.get_state()
        left = self._ahead_len - self._ahead_next  # read ahead, not served: not consumed
        if left:
            state = {**state, 'next_index': state['next_index'] - left}
        return {'iterator': state, **self._fingerprint()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resumes from `get_state()`'s result (any process count).

        Raises:
            ValueError: if the state comes from a stream with another seed,
                dataset size or global batch size.
        """
        expected = self._fingerprint()
        got = {k: state.get(k) for k in expected}
        if got != expected:
            raise ValueError(
                f'Stream state {got} does not match this stream {expected}; '
                'restore it into a stream made from the same spec and seed.'
            )
        self._ahead, self._ahead_next, self._ahead_len = {}, 0, 0
        self._iterator.set_state(dict(state['iterator']))

    def __repr__(self) -> str:
        return (
            f'Stream(batch_size={self.batch_size}, local_batch_size={self.local_batch_size}, '
            f'num_examples={self.num_examples}, seed={self.seed})'
        )


def make_stream(
    spec: Any,
    *,
    seed: int,
    data_dir: Optional[str] = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Stream:
    """Builds the training stream a data spec describes.

    Args:
        spec: mapping or ConfigDict with keys `dataset`, `split`, `batch_size`,
            `transforms` (see the module docstring).
        seed: shuffling seed (non-negative int); the order depends on nothing
            else but the spec.
        data_dir: see `builders.resolve_data_dir`.
        process_index: this process's index (`jax.process_index()`).
        process_count: number of processes (`jax.process_count()`).

    Returns:
        A `Stream` of `{'x': float32 [B_local, ...], 'y': int32 [B_local]}`;
        a `streaming.StreamingStream` (the same batches, read by index from
        the ArrayRecord files) when the spec's `read` says so.

    Raises:
        ValueError: unknown spec keys, dataset, split, transform or `read`; a
            batch size larger than the data or not divisible by
            `process_count`; a transform that needs the whole split, streamed.
    """
    spec = spec_dict(spec)
    if 'batch_size' not in spec:
        raise ValueError(f'The data spec needs a "batch_size" (global); got keys {sorted(spec)}.')
    local_batch_size(spec['batch_size'], process_index, process_count)  # Fail before reading.
    from alternating.data import streaming  # pylint: disable=g-import-not-at-top
    if streaming.choose_read(spec, data_dir) == 'stream':
        return streaming.from_spec(spec, seed=seed, data_dir=data_dir,
                                   process_index=process_index, process_count=process_count)
    desc, arrays, num_classes = resolve_arrays(spec, data_dir)
    if spec.get('curriculum'):
        from alternating.data import curriculum  # pylint: disable=g-import-not-at-top
        return curriculum.from_spec(
            spec['curriculum'], arrays, batch_size=spec['batch_size'], seed=seed,
            process_index=process_index, process_count=process_count,
            num_classes=num_classes, description=desc)
    return Stream(
        arrays,
        batch_size=spec['batch_size'],
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        num_classes=num_classes,
        description=desc,
    )


# --- Evaluation. ---------------------------------------------------------------------


def eval_batches(
    spec: Any,
    *,
    batch_size: Optional[int] = None,
    data_dir: Optional[str] = None,
    process_index: int = 0,
    process_count: int = 1,
) -> Sequence[dict[str, np.ndarray]]:
    """Returns every example of a split once, in order, in padded batches.

    Global batch `b` holds examples `[b * B, (b + 1) * B)`, the last one padded
    with zeros up to `B`; each process gets its contiguous slice. Every batch
    has a float32 `mask` (1 real example, 0 padding), so that metrics are
    `sum(metric * mask) / sum(mask)` summed over batches and processes.

    Args:
        spec: data spec, as for `make_stream`.
        batch_size: global evaluation batch size; default: the spec's.
        data_dir: see `builders.resolve_data_dir`.
        process_index: this process's index.
        process_count: number of processes.

    Returns:
        A list of `{'x', 'y', 'mask'}` dicts of numpy arrays, all the same shape;
        for a spec that streams (its `read`, as for `make_stream`) a
        `streaming.EvalBatches` giving the same batches, read by index each
        time it is iterated (never the whole split).

    Raises:
        ValueError: as for `make_stream`.
    """
    spec = spec_dict(spec)
    batch_size = batch_size if batch_size is not None else spec.get('batch_size')
    if batch_size is None:
        raise ValueError('eval_batches needs a batch_size (argument or the spec\'s "batch_size").')
    local = local_batch_size(batch_size, process_index, process_count)
    from alternating.data import streaming  # pylint: disable=g-import-not-at-top
    if streaming.choose_read(spec, data_dir) == 'stream':
        return streaming.eval_batches(spec, batch_size=batch_size, data_dir=data_dir,
                                      process_index=process_index, process_count=process_count)
    _, arrays, _ = resolve_arrays(spec, data_dir)
    n = len(arrays['y'])
    num_batches = -(-n // batch_size)
    padded = num_batches * batch_size
    out = []
    # View the padded data as [num_batches, process_count, local, ...] and
    # keep this process's column.
    for k, v in list(arrays.items()) + [('mask', np.ones(n, np.float32))]:
        full = np.zeros((padded,) + v.shape[1:], v.dtype)
        full[:n] = v
        mine = full.reshape((num_batches, process_count, local) + v.shape[1:])[:, process_index]
        out.append((k, mine))
    return [{k: v[b] for k, v in out} for b in range(num_batches)]

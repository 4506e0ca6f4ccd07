"""In-memory arrays, training streams and evaluation batches.

The datasets this library trains on are small, so a split is read once into
memory (`load_arrays`), transformed once (`transforms.apply_transforms`) and
then served by index:

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

Multi-process: every process computes the same global batch and keeps its
contiguous slice `[i * B / P, (i + 1) * B / P)`, so the global batch (and a
checkpointed position) does not depend on the number of processes.
"""

import functools
import sys
from typing import Any, Mapping, Optional

import grain
import numpy as np
import tensorflow_datasets as tfds

from alternating.data import builders
from alternating.data import transforms as transforms_lib

__all__ = [
    'SPEC_KEYS',
    'Stream',
    'clear_cache',
    'eval_batches',
    'load_arrays',
    'make_stream',
]

SPEC_KEYS = ('dataset', 'split', 'batch_size', 'transforms', 'curriculum')

Arrays = dict[str, np.ndarray]

# `Stream.__next__` reads this many bytes of batches at a time (at most
# READ_AHEAD_MAX batches) in one gather and serves them one by one: a batch
# then costs a slice instead of a trip through grain's iterator and its own
# gather (2-core CPU, digits batch 8: 12 us a batch one by one, 4 us in blocks
# of 64). Only for the base order, a pure function of (seed, batch number), so
# serving a batch later than it was gathered changes nothing.
READ_AHEAD_BYTES = 1 << 20
READ_AHEAD_MAX = 64


# --- Reading splits. -------------------------------------------------------------


def _split_names(split: str) -> list[str]:
    """Base split names in a TFDS split expression ('train[:80%]+test')."""
    return [part.split('[')[0].strip() for part in split.split('+')]


def _to_numpy(examples: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.stack([np.asarray(e[key]) for e in examples])


def _read_all(source) -> list[dict[str, Any]]:
    indices = list(range(len(source)))
    try:
        return list(source.__getitems__(indices))
    except TypeError:
        # `tfds.testing.mock_data` patches `__getitems__` with an unbound
        # function; reading one by one works under the mock and for real data.
        return [source[i] for i in indices]


@functools.lru_cache(maxsize=None)
def _read_split(name: str, split: str, data_dir: str) -> tuple[Arrays, Optional[int]]:
    """Reads a split fully; returns read-only arrays and the number of classes."""
    b = builders.builder(name, data_dir)
    known = list(b.info.splits)
    # Splits are unknown (empty) for an unprepared dataset and under
    # `tfds.testing.mock_data`; the data source then reports the problem.
    unknown = [s for s in _split_names(split) if known and s not in known]
    if unknown:
        raise ValueError(
            f'Dataset {name!r} has no split {unknown[0]!r}; valid splits: '
            f'{sorted(known)}.'
        )
    try:
        source = b.as_data_source(split)
    except (NotImplementedError, ValueError, FileNotFoundError) as e:
        if not b.is_prepared():
            raise builders.not_found_error(name, data_dir, 'is not prepared') from e
        raise
    keys = b.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(
            f'Dataset {name!r} has no (input, label) supervised keys (got '
            f'{keys!r}); its features are {list(b.info.features.keys())}. Use a '
            'supervised dataset, or pass arrays {"x": ..., "y": ...} as the '
            'spec\'s dataset.'
        )
    x_key, y_key = keys
    examples = _read_all(source)
    x = _to_numpy(examples, x_key)
    feature = b.info.features[x_key]
    if isinstance(feature, tfds.features.Image) and x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0  # Same [0, 1] range as `digits`.
    label = b.info.features[y_key]
    num_classes = getattr(label, 'num_classes', None)
    arrays = {'x': x.astype(np.float32), 'y': _to_numpy(examples, y_key).astype(np.int32)}
    for v in arrays.values():
        v.setflags(write=False)  # Cached: callers must not change it.
    return arrays, num_classes


def load_arrays(name: str, split: str = 'train', data_dir: Optional[str] = None) -> Arrays:
    """Reads a dataset split fully into memory.

    The builder's supervised keys become `x` (float32, the feature's shape;
    uint8 `Image` features are scaled to [0, 1]) and `y` (int32). Results are
    cached per (name, split, data directory) for the life of the process.

    Args:
        name: `digits`, `mnist1d` or a prepared TFDS catalogue dataset.
        split: a split name or TFDS split expression (e.g. 'train[:80%]').
        data_dir: see `builders.resolve_data_dir`.

    Returns:
        `{'x': ..., 'y': ...}`; the arrays are read-only views of the cache.

    Raises:
        ValueError: unknown or unprepared dataset, or unknown split.
    """
    arrays, _ = _read_split(name, split, builders.resolve_data_dir(data_dir))
    return dict(arrays)


def clear_cache() -> None:
    """Forgets the splits `load_arrays` has read (e.g. between tests)."""
    _read_split.cache_clear()


# --- Specs. ------------------------------------------------------------------------


def _spec_dict(spec: Any) -> dict[str, Any]:
    if hasattr(spec, 'to_dict'):  # ml_collections (Frozen)ConfigDict.
        spec = spec.to_dict()
    if not isinstance(spec, Mapping):
        raise TypeError(
            f'A data spec must be a mapping with keys {list(SPEC_KEYS)}, got '
            f'{type(spec).__name__}.'
        )
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f'Unknown data spec keys {unknown}; valid keys: {list(SPEC_KEYS)}.')
    if 'dataset' not in spec:
        raise ValueError(
            f'The data spec needs a "dataset" (a name or arrays); got keys {sorted(spec)}.'
        )
    return dict(spec)


def _resolve_arrays(
    spec: dict[str, Any], data_dir: Optional[str]
) -> tuple[str, Arrays, Optional[int]]:
    """Returns (description, transformed arrays, num_classes) for a spec."""
    dataset = spec['dataset']
    split = spec.get('split') or 'train'
    specs = list(spec.get('transforms') or ())
    if isinstance(dataset, str):
        arrays, num_classes = _read_split(dataset, split, builders.resolve_data_dir(data_dir))
        desc = f'dataset {dataset!r} split {split!r}'
    elif isinstance(dataset, Mapping):
        missing = [k for k in ('x', 'y') if k not in dataset]
        if missing:
            raise ValueError(
                f'In-memory dataset is missing arrays {missing}; it needs "x" and '
                f'"y" (got keys {sorted(dataset)}).'
            )
        arrays = {k: np.asarray(v) for k, v in dataset.items()}
        arrays['x'] = arrays['x'].astype(np.float32, copy=False)
        arrays['y'] = arrays['y'].astype(np.int32, copy=False)
        sizes = {k: len(v) for k, v in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f'In-memory dataset arrays differ in length: {sizes}.')
        num_classes = int(arrays['y'].max(initial=-1)) + 1
        desc = 'in-memory dataset'
    else:
        raise TypeError(
            f'Data spec "dataset" must be a name (e.g. "digits", "mnist1d") or a '
            f'dict of numpy arrays, got {type(dataset).__name__}.'
        )
    if specs:
        arrays = transforms_lib.apply_transforms(arrays, specs)
        num_classes = transforms_lib.transformed_num_classes(num_classes, specs)
        desc += ' after its transforms'
    return desc, arrays, num_classes


def _local_batch_size(batch_size: Any, process_index: int, process_count: int) -> int:
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(
            f'batch_size must be a positive int (the global batch size), got {batch_size!r}.'
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index must be in [0, {process_count}), got {process_index}.')
    if batch_size % process_count:
        raise ValueError(
            f'Global batch_size {batch_size} is not divisible by process_count '
            f'{process_count}; choose a multiple of {process_count}.'
        )
    return int(batch_size) // process_count


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
        self.num_examples = len(self._arrays['y'])
        self.local_batch_size = _local_batch_size(batch_size, process_index, process_count)
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
        self.element_spec = {
            k: ((self.local_batch_size,) + v.shape[1:], v.dtype) for k, v in self._arrays.items()
        }
        # The per-batch work is one numpy gather, so threads or prefetching
        # would only add hand-off latency (grain's defaults: 16 threads).
        dataset = grain.MapDataset.range(sys.maxsize).map(self._batch)
        self._iterator = iter(
            dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        )
        batch_bytes = sum(int(np.prod(shape)) * np.dtype(dtype).itemsize
                          for shape, dtype in self.element_spec.values())
        pure = (type(self)._indices is Stream._indices and type(self)._batch is Stream._batch)
        self.read_ahead = (max(1, min(READ_AHEAD_MAX, READ_AHEAD_BYTES // max(1, batch_bytes)))
                           if pure else 1)
        self._ahead: dict[str, np.ndarray] = {}  # the block read ahead, [k, local batch, ...]
        self._ahead_next = self._ahead_len = 0  # next batch of the block to serve; its length

    def _permutation(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng((self.seed, epoch)).permutation(self.num_examples)
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
        if i < self._ahead_len:
            self._ahead_next = i + 1
            return {k: v[i] for k, v in self._ahead.items()}
        if self.read_ahead > 1:
            block = self._gather(self.read_ahead)
            if block is not None:
                self._ahead, self._ahead_len, self._ahead_next = block, self.read_ahead, 1
                return {k: v[0] for k, v in block.items()}
        return next(self._iterator)

    def _unread(self) -> None:
        """Drops the unserved rest of the read-ahead block; the iterator steps back over it."""
        left = self._ahead_len - self._ahead_next
        self._ahead, self._ahead_next, self._ahead_len = {}, 0, 0
        if left:
            state = self._iterator.get_state()
            self._iterator.set_state({**state, 'next_index': state['next_index'] - left})

    def _gather(self, k: int) -> Optional[dict[str, np.ndarray]]:
        """The next `k` batches in one gather, the iterator advanced by `k`; None
        if the iterator's state has no batch number (then read batch by batch)."""
        state = self._iterator.get_state()
        first = state.get('next_index') if isinstance(state, Mapping) else None
        if not isinstance(first, int):
            return None
        idx = self._indices_many(first, k)
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
        A `Stream` of `{'x': float32 [B_local, ...], 'y': int32 [B_local]}`.

    Raises:
        ValueError: unknown spec keys, dataset, split or transform; a batch size
            larger than the data or not divisible by `process_count`.
    """
    spec = _spec_dict(spec)
    if 'batch_size' not in spec:
        raise ValueError(f'The data spec needs a "batch_size" (global); got keys {sorted(spec)}.')
    _local_batch_size(spec['batch_size'], process_index, process_count)  # Fail before reading.
    desc, arrays, num_classes = _resolve_arrays(spec, data_dir)
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
) -> list[dict[str, np.ndarray]]:
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
        A list of `{'x', 'y', 'mask'}` dicts of numpy arrays, all the same shape.

    Raises:
        ValueError: as for `make_stream`.
    """
    spec = _spec_dict(spec)
    batch_size = batch_size if batch_size is not None else spec.get('batch_size')
    if batch_size is None:
        raise ValueError('eval_batches needs a batch_size (argument or the spec\'s "batch_size").')
    local = _local_batch_size(batch_size, process_index, process_count)
    _, arrays, _ = _resolve_arrays(spec, data_dir)
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

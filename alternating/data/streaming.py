"""Streaming input: batches read by index from a split's ArrayRecord files.

For a split that does not fit host memory, a :class:`StreamingStream` never
loads the split: each batch's examples are read from the TFDS ArrayRecord
files by index (``tfds`` data source, random access), decoded with the same
conversion as the in-memory path (`arrays.to_arrays`) and passed through the
spec's per-example transforms.

Order and state: the stream *is* a :class:`~alternating.data.Stream` with
another way of fetching a batch. Global batch ``b`` holds the same positions
as in memory (the same ``_permutation``/``_indices``, a pure function of
(seed, batch number)), and the position is the same grain iterator over
batch numbers, so ``get_state()`` gives the same ``{'next_index': ...}`` a
memory stream gives at the same point, either restores into the other, and
the two give the same batches bit for bit (tested, across epochs and a
resume).

Read-ahead: the grain iterator maps batch numbers through the read in
``num_threads`` worker threads and keeps ``prefetch`` batches (at least 2)
in flight ahead of the one served; they are ready *on the host*, decoded,
when the step asks. Putting them on the device stays the executor's work
(the fused executor places a chunk while the previous one runs). A checkpoint
records only the batches served: the read-ahead is discarded and read again
on resume (the order is a pure function of the batch number).

Several processes: each process reads only its contiguous slice of every
global batch (`Stream._indices` with this process's offset), never another
process's records.

Choosing: the data-spec key ``read`` is ``'memory'``, ``'stream'`` or
``'auto'`` (the default). ``'auto'`` keeps the embedded datasets and array
dicts in memory and streams a named split whose size exceeds the host budget
(:func:`host_budget_bytes`, ``$ALTERNATING_HOST_DATA_MB``, default
``HOST_BUDGET_MB`` MiB), the size being the larger of its files' bytes and its
decoded float32 arrays.

Transforms: only per-example transforms (:data:`PER_EXAMPLE_TRANSFORMS`)
are applied batch by batch; a transform that needs the whole split (it drops
examples, or draws from the split's shape, like ``class_subset`` and
``noise``) is refused for a streamed split, naming it. Curricula need the
arrays too.

Evaluation: an eval set whose data spec streams (the same ``read`` rule)
gets :class:`EvalBatches`: the padded, masked batches of
``data.eval_batches`` (the same arrays, bit for bit), read by index each
time the set is evaluated, one batch ahead, never the whole split.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds

from alternating.data import arrays as arrays_lib
from alternating.data import builders
from alternating.data import pipeline
from alternating.data import transforms as transforms_lib

__all__ = [
    'HOST_BUDGET_ENV',
    'HOST_BUDGET_MB',
    'PER_EXAMPLE_TRANSFORMS',
    'EvalBatches',
    'StreamingStream',
    'choose_read',
    'eval_batches',
    'from_spec',
    'host_budget_bytes',
    'raw_decoder',
    'split_bytes',
]

HOST_BUDGET_ENV = 'ALTERNATING_HOST_DATA_MB'
HOST_BUDGET_MB = 1024
# Transforms whose result for one example depends on that example alone, so
# applying them to a batch gives that batch of the transformed split.
PER_EXAMPLE_TRANSFORMS = ('as_signal', 'flatten', 'permute', 'relabel', 'rotate', 'task_id')
MAX_THREADS = 4
log = logging.getLogger('alternating')


def host_budget_bytes() -> int:
    """The split size above which ``read: 'auto'`` streams (``$ALTERNATING_HOST_DATA_MB``)."""
    raw = os.environ.get(HOST_BUDGET_ENV)
    if raw is None or raw == '':
        return HOST_BUDGET_MB << 20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise ValueError(f'${HOST_BUDGET_ENV} must be a number of MiB >= 0, got {raw!r}.')
    return int(mb * 2 ** 20)


def split_bytes(b, split: str) -> int:
    """Bytes of a split held in memory, at least: max(files, decoded float32 arrays).

    A split expression counts its base splits whole (an upper bound).
    """
    keys = b.info.supervised_keys or ()
    shape = getattr(b.info.features[keys[0]], 'shape', None) if keys else None
    per_example = (4 * math.prod(shape) + 4
                   if shape is not None and all(isinstance(d, int) for d in shape) else 0)
    total = 0
    for name in arrays_lib.split_names(split):
        info = b.info.splits[name] if name in b.info.splits else None
        if info is not None:
            total += max(int(info.num_bytes), int(info.num_examples) * per_example)
    return total


def choose_read(spec: Mapping[str, Any], data_dir: Optional[str]) -> str:
    """``'memory'`` or ``'stream'`` for a checked data spec (see the module docstring)."""
    read = spec.get('read', 'auto')
    dataset = spec['dataset']
    if read == 'stream' and not isinstance(dataset, str):
        raise ValueError('Data spec "read": "stream" reads a named dataset\'s ArrayRecord files; '
                         'this spec\'s dataset is in-memory arrays. Use read="memory" or "auto".')
    if read != 'auto':
        return read
    if not isinstance(dataset, str) or dataset in builders.EMBEDDED_DATASETS:
        return 'memory'
    if spec.get('curriculum'):
        return 'memory'
    b = builders.builder(dataset, builders.resolve_data_dir(data_dir))
    if not b.is_prepared():
        return 'memory'  # that path names the dataset, the directory and the fix
    size, budget = split_bytes(b, spec.get('split') or 'train'), host_budget_bytes()
    if size <= budget:
        return 'memory'
    log.info('data: dataset %r split %r (%.1f MiB) is over the host budget (%.4g MiB, $%s); '
             'it is streamed from its files.', dataset, spec.get('split') or 'train',
             size / 2 ** 20, budget / 2 ** 20, HOST_BUDGET_ENV)
    return 'stream'


def check_transforms(specs: Sequence[Any], description: str) -> None:
    """Refuses a transform that needs the whole split, naming it."""
    for spec in specs:
        name = spec if isinstance(spec, str) else dict(
            spec.to_dict() if hasattr(spec, 'to_dict') else spec).get('name')
        if name not in PER_EXAMPLE_TRANSFORMS:
            raise ValueError(
                f'Transform {name!r} needs the whole split, so it cannot be applied to '
                f'{description}, which is streamed (data spec "read" is "stream", or "auto" '
                f'with a split over the host budget of {host_budget_bytes() / 2 ** 20:.4g} MiB, '
                f'${HOST_BUDGET_ENV}). Streamed splits take the per-example transforms '
                f'{list(PER_EXAMPLE_TRANSFORMS)}; use read="memory" for {name!r}.')


class StreamingStream(pipeline.Stream):
    """A :class:`~alternating.data.Stream` whose batches are read from a data source by index.

    Args:
      source: random access to the examples: ``len(source)`` and
        ``source.__getitems__(indices)`` (or ``source[i]``), e.g. a TFDS
        ArrayRecord data source.
      decode: ``decode(examples) -> {'x': ..., 'y': ...}`` numpy arrays.
      example_spec: ``{key: (shape, dtype)}`` of one decoded example, before
        the transforms.
      num_classes: classes of the source's labels (before the transforms).
      batch_size, seed, process_index, process_count, description: as for
        :class:`~alternating.data.Stream`.
      transforms: per-example transform specs, applied to each batch.
      num_threads: worker threads reading ahead (default: up to
        ``MAX_THREADS``, at most the CPU count).
      prefetch: batches read ahead of the one served (at least 2).
    """

    def __init__(self, source: Any, *, decode: Callable[[list], dict[str, np.ndarray]],
                 example_spec: Mapping[str, tuple[tuple[int, ...], Any]], batch_size: int,
                 seed: int, process_index: int = 0, process_count: int = 1,
                 num_classes: Optional[int] = None, transforms: Sequence[Any] = (),
                 description: str = 'a streamed split', num_threads: Optional[int] = None,
                 prefetch: Optional[int] = None):
        self._source, self._decode = source, decode
        self._transforms = list(transforms)
        check_transforms(self._transforms, description)
        self._init_order(len(source), batch_size=batch_size, seed=seed,
                         process_index=process_index, process_count=process_count,
                         num_classes=num_classes, description=description)
        zeros = _transformed_zeros(example_spec, num_classes, self._transforms)
        self.num_classes = transforms_lib.transformed_num_classes(num_classes, self._transforms)
        self.element_spec = {k: ((self.local_batch_size,) + v.shape[1:], v.dtype)
                             for k, v in zeros.items()}
        self.num_threads = int(num_threads or min(MAX_THREADS, os.cpu_count() or 1))
        self.prefetch = max(2, int(prefetch or 2 * self.num_threads))
        self._init_iterator(grain.ReadOptions(num_threads=self.num_threads,
                                              prefetch_buffer_size=self.prefetch))

    def _batch(self, batch: int) -> dict[str, np.ndarray]:
        idx = self._indices(batch)
        out = self._decode(arrays_lib.read_examples(self._source, idx.tolist()))
        return transforms_lib.apply_transforms(out, self._transforms) if self._transforms else out

    def next_batches(self, k: int) -> dict[str, np.ndarray]:
        """The next ``k`` batches stacked, from the read-ahead (exactly ``k`` ``next()``)."""
        batches = [next(self) for _ in range(k)]
        return {key: np.stack([b[key] for b in batches]) for key in self.element_spec}

    @property
    def arrays(self) -> Mapping[str, np.ndarray]:
        raise TypeError('A streamed split is never held in memory: it has no arrays; read its '
                        'batches with next().')

    def __repr__(self) -> str:
        return (f'StreamingStream(batch_size={self.batch_size}, local_batch_size='
                f'{self.local_batch_size}, num_examples={self.num_examples}, seed={self.seed}, '
                f'num_threads={self.num_threads}, prefetch={self.prefetch})')


def _transformed_zeros(example_spec: Mapping[str, tuple[tuple[int, ...], Any]],
                       num_classes: Optional[int], transforms: Sequence[Any]) -> dict:
    """Transformed zero examples, one of each class: the shapes after the transforms
    (nothing is read; a relabel mapping missing a class fails here, not in a worker)."""
    n = int(num_classes or 1)
    zeros = {k: np.zeros((n,) + tuple(shape), dtype) for k, (shape, dtype) in
             example_spec.items()}
    if 'y' in zeros:
        zeros['y'] = np.arange(n).astype(zeros['y'].dtype)
    return transforms_lib.apply_transforms(zeros, list(transforms))


class EvalBatches:
    """Every example of a streamed split once, in order, in padded masked batches.

    The batches of ``data.eval_batches`` (global batch ``b`` holds examples
    ``[b * B, (b + 1) * B)``, zero-padded, with a float32 ``mask``; each
    process its contiguous slice), read by index from ``source`` every time
    it is iterated, with the next batch read in a worker thread while the
    caller uses the current one: at most two batches in memory.
    """

    def __init__(self, source: Any, *, decode: Callable[[list], dict[str, np.ndarray]],
                 example_spec: Mapping[str, tuple[tuple[int, ...], Any]], batch_size: int,
                 process_index: int = 0, process_count: int = 1,
                 num_classes: Optional[int] = None, transforms: Sequence[Any] = ()):
        self._source, self._decode, self._transforms = source, decode, list(transforms)
        self._n, self._batch_size = len(source), int(batch_size)
        self._local = arrays_lib.local_batch_size(batch_size, process_index, process_count)
        self._offset = process_index * self._local
        zeros = _transformed_zeros(example_spec, num_classes, self._transforms)
        self._empty = {k: np.zeros((self._local,) + v.shape[1:], v.dtype) for k, v in zeros.items()}

    def __len__(self) -> int:
        return -(-self._n // self._batch_size)

    def __getitem__(self, i: Any) -> Any:
        """Batch ``i`` (read now), or a list of batches for a slice."""
        if isinstance(i, slice):
            return [self._batch(b) for b in range(len(self))[i]]
        return self._batch(range(len(self))[i])  # IndexError past the end

    def _batch(self, b: int) -> dict[str, np.ndarray]:
        start = b * self._batch_size + self._offset
        idx = list(range(min(start, self._n), min(start + self._local, self._n)))
        out = {k: v.copy() for k, v in self._empty.items()}
        out['mask'] = np.zeros(self._local, np.float32)
        if idx:
            got = self._decode(arrays_lib.read_examples(self._source, idx))
            if self._transforms:
                got = transforms_lib.apply_transforms(got, self._transforms)
            for k, v in got.items():
                out[k][:len(idx)] = v
            out['mask'][:len(idx)] = 1.0
        return out

    def __iter__(self):
        from concurrent import futures  # pylint: disable=g-import-not-at-top
        with futures.ThreadPoolExecutor(1) as pool:
            ahead = pool.submit(self._batch, 0) if len(self) else None
            for b in range(len(self)):
                batch = ahead.result()
                ahead = pool.submit(self._batch, b + 1) if b + 1 < len(self) else None
                yield batch


def raw_decoder(b, keys: tuple[str, str]) -> Optional[Callable[[list], dict[str, np.ndarray]]]:
    """A batch decoder of raw records for a raw-bytes tensor and an integer label, else None.

    TFDS decodes record by record through its generic feature tree (about
    30 us a record on the 2-core CPU, holding the GIL); for the common layout
    of a fixed-shape ``Tensor(encoding='bytes')`` beside an int64 label, the
    batch is one proto parse and one copy a record into arrays allocated
    once. The numbers are the bytes TFDS would decode, so the arrays are
    the same (tested against the in-memory path, which decodes through TFDS).
    """
    from tensorflow_datasets.proto import tf_example_pb2  # pylint: disable=g-import-not-at-top
    x_key, y_key = keys
    fx, fy = b.info.features[x_key], b.info.features[y_key]
    shape = tuple(fx.shape) if type(fx) is tfds.features.Tensor else ()
    if (type(fx) is not tfds.features.Tensor or fx.to_json_content().encoding != 'bytes'
            or not all(isinstance(d, int) for d in shape)
            or fy.get_serialized_info() != tfds.features.TensorInfo(shape=(), dtype=np.int64)):
        return None
    dtype = np.dtype(fx.np_dtype)

    def decode(records: list) -> dict[str, np.ndarray]:
        x = np.empty((len(records),) + shape, np.float32)  # as `arrays.to_arrays` converts
        y = np.empty(len(records), np.int32)
        flat = x.reshape(len(records), -1)
        for i, record in enumerate(records):
            f = tf_example_pb2.Example.FromString(record).features.feature
            flat[i] = np.frombuffer(f[x_key].bytes_list.value[0], dtype)
            y[i] = f[y_key].int64_list.value[0]
        return {'x': x, 'y': y}

    return decode


def from_spec(spec: Mapping[str, Any], *, seed: int, data_dir: Optional[str],
              process_index: int = 0, process_count: int = 1, **kw) -> StreamingStream:
    """The streaming stream of a checked data spec naming a prepared dataset.

    Raises:
      ValueError: an unknown or unprepared dataset (naming it, the directory
        and the command that prepares it), an unknown split, a transform that
        needs the whole split, a curriculum, a feature without a fixed shape.
    """
    name, split = spec['dataset'], spec.get('split') or 'train'
    desc = f'dataset {name!r} split {split!r}'
    if spec.get('curriculum'):
        raise ValueError(f'Data spec "curriculum" needs {desc} in memory; it cannot be '
                         'streamed. Use read="memory".')
    opened = _open(spec, data_dir, desc)
    return StreamingStream(
        opened.pop('source'), batch_size=spec['batch_size'], seed=seed,
        process_index=process_index, process_count=process_count, description=desc,
        **opened, **kw)


def eval_batches(spec: Mapping[str, Any], *, batch_size: int, data_dir: Optional[str],
                 process_index: int = 0, process_count: int = 1) -> EvalBatches:
    """A streamed split's evaluation batches (:class:`EvalBatches`), nothing read yet.

    Raises:
      ValueError: as :func:`from_spec`.
    """
    name, split = spec['dataset'], spec.get('split') or 'train'
    opened = _open(spec, data_dir, f'dataset {name!r} split {split!r}')
    return EvalBatches(opened.pop('source'), batch_size=batch_size, process_index=process_index,
                       process_count=process_count, **opened)


def _open(spec: Mapping[str, Any], data_dir: Optional[str], desc: str) -> dict[str, Any]:
    """The source, decoder, example spec, classes and transforms of a streamed split."""
    name, split = spec['dataset'], spec.get('split') or 'train'
    check_transforms(list(spec.get('transforms') or ()), desc)
    b, source = arrays_lib.open_split(name, split, builders.resolve_data_dir(data_dir))
    keys = arrays_lib.supervised_keys(b, name)
    shape = getattr(b.info.features[keys[0]], 'shape', None)
    if shape is None or not all(isinstance(d, int) for d in shape):
        raise ValueError(f'Feature {keys[0]!r} of {desc} has shape {shape}; streaming needs '
                         'a fixed shape (fixed-shape batches). Use read="memory".')
    specs = list(spec.get('transforms') or ())
    decode = lambda examples: arrays_lib.to_arrays(examples, b, keys)  # noqa: E731
    raw = getattr(source, 'data_source', None)  # the ArrayRecord records, undecoded
    fast = raw_decoder(b, keys) if raw is not None else None
    if fast is not None:
        source, decode = raw, fast
    return {'source': source, 'decode': decode,
            'example_spec': {'x': (tuple(shape), np.float32), 'y': ((), np.int32)},
            'num_classes': arrays_lib.num_classes_of(b, keys), 'transforms': specs}

"""Reading a dataset split into arrays, and data specs.

A split is read once from its TFDS ArrayRecord files (``tfds.data_source``,
no TensorFlow) into numpy arrays and cached; a data spec's transforms are
applied to them. See :mod:`alternating.data.pipeline` for the streams built
on top.
"""

import functools
from typing import Any, Mapping, Optional

import numpy as np
import tensorflow_datasets as tfds

from alternating.data import builders
from alternating.data import transforms as transforms_lib

SPEC_KEYS = ('dataset', 'split', 'batch_size', 'transforms', 'curriculum', 'read')
# How a training stream reads its split (spec key `read`): 'memory' reads it
# whole into arrays, 'stream' reads each batch from the ArrayRecord files by
# index (`alternating.data.streaming`), 'auto' streams a split over the host
# budget (`streaming.host_budget_bytes`).
READ_MODES = ('auto', 'memory', 'stream')

Arrays = dict[str, np.ndarray]
READ_CHUNK = 4096  # examples decoded at a time when a split is read whole


# --- Reading splits. -------------------------------------------------------------


def split_names(split: str) -> list[str]:
    """Base split names in a TFDS split expression ('train[:80%]+test')."""
    return [part.split('[')[0].strip() for part in split.split('+')]


def _to_numpy(examples: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.stack([np.asarray(e[key]) for e in examples])


def read_examples(source, indices: list[int]) -> list[dict[str, Any]]:
    """The examples at `indices` of a data source, in that order."""
    try:
        return list(source.__getitems__(indices))
    except TypeError:
        # `tfds.testing.mock_data` patches `__getitems__` with an unbound
        # function; reading one by one works under the mock and for real data.
        return [source[i] for i in indices]


def open_split(name: str, split: str, data_dir: str):
    """The builder and random-access data source of a split, nothing read yet.

    Raises:
        ValueError: unknown or unprepared dataset (naming it, the directory
            and how to prepare it), unknown split.
    """
    b = builders.builder(name, data_dir)
    known = list(b.info.splits)
    # Splits are unknown (empty) for an unprepared dataset and under
    # `tfds.testing.mock_data`; the data source then reports the problem.
    unknown = [s for s in split_names(split) if known and s not in known]
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
    return b, source


def supervised_keys(b, name: str) -> tuple[str, str]:
    keys = b.info.supervised_keys
    if not keys or len(keys) != 2 or not all(isinstance(k, str) for k in keys):
        raise ValueError(
            f'Dataset {name!r} has no (input, label) supervised keys (got '
            f'{keys!r}); its features are {list(b.info.features.keys())}. Use a '
            'supervised dataset, or pass arrays {"x": ..., "y": ...} as the '
            'spec\'s dataset.'
        )
    return keys


def to_arrays(examples: list[dict[str, Any]], b, keys: tuple[str, str]) -> Arrays:
    """Decoded examples as `{'x': float32, 'y': int32}` (uint8 images scaled to [0, 1]).

    The one conversion of both read paths (whole split, streamed batches), so
    they give the same numbers bit for bit.
    """
    x_key, y_key = keys
    x = _to_numpy(examples, x_key)
    if isinstance(b.info.features[x_key], tfds.features.Image) and x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0  # Same [0, 1] range as `digits`.
    return {'x': x.astype(np.float32, copy=False),
            'y': _to_numpy(examples, y_key).astype(np.int32, copy=False)}


def num_classes_of(b, keys: tuple[str, str]) -> Optional[int]:
    return getattr(b.info.features[keys[1]], 'num_classes', None)


@functools.lru_cache(maxsize=None)
def read_split(name: str, split: str, data_dir: str) -> tuple[Arrays, Optional[int]]:
    """Reads a split fully; returns read-only arrays and the number of classes."""
    b, source = open_split(name, split, data_dir)
    keys = supervised_keys(b, name)
    n, arrays = len(source), None
    # Decoded a chunk at a time into arrays allocated once: the peak is the
    # arrays plus a chunk, not the arrays plus every decoded example.
    for start in range(0, n, READ_CHUNK):
        part = to_arrays(read_examples(source, list(range(start, min(n, start + READ_CHUNK)))),
                         b, keys)
        if arrays is None:
            arrays = {k: np.empty((n,) + v.shape[1:], v.dtype) for k, v in part.items()}
        for k, v in part.items():
            arrays[k][start:start + len(v)] = v
    if arrays is None:  # an empty split
        arrays = to_arrays([], b, keys)
    for v in arrays.values():
        v.setflags(write=False)  # Cached: callers must not change it.
    return arrays, num_classes_of(b, keys)


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
    arrays, _ = read_split(name, split, builders.resolve_data_dir(data_dir))
    return dict(arrays)


def clear_cache() -> None:
    """Forgets the splits `load_arrays` has read (e.g. between tests)."""
    read_split.cache_clear()


# --- Specs. ------------------------------------------------------------------------


def spec_dict(spec: Any) -> dict[str, Any]:
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
    read = spec.get('read', 'auto')
    if read not in READ_MODES:
        raise ValueError(f'Data spec key "read" must be one of {list(READ_MODES)}, got {read!r}.')
    return dict(spec)


def resolve_arrays(
    spec: dict[str, Any], data_dir: Optional[str]
) -> tuple[str, Arrays, Optional[int]]:
    """Returns (description, transformed arrays, num_classes) for a spec."""
    dataset = spec['dataset']
    split = spec.get('split') or 'train'
    specs = list(spec.get('transforms') or ())
    if isinstance(dataset, str):
        arrays, num_classes = read_split(dataset, split, builders.resolve_data_dir(data_dir))
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


def local_batch_size(batch_size: Any, process_index: int, process_count: int) -> int:
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



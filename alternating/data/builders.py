"""TFDS builders for the embedded datasets, and `prepare` to find or build them.

Two datasets ship with the library because their sources are already installed
(no network access at run time, ever):

* `digits`: scikit-learn's handwritten digits (`sklearn.datasets.load_digits`),
  1,797 8x8 grey images with values 0..16. Features: `image` float32 (8, 8, 1)
  scaled to [0, 1], `label` ClassLabel(10). Splits: a stratified 80/20 split
  with `sklearn.model_selection.train_test_split(..., test_size=360,
  stratify=labels, random_state=0)`, giving `train` 1,437 and `test` 360.
* `mnist1d`: MNIST-1D (Greydanus, 2020) generated from the templates in the
  `mnist1d` package with its default arguments (`make_dataset(
  get_dataset_args())`: 5,000 signals of 40 samples, seed 42, first 4,000 for
  `train`, last 1,000 for `test`). Features: `signal` float32 (40, 1), `label`
  ClassLabel(10). The package's download path is never used.

Both are written as ArrayRecord files, so they are read with
`tfds.data_source` and need no TensorFlow. Any other name is looked up in the
TFDS catalogue and must already be prepared in the data directory.
"""

import contextlib
import os
import random
from typing import Optional

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

try:  # POSIX only; elsewhere preparation relies on TFDS's atomic rename alone.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    'EMBEDDED_DATASETS',
    'Digits',
    'Mnist1d',
    'builder',
    'not_found_error',
    'prepare',
    'resolve_data_dir',
    'write_generated',
]

_FILE_FORMAT = 'array_record'
_DIGITS_TEST_SIZE = 360
_DIGITS_SPLIT_SEED = 0
# TFDS derives `code_path` (where it looks for a download checksums file) from
# the module's package resources, and that lookup imports the optional
# `importlib_resources` package for builders outside TFDS. There are no
# downloads to check, so point it at this file and skip the lookup.
_CODE_PATH = epath.Path(__file__)


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder):
    """A 10-class dataset whose examples are made locally: one feature + a label.

    Subclasses set ``name``, ``FEATURE`` (the feature key), ``SHAPE``,
    ``DESCRIPTION`` and ``HOMEPAGE``, and return ``{split: (features,
    labels)}`` arrays from ``_arrays()``.
    """

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Initial release.'}
    code_path = _CODE_PATH
    FEATURE: str
    SHAPE: tuple[int, ...]
    DESCRIPTION: str
    HOMEPAGE: str

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                self.FEATURE: tfds.features.Tensor(shape=self.SHAPE, dtype=np.float32),
                'label': tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=(self.FEATURE, 'label'),
            homepage=self.HOMEPAGE,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Made locally; nothing is ever downloaded.
        return {split: self._generate_examples(x, y, keys)
                for split, (x, y, keys) in self._arrays().items()}

    def _generate_examples(self, features, labels, keys):
        features = np.asarray(features, np.float32).reshape((len(labels),) + self.SHAPE)
        for key, x, y in zip(keys, features, labels):
            yield int(key), {self.FEATURE: x, 'label': int(y)}

    def _arrays(self):
        raise NotImplementedError


class Digits(_EmbeddedBuilder):
    """scikit-learn's 8x8 handwritten digits as a TFDS dataset."""

    name = 'digits'
    FEATURE, SHAPE = 'image', (8, 8, 1)
    DESCRIPTION = ("scikit-learn's handwritten digits (UCI optdigits test set): "
                   '8x8 images scaled to [0, 1]; stratified 80/20 split, seed 0.')
    HOMEPAGE = 'https://archive.ics.uci.edu/dataset/80'

    def _arrays(self):
        from sklearn import datasets, model_selection

        digits = datasets.load_digits()
        indices = np.arange(len(digits.target))
        train, test = model_selection.train_test_split(
            indices,
            test_size=_DIGITS_TEST_SIZE,
            stratify=digits.target,
            random_state=_DIGITS_SPLIT_SEED,
        )
        images = (digits.images / 16.0).astype(np.float32)
        # The index into the original 1,797 images is a stable, unique key.
        return {split: (images[idx], digits.target[idx], idx)
                for split, idx in (('train', np.sort(train)), ('test', np.sort(test)))}


class Mnist1d(_EmbeddedBuilder):
    """MNIST-1D generated from the `mnist1d` package's templates."""

    name = 'mnist1d'
    FEATURE, SHAPE = 'signal', (40, 1)
    DESCRIPTION = ('MNIST-1D: 40-sample 1-D signals of the 10 digit templates, '
                   'generated with the default arguments (seed 42).')
    HOMEPAGE = 'https://github.com/greydanus/mnist1d'

    def _arrays(self):
        # Generated locally from the templates; never the package's download URL.
        from mnist1d import data as mnist1d_data

        # make_dataset reseeds the global `random` and `np.random` generators;
        # restore them so that building data does not change the caller's RNG.
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            data = mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
        return {'train': (data['x'], data['y'], np.arange(len(data['y']))),
                'test': (data['x_test'], data['y_test'], np.arange(len(data['y_test'])))}


EMBEDDED_DATASETS = {'digits': Digits, 'mnist1d': Mnist1d}


def resolve_data_dir(data_dir: Optional[str] = None) -> str:
    """Returns the data directory: argument > `$TFDS_DATA_DIR` > TFDS default.

    The environment is read at call time (not import time), so a process or a
    test may change `TFDS_DATA_DIR` after importing the library.
    """
    if data_dir:
        return os.fspath(data_dir)
    return os.environ.get('TFDS_DATA_DIR') or os.path.expanduser(
        os.path.join('~', 'tensorflow_datasets')
    )


@contextlib.contextmanager
def _file_lock(path: str):
    """Holds an exclusive advisory lock on `path` (no-op without fcntl)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def builder(name: str, data_dir: Optional[str] = None) -> tfds.core.DatasetBuilder:
    """Returns the TFDS builder for `name`, building embedded data on first use.

    A catalogue builder is returned whether or not its data is prepared; its
    `as_data_source` fails if it is not (see `prepare` to check up front).

    Args:
        name: `digits`, `mnist1d`, or the name (optionally `name:version` or
            `name/config`) of a TFDS catalogue dataset.
        data_dir: directory holding TFDS datasets; see `resolve_data_dir`.

    Returns:
        A builder whose `as_data_source(split)` reads the data.

    Raises:
        ValueError: if the name is neither embedded nor in the TFDS catalogue.
    """
    data_dir = resolve_data_dir(data_dir)
    if name in EMBEDDED_DATASETS:
        return _prepare_embedded(name, data_dir)
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        # TFDS's own message lists the whole catalogue; ours says what to do.
        raise not_found_error(name, data_dir, 'is unknown') from None


def not_found_error(name: str, data_dir: str, reason: str) -> ValueError:
    """Returns the error for a dataset that cannot be read from `data_dir`."""
    return ValueError(
        f'Dataset {name!r} {reason} in data_dir {data_dir!r}. The embedded '
        f'datasets, built on first use, are: {sorted(EMBEDDED_DATASETS)}. Any '
        'other name must be a TFDS catalogue dataset already prepared in the '
        f'data directory in the array_record format: `tfds build {name} '
        f'--data_dir={data_dir} --file_format=array_record` prepares it (on a '
        'machine with network access; copy the directory over otherwise); this '
        'library never downloads at run time.'
    )


def _prepare_embedded(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    b = EMBEDDED_DATASETS[name](data_dir=data_dir, file_format=_FILE_FORMAT)
    if b.is_prepared():
        return b
    os.makedirs(data_dir, exist_ok=True)
    # TFDS writes into an `incomplete.*` directory and renames it, so a reader
    # never sees partial data; the lock only saves a second process the work
    # of building the same data again.
    with _file_lock(os.path.join(data_dir, f'.{name}.prepare.lock')):
        b = EMBEDDED_DATASETS[name](data_dir=data_dir, file_format=_FILE_FORMAT)
        if not b.is_prepared():
            b.download_and_prepare(
                download_config=tfds.download.DownloadConfig(
                    download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS,
                )
            )
            b = EMBEDDED_DATASETS[name](data_dir=data_dir, file_format=_FILE_FORMAT)
    return b


def prepare(name: str, data_dir: Optional[str] = None) -> str:
    """Makes `name` readable from a data directory and returns that directory.

    Embedded datasets (`digits`, `mnist1d`) are built on first use; this is
    safe when several processes race. Catalogue datasets must be prepared.

    Args:
        name: dataset name; see `builder`.
        data_dir: explicit data directory; else `$TFDS_DATA_DIR`; else
            `~/tensorflow_datasets`.

    Returns:
        The data directory to pass to `tfds.data_source(name, data_dir=...)`.

    Raises:
        ValueError: if the name is unknown or a catalogue dataset is not
            prepared.
    """
    data_dir = resolve_data_dir(data_dir)
    b = builder(name, data_dir)
    if not b.is_prepared():
        raise not_found_error(name, data_dir, 'is not prepared')
    return data_dir


# --- Generated datasets (streaming tests and benchmarks). ---------------------------

_SHARD_BYTES = 256 << 20  # TFDS's own shards are of this order (128 MiB - 1 GiB)


class _Generated(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The `DatasetInfo` of a generated dataset (its features); the files are written below.

    Not registered: the dataset is read back by name from its files
    (`tfds.builder` falls back to the prepared directory), as a catalogue
    dataset would be.
    """

    VERSION = tfds.core.Version('1.0.0')
    code_path = _CODE_PATH
    SHAPE: tuple[int, ...] = ()
    NUM_CLASSES = 10

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description='Generated Gaussian class blobs (alternating.data.builders.write_generated).',
            features=tfds.features.FeaturesDict({
                # Raw bytes: written and read several times faster than a float list.
                'x': tfds.features.Tensor(shape=self.SHAPE, dtype=np.float32,
                                          encoding=tfds.features.Encoding.BYTES),
                'label': tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            }),
            supervised_keys=('x', 'label'),
        )

    def _split_generators(self, dl_manager):
        raise NotImplementedError('written by write_generated')

    def _generate_examples(self):
        raise NotImplementedError('written by write_generated')


def _blobs(seed: int, split_id: int, n: int, shape: tuple[int, ...], num_classes: int,
           chunk: int = 1024):
    """Chunks `(x, y)` of Gaussian class blobs, a pure function of (seed, split, index)."""
    dim = int(np.prod(shape))
    centers = np.random.default_rng(seed).normal(size=(num_classes, dim))
    for start in range(0, n, chunk):
        rng = np.random.default_rng((seed, split_id, start))
        y = rng.integers(0, num_classes, size=min(chunk, n - start))
        x = (centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32)
        yield x.reshape((len(y),) + shape), y


def write_generated(name: str, data_dir: str, sizes: dict[str, int], shape: tuple[int, ...], *,
                    num_classes: int = 10, seed: int = 0) -> int:
    """Writes a generated dataset (Gaussian class blobs) to `data_dir` as TFDS ArrayRecord.

    Read it back like a prepared catalogue dataset: `{'dataset': name}`.
    Features `x` float32 `shape`, `label` ClassLabel(`num_classes`); the
    examples are a pure function of (seed, split, index). The shards are
    written one after the other with the options TFDS's own ArrayRecord writer
    uses, and the `dataset_info.json` by TFDS, so memory stays flat whatever
    the size (TFDS's writer shuffles through TensorFlow above 1 GB). An
    already written dataset is kept.

    Args:
        name: the dataset's name (not an embedded or catalogue name).
        data_dir: the data directory.
        sizes: examples per split, e.g. `{'train': 20000, 'test': 500}`.
        shape: the feature shape of one example.
        num_classes: label classes.
        seed: the class centres and the noise.

    Returns:
        The bytes of the written split files.
    """
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    if name in EMBEDDED_DATASETS:
        raise ValueError(f'write_generated: {name!r} is an embedded dataset; choose another name.')
    shape = tuple(int(d) for d in shape)
    cls = type(f'Generated_{name}', (_Generated,), {
        'name': name, 'SHAPE': shape, 'NUM_CLASSES': int(num_classes)}, skip_registration=True)
    b = cls(data_dir=resolve_data_dir(data_dir), file_format=_FILE_FORMAT)
    final = epath.Path(b.data_dir)
    if not b.is_prepared():
        tmp = final.parent / f'incomplete.{final.name}.{os.getpid()}'
        tmp.mkdir(parents=True, exist_ok=True)
        per_shard = max(1, _SHARD_BYTES // (4 * int(np.prod(shape)) + 64))
        infos = []
        for split_id, (split, n) in enumerate(sorted(sizes.items())):
            template = tfds.core.ShardedFileTemplate(
                data_dir=tmp, dataset_name=name, split=split, filetype_suffix=_FILE_FORMAT)
            num_shards = max(1, -(-n // per_shard))
            lengths, nbytes, writer = [], 0, None
            for x, y in _blobs(seed, split_id, n, shape, num_classes):
                for xi, yi in zip(x, y):
                    if writer is None or lengths[-1] == per_shard:
                        if writer is not None:
                            writer.close()
                        path = template.sharded_filepath(shard_index=len(lengths),
                                                         num_shards=num_shards)
                        writer = array_record_module.ArrayRecordWriter(os.fspath(path),
                                                                       'group_size:1')
                        lengths.append(0)
                    record = b.info.features.serialize_example({'x': xi, 'label': int(yi)})
                    writer.write(record)
                    lengths[-1] += 1
                    nbytes += len(record)
            if writer is not None:
                writer.close()
            infos.append(tfds.core.SplitInfo(name=split, shard_lengths=lengths, num_bytes=nbytes,
                                             filename_template=template))
        b.info.set_splits(tfds.core.SplitDict(infos))
        b.info.write_to_directory(tmp)
        tmp.rename(final)  # readers never see a partial dataset
        b = cls(data_dir=resolve_data_dir(data_dir), file_format=_FILE_FORMAT)
    return int(sum(s.num_bytes for s in b.info.splits.values()))

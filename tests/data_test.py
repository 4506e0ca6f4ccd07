"""Tests for alternating.data: builders, transforms, streams, eval batches."""

import json
import os
import re
import threading
import time

import ml_collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from alternating import data
from alternating.data import transforms


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """A data directory with both embedded datasets built once for the module."""
    path = str(tmp_path_factory.mktemp('tfds'))
    for name in data.EMBEDDED_DATASETS:
        data.prepare(name, path)
    return path


@pytest.fixture(autouse=True)
def _fresh_cache():
    data.clear_cache()
    yield
    data.clear_cache()


def _arrays(n=10, num_classes=3):
    return {
        'x': np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1),
        'y': np.arange(n, dtype=np.int32) % num_classes,
    }


# --- Builders. -------------------------------------------------------------------


@pytest.mark.parametrize(
    'name, key, shape, sizes',
    [
        ('digits', 'image', (8, 8, 1), {'train': 1437, 'test': 360}),
        ('mnist1d', 'signal', (40, 1), {'train': 4000, 'test': 1000}),
    ],
)
def test_embedded_builders(data_dir, name, key, shape, sizes):
    for split, size in sizes.items():
        source = tfds.data_source(name, data_dir=data_dir, split=split, download=False)
        assert len(source) == size
        example = source[0]
        assert example[key].shape == shape and example[key].dtype == np.float32
        arrays = data.load_arrays(name, split, data_dir=data_dir)
        assert arrays['x'].shape == (size,) + shape and arrays['x'].dtype == np.float32
        assert arrays['y'].dtype == np.int32
        np.testing.assert_array_equal(np.unique(arrays['y']), np.arange(10))
    if name == 'digits':
        assert arrays['x'].min() == 0.0 and arrays['x'].max() == 1.0


def test_prepare_twice_reuses_data(data_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(data_dir) for f in fs if 'array_record' in f]
    mtimes = {f: os.path.getmtime(f) for f in files}
    start = time.perf_counter()
    assert data.prepare('digits', data_dir) == data_dir
    assert time.perf_counter() - start < 0.5
    assert {f: os.path.getmtime(f) for f in files} == mtimes


def test_prepare_races_build_once(tmp_path):
    results, errors = [], []

    def run():
        try:
            results.append(data.prepare('digits', str(tmp_path)))
        except Exception as e:  # pylint: disable=broad-except
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [str(tmp_path)] * 2
    assert len(data.load_arrays('digits', 'test', data_dir=str(tmp_path))['y']) == 360
    assert not [p for p in os.listdir(tmp_path / 'digits') if p.startswith('incomplete')]


def test_tfds_data_dir_env_is_honoured(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv('TFDS_DATA_DIR', data_dir)
    assert data.resolve_data_dir() == data_dir
    assert data.prepare('digits') == data_dir
    assert len(data.load_arrays('digits', 'test')['y']) == 360
    assert data.resolve_data_dir(str(tmp_path)) == str(tmp_path)  # Argument wins.
    monkeypatch.delenv('TFDS_DATA_DIR')
    assert data.resolve_data_dir() == os.path.expanduser(os.path.join('~', 'tensorflow_datasets'))


def test_catalogue_dataset_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=24):
        arrays = data.load_arrays('mnist', 'train', data_dir=str(tmp_path))
        assert arrays['x'].shape == (24, 28, 28, 1) and arrays['x'].dtype == np.float32
        assert 0.0 <= arrays['x'].min() and arrays['x'].max() <= 1.0
        assert arrays['y'].dtype == np.int32 and arrays['y'].max() < 10
        stream = data.make_stream({'dataset': 'mnist', 'batch_size': 8}, seed=0, data_dir=str(tmp_path))
        batch = next(stream)
    assert batch['x'].shape == (8, 28, 28, 1) and batch['y'].shape == (8,)
    assert stream.num_classes == 10


def test_loaded_arrays_cannot_corrupt_the_cache(data_dir):
    arrays = data.load_arrays('digits', 'test', data_dir=data_dir)
    with pytest.raises(ValueError, match='read-only'):
        arrays['x'][0] = 5.0
    arrays['y'] = None
    assert data.load_arrays('digits', 'test', data_dir=data_dir)['y'] is not None


def test_unknown_dataset_errors(tmp_path):
    embedded = r"\['digits', 'mnist1d'\]"
    with pytest.raises(ValueError, match=r"'no_such_dataset_xyz' is unknown.*" + embedded + '.*never download'):
        data.load_arrays('no_such_dataset_xyz', data_dir=str(tmp_path))
    with pytest.raises(ValueError, match=r"'mnist' is not prepared in data_dir .*" + embedded):
        data.prepare('mnist', str(tmp_path))
    with pytest.raises(ValueError, match=r"'mnist' is not prepared"):
        data.load_arrays('mnist', data_dir=str(tmp_path))


def test_unknown_split_error(data_dir):
    with pytest.raises(ValueError, match=r"no split 'validation'; valid splits: \['test', 'train'\]"):
        data.load_arrays('digits', 'validation', data_dir=data_dir)


def test_spec_errors(data_dir):
    spec = {'dataset': 'digits', 'batch_size': 8}
    valid_keys = r"\['dataset', 'split', 'batch_size', 'transforms', 'curriculum', 'read'\]"
    with pytest.raises(ValueError, match=r"Unknown data spec keys \['shuffle'\]; valid keys: " + valid_keys):
        data.make_stream({**spec, 'shuffle': True}, seed=0, data_dir=data_dir)
    too_big = {**spec, 'split': 'test', 'batch_size': 2000}
    with pytest.raises(ValueError, match=r"batch_size 2000 is larger than dataset 'digits' split 'test'.*360"):
        data.make_stream(too_big, seed=0, data_dir=data_dir)
    with pytest.raises(ValueError, match='not divisible by process_count 3'):
        data.make_stream(spec, seed=0, data_dir=data_dir, process_count=3)
    with pytest.raises(ValueError, match=r"Unknown transform 'spin'; valid names: \[.*'permute'.*\]"):
        data.make_stream({**spec, 'transforms': [{'name': 'spin'}]}, seed=0, data_dir=data_dir)


def test_spec_from_config_dict(data_dir):
    config = ml_collections.ConfigDict({
        'dataset': 'digits',
        'split': 'test',
        'batch_size': 16,
        'transforms': [{'name': 'class_subset', 'classes': [3, 5], 'relabel': True}, 'flatten'],
    })
    stream = data.make_stream(config, seed=1, data_dir=data_dir)
    batch = next(stream)
    assert batch['x'].shape == (16, 64) and set(batch['y']) <= {0, 1}
    test_labels = data.load_arrays('digits', 'test', data_dir=data_dir)['y']
    assert stream.num_classes == 2 and stream.num_examples == np.isin(test_labels, [3, 5]).sum()


# --- Transforms. -------------------------------------------------------------------


def test_transform_argument_errors():
    # Every registered name: the built-ins, plus any a config registered in this process
    # (configs/imp.py registers 'pad_to' when a test imports it).
    builtin = {'as_signal', 'class_subset', 'flatten', 'noise', 'permute', 'relabel', 'rotate',
               'task_id'}
    assert builtin <= set(transforms.transform_names())
    names = re.escape(str(transforms.transform_names()))
    with pytest.raises(ValueError, match=r"Unknown transform 'spin'; valid names: " + names):
        transforms.apply_transforms(_arrays(), [{'name': 'spin'}])
    with pytest.raises(ValueError, match=r"'permute': unknown arguments \[\], missing arguments \['seed'\]"):
        transforms.apply_transforms(_arrays(), [{'name': 'permute'}])
    with pytest.raises(ValueError, match=r"Transform 'flatten': unknown arguments \['k'\]"):
        transforms.apply_transforms(_arrays(), [{'name': 'flatten', 'k': 1}])
    with pytest.raises(ValueError, match=r'"rotate" needs images of shape \(H, W, C\)'):
        signals = {'x': np.zeros((2, 5)), 'y': np.zeros(2, np.int32)}
        transforms.apply_transforms(signals, [{'name': 'rotate', 'k': 1}])
    with pytest.raises(ValueError, match='"relabel": mapping must'):
        transforms.apply_transforms(_arrays(), [{'name': 'relabel', 'mapping': [0, 1]}])


def test_class_subset():
    arrays = _arrays(n=7, num_classes=3)  # y = 0 1 2 0 1 2 0
    out = transforms.apply_transforms(arrays, [{'name': 'class_subset', 'classes': [2, 0]}])
    np.testing.assert_array_equal(out['y'], [0, 2, 0, 2, 0])
    np.testing.assert_array_equal(out['x'], arrays['x'][[0, 2, 3, 5, 6]])
    relabelled = [{'name': 'class_subset', 'classes': [2, 0], 'relabel': True}]
    out = transforms.apply_transforms(arrays, relabelled)
    np.testing.assert_array_equal(out['y'], [1, 0, 1, 0, 1])
    assert transforms.transformed_num_classes(3, relabelled) == 2
    assert transforms.transformed_num_classes(3, [{'name': 'class_subset', 'classes': [2, 0]}]) == 3


def test_permute_is_a_fixed_bijection():
    arrays = _arrays()
    out = transforms.apply_transforms(arrays, [{'name': 'permute', 'seed': 7}])
    assert out['x'].shape == arrays['x'].shape
    flat_in, flat_out = arrays['x'].reshape(10, -1), out['x'].reshape(10, -1)
    perm = np.argsort(flat_out[0])  # Row 0 holds 0..3, so this recovers the permutation.
    np.testing.assert_array_equal(np.sort(flat_out, axis=1), flat_in)
    np.testing.assert_array_equal(flat_out, flat_in[:, np.argsort(perm)])
    again = transforms.apply_transforms(arrays, [{'name': 'permute', 'seed': 7}])
    np.testing.assert_array_equal(again['x'], out['x'])
    seeds = [transforms.apply_transforms(arrays, [{'name': 'permute', 'seed': s}])['x'] for s in range(5)]
    assert any(not np.array_equal(seeds[0], s) for s in seeds[1:])
    np.testing.assert_array_equal(arrays['x'], _arrays()['x'])  # Input untouched.


def test_rotate():
    arrays = _arrays()
    one = transforms.apply_transforms(arrays, [{'name': 'rotate', 'k': 1}])
    np.testing.assert_array_equal(one['x'][0, :, :, 0], [[1, 3], [0, 2]])
    four = transforms.apply_transforms(arrays, [{'name': 'rotate', 'k': 4}])
    np.testing.assert_array_equal(four['x'], arrays['x'])


def test_flatten_relabel_noise():
    arrays = _arrays(n=4, num_classes=4)
    out = transforms.apply_transforms(arrays, ['flatten', {'name': 'relabel', 'mapping': [0, 1, 0, 1]}])
    assert out['x'].shape == (4, 4)
    np.testing.assert_array_equal(out['y'], [0, 1, 0, 1])
    assert transforms.transformed_num_classes(10, [{'name': 'relabel', 'mapping': [0, 1] * 5}]) == 2
    noisy = transforms.apply_transforms(arrays, [{'name': 'noise', 'std': 0.1, 'seed': 0}])
    assert noisy['x'].dtype == np.float32 and 0 < np.abs(noisy['x'] - arrays['x']).max() < 1


def test_as_signal_reads_images_row_by_row():
    arrays = _arrays()
    out = transforms.apply_transforms(arrays, ['as_signal'])
    assert out['x'].shape == (len(arrays['x']), 4, 1)
    np.testing.assert_array_equal(out['x'][0, :, 0], arrays['x'][0, :, :, 0].reshape(-1))


# --- Streams. ------------------------------------------------------------------------


def _take(stream, k):
    return [next(stream) for _ in range(k)]


def test_stream_shapes_and_determinism(data_dir):
    spec = {'dataset': 'digits', 'batch_size': 32}
    stream = data.make_stream(spec, seed=0, data_dir=data_dir)
    assert iter(stream) is stream
    assert stream.batch_size == stream.local_batch_size == 32
    assert stream.num_examples == 1437 and stream.num_classes == 10
    assert stream.element_spec == {'x': ((32, 8, 8, 1), np.float32), 'y': ((32,), np.int32)}
    a = _take(stream, 50)  # Crosses an epoch boundary (1437 / 32 = 44.9).
    b = _take(data.make_stream(spec, seed=0, data_dir=data_dir), 50)
    c = _take(data.make_stream(spec, seed=1, data_dir=data_dir), 50)
    for x, y in zip(a, b):
        assert x['x'].shape == (32, 8, 8, 1) and x['x'].dtype == np.float32
        assert x['y'].shape == (32,) and x['y'].dtype == np.int32
        np.testing.assert_array_equal(x['x'], y['x'])
    assert not np.array_equal(a[0]['y'], c[0]['y'])


def test_every_example_once_per_epoch():
    n, batch = 10, 4
    stream = data.make_stream({'dataset': {'x': np.arange(n), 'y': np.arange(n)}, 'batch_size': batch}, seed=3)
    order = np.concatenate([b['y'] for b in _take(stream, 10)])  # 40 = 4 epochs.
    epochs = order.reshape(4, n)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(n))
    assert len({tuple(e) for e in epochs}) > 1  # Each epoch is reshuffled.


@pytest.mark.parametrize('consumed', [1, 2, 4])  # Batch 2 straddles two epochs.
def test_stream_resume_is_exact(consumed):
    spec = {'dataset': _arrays(n=10), 'batch_size': 4}
    stream = data.make_stream(spec, seed=5)
    _take(stream, consumed)
    state = json.loads(json.dumps(stream.get_state()))
    expected = _take(stream, 6)
    resumed = data.make_stream(spec, seed=5)
    resumed.set_state(state)
    for x, y in zip(expected, _take(resumed, 6)):
        np.testing.assert_array_equal(x['x'], y['x'])
        np.testing.assert_array_equal(x['y'], y['y'])


def test_set_state_rejects_other_stream():
    stream = data.make_stream({'dataset': _arrays(), 'batch_size': 4}, seed=0)
    other = data.make_stream({'dataset': _arrays(), 'batch_size': 4}, seed=1)
    with pytest.raises(ValueError, match='does not match this stream'):
        other.set_state(stream.get_state())


def test_two_processes_slice_the_global_batch():
    spec = {'dataset': _arrays(n=10), 'batch_size': 4}
    whole = _take(data.make_stream(spec, seed=2), 7)
    parts = [_take(data.make_stream(spec, seed=2, process_index=i, process_count=2), 7) for i in range(2)]
    assert parts[0][0]['x'].shape == (2, 2, 2, 1)
    for step, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([p[step]['x'] for p in parts]), batch['x'])
    # A state saved with one process count resumes with another.
    single = data.make_stream(spec, seed=2)
    _take(single, 3)
    half = data.make_stream(spec, seed=2, process_index=1, process_count=2)
    half.set_state(single.get_state())
    np.testing.assert_array_equal(next(half)['y'], next(single)['y'][2:])


@pytest.mark.parametrize('batch_size,process_count', [(4, 1), (6, 2), (10, 1), (4, 2)])
def test_next_batches_is_k_nexts_in_one_gather(batch_size, process_count):
    """A fused chunk's read: the same batches and the same state as k next() calls."""
    from alternating.data import curriculum
    arrays = _arrays(n=10)
    for index in range(process_count):
        kw = dict(batch_size=batch_size, seed=5, process_index=index, process_count=process_count)
        for make in (lambda: data.Stream(arrays, **kw),
                     lambda: curriculum.CurriculumStream(arrays, scores=np.arange(1.0, 11.0), **kw)):
            many, one = make(), make()
            one.read_ahead = 1  # the reference: grain's iterator, one batch at a time
            for k in (1, 7, 3, 12):  # chunks spanning several epochs
                got = many.next_batches(k)
                want = _take(one, k)
                for key in arrays:
                    np.testing.assert_array_equal(got[key], np.stack([b[key] for b in want]))
                assert many.get_state() == one.get_state()


@pytest.mark.parametrize('process_count', [1, 2])
def test_read_ahead_serves_the_batches_and_state_of_one_by_one_reads(process_count):
    """next() reads a block ahead; batches, states, resumes and chunk reads are unchanged."""
    arrays = _arrays(n=10)
    for index in range(process_count):
        kw = dict(batch_size=4, seed=7, process_index=index, process_count=process_count)
        ahead, ref = data.Stream(arrays, **kw), data.Stream(arrays, **kw)
        ref.read_ahead = 1
        assert ahead.read_ahead == data.pipeline.READ_AHEAD_MAX  # 10 tiny examples
        for i in range(150):  # the block (64 batches) is read three times
            got, want = next(ahead), next(ref)
            for key in arrays:
                np.testing.assert_array_equal(got[key], want[key])
            assert ahead.get_state() == ref.get_state()
            if i in (5, 70):  # a chunk read from inside a block
                got, want = ahead.next_batches(5), ref.next_batches(5)
                np.testing.assert_array_equal(got['x'], want['x'])
                assert ahead.get_state() == ref.get_state()
            if i in (3, 100):  # a resume from a state saved inside a block
                resumed, twin = data.Stream(arrays, **kw), data.Stream(arrays, **kw)
                resumed.set_state(json.loads(json.dumps(ahead.get_state())))
                twin.read_ahead = 1
                twin.set_state(ref.get_state())
                for got, want in zip(_take(resumed, 70), _take(twin, 70)):
                    np.testing.assert_array_equal(got['y'], want['y'])
        ahead.set_state(ref.get_state())  # set_state drops the block read ahead
        np.testing.assert_array_equal(next(ahead)['x'], next(ref)['x'])


def test_read_ahead_sizes():
    big = {'x': np.zeros((64, 256, 256), np.float32), 'y': np.zeros(64, np.int32)}  # 256 KiB each
    assert data.Stream(big, batch_size=1, seed=0).read_ahead == 3  # under 1 MiB of batches
    assert data.Stream(big, batch_size=8, seed=0).read_ahead == 1  # a batch over 1 MiB
    from alternating.data import curriculum
    # A subclass's own order may depend on when a batch is read (a scorer at
    # each epoch): read batch by batch.
    assert curriculum.CurriculumStream(_arrays(n=10), batch_size=4, seed=0).read_ahead == 1


def test_next_batches_respects_a_subclass_own_next():
    class Doubled(data.Stream):  # overrides __next__ only: read batch by batch
        def __next__(self):
            b = super().__next__()
            return {k: v * 2 for k, v in b.items()}

    s, ref = Doubled(_arrays(), batch_size=4, seed=1), data.Stream(_arrays(), batch_size=4, seed=1)
    np.testing.assert_array_equal(s.next_batches(3)['x'], 2 * np.stack([b['x'] for b in _take(ref, 3)]))


# --- Evaluation batches. ----------------------------------------------------------------


def test_eval_batches_cover_every_example_once():
    arrays = _arrays(n=10)
    batches = data.eval_batches({'dataset': arrays}, batch_size=4)
    assert len(batches) == 3
    assert all(b['x'].shape == (4, 2, 2, 1) and b['mask'].dtype == np.float32 for b in batches)
    mask = np.concatenate([b['mask'] for b in batches])
    np.testing.assert_array_equal(mask, [1] * 10 + [0] * 2)
    x = np.concatenate([b['x'] for b in batches])[mask == 1]
    np.testing.assert_array_equal(x, arrays['x'])
    parts = [data.eval_batches({'dataset': arrays, 'batch_size': 4}, process_index=i, process_count=2) for i in range(2)]
    for b, p0, p1 in zip(batches, *parts):
        assert p0['y'].shape == (2,)
        np.testing.assert_array_equal(np.concatenate([p0['mask'], p1['mask']]), b['mask'])
        np.testing.assert_array_equal(np.concatenate([p0['y'], p1['y']]), b['y'])


def test_eval_batches_on_digits(data_dir):
    batches = data.eval_batches({'dataset': 'digits', 'split': 'test'}, batch_size=128, data_dir=data_dir)
    assert len(batches) == 3 and sum(b['mask'].sum() for b in batches) == 360

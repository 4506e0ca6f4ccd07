"""Cyclical curriculum stream: subset sizes per epoch, sampling by score,
self-paced scores, exact resume, bad input."""

import json

import numpy as np
import pytest

from alternating import data
from alternating.data import CurriculumStream

N, B = 100, 5


def _arrays():
    return {"x": np.arange(N, dtype=np.float32)[:, None], "y": np.zeros(N, np.int32)}


def _ids(batch):
    return batch["x"][:, 0].astype(int).tolist()


def _take(stream, k):
    return [_ids(next(stream)) for _ in range(k)]


def test_epoch_sizes_cycle_quarter_half_full_half():
    s = CurriculumStream(_arrays(), batch_size=B, seed=0, sampling="top",
                         scores=np.arange(1, N + 1))
    assert [s.epoch_size(e) for e in range(6)] == [25, 50, 100, 50, 25, 50]
    batches = _take(s, 5 + 10 + 20 + 10 + 5)
    epochs = [batches[:5], batches[5:15], batches[15:35], batches[35:45], batches[45:50]]
    for ep, want in zip(epochs, [25, 50, 100, 50, 25]):
        ids = [i for b in ep for i in b]
        assert len(ids) == len(set(ids)) == want  # without replacement within an epoch
        # 'top': the highest scores, i.e. the largest indices here.
        assert sorted(ids) == list(range(N - want, N))
    assert epochs[0] != epochs[4]  # same subset, a different order


def test_monotone_curriculum_holds_the_last_size():
    s = CurriculumStream(_arrays(), batch_size=B, seed=0, sizes=[0.25, 0.5, 1.0], cycle=False)
    assert [s.epoch_size(e) for e in range(6)] == [25, 50, 100, 100, 100, 100]
    assert s._locate(5 + 10 + 20 + 20 + 3) == (4, 3)


def test_weighted_sampling_is_gumbel_top_k_by_score():
    scores = np.linspace(0.01, 1.0, N)
    s = CurriculumStream(_arrays(), batch_size=B, seed=3, scores=scores)
    got = sorted(i for b in _take(s, 5) for i in b)
    rng = np.random.default_rng((3, 0, 1))
    keys = np.log(scores) + rng.gumbel(size=N)
    assert got == sorted(np.argsort(-keys)[:25].tolist())
    # Over seeds, easy examples are drawn far more often than hard ones.
    hits = np.zeros(N)
    for seed in range(40):
        st = CurriculumStream(_arrays(), batch_size=B, seed=seed, scores=scores)
        hits[st.subset(0)] += 1
    assert hits[-20:].mean() > 3 * hits[:20].mean()


def test_self_paced_scorer_is_called_when_each_epoch_begins():
    calls = []

    def scorer(epoch):
        calls.append(epoch)
        return np.where(np.arange(N) < 50, 1.0, 1e-6) if epoch % 2 else np.ones(N)

    s = CurriculumStream(_arrays(), batch_size=B, seed=0, scorer=scorer, sampling="top",
                         sizes=[0.5])
    b = _take(s, 20)
    assert calls == [0, 1]
    assert sorted(i for x in b[10:] for i in x) == list(range(50))  # epoch 1: the easy half


def test_resume_is_exact_across_score_changes():
    def scorer(epoch):
        return 1.0 + np.cos(np.arange(N) * (epoch + 1))

    straight = CurriculumStream(_arrays(), batch_size=B, seed=5, scorer=scorer)
    want = _take(straight, 60)
    first = CurriculumStream(_arrays(), batch_size=B, seed=5, scorer=scorer)
    head = _take(first, 22)  # inside epoch 2 (batches 15..34)
    state = json.loads(json.dumps(first.get_state()))
    resumed = CurriculumStream(_arrays(), batch_size=B, seed=5, scorer=scorer)
    resumed.set_state(state)
    assert head + _take(resumed, 38) == want
    other = CurriculumStream(_arrays(), batch_size=B, seed=5, scorer=scorer, sizes=[1.0])
    with pytest.raises(ValueError, match="does not match this stream"):
        other.set_state(state)


def test_two_processes_split_each_global_batch():
    full = _take(CurriculumStream(_arrays(), batch_size=4, seed=1), 30)
    halves = [_take(CurriculumStream(_arrays(), batch_size=4, seed=1, process_index=i,
                                     process_count=2), 30) for i in range(2)]
    assert [a + b for a, b in zip(*halves)] == full


def test_data_spec_builds_a_curriculum_stream():
    spec = {"dataset": _arrays(), "batch_size": B,
            "curriculum": {"sizes": [0.25, 1.0], "sampling": "top",
                           "scores": list(range(1, N + 1))}}
    s = data.make_stream(spec, seed=0)
    assert isinstance(s, CurriculumStream)
    assert sorted(i for b in _take(s, 5) for i in b) == list(range(75, 100))


@pytest.mark.parametrize("kw,match", [
    ({"sizes": [0.25, 1.5]}, r"sizes=\[0\.25, 1\.5\]: give fractions of the data in \(0, 1\]"),
    ({"sizes": []}, "give fractions"),
    ({"scores": [1.0] * 3}, "3 scores for 100 examples"),
    ({"scores": [-1.0] * N}, r"finite and > 0"),
    ({"sampling": "random"}, r"sampling='random'; valid: \['weighted', 'top'\]"),
])
def test_bad_curriculum_input(kw, match):
    with pytest.raises(ValueError, match=match):
        CurriculumStream(_arrays(), batch_size=B, seed=0, **kw)


def test_bad_curriculum_spec_key():
    with pytest.raises(ValueError, match=r"unknown keys \['size'\]; valid keys: \['sizes'"):
        data.make_stream({"dataset": _arrays(), "batch_size": B,
                          "curriculum": {"size": [0.5]}}, seed=0)

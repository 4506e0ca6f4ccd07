import collections
import json

import pytest

from alternating import schedules

PHASES = ["a", "b", "c"]


def test_single():
    s = schedules.make_schedule({"name": "single", "phase": "b"}, PHASES)
    assert s.plan(0, 4) == ["b"] * 4 and s.next_phase(99) == "b"


def test_alternate_pattern_and_blocks():
    s = schedules.make_schedule({"name": "alternate", "pattern": ["a", "b"]}, PHASES)
    assert [s.next_phase(i) for i in range(5)] == ["a", "b", "a", "b", "a"]
    s = schedules.make_schedule({"name": "alternate", "pattern": [["a", 3], ["c", 1]]}, PHASES)
    assert s.plan(0, 9) == ["a", "a", "a", "c", "a", "a", "a", "c", "a"]
    assert s.plan(5, 3) == [s.next_phase(i) for i in range(5, 8)]
    # A plain dict keeps its order in Python.
    s = schedules.Alternate(PHASES, {"c": 2, "a": 1})
    assert s.plan(0, 4) == ["c", "c", "a", "c"]


def test_weighted_is_deterministic_per_seed_and_matches_proportions():
    spec = {"name": "weighted", "weights": {"a": 0.6, "b": 0.3, "c": 0.1}}
    s1 = schedules.make_schedule(spec, PHASES, seed=3)
    s2 = schedules.make_schedule(spec, PHASES, seed=3)
    s3 = schedules.make_schedule(spec, PHASES, seed=4)
    n = 20000
    seq = s1.plan(0, n)
    assert seq == s2.plan(0, n)
    assert seq != s3.plan(0, n)
    counts = collections.Counter(seq)
    for p, w in spec["weights"].items():
        assert abs(counts[p] / n - w) < 0.015
    # next_phase agrees with plan, across draw blocks, in any call order.
    fresh = schedules.make_schedule(spec, PHASES, seed=3)
    for step in (19999, 0, 12345, 4096, 4095):
        assert fresh.next_phase(step) == seq[step]


def test_sequential_stages():
    s = schedules.make_schedule({"name": "sequential", "stages": [["a", 2], ["b", 3], ["c", 1]]}, PHASES)
    assert s.plan(0, 8) == ["a", "a", "b", "b", "b", "c", "c", "c"]
    assert s.expected_steps(6) == {"a": 2, "b": 3, "c": 1}


def test_state_dict_is_json_and_refuses_a_different_schedule():
    s = schedules.make_schedule({"name": "weighted", "weights": {"a": 1, "b": 1}}, PHASES, seed=1)
    d = json.loads(json.dumps(s.state_dict()))
    schedules.make_schedule({"name": "weighted", "weights": {"a": 1, "b": 1}}, PHASES, seed=1).load_state_dict(d)
    other = schedules.make_schedule({"name": "weighted", "weights": {"a": 1, "b": 2}}, PHASES, seed=1)
    with pytest.raises(ValueError, match="different schedule"):
        other.load_state_dict(d)


@pytest.mark.parametrize("spec,match", [
    ({"name": "round_robin"}, r"not a schedule; valid names: \['aioli', 'alternate', 'interpolated', 'loss_shift', "
                          r"'multiplicative_weights', 'sasr', 'sequential', 'single', 'ucb', 'weighted'\]"),
    ({"name": "alternate", "pattern": ["a", "z"]}, r"unknown phase\(s\) \['z'\]; the phases are \['a', 'b', 'c'\]"),
    ({"name": "single", "phase": "z"}, r"unknown phase\(s\) \['z'\]"),
    ({"name": "weighted", "weights": {"a": -1, "b": 1}}, "must be finite, >= 0"),
    ({"name": "weighted", "weights": {"q": 1}}, r"unknown phase\(s\) \['q'\]"),
    ({"name": "alternate", "pattern": [["a", 0]]}, "integer >= 1"),
    ({"name": "alternate", "patern": ["a"]}, r"unknown argument\(s\) \['patern'\]; valid: \['pattern'\]"),
    ({"name": "sequential"}, "stages="),
])
def test_bad_schedules(spec, match):
    with pytest.raises(ValueError, match=match):
        schedules.make_schedule(spec, PHASES)

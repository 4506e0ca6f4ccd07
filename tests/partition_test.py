import numpy as np
import pytest

from alternating import partition

PARAMS = {"stem_a": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)},
          "trunk": {"kernel": np.zeros((3, 3))},
          "embed_a": np.zeros(3)}


def test_first_matching_rule_wins():
    got = partition.resolve([("stem_a/.*", True), ("embed_.*", None), (".*", True)],
                            partition.flatten(PARAMS))
    assert got == {"stem_a/kernel": True, "stem_a/bias": True, "trunk/kernel": True,
                   "embed_a": False}


def test_none_rules_train_everything():
    assert all(partition.resolve(None, partition.flatten(PARAMS)).values())


def test_uncovered_parameter_is_an_error_naming_it():
    with pytest.raises(partition.PartitionError, match=r"phase 'x'.*no rule covers.*trunk/kernel"):
        partition.resolve([("stem_a/.*", True), ("embed_a", None)], partition.flatten(PARAMS),
                          where="phase 'x'")


def test_rule_matching_nothing_is_an_error_listing_paths():
    with pytest.raises(partition.PartitionError, match=r"\['stem_b/\.\*'\] match no parameter.*stem_a/kernel"):
        partition.resolve([("stem_b/.*", True), (".*", None)], partition.flatten(PARAMS))


def test_regex_must_match_the_whole_path():
    with pytest.raises(partition.PartitionError, match="match no parameter"):
        partition.resolve([("stem", True), (".*", None)], partition.flatten(PARAMS))


@pytest.mark.parametrize("rules,match", [
    ("trunk", "list of"),
    ([("trunk/.*", "yes")], "valid values"),
    ([("trunk/.*",)], r"\(regex, True\|None\) pair"),
    ([("(", True)], "invalid"),
])
def test_malformed_rules(rules, match):
    with pytest.raises(partition.PartitionError, match=match):
        partition.resolve(rules, partition.flatten(PARAMS))


def test_split_merge_round_trip_keeps_the_same_arrays():
    trainable = partition.resolve([("trunk/.*", True), (".*", None)], partition.flatten(PARAMS))
    own, rest = partition.split(PARAMS, trainable)
    assert list(partition.flatten(own)) == ["trunk/kernel"]
    assert set(rest) == {"stem_a/kernel", "stem_a/bias", "embed_a"}
    merged = partition.merge(own, rest)
    for path, leaf in partition.flatten(PARAMS).items():
        assert partition.flatten(merged)[path] is leaf


def test_table_counts_parameters_per_phase():
    parts = {"a": partition.resolve([("stem_a/.*", True), (".*", None)], partition.flatten(PARAMS)),
             "b": partition.resolve([("trunk/.*", True), (".*", None)], partition.flatten(PARAMS))}
    text = partition.table(PARAMS, parts)
    last = [l for l in text.splitlines() if l.startswith("total trained")][0].split()
    assert last == ["total", "trained", "21", "9", "9"]
    assert "frozen in every phase: 1" in text

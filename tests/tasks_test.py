"""Task streams (alternating/data/tasks.py): splits, seeds, the config fields, errors."""

import numpy as np
import pytest

from alternating import data as data_lib
from alternating.data import tasks


def _spec(**kw):
    return {"kind": "class", "dataset": "digits", "num_tasks": 5, "classes_per_task": 2, **kw}


def _arrays(spec):
    """Every example of a task's data spec, in order."""
    batches = data_lib.eval_batches(spec, batch_size=512)
    keep = np.concatenate([b["mask"] for b in batches]) > 0
    return {k: np.concatenate([b[k] for b in batches])[keep] for k in batches[0] if k != "mask"}


@pytest.mark.parametrize("order", [None, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
def test_class_splits_are_disjoint_cover_the_classes_and_keep_global_labels(order):
    stream = tasks.make_tasks(_spec(order=order, seed=3))
    groups = [t.classes for t in stream.tasks]
    assert sorted(c for g in groups for c in g) == list(range(10))
    assert all(len(g) == 2 for g in groups)
    if order is not None:
        assert groups == [(9, 8), (7, 6), (5, 4), (3, 2), (1, 0)]
    else:  # drawn from the seed: the same seed gives the same order, another a different one
        assert groups == [t.classes for t in tasks.make_tasks(_spec(seed=3)).tasks]
        assert groups != [t.classes for t in tasks.make_tasks(_spec(seed=4)).tasks]
    base = {split: _arrays({"dataset": "digits", "split": split})["y"]
            for split in ("train", "test")}
    for task in stream.tasks:
        for spec in (task.train, task.test):
            got = _arrays({k: v for k, v in spec.items() if k != "batch_size"})
            assert set(np.unique(got["y"])) == set(task.classes)  # global labels
            assert len(got["y"]) == np.isin(base[spec["split"]], task.classes).sum()
        assert task.train["transforms"][-1] == {"name": "class_subset",
                                                "classes": list(task.classes)}


def test_nested_order_and_per_task_steps():
    stream = tasks.make_tasks(_spec(order=[[0, 1, 2], [3], [4, 5]], num_tasks=3,
                                    classes_per_task=None, steps_per_task=[5, 6, 7]))
    assert [t.classes for t in stream.tasks] == [(0, 1, 2), (3,), (4, 5)]
    assert stream.schedule() == {"name": "sequential",
                                 "stages": [["task_0", 5], ["task_1", 6], ["task_2", 7]]}
    assert stream.total_steps == 18


def test_task_incremental_batches_carry_their_task_and_the_masked_loss():
    stream = tasks.make_tasks(_spec(kind="task", order=list(range(10))))
    for task in stream.tasks:
        got = _arrays(task.test)
        assert got["task"].dtype == np.int32 and set(got["task"]) == {task.index}
        stream_ = data_lib.make_stream(task.train, seed=0)
        assert set(next(stream_)["task"]) == {task.index}
    phase = stream.phases()["task_2"]
    assert phase["loss"] == tasks.TASK_MASKED_LOSS
    assert phase["loss_kwargs"] == {"classes": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]}
    assert phase["data"] == "task_2" and phase["params"] == [(".*", True)]


def test_config_fields_of_a_class_stream():
    stream = tasks.make_tasks(_spec(steps_per_task=10, batch_size=16, name="t"))
    assert stream.names == ["t0", "t1", "t2", "t3", "t4"]
    assert set(stream.data()) == set(stream.names)
    assert all(d["batch_size"] == 16 and d["split"] == "train" for d in stream.data().values())
    phases = stream.phases(optimizer={"name": "sgd", "lr": 0.1})
    assert {p["loss"] for p in phases.values()} == {"classification"}
    assert phases["t3"]["optimizer"] == {"name": "sgd", "lr": 0.1}
    evals = stream.evals(batch_size=64)
    assert evals["t1_test"] == {"data": stream.tasks[1].test, "phase": "t1", "batch_size": 64}
    ev = stream.evaluator(dense_every=5)
    assert ev["name"] == "alternating.continual.matrix:AccuracyMatrix" and ev["dense_every"] == 5
    assert [t["name"] for t in ev["tasks"]] == stream.names


def test_permuted_tasks_are_seeded_and_differ():
    spec = {"kind": "domain", "dataset": "digits", "num_tasks": 3, "seed": 1}
    a, b = tasks.make_tasks(spec), tasks.make_tasks(spec)
    other = tasks.make_tasks({**spec, "seed": 2})
    xs = [_arrays(t.test)["x"] for t in a.tasks]
    assert all(np.array_equal(x, _arrays(t.test)["x"]) for x, t in zip(xs, b.tasks))
    assert not np.array_equal(xs[0], xs[1]) and not np.array_equal(xs[1], xs[2])
    assert not np.array_equal(xs[0], _arrays(other.tasks[0].test)["x"])
    base = _arrays({"dataset": "digits", "split": "test"})
    for x in xs:  # the same examples and labels, each image's pixels permuted
        assert np.array_equal(np.sort(x.reshape(len(x), -1), 1),
                              np.sort(base["x"].reshape(len(x), -1), 1))
    assert all(t.classes == tuple(range(10)) for t in a.tasks)
    assert a.phases()["task_0"]["loss"] == "classification"


def test_rotated_tasks():
    stream = tasks.make_tasks({"kind": "domain", "dataset": "digits", "num_tasks": 4,
                               "domain": "rotate"})
    assert [t.train["transforms"] for t in stream.tasks] == [
        [{"name": "rotate", "k": k}] for k in range(4)]
    x0, x1 = (_arrays(t.test)["x"] for t in stream.tasks[:2])
    assert np.array_equal(np.rot90(x0, 1, axes=(1, 2)), x1)


def test_base_transforms_come_first_and_change_the_class_count():
    parity = [0, 1] * 5
    stream = tasks.make_tasks({"kind": "class", "dataset": "digits", "num_tasks": 2,
                               "transforms": [{"name": "relabel", "mapping": parity}]})
    assert stream.num_classes == 2
    assert stream.tasks[1].train["transforms"][0] == {"name": "relabel", "mapping": parity}
    arrays = {"x": np.zeros((6, 3), np.float32), "y": np.array([0, 1, 2, 3, 4, 5])}
    assert tasks.make_tasks({"kind": "class", "dataset": arrays, "num_tasks": 3}).num_classes == 6


@pytest.mark.parametrize("spec, match", [
    (_spec(order=[[0, 1], [1, 2]], num_tasks=2, classes_per_task=None),
     r"tasks\.order: class 1 is in task 0 and in task 1; tasks' classes must not overlap"),
    (_spec(order=[0, 1, 2, 3, 3, 5, 6, 7, 8, 9]),
     r"tasks\.order: class 3 is in task 1 and in task 2"),
    (_spec(order=[0, 1, 2, 3, 4, 5, 6, 7, 8, 12]),
     r"tasks\.order: task 4 has class 12, which the dataset lacks; valid classes are the "
     r"integers 0\.\.9"),
    (_spec(num_tasks=4, classes_per_task=3),
     r"tasks\.classes_per_task: num_tasks \* classes_per_task = 4 \* 3 = 12 > 10, the classes "
     r"of the dataset"),
    (_spec(num_tasks=11, classes_per_task=None),
     r"tasks\.num_tasks: 11 tasks .* give num_tasks <= 10"),
    (_spec(order=[0, 1, 2]),
     r"tasks\.order: has 3 classes, but num_tasks \* classes_per_task = 10"),
    (_spec(kind="joint"),
     r"tasks\.kind: 'joint' is not a kind .* valid kinds: \['class', 'task', 'domain'\]"),
    (_spec(clases_per_task=2), r"tasks: unknown field\(s\) \['clases_per_task'\]; valid fields: "),
    (_spec(num_tasks=2.5), r"tasks\.num_tasks: 2\.5 is not an integer"),
    (_spec(steps_per_task=[1, 2]), r"tasks\.steps_per_task: lists 2 values for 5 tasks"),
    ({"kind": "domain", "dataset": "digits", "num_tasks": 2, "order": [0, 1]},
     r"tasks\.order: applies to kinds 'class' and 'task' only"),
    ({"kind": "domain", "dataset": "digits", "num_tasks": 5, "domain": "rotate"},
     r"tasks\.num_tasks: 5 rotated tasks .* give num_tasks <= 4"),
    ({"kind": "domain", "dataset": "digits", "num_tasks": 2, "domain": "blur"},
     r"tasks\.domain: 'blur' is not a domain shift; valid: \['permute', 'rotate'\]"),
    (_spec(dataset="no_such_dataset"), r"tasks\.dataset: 'no_such_dataset' is not a dataset"),
])
def test_bad_task_specs_are_clear_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        tasks.make_tasks(spec)

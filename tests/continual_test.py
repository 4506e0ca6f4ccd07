"""Continual learning: the accuracy-matrix metrics, the evaluator end to end, the masked loss."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alternating
from alternating import metrics
from alternating.continual import AccuracyMatrix, continual_metrics, plot_matrix
from alternating.continual.losses import task_masked_classification
from alternating.models import Model, MLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import continual as continual_config  # noqa: E402

# A hand-made 3-task matrix: R[i][j] = accuracy on task j after training task i.
R = [[0.90, 0.10, 0.20],
     [0.95, 0.80, 0.30],
     [0.50, 0.70, 0.95]]
B = [0.10, 0.15, 0.05]  # before training


def test_metrics_equal_a_hand_computation():
    got = continual_metrics(R, B)
    assert got["acc"] == pytest.approx((0.50 + 0.70 + 0.95) / 3)
    # BWT: mean over j < T-1 of R[T-1][j] - R[j][j] = ((0.5 - 0.9) + (0.7 - 0.8)) / 2
    assert got["bwt"] == pytest.approx(-0.25)
    # FWT: mean over j >= 1 of R[j-1][j] - b_j = ((0.1 - 0.15) + (0.3 - 0.05)) / 2
    assert got["fwt"] == pytest.approx(0.10)
    # Forgetting: max over earlier rows minus the last: task 0 (0.95 - 0.5), task 1 (0.8 - 0.7)
    assert got["forgetting"] == pytest.approx((0.45 + 0.10) / 2)
    assert got["learning_accuracy"] == pytest.approx([0.90, 0.80, 0.95])


def test_metrics_of_a_partial_stream_and_without_an_initial_row():
    got = continual_metrics(R[:2], B)  # two of three tasks trained
    assert got["acc"] == pytest.approx(np.mean(R[1]))
    assert got["bwt"] == pytest.approx(0.95 - 0.90)
    assert got["forgetting"] == pytest.approx(0.90 - 0.95)
    assert got["fwt"] == pytest.approx(((0.10 - 0.15) + (0.30 - 0.05)) / 2)
    one = continual_metrics(R[:1])
    assert one["bwt"] is None and one["forgetting"] is None and one["fwt"] is None
    assert continual_metrics(R)["fwt"] is None
    with pytest.raises(ValueError, match="4 rows for 3 tasks"):
        continual_metrics(R + [R[0]])
    with pytest.raises(ValueError, match="initial has 2 values for 3 tasks"):
        continual_metrics(R, B[:2])


def test_state_dict_round_trip_and_summary(tmp_path):
    specs = [{"name": f"t{i}", "data": {"dataset": "digits", "split": "test"}} for i in range(3)]
    ev = AccuracyMatrix(specs)
    assert ev.when == {"start": True, "phase_end": ["t0", "t1", "t2"], "every": 0}
    ev.load_state_dict({"tasks": ["t0", "t1", "t2"], "replicas": {"0": {
        "initial": B, "rows": [{"after": f"t{i}", "step": 10 * (i + 1), "acc": R[i]}
                               for i in range(3)], "dense": []}}})
    ev._workdir = str(tmp_path)
    out = ev.summary()["continual"]
    assert out["matrix"] == R and out["initial"] == B and out["row_steps"] == [10, 20, 30]
    assert out["bwt"] == pytest.approx(-0.25) and out["forgetting"] == pytest.approx(0.275)
    assert (tmp_path / "accuracy_matrix.png").stat().st_size > 0
    again = AccuracyMatrix(specs)
    again.load_state_dict(json.loads(json.dumps(ev.state_dict())))
    assert again.summary() == {"continual": out}
    with pytest.raises(ValueError, match=r"the checkpoint's matrix has tasks \['t0', 't1', 't2'\]"):
        AccuracyMatrix(specs[:2]).load_state_dict(ev.state_dict())
    # Rows out of task order: only the mean of the last row is defined.
    ev.load_state_dict({"replicas": {"0": {"initial": None, "rows": [
        {"after": "t1", "step": 5, "acc": R[0]}], "dense": []}}})
    out = ev.summary()["continual"]
    assert out["acc"] == pytest.approx(np.mean(R[0])) and out["bwt"] is None


def test_plot_matrix_writes_a_png(tmp_path):
    path = plot_matrix(tmp_path, R[:2], tasks=["a", "b", "c"], initial=B, filename="m.png")
    assert path == tmp_path / "m.png" and path.read_bytes()[:4] == b"\x89PNG"


def test_task_masked_loss_is_the_softmax_over_the_task_classes():
    model = Model(MLP(features=(5,)), {"x": (3,)})
    params = model.init(jax.random.PRNGKey(0))
    batch = {"x": jax.random.normal(jax.random.PRNGKey(1), (4, 3)),
             "y": jnp.array([1, 3, 4, 0]), "task": jnp.array([0, 1, 1, 0])}
    classes = [[0, 1], [3, 4]]
    loss, aux = task_masked_classification(model, classes=classes)(params, batch, None, {})
    logits = model.apply(params, batch["x"])
    want_ce, want_acc = [], []
    for i in range(4):
        cls = classes[int(batch["task"][i])]
        sub = logits[i, jnp.array(cls)]
        want_ce.append(optax.softmax_cross_entropy_with_integer_labels(
            sub, cls.index(int(batch["y"][i]))))
        want_acc.append(cls[int(jnp.argmax(sub))] == int(batch["y"][i]))
    assert float(loss) == pytest.approx(float(np.mean(want_ce)), rel=1e-5)
    assert float(aux["accuracy"]) == pytest.approx(np.mean(want_acc))
    with pytest.raises(ValueError, match="the model has 5 outputs, but the tasks use class ids "
                                         "up to 6"):
        task_masked_classification(model, classes=[[0], [6]])(params, batch, None, {})
    with pytest.raises(ValueError, match=r"classes\[1\] must be a non-empty list"):
        task_masked_classification(model, classes=[[0], []])


def _train(config, workdir, **overrides):
    alternating.train_and_evaluate(config, str(workdir), progress=False, print_fn=None,
                                   **overrides)
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def split_digits(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("split_digits")
    return workdir, _train(continual_config.get_config("split_digits,smoke"), workdir)


def test_split_digits_smoke_learns_each_task_and_forgets_the_earlier_ones(split_digits):
    workdir, results = split_digits
    cl = results["continual"]
    r = np.asarray(cl["matrix"])
    assert r.shape == (5, 5) and len(cl["initial"]) == 5
    assert cl["row_steps"] == [60, 120, 180, 240, 300]
    assert min(np.diag(r)) > 0.8  # each task learned right after training it
    assert max(r[-1, :4]) < 0.2  # class-incremental fine-tuning forgets the earlier tasks
    assert cl["bwt"] < -0.6 and cl["acc"] < 0.3
    want = continual_metrics(cl["matrix"], cl["initial"])
    assert {k: cl[k] for k in want} == want
    assert results["compiles"]["eval:accuracy_matrix"] == 1  # one function for every task
    rows = [row for row in metrics.read_jsonl(workdir / "metrics.jsonl")
            if row.get("set") == "accuracy_matrix"]
    assert [row["step"] for row in rows] == [0, 60, 120, 180, 240, 300]
    assert rows[2]["task_1"] == pytest.approx(r[1, 1])
    assert rows[2]["mean_seen"] == pytest.approx(r[1, :2].mean())
    assert (workdir / "accuracy_matrix.png").exists()


def test_a_resume_mid_stream_gives_the_same_matrix(split_digits, tmp_path):
    _, whole = split_digits
    config = continual_config.get_config("split_digits,smoke")
    config.total_steps = 120  # stops after task 1, with a checkpoint
    first = _train(config, tmp_path)
    assert np.asarray(first["continual"]["matrix"]).shape == (2, 5)
    config.total_steps = 300
    resumed = _train(config, tmp_path)
    assert resumed["resumed_from_step"] == 120
    assert resumed["continual"] == whole["continual"]


def test_task_incremental_smoke_with_dense_rows(tmp_path):
    config = continual_config.get_config("split_digits_task,smoke")
    config.total_steps = 120  # the first two tasks
    config.evaluators[0]["dense_every"] = 30
    cl = _train(config, tmp_path)["continual"]
    r = np.asarray(cl["matrix"])
    assert r.shape == (2, 5) and min(np.diag(r)) > 0.8
    assert r[1, 0] > 0.8  # told the task, the model keeps task 0 through task 1
    assert cl["dense"]["steps"] == [30, 60, 90, 120]
    assert np.asarray(cl["dense"]["accuracy"]).shape == (4, 5)
    dense = [row for row in metrics.read_jsonl(tmp_path / "metrics.jsonl")
             if row.get("set") == "accuracy_matrix_dense"]
    assert [row["step"] for row in dense] == cl["dense"]["steps"]


def test_tasks_naming_a_missing_phase_fail_before_training(tmp_path):
    config = continual_config.get_config("split_digits,smoke")
    config.evaluators[0]["tasks"][0]["phase"] = "nope"
    with pytest.raises(ValueError, match=r"phase_end names unknown phase\(s\) \['nope'\]"):
        _train(config, tmp_path)


def test_vectorized_seeds_keep_a_matrix_per_seed(split_digits, tmp_path):
    _, single = split_digits
    config = continual_config.get_config("split_digits,smoke")
    config.num_seeds = 2
    cl = _train(config, tmp_path)["continual"]
    assert len(cl["per_seed"]) == 2
    np.testing.assert_allclose(cl["per_seed"][0]["matrix"], single["continual"]["matrix"],
                               atol=1e-6)
    np.testing.assert_allclose(cl["matrix"], np.mean([s["matrix"] for s in cl["per_seed"]], 0))
    assert cl["acc"] == pytest.approx(np.mean([s["acc"] for s in cl["per_seed"]]))

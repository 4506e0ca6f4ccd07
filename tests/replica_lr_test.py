"""Learning-rate replicas: one program trains (seed, learning rate) pairs; each equals its run."""

import json

import jax
import numpy as np
import pytest
from executor_test import _loss, _tiny_run

import alternating
from alternating import parallel, sweep, sweep_programs


def _params_close(stacked, i, single):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=2e-5, atol=1e-6),
                 jax.device_get(stacked.params), jax.device_get(single.params))


def test_each_lr_replica_equals_the_run_at_its_learning_rate(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    # Replicas: (seed 3, lr a 1e-2), (seed 3, lr a 3e-2), (seed 4, lr a 3e-2); b's lr kept.
    stacked = _tiny_run(tmp_path / "grid", mesh=mesh, num_seeds=3, executor="fused",
                        chunk_steps=6, total_steps=12, replica_seeds=[3, 3, 4],
                        replica_lr={"a": [1e-2, 3e-2, 3e-2]})
    with open(tmp_path / "grid" / "results.json") as f:
        res = json.load(f)
    assert res["seeds"] == [3, 3, 4]
    for i, (seed, lr) in enumerate([(3, 1e-2), (3, 3e-2), (4, 3e-2)]):
        phases = [
            alternating.Phase("a", loss=_loss, data="digits",
                              params=[("Dense_0/.*", True), (".*", None)],
                              optimizer={"name": "adam", "lr": lr}),
            alternating.Phase("b", loss=_loss, data="digits",
                              params=[("Dense_1/.*", True), (".*", None)],
                              optimizer={"name": "sgd", "lr": 0.1}),
        ]
        single = _tiny_run(tmp_path / f"single{i}", mesh=mesh, seed=seed, total_steps=12,
                           phases=phases)
        _params_close(stacked, i, single)
    # The replicas really differ: same seed, other lr; same lr, other seed.
    p = jax.device_get(stacked.params)
    leaf = jax.tree.leaves(p)[0]
    assert not np.allclose(leaf[0], leaf[1]) and not np.allclose(leaf[1], leaf[2])


def test_lr_replicas_scale_a_schedule_and_report_their_lr(tmp_path):
    """A warm-up + cosine schedule keeps its shape; the logged lr is the replica's."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    spec = {"name": "adamw", "lr": 1e-2, "schedule": "cosine", "warmup_steps": 2,
            "weight_decay": 1e-3}

    def phases(lr):
        return [alternating.Phase("a", loss=_loss, data="digits",
                                  params=[("Dense_0/.*", True), (".*", None)],
                                  optimizer={**spec, "lr": lr}),
                alternating.Phase("b", loss=_loss, data="digits",
                                  params=[("Dense_1/.*", True), (".*", None)],
                                  optimizer={**spec, "lr": lr / 10})]

    stacked = _tiny_run(tmp_path / "grid", mesh=mesh, phases=phases(1e-2), num_seeds=2,
                        executor="fused", chunk_steps=6, total_steps=12, log_every_steps=12,
                        replica_seeds=[0, 0], replica_lr={"a": [1e-2, 5e-3], "b": [1e-3, 5e-4]})
    single = _tiny_run(tmp_path / "one", mesh=mesh, phases=phases(5e-3), total_steps=12,
                       log_every_steps=12)
    _params_close(stacked, 1, single)
    rows = [json.loads(line) for line in open(tmp_path / "grid" / "metrics.jsonl")]
    one = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    lr = {r["phase"]: r for r in rows if r.get("split") == "train"}
    lr1 = {r["phase"]: r["lr"] for r in one if r.get("split") == "train"}
    for phase in ("a", "b"):
        assert lr[phase]["lr_seed1"] == pytest.approx(lr1[phase], rel=1e-6)
        assert lr[phase]["lr_seed0"] == pytest.approx(2 * lr1[phase], rel=1e-6)


@pytest.mark.parametrize("kw,match", [
    (dict(num_seeds=1, replica_lr={"a": [1e-2]}), r"replica_lr is set but num_seeds=1"),
    (dict(num_seeds=2, replica_lr={"a": [1e-2]}), r"replica_lr\['a'\].*give num_seeds=2"),
    (dict(num_seeds=2, replica_lr={"a": [1e-2, 0.0]}), r"finite learning rates > 0"),
    (dict(num_seeds=2, replica_lr={"c": [1e-2, 1e-3]}), r"names phase\(s\) \['c'\]; valid "
                                                          r"phases: \['a', 'b'\]"),
    (dict(num_seeds=2, replica_seeds=[0]), r"replica_seeds=\[0\]; give num_seeds=2 integers"),
    (dict(num_seeds=2, replica_seeds=[0, -1]), r"integers >= 0"),
])
def test_replica_option_errors_name_the_option(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _tiny_run(tmp_path, executor="fused", **kw)


TINY = {
    "seed": 0, "total_steps": 12, "log_every_steps": 6, "nan_policy": "raise",
    "model": {"name": "mlp", "features": [16, 10], "input_shape": [64]},
    "data": {"digits": {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]}},
    "phases": {"a": {"loss": "classification", "data": "digits", "params": [[".*", True]],
                     "optimizer": {"name": "adam", "lr": 1e-3}}},
    "schedule": {"name": "single", "phase": "a"},
    "eval": {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                      "phase": "a", "batch_size": 360}},
}
GRID = {"phases.a.optimizer.lr": [1e-3, 1e-2, 3e-2]}


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("results.json")}


def test_a_grid_sweep_trains_an_lr_grid_in_one_program_and_matches_apart(tmp_path):
    grid = sweep.run(TINY, tmp_path / "grid", grid=GRID, seeds=2, vectorize="grid",
                     metric="test/accuracy", print_fn=None)
    programs = list((tmp_path / "grid" / "grid_programs").iterdir())
    assert len(programs) == 1  # 3 cells x 2 seeds: one program of 6 replicas
    assert json.loads((programs[0] / "results.json").read_text())["num_seeds"] == 6
    assert all(r["shared_program"] and r["error"] is None for r in grid["runs"])
    apart = sweep.run(TINY, tmp_path / "apart", grid=GRID, seeds=2, vectorize="off",
                      print_fn=None)
    key = lambda r: (r["cell"], r["seed"])
    for g, a in zip(sorted(grid["runs"], key=key), sorted(apart["runs"], key=key)):
        assert key(g) == key(a)
        assert g["final_eval"]["test"]["loss"] == pytest.approx(a["final_eval"]["test"]["loss"],
                                                                rel=1e-4)
    losses = {r["cell"]: r["final_eval"]["test"]["loss"] for r in grid["runs"] if r["seed"] == 0}
    assert len(set(losses.values())) == 3  # each cell trained at its own rate
    # Resumable: a rerun trains nothing; a lost run is retrained alone.
    before = _mtimes(tmp_path / "grid")
    sweep.run(TINY, tmp_path / "grid", grid=GRID, seeds=2, vectorize="grid", print_fn=None)
    assert _mtimes(tmp_path / "grid") == before
    (tmp_path / "grid" / "lr=0.01" / "seed1" / "results.json").unlink()
    again = sweep.run(TINY, tmp_path / "grid", grid=GRID, seeds=2, vectorize="grid",
                      print_fn=None)
    assert len(list((tmp_path / "grid" / "grid_programs").iterdir())) == 1  # not a group of 1
    redo = [r for r in again["runs"] if (r["cell"], r["seed"]) == ("lr=0.01", 1)][0]
    assert redo["final_eval"]["test"]["loss"] == pytest.approx(
        [r for r in grid["runs"] if (r["cell"], r["seed"]) == ("lr=0.01", 1)][0]
        ["final_eval"]["test"]["loss"], rel=1e-4)


def test_only_cells_that_differ_in_learning_rates_share_a_program():
    a = sweep.apply_overrides(TINY, {})
    assert sweep_programs.lr_phases(a, sweep.apply_overrides(TINY, {GRID_PATH: 0.1})) == {"a"}
    assert sweep_programs.lr_phases(a, sweep.apply_overrides(TINY, {"phases.a.optimizer.name":
                                                                    "sgd"})) is None
    assert sweep_programs.lr_phases(a, sweep.apply_overrides(TINY, {"total_steps": 24})) is None
    cells = sweep.expand(cells=[{}, {GRID_PATH: 0.1}, {"total_steps": 24}, {GRID_PATH: 0.2}])
    configs = {c.id: sweep.apply_overrides(TINY, c.overrides) for c in cells}
    groups = sweep_programs.groups(cells, configs, lambda cfg: True)
    assert [[c.id for c in g] for g in groups] == [["base", "lr=0.1", "lr=0.2"]]
    assert sweep_programs.groups(cells, configs, lambda cfg: False) == []
    with pytest.raises(ValueError, match=r"vectorize='lr'; valid: \['auto', 'on', 'off', "
                                         r"'grid'\]"):
        sweep.run(TINY, "unused", grid=GRID, vectorize="lr", print_fn=None)


GRID_PATH = "phases.a.optimizer.lr"


def test_split_results_gives_each_run_its_own_replica_entry_and_handles_no_eval_sets(tmp_path):
    program = tmp_path / "program"
    program.mkdir()
    entries = [{"acc": 0.5, "matrix": [[0.5]]}, {"acc": 0.7, "matrix": [[0.7]]}]
    (program / "results.json").write_text(json.dumps({
        "wall_time_s": 10.0, "final_eval_per_seed": [], "seeds": [0, 0], "num_seeds": 2,
        "steps_per_phase_per_seed": [{"a": 3}, {"a": 3}], "compiles": {"fused:3": 1},
        "continual": {"acc": 0.6, "matrix": [[0.6]], "per_seed": entries}}))
    runs = [tmp_path / "r0", tmp_path / "r1"]
    for r in runs:
        r.mkdir()
    sweep_programs.split_results(program, runs, [0, 0], {"program": "p"})
    for i, r in enumerate(runs):
        one = json.loads((r / "results.json").read_text())
        # As a single run writes it: its own matrix, not the replicas' mean or list.
        assert one["continual"] == entries[i] and one["final_eval"] == {}
        assert one["vectorized"] == {"program": "p", "wall_time_s": 10.0}
        assert one["wall_time_s"] == 5.0 and one["steps_per_phase"] == {"a": 3}

"""Sweeps: cells and ids, refusals before any run, resume, vectorized blocks, the verdict table.

Most tests replace ``train_and_evaluate`` with a fake that writes the
``results.json`` a real run would (one seed, or a ``num_seeds`` block), so
they test the sweep's bookkeeping in milliseconds; one test runs the command
line end to end on a tiny config.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import alternating
from alternating import experiment, sweep, sweep_main, sweep_report, verdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAT = ["flatten"]
TINY = {
    "seed": 0, "total_steps": 12, "log_every_steps": 6, "nan_policy": "raise",
    "model": {"name": "mlp", "features": [16, 10], "input_shape": [64]},
    "data": {"digits": {"dataset": "digits", "batch_size": 32, "transforms": FLAT}},
    "phases": {"a": {"loss": "classification", "data": "digits", "params": [[".*", True]],
                     "optimizer": {"name": "adam", "lr": 1e-3}}},
    "schedule": {"name": "single", "phase": "a"},
    "eval": {"test": {"data": {"dataset": "digits", "split": "test", "transforms": FLAT},
                      "phase": "a", "batch_size": 360}},
}
LR = "phases.a.optimizer.lr"


def accuracy(lr, seed):
    """The fake's final accuracy: grows with lr, plus a fixed per-(lr, seed) wobble."""
    return 0.5 + 10 * lr + np.random.default_rng([seed, int(lr * 1e6)]).normal(0, 0.01)


class FakeTrain:
    """Stands in for ``train_and_evaluate``: records calls, writes ``results.json``."""

    def __init__(self, crash_after=None, diverge=()):
        self.calls, self.crash_after, self.diverge = [], crash_after, set(diverge)

    def __call__(self, config, workdir, **kwargs):
        n, seed, lr = config.get("num_seeds", 1), config.seed, config.phases.a.optimizer.lr
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise KeyboardInterrupt("killed")
        self.calls.append((lr, seed, n))
        if (lr, seed) in self.diverge:
            raise alternating.NonFiniteError("loss is nan at step 3 (phase a)")
        steps = config.total_steps
        per = [{"test": {"accuracy": accuracy(lr, seed + i), "loss": 1.0}} for i in range(n)]
        res = {"total_steps": steps, "steps": steps, "seed": seed, "wall_time_s": 0.5 * n,
               "final_eval": per[0], "steps_per_phase": {"a": steps}}
        if n > 1:
            res.update(final_eval_per_seed=per, seeds=list(range(seed, seed + n)),
                       num_seeds=n, steps_per_phase_per_seed=[{"a": steps}] * n)
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump(res, f)


@pytest.fixture
def fake(monkeypatch):
    f = FakeTrain()
    monkeypatch.setattr(experiment, "train_and_evaluate", f)
    return f


def quiet_run(workdir, **kw):
    return sweep.run(TINY, str(workdir), **{"seeds": 2, "print_fn": None, **kw})


# --- Cells and ids ------------------------------------------------------------------------


def test_grid_expands_to_the_product_first_axis_slowest_with_readable_ids():
    cells = sweep.expand({"phases.images.optimizer.lr": [1e-3, 3e-4],
                          "phases.signals.optimizer.lr": [0.1],
                          "total_steps": [10, 20]})
    assert [c.id for c in cells] == [
        "images.optimizer.lr=0.001,signals.optimizer.lr=0.1,total_steps=10",
        "images.optimizer.lr=0.001,signals.optimizer.lr=0.1,total_steps=20",
        "images.optimizer.lr=0.0003,signals.optimizer.lr=0.1,total_steps=10",
        "images.optimizer.lr=0.0003,signals.optimizer.lr=0.1,total_steps=20"]
    assert cells[2].overrides == {"phases.images.optimizer.lr": 3e-4,
                                  "phases.signals.optimizer.lr": 0.1, "total_steps": 10}


def test_listed_cells_ids_base_strings_tuples_long_and_colliding_values():
    ids = [c.id for c in sweep.expand(cells=[
        {}, {"schedule.name": "single"}, {"model.trunk": (32, 32)},
        {"schedule.pattern": ["images a/b", "signals"]}])]
    assert ids == ["base", "name=single", "trunk=[32,32]", "pattern=[images_a_b,signals]"]
    long_id = sweep.expand({"model.features": [list(range(60))]})[0].id
    assert len(long_id) <= 80 and long_id.startswith("features=[0,1,2,")
    a, b = sweep.expand({"x": ["p q", "p_q"]})  # both read p_q: a digest tells them apart
    assert a.id != b.id and a.id.startswith("x=p_q-") and b.id.startswith("x=p_q-")
    assert [c.id for c in sweep.expand({"x": ["p q", "p_q"]})] == [a.id, b.id]  # stable


def test_overrides_are_applied_to_a_copy_with_configdict_semantics():
    cfg = sweep.apply_overrides(TINY, {LR: 0.1, "model.features": [8, 10]})
    assert cfg.phases.a.optimizer.lr == 0.1 and list(cfg.model.features) == [8, 10]
    assert TINY["phases"]["a"]["optimizer"]["lr"] == 1e-3


def test_seeds_and_blocks():
    assert sweep.seed_list(3) == [0, 1, 2] and sweep.seed_list([4, 5]) == [4, 5]
    assert sweep.consecutive_blocks([0, 1, 3, 4, 5, 7]) == [[0, 1], [3, 4, 5], [7]]


# --- Refusals, all before any run ---------------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    (dict(grid={"phases.a.optimizer.lrr": [1]}),
     r"no field 'lrr' at phases\.a\.optimizer; valid fields there: \['lr', 'name'\]"),
    (dict(grid={"totl_steps": [1]}), r"no field 'totl_steps' at the top level; valid fields "
                                     r"there: \[.*'total_steps'"),
    (dict(grid={"phases.a.loss.x": [1]}), r"phases\.a\.loss is a str, not a dict of fields"),
    (dict(grid={}), r"empty grid"),
    (dict(grid={"total_steps": []}), r"axis 'total_steps' has no values"),
    (dict(grid={"total_steps": 5}), r"axis 'total_steps': 5 is not a list of values"),
    (dict(grid={"seed": [1, 2]}), r"\['seed'\] are set by the sweep; give seeds= instead"),
    (dict(cells=[]), r"empty sweep"),
    (dict(cells=[{LR: 0.1}, {LR: 0.1}]), r"listed twice"),
    (dict(grid={"total_steps": [1.5]}), r"'total_steps' = 1.5 does not fit the config"),
    (dict(grid={"total_steps": [0]}), r"cell total_steps=0: total_steps=0; it must be >= 1"),
    (dict(grid={LR: [0.1]}, seeds=0), r"seeds=0; a sweep needs at least 1 seed"),
    (dict(grid={LR: [0.1]}, seeds=[1, 1]), r"give distinct seeds"),
    (dict(grid={LR: [0.1]}, baseline="lr=9"), r"baseline='lr=9' is not a cell.*\['lr=0.1'\]"),
    (dict(grid={LR: [0.1]}, claim="more"), r"valid claims: \['greater', 'less'\]"),
    (dict(grid={LR: [0.1]}, metric="accuracy"), r"write '<eval set>/<metric>'"),
    (dict(grid={LR: [0.1]}, vectorize="maybe"), r"vectorize='maybe'; valid"),
    (dict(grid={"nan_policy": ["skip"]}, vectorize="on"),
     r"vectorize='on' but its seeds cannot share one program: .*nan_policy='skip'"),
])
def test_bad_input_is_refused_before_any_run(tmp_path, fake, kw, match):
    with pytest.raises(ValueError, match=match):
        quiet_run(tmp_path / "sw", **kw)
    assert fake.calls == [] and not (tmp_path / "sw").exists()


def test_a_workdir_run_with_another_config_is_refused_naming_the_fields(tmp_path, fake):
    quiet_run(tmp_path, grid={LR: [0.1]})
    other = {**TINY, "model": {**TINY["model"], "features": [32, 10]}}
    with pytest.raises(ValueError, match=r"cell lr=0.1 .* was run with another config "
                                         r"\(differing: \['model.features'\]\)"):
        sweep.run(other, str(tmp_path), grid={LR: [0.1]}, seeds=2, print_fn=None)
    assert len(fake.calls) == 1


# --- Running and resuming -----------------------------------------------------------------


def mtimes(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns
            for p in root.glob("*/seed*/results.json")}


@pytest.mark.parametrize("vectorize,first,rest", [
    ("off", [(0.1, 0, 1), (0.2, 0, 1), (0.3, 0, 1)], [(0.1, 1, 1), (0.2, 1, 1), (0.3, 1, 1)]),
    ("auto", [(0.1, 0, 2)], [(0.2, 0, 2), (0.3, 0, 2)]),
])
def test_a_half_finished_grid_resumes_without_rerunning_finished_runs(tmp_path, monkeypatch,
                                                                      vectorize, first, rest):
    grid = {LR: [0.1, 0.2, 0.3]}
    killed = FakeTrain(crash_after=len(first))
    monkeypatch.setattr(experiment, "train_and_evaluate", killed)
    with pytest.raises(KeyboardInterrupt):
        quiet_run(tmp_path, grid=grid, vectorize=vectorize)
    assert killed.calls == first and not (tmp_path / "sweep.json").exists()
    before = mtimes(tmp_path)
    again = FakeTrain()
    monkeypatch.setattr(experiment, "train_and_evaluate", again)
    out = quiet_run(tmp_path, grid=grid, vectorize=vectorize)
    assert again.calls == rest  # only what was missing
    assert {k: v for k, v in mtimes(tmp_path).items() if k in before} == before
    assert [(r["cell"], r["seed"]) for r in out["runs"]] == [
        (f"lr={lr}", s) for lr in (0.1, 0.2, 0.3) for s in (0, 1)]
    assert all(r["final_eval"] and r["error"] is None for r in out["runs"])
    # A third time nothing runs; a lost or incomplete seed reruns alone.
    (tmp_path / "lr=0.2" / "seed1" / "results.json").unlink()
    res = tmp_path / "lr=0.3" / "seed0" / "results.json"
    res.write_text(json.dumps({**json.loads(res.read_text()), "steps": 6}))
    third = FakeTrain()
    monkeypatch.setattr(experiment, "train_and_evaluate", third)
    quiet_run(tmp_path, grid=grid, vectorize=vectorize)
    assert sorted(third.calls) == [(0.2, 1, 1), (0.3, 0, 1)]


def test_a_longer_total_steps_reruns_every_run(tmp_path, fake):
    quiet_run(tmp_path, grid={LR: [0.1]})
    longer = {**TINY, "total_steps": 24}
    sweep.run(longer, str(tmp_path), grid={LR: [0.1]}, seeds=2, print_fn=None)
    assert fake.calls == [(0.1, 0, 2), (0.1, 0, 2)]


def test_vectorized_blocks_split_per_seed_results(tmp_path, fake):
    out = quiet_run(tmp_path, grid={LR: [0.1]}, seeds=[3, 4, 6])
    assert fake.calls == [(0.1, 3, 2), (0.1, 6, 1)]  # 3-4 share a program, 6 alone
    one = json.loads((tmp_path / "lr=0.1" / "seed4" / "results.json").read_text())
    assert one["seed"] == 4 and one["final_eval"]["test"]["accuracy"] == accuracy(0.1, 4)
    assert one["vectorized"] == {"workdir": "seeds3-4", "seeds": [3, 4],
                                 "wall_time_s": pytest.approx(one["wall_time_s"] * 2)}
    assert "final_eval_per_seed" not in one
    assert [r["shared_program"] for r in out["runs"]] == [True, True, False]


def test_a_config_vectorized_seeds_refuse_runs_one_seed_at_a_time(tmp_path, fake):
    out = quiet_run(tmp_path, grid={"nan_policy": ["skip"]}, seeds=3)
    assert [c[1:] for c in fake.calls] == [(0, 1), (1, 1), (2, 1)]
    cell = out["cells"][0]
    assert not cell["vectorized"] and "nan_policy='skip'" in cell["not_vectorized_because"]
    quiet_run(tmp_path / "one", grid={"nan_policy": ["skip"]}, seeds=1, vectorize="on")
    assert fake.calls[-1][1:] == (0, 1)  # one seed: nothing to vectorize, nothing refused


# --- Outputs and the verdict --------------------------------------------------------------


def test_json_table_and_plot_follow_the_verdict_rule(tmp_path, fake):
    out = quiet_run(tmp_path, grid={LR: [0.001, 0.002, 0.03]}, seeds=4, baseline="lr=0.002",
                    metric="test/accuracy", name="tiny", command="python -m x")
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert saved["baseline"] == "lr=0.002" and saved["seeds"] == [0, 1, 2, 3]
    run = saved["runs"][5]
    assert (run["cell"], run["seed"], run["overrides"]) == ("lr=0.002", 1, {LR: 0.002})
    assert run["final_eval"]["test"]["accuracy"] == accuracy(0.002, 1)
    assert run["wall_time_s"] == pytest.approx(0.5) and run["workdir"] == "lr=0.002/seed1"
    want = [verdict.compare([accuracy(lr, s) for s in range(4)],
                            [accuracy(0.002, s) for s in range(4)], name=f"lr={lr} vs lr=0.002")
            for lr in (0.001, 0.03)]
    assert saved["comparison"]["verdicts"] == [json.loads(json.dumps(v.to_dict())) for v in want]
    assert [v.label for v in want] == ["inconclusive", "confirmed"]  # the fake's effects
    md = (tmp_path / "comparison.md").read_text()
    assert verdict.render_table(want) in md and "# Sweep: tiny" in md
    assert "| **lr=0.002** |" in md and "python -m x" in md
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert out["comparison"] == saved["comparison"]
    # A metric the runs lack: the valid ones are listed (sweep.json is kept).
    with pytest.raises(ValueError, match=r"valid: \['test/accuracy', 'test/loss'\]"):
        quiet_run(tmp_path, grid={LR: [0.001, 0.002, 0.03]}, seeds=4, metric="test/acc")


def test_a_diverged_run_is_recorded_and_dropped_from_both_arms(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "train_and_evaluate", FakeTrain(diverge={(0.5, 1)}))
    out = quiet_run(tmp_path, grid={LR: [0.1, 0.5]}, seeds=3, vectorize="off",
                    metric="test/accuracy")
    bad = [r for r in out["runs"] if r["error"]]
    assert [(r["cell"], r["seed"]) for r in bad] == [("lr=0.5", 1)]
    assert bad[0]["error"].startswith("NonFiniteError: loss is nan") and not bad[0]["final_eval"]
    (v,) = out["comparison"]["verdicts"]
    assert v["name"] == "lr=0.5 vs lr=0.1 (seeds 0, 2)" and v["n"] == 2
    assert "failed" in (tmp_path / "comparison.md").read_text()


def test_one_seed_gives_figures_but_no_verdict(tmp_path, fake):
    out = quiet_run(tmp_path, grid={LR: [0.1, 0.2]}, seeds=1, metric="test/accuracy")
    assert out["comparison"]["verdicts"] == []
    assert "rule needs at least 2" in out["comparison"]["notes"][0]
    values = sweep_report.metric_values(out, "test/accuracy")
    assert values == {"lr=0.1": {0: accuracy(0.1, 0)}, "lr=0.2": {0: accuracy(0.2, 0)}}


# --- Command line -------------------------------------------------------------------------


def test_command_line_parsing():
    assert sweep_main.parse_grid(["a.lr=[1e-3, 3e-3]", "schedule.name=[alternate,single]",
                                  "model.trunk=[(32,), (64, 64)]"]) == {
        "a.lr": [1e-3, 3e-3], "schedule.name": ["alternate", "single"],
        "model.trunk": [(32,), (64, 64)]}
    for bad, match in [("a.lr=1e-3", "must be a list"), ("a.lr", "write --grid="),
                       ("=[1]", "write --grid=")]:
        with pytest.raises(ValueError, match=match):
            sweep_main.parse_grid([bad])
    with pytest.raises(ValueError, match="given twice"):
        sweep_main.parse_grid(["a=[1]", "a=[2]"])
    assert sweep_main.parse_cell('{"a.lr": 0.1}') == {"a.lr": 0.1}
    with pytest.raises(ValueError, match="--cell="):
        sweep_main.parse_cell("a.lr=0.1")
    assert sweep_main.parse_seeds("5") == 5 and sweep_main.parse_seeds("3,4") == [3, 4]
    assert sweep_main.command(["x", "--config=c.py", "--workdir", "scratch/w", "--seeds=2",
                               "--workdir=scratch/v"]) == (
        "python -m alternating.sweep_main --config=c.py --seeds=2")


@pytest.mark.slow
def test_the_command_line_runs_a_vectorized_sweep_and_resumes_it(tmp_path):
    config = tmp_path / "tiny.py"
    config.write_text(f"import ml_collections\n\ndef get_config():\n"
                      f"    return ml_collections.ConfigDict({TINY!r})\n")
    cmd = [sys.executable, "-m", "alternating.sweep_main", f"--config={config}",
           f"--grid={LR}=[1e-3,1e-2]", "--seeds=2", "--metric=test/loss", "--claim=less",
           f"--workdir={tmp_path / 'sw'}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [c["vectorized"] for c in out["cells"]] == [True, True]
    assert all(0 <= r["final_eval"]["test"]["accuracy"] <= 1 for r in out["runs"])
    assert all(r["shared_program"] for r in out["runs"]) and len(out["runs"]) == 4
    assert (tmp_path / "sw" / "lr=0.001" / "seeds0-1" / "metrics.jsonl").exists()
    assert out["command"].startswith("python -m alternating.sweep_main --config=")
    assert "--workdir" not in out["command"] and "| lr=0.01 vs lr=0.001 | less |" in (
        tmp_path / "sw" / "comparison.md").read_text()
    before = mtimes(tmp_path / "sw")
    again = subprocess.run(cmd[:-1] + ["--metric=test/accuracy", "--claim=greater", cmd[-1]],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert mtimes(tmp_path / "sw") == before  # nothing reran; only the comparison changed
    assert "test/accuracy" in (tmp_path / "sw" / "comparison.md").read_text()
    bad = subprocess.run(cmd[:4] + [f"--grid={LR}x=[1]", cmd[-1]], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "no field 'lrx' at phases.a.optimizer" in bad.stderr


# --- The experiment scripts' helpers delegate here ----------------------------------------


def test_experiments_common_run_grid_and_seed_block_use_the_sweep_engine(tmp_path, fake):
    sys.path.insert(0, ROOT)
    from experiments import common
    one = lambda cell, seed: (cell, seed)  # noqa: E731
    block = lambda cell, seeds: [(cell, s) for s in seeds]  # noqa: E731
    want = [("a", 3), ("b", 3), ("a", 4), ("b", 4)]
    assert common.run_grid("ab", [3, 4], vectorized=False, run_seeds=None, run_one=one) == want
    assert common.run_grid("ab", [3, 4], vectorized=True, run_seeds=block, run_one=None) == want
    results, seconds, _ = common.run_seed_block(sweep.apply_overrides(TINY, {}), [2, 3],
                                                tmp_path / "block")
    assert fake.calls == [(1e-3, 2, 2)] and results["seeds"] == [2, 3] and seconds >= 0
    with pytest.raises(ValueError, match="not consecutive"):
        common.run_seed_block(sweep.apply_overrides(TINY, {}), [2, 4], tmp_path / "other")

"""The fused executor: same TrainState as the host executor, chunks end on boundaries."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from loop_test import MODEL, _Greedy, _loss

import alternating
from alternating import executor, metrics, parallel


def _tiny_run(workdir, mesh=None, total_steps=12, phases=None, log_every_steps=3,
              schedule=({"name": "alternate", "pattern": [["a", 2], ["b", 1]]}),
              executor="host", **kw):
    # executor: the reference runs of these tests are the host executor's
    # (the library's default is 'auto', fused for these planned schedules).
    phases = phases or [
        alternating.Phase("a", loss=_loss, data="digits", params=[("Dense_0/.*", True), (".*", None)],
                          optimizer={"name": "adam", "lr": 1e-2}),
        alternating.Phase("b", loss=_loss, data="digits", params=[("Dense_1/.*", True), (".*", None)],
                          optimizer={"name": "sgd", "lr": 0.1}),
    ]
    return alternating.train(
        phases=phases, schedule=schedule,
        data={"digits": {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]}},
        init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"],
        workdir=str(workdir), total_steps=total_steps, mesh=mesh, progress=False, plot=False,
        print_fn=None, log_every_steps=log_every_steps, executor=executor, **kw)


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def _train_rows(workdir):
    rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    return [{k: v for k, v in r.items() if k not in ("time", "wall_time", "elapsed")}
            for r in rows if r["split"] == "train"]


def _timeline(workdir):
    return metrics.read_jsonl(os.path.join(workdir, "timeline.jsonl"))


def _same_state(a, b):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


@pytest.mark.parametrize("schedule", [
    {"name": "alternate", "pattern": [["a", 2], ["b", 1]]},
    {"name": "weighted", "weights": {"a": 1.0, "b": 2.0}},
    {"name": "sequential", "stages": [["b", 5], ["a", 9]]},
    "greedy",
], ids=["alternate", "weighted", "sequential", "feedback"])
def test_fused_equals_host_bit_for_bit(tmp_path, schedule):
    mesh = parallel.make_mesh(jax.devices()[:1])
    make = (lambda: _Greedy(["a", "b"])) if schedule == "greedy" else (lambda: schedule)
    host = _tiny_run(tmp_path / "host", mesh=mesh, total_steps=17, schedule=make())
    fused = _tiny_run(tmp_path / "fused", mesh=mesh, total_steps=17, schedule=make(),
                      executor="fused", chunk_steps=5)
    _same_state(host, fused)
    assert int(fused.step) == 17
    # Metrics are logged as if stepped one by one: the same rows, the same values.
    assert _train_rows(tmp_path / "fused") == _train_rows(tmp_path / "host")
    assert _timeline(tmp_path / "fused") == _timeline(tmp_path / "host")
    # log_every_steps=3 (and feedback every 4 for the adaptive schedule) cut the chunks.
    compiles = _results(tmp_path / "fused")["compiles"]
    assert set(compiles) <= {"fused:1", "fused:2", "fused:3"} and set(compiles.values()) == {1}


def test_fused_on_four_devices_matches_host(tmp_path):
    host = _tiny_run(tmp_path / "host", total_steps=12)
    fused = _tiny_run(tmp_path / "fused", total_steps=12, executor="fused", chunk_steps=8,
                      log_every_steps=0)
    assert fused.params["Dense_0"]["kernel"].sharding.mesh.size == 4
    _same_state(host, fused)  # bit for bit on 4 devices too
    # 12 steps with no log interval: one chunk of 8, one of 4, each compiled once.
    assert _results(tmp_path / "fused")["compiles"] == {"fused:8": 1, "fused:4": 1}


def test_fused_two_streams_and_a_mixed_batch_phase(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])

    def mixed(params, batch, rng, extras):
        la, _ = _loss(params, batch["digits"], rng, extras)
        lb, _ = _loss(params, batch["more"], rng, extras)
        return la + lb, {"first": la}

    phases = [alternating.Phase("a", loss=_loss, data="digits", optimizer={"name": "adam", "lr": 1e-2}),
              alternating.Phase("b", loss=_loss, data="more", params=[("Dense_1/.*", True), (".*", None)]),
              alternating.Phase("m", loss=mixed, data=["digits", "more"])]
    data = {"digits": {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]},
            "more": {"dataset": "digits", "batch_size": 16, "transforms": ["flatten"]}}
    runs = {}
    for kind in ("host", "fused"):
        runs[kind] = alternating.train(
            phases=phases, schedule={"name": "alternate", "pattern": ["a", "b", "m", "m"]},
            data=data, init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"],
            workdir=str(tmp_path / kind), total_steps=14, mesh=mesh, progress=False, plot=False,
            print_fn=None, log_every_steps=7, executor=kind, chunk_steps=7)
    _same_state(runs["host"], runs["fused"])
    assert _train_rows(tmp_path / "fused") == _train_rows(tmp_path / "host")
    assert _results(tmp_path / "fused")["compiles"] == {"fused:7": 1}


def test_fused_resume_and_checkpoint_boundaries(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    straight = _tiny_run(tmp_path / "straight", mesh=mesh, total_steps=12)
    kw = dict(mesh=mesh, executor="fused", chunk_steps=100, log_every_steps=0,
              checkpoint_every_steps=5)
    _tiny_run(tmp_path / "split", total_steps=7, **kw)
    # Checkpoints at 5 and at the end (7): the chunks stopped there, and the
    # saved stream positions match the saved state (no read-ahead past them).
    assert sorted(os.listdir(tmp_path / "split" / "checkpoints")) == ["5", "7"]
    resumed = _tiny_run(tmp_path / "split", total_steps=12, **kw)
    _same_state(straight, resumed)


def test_unknown_executor_and_bad_chunk_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"executor='scan'; valid executors: \['auto', 'host', 'fused'\]"):
        _tiny_run(tmp_path, executor="scan")
    with pytest.raises(ValueError, match=r"chunk_steps=0; the fused executor needs an integer >= 1"):
        _tiny_run(tmp_path, executor="fused", chunk_steps=0)


def test_chunk_length_stops_at_every_boundary():
    stop = executor.boundaries(3, 0, 5)
    assert [s for s in range(1, 16) if stop(s)] == [3, 5, 6, 9, 10, 12, 15]
    f = executor.Fused.__new__(executor.Fused)
    f.chunk_steps, f.total_steps, f.stops = 4, 14, stop
    assert [f.chunk_length(s) for s in (0, 3, 5, 6, 10, 12)] == [3, 2, 1, 3, 2, 2]


def test_host_metric_ring_wraps_and_deferred_logs_keep_every_row(tmp_path, monkeypatch):
    """The host executor's device-side metric ring, smaller than a log interval,
    and logs written late (every 2 steps, lag 32) give exactly the rows and
    timeline of the fused executor, whose records are whole chunks."""
    from alternating import loop as loop_lib
    mesh = parallel.make_mesh(jax.devices()[:1])
    schedule = {"name": "weighted", "weights": {"a": 1.0, "b": 1.0}}
    fused = _tiny_run(tmp_path / "fused", mesh=mesh, total_steps=41, schedule=schedule,
                      log_every_steps=2, executor="fused", chunk_steps=8)
    monkeypatch.setattr(loop_lib, "_RING_ROWS", 3)  # fetched every 3 steps, logged every 2
    host = _tiny_run(tmp_path / "host", mesh=mesh, total_steps=41, schedule=schedule,
                     log_every_steps=2)
    _same_state(host, fused)
    rows = _train_rows(tmp_path / "host")
    assert rows == _train_rows(tmp_path / "fused")
    assert sorted({r["step"] for r in rows}) == list(range(2, 41, 2)) + [41]
    assert sum(r["steps"] for r in rows) == 41  # every step in exactly one row
    assert _timeline(tmp_path / "host") == _timeline(tmp_path / "fused")
    segments = [(r["start"], r["end"]) for r in _timeline(tmp_path / "host")]
    assert segments[0][0] == 0 and segments[-1][1] == 41
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))


def test_auto_picks_fused_for_a_planned_schedule_and_host_for_an_adaptive_one():
    from alternating.schedules.adaptive import UCB
    from alternating.schedules.static import Alternate
    planned = Alternate(["a", "b"])
    assert executor.resolve("auto", planned) == "fused"
    adaptive = UCB(["a", "b"], seed=0)
    assert executor.resolve("auto", adaptive) == "host"
    assert executor.resolve("host", planned) == "host"
    assert executor.resolve("fused", adaptive) == "fused"

"""Hooks and evaluators: when they run, what they may change, exact resume with them."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from executor_test import _tiny_run

import alternating
from alternating import metrics, parallel

import hook_worker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _recorder(calls, when):
    def fn(state, event, ctx):
        if not ctx.dry_run:  # the structure check before training runs every hook once
            calls.append((event.step, event.phase, event.ended, event.why))
    return alternating.hook(fn, **when, name="rec")


@pytest.mark.parametrize("executor", ["host", "fused"])
def test_phase_end_hook_fires_after_the_last_step_of_every_run(tmp_path, executor):
    calls = []
    # a a b | a a b | ... over 12 steps: runs of 'a' end after steps 2, 5, 8, 11.
    _tiny_run(tmp_path, total_steps=12, executor=executor, chunk_steps=50,
              hooks=[_recorder(calls, {"phase_end": "a"})], log_every_steps=0)
    assert [(s, e) for s, _, e, _ in calls] == [(2, "a"), (5, "a"), (8, "a"), (11, "a")]
    assert all(p == "a" and why == ("phase_end",) for _, p, _, why in calls)
    calls.clear()
    # Every phase: also the run of 'b' that ends at the very last step.
    _tiny_run(tmp_path / "all", total_steps=12, executor=executor, chunk_steps=50,
              hooks=[_recorder(calls, {"phase_end": True})], log_every_steps=0)
    assert [(s, e) for s, _, e, _ in calls] == [(2, "a"), (3, "b"), (5, "a"), (6, "b"),
                                                 (8, "a"), (9, "b"), (11, "a"), (12, "b")]


def test_every_steps_start_and_end_triggers(tmp_path):
    calls = []
    _tiny_run(tmp_path, total_steps=10, log_every_steps=0,
              hooks=[_recorder(calls, {"every": 4, "steps": [3], "start": True, "end": True})])
    assert [(s, why) for s, _, _, why in calls] == [
        (0, ("start",)), (3, ("steps",)), (4, ("every",)), (8, ("every",)), (10, ("end",))]


def _shrink_hook():
    """At each end of phase 'a', scales the params by 0.5 (a state change)."""
    def fn(state, event, ctx):
        return state.replace(params=jax.tree.map(lambda p: 0.5 * p, state.params))
    return alternating.hook(fn, phase_end="a", name="shrink")


def test_fused_equals_host_with_a_state_changing_phase_end_hook(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    host = _tiny_run(tmp_path / "host", mesh=mesh, total_steps=17, hooks=[_shrink_hook()])
    fused = _tiny_run(tmp_path / "fused", mesh=mesh, total_steps=17, hooks=[_shrink_hook()],
                      executor="fused", chunk_steps=100)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(host), jax.device_get(fused))
    plain = _tiny_run(tmp_path / "plain", mesh=mesh, total_steps=17)
    assert not np.allclose(jax.tree.leaves(plain.params)[0], jax.tree.leaves(host.params)[0])
    with open(tmp_path / "fused" / "results.json") as f:
        compiles = json.load(f)["compiles"]
    # Chunks end at the phase ends (after 2, 5, 8, ... steps) and the logs (3, 6, 9, ...).
    assert set(compiles) == {"fused:1", "fused:2"} and all(v == 1 for v in compiles.values())


def test_a_hook_that_changes_the_state_structure_is_refused_before_training(tmp_path):
    def grow(state, event, ctx):
        return state.replace(extras={**state.extras, "new": jnp.zeros(3)})

    def cast(state, event, ctx):
        return state.replace(step=state.step.astype(jnp.float32))

    for fn, what in ((grow, r"added \.extras\['new'\]"), (cast, r"\.step: int32\[\] -> float32\[\]")):
        with pytest.raises(ValueError, match=rf"hook '{fn.__name__}' returned a TrainState of "
                                             rf"another structure(.|\n)*{what}"):
            _tiny_run(tmp_path / fn.__name__, hooks=[alternating.hook(fn, every=5)])
        # Refused before anything ran: no metrics, no checkpoint.
        assert not (tmp_path / fn.__name__ / "checkpoints").exists()
        assert not (tmp_path / fn.__name__ / "metrics.jsonl").exists()


def test_a_host_side_hook_is_checked_when_it_returns(tmp_path):
    def host_side(state, event, ctx):
        if float(state.step) > 3:  # not traceable: checked at run time
            return state.replace(extras={**state.extras, "x": jnp.zeros(())})
        return None
    with pytest.raises(ValueError, match=r"hook 'host_side' returned a TrainState of another"):
        _tiny_run(tmp_path, total_steps=10, hooks=[alternating.hook(host_side, every=2)])


@pytest.mark.parametrize("when,match", [
    ({"phase_end": "c"}, r"phase_end names unknown phase\(s\) \['c'\]; the phases are \['a', 'b'\]"),
    ({"steps": [99]}, r"when.steps contains 99.*\[1, total_steps=12\].*can never fire"),
    ({}, r"when is empty, so it would never run"),
    ({"evry": 3}, r"unknown key\(s\) \['evry'\]; valid keys: \['every', 'steps'"),
])
def test_a_when_that_can_never_fire_is_an_error(tmp_path, when, match):
    hook = alternating.hook(lambda s, e, c: None, name="h")
    hook.when = when
    with pytest.raises(ValueError, match=match):
        _tiny_run(tmp_path, hooks=[hook])


def test_phase_end_needs_a_schedule_that_plans(tmp_path):
    from loop_test import _Greedy
    with pytest.raises(ValueError, match=r"run at phase ends.*cannot plan ahead"):
        _tiny_run(tmp_path, schedule=_Greedy(["a", "b"]),
                  hooks=[alternating.hook(lambda s, e, c: None, phase_end=True)])


def test_unknown_hook_or_evaluator_name_lists_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"hooks\[0\].name='nope' is not a registered hook; "
                                         r"valid names: .*'package.module:attr'"):
        _tiny_run(tmp_path, hooks=[{"name": "nope", "when": {"every": 2}}])
    with pytest.raises(ValueError, match=r"evaluators\[0\].name: cannot import 'no_mod:X'"):
        _tiny_run(tmp_path, evaluators=[{"name": "no_mod:X", "when": {"every": 2}}])


def test_evaluator_rows_results_and_ctx(tmp_path):
    evals = {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                      "phase": "a", "batch_size": 128}}
    seen = []

    def probe(state, event, ctx):
        if ctx.dry_run:
            return
        res = ctx.evaluate(state, ["test"])
        batches = ctx.batches({"dataset": "digits", "split": "test",
                               "transforms": ["flatten"]}, 100)
        n = sum(float(b["mask"].sum()) for b in batches)
        seen.append((event.step, res["test"]["loss"], n))
        ctx.write(event.step, "probe", {"examples": n})

    _tiny_run(tmp_path, total_steps=8, evals=evals, eval_every_steps=4,
              evaluators=[hook_worker.CountingEvaluator(every=4)],
              hooks=[alternating.hook(probe, steps=[4, 8])])
    rows = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "eval"]
    by = {(r["step"], r["set"]): r for r in rows}
    assert by[(4, "counting")]["calls"] == 1 and by[(8, "counting")]["calls"] == 2
    # The hook's ctx.evaluate equals the loss evaluator's row at the same step.
    assert [s[1] for s in seen] == pytest.approx([by[(4, "test")]["loss"], by[(8, "test")]["loss"]])
    assert by[(8, "probe")]["examples"] == 360.0  # digits' test split, once, padding masked
    with open(tmp_path / "results.json") as f:
        res = json.load(f)
    assert res["counting"] == {"calls": 2} and res["final_eval"]["test"]["loss"] == pytest.approx(
        by[(8, "test")]["loss"])


def test_hooks_and_evaluators_run_per_replica_with_vectorized_seeds(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    kw = dict(mesh=mesh, total_steps=9, log_every_steps=0, hooks=[_shrink_hook()])
    stacked = _tiny_run(tmp_path / "seeds", num_seeds=2, executor="fused", chunk_steps=9, **kw)
    for i in range(2):
        single = _tiny_run(tmp_path / f"one{i}", seed=i, **kw)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-7),
                     jax.device_get(stacked.params), jax.device_get(single.params))


KILL_RUN_STEPS = 200  # the kill -9 test's run: 25 blocks of a a a a a b b b


def _spawn(workdir, executor):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, os.path.join(HERE, "hook_worker.py"), str(workdir),
                             executor, str(KILL_RUN_STEPS)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _rows(workdir):
    return [{k: v for k, v in r.items() if k != "time"}
            for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


def _last_logged_step(workdir):
    try:
        rows = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    except (OSError, ValueError):
        return -1
    return max((r["step"] for r in rows if r.get("split") == "train"), default=-1)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["host", "fused"])
def test_kill_9_and_resume_with_a_state_changing_hook_is_bit_identical(tmp_path, executor):
    ref = tmp_path / "ref"
    hook_worker.run(ref, executor, total_steps=KILL_RUN_STEPS, print_fn=None)
    run = tmp_path / "run"
    for after in (30, 90, 140):  # SIGKILL once the run has logged past each step
        proc = _spawn(run, executor)
        deadline = time.time() + 120
        while _last_logged_step(run) < after and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, out  # killed mid-run, not already done
    proc = _spawn(run, executor)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "resumed from" in out, out
    a, _ = alternating.load_state(str(ref))
    b, _ = alternating.load_state(str(run))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))
    assert int(np.asarray(jax.device_get(b)["extras"]["ends"])) == 25  # 200 steps / (5 + 3)
    assert _rows(run) == _rows(ref)  # every train and eval row once, counts continued


@pytest.mark.parametrize("executor", ["host", "fused"])
def test_a_hook_may_return_aliased_leaves(tmp_path, executor):
    """An extra set to the params themselves: the next step donates each buffer once."""
    def snapshot(state, event, ctx):
        return state.replace(extras={**state.extras, "prev": state.params})

    state = _tiny_run(tmp_path, total_steps=12, executor=executor, extras={"prev": {"kind": "copy"}},
                      hooks=[alternating.hook(snapshot, phase_end="a")])
    # The last run of 'a' ended at step 11; one 'b' step (Dense_1 only) came after.
    prev, params = jax.device_get(state.extras["prev"]), jax.device_get(state.params)
    np.testing.assert_array_equal(prev["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    assert not np.array_equal(prev["Dense_1"]["kernel"], params["Dense_1"]["kernel"])


def test_ctx_batches_first_read_during_the_structure_check_work_at_run_time(tmp_path):
    seen = []

    def probe(state, event, ctx):  # reads data in the dry run too (no ctx.dry_run check)
        batches = ctx.batches({"dataset": "digits", "split": "test", "transforms": ["flatten"]}, 100)
        if not ctx.dry_run:
            seen.append(float(sum(b["mask"].sum() for b in batches)))

    _tiny_run(tmp_path, total_steps=6, hooks=[alternating.hook(probe, every=3)])
    assert seen == [360.0, 360.0]

"""End-to-end: the loop on the `:smoke` configs, data parallelism, errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alternating
from alternating import metrics, parallel, partition
from alternating.models import MLP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import agd, default  # noqa: E402


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.mark.slow
def test_default_smoke_end_to_end(tmp_path):
    cfg = default.get_config("smoke")
    state = alternating.train_and_evaluate(cfg, str(tmp_path), progress=False, print_fn=None,
                                           executor="host")  # one compile per phase
    res = _results(tmp_path)
    assert res["compiles"] == {"images": 1, "signals": 1, "eval:images_test": 1,
                               "eval:signals_test": 1}
    assert res["steps_per_phase"] == {"images": 30, "signals": 30}
    assert int(state.step) == 60
    assert set(res["final_eval"]) == {"images_test", "signals_test"}
    for m in res["final_eval"].values():
        assert 0.0 <= m["accuracy"] <= 1.0 and np.isfinite(m["loss"])
    rows = metrics.read_jsonl(tmp_path / "metrics.jsonl")
    train_rows = [r for r in rows if r["split"] == "train"]
    assert {r["phase"] for r in train_rows} == {"images", "signals"}
    assert sorted({r["step"] for r in train_rows}) == [10, 20, 30, 40, 50, 60]
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
    assert os.listdir(tmp_path / "checkpoints") == ["60"]
    # The frozen modality embeddings never moved; the images stem did.
    init = default.get_config("smoke")
    from alternating.models import get_model
    p0 = get_model(init.model).init(jax.random.split(jax.random.PRNGKey(0))[0])
    np.testing.assert_array_equal(state.params["embed_images"], p0["embed_images"])
    np.testing.assert_array_equal(state.params["embed_signals"], p0["embed_signals"])
    assert not np.array_equal(state.params["stem_images"]["Dense_0"]["kernel"],
                              p0["stem_images"]["Dense_0"]["kernel"])
    # Each phase's optimizer state covers only its own leaves.
    mu_images = partition.flatten(state.opt_state["images"][0].mu)
    assert not any(p.startswith(("stem_signals", "embed_")) for p in mu_images)


@pytest.mark.slow
def test_agd_smoke_one_compile_per_phase_over_many_switches(tmp_path):
    cfg = agd.get_config("smoke")
    alternating.train_and_evaluate(cfg, str(tmp_path), progress=False, print_fn=None, plot=False,
                                   executor="host")
    res = _results(tmp_path)
    # 30 steps round-robin over 3 tasks: 30 switches, still one compile each.
    assert res["compiles"] == {"digits": 1, "mnist1d": 1, "parity": 1, "eval:digits_test": 1,
                               "eval:mnist1d_test": 1, "eval:parity_test": 1}
    assert res["steps_per_phase"] == {"digits": 10, "mnist1d": 10, "parity": 10}
    assert set(res["final_eval"]) == {"digits_test", "mnist1d_test", "parity_test"}


@pytest.mark.slow
def test_mixed_arm_reads_two_streams_in_one_step(tmp_path):
    cfg = default.get_config("smoke,mixed,no_embed")
    alternating.train_and_evaluate(cfg, str(tmp_path), progress=False, print_fn=None, plot=False,
                                   executor="host")
    res = _results(tmp_path)
    assert res["compiles"]["mixed"] == 1 and res["steps_per_phase"] == {"mixed": 30}
    row = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "train"][-1]
    assert {"images_loss", "signals_loss", "images_accuracy"} <= set(row)
    assert row["loss"] == pytest.approx(row["images_loss"] + row["signals_loss"], rel=1e-4)


MODEL = MLP(features=(16, 10))


def _loss(params, batch, rng, extras):
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def _tiny_run(workdir, mesh=None, total_steps=12, phases=None,
              schedule=({"name": "alternate", "pattern": [["a", 2], ["b", 1]]}),
              executor="host", **kw):
    # executor: these tests check the host executor (default 'auto' would fuse).
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
        print_fn=None, log_every_steps=3, executor=executor, **kw)


def test_four_devices_match_one_device(tmp_path):
    assert len(jax.devices()) == 4, "tests/conftest.py sets 4 fake CPU devices"
    one = _tiny_run(tmp_path / "one", mesh=parallel.make_mesh(jax.devices()[:1]))
    four = _tiny_run(tmp_path / "four", mesh=parallel.make_mesh(jax.devices()))
    assert four.params["Dense_0"]["kernel"].sharding.mesh.size == 4
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(one.params), jax.device_get(four.params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 jax.device_get(one.opt_state), jax.device_get(four.opt_state))


def test_nonfinite_loss_stops_naming_step_and_phase(tmp_path):
    def bad(params, batch, rng, extras):
        return jnp.log(-jnp.abs(_loss(params, batch, rng, extras)[0])), {}
    phases = [alternating.Phase("a", loss=_loss, data="digits", optimizer={"name": "sgd", "lr": 0.1}),
              alternating.Phase("b", loss=bad, data="digits", optimizer={"name": "sgd", "lr": 0.1})]
    with pytest.raises(alternating.NonFiniteError, match=r"non-finite loss at step 2 in phase 'b'"):
        _tiny_run(tmp_path, phases=phases)


def test_batch_size_not_divisible_by_devices_is_an_error_before_compiling(tmp_path):
    with pytest.raises(ValueError, match=r"data stream 'digits': batch_size=30 does not divide "
                                         r"across the 4 devices.*multiple of 4 \(e.g. 28 or 32\)"):
        alternating.train(
            phases=[alternating.Phase("a", loss=_loss, data="digits")], schedule={"name": "single"},
            data={"digits": {"dataset": "digits", "batch_size": 30, "transforms": ["flatten"]}},
            init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"], workdir=str(tmp_path),
            total_steps=2, progress=False, print_fn=None)


@pytest.mark.parametrize("mutate,match", [
    (lambda c: c.update(totl_steps=3), r"unknown field\(s\) \['totl_steps'\]; valid fields"),
    (lambda c: c.model.update(name="resnet"), r"'resnet' is not a model; valid names"),
    (lambda c: c.data.images.update(dataset="digitz"), r"digitz"),
    (lambda c: c.phases.images.update(loss="xent"), r"phase 'images' loss='xent' is not a registered loss"),
    (lambda c: c.phases.images.optimizer.update(name="adamm"), r"phase 'images' optimizer.name='adamm'"),
    (lambda c: c.schedule.update(pattern=["images", "audio"]), r"unknown phase\(s\) \['audio'\]; the phases are \['images', 'signals'\]"),
    (lambda c: c.phases.images.update(data="audio"), r"phase 'images' reads data stream 'audio'.*streams: \['images', 'signals'\]"),
    (lambda c: c.phases.images.update(params=[("stem_imagez/.*", True), (".*", None)]), r"phase 'images': rules \['stem_imagez/\.\*'\] match no parameter"),
    (lambda c: c.phases.images.update(params=[("stem_images/.*", True)]), r"phase 'images': no rule covers"),
    (lambda c: c.eval.images_test.update(batch_size=202), r"eval set 'images_test': batch_size=202"),
    (lambda c: c.update(ema_decay=1.5), r"ema_decay=1.5; it must be in \[0, 1\)"),
    (lambda c: c.update(log_every_steps=-1), r"log_every_steps=-1; it must be >= 0"),
])
def test_config_errors_name_the_field_and_choices(tmp_path, mutate, match):
    cfg = default.get_config("smoke").unlock()
    mutate(cfg)
    with pytest.raises(ValueError, match=match):
        alternating.train_and_evaluate(cfg, str(tmp_path), progress=False, print_fn=None)
    assert not (tmp_path / "checkpoints").exists() or not os.listdir(tmp_path / "checkpoints")


@pytest.mark.slow
def test_command_line_rejects_a_config_typo(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "alternating.main", "--config=configs/default.py:smoke",
         f"--workdir={tmp_path}", "--config.totl_steps=5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "totl_steps" in out.stderr


def test_evaluation_is_exact_with_a_padded_last_batch_and_a_loss_ignoring_mask(tmp_path):
    def acc_loss(params, batch, rng, extras):  # a plain mean: knows nothing about padding
        logits = MODEL.apply({"params": params}, batch["x"])
        return (optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(),
                {"accuracy": (logits.argmax(-1) == batch["y"]).mean()})
    phases = [alternating.Phase("a", loss=acc_loss, data="digits", optimizer={"name": "adam", "lr": 1e-2})]
    # 360 test examples in batches of 256: the second batch is 104 real + 152 padding.
    evals = {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                      "phase": "a", "batch_size": 256}}
    state = _tiny_run(tmp_path, phases=phases, evals=evals, schedule={"name": "single"})
    res = _results(tmp_path)["final_eval"]["test"]
    from alternating.data import apply_transforms, load_arrays
    test = apply_transforms(load_arrays("digits", "test"), ["flatten"])
    logits = MODEL.apply({"params": jax.device_get(state.params)}, test["x"])
    expect_acc = float((logits.argmax(-1) == test["y"]).mean())
    expect_loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, test["y"]).mean())
    assert res["accuracy"] == pytest.approx(expect_acc, abs=1e-6)
    assert res["loss"] == pytest.approx(expect_loss, rel=1e-4)


def test_rerunning_resumes_from_the_latest_checkpoint(tmp_path):
    straight = _tiny_run(tmp_path / "straight", total_steps=12)
    _tiny_run(tmp_path / "split", total_steps=7)  # stops mid-block of the a,a,b pattern
    resumed = _tiny_run(tmp_path / "split", total_steps=12)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight), jax.device_get(resumed))
    # A finished run, re-run, does nothing more but still reports its evaluation.
    again = _tiny_run(tmp_path / "split", total_steps=12)
    assert int(again.step) == 12
    assert _results(tmp_path / "split")["steps_per_phase"] == {"a": 8, "b": 4}


class _Greedy(alternating.schedules.Schedule):
    """Runs the phase with the higher recent loss; decides every 4 steps."""

    name = "greedy_test"
    can_plan = False
    feedback_every = 4

    def __init__(self, phases):
        super().__init__(phases)
        self.current, self.seen = phases[0], []

    def next_phase(self, step):
        return self.current if step >= 4 else self.phases[step % 2]

    def observe(self, step, phase, metrics):
        self.seen.append((step, phase, metrics["loss"]))
        if step % 4 == 3:
            last = {p: l for _, p, l in self.seen}
            self.current = max(last, key=last.get)


def test_feedback_schedule_observes_host_metrics_at_its_interval(tmp_path):
    sched = _Greedy(["a", "b"])
    _tiny_run(tmp_path, schedule=sched, total_steps=10)
    # Steps 0..7 were observed (at steps 4 and 8), in order, as Python floats.
    assert [s for s, _, _ in sched.seen] == list(range(8))
    assert all(isinstance(l, float) for _, _, l in sched.seen)
    assert [p for _, p, _ in sched.seen][:4] == ["a", "b", "a", "b"]
    rows = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert {r["phase"] for r in rows} <= {"a", "b"}


def test_ema_extra_is_kept_and_evaluated(tmp_path):
    evals = {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                      "phase": "a", "batch_size": 128}}
    state = _tiny_run(tmp_path, evals=evals, ema_decay=0.9, eval_every_steps=4)
    # Evaluated 3 times, for the params and the EMA: still one compile.
    assert _results(tmp_path)["compiles"] == {"a": 1, "b": 1, "eval:test": 1}
    res = _results(tmp_path)["final_eval"]
    assert set(res) == {"test", "test_ema"}
    assert res["test"]["loss"] != res["test_ema"]["loss"]
    assert set(state.extras) == {"ema"}
    # The EMA lags the parameters: strictly between the initial and final values.
    p0 = MODEL.init(jax.random.split(jax.random.PRNGKey(0))[0], jnp.zeros((1, 64)))["params"]
    k0, k1 = p0["Dense_0"]["kernel"], state.params["Dense_0"]["kernel"]
    ke = state.extras["ema"]["Dense_0"]["kernel"]
    assert 0 < float(jnp.abs(ke - k0).sum()) < float(jnp.abs(k1 - k0).sum())


def test_a_broken_loss_fails_before_any_compile_naming_the_phase(tmp_path):
    cfg = default.get_config("smoke").unlock()
    cfg.phases.signals.loss_kwargs.stem = "audio"
    with pytest.raises(ValueError, match=r"stem='audio'; valid stems: \['images', 'signals'\]") as e:
        alternating.train_and_evaluate(cfg, str(tmp_path), progress=False, print_fn=None)
    assert any("while checking phase 'signals'" in n for n in e.value.__notes__)
    assert not (tmp_path / "results.json").exists()


def test_logged_phase_step_counts_each_phases_own_steps_across_a_resume(tmp_path):
    _tiny_run(tmp_path, total_steps=7)  # a,a,b,a,a,b,a
    _tiny_run(tmp_path, total_steps=12)
    rows = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    last = {}
    for r in rows:  # Logged every 3 steps (and at the end of each run).
        last[(r["step"], r["phase"])] = r["phase_step"]
    # After step 12 of a,a,b: a ran 8 times, b 4 times; after step 6: a 4, b 2.
    assert last[(12, "a")] == 8 and last[(12, "b")] == 4
    assert last[(6, "a")] == 4 and last[(6, "b")] == 2
    assert last[(9, "a")] == 6 and last[(9, "b")] == 3

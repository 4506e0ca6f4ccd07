"""Adaptive and time-varying schedules: each rule against a hand computation,
determinism, exact resume from JSON state, bad input, and the loop's feedback
and evaluation hook."""

import collections
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import alternating
from alternating import metrics, schedules
from alternating.models import MLP

AB = ["a", "b"]


# --- interpolated --------------------------------------------------------------------------


def _interp(mode, **kw):
    return schedules.make_schedule({"name": "interpolated", "mode": mode,
                                    "points": [[0, {"a": 1.0}], [100, {"b": 0.5, "c": 0.5}]],
                                    **kw}, ["a", "b", "c"], seed=1)


def test_interpolated_modes_match_their_formulas():
    np.testing.assert_allclose(_interp("linear").probabilities(25), [0.75, 0.125, 0.125])
    np.testing.assert_allclose(_interp("piecewise").probabilities(99), [1, 0, 0])
    np.testing.assert_allclose(_interp("piecewise").probabilities(100), [0, 0.5, 0.5])
    w = (math.exp(2.5) - 1) / (math.exp(5) - 1)  # k=5, f=1/2
    np.testing.assert_allclose(_interp("exponential").probabilities(50), [1 - w, w / 2, w / 2])
    np.testing.assert_allclose(_interp("sigmoid").probabilities(50), [0.5, 0.25, 0.25])
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    w = (s(2 * (0.2 - 0.5)) - s(-1)) / (s(1) - s(-1))  # k=2, f=0.2
    np.testing.assert_allclose(_interp("sigmoid", sharpness=2).probabilities(20), [1 - w, w / 2, w / 2])
    # Outside the points: the end vectors.
    np.testing.assert_allclose(_interp("linear").probabilities(10**6), [0, 0.5, 0.5])


def test_interpolated_draws_follow_the_probabilities_and_plan_matches():
    s = _interp("linear")
    seq = s.plan(0, 100)
    assert seq[0] == "a"  # p_a = 1 at step 0
    assert s.plan(0, 100) == [_interp("linear").next_phase(i) for i in range(100)]
    late = collections.Counter(s.plan(100, 4000))
    assert late["a"] == 0 and abs(late["b"] / 4000 - 0.5) < 0.03
    # Over steps 0..99, E[#a] = sum_t (1 - t/100) = 50.5.
    counts = [collections.Counter(_interp("linear", seed=k).plan(0, 100))["a"] for k in range(40)]
    assert abs(np.mean(counts) - 50.5) < 2.0
    assert _interp("linear", seed=2).plan(0, 100) != seq
    assert set(s.log_scalars(25)) == {"p_a", "p_b", "p_c"}


# --- a driver that plays the loop's feedback protocol ---------------------------------------


def _drive(sched, steps, metric_fn, start=0, evals_fn=None):
    """Runs the loop's order on the host: next_phase, then feedback every fe steps."""
    fe = sched.feedback_every or 1
    seq, pending = [], []
    for t in range(start, start + steps):
        p = sched.next_phase(t)
        seq.append(p)
        pending.append((t, p, metric_fn(t, p)))
        if (t + 1) % fe == 0:
            for rec in pending:
                sched.observe(*rec)
            pending = []
            if sched.feedback_evals and sched.needs_eval(t + 1):
                sched.observe_eval(t + 1, evals_fn(t + 1))
    return seq


def _noisy(t, p):
    rng = np.random.default_rng((t, len(p)))
    return {"loss": 1.0 + (p == "b") + 0.1 * rng.standard_normal(),
            "abs_advantage": {"a": 0.2, "b": 0.6}.get(p, 0.1) + 0.05 * rng.random(),
            "grad_norm": 2.0 / (1 + t / 50) + 0.1 * rng.random()}


def _group_evals(t):
    # A known linear mixing law cannot be replayed from a driver without the
    # phases; a slowly falling loss per group stands in.
    return {"val_a": {"loss": 2.0 - 0.001 * t}, "val_b": {"loss": 3.0 - 0.002 * t}}


SPECS = [
    {"name": "ucb", "metric": "abs_advantage", "window": 20, "feedback_every": 5},
    {"name": "multiplicative_weights", "eta": 0.5, "feedback_every": 5},
    {"name": "sasr", "sft": "a", "rl": "b", "warmup_steps": 20, "feedback_every": 5,
     "warmup_window": 5},
    {"name": "loss_shift", "react": "b", "order": ["a"], "min_count": 5, "z": 2.0,
     "hold_steps": 7, "feedback_every": 5},
    {"name": "aioli", "evals": {"a": "val_a", "b": "val_b"}, "probe_steps": 5,
     "exploit_steps": 10},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
def test_resume_from_json_state_gives_the_identical_future(spec):
    straight = schedules.make_schedule(spec, AB, seed=7)
    seq = _drive(straight, 160, _noisy, evals_fn=_group_evals)
    first = schedules.make_schedule(spec, AB, seed=7)
    head = _drive(first, 80, _noisy, evals_fn=_group_evals)
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = schedules.make_schedule(spec, AB, seed=7)
    resumed.load_state_dict(saved)
    tail = _drive(resumed, 80, _noisy, start=80, evals_fn=_group_evals)
    assert head + tail == seq
    assert len(set(seq)) == 2  # both phases ran: the comparison is not vacuous
    if spec["name"] != "loss_shift":  # the only rule that draws nothing at random
        other = _drive(schedules.make_schedule(spec, AB, seed=8), 160, _noisy,
                       evals_fn=_group_evals)
        assert other != seq


# --- hand computations ----------------------------------------------------------------------


def test_ucb_rule():
    s = schedules.make_schedule({"name": "ucb", "metric": "m", "c": 1.0, "temperature": 0.1}, AB)
    s.observe(0, "a", {"m": 1.0})
    s.observe(1, "b", {"m": 0.0})
    bonus = math.sqrt(2 * math.log(3) / 2)
    np.testing.assert_allclose(s.scores(), [1 + bonus, bonus])
    np.testing.assert_allclose(s.probs[0], 1 / (1 + math.exp(-10)))
    # Sliding window and no exploration.
    s = schedules.make_schedule({"name": "ucb", "metric": "m", "window": 2, "c": 0.0,
                                 "temperature": 1.0}, AB)
    for t, v in enumerate([1.0, 3.0, 5.0]):
        s.observe(t, "a", {"m": v})
    np.testing.assert_allclose(s.scores(), [4.0, 0.0])
    np.testing.assert_allclose(s.probs, [math.exp(4) / (math.exp(4) + 1), 1 / (math.exp(4) + 1)])
    # An unseen phase keeps a large exploration bonus: it is tried.
    s = schedules.make_schedule({"name": "ucb", "metric": "m", "temperature": 0.1}, AB)
    for t in range(9):
        s.observe(t, "a", {"m": 0.5})
    assert s.probs[1] > 0.99


def test_multiplicative_weights_rule():
    s = schedules.make_schedule({"name": "multiplicative_weights", "eta": 0.5, "smoothing": 0.1,
                                 "feedback_every": 3, "reference": {"a": 1.0}}, AB)
    s.observe(0, "a", {"loss": 3.0})
    s.observe(1, "b", {"loss": 1.0})
    np.testing.assert_allclose(s.probs, [0.5, 0.5])  # no update inside a round
    s.observe(2, "a", {"loss": 2.0})  # round end: excess a = mean(2, 1) = 1.5, b = 1
    soft = np.exp([0.75, 0.5]) / np.exp([0.75, 0.5]).sum()
    np.testing.assert_allclose(s.probs, 0.9 * soft + 0.05)
    s.observe(3, "a", {"loss": 1.0})
    s.observe(4, "a", {"loss": 0.5})
    s.observe(5, "a", {"loss": 1.0})  # a's excess 0 now; b keeps its last excess 1
    soft = np.exp([0.75, 1.0]) / np.exp([0.75, 1.0]).sum()
    np.testing.assert_allclose(s.probs, 0.9 * soft + 0.05)


def test_sasr_rule():
    s = schedules.make_schedule({"name": "sasr", "sft": "a", "rl": "b", "warmup_steps": 4,
                                 "warmup_window": 2, "feedback_every": 2}, AB, seed=3)
    assert [s.next_phase(t) for t in range(4)] == ["a"] * 4
    for t, g in enumerate([9.0, 9.0, 2.0, 4.0]):
        s.observe(t, "a", {"grad_norm": g})
    assert s.g_warm == 3.0 and s.p_sft() == 1.0  # min(1, 4/3)
    assert [s.next_phase(t) for t in range(4, 50)] == ["a"] * 46
    s.observe(5, "b", {"grad_norm": 100.0})  # RL steps do not move the SFT norm
    s.observe(6, "a", {"grad_norm": 1.5})
    assert s.p_sft() == 0.5
    seq = [s.next_phase(t) for t in range(8, 8008)]
    assert abs(seq.count("a") / 8000 - 0.5) < 0.02
    s.observe(8, "a", {"grad_norm": 0.3})
    assert s.p_sft() == pytest.approx(0.1)


def test_loss_shift_rule():
    s = schedules.make_schedule({"name": "loss_shift", "order": ["a"], "react": "b", "z": 3.0,
                                 "decay": 0.5, "min_count": 3, "hold_steps": 5,
                                 "feedback_every": 10}, AB)
    xs = [1.0, 2.0, 1.0, 2.0]
    mean, var = xs[0], 0.0
    for x in xs[1:]:
        d = x - mean
        mean, var = mean + 0.5 * d, 0.5 * (var + 0.5 * d * d)
    for t, x in enumerate(xs):
        s.observe(t, "a", {"loss": x})
    assert s.mean == pytest.approx(mean) and s.var == pytest.approx(var)
    s.observe(4, "a", {"loss": mean + 2.9 * math.sqrt(var)})  # inside z = 3: absorbed
    assert s.shifts == [] and s.count == 5
    s.observe(5, "a", {"loss": 100.0})  # a shift at step 5, acted on at the next feedback point 10
    assert s.shifts == [5]
    assert [s.next_phase(t) for t in range(9, 17)] == ["a"] + ["b"] * 5 + ["a", "a"]
    # Without a reaction phase: move on to the next phase of the order for good.
    s = schedules.make_schedule({"name": "loss_shift", "order": ["a", "b"], "min_count": 3,
                                 "feedback_every": 4, "decay": 0.5}, AB)
    for t, x in enumerate([1.0, 1.1, 0.9, 1.0, 50.0]):
        s.observe(t, "a", {"loss": x})
    assert s.next_phase(7) == "a" and s.next_phase(8) == "b" and s.next_phase(10**5) == "b"


def _law_evals(a_true, sched, losses):
    """Eval losses that follow a linear mixing law over each probe's proportions."""
    def at(step):
        return {f"val_{p}": {"loss": float(losses[i])} for i, p in enumerate(sched.phases)}
    return at


def test_aioli_estimates_the_mixing_law_and_updates_by_exponentiated_gradient():
    s = schedules.make_schedule({"name": "aioli", "evals": {"a": "val_a", "b": "val_b"},
                                 "probe_steps": 1, "exploit_steps": 2, "eta": 0.2, "ema": 0.1},
                                AB)
    assert s.round_len == 4 and s.feedback_every == 1
    q = np.array([[0.625, 0.375], [0.375, 0.625]])
    np.testing.assert_allclose(s.q, q)
    assert [s.needs_eval(t) for t in range(1, 9)] == [False, True, True, True, False, True, True, True]
    a_true = np.array([[0.4, 0.1], [0.0, 0.2]])  # group b learns only from b
    losses = np.array([3.0, 4.0])
    for step in (2, 3, 4):  # boundaries: start of probe 1, start of probe 2, end
        s.observe_eval(step, {"val_a": {"loss": losses[0]}, "val_b": {"loss": losses[1]}})
        losses = losses - a_true @ q[step - 2] if step < 4 else losses
    a_hat = a_true / 0.4
    np.testing.assert_allclose(s.A, a_hat, atol=1e-12)
    p = np.array([0.5, 0.5]) * np.exp(0.2 * a_hat.sum(axis=0))
    np.testing.assert_allclose(s.probs, p / p.sum())
    # During probe j the draws follow q^j; while exploiting, p.
    np.testing.assert_allclose(s.current_probs(6), q[0])
    np.testing.assert_allclose(s.current_probs(4), s.probs)
    # Second round: the estimate is smoothed with the first.
    a2 = np.array([[0.2, 0.0], [0.1, 0.3]])
    for step in (6, 7, 8):
        s.observe_eval(step, {"val_a": {"loss": losses[0]}, "val_b": {"loss": losses[1]}})
        losses = losses - a2 @ q[step - 6] if step < 8 else losses
    np.testing.assert_allclose(s.A, 0.1 * a_hat + 0.9 * a2 / 0.3, atol=1e-12)


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("spec,match", [
    ({"name": "interpolated", "points": [[0, {"a": 0.5, "b": 0.6}]]}, r"sum to 1\.1, not 1"),
    ({"name": "interpolated", "points": [[0, {"a": -0.5, "b": 1.5}]]}, "must be finite and >= 0"),
    ({"name": "interpolated", "points": [[0, {"z": 1.0}]]}, r"unknown phase\(s\) \['z'\]; the phases are \['a', 'b'\]"),
    ({"name": "interpolated", "points": [[0, [1.0]]]}, "1 probabilities for 2 phases"),
    ({"name": "interpolated", "points": [[5, {"a": 1}], [5, {"b": 1}]]}, "strictly increasing"),
    ({"name": "interpolated", "points": [[0, {"a": 1}]], "mode": "cubic"}, r"mode='cubic'; valid: \['piecewise'"),
    ({"name": "ucb", "window": 0}, r"window=0; it must be an integer >= 1"),
    ({"name": "ucb", "temperature": 0.0}, r"temperature=0\.0 is out of range; it must be in \(0\.0, inf\)"),
    ({"name": "ucb", "temperature": -1}, "temperature=-1 is out of range"),
    ({"name": "ucb", "c": -1}, r"c=-1 is out of range; it must be in \[0\.0, inf\]"),
    ({"name": "ucb", "feedback_every": 0}, "feedback_every=0"),
    ({"name": "multiplicative_weights", "smoothing": 1.5}, r"smoothing=1\.5 is out of range"),
    ({"name": "multiplicative_weights", "reference": {"q": 1.0}}, r"unknown phase\(s\) \['q'\]"),
    ({"name": "sasr", "sft": "a", "rl": "z"}, r"unknown phase\(s\) \['z'\]"),
    ({"name": "sasr", "sft": "a", "rl": "b", "warmup_steps": 15}, "multiple of feedback_every=10"),
    ({"name": "loss_shift", "order": ["a"], "react": "a"}, "must be a different phase"),
    ({"name": "loss_shift", "z": 0}, r"z=0 is out of range"),
    ({"name": "aioli"}, r"give evals=\{phase: eval set name\}"),
    ({"name": "aioli", "evals": {"a": "va"}}, r"no evaluation set for phase\(s\) \['b'\]"),
    ({"name": "aioli", "evals": {"a": "va", "b": "vb"}, "exploit_steps": 75}, "multiple of probe_steps=50"),
    ({"name": "aioli", "evals": {"a": "va", "b": "vb"}, "probe_weight": 0.4}, r"probe_weight=0\.4 is out of range"),
    ({"name": "aioli", "evals": {"a": "va", "b": "vb"}, "init": {"a": 0.7, "b": 0.7}}, "not 1"),
    ({"name": "ucb", "windw": 3}, r"unknown argument\(s\) \['windw'\]; valid: \["),
])
def test_bad_input_is_refused_naming_the_field(spec, match):
    with pytest.raises(ValueError, match=match):
        schedules.make_schedule(spec, AB)


def test_check_feedback_names_missing_metrics_and_eval_sets():
    s = schedules.make_schedule({"name": "ucb", "metric": "abs_advantage"}, AB)
    with pytest.raises(ValueError, match=r"needs metric\(s\) \['abs_advantage'\] from phase 'a', "
                                         r"which returns \['grad_norm', 'loss', 'phase_step'\]"):
        schedules.check_feedback(s, {"a": ["grad_norm", "loss"], "b": ["abs_advantage"]})
    schedules.check_feedback(s, {"a": ["abs_advantage"], "b": ["abs_advantage"]})
    sasr = schedules.make_schedule({"name": "sasr", "sft": "a", "rl": "b"}, AB)
    schedules.check_feedback(sasr, {"a": ["grad_norm"], "b": ["loss"]})  # rl needs nothing
    aioli = schedules.make_schedule({"name": "aioli", "evals": {"a": "va", "b": "vb"}}, AB)
    with pytest.raises(ValueError, match=r"evaluation set\(s\) \['vb'\]; the run's evaluation "
                                         r"sets are \['va'\]"):
        schedules.check_feedback(aioli, {"a": ["loss"], "b": ["loss"]}, ["va"])


# --- through the loop -----------------------------------------------------------------------

MODEL = MLP(features=(16, 10))


def _loss(params, batch, rng, extras):
    logits = MODEL.apply({"params": params}, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean(), {}


def _run(tmp_path, schedule, total_steps=24, evals=None):
    data = {g: {"dataset": "digits", "batch_size": 32, "transforms": ["flatten"]} for g in AB}
    phases = [alternating.Phase(g, loss=_loss, data=g, optimizer={"name": "adam", "lr": 1e-2})
              for g in AB]
    return alternating.train(
        phases=phases, schedule=schedule, data=data, evals=evals,
        init=lambda rng: MODEL.init(rng, jnp.zeros((1, 64)))["params"],
        workdir=str(tmp_path), total_steps=total_steps, progress=False, plot=False,
        print_fn=None, log_every_steps=4)


def test_loop_feeds_aioli_its_eval_sets_only_at_probe_boundaries_and_logs_probabilities(tmp_path):
    evals = {f"val_{g}": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                          "phase": g, "batch_size": 120} for g in AB}
    spec = {"name": "aioli", "evals": {"a": "val_a", "b": "val_b"}, "probe_steps": 2,
            "exploit_steps": 4}
    sched = schedules.make_schedule(spec, AB)
    seen = []
    orig = sched.observe_eval
    sched.observe_eval = lambda step, res: (seen.append((step, sorted(res))), orig(step, res))
    _run(tmp_path, sched, total_steps=24, evals=evals)
    # Round = 4 exploit + 2 probes of 2 steps: boundaries 4, 6, 8 then 12, 14, 16 then 20, 22, 24.
    assert [s for s, _ in seen] == [4, 6, 8, 12, 14, 16, 20, 22, 24]
    assert seen[0][1] == ["val_a", "val_b"]
    assert sched.A is not None and np.isfinite(sched.A).all()
    rows = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "schedule"]
    assert [r["step"] for r in rows] == [4, 8, 12, 16, 20, 24]
    assert all(r["p_a"] + r["p_b"] == pytest.approx(1.0) for r in rows)


def test_loop_refuses_a_feedback_metric_no_phase_returns_before_compiling(tmp_path):
    with pytest.raises(ValueError, match=r"needs metric\(s\) \['abs_advantage'\] from phase 'a'"):
        _run(tmp_path, {"name": "ucb", "metric": "abs_advantage"})
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ValueError, match=r"evaluation set\(s\) \['val_a', 'val_b'\]"):
        _run(tmp_path, {"name": "aioli", "evals": {"a": "val_a", "b": "val_b"}})


@pytest.fixture(scope="module")
def ucb_run(tmp_path_factory):
    """The workdir of one 16-step UCB run on the loss (feedback every 4), read by two tests."""
    path = tmp_path_factory.mktemp("ucb")
    _run(path, {"name": "ucb", "metric": "loss", "feedback_every": 4}, total_steps=16)
    return path


def test_loop_runs_ucb_on_the_loss_and_writes_probabilities(ucb_run):
    rows = [r for r in metrics.read_jsonl(ucb_run / "metrics.jsonl") if r["split"] == "schedule"]
    assert len(rows) == 4 and {"p_a", "p_b"} <= set(rows[-1])
    assert rows[-1]["p_a"] != 0.5  # moved by feedback


def test_plot_probabilities_reads_the_logged_probabilities(tmp_path, ucb_run):
    from alternating import plots
    with pytest.raises(FileNotFoundError, match="no schedule probabilities"):
        plots.plot_probabilities(tmp_path)
    probs = plots.schedule_probabilities(ucb_run)
    assert set(probs) == {"a", "b"}
    steps, pa = probs["a"]
    assert steps.tolist() == [4, 8, 12, 16]
    np.testing.assert_allclose(pa + probs["b"][1], 1.0)
    out = plots.plot_probabilities(ucb_run)
    assert out.name == "probabilities.png" and out.read_bytes()[:4] == b"\x89PNG"
    assert out.stat().st_size > 5000


@pytest.mark.slow
def test_loop_resume_of_an_adaptive_schedule_is_exact_at_a_feedback_point(tmp_path):
    spec = {"name": "ucb", "metric": "loss", "feedback_every": 4, "temperature": 0.05}
    straight = _run(tmp_path / "straight", spec, total_steps=16)
    _run(tmp_path / "split", spec, total_steps=8)  # checkpoint at step 8, a feedback point
    resumed = _run(tmp_path / "split", spec, total_steps=16)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(straight.params),
                 jax.device_get(resumed.params))
    read = lambda d: json.loads((d / "results.json").read_text())["steps_per_phase"]  # noqa: E731
    assert read(tmp_path / "straight") == read(tmp_path / "split")


@pytest.mark.slow
def test_adaptive_schedule_from_an_ml_collections_config(tmp_path):
    import os
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs import default
    cfg = default.get_config("smoke").unlock()
    cfg.schedule = {"name": "interpolated", "mode": "linear",
                    "points": [[0, {"images": 1.0}], [cfg.total_steps, {"signals": 1.0}]]}
    alternating.train_and_evaluate(cfg, str(tmp_path), progress=False, plot=False, print_fn=None)
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["schedule"]["name"] == "interpolated"
    assert sum(res["steps_per_phase"].values()) == cfg.total_steps
    assert min(res["steps_per_phase"].values()) > 0  # both ends of the interpolation ran
    cfg.schedule = {"name": "ucb", "metric": "no_such_metric"}
    with pytest.raises(ValueError, match=r"needs metric\(s\) \['no_such_metric'\]"):
        alternating.train_and_evaluate(cfg, str(tmp_path / "bad"), progress=False, print_fn=None)


def test_aioli_shuffled_probe_order_is_seeded_and_solved_in_that_order():
    s = schedules.make_schedule({"name": "aioli", "evals": {p: f"val_{p}" for p in "abc"},
                                 "probe_steps": 1, "exploit_steps": 1, "shuffle_probes": True},
                                ["a", "b", "c"], seed=4)
    orders = [s.probe_order(r).tolist() for r in range(6)]
    assert all(sorted(o) == [0, 1, 2] for o in orders) and len({tuple(o) for o in orders}) > 1
    order = s.probe_order(0)
    for j in range(3):  # round 0: step 0 exploits, steps 1..3 probe in `order`
        np.testing.assert_allclose(s.current_probs(1 + j), s.q[order[j]])
    a_true = np.array([[0.3, 0.1, 0.0], [0.0, 0.2, 0.1], [0.1, 0.0, 0.4]])
    losses = np.array([3.0, 3.0, 3.0])
    for j, step in enumerate((1, 2, 3, 4)):  # boundaries of the three probes
        s.observe_eval(step, {f"val_{p}": {"loss": losses[i]} for i, p in enumerate("abc")})
        if j < 3:
            losses = losses - a_true @ s.q[order[j]]
    np.testing.assert_allclose(s.A, a_true / 0.4, atol=1e-12)

"""The loop's parts, each without a full run: options, triggers, resume start-up,
non-finite handling, the registry, and the transfers a run makes."""

import jax
import numpy as np
import pytest
from executor_test import _tiny_run

from alternating import metrics, options, parallel, registry, resume, triggers
from alternating.nonfinite import NonFiniteError, Policy
from alternating.schedules import make_schedule


# --- Options ----------------------------------------------------------------------------


def test_options_defaults_validation_and_unknown_keywords():
    o = options.parse({"total_steps": 10.0, "seed": 3})
    assert (o.total_steps, o.seed, o.log_every_steps, o.executor) == (10, 3, 100, "auto")
    for values, match in [
        ({}, r"total_steps is required"),
        ({"total_steps": 5, "totl": 1}, r"unknown option\(s\) \['totl'\]; valid options: \["),
        ({"total_steps": 2.5}, r"total_steps=2.5; it must be a whole number"),
        ({"total_steps": 5, "ema_decay": float("nan")}, r"ema_decay=nan; it must be finite"),
        ({"total_steps": 5, "max_checkpoints_to_keep": 0}, r"max_checkpoints_to_keep=0; it must be >= 1"),
        ({"total_steps": 5, "log_every_steps": True}, r"log_every_steps=True; it must be a number"),
        ({"total_steps": 5, "nan_policy": "ignore"}, r"valid policies: \['raise', 'skip'\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            options.parse(values)


def test_every_option_is_declared_once_with_its_properties():
    assert "total_steps" in options.RESUME_SAFE_FIELDS and "seed" not in options.RESUME_SAFE_FIELDS
    assert set(options.NOT_WITH_SEEDS) == {"checkpoint_every_steps", "nan_policy", "init_from",
                                           "sharding_rules", "keep_best"}
    from alternating import experiment
    assert set(options.FIELDS) <= set(experiment.TOP_LEVEL)  # the config path reads them all
    assert all(options.doc(n) for n in options.FIELDS)


# --- Triggers ---------------------------------------------------------------------------


def test_when_due_and_next_fixed():
    w = triggers.When(every=4, steps=(3,), end=True, phase_end=("a",))
    assert w.due(4, 10, None) == ("every",)
    assert w.due(3, 10, "a") == ("steps", "phase_end")
    assert w.due(10, 10, "b") == ("end",)
    assert w.due(5, 10, None) == ()
    assert [w.next_fixed(s) for s in (0, 3, 4, 7)] == [3, 4, 8, 8]


def test_phase_ends_and_stops_from_a_plan():
    sched = make_schedule({"name": "alternate", "pattern": [["a", 3], ["b", 2]]}, ["a", "b"])
    ends = triggers.PhaseEnds(sched, total_steps=12)
    assert [(s, ends.ended(s)) for s in range(13) if ends.ended(s)] == [
        (3, "a"), (5, "b"), (8, "a"), (10, "b"), (12, "a")]
    only_b = triggers.When(phase_end=("b",))
    stops = triggers.Stops([4], [only_b], ends, horizon=100, total_steps=12)
    assert [s for s in range(1, 13) if stops(s)] == [4, 5, 8, 10, 12]
    assert [stops.next_after(s) for s in (0, 4, 5, 8, 10)] == [4, 5, 8, 10, 12]


def test_parse_when_refuses_what_can_never_fire():
    with pytest.raises(ValueError, match=r"h.when.steps contains 0"):
        triggers.parse_when({"steps": [0]}, "h", total_steps=5)
    with pytest.raises(ValueError, match=r"h.when.every=-1"):
        triggers.parse_when({"every": -1}, "h")
    assert triggers.parse_when({"phase_end": "a"}, "h", phases=["a"]).phase_end == ("a",)


# --- Non-finite handling ------------------------------------------------------------------


def _table(rows, phases=("a",)):
    names = {p: ["loss", "skipped"] for p in phases}
    return metrics.StepTable.from_rows(rows, list(phases), names)


def test_policy_raise_names_step_phase_and_metric():
    p = Policy("raise", ["a"])
    table = _table([(1, "a", {"loss": 1.0, "skipped": 0.0}), (2, "a", {"loss": np.nan, "skipped": 0.0})])
    with pytest.raises(NonFiniteError, match=r"non-finite loss at step 2 in phase 'a'"):
        p.reduce(table)


def test_policy_skip_counts_streaks_and_keeps_aux_nan_of_kept_updates():
    p = Policy("skip", ["a"], max_consecutive_skips=3)
    agg = p.reduce(_table([(1, "a", {"loss": np.nan, "skipped": 1.0}),
                           (2, "a", {"loss": 2.0, "skipped": 0.0})]))
    assert (agg["a"]["loss"], agg["a"]["skipped"], p.total) == (2.0, 1.0, {"a": 1})
    assert p.streak == {"a": 0}
    # A NaN in an auxiliary metric of a kept update is logged, not fatal.
    names = {"a": ["aux", "loss", "skipped"]}
    t = metrics.StepTable.from_rows([(3, "a", {"aux": np.nan, "loss": 1.0, "skipped": 0.0})],
                                    ["a"], names)
    assert np.isnan(p.reduce(t)["a"]["aux"])
    with pytest.raises(NonFiniteError, match=r"3 of its steps in a row"):
        p.reduce(_table([(s, "a", {"loss": np.nan, "skipped": 1.0}) for s in (4, 5, 6)]))
    state = p.state_dict()
    q = Policy("skip", ["a"])
    q.load_state_dict(state)
    assert q.state_dict() == state


# --- Resume start-up order ------------------------------------------------------------------


class _FakeCheckpointer:
    directory = "ckpt"

    def __init__(self, restored):
        self.restored = restored

    def restore_latest_good(self, target, check):
        return self.restored


def test_start_order_checkpoint_then_init_from_then_scratch(monkeypatch):
    said = []
    kw = dict(target=None, config={}, scratch=lambda: "scratch", from_params=None,
              shardings=None, replicated=None, say=said.append)
    restored = (7, {"state": "saved", "schedule": {"s": 1}, "data": {"d": 2},
                    "meta": {"host": {"records": []}}})
    st = resume.start(_FakeCheckpointer(restored), init_from={"workdir": "x"}, **kw)
    assert (st.state, st.step, st.resumed, st.schedule, st.data) == ("saved", 7, True, {"s": 1},
                                                                     {"d": 2})
    assert said == ["resumed from ckpt at step 7", "  (init_from ignored: this workdir has its "
                    "own checkpoint)"]
    monkeypatch.setattr(resume, "load_init_from", lambda *a: "from other run")
    st = resume.start(_FakeCheckpointer(None), init_from={"workdir": "x"}, **kw)
    assert (st.state, st.step, st.resumed) == ("from other run", 0, False)
    st = resume.start(_FakeCheckpointer(None), init_from=None, **kw)
    assert (st.state, st.resumed) == ("scratch", False)


# --- Registry -----------------------------------------------------------------------------


def test_registry_names_paths_objects_and_one_error_text():
    reg = registry.Registry("widget")
    reg.register("w", int)
    assert reg.resolve("w", "f") is int
    assert reg.resolve("numpy:float32", "f") is np.float32
    assert reg.resolve(float, "f") is float
    with pytest.raises(ValueError, match=r"f='v' is not a registered widget; valid names: \['w'\]"):
        reg.resolve("v", "f")
    with pytest.raises(ValueError, match=r"f: cannot import 'numpy:nope': module 'numpy' has no"):
        reg.resolve("numpy:nope", "f")
    with pytest.raises(ValueError, match=r"already registered"):
        reg.register("w", str)
    # Scheme code registers itself on the first miss, never at import of the package root.
    assert "admm_primal" in registry.LOSSES and "seq_model" in registry.MODELS


# --- Transfers ----------------------------------------------------------------------------


def test_no_unplanned_device_to_host_transfer_per_step(tmp_path, monkeypatch):
    """Every host read of a device value during a run is a planned fetch.

    The transfer guard (which the run is under) does nothing on CPU devices,
    whose arrays are host memory; so the test also counts every read of an
    array's host value (``ArrayImpl._value``, what ``np.asarray``,
    ``float`` and ``device_get`` use) made outside ``parallel.fetching()``.
    Runs of 30 and 300 steps make the same number: none per step.
    """
    from jax._src import array as array_impl
    unplanned = []
    original = array_impl.ArrayImpl._value

    def counted(self):
        if not parallel.is_fetching():
            unplanned.append(self.shape)
        return original.fget(self)

    monkeypatch.setattr(array_impl.ArrayImpl, "_value", property(counted))
    mesh = parallel.make_mesh(jax.devices()[:1])
    evals = {"test": {"data": {"dataset": "digits", "split": "test", "transforms": ["flatten"]},
                      "phase": "a", "batch_size": 128}}
    counts = []
    for n in (30, 300):
        unplanned.clear()
        with jax.transfer_guard_device_to_host("disallow"):
            _tiny_run(tmp_path / str(n), mesh=mesh, total_steps=n, log_every_steps=10,
                      checkpoint_every_steps=100, evals=evals, eval_every_steps=50)
        counts.append(len(unplanned))
    assert counts[0] == counts[1], counts
    assert counts[1] <= 5, counts  # start-up only (the jitted init's host-side checks)


# --- In-step periodic work and the loss's step ---------------------------------------------


def test_a_loss_reads_the_global_and_the_phase_step(tmp_path):
    from executor_test import MODEL
    import alternating
    import optax

    def loss(params, batch, rng, extras, *, step):
        logits = MODEL.apply({"params": params}, batch["x"])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
        return ce, {"gstep": step.global_step, "pstep": step.phase_step}

    phases = [alternating.Phase("a", loss=loss, data="digits",
                                params=[("Dense_0/.*", True), (".*", None)]),
              alternating.Phase("b", loss=loss, data="digits",
                                params=[("Dense_1/.*", True), (".*", None)])]
    _tiny_run(tmp_path, phases=phases, total_steps=6, log_every_steps=1)
    rows = [(r["step"], r["phase"], r["gstep"], r["pstep"])
            for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    # Pattern a, a, b: each row is one step; the loss saw the counts before the step.
    assert rows == [(1, "a", 0, 0), (2, "a", 1, 1), (3, "b", 2, 0), (4, "a", 3, 2),
                    (5, "a", 4, 3), (6, "b", 5, 1)]


def test_periodic_rules_and_resets_run_under_cond():
    """A rule at every=N and an opt-state reset are computed only when due (lax.cond)."""
    import jax.numpy as jnp
    from executor_test import MODEL, _loss
    from alternating import build
    from alternating.phase import Phase, bind, make_step
    from alternating.state import init_state
    params = MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
    ph = Phase("a", loss=_loss, opt_policy={"reset": "every", "every": 50},
               updates=[{"extra": "t", "rule": "ema", "decay": 0.5, "every": 200}])
    b = bind(ph, 0, params=params)
    state = init_state(params, [b], jax.random.PRNGKey(1), extra_specs={"t": {"kind": "copy"}})
    batch = {"x": jnp.zeros((4, 64)), "y": jnp.zeros((4,), jnp.int32)}
    text = str(jax.make_jaxpr(build.pack_metrics(make_step(b))[0])(state, batch))
    assert text.count("cond[") == 2, text.count("cond[")


def test_the_gradient_norm_can_be_left_out_without_changing_training(tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:1])
    on = _tiny_run(tmp_path / "on", mesh=mesh, total_steps=6)
    off = _tiny_run(tmp_path / "off", mesh=mesh, total_steps=6, grad_norm=False)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(on), jax.device_get(off))
    rows = [r for r in metrics.read_jsonl(tmp_path / "off" / "metrics.jsonl") if r["split"] == "train"]
    assert rows and all("grad_norm" not in r and "loss" in r for r in rows)
    assert any("grad_norm" in r for r in metrics.read_jsonl(tmp_path / "on" / "metrics.jsonl"))
    with pytest.raises(ValueError, match=r"grad_norm=1; it must be True or False"):
        options.parse({"total_steps": 3, "grad_norm": 1})

"""From a config to a run: ``train_and_evaluate(config, workdir) -> TrainState``.

A config (ml_collections, see ``configs/default.py``) is data: the model, the
data streams, the phases (loss name, stream, partition rules, optimizer), the
schedule and the evaluation sets. This module turns it into objects and hands
them to :func:`alternating.loop.train`. Every name is resolved and checked here
or in the module that owns it before anything is compiled.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import ml_collections
from jax.sharding import PartitionSpec

from alternating import checkpoint as ckpt_lib
from alternating import build, loop, models
from alternating import options as options_lib
from alternating.phase import Phase
from alternating.schedules import make_schedule
from alternating.state import TrainState, init_state

# The scheme's fields; the run's options come from alternating.options (declared once).
SCHEME_FIELDS = {
    "extras": "{name: {kind: copy | zeros | ring | init, ...}} (teachers, snapshots, duals)",
    "model": "{name, **kwargs} (name: registered or 'package.module:factory')",
    "data": "{stream: {dataset, split, batch_size, transforms}}",
    "phases": "{phase: {loss, loss_kwargs, data, params, optimizer, opt_policy, updates}}",
    "schedule": "{name, **kwargs} (name: registered or 'package.module:Class')",
    "eval": "{set: {data, phase | loss, batch_size}}",
}
TOP_LEVEL = {**{n: options_lib.doc(n) for n in options_lib.FIELDS}, **SCHEME_FIELDS}
REQUIRED = ("total_steps", "model", "data", "phases")
PHASE_KEYS = ("loss", "loss_kwargs", "data", "params", "optimizer", "opt_policy", "updates",
              "optimizer_group")


def _plain(x: Any) -> Any:
    return x.to_dict() if hasattr(x, "to_dict") else x


def validate(config: Mapping[str, Any]) -> None:
    """Checks the config's shape, naming the field at fault and the valid choices."""
    keys = set(config.keys())
    unknown = sorted(keys - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"config: unknown field(s) {unknown}; valid fields: {sorted(TOP_LEVEL)}.")
    missing = [k for k in REQUIRED if k not in keys or config[k] is None]
    if missing:
        raise ValueError(f"config: missing field(s) {missing}.")
    if not config["phases"]:
        raise ValueError("config.phases is empty; define at least one phase.")
    for name, spec in config["phases"].items():
        bad = sorted(set(spec.keys()) - set(PHASE_KEYS))
        if bad:
            raise ValueError(f"config.phases.{name}: unknown field(s) {bad}; valid: {list(PHASE_KEYS)}.")
        if "loss" not in spec:
            raise ValueError(f"config.phases.{name}: missing 'loss'.")


def phases_from_config(config: Mapping[str, Any]) -> list[Phase]:
    """Builds :class:`Phase` objects from ``config.phases`` (in key order)."""
    out = []
    for name, spec in config["phases"].items():
        spec = _plain(spec)
        rules = spec.get("params")
        out.append(Phase(
            name=name, loss=spec["loss"], data=spec.get("data"),
            params=[tuple(r) for r in rules] if rules is not None else None,
            optimizer=spec.get("optimizer"), loss_kwargs=dict(spec.get("loss_kwargs") or {}),
            opt_policy=spec.get("opt_policy"), updates=tuple(spec.get("updates") or ()),
            optimizer_group=spec.get("optimizer_group")))
    return out


def train_and_evaluate(config: Mapping[str, Any], workdir: str, **overrides) -> TrainState:
    """Trains the scheme a config describes and returns the final TrainState.

    Args:
      config: an ``ml_collections.ConfigDict`` (or plain dict) with the fields in
        ``TOP_LEVEL``.
      workdir: output directory.
      **overrides: passed to :func:`alternating.loop.train` (e.g.
        ``progress=False``, ``mesh=...``).
    """
    validate(config)
    model = models.get_model(config["model"])
    given = {k: _plain(config[k]) for k in options_lib.FIELDS if k in config.keys()}
    if given.get("sharding_rules"):
        given["sharding_rules"] = [(rx, None if spec is None else PartitionSpec(*spec))
                                   for rx, spec in given["sharding_rules"]]
    get = lambda k, d: config[k] if k in config.keys() and config[k] is not None else d
    return loop.train(
        phases=phases_from_config(config),
        schedule=_plain(get("schedule", None)),
        data={k: _plain(v) for k, v in config["data"].items()},
        init=model, model=model, workdir=workdir,
        evals={k: _plain(v) for k, v in get("eval", {}).items()},
        extras={k: _plain(v) for k, v in get("extras", {}).items()},
        config=config, **given, **overrides)


def abstract_state(config: Mapping[str, Any]) -> TrainState:
    """The TrainState a config trains, as ``ShapeDtypeStruct`` leaves (nothing computed)."""
    validate(config)
    model = models.get_model(config["model"])
    phases = phases_from_config(config)
    get = lambda k, d: config[k] if k in config.keys() and config[k] is not None else d
    seed = int(get("seed", 0))
    schedule = make_schedule(_plain(get("schedule", None)), [p.name for p in phases], seed=seed)
    init_rng, state_rng = build.run_rngs(seed)
    bound, _ = build.bind_phases(phases, schedule, model.init, model=model, init_rng=init_rng,
                                 total_steps=int(config["total_steps"]))
    ema = float(get("ema_decay", 0.0))
    specs = {k: _plain(v) for k, v in get("extras", {}).items()}
    return jax.eval_shape(lambda: init_state(model.init(init_rng), bound, state_rng, ema_decay=ema,
                                             extra_specs=specs))


def load_state(workdir: str, step: int | None = None, *,
               target: Any = None) -> tuple[TrainState, ml_collections.ConfigDict | None]:
    """Loads a run's TrainState from its checkpoints, without the training loop.

    Usable from a notebook: ``state, config = alternating.load_state("runs/default")``.

    Args:
      workdir: the run directory (the one given to ``train``/``--workdir``).
      step: a saved step (default: the newest).
      target: the state's structure (a TrainState, or ``abstract_like`` of
        one). Default: rebuilt from the config saved with the checkpoint; for
        runs started from Python without a config, the arrays come back as
        plain nested dicts.

    Returns:
      ``(state, config)``: the state on the first local device, and the config
      the run was trained with (``None`` if it saved none).

    Raises:
      CheckpointError: no checkpoint, no such step, or a target that does not fit.
    """
    ck = ckpt_lib.Checkpointer(workdir, create=False, async_save=False, max_to_keep=None)
    try:
        steps = ck.all_steps()
        if step is None:
            step = steps[-1] if steps else None
        if step is None or step not in steps:
            raise ckpt_lib.CheckpointError(
                f"no checkpoint at step {step} in {workdir!r}; saved steps: {steps}.")
        saved = ck.read_meta(step).get("config") or None
        config = ml_collections.ConfigDict(saved) if saved else None
        if target is None and config is not None:
            target = abstract_state(config)
        if target is not None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                                 sharding=device), target)
            diff = ckpt_lib.structure_diff(ck.metadata(step), target)
            if diff:
                raise ckpt_lib.CheckpointError(
                    f"the checkpoint at step {step} in {workdir!r} does not fit the target:\n"
                    + "\n".join(diff))
        return ck.restore(step, target)["state"], config
    finally:
        ck.close()

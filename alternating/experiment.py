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
from alternating import loop, models, parallel
from alternating.phase import Phase
from alternating.schedules import make_schedule
from alternating.state import TrainState, init_state

TOP_LEVEL = {
    "seed": "run seed (initialization, data order, random schedules)",
    "total_steps": "global steps, all phases together",
    "log_every_steps": "metric logging interval",
    "eval_every_steps": "evaluation interval (0: only at the end)",
    "checkpoint_every_steps": "checkpoint interval (0: only at the end)",
    "max_checkpoints_to_keep": "checkpoints kept on disk",
    "data_dir": "where embedded datasets are prepared (None: TFDS_DATA_DIR or ~/tensorflow_datasets)",
    "ema_decay": "> 0 keeps and evaluates an EMA of the parameters",
    "extras": "{name: {kind: copy | zeros | ring | init, ...}} (teachers, snapshots, duals)",
    "model": "{name, **kwargs}",
    "data": "{stream: {dataset, split, batch_size, transforms}}",
    "phases": "{phase: {loss, loss_kwargs, data, params, optimizer, opt_policy, updates}}",
    "schedule": "{name, **kwargs}",
    "eval": "{set: {data, phase | loss, batch_size}}",
    "nan_policy": "'raise' (stop at a non-finite metric) or 'skip' (drop that update)",
    "max_consecutive_skips": "with nan_policy='skip': stop after this many skips in a row in a phase",
    "init_from": "start from another run: {workdir, step, mode: 'params' | 'state'}",
    "executor": "'host' (a jitted step per step) or 'fused' (chunks of steps in one program)",
    "chunk_steps": "the fused executor's longest chunk",
    "num_seeds": "> 1: that many seeds (seed, seed + 1, ...) vectorized in one program",
    "fsdp": "size of the mesh's fsdp axis (params and optimizer states split over it); 1: data only",
    "sharding_rules": "[[regex over state leaf paths, [mesh axis or None per dim] or None], ...]",
}
REQUIRED = ("total_steps", "model", "data", "phases")
PHASE_KEYS = ("loss", "loss_kwargs", "data", "params", "optimizer", "opt_policy", "updates")


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
            opt_policy=spec.get("opt_policy"), updates=tuple(spec.get("updates") or ())))
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
    get = lambda k, d: config[k] if k in config.keys() and config[k] is not None else d
    fsdp = int(get("fsdp", 1))
    if fsdp > 1 and "mesh" not in overrides:
        overrides["mesh"] = parallel.make_mesh(fsdp=fsdp)
    rules = [(rx, None if spec is None else PartitionSpec(*spec))
             for rx, spec in _plain(get("sharding_rules", []))]
    evals = {k: _plain(v) for k, v in get("eval", {}).items()}
    return loop.train(
        phases=phases_from_config(config),
        schedule=_plain(get("schedule", None)),
        data={k: _plain(v) for k, v in config["data"].items()},
        init=model, model=model, workdir=workdir,
        total_steps=int(config["total_steps"]), seed=int(get("seed", 0)),
        evals=evals,
        log_every_steps=int(get("log_every_steps", 100)),
        eval_every_steps=int(get("eval_every_steps", 0)),
        checkpoint_every_steps=int(get("checkpoint_every_steps", 0)),
        max_checkpoints_to_keep=int(get("max_checkpoints_to_keep", 3)),
        ema_decay=float(get("ema_decay", 0.0)),
        extras={k: _plain(v) for k, v in get("extras", {}).items()},
        data_dir=get("data_dir", None),
        nan_policy=str(get("nan_policy", "raise")),
        max_consecutive_skips=int(get("max_consecutive_skips", 10)),
        init_from=_plain(get("init_from", None)),
        executor=str(get("executor", "host")),
        chunk_steps=int(get("chunk_steps", 100)),
        num_seeds=int(get("num_seeds", 1)),
        sharding_rules=rules,
        config=config, **overrides)


def abstract_state(config: Mapping[str, Any]) -> TrainState:
    """The TrainState a config trains, as ``ShapeDtypeStruct`` leaves (nothing computed)."""
    validate(config)
    model = models.get_model(config["model"])
    phases = phases_from_config(config)
    get = lambda k, d: config[k] if k in config.keys() and config[k] is not None else d
    seed = int(get("seed", 0))
    schedule = make_schedule(_plain(get("schedule", None)), [p.name for p in phases], seed=seed)
    bound, _, (init_rng, state_rng) = loop.bind_phases(
        phases, schedule, model.init, model=model, seed=seed,
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

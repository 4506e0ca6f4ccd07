"""From a config to a run: ``train_and_evaluate(config, workdir) -> TrainState``.

A config (ml_collections, see ``configs/default.py``) is data: the model, the
data streams, the phases (loss name, stream, partition rules, optimizer), the
schedule and the evaluation sets. This module turns it into objects and hands
them to :func:`alternating.loop.train`. Every name is resolved and checked here
or in the module that owns it before anything is compiled.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

import jax
import ml_collections
from jax.sharding import PartitionSpec

from alternating import checkpoint as ckpt_lib
from alternating import build, loop, models
from alternating import hooks as hooks_lib
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
              "optimizer_group", "compute_dtype")


def _plain(x: Any) -> Any:
    return x.to_dict() if hasattr(x, "to_dict") else x


def base_config() -> ml_collections.ConfigDict:
    """Every top-level field of a config (``TOP_LEVEL``) with its default.

    Every config in ``configs/`` starts from this and sets what it changes, so
    any field can be overridden on the command line of any config
    (``--config.num_seeds=3``; configs are locked, and a field a config does
    not hold could not be set). Run options hold their defaults from
    :class:`alternating.options.RunOptions`, typed for the command line:
    numbers as numbers, ``total_steps`` and ``data_dir`` as typed
    placeholders (``None`` until set), the structured options (``init_from``,
    ``sharding_rules``, ``hooks``, ``evaluators``) as fields of any type. The
    scheme's fields (``SCHEME_FIELDS``) are ``None`` until the config sets them.
    (The function lives in the library rather than in ``configs/``: config
    files are loaded by path, so they can import the installed package but not
    a module beside them.)
    """
    placeholder = ml_collections.config_dict.placeholder
    c = ml_collections.ConfigDict()
    for name, field in options_lib.FIELDS.items():
        meta = field.metadata
        default = (field.default if field.default is not dataclasses.MISSING
                   else field.default_factory())
        if meta["kind"] in ("int", "float"):
            kind = int if meta["kind"] == "int" else float
            c[name] = placeholder(kind) if default is None else kind(default)
        elif meta["kind"] == "path":
            c[name] = placeholder(str)
        elif meta["choices"]:
            c[name] = default
        else:
            c[name] = ml_collections.FieldReference(default, field_type=object)
    for name in SCHEME_FIELDS:
        c[name] = None
    return c


def _unknown(kind: str, bad: list[str], valid: Any) -> ValueError:
    """An unknown-field error naming the closest valid field of each unknown one."""
    hints = []
    for b in bad:
        close = difflib.get_close_matches(b, list(valid), n=1)
        if close:
            hints.append(f"{close[0]!r}" + (f" (for {b!r})" if len(bad) > 1 else ""))
    hint = f"did you mean {' and '.join(hints)}? All: " if hints else ""
    return ValueError(f"{kind}: unknown field(s) {bad}; valid fields: {hint}{sorted(valid)}.")


def validate(config: Mapping[str, Any]) -> None:
    """Checks the config's shape, naming the field at fault and the valid choices.

    ``None`` is "unset" for every field (the default; an error only for the
    required ``total_steps``, ``model``, ``data`` and ``phases``). An unknown
    field is named with the closest valid one.
    """
    keys = set(config.keys())
    unknown = sorted(keys - set(TOP_LEVEL))
    if unknown:
        raise _unknown("config", unknown, TOP_LEVEL)
    missing = [k for k in REQUIRED if k not in keys or config[k] is None]
    if missing:
        raise ValueError(f"config: missing field(s) {missing}.")
    if not config["phases"]:
        raise ValueError("config.phases is empty; define at least one phase.")
    for name, spec in config["phases"].items():
        bad = sorted(set(spec.keys()) - set(PHASE_KEYS))
        if bad:
            raise _unknown(f"config.phases.{name}", bad, PHASE_KEYS)
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
            optimizer_group=spec.get("optimizer_group"),
            compute_dtype=spec.get("compute_dtype")))
    return out


def train_and_evaluate(config: Mapping[str, Any], workdir: str, **overrides) -> TrainState:
    """Trains the scheme a config describes and returns the final TrainState.

    Args:
      config: an ``ml_collections.ConfigDict`` (or plain dict) with the fields in
        ``TOP_LEVEL``.
      workdir: output directory.
      **overrides: passed to :func:`alternating.loop.train` (e.g.
        ``progress=False``, ``mesh=...``); a run option given here replaces the
        config's (e.g. ``executor='host'``).
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
        config=config, **{**given, **overrides})


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
    names = [p.name for p in phases]
    hooks = [hooks_lib.resolve_hook(h, f"hooks[{i}]", phases=names)
             for i, h in enumerate(_plain(get("hooks", ())) or ())]
    specs = build.declared_extras({k: _plain(v) for k, v in get("extras", {}).items()}, hooks)
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

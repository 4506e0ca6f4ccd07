"""Resume start-up: where a run starts, in this order.

1. The newest checkpoint in ``WORKDIR/checkpoints`` that restores (damaged
   ones are set aside with a warning); the config may differ only in fields
   that cannot change the trajectory's structure
   (:data:`alternating.options.CONFIG_RESUME_SAFE`).
2. Else ``init_from``: another run's checkpoint, params only or full state.
3. Else from scratch. A fresh start (2 or 3) in a workdir that holds an
   earlier run's logs (``metrics.jsonl``, ``timeline.jsonl``, ``tensorboard/``,
   ``results.json``, ...) moves them to ``WORKDIR/previous/<time>/`` first
   (:func:`alternating.workdir.set_aside_logs`), so the new run's logs are its
   own: a run killed before its first checkpoint and started again writes
   what an uninterrupted run writes. Nothing is deleted.

So re-running the same command after a crash, a kill or a preemption resumes
it, and on CPU the final state is bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from alternating import checkpoint as ckpt_lib
from alternating import options as options_lib
from alternating.options import CONFIG_RESUME_SAFE


@dataclasses.dataclass
class Start:
    """Where a run starts: its state and step, and what a resume restored."""

    state: Any
    step: int = 0
    resumed: bool = False
    schedule: Mapping[str, Any] | None = None  # the schedule's saved state
    data: Mapping[str, Any] | None = None  # {stream: saved iterator state}
    host: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # records, timeline, ...
    changed: list = dataclasses.field(default_factory=list)  # safe config changes


def start(checkpointer: ckpt_lib.Checkpointer, *, target: Any, config: Any, init_from: Any,
          scratch: Callable[[], Any], from_params: Callable[[Any], Any], shardings: Any,
          replicated: Any, say: Callable[[str], None]) -> Start:
    """Restores the newest good checkpoint, else ``init_from``, else ``scratch()``.

    Args:
      checkpointer: this run's checkpoints.
      target: the abstract TrainState (with shardings).
      config: the run's JSON config (compared with the saved one).
      init_from: a parsed ``init_from`` spec (:func:`parse_init_from`) or None.
      scratch: builds the initial state.
      from_params: ``params -> state`` for ``init_from`` in mode 'params'.
      shardings, replicated: the state's shardings; a replicated sharding.
      say: console output.
    """
    changed: list = []

    def fits(step):
        changed[:] = check_resumable(checkpointer, step, target, config)

    resumed = checkpointer.restore_latest_good(target, check=fits)
    if resumed is not None:
        step, restored = resumed
        say(f"resumed from {checkpointer.directory} at step {step}")
        for path, old, new in changed:
            say(f"  config.{path} changed on resume: {old!r} -> {new!r}")
        if init_from:
            say("  (init_from ignored: this workdir has its own checkpoint)")
        return Start(restored["state"], step, True, restored["schedule"], restored["data"],
                     dict(restored["meta"].get("host") or {}), changed)
    if init_from:
        return Start(load_init_from(init_from, target, shardings, replicated, say, from_params))
    return Start(scratch())


def fresh_start_reason(checkpointer: ckpt_lib.Checkpointer | None, init_from: Any) -> str:
    """Why a run starts fresh (for the note that sets an earlier run's logs aside)."""
    if init_from:
        why = f"no checkpoint here; initialized from init_from {init_from['workdir']!r}"
    else:
        why = "no checkpoint here"
    damaged = os.path.join(checkpointer.workdir, ckpt_lib.DAMAGED_DIR) if checkpointer else None
    if damaged and os.path.isdir(damaged) and os.listdir(damaged):
        why += (f"; {len(os.listdir(damaged))} checkpoint(s) set aside as damaged are in "
                f"{ckpt_lib.DAMAGED_DIR}/")
    return why


def parse_init_from(init_from: Any) -> dict[str, Any] | None:
    if not init_from:
        return None
    if isinstance(init_from, (str, os.PathLike)):
        init_from = {"workdir": os.fspath(init_from)}
    spec = dict(init_from.to_dict() if hasattr(init_from, "to_dict") else init_from)
    valid = ("workdir", "step", "mode")
    bad = sorted(set(spec) - set(valid))
    if bad or not spec.get("workdir"):
        raise ValueError(f"init_from={spec}: unknown keys {bad}; give 'workdir' and optionally "
                         f"'step' (default: latest) and 'mode' ('params' or 'state').")
    spec.setdefault("mode", "params")
    spec.setdefault("step", None)
    if spec["mode"] not in ("params", "state"):
        raise ValueError(f"init_from.mode={spec['mode']!r}; valid: ['params', 'state'].")
    return spec


def check_resumable(checkpointer, step, target, config) -> list[tuple[str, Any, Any]]:
    """Refuses a checkpoint this run cannot continue; returns the safe config changes.

    Raises ``CheckpointError`` listing every difference when the saved arrays
    (phases, partitions, model shapes, optimizer structure) or the unsafe
    config fields differ. Any other exception means the checkpoint is damaged.
    """
    diff = ckpt_lib.structure_diff(checkpointer.metadata(step), target)
    if diff:
        raise ckpt_lib.CheckpointError(
            f"the checkpoint at step {step} in {checkpointer.directory} does not fit this run "
            "(its phases, partitions, model shapes or optimizers differ):\n" + "\n".join(diff)
            + "\nUse a new workdir, or start a new run from it with init_from.")
    saved = checkpointer.read_meta(step).get("config") or {}
    if not saved or not config:
        return []
    changes = ckpt_lib.config_diff(with_defaults(saved), with_defaults(config))
    unsafe = [c for c in changes if c[0].split(".")[0].split("[")[0] not in CONFIG_RESUME_SAFE]
    if unsafe:
        lines = "\n".join(f"  config.{p}: {o!r} -> {n!r}" for p, o, n in unsafe)
        raise ckpt_lib.CheckpointError(
            f"the config differs from the one the checkpoint at step {step} in "
            f"{checkpointer.directory} was trained with, in fields a resumed run cannot change:\n"
            f"{lines}\nOnly {list(CONFIG_RESUME_SAFE)} may change on resume. Use a new workdir "
            "(with init_from to start from this checkpoint), or restore the old values.")
    return [c for c in changes if c not in unsafe]


def with_defaults(config: Any) -> Any:
    """A JSON config with every run option present: absent or ``None`` means the default.

    Configs written before every option was declared in every config
    (``alternating.experiment.base_config``) lack some fields; a resume
    compares what the fields mean, not whether they were spelt out.
    """
    if not isinstance(config, Mapping):
        return config
    out = dict(config)
    for name, field in options_lib.FIELDS.items():
        if out.get(name) is None:
            default = (field.default if field.default is not dataclasses.MISSING
                       else field.default_factory())
            out[name] = json.loads(json.dumps(default))
    if not out.get("init_from"):  # "" and None both mean: none
        out["init_from"] = None
    for name in ("eval", "extras"):  # None and {} both mean: none
        if not out.get(name):
            out[name] = {}
    return out


def load_init_from(spec, target, shardings, rep, say, from_params) -> Any:
    """The state of another run's checkpoint (``mode='state'``) or a fresh state from its params.

    Raises:
      CheckpointError: no such checkpoint, or one that does not fit this run.
    """
    other = ckpt_lib.Checkpointer(spec["workdir"], create=False, async_save=False,
                                  max_to_keep=None)
    steps = other.all_steps()
    step = spec["step"] if spec["step"] is not None else (steps[-1] if steps else None)
    if step is None or step not in steps:
        raise ckpt_lib.CheckpointError(
            f"init_from: no checkpoint at step {step} in {spec['workdir']!r}; saved steps: {steps}.")
    if spec["mode"] == "state":
        diff = ckpt_lib.structure_diff(other.metadata(step), target)
        if diff:
            raise ckpt_lib.CheckpointError(
                f"init_from (mode 'state'): the state at step {step} in {spec['workdir']!r} does "
                "not fit this run:\n" + "\n".join(diff) + "\nUse mode 'params' to take only "
                "the parameters.")
        state = other.restore(step, target)["state"]
        state = jax.jit(lambda s: s.replace(step=jnp.zeros((), jnp.int32)),
                        out_shardings=shardings)(state)
    else:
        saved = other.metadata(step)["params"]
        diff = ckpt_lib.structure_diff(saved, target.params)
        if diff:
            raise ckpt_lib.CheckpointError(
                f"init_from: the params at step {step} in {spec['workdir']!r} do not fit this "
                "run's model:\n" + "\n".join(diff))
        raw = other.restore(step, other.abstract_from_metadata(step, rep))["state"]["params"]
        params = jax.tree.unflatten(jax.tree.structure(target.params), jax.tree.leaves(raw))
        state = from_params(params)
    other.close()
    say(f"initialized from {spec['workdir']} step {step} ({spec['mode']})")
    return state


def jsonable_config(config: Any) -> Any:
    if config is None:
        return {}
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    try:
        return json.loads(json.dumps(config, default=str))
    except (TypeError, ValueError):
        return {"repr": repr(config)}


def version() -> str:
    try:
        from importlib.metadata import version
        return version("alternating")
    except Exception:  # not installed (running from a checkout)
        return "unknown"

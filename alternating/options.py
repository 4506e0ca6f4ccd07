"""Run options: every knob of a run, declared once.

Each option is a field of :class:`RunOptions` with its default, its doc,
whether a resumed run may change it (``resume_safe``: it changes neither what
a checkpoint holds nor how the saved schedule and data continue) and whether
vectorized seeds carry it out (``seeds``). The config path
(:func:`alternating.train_and_evaluate`, ``config.<field>``) and the Python
path (``alternating.train(**options)``) both build a :class:`RunOptions`
with :func:`parse`, so defaults, validation and error texts are the same.
An unknown keyword is an error listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Mapping, Sequence

NAN_POLICIES = ("raise", "skip")
EXECUTORS = ("auto", "host", "fused")


def _opt(default: Any, doc: str, *, resume_safe: bool = False, seeds: bool = True,
         kind: str = "any", low: float | None = None, high: float | None = None,
         high_open: bool = False, choices: tuple = (), what: str = "") -> Any:
    meta = {"doc": doc, "resume_safe": resume_safe, "seeds": seeds, "kind": kind,
            "low": low, "high": high, "high_open": high_open, "choices": choices, "what": what}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a scheme is run (the scheme itself: phases, schedule, data, model, evals)."""

    total_steps: int = _opt(None, "global steps, all phases together (required)",
                            resume_safe=True, kind="int", low=1)
    seed: int = _opt(0, "run seed (initialization, data order, random schedules)", kind="int",
                     low=0)
    log_every_steps: int = _opt(100, "metric logging interval (and the non-finite check)",
                                resume_safe=True, kind="int", low=0)
    eval_every_steps: int = _opt(0, "evaluation interval (0: only at the end)",
                                 resume_safe=True, kind="int", low=0)
    checkpoint_every_steps: int = _opt(0, "checkpoint interval (0: only at the end and on a "
                                       "stop signal)", resume_safe=True, seeds=False,
                                       kind="int", low=0)
    max_checkpoints_to_keep: int = _opt(3, "newest checkpoints kept on disk", resume_safe=True,
                                        kind="int", low=1)
    data_dir: Any = _opt(None, "where embedded datasets are prepared (None: TFDS_DATA_DIR or "
                         "~/tensorflow_datasets)", resume_safe=True, kind="path")
    ema_decay: float = _opt(0.0, "> 0 keeps and evaluates an EMA of the parameters "
                            "(extras['ema'])", kind="float", low=0.0, high=1.0, high_open=True)
    nan_policy: str = _opt("raise", "'raise' (stop at a non-finite metric) or 'skip' (drop "
                           "that update)", resume_safe=True, seeds=False, choices=NAN_POLICIES,
                           what="policies")
    max_consecutive_skips: int = _opt(10, "with nan_policy='skip': stop after this many skips "
                                      "in a row in one phase", resume_safe=True, kind="int",
                                      low=1)
    init_from: Any = _opt(None, "start from another run: {workdir, step, mode: 'params' | "
                          "'state'} or its workdir", resume_safe=True, seeds=False)
    executor: str = _opt("auto", "'host' (a jitted step per step), 'fused' (chunks of steps "
                         "in one program) or 'auto' (fused when the schedule plans ahead and "
                         "the step is not slower in a loop, else host)", resume_safe=True, choices=EXECUTORS,
                         what="executors")
    chunk_steps: int = _opt(100, "the fused executor's longest chunk", resume_safe=True,
                            kind="int", low=1, what="the fused executor needs an integer >= 1 "
                            "(steps per compiled chunk, e.g. 100)")
    num_seeds: int = _opt(1, "> 1: that many seeds (seed, seed + 1, ...) vectorized in one "
                          "program", kind="int", low=1, what="it must be an integer >= 1")
    replica_seeds: Any = _opt(None, "num_seeds > 1: each replica's seed (default seed, seed + "
                              "1, ...); seeds may repeat when replicas differ in replica_lr")
    replica_lr: Any = _opt(None, "num_seeds > 1: {phase: [learning rate per replica]}, the "
                           "peak lr of each listed phase's schedule per replica (one program "
                           "trains an lr grid; see alternating.seeds)")
    grad_norm: bool = _opt(True, "report each step's gradient norm (a metric, and the "
                           "nan_policy='skip' check); off saves a pass over the gradients",
                           resume_safe=True, kind="bool")
    device_data_mb: float = _opt(512.0, "device memory (MiB per device) for device-resident "
                                 "data: streams that fit are placed on the devices once and "
                                 "each step gathers its batch there (0: gather on the host)",
                                 resume_safe=True, kind="float", low=0.0)
    fsdp: int = _opt(1, "size of the mesh's fsdp axis (params and optimizer states split "
                     "over it); 1: data parallel only", resume_safe=True, kind="int", low=1)
    sharding_rules: Any = _opt((), "[[regex over state leaf paths, [mesh axis or None per "
                               "dim] or None], ...]", resume_safe=True, seeds=False)
    hooks: Any = _opt((), "[{name: hook, when: {...}, **kwargs} or a Hook], run at their "
                      "declared moments (see alternating.hooks)")
    evaluators: Any = _opt((), "[{name: evaluator, when: {...}, **kwargs} or an Evaluator], "
                           "besides the loss evaluator of `eval` (see alternating.evaluation)",
                           resume_safe=True)
    keep_best: Any = _opt(None, "{metric: 'SET/METRIC', mode: 'max' | 'min'}: save the state of "
                          "the best evaluation of the loss evaluator under WORKDIR/best (see "
                          "alternating.best)", seeds=False)


FIELDS = {f.name: f for f in dataclasses.fields(RunOptions)}
RESUME_SAFE_FIELDS = tuple(n for n, f in FIELDS.items() if f.metadata["resume_safe"])
# Config fields outside the options that a resume may change too.
CONFIG_RESUME_SAFE = RESUME_SAFE_FIELDS + ("eval",)
NOT_WITH_SEEDS = tuple(n for n, f in FIELDS.items() if not f.metadata["seeds"])


def doc(name: str) -> str:
    """The one-line doc of option ``name``."""
    return FIELDS[name].metadata["doc"]


def _check_number(name: str, value: Any, meta: Mapping[str, Any]) -> Any:
    kind, low, high = meta["kind"], meta["low"], meta["high"]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}={value!r}; it must be a number ({_range(meta)}).")
    if kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{name}={value!r}; it must be a whole number ({_range(meta)}), "
                             "not a fraction.")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r}; it must be finite ({_range(meta)}).")
    too_high = high is not None and (value >= high if meta["high_open"] else value > high)
    if ((low is not None and value < low) or too_high) and meta["what"]:
        raise ValueError(f"{name}={value!r}; {meta['what']}.")
    if (low is not None and value < low) or too_high:
        hint = " (0 disables the periodic action)" if low == 0 and name.endswith("_steps") else ""
        raise ValueError(f"{name}={value!r}; it must be {_range(meta)}{hint}.")
    return value


def _range(meta: Mapping[str, Any]) -> str:
    low, high = meta["low"], meta["high"]
    if low is not None and high is not None:
        return f"in [{low:g}, {high:g}{')' if meta['high_open'] else ']'}"
    if low is not None:
        return f">= {low:g}"
    return "a number"


def _plain(x: Any) -> Any:
    return x.to_dict() if hasattr(x, "to_dict") else x


def parse(values: Mapping[str, Any], *, where: str = "") -> RunOptions:
    """Validates ``values`` (missing fields take their defaults) into RunOptions.

    ``None`` means "the default" for every field but ``data_dir`` and
    ``init_from``, whose default is ``None``. Every check happens here, before
    anything is built or compiled.

    Raises:
      ValueError: an unknown field (listing the valid ones), a missing
        ``total_steps``, a value of the wrong type or out of its range
        (naming the field and the range), an unknown choice.
    """
    prefix = where
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"{prefix}unknown option(s) {unknown}; valid options: {sorted(FIELDS)}.")
    out = {}
    for name, field in FIELDS.items():
        meta = field.metadata
        value = _plain(values.get(name))
        if value is None:
            if name == "total_steps":
                raise ValueError(f"{prefix}total_steps is required (global steps, all phases "
                                 "together; an integer >= 1).")
            continue
        if meta["kind"] in ("int", "float"):
            value = _check_number(f"{prefix}{name}", value, meta)
        elif meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{prefix}{name}={value!r}; valid {meta['what']}: "
                             f"{list(meta['choices'])}.")
        elif meta["kind"] == "path" and not isinstance(value, str):
            value = str(value)
        elif meta["kind"] == "bool" and not isinstance(value, bool):
            raise ValueError(f"{prefix}{name}={value!r}; it must be True or False.")
        out[name] = value
    _check_replicas(out, prefix)
    return RunOptions(**out)


def _check_replicas(out: dict[str, Any], prefix: str) -> None:
    """``replica_seeds`` / ``replica_lr``: one value per replica (names checked at build)."""
    n = out.get("num_seeds", 1)
    for name in ("replica_seeds", "replica_lr"):
        if out.get(name) is not None and n < 2:
            raise ValueError(f"{prefix}{name} is set but num_seeds={n}; it gives one value per "
                             "vectorized replica, so it needs num_seeds >= 2.")
    seeds = out.get("replica_seeds")
    if seeds is not None:
        if (isinstance(seeds, (str, bytes, Mapping)) or not isinstance(seeds, Sequence)
                or len(seeds) != n or not all(isinstance(s, numbers.Integral) and
                                              not isinstance(s, bool) and s >= 0 for s in seeds)):
            raise ValueError(f"{prefix}replica_seeds={seeds!r}; give num_seeds={n} integers "
                             ">= 0, one per replica.")
        out["replica_seeds"] = tuple(int(s) for s in seeds)
    lrs = out.get("replica_lr")
    if lrs is None:
        return
    if not isinstance(lrs, Mapping) or not lrs:
        raise ValueError(f"{prefix}replica_lr={lrs!r}; give {{phase: [lr per replica]}}.")
    plain = {}
    for phase, values in lrs.items():
        ok = (not isinstance(values, (str, bytes, Mapping)) and isinstance(values, Sequence)
              and len(values) == n and all(
                  isinstance(v, numbers.Real) and not isinstance(v, bool)
                  and math.isfinite(v) and v > 0 for v in values))
        if not ok:
            raise ValueError(f"{prefix}replica_lr[{phase!r}]={values!r}; give num_seeds={n} "
                             "finite learning rates > 0, one per replica.")
        plain[str(phase)] = tuple(float(v) for v in values)
    out["replica_lr"] = plain


def check_with_seeds(options: RunOptions) -> None:
    """Refuses, by name, every set option that vectorized seeds do not carry out."""
    n = options.num_seeds
    if n == 1:
        return
    if options.checkpoint_every_steps:
        raise ValueError(f"num_seeds={n}: checkpoints are not supported with vectorized "
                         "seeds; set checkpoint_every_steps=0.")
    if options.nan_policy != "raise":
        raise ValueError(f"num_seeds={n}: nan_policy={options.nan_policy!r} is not supported "
                         "with vectorized seeds (valid there: 'raise'); use one seed per run.")
    if options.init_from:
        raise ValueError(f"num_seeds={n}: init_from is not supported with vectorized seeds "
                         "(each replica initializes from its own seed); use one seed per run.")
    if options.sharding_rules:
        raise ValueError(f"num_seeds={n}: sharding_rules are not supported with vectorized "
                         "seeds (replicas are replicated over the devices); use one seed per "
                         "run.")
    if options.keep_best:
        raise ValueError(f"num_seeds={n}: keep_best is not supported with vectorized seeds "
                         "(no checkpoints are written); use one seed per run.")

"""Keeping the state of the best evaluation: ``keep_best``.

``keep_best={'metric': 'SET/METRIC', 'mode': 'max' | 'min'}`` (a run option,
or the config field) watches one value of the loss evaluator (``evals`` /
``config.eval``: evaluation set ``SET``, its loss or an aux metric such as
``accuracy``). Whenever an evaluation improves on the best so far, the whole
state is saved as a checkpoint under ``WORKDIR/best`` (one kept: the newest
is the best), with the same stream positions, schedule state and config as a
regular checkpoint, so ``alternating.load_state(WORKDIR + '/best')`` loads it
and ``results.json`` says which step and value it holds (``best``).

The best value so far is part of every regular checkpoint, so a resumed run
goes on comparing against it; a resume that re-evaluates a step whose best
checkpoint was already written writes nothing new (the checkpoint at that step
exists, and a resumed run computes the same state). Ties keep the earlier step.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping, Sequence

import jax

from alternating import checkpoint as ckpt_lib

MODES = ("max", "min")
KEYS = ("metric", "mode")


def parse(spec: Any, eval_sets: Sequence[str]) -> dict[str, str] | None:
    """Validates ``keep_best`` against the run's evaluation sets.

    Raises:
      ValueError: not a mapping with exactly ``metric`` and ``mode``, a
        metric not of the form ``SET/METRIC``, an unknown set (listing the
        run's evaluation sets) or mode.
    """
    if spec is None:
        return None
    spec = dict(spec.to_dict() if hasattr(spec, "to_dict") else spec) if hasattr(
        spec, "keys") else spec
    if not isinstance(spec, dict) or set(spec) - set(KEYS) or "metric" not in spec:
        raise ValueError(f"keep_best={spec!r}; expected {{'metric': 'SET/METRIC', 'mode': "
                         f"'max' | 'min'}} (keys {list(KEYS)}).")
    mode = spec.get("mode", "max")
    if mode not in MODES:
        raise ValueError(f"keep_best.mode={mode!r}; valid modes: {list(MODES)}.")
    metric = spec["metric"]
    name, sep, key = str(metric).partition("/")
    if not sep or not key:
        raise ValueError(f"keep_best.metric={metric!r}; expected 'SET/METRIC', e.g. "
                         f"'{(list(eval_sets) or ['test'])[0]}/accuracy'.")
    if name not in eval_sets:
        raise ValueError(f"keep_best.metric={metric!r} names evaluation set {name!r}; the run's "
                         f"evaluation sets (eval): {sorted(eval_sets)}.")
    return {"set": name, "key": key, "mode": mode, "metric": metric}


def keeper(spec: Any, workdir: str, run: Any) -> "BestKeeper | None":
    """The run's keeper (``None`` without ``keep_best``), checked before anything compiles.

    Raises:
      ValueError: see :func:`parse`; or a metric the watched set does not
        report (found by tracing its evaluation on abstract values).
    """
    parsed = parse(spec, [e.name for e in run.eval_sets])
    if parsed is None:
        return None
    ev = next(e for e in run.eval_sets if e.name == parsed["set"])
    a = run.abstract_state
    sums, _ = jax.eval_shape(ev.fn, a.params, a.extras, ev.batches[0], a.step)
    if parsed["key"] not in sums:
        raise ValueError(f"keep_best.metric={parsed['metric']!r}: evaluation set "
                         f"{parsed['set']!r} reports {sorted(sums)}; name one of them.")
    return BestKeeper(parsed, workdir, lambda d: ckpt_lib.Checkpointer(d, max_to_keep=1))


class BestKeeper:
    """Saves the state whenever the watched evaluation improves (see the module doc)."""

    def __init__(self, spec: Mapping[str, str], workdir: str, make_checkpointer: Callable):
        self.spec = dict(spec)
        self.directory = os.path.join(workdir, "best")
        self._make = make_checkpointer
        self.checkpointer = None
        self.value: float | None = None
        self.step: int | None = None

    def improved(self, rows: Mapping[str, Mapping[str, float]]) -> bool:
        """Reads the watched value from the loss evaluator's rows; True if it is a new best."""
        s = self.spec
        if s["set"] not in rows or s["key"] not in rows[s["set"]]:
            have = sorted(rows.get(s["set"], {}))
            raise ValueError(f"keep_best.metric={s['metric']!r}: evaluation set {s['set']!r} "
                             f"reports {have}; name one of them.")
        value = float(rows[s["set"]][s["key"]])
        if not math.isfinite(value):
            return False
        if self.value is None:
            return True
        return value > self.value if s["mode"] == "max" else value < self.value

    def save(self, step: int, rows: Mapping[str, Mapping[str, float]], save: Callable) -> None:
        """Records the new best and saves the state through ``save(checkpointer)``."""
        self.value, self.step = float(rows[self.spec["set"]][self.spec["key"]]), int(step)
        if self.checkpointer is None:
            self.checkpointer = self._make(self.directory)
        save(self.checkpointer)

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if state:
            self.value, self.step = state.get("value"), state.get("step")

    def summary(self) -> dict[str, Any]:
        return {"best": {"metric": self.spec["metric"], "mode": self.spec["mode"],
                         "value": self.value, "step": self.step, "directory": "best"}}

    def close(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.close()

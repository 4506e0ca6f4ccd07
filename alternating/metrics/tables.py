"""Per-phase aggregation of step metrics: records, :class:`StepTable`, non-finite checks.

Pure host code on values already fetched from the device; nothing imports jax.
"""

from __future__ import annotations

import collections
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

Record = tuple[int, str, Mapping[str, Any]]

def is_counter(name: str) -> bool:
    """Whether `aggregate` reports the last value of metric `name`, not its mean.

    Counters are monotone (or piecewise constant) quantities whose mean over a
    log interval is meaningless: step counts (names ending in `_steps`, and
    `phase_step`) and the learning rate `lr` (the value now is what matters).
    """
    return name == "lr" or name == "phase_step" or name.endswith("_steps")


def to_float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"Metric {name!r} has value {value!r} of type {type(value).__name__}, "
            "which is not a scalar; reduce it to a scalar in the step "
            "(e.g. jnp.mean) before returning it as a metric.") from e


def aggregate(records: Sequence[Record]) -> dict[str, dict[str, float]]:
    """Reduces the per-step metrics since the last log step, phase by phase.

    The rule: every metric is the mean over the records of its phase that
    contain it, except counters (see `is_counter`: `*_steps`, `phase_step`,
    `lr`), which take the value of the phase's last record that contains them.
    Each phase also gets `steps`, the number of its records. A NaN or inf
    value propagates into the mean, so divergence is never averaged away.

    Args:
      records: `(step, phase, metrics)` tuples in step order, where `metrics`
        maps names to scalars (Python numbers, numpy scalars, 0-d arrays).

    Returns:
      `{phase: {metric: value, ..., "steps": count}}`, phases in order of
      first appearance.

    Raises:
      ValueError: if a metric is named `steps` (reserved for the count).
      TypeError: if a metric value is not a scalar.
    """
    values: dict[str, dict[str, list[float]]] = {}
    counts: collections.Counter[str] = collections.Counter()
    for _, phase, metrics in records:
        counts[phase] += 1
        per_phase = values.setdefault(phase, {})
        for name, value in metrics.items():
            per_phase.setdefault(name, []).append(to_float(value, name))
    out: dict[str, dict[str, float]] = {}
    for phase, per_phase in values.items():
        if "steps" in per_phase:
            raise ValueError(
                f"Phase {phase!r} returned a metric named 'steps', which "
                "aggregate() reserves for the number of steps the phase ran; "
                "rename it (e.g. 'num_steps').")
        reduced = {}
        for name, vals in per_phase.items():
            # fsum: exact means, so the same records always give the same log.
            reduced[name] = vals[-1] if is_counter(name) else math.fsum(vals) / len(vals)
        reduced["steps"] = counts[phase]
        out[phase] = reduced
    return out


def first_nonfinite(records: Iterable[Record]) -> tuple[int, str, str] | None:
    """Finds the first record holding a NaN or infinite metric.

    Within a record `loss` is checked first, so a diverged loss is named in
    preference to the gradient norm it caused.

    Args:
      records: `(step, phase, metrics)` tuples, as for `aggregate`.

    Returns:
      `(step, phase, metric_name)` of the first non-finite value, or None if
      every value is finite.
    """
    for step, phase, metrics in records:
        if "loss" in metrics and not math.isfinite(to_float(metrics["loss"], "loss")):
            return step, phase, "loss"
        for name, value in metrics.items():
            if not math.isfinite(to_float(value, name)):
                return step, phase, name
    return None


class StepTable:
    """Per-step metrics of many steps as arrays: the vectorized form of records.

    Row ``i`` is the record ``(steps[i], phases[ids[i]], metrics)`` where
    ``metrics`` maps ``names[phase][j]`` to ``values[i, j]`` and
    ``"phase_step"`` to ``phase_steps[i]``. Columns past a phase's own names
    are padding. The loop fetches a whole log interval of steps (or a fused
    chunk) as one such table and reduces it with numpy, instead of building a
    dict per step; `aggregate` and `first_nonfinite` give exactly what the
    module-level functions of the same names give on `rows()` (tested).

    Attributes:
      steps: ``int64[n]`` global step of each row.
      ids: ``int32[n]`` phase index of each row (into ``phases``).
      values: ``float64[n, W]`` the packed metrics (float32 values, exactly).
      phase_steps: ``int64[n]`` the phase's own step count after the row.
      phases: phase names, in index order.
      names: ``{phase: metric names of its columns}``.
    """

    __slots__ = ("steps", "ids", "values", "phase_steps", "phases", "names")

    def __init__(self, steps, ids, values, phase_steps, phases: Sequence[str],
                 names: Mapping[str, Sequence[str]]):
        self.steps = np.asarray(steps, np.int64)
        self.ids = np.asarray(ids, np.int32)
        self.values = np.asarray(values, np.float64)
        self.phase_steps = np.asarray(phase_steps, np.int64)
        self.phases = list(phases)
        self.names = names

    @classmethod
    def empty(cls, phases: Sequence[str], names: Mapping[str, Sequence[str]]) -> "StepTable":
        width = max([len(names[p]) for p in phases] + [0])
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros((0, width)),
                   np.zeros(0, np.int64), phases, names)

    @classmethod
    def from_rows(cls, rows: Sequence[Record], phases: Sequence[str],
                  names: Mapping[str, Sequence[str]]) -> "StepTable":
        """The table of ``(step, phase, {metric: value, 'phase_step': n})`` rows."""
        index = {p: i for i, p in enumerate(phases)}
        table = cls.empty(phases, names)
        values = np.zeros((len(rows), table.values.shape[1]))
        ids, steps, counts = [], [], []
        for r, (step, phase, metrics) in enumerate(rows):
            if phase not in index:
                raise ValueError(f"a record of step {step} names phase {phase!r}; the phases "
                                 f"are {list(phases)}.")
            for j, name in enumerate(names[phase]):
                if name not in metrics:
                    raise ValueError(f"the record of step {step} (phase {phase!r}) lacks metric "
                                     f"{name!r}; it has {sorted(metrics)}.")
                values[r, j] = to_float(metrics[name], name)
            ids.append(index[phase])
            steps.append(int(step))
            counts.append(int(metrics.get("phase_step", 0)))
        return cls(steps, ids, values, counts, phases, names)

    @staticmethod
    def concat(tables: Sequence["StepTable"]) -> "StepTable":
        first = tables[0]
        if len(tables) == 1:
            return first
        return StepTable(np.concatenate([t.steps for t in tables]),
                         np.concatenate([t.ids for t in tables]),
                         np.concatenate([t.values for t in tables]),
                         np.concatenate([t.phase_steps for t in tables]),
                         first.phases, first.names)

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: slice) -> "StepTable":
        return StepTable(self.steps[index], self.ids[index], self.values[index],
                         self.phase_steps[index], self.phases, self.names)

    def rows(self) -> list[Record]:
        """The records, as ``(step, phase, {metric: float, 'phase_step': float})``."""
        out = []
        values = self.values.tolist()
        for step, i, vals, ps in zip(self.steps.tolist(), self.ids.tolist(), values,
                                     self.phase_steps.tolist()):
            phase = self.phases[i]
            names = self.names[phase]
            out.append((step, phase, {**dict(zip(names, vals[:len(names)])),
                                      "phase_step": float(ps)}))
        return out

    def _phase_order(self) -> list[int]:
        _, first = np.unique(self.ids, return_index=True)
        return self.ids[np.sort(first)].tolist()

    def aggregate(self, drop: Sequence[str] = ()) -> dict[str, dict[str, float]]:
        """``aggregate(self.rows())``, computed column by column.

        ``drop``: metric names left out (as if the records lacked them).
        """
        out: dict[str, dict[str, float]] = {}
        for i in self._phase_order():
            phase = self.phases[i]
            names = self.names[phase]
            if "steps" in names:
                aggregate([(0, phase, {"steps": 0.0})])  # raises the reserved-name error
            mask = self.ids == i
            count = int(np.count_nonzero(mask))
            cols = self.values[mask]
            reduced: dict[str, float] = {}
            for j, name in enumerate(names):
                if name in drop:
                    continue
                col = cols[:, j]
                reduced[name] = (float(col[-1]) if is_counter(name)
                                 else math.fsum(col.tolist()) / count)
            reduced["phase_step"] = float(self.phase_steps[mask][-1])
            reduced["steps"] = count
            out[phase] = reduced
        return out

    def first_nonfinite(self) -> tuple[int, str, str] | None:
        """``first_nonfinite(self.rows())``, with one numpy check when all is finite."""
        if not len(self):
            return None
        widths = np.asarray([len(self.names[p]) for p in self.phases])[self.ids]
        used = np.arange(self.values.shape[1])[None, :] < widths[:, None]
        bad = used & ~np.isfinite(self.values)
        if not bad.any():
            return None
        first = int(np.flatnonzero(bad.any(axis=1))[0])
        return first_nonfinite(self[first:first + 1].rows())



def combine_replicas(per_replica: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean over replicas (seeds), ``_std`` and ``_seed<i>`` of every metric some replica has."""
    out: dict[str, float] = {}
    keys = sorted({k for m in per_replica for k in m})
    for k in keys:
        vals = [m[k] for m in per_replica if k in m]
        out[k] = math.fsum(vals) / len(vals)
        out[f"{k}_std"] = float(np.std(vals))
        for i, m in enumerate(per_replica):
            if k in m:
                out[f"{k}_seed{i}"] = m[k]
    return out

"""One verdict rule for two arms of a reproduction run on the same seeds.

The rule: take the per-seed differences ``d_i = treatment_i - baseline_i``,
form a ``1 - alpha`` confidence interval for their mean (a paired t interval
by default, or a seeded percentile bootstrap) and read it against the
direction the claim predicts:

* **confirmed**: the interval excludes zero on the claimed side;
* **contradicted**: it excludes zero on the other side;
* **inconclusive**: it contains zero.

Why paired: the two arms of a reproduction share each seed's initialization
and data order, so much of the seed-to-seed spread is common to both arms and
cancels in the difference. The older rule of the results pages ("measurable"
when the arms' per-seed ranges do not overlap) throws the pairing away and,
with 3 seeds, misses any effect smaller than an arm's whole spread.

How to read "inconclusive": it is not "no effect". The interval's bound on
the claimed side is the largest effect the data still allow; effects beyond
it are ruled out. The minimum detectable effect (MDE) says what the design
could find at all: the true mean difference that a two-sided paired t-test at
level ``alpha`` detects with power 0.8, given the observed std of the
differences and the number of seeds. A claimed effect well below the MDE was
never testable with these seeds: run more seeds before calling it absent.

scipy (a dependency of scikit-learn, so always installed) supplies the t
quantiles.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CLAIMS = ("greater", "less")
METHODS = ("t", "bootstrap")
LABELS = ("confirmed", "contradicted", "inconclusive")


def _t():
    """scipy's t distribution, imported on first use (scipy.stats costs about a
    second of import, paid by every process that imports the package)."""
    from scipy import stats  # pylint: disable=g-import-not-at-top
    return stats.t


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`compare`; every figure is of ``treatment - baseline``.

    Attributes:
        name: what was compared (free text, shown in summaries and tables).
        claim: ``"greater"`` (treatment above baseline) or ``"less"``.
        differences: the per-seed differences, in seed order.
        mean: their mean.
        sd: their sample std (``ddof=1``).
        ci: the ``1 - alpha`` confidence interval ``(low, high)`` of the mean.
        alpha: one minus the interval's confidence level.
        method: ``"t"`` or ``"bootstrap"``.
        agreeing: how many seeds' differences have the sign the claim predicts.
        n: the number of seeds.
        mde: the minimum detectable effect (:func:`minimum_detectable_effect`).
        power: the power the MDE is computed for.
        label: ``"confirmed"``, ``"contradicted"`` or ``"inconclusive"``.
    """

    name: str
    claim: str
    differences: tuple[float, ...]
    mean: float
    sd: float
    ci: tuple[float, float]
    alpha: float
    method: str
    agreeing: int
    n: int
    mde: float
    power: float
    label: str

    @property
    def bound(self) -> float:
        """The interval's bound on the claimed side: effects beyond it are ruled out."""
        return self.ci[1] if self.claim == "greater" else self.ci[0]

    def to_dict(self) -> dict[str, Any]:
        """Every field as JSON-serializable values, plus ``bound``."""
        d = dataclasses.asdict(self)
        d["differences"], d["ci"], d["bound"] = list(self.differences), list(self.ci), self.bound
        return d

    def summary(self) -> str:
        """One line: label, mean difference, interval, seeds agreeing, MDE."""
        lo, hi = self.ci
        text = (f"{self.name + ': ' if self.name else ''}{self.label}: mean difference "
                f"{_signed(self.mean)} ({_level(self.alpha)} CI [{_signed(lo)}, {_signed(hi)}], "
                f"{self.method}), {self.agreeing}/{self.n} seeds {self.claim}, detectable "
                f"effect {_plain(self.mde)} (power {self.power:g})")
        if self.label == "inconclusive":
            text += (f"; an effect larger than {_plain(abs(self.bound))} in the claimed "
                     f"direction ({self.claim}) is ruled out")
        return text

    __str__ = summary


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest true mean difference a paired t-test would detect.

    The usual approximation for a two-sided paired t-test at level ``alpha``::

        MDE = (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)

    where ``t_{q, df}`` is the q-quantile of Student's t with df degrees of
    freedom.

    Args:
        sd: std of the per-seed differences (``ddof=1``).
        n: number of seeds (pairs), at least 2.
        alpha: the test's level.
        power: the probability of detecting a true effect of size MDE.

    Returns:
        The MDE, in the units of the differences (0 when ``sd`` is 0).
    """
    df = n - 1
    t = _t()
    return float((t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * sd / math.sqrt(n))


def compare(treatment: Sequence[float], baseline: Sequence[float], *,
            claim: str = "greater", alpha: float = 0.05, method: str = "t",
            power: float = 0.8, name: str = "", resamples: int = 10_000,
            seed: int = 0) -> Verdict:
    """Applies the verdict rule to two arms run on the same seeds.

    Args:
        treatment: one figure per seed for the arm the claim is about.
        baseline: one figure per seed for the arm it is compared with, in the
            same seed order.
        claim: ``"greater"`` if the claim predicts treatment above baseline
            (e.g. a higher accuracy), ``"less"`` if below (e.g. a lower loss).
        alpha: the interval's confidence level is ``1 - alpha``.
        method: ``"t"`` (paired t interval) or ``"bootstrap"`` (percentile
            bootstrap of the mean difference; with few seeds it is narrower
            than the t interval and overstates certainty, so prefer ``"t"``).
        power: the power for the minimum detectable effect.
        name: what is compared, for summaries and tables.
        resamples: bootstrap resamples (``method="bootstrap"`` only).
        seed: the bootstrap's random seed; the same seed gives the same interval.

    Returns:
        A :class:`Verdict`.

    Raises:
        ValueError: the arms differ in length (the rule is paired), hold fewer
            than 2 seeds, are not flat, or hold a non-finite value; or
            ``claim``, ``method``, ``alpha``, ``power`` or ``resamples`` is
            invalid.
    """
    if claim not in CLAIMS:
        raise ValueError(f"claim={claim!r} is unknown; use 'greater' (treatment above "
                         "baseline) or 'less' (treatment below baseline).")
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; valid: {list(METHODS)}.")
    for arg, value in (("alpha", alpha), ("power", power)):
        if not 0 < value < 1:
            raise ValueError(f"{arg}={value!r}; it must lie strictly between 0 and 1.")
    t_arm, b_arm = _arm("treatment", treatment), _arm("baseline", baseline)
    if len(t_arm) != len(b_arm):
        raise ValueError(
            f"unpaired arms: treatment has {len(t_arm)} values and baseline {len(b_arm)}. "
            "The rule is paired: give one value per seed for both arms, in the same seed order.")
    n = len(t_arm)
    if n < 2:
        raise ValueError(f"got {n} seed(s); the rule needs at least 2 seeds per arm (the "
                         "interval comes from the spread of the per-seed differences).")
    diffs = t_arm - b_arm
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    if method == "t":
        half = float(_t().ppf(1 - alpha / 2, n - 1)) * sd / math.sqrt(n)
        ci = (mean - half, mean + half)
    else:
        if resamples < 1:
            raise ValueError(f"resamples={resamples!r}; it must be at least 1.")
        picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
        low, high = np.quantile(diffs[picks].mean(axis=1), [alpha / 2, 1 - alpha / 2])
        ci = (float(low), float(high))
    sign = 1.0 if claim == "greater" else -1.0
    if min(sign * ci[0], sign * ci[1]) > 0:
        label = "confirmed"
    elif max(sign * ci[0], sign * ci[1]) < 0:
        label = "contradicted"
    else:
        label = "inconclusive"
    return Verdict(name=name, claim=claim, differences=tuple(float(d) for d in diffs),
                   mean=mean, sd=sd, ci=ci, alpha=alpha, method=method,
                   agreeing=int(np.sum(sign * diffs > 0)), n=n,
                   mde=minimum_detectable_effect(sd, n, alpha=alpha, power=power),
                   power=power, label=label)


def render_table(rows: Sequence[Verdict]) -> str:
    """A markdown table, one row per verdict, for results pages.

    Args:
        rows: verdicts from :func:`compare`; their ``name`` fills the first column.

    Returns:
        The table as a string: header, separator and one line per verdict.
    """
    lines = [("| comparison | claim | mean difference | confidence interval "
              "| seeds in claimed direction | detectable effect | verdict |"),
             "|---|---|---|---|---|---|---|"]
    for v in rows:
        label = v.label
        if label == "inconclusive":
            label += f" (an effect beyond {_signed(v.bound)} is ruled out)"
        lines.append(f"| {v.name} | {v.claim} | {_signed(v.mean)} | {_level(v.alpha)} "
                     f"[{_signed(v.ci[0])}, {_signed(v.ci[1])}] ({v.method}) "
                     f"| {v.agreeing}/{v.n} | {_plain(v.mde)} | {label} |")
    return "\n".join(lines)


def _arm(arg: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{arg} has shape {arr.shape}; give a flat sequence, one value per seed.")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{arg}[{bad[0]}] is {arr[bad[0]]}: every value must be finite "
                         "(drop that seed from both arms, or fix the run).")
    return arr


def _level(alpha: float) -> str:
    return f"{100 * (1 - alpha):g}%"


def _signed(x: float) -> str:
    return f"{x:+.3g}"


def _plain(x: float) -> str:
    return f"{x:.3g}"

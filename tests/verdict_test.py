"""The paired verdict rule: labels, hand-computed interval and MDE, bad input."""

import dataclasses
import json
import math

import pytest
from scipy import stats

from alternating import verdict

# Per-seed differences 0.5, 1.5, 2.0, 1.5: mean 1.375, sum of squared
# deviations 1.1875, so sd = sqrt(1.1875 / 3).
TREATMENT = [1.0, 2.0, 3.0, 4.0]
BASELINE = [0.5, 0.5, 1.0, 2.5]


def _mean_sd(xs):
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def test_t_interval_and_mde_match_a_hand_computation():
    v = verdict.compare(TREATMENT, BASELINE)
    mean, sd = _mean_sd([t - b for t, b in zip(TREATMENT, BASELINE)])
    assert (mean, sd) == pytest.approx((1.375, math.sqrt(1.1875 / 3)))
    half = stats.t.ppf(0.975, 3) * sd / math.sqrt(4)
    assert v.differences == (0.5, 1.5, 2.0, 1.5)
    assert (v.mean, v.sd, v.n, v.agreeing) == (pytest.approx(mean), pytest.approx(sd), 4, 4)
    assert v.ci == pytest.approx((mean - half, mean + half))
    mde = (stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * sd / 2
    assert v.mde == pytest.approx(mde)
    assert verdict.minimum_detectable_effect(sd, 4) == pytest.approx(mde)
    # alpha and power enter the quantiles as documented.
    v90 = verdict.compare(TREATMENT, BASELINE, alpha=0.1, power=0.9)
    assert v90.ci[1] == pytest.approx(mean + stats.t.ppf(0.95, 3) * sd / 2)
    assert v90.mde == pytest.approx((stats.t.ppf(0.95, 3) + stats.t.ppf(0.9, 3)) * sd / 2)


def test_clear_effect_is_confirmed():
    v = verdict.compare([71.0, 81.2, 90.9, 85.3, 77.0], [70.0, 80.0, 90.0, 84.0, 76.1],
                        name="a vs b")
    assert v.label == "confirmed" and v.ci[0] > 0 and v.agreeing == 5
    assert str(v).startswith("a vs b: confirmed: mean difference +1.06")


def test_pairing_finds_an_effect_that_overlapping_ranges_hide():
    # The arms' ranges overlap almost entirely, yet every seed gains about one point.
    treatment, baseline = [71.0, 81.2, 90.9], [70.0, 80.0, 90.0]
    assert min(treatment) < max(baseline)
    assert verdict.compare(treatment, baseline).label == "confirmed"


def test_reversed_effect_is_contradicted_for_either_claim_direction():
    v = verdict.compare(BASELINE, TREATMENT)
    assert v.label == "contradicted" and v.ci[1] < 0 and v.agreeing == 0
    # A loss claimed to fall, which rose on every seed.
    v = verdict.compare([0.30, 0.32, 0.29], [0.20, 0.21, 0.22], claim="less")
    assert v.label == "contradicted"
    v = verdict.compare([0.20, 0.21, 0.22], [0.30, 0.32, 0.29], claim="less")
    assert v.label == "confirmed"


def test_noisy_effect_is_inconclusive_and_says_what_is_ruled_out():
    v = verdict.compare([2.0, -1.5, 0.5, -1.0], [0.0, 0.0, 0.0, 0.0])
    assert v.label == "inconclusive" and v.ci[0] < 0 < v.ci[1] and v.agreeing == 2
    assert v.bound == v.ci[1]
    assert f"an effect larger than {v.ci[1]:.3g} in the claimed direction" in v.summary()
    assert "ruled out" in v.summary() and f"detectable effect {v.mde:.3g}" in v.summary()
    less = verdict.compare([2.0, -1.5, 0.5, -1.0], [0.0] * 4, claim="less")
    assert less.label == "inconclusive" and less.bound == less.ci[0]
    assert f"larger than {abs(less.ci[0]):.3g}" in less.summary()


def test_bootstrap_is_deterministic_per_seed():
    diffs_t, diffs_b = [1.2, 0.8, 1.9, 1.1, 0.4], [0.0] * 5
    a = verdict.compare(diffs_t, diffs_b, method="bootstrap", seed=3, resamples=2000)
    b = verdict.compare(diffs_t, diffs_b, method="bootstrap", seed=3, resamples=2000)
    c = verdict.compare(diffs_t, diffs_b, method="bootstrap", seed=4, resamples=2000)
    assert a == b and a.ci != c.ci
    # A percentile interval of resampled means lies within the observed differences.
    assert 0.4 <= a.ci[0] < a.mean < a.ci[1] <= 1.9
    assert a.label == "confirmed" and a.method == "bootstrap"
    # The MDE is the t-test's whichever interval is used.
    assert a.mde == pytest.approx(verdict.compare(diffs_t, diffs_b).mde)


def test_zero_spread_gives_a_point_interval():
    v = verdict.compare([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert v.ci == (1.0, 1.0) and v.mde == 0.0 and v.label == "confirmed"
    assert verdict.compare([1.0, 2.0], [1.0, 2.0]).label == "inconclusive"


def test_verdict_is_frozen_and_serializes():
    v = verdict.compare(TREATMENT, BASELINE, name="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.label = "confirmed"
    d = json.loads(json.dumps(v.to_dict()))
    assert d["label"] == v.label and d["ci"] == list(v.ci) and d["bound"] == v.ci[1]
    assert set(d) == {f.name for f in dataclasses.fields(v)} | {"bound"}


def test_render_table_has_one_row_per_verdict():
    rows = [verdict.compare(TREATMENT, BASELINE, name="clear"),
            verdict.compare([2.0, -1.5, 0.5, -1.0], [0.0] * 4, name="noisy")]
    lines = verdict.render_table(rows).splitlines()
    assert len(lines) == 4 and lines[1].startswith("|---")
    assert lines[2].startswith("| clear | greater | +1.38 | 95% [") and "| confirmed |" in lines[2]
    assert lines[3].startswith("| noisy |") and "inconclusive (an effect beyond +" in lines[3]
    assert all(line.count("|") == lines[0].count("|") for line in lines)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("treatment", "baseline", "kwargs", "match"), [
    ([1.0, 2.0, 3.0], [1.0, 2.0], {}, r"unpaired arms: treatment has 3 .* baseline 2"),
    ([1.0], [0.0], {}, r"at least 2 seeds"),
    ([1.0, NAN], [0.0, 0.0], {}, r"treatment\[1\] is nan.*finite"),
    ([1.0, 2.0], [0.0, INF], {}, r"baseline\[1\] is inf"),
    ([[1.0, 2.0]], [[0.0, 0.0]], {}, r"shape \(1, 2\).*flat"),
    ([1.0, 2.0], [0.0, 0.0], {"claim": "better"},
     r"claim='better' is unknown; use 'greater'.*or 'less'"),
    ([1.0, 2.0], [0.0, 0.0], {"method": "z"}, r"method='z' is unknown"),
    ([1.0, 2.0], [0.0, 0.0], {"alpha": 5}, r"alpha=5; .*between 0 and 1"),
    ([1.0, 2.0], [0.0, 0.0], {"method": "bootstrap", "resamples": 0}, r"resamples=0"),
])
def test_bad_input_is_refused(treatment, baseline, kwargs, match):
    with pytest.raises(ValueError, match=match):
        verdict.compare(treatment, baseline, **kwargs)

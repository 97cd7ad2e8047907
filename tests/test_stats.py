"""Seed statistics against hand-computed values: mean, std, t intervals, Welch's test and its verdicts."""

from __future__ import annotations

import math

import pytest

from tune_norm import stats


def test_summary_of_four_values_by_hand():
    # mean 2.5; s^2 = (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3; t(0.975, 3) = 3.182446
    s = stats.summarize([1, 2, 3, 4])
    assert s.n == 4 and s.mean == 2.5
    assert s.std == pytest.approx(math.sqrt(5 / 3))
    half = 3.182446305 * math.sqrt(5 / 3) / 2
    assert (s.low, s.high) == pytest.approx((2.5 - half, 2.5 + half))
    assert (s.low, s.high) == pytest.approx((0.44574, 4.55426), abs=1e-5)
    assert s.mean_std() == "2.50 ± 1.29" and s.interval() == "[0.45, 4.55]"


def test_summary_skips_missing_values_and_has_no_spread_for_one_seed():
    s = stats.summarize([98.0, float("nan")])
    assert s.n == 1 and s.mean == 98.0 and math.isnan(s.std) and math.isnan(s.low)
    assert s.mean_std() == "98.00" and s.interval() == ""
    empty = stats.summarize([])
    assert empty.n == 0 and math.isnan(empty.mean) and empty.mean_std() == ""


def test_welch_test_by_hand():
    # means 3 and 6, variances 2.5 and 10, n = 5 each: se = sqrt(0.5 + 2) ; t = -3 / se
    # Welch-Satterthwaite df = 2.5^2 / (0.5^2 / 4 + 2^2 / 4) = 5.882353; R's t.test gives p = 0.1075
    c = stats.compare([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], "BatchNorm", "GroupNorm")
    assert c.diff == -3.0 and (c.n_a, c.n_b) == (5, 5)
    assert c.t == pytest.approx(-3 / math.sqrt(2.5))
    assert c.df == pytest.approx(6.25 / (0.0625 + 1.0))
    assert c.p == pytest.approx(0.10753, abs=1e-5)
    half = 2.45882 * math.sqrt(2.5)  # t(0.975, 5.882) = 2.45882
    assert (c.low, c.high) == pytest.approx((-3 - half, -3 + half), abs=2e-3)
    assert not c.significant
    assert c.verdict == "GroupNorm > BatchNorm: not significant, p = 0.11, 5 vs 5 seeds"


def test_clear_difference_is_significant_and_named_in_order():
    bn = [99.50, 99.60, 99.55, 99.52, 99.58]
    gn = [99.00, 99.10, 99.05, 99.02, 99.08, 99.04]
    c = stats.compare(bn, gn, "BatchNorm", "GroupNorm")
    assert c.significant and c.p < 0.001 and c.diff == pytest.approx(99.55 - 594.29 / 6)
    assert c.verdict == "BatchNorm > GroupNorm: significant, p < 0.001, 5 vs 6 seeds"
    flipped = stats.compare(gn, bn, "GroupNorm", "BatchNorm")
    assert flipped.verdict == c.verdict and flipped.p == pytest.approx(c.p)


@pytest.mark.parametrize("a, b, verdict", [
    ([99.1], [99.0, 99.2], "BatchNorm vs GroupNorm: not testable (1 seed), 1 vs 2 seeds"),
    ([99.1, 99.3], [99.0], "BatchNorm vs GroupNorm: not testable (1 seed), 2 vs 1 seeds"),
    ([], [99.0, 99.2], "BatchNorm vs GroupNorm: not testable (no results), 0 vs 2 seeds"),
])
def test_fewer_than_two_seeds_per_side_is_not_testable(a, b, verdict):
    c = stats.compare(a, b, "BatchNorm", "GroupNorm")
    assert c.verdict == verdict and math.isnan(c.p) and not c.significant


def test_identical_seeds_have_no_variance_to_test():
    c = stats.compare([99.0, 99.0], [98.0, 98.0], "BatchNorm", "LayerNorm")
    assert "not testable" in c.verdict and math.isnan(c.p) and c.diff == 1.0


@pytest.mark.parametrize("p, text", [(0.4, "p = 0.40"), (0.049, "p = 0.05"), (0.0042, "p = 0.004"),
                                     (0.0001, "p < 0.001"), (float("nan"), "p = n/a")])
def test_p_values_are_written_for_people(p, text):
    assert stats.format_p(p) == text

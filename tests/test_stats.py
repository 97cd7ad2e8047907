"""Seed statistics against hand-computed values: mean, std, t intervals, Welch's test, its verdicts and Holm."""

from __future__ import annotations

import math

import numpy as np
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


@pytest.mark.parametrize("p, text", [(0.4, "p = 0.40"), (0.049, "p = 0.0490"), (0.0496, "p = 0.0496"),
                                     (0.0504, "p = 0.05"), (0.0042, "p = 0.004"),
                                     (0.0001, "p < 0.001"), (float("nan"), "p = n/a")])
def test_p_values_are_written_for_people(p, text):
    assert stats.format_p(p) == text


# -- Holm's correction ---------------------------------------------------------------------------------------
def test_holm_on_the_textbook_example():
    # four hypotheses at alpha 0.05 (Wikipedia, "Holm-Bonferroni method"): 0.005 * 4 = 0.02 and 0.01 * 3 = 0.03
    # are rejected, 0.03 * 2 = 0.06 stops; 0.04 * 1 would pass alone but is raised to 0.06 (step-down)
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


# Benjamini & Hochberg's (1995) 15 p-values; the adjusted ones were computed independently by statsmodels 0.15.0:
# statsmodels.stats.multitest.multipletests(P15, method="holm")[1]
P15 = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719, 0.6528,
       0.7590, 1.0]
HOLM15 = [0.0015, 0.0056, 0.0247, 0.114, 0.2211, 0.278, 0.278, 0.278, 0.3213, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_holm_matches_statsmodels_on_fifteen_p_values_in_any_order():
    assert stats.holm(P15) == pytest.approx(HOLM15, abs=1e-12)
    order = [7, 0, 14, 3, 11, 1, 9, 5, 12, 2, 8, 13, 4, 10, 6]
    assert stats.holm([P15[i] for i in order]) == pytest.approx([HOLM15[i] for i in order], abs=1e-12)


def test_holm_matches_statsmodels_on_random_families_with_ties():
    from statsmodels.stats.multitest import multipletests  # a dev dependency: an independent implementation

    rng = np.random.default_rng(12)
    for m in (1, 2, 3, 8, 24, 50):
        ps = np.round(rng.uniform(0, 0.2, m) ** 2, 4)  # rounding makes ties
        assert stats.holm(ps) == pytest.approx(list(multipletests(ps, method="holm")[1]), abs=1e-12)


def test_holm_leaves_untestable_comparisons_out_of_the_family():
    out = stats.holm([0.01, float("nan"), 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert stats.holm([]) == []


def test_a_loss_names_the_lower_side_first_and_holm_can_overturn_a_raw_verdict():
    bn, gn = [0.0150, 0.0140, 0.0160, 0.0150, 0.0145], [0.0184, 0.0170, 0.0200, 0.0180, 0.0190]
    loss = stats.compare(bn, gn, "BatchNorm", "GroupNorm", lower_is_better=True, what="test loss")
    assert loss.diff < 0 and loss.significant and loss.p < 0.001
    assert loss.verdict == "BatchNorm < GroupNorm (test loss): significant, p < 0.001, 5 vs 5 seeds"
    flipped = stats.compare(gn, bn, "GroupNorm", "BatchNorm", lower_is_better=True, what="test loss")
    assert flipped.verdict == loss.verdict
    acc = stats.compare([99.52, 99.50, 99.55, 99.49, 99.53], [99.46, 99.51, 99.45, 99.50, 99.47], "BatchNorm",
                        "GroupNorm", what="accuracy")
    assert acc.p == pytest.approx(0.03489, abs=1e-5)
    assert acc.verdict == "BatchNorm > GroupNorm (accuracy): significant, p = 0.03, 5 vs 5 seeds"
    # a family of three: the loss test (p < 0.001) and the accuracy test twice: 3p, then 2p and 2p for the ties
    low, first, second = stats.adjust([loss, acc, acc])
    assert low.p_holm == pytest.approx(3 * loss.p) and first.p_holm == second.p_holm == pytest.approx(2 * acc.p)
    assert low.verdict == "BatchNorm < GroupNorm (test loss): significant, p < 0.001, Holm p = 0.002, 5 vs 5 seeds"
    assert first.verdict == ("BatchNorm > GroupNorm (accuracy): not significant after Holm's correction, p = 0.03, "
                             "Holm p = 0.07, 5 vs 5 seeds")
    assert first.significant and acc.p_holm != acc.p_holm  # the raw flag stays; the original is not changed
    untestable = stats.compare([0.02], [0.03, 0.04], "A", "B", lower_is_better=True, what="test loss")
    assert stats.adjust([untestable])[0] == untestable
    assert untestable.verdict == "A vs B (test loss): not testable (1 seed), 1 vs 2 seeds"


"""Statistics over seeds: mean, standard deviation, t-based 95% intervals and Welch's t-test with a verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats as sps

ALPHA = 0.05  # significance level of every pairwise test (uncorrected for multiple comparisons)
NAN = float("nan")


def _clean(values: Iterable[float]) -> np.ndarray:
    a = np.asarray([float(v) for v in values], dtype=float)
    return a[np.isfinite(a)]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (ddof 1) and 95% t interval of the mean; NaN where n is too small."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    def mean_std(self, digits: int = 2) -> str:
        if self.n == 0:
            return ""
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"

    def interval(self, digits: int = 2) -> str:
        return "" if self.n < 2 else f"[{self.low:.{digits}f}, {self.high:.{digits}f}]"


def summarize(values: Iterable[float], confidence: float = 0.95) -> Summary:
    """Summary of the finite values; the interval is mean ± t(n-1) * s / sqrt(n)."""
    a = _clean(values)
    n = len(a)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN)
    mean = float(a.mean())
    if n < 2:
        return Summary(1, mean, NAN, NAN, NAN)
    std = float(a.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of ``a`` against ``b``: the difference of means, its 95% interval, p, and a verdict."""

    a: str
    b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float  # mean_a - mean_b
    low: float  # 95% Welch interval of the difference
    high: float
    t: float
    df: float
    p: float
    significant: bool
    verdict: str


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def compare(a: Iterable[float], b: Iterable[float], name_a: str = "A", name_b: str = "B",
            alpha: float = ALPHA) -> Comparison:
    """Welch's two-sided t-test (unequal variances) of two groups of per-seed scores, higher is better."""
    x, y = _clean(a), _clean(b)
    n_x, n_y = len(x), len(y)
    mean_x = float(x.mean()) if n_x else NAN
    mean_y = float(y.mean()) if n_y else NAN
    diff = mean_x - mean_y
    counts = f"{n_x} vs {n_y} seeds"
    nan = dict(low=NAN, high=NAN, t=NAN, df=NAN, p=NAN, significant=False)
    if min(n_x, n_y) < 2:
        smallest = min(n_x, n_y)
        why = "no results" if smallest == 0 else _seeds(smallest)
        verdict = f"{name_a} vs {name_b}: not testable ({why}), {counts}"
        return Comparison(name_a, name_b, n_x, n_y, mean_x, mean_y, diff, verdict=verdict, **nan)
    var_x, var_y = x.var(ddof=1) / n_x, y.var(ddof=1) / n_y
    se = math.sqrt(var_x + var_y)
    if se == 0:
        word = "identical" if diff == 0 else "different"
        verdict = (f"{name_a} vs {name_b}: not testable (every seed scored the same within each side, "
                   f"means {word}), {counts}")
        return Comparison(name_a, name_b, n_x, n_y, mean_x, mean_y, diff, verdict=verdict, **nan)
    result = sps.ttest_ind(x, y, equal_var=False)
    t, p = float(result.statistic), float(result.pvalue)
    df = float((var_x + var_y) ** 2 / (var_x**2 / (n_x - 1) + var_y**2 / (n_y - 1)))  # Welch-Satterthwaite
    half = float(sps.t.ppf(0.975, df)) * se
    significant = p < alpha
    first, second, n_first, n_second = (name_a, name_b, n_x, n_y) if diff >= 0 else (name_b, name_a, n_y, n_x)
    sign = "=" if diff == 0 else ">"
    verdict = (f"{first} {sign} {second}: {'significant' if significant else 'not significant'}, {format_p(p)}, "
               f"{n_first} vs {n_second} seeds")
    return Comparison(name_a, name_b, n_x, n_y, mean_x, mean_y, diff, diff - half, diff + half, t, df, p,
                      significant, verdict)

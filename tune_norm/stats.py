"""Statistics over seeds: mean, standard deviation, t-based 95% intervals, Welch's t-test with a verdict, Holm."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as sps

ALPHA = 0.05  # significance level of every pairwise test (a report judges it on Holm-corrected p, see holm)
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
    significant: bool  # p < alpha, uncorrected
    verdict: str
    p_holm: float = NAN  # Holm-adjusted p over the family the test was corrected in (see adjust); NaN before
    lower_is_better: bool = False  # True for a loss: the verdict names the side with the lower mean first
    what: str = ""  # what was compared ("accuracy", "test loss"), named in the verdict when given


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.3f}" if p < 0.01 else f"{p:.2f}"
    if (p < ALPHA) != (float(text) < ALPHA):  # rounding must not move p across alpha (0.0496 is not "0.05")
        text = f"{p:.4f}"
    return f"p = {text}"


def _seeds(n: int) -> str:
    return f"{n} seed{'' if n == 1 else 's'}"


def compare(a: Iterable[float], b: Iterable[float], name_a: str = "A", name_b: str = "B",
            alpha: float = ALPHA, *, lower_is_better: bool = False, what: str = "") -> Comparison:
    """Welch's two-sided t-test (unequal variances) of two groups of per-seed scores, higher is better
    (lower for a loss: ``lower_is_better``); ``what`` names the measure in the verdict."""
    x, y = _clean(a), _clean(b)
    n_x, n_y = len(x), len(y)
    mean_x = float(x.mean()) if n_x else NAN
    mean_y = float(y.mean()) if n_y else NAN
    diff = mean_x - mean_y
    counts = f"{n_x} vs {n_y} seeds"
    nan = dict(low=NAN, high=NAN, t=NAN, df=NAN, p=NAN, significant=False, lower_is_better=lower_is_better,
               what=what)
    names = f"{name_a} vs {name_b}" + (f" ({what})" if what else "")
    if min(n_x, n_y) < 2:
        smallest = min(n_x, n_y)
        why = "no results" if smallest == 0 else _seeds(smallest)
        verdict = f"{names}: not testable ({why}), {counts}"
        return Comparison(name_a, name_b, n_x, n_y, mean_x, mean_y, diff, verdict=verdict, **nan)
    var_x, var_y = x.var(ddof=1) / n_x, y.var(ddof=1) / n_y
    se = math.sqrt(var_x + var_y)
    if se == 0:
        word = "identical" if diff == 0 else "different"
        verdict = f"{names}: not testable (every seed scored the same within each side, means {word}), {counts}"
        return Comparison(name_a, name_b, n_x, n_y, mean_x, mean_y, diff, verdict=verdict, **nan)
    result = sps.ttest_ind(x, y, equal_var=False)
    t, p = float(result.statistic), float(result.pvalue)
    df = float((var_x + var_y) ** 2 / (var_x**2 / (n_x - 1) + var_y**2 / (n_y - 1)))  # Welch-Satterthwaite
    half = float(sps.t.ppf(0.975, df)) * se
    c = Comparison(name_a, name_b, n_x, n_y, mean_x, mean_y, diff, diff - half, diff + half, t, df, p, p < alpha,
                   "", lower_is_better=lower_is_better, what=what)
    return replace(c, verdict=_verdict(c, alpha))


def _verdict(c: Comparison, alpha: float) -> str:
    """'BatchNorm > GroupNorm: significant, p = 0.004, 5 vs 5 seeds'; the better side first ('<' for a loss);
    with a Holm p the verdict is judged on it and says both."""
    a_first = c.diff >= 0 if not c.lower_is_better else c.diff <= 0
    first, second, n_first, n_second = (c.a, c.b, c.n_a, c.n_b) if a_first else (c.b, c.a, c.n_b, c.n_a)
    sign = "=" if c.diff == 0 else "<" if c.lower_is_better else ">"
    what = f" ({c.what})" if c.what else ""
    if not math.isfinite(c.p_holm):
        word = "significant" if c.p < alpha else "not significant"
        return f"{first} {sign} {second}{what}: {word}, {format_p(c.p)}, {n_first} vs {n_second} seeds"
    word = ("significant" if c.p_holm < alpha else
            "not significant after Holm's correction" if c.p < alpha else "not significant")
    return (f"{first} {sign} {second}{what}: {word}, {format_p(c.p)}, Holm {format_p(c.p_holm)}, "
            f"{n_first} vs {n_second} seeds")


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the k-th smallest of m finite p-values becomes
    max over j <= k of min(1, (m - j + 1) * p_(j)). A NaN (an untestable comparison) stays NaN and is not
    counted in m. Rejecting where the adjusted p < alpha keeps the familywise error rate at most alpha."""
    ps = [float(p) for p in pvalues]
    finite = sorted((p, i) for i, p in enumerate(ps) if math.isfinite(p))
    m, running, out = len(finite), 0.0, [NAN] * len(ps)
    for k, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def adjust(comparisons: Iterable[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The comparisons of one family with their Holm-adjusted p and verdicts judged on it."""
    family = list(comparisons)
    adjusted = holm(c.p for c in family)
    return [c if not math.isfinite(q) else replace(c, p_holm=q, verdict=_verdict(replace(c, p_holm=q), alpha))
            for c, q in zip(family, adjusted)]

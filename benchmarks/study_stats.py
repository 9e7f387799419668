"""The study's statistics: means with 95 % Student-t confidence intervals, and their format
(``benchmarks/study.py`` and ``benchmarks/study_rollout.py``)."""

from __future__ import annotations

import math
import statistics


def t_quantile(n: int) -> float:
    """The 97.5 % quantile of Student's t with n - 1 degrees of freedom."""
    from scipy.stats import t  # a dependency of the project

    return float(t.ppf(0.975, n - 1))


def mean_ci(values: list[float]) -> tuple[float, float, int]:
    """Mean and the half-width of its 95 % confidence interval (NaN with one value)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    mean = statistics.fmean(values)
    if n == 1:
        return mean, math.nan, 1
    return mean, t_quantile(n) * statistics.stdev(values) / math.sqrt(n), n


def fmt(mean: float, half: float, digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
    if not math.isfinite(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}{unit}"
    return text + (f" ± {half * scale:.{digits}f}" if math.isfinite(half) else "")

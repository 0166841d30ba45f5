"""Aggregation of per-sample scores: mean and 95 % confidence intervals
(docs/evaluation.md#confidence-intervals).

The Wald half-width 1.96·σ/√N with the population σ is what the paper reports (it reproduces its
± values); Wilson and percentile-bootstrap intervals are there for small N and extreme p.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A mean in percent with a 95 % interval [low, high] (percent) and the method that made it."""

    n: int
    mean: float
    half_width: float
    low: float
    high: float
    method: str

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.half_width:.1f}"


def wald(scores: Sequence[float]) -> Estimate:
    """100·mean ± 100·1.96·σ/√N, σ with ddof 0 (the paper's interval)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no scores to aggregate")
    m = float(x.mean())
    hw = Z95 * float(x.std(ddof=0)) / math.sqrt(x.size)
    return Estimate(int(x.size), 100 * m, 100 * hw, 100 * (m - hw), 100 * (m + hw), "wald")


def wilson(scores: Sequence[float]) -> Estimate:
    """Wilson score interval for 0/1 scores (fractional scores are treated as their mean)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no scores to aggregate")
    n, p = x.size, float(x.mean())
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    hw = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    # the interval always holds p (at p = 0 or 1 one end is p itself): clamp float rounding
    low, high = min(p, max(0.0, centre - hw)), max(p, min(1.0, centre + hw))
    return Estimate(n, 100 * p, 100 * hw, 100 * low, 100 * high, "wilson")


def bootstrap(scores: Sequence[float], resamples: int = 10_000, seed: int = 0) -> Estimate:
    """Percentile bootstrap (10,000 resamples, seed 0 by default)."""
    x = np.asarray(scores, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no scores to aggregate")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    m = float(x.mean())
    return Estimate(
        int(x.size),
        100 * m,
        100 * float(hi - lo) / 2,
        100 * float(lo),
        100 * float(hi),
        "bootstrap",
    )

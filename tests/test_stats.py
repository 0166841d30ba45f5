"""Aggregation (docs/evaluation.md#confidence-intervals): the Wald interval reproduces the paper's
± values; Wilson stays informative where Wald collapses."""

import pytest

from vigorl_agents.stats import bootstrap, wald, wilson


def _binary(p: float, n: int) -> list[float]:
    k = round(p * n)
    return [1.0] * k + [0.0] * (n - k)


def test_wald_reproduces_paper_half_widths():
    assert wald(_binary(0.865, 1272)).half_width == pytest.approx(1.9, abs=0.05)  # ScreenSpot-V2
    assert wald(_binary(0.671, 228)).half_width == pytest.approx(6.1, abs=0.05)  # RoboSpatial
    est = wald([1, 0, 1, 1])
    assert est.mean == 75.0 and est.n == 4
    assert est.half_width == pytest.approx(100 * 1.96 * (0.75 * 0.25) ** 0.5 / 2, rel=1e-3)


def test_wilson_and_bootstrap_bracket_the_mean():
    scores = _binary(0.9, 50)
    w, b = wilson(scores), bootstrap(scores)
    assert w.low < 90 < w.high <= 100
    assert b.low <= 90 <= b.high
    assert bootstrap(scores).to_dict() == b.to_dict()  # seeded
    with pytest.raises(ValueError):
        wald([])


def test_wilson_is_informative_where_wald_collapses():
    """0/N: the Wald interval is 0 ± 0 whatever N; Wilson's upper end is z²/(N+z²)."""
    zeros = [0.0] * 100
    assert wald(zeros).half_width == 0.0
    w = wilson(zeros)
    assert w.low == 0.0 and w.high == pytest.approx(100 * 1.96**2 / (100 + 1.96**2), rel=1e-3)
    ones = wilson([1.0] * 20)
    assert ones.high == 100.0 and ones.low == pytest.approx(100 * 20 / (20 + 1.96**2), rel=1e-3)

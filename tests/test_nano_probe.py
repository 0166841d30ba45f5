"""experiments/nano_probe.py: the learnability probe runs end to end and its loop learns."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from experiments import nano, nano_probe

TINY = nano.Student(hidden=64, layers=1, heads=2, kv_heads=1, intermediate=128,
                    vision_depth=1, vision_dim=32)  # fmt: skip


def test_colour_probe_loss_falls():
    """30 steps on the colour of a lone square: the loss of the answer template falls (a loop
    that stepped the wrong way, or not at all, would not)."""
    res = nano_probe.run(
        nano_probe.ProbeArgs(
            task="colour", steps=30, batch=8, n_train=64, n_test=8, student=TINY, lr=3e-3
        )
    )
    first, last = res["curve"][0][1], res["curve"][-1][1]
    assert res["steps"] == 30 and 0.0 <= res["accuracy"] <= 1.0
    assert last < first


def test_spatial_chain_probe_reports_point_errors():
    res = nano_probe.run(
        nano_probe.ProbeArgs(
            task="spatial-chain", steps=2, batch=2, n_train=6, n_test=4, student=TINY
        )
    )
    assert set(res) >= {"accuracy", "x_error", "x_error_of_the_mean", "curve"}
    assert res["x_error_of_the_mean"] > 0


def test_locate_probe_scores_points():
    res = nano_probe.run(
        nano_probe.ProbeArgs(task="locate", steps=2, batch=2, n_train=6, n_test=4, student=TINY)
    )
    assert set(res) >= {"x_error", "x_error_of_the_mean"} and res["x_error_of_the_mean"] > 0

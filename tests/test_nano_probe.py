"""experiments/nano_probe.py: the learnability probe runs end to end and its loop learns."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from experiments import nano, nano_probe


@pytest.fixture(autouse=True)
def _small_corpus(monkeypatch):
    monkeypatch.setattr(nano_probe, "CORPUS_SCENES", 8)


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


def test_caption_probe_targets_name_every_object_left_to_right():
    scene = nano.Tasks().scene(nano.SPATIAL)
    samples = nano_probe._spatial("train", 4, 16, scene, caption=True)
    for _, question, text, _, named in samples:
        assert question == "List the objects." and len(named) >= 2
        assert text == " ".join(f"{n} at ({x}, {y})." for n, x, y, _ in named)
        assert [x for _, x, _, _ in named] == sorted(x for _, x, _, _ in named)
        for _, x, y, box in named:  # each point is its object's box centre
            assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
    res = nano_probe.run(
        nano_probe.ProbeArgs(task="caption", steps=2, batch=2, n_train=6, n_test=4, student=TINY)
    )
    assert 0.0 <= res["on_target"] <= 1.0 and res["x_error_of_the_mean"] > 0


def test_a_caption_probe_is_the_base_of_a_chain_probe(tmp_path):
    """--save / --load: every SynthSpatial task builds the same tokenizer, so the caption probe's
    weights load into the chain probe's student (a different vocabulary would not fit)."""
    base = tmp_path / "base.pt"
    kw = dict(steps=2, batch=2, n_train=6, n_test=2, student=TINY)
    nano_probe.run(nano_probe.ProbeArgs(task="caption", save=base, **kw))
    assert base.stat().st_size > 0
    res = nano_probe.run(nano_probe.ProbeArgs(task="spatial-chain", load=base, **kw))
    assert res["steps"] == 2

"""`scene=`: the procedural generators' parameters as a make kwarg (docs/envs.md#scene-parameters).

The defaults must give exactly the samples of before (ids, questions, pixels), a scene must be
honoured in every sample, the frame cache and fingerprints must keep scenes apart, and bad values
are refused naming the parameter."""

from __future__ import annotations

import hashlib

import gymnasium as gym
import pytest

import vigorl_env  # noqa: F401
from vigorl_env.data.synth.search import SynthSearch
from vigorl_env.data.synth.spatial import SynthSpatial

SPATIAL = "ViGoRL/SynthSpatial-v0"
SEARCH = "ViGoRL/SynthSearch-v0"
NANO_SEARCH = {
    "width": [560, 700],
    "height": [420, 520],
    "n_shapes": [4, 8],
    "side": [12, 20],
    "target_side": [10, 14],
    "n_blobs": [2, 5],
}


def _digest(sample) -> str:
    return hashlib.sha256(sample.image().tobytes() + sample.question.encode()).hexdigest()


@pytest.mark.parametrize("cls", [SynthSpatial, SynthSearch])
def test_defaults_spelled_out_change_nothing(cls):
    spelled = {k: list(v) for k, v in cls.SCENE.items()}
    a, b = cls("test", 0), cls("test", 0, scene=spelled)
    for i in range(6):
        assert _digest(a[i]) == _digest(b[i])
    assert a.cache_key == b.cache_key


def test_spatial_scene_is_honoured():
    ds = SynthSpatial(
        "train", 0, scene={"n_objects": [2, 3], "families": ["left_right"], "min_dcx": [120, 120]}
    )
    for i in range(25):
        s = ds[i]
        assert 2 <= len(s.objects) <= 3
        assert s.meta["family"] == "left_right"
        a, b = (next(o for o in s.objects if o.id == t) for t in s.target_ids)
        assert abs((a.box[0] + a.box[2]) - (b.box[0] + b.box[2])) >= 2 * 120
    assert ds.cache_key != SynthSpatial("train", 0).cache_key


def test_search_scene_is_honoured():
    ds = SynthSearch("train", 0, scene={**NANO_SEARCH, "families": ["attribute"]})
    for i in range(25):
        s = ds[i]
        img = s.image()
        assert 560 <= img.width <= 700 and 420 <= img.height <= 520
        assert 4 <= len(s.objects) <= 8 and s.meta["family"] == "attribute"
        sides = {o.id: o.attributes["side"] for o in s.objects}
        assert 10 <= sides[s.target_ids[0]] <= 14
        assert all(12 <= v <= 20 for k, v in sides.items() if k not in s.target_ids)


def test_env_scene_kwarg_fingerprint_and_frames():
    kw = {"split": "test", "max_pixels": 16 * 784}
    plain = gym.make(SPATIAL, **kw).unwrapped
    spelled = gym.make(SPATIAL, scene={"n_objects": [3, 6]}, **kw).unwrapped
    nano = gym.make(SPATIAL, scene={"n_objects": [2, 2]}, **kw).unwrapped
    assert plain.config.scene is None and spelled.config.scene is None  # defaults resolve away
    assert plain.fingerprint == spelled.fingerprint != nano.fingerprint
    assert nano.config.scene["n_objects"] == [2, 2]
    obs_a, _ = plain.reset(options={"index": 0})
    obs_b, _ = nano.reset(options={"index": 0})
    assert len(nano._episode.sample.objects) == 2
    assert obs_a["text"] != obs_b["text"] or (obs_a["image"] != obs_b["image"]).any()


@pytest.mark.parametrize(
    ("env_id", "scene", "match"),
    [
        (SPATIAL, {"n_objs": [2, 3]}, "unknown scene parameter"),
        (SPATIAL, {"n_objects": [3, 2]}, "n_objects must be"),
        (SPATIAL, {"n_objects": [1, 2]}, "n_objects must be"),
        (SPATIAL, {"n_objects": 3}, "n_objects must be"),
        (SPATIAL, {"families": []}, "families must be"),
        (SPATIAL, {"families": ["left_right", "above"]}, "families must be"),
        (SPATIAL, ["n_objects"], "scene must be a mapping"),
        (SEARCH, {"side": [10, 10.5]}, "side must be"),
        ("ViGoRL/VStar-v0", {"n_shapes": [2, 3]}, "procedural envs only"),
    ],
)
def test_bad_scene_is_refused(env_id, scene, match):
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, scene=scene)


def test_crowded_search_scene_names_the_fix():
    ds = SynthSearch(
        "train",
        0,
        scene={"width": [200, 200], "height": [200, 200], "n_shapes": [150, 150], "side": [40, 40]},
    )
    with pytest.raises(ValueError, match="do not fit"):
        ds[0]

"""SynthSearch and SynthSpatial (docs/data.md#procedural-datasets): determinism, pickling, ids, numeric constraints, GT."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from vigorl_env.data.base import fmt_options
from vigorl_env.data.synth import spatial as sp
from vigorl_env.data.synth.search import SearchScene, SynthSearch
from vigorl_env.data.synth.shapes import COLOR_NAMES, COLORS, SHAPE_KINDS
from vigorl_env.data.synth.spatial import SpatialScene, SynthSpatial, occlusion

N_LAYOUTS = 50


def _pixels(sample) -> bytes:
    img = sample.image()
    assert img.mode == "RGB"
    return img.tobytes()


def _scene(sample):
    return sample.image.args[0]


def _cx2(box) -> float:  # doubled centre column
    return box[0] + box[2]


def _desc_counts(sample) -> collections.Counter:
    return collections.Counter((o.attributes["color"], o.category) for o in sample.objects)


# ---------------------------------------------------------------- common record checks


@pytest.mark.parametrize("cls", [SynthSearch, SynthSpatial])
def test_record_shape(cls):
    ds = cls("train", 0)
    for i in range(N_LAYOUTS):
        s = ds[i]
        assert s.sample_id == f"{cls.name}-train-0-{i}"
        assert s.answer_kind == "option_text"
        assert s.question.count("<image>") == 1 and s.question.startswith("<image>")
        text, _, opts = s.question[len("<image>") :].partition("\n")
        assert text.endswith("?") and opts == fmt_options(s.options)
        assert len(set(s.options)) == len(s.options) and s.answer in s.options
        assert s.meta["generator"] == cls.name
        ids = [o.id for o in s.objects]
        assert len(set(ids)) == len(ids) and set(s.target_ids) <= set(ids) and s.target_ids
        for o in s.objects:
            x1, y1, x2, y2 = o.box
            assert all(float(v).is_integer() for v in o.box) and x1 <= x2 and y1 <= y2
            assert o.attributes["shape"] == o.category


@pytest.mark.parametrize("cls", [SynthSearch, SynthSpatial])
def test_ids_size_and_pickle(cls):
    ds = cls("val", 7, size=30)
    assert len(ds) == 30 and len(cls("val", 7)) == 2**31
    for i in (0, 17, 29):
        assert ds.index_of(ds[i].sample_id) == i
    with pytest.raises(IndexError):
        ds[30]
    for bad in (f"{cls.name}-train-7-3", f"{cls.name}-val-8-3", f"{cls.name}-val-7-30", "x"):
        with pytest.raises(KeyError):
            ds.index_of(bad)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2[5].question == ds[5].question and ds2.index_of(ds[5].sample_id) == 5
    s = ds[3]
    loader = pickle.loads(pickle.dumps(s.image))
    assert len(pickle.dumps(s)) < 20_000  # the sample carries a layout, not pixels
    assert loader().tobytes() == s.image().tobytes()


@pytest.mark.parametrize("cls", [SynthSearch, SynthSpatial])
def test_determinism(cls):
    a, b = cls("train", 0)[4], cls("train", 0)[4]  # fresh instances: no shared state
    assert a.question == b.question and a.options == b.options and a.objects == b.objects
    assert a.target_ids == b.target_ids and a.answer == b.answer
    pa = _pixels(a)
    assert pa == _pixels(b)
    assert pa == _pixels(a)  # rendering twice (warm caches) changes nothing
    others = [cls("train", 0)[5], cls("train", 1)[4], cls("val", 0)[4]]
    for o in others:
        assert _scene(o) != _scene(a)
        assert o.image().tobytes() != pa


def test_render_identical_in_a_fresh_process():
    """No hidden process state (hash seeds, caches): a new interpreter renders the same bytes."""
    code = (
        "import hashlib;from vigorl_env.data.synth.search import SynthSearch;"
        "from vigorl_env.data.synth.spatial import SynthSpatial;"
        "print(hashlib.sha256(SynthSearch('test',3)[11].image().tobytes()).hexdigest());"
        "print(hashlib.sha256(SynthSpatial('test',3)[11].image().tobytes()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.split()
    here = [
        hashlib.sha256(c("test", 3)[11].image().tobytes()).hexdigest()
        for c in (SynthSearch, SynthSpatial)
    ]
    assert out == here


# ---------------------------------------------------------------- SynthSearch


def test_search_constraints():
    ds = SynthSearch("train", 0)
    for i in range(N_LAYOUTS):
        s = ds[i]
        sc: SearchScene = _scene(s)
        w, h = sc.width, sc.height
        assert 1600 <= w <= 2600 and 1100 <= h <= 1800
        assert 8 <= len(sc.blobs) <= 15
        assert 25 <= len(s.objects) <= 60
        boxes = np.array([o.box for o in s.objects], dtype=np.int64)
        for o in s.objects:
            x1, y1, x2, y2 = (int(v) for v in o.box)
            side = x2 - x1 + 1
            assert side == y2 - y1 + 1 == o.attributes["side"] and 18 <= side <= 40
            assert side * side <= 0.001 * w * h
            assert x1 >= 10 and y1 >= 10 and w - 1 - x2 >= 10 and h - 1 - y2 >= 10
            assert o.category in SHAPE_KINDS and o.attributes["color"] in COLOR_NAMES
        # ≥ 8 background pixels between any two boxes (in x or in y)
        gx = (
            np.maximum(boxes[:, None, 0] - boxes[None, :, 2], boxes[None, :, 0] - boxes[:, None, 2])
            - 1
        )
        gy = (
            np.maximum(boxes[:, None, 1] - boxes[None, :, 3], boxes[None, :, 1] - boxes[:, None, 3])
            - 1
        )
        gap = np.maximum(gx, gy)
        np.fill_diagonal(gap, 10**6)
        assert gap.min() >= 8
        # targets are small: under one 28-px patch in the ≤ 2.85 MP model frame
        scale = min(1.0, math.sqrt(2_850_000 / (w * h)))
        for t in s.target_ids:
            box = next(o.box for o in s.objects if o.id == t)
            assert box[2] - box[0] + 1 <= 26 and (box[2] - box[0] + 1) * scale < 28


def test_search_ground_truth():
    ds = SynthSearch("train", 1)
    seen = collections.Counter()
    for i in range(N_LAYOUTS):
        s = ds[i]
        fam = s.meta["family"]
        seen[fam] += 1
        objs = {o.id: o for o in s.objects}
        if fam == "attribute":
            (t,) = s.target_ids
            kind, color = objs[t].category, objs[t].attributes["color"]
            assert s.question.split("\n")[0] == f"<image>What is the color of the {kind}?"
            assert [o.category for o in s.objects].count(kind) == 1
            assert s.answer == color and len(s.options) == 4 and set(s.options) <= set(COLOR_NAMES)
            other_colors = {o.attributes["color"] for o in s.objects if o.id != t}
            assert set(s.options) <= other_colors  # every option colour recurs elsewhere
        else:
            a, b = (objs[t] for t in s.target_ids)
            da, db = (f"{o.attributes['color']} {o.category}" for o in (a, b))
            assert s.question.split("\n")[0] == (
                f"<image>Is the {da} on the left or right side of the {db}?"
            )
            counts = _desc_counts(s)
            assert counts[(a.attributes["color"], a.category)] == 1
            assert counts[(b.attributes["color"], b.category)] == 1
            side = max(a.box[2] - a.box[0] + 1, b.box[2] - b.box[0] + 1)
            assert abs(_cx2(a.box) - _cx2(b.box)) / 2 >= 2 * side
            assert s.answer == ("left" if _cx2(a.box) < _cx2(b.box) else "right")
            assert sorted(s.options) == ["left", "right"]
    assert set(seen) == {"attribute", "relative_position"}


def test_search_pixels_match_boxes():
    """The fill colour sits at each shape's box centre; a square fills its box corner to corner."""
    s = SynthSearch("val", 2)[0]
    img = np.asarray(s.image()).astype(int)
    sc = _scene(s)
    assert img.shape == (sc.height, sc.width, 3)
    for o in s.objects:
        x1, y1, x2, y2 = (int(v) for v in o.box)
        cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
        assert np.abs(img[cy, cx] - COLORS[o.attributes["color"]]).max() == 0, o
        if o.category == "square":
            inner = img[y1 + 3 : y2 - 2, x1 + 3 : x2 - 2]
            assert np.abs(inner - COLORS[o.attributes["color"]]).max() == 0


def test_search_family_mix():
    samples = [SynthSearch("test", 9)[i] for i in range(200)]  # layouts only, nothing rendered
    fam = collections.Counter(s.meta["family"] for s in samples)
    assert 0.38 <= fam["attribute"] / 200 <= 0.62
    answers = collections.Counter(
        s.answer for s in samples if s.meta["family"] == "relative_position"
    )
    assert answers["left"] > 20 and answers["right"] > 20


# ---------------------------------------------------------------- SynthSpatial


def test_spatial_constraints():
    ds = SynthSpatial("train", 0)
    size_k = {"sphere": 0.90, "cylinder": 0.80, "cone": 0.90}
    for i in range(N_LAYOUTS):
        s = ds[i]
        sc: SpatialScene = _scene(s)
        w, h = sc.width, sc.height
        assert 640 <= w <= 1024 and 4 * h == 3 * w
        assert 0.30 <= sc.horizon / h <= 0.45
        assert 3 <= len(s.objects) <= 6
        zs = [o.attributes["depth"] for o in s.objects]
        assert zs == sorted(zs, reverse=True)  # listed (and drawn) far first
        for o, so in zip(s.objects, sc.solids, strict=True):
            x1, y1, x2, y2 = o.box
            z = o.attributes["depth"]
            assert 1.0 <= z <= 4.0 and o.category in sp.KINDS
            assert o.attributes["color"] in COLOR_NAMES
            assert x1 >= 0 and x2 <= w - 1 and y1 >= 0 and y2 <= h - 1
            assert y1 > sc.horizon - 0.5 * sc.focal  # near the ground, below the sky
            # base row rises toward the horizon with z: row = horizon + G/z
            assert abs((y2 + 1) - (sc.horizon + sc.ground_gain / z)) <= 0.5
            # scale ∝ 1/z
            if o.category in size_k:
                assert abs((x2 - x1 + 1) - size_k[o.category] * sc.focal / z) <= 2
            else:
                assert abs((x2 - x1 + 1 - abs(so.shear)) - 0.85 * sc.focal / z) <= 1
        assert max(occlusion(sc.solids)) <= 0.30
        # footprints never interpenetrate
        xw = [(so.cx - w / 2) * so.z / sc.focal for so in sc.solids]
        for a in range(len(xw)):
            for b in range(a):
                assert math.hypot(xw[a] - xw[b], zs[a] - zs[b]) >= 0.95


def test_spatial_ground_truth():
    ds = SynthSpatial("train", 3)
    seen = collections.Counter()
    for i in range(N_LAYOUTS):
        s = ds[i]
        fam = s.meta["family"]
        seen[fam] += 1
        objs = {o.id: o for o in s.objects}
        first = s.question.split("\n")[0]
        if fam == "count":
            kind = next(k for k in sp.KINDS if f" {sp.PLURAL[k]} " in first)
            members = [o.id for o in s.objects if o.category == kind]
            assert s.answer == str(len(members)) and sorted(s.target_ids) == sorted(members)
            assert len(s.options) == 4 and all(v.isdigit() for v in s.options)
            continue
        a, b = (objs[t] for t in s.target_ids)
        da, db = (f"the {o.attributes['color']} {o.category}" for o in (a, b))
        counts = _desc_counts(s)
        assert counts[(a.attributes["color"], a.category)] == 1
        assert counts[(b.attributes["color"], b.category)] == 1
        assert first.index(da) < first.index(db)
        if fam == "left_right":
            assert "left or" in first and abs(_cx2(a.box) - _cx2(b.box)) / 2 >= 40
            assert s.answer == ("left" if _cx2(a.box) < _cx2(b.box) else "right")
            assert sorted(s.options) == ["left", "right"]
        else:
            assert "closer to the camera" in first
            za, zb = a.attributes["depth"], b.attributes["depth"]
            assert abs(za - zb) >= 0.5
            assert set(s.options) == {da, db} and s.answer == (da if za < zb else db)
    assert set(seen) == set(sp.FAMILIES)


def test_spatial_family_mix():
    ds = SynthSpatial("test", 9)
    fam = collections.Counter(ds[i].meta["family"] for i in range(200))
    for f in sp.FAMILIES:
        assert 0.23 <= fam[f] / 200 <= 0.44, fam


def test_spatial_pixels_inside_boxes():
    """Solids change pixels only inside their boxes, and fill most of a fully visible box."""
    for i in range(3):
        s = SynthSpatial("val", 1)[i]
        sc = _scene(s)
        bg = sp._background(sc)
        sp._shadows(bg, sc)
        diff = (np.asarray(s.image()).astype(int) - np.asarray(bg).astype(int)) != 0
        diff = diff.any(axis=2)
        inside = np.zeros_like(diff)
        for o in s.objects:
            x1, y1, x2, y2 = (int(v) for v in o.box)
            inside[y1 : y2 + 1, x1 : x2 + 1] = True
        assert not (diff & ~inside).any()
        for o, occ in zip(s.objects, occlusion(sc.solids), strict=True):
            if occ == 0:
                x1, y1, x2, y2 = (int(v) for v in o.box)
                assert diff[y1 : y2 + 1, x1 : x2 + 1].mean() > 0.5, o


def test_occlusion_measure():
    """Hand-made cases: disjoint, fully covered, half covered."""

    def sphere(cx, z, yb=300, w=100):
        return sp._solid("sphere", "red", z, cx, yb, w / 0.9, 500)

    far, near = sphere(200, 3.0), sphere(500, 2.0)
    assert occlusion((far, near)) == [0.0, 0.0]
    small_far, big_near = sphere(300, 3.0, w=40), sphere(300, 2.0, w=120)
    assert occlusion((small_far, big_near))[0] == pytest.approx(1.0)
    a, b = sphere(300, 3.0), sphere(350, 2.0)  # b's centre on a's right edge line x = 350
    frac = occlusion((a, b))[0]
    # area of the lens between two unit circles at distance 1, over π
    lens = 2 * math.acos(0.5) - 0.5 * math.sqrt(3)
    assert frac == pytest.approx(lens / math.pi, abs=0.03)


def test_replace_keeps_scenes_plain():
    """Scenes are frozen dataclasses of plain values (cheap to pickle, hashable)."""
    for s in (SynthSearch("train", 0)[0], SynthSpatial("train", 0)[0]):
        sc = _scene(s)
        assert dataclasses.is_dataclass(sc)
        hash(sc)
        with pytest.raises(dataclasses.FrozenInstanceError):
            sc.width = 1  # type: ignore[misc]

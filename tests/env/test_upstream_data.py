"""Upstream-format loaders (docs/data.md, docs/envs.md#errors) on a fixture DATA_ROOT."""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from vigorl_env import DataFormatError, DataNotFoundError
from vigorl_env.data.base import Dataset
from vigorl_env.data.images import ImageRef, reroot_image_path
from vigorl_env.data.splits import hash_split, split_of
from vigorl_env.data.upstream import BENCHMARKS, load_benchmark, parse_options, resolve_data_root

try:
    from .upstream_fixtures import EXPECTED_COUNTS, IMAGE_SIZES, VWA_IDS
except ImportError:
    from upstream_fixtures import EXPECTED_COUNTS, IMAGE_SIZES, VWA_IDS

# The layout table of docs/data.md#data_root-layout, written out independently of BENCHMARKS.
DOC_FILES = {
    ("SAT2", "mcts"): "spatial_reasoning/vigorl_sat2_MCTS.jsonl",
    ("SAT2", "train"): "spatial_reasoning/vigorl_sat2_train_RL.jsonl",
    ("SAT2", "val"): "spatial_reasoning/vigorl_sat2_val_RL.jsonl",
    ("SAT2", "test"): "spatial_reasoning/sat2_test/sat2_test.jsonl",
    ("BLINK", "val"): "spatial_reasoning/blink/blink_validation.jsonl",
    ("RoboSpatial", "test"): "spatial_reasoning/robospatial/robospatial_test.jsonl",
    ("VStar", "test"): "visual_search/vstar/vstarbench_test.jsonl",
    ("VStar", "test_rl"): "visual_search/vstar/vstarbench_test_RL.jsonl",
    ("VisualSearchSA", "mcts"): "visual_search/vigorl_SA_MCTS.jsonl",  # 2nd candidate (fixture)
    ("VisualSearchSA", "train"): "visual_search/vigorl_SA_RL.jsonl",
    ("OSAtlas", "mcts"): "web_grounding/vigorl_osatlas_MCTS.jsonl",
    ("OSAtlas", "train"): "web_grounding/vigorl_osatlas_train_RL.jsonl",
    ("OSAtlas", "val"): "web_grounding/vigorl_osatlas_val_RL.jsonl",
    ("ScreenSpotV2", "test"): "web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl",
    ("ScreenSpotPro", "test"): "web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl",
    ("VisualWebArena", "mcts"): "web_action/vigorl_web_action_MCTS.jsonl",
    ("VisualWebArena", "train"): "web_action/vigorl_web_action_MCTS.jsonl",
    ("VisualWebArena", "val"): "web_action/vigorl_web_action_MCTS.jsonl",
}
DOC_KINDS = {  # docs/geometry.md#defaults-per-benchmark
    "SAT2": "option_text",
    "BLINK": "option_text",
    "RoboSpatial": "option_text",
    "VStar": "option_text",
    "VisualSearchSA": "option_text",
    "OSAtlas": "point_in_box",
    "ScreenSpotV2": "point_in_box",
    "ScreenSpotPro": "point_in_box",
    "VisualWebArena": "web_action",
}
DOC_DEFAULT_SPLIT = {
    "SAT2": "train",
    "VisualSearchSA": "train",
    "OSAtlas": "train",
    "VisualWebArena": "train",
    "BLINK": "val",
    "RoboSpatial": "test",
    "VStar": "test",
    "ScreenSpotV2": "test",
    "ScreenSpotPro": "test",
}
DOC_DOMAIN = {
    "SAT2": "spatial_reasoning",
    "BLINK": "spatial_reasoning",
    "VStar": "visual_search",
    "VisualSearchSA": "visual_search",
    "OSAtlas": "web_grounding",
    "ScreenSpotV2": "web_grounding",
    "ScreenSpotPro": "web_grounding",
    "VisualWebArena": "web_action",
}


def write_lines(root: Path, rel: str, lines: list[str | dict]) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return p


def png(root: Path, rel: str, size=(64, 48), mode="RGB") -> str:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, (10, 200, 30) if mode == "RGB" else None).save(p)
    return rel


def e_rec(id_, image, question="<image>Q?\nA. yes\nB. no", gt="yes") -> dict:
    return {
        "id": id_,
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": gt}],
    }


# ------------------------------------------------------------------------------------------
# hash_split
# ------------------------------------------------------------------------------------------


def test_hash_split_formula():
    # sha256("abc") = ba7816bf… -> 0xba7816bf / 2**32 = 0.72839…
    assert hash_split("abc", 0.7284) is True
    assert hash_split("abc", 0.7283) is False
    # UTF-8 encoding: sha256("é") = 4a99557e… -> 0.29140…
    assert hash_split("é", 0.2915) and not hash_split("é", 0.2914)
    assert not any(hash_split(i, 0.0) for i in VWA_IDS)
    assert all(hash_split(i, 1.0) for i in VWA_IDS)


# ------------------------------------------------------------------------------------------
# every benchmark / split on the fixture root
# ------------------------------------------------------------------------------------------


def test_benchmark_table_matches_spec():
    assert set(BENCHMARKS) == set(DOC_KINDS)
    assert {(n, s) for n, b in BENCHMARKS.items() for s in b.splits} == set(DOC_FILES)
    for name, b in BENCHMARKS.items():
        assert b.answer_kind == DOC_KINDS[name]
        assert b.default_split == DOC_DEFAULT_SPLIT[name]
        assert b.domain == DOC_DOMAIN.get(name, "spatial_reasoning")
    assert BENCHMARKS["RoboSpatial"].project_defined and not BENCHMARKS["SAT2"].project_defined
    assert BENCHMARKS["VisualSearchSA"].splits["mcts"].candidates == (
        "vstar/vigorl_SA_MCTS.jsonl",
        "visual_search/vigorl_SA_MCTS.jsonl",
    )
    assert {s: b.splits[s].schema for b in [BENCHMARKS["SAT2"]] for s in b.splits} == {
        "mcts": "E",
        "train": "R",
        "val": "R",
        "test": "E",
    }


@pytest.mark.parametrize(("name", "split"), sorted(EXPECTED_COUNTS))
def test_every_split_loads(fixture_data_root, name, split):
    ds = load_benchmark(name, split, data_root=fixture_data_root)
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.split) == (name, split)
    assert len(ds) == EXPECTED_COUNTS[(name, split)] >= 2
    ids = [ds[i].sample_id for i in range(len(ds))]
    assert len(set(ids)) == len(ids)
    for i, s in enumerate(ds):
        assert ds.index_of(s.sample_id) == i
        assert s.answer_kind == DOC_KINDS[name]
        assert s.question.count("<image>") == 1
        assert s.meta["source"] == DOC_FILES[(name, split)]
        assert isinstance(s.meta["line"], int) and s.meta["line"] >= 1
        img = s.image()
        if isinstance(s.image, ImageRef) and s.image.path is not None:
            assert img.size == IMAGE_SIZES[s.image.path]
        if s.answer_kind == "point_in_box":
            x1, y1, x2, y2 = s.gt_box
            assert 0 <= x1 <= x2 <= img.width and 0 <= y1 <= y2 <= img.height
            assert s.answer == f"({int(x1)}, {int(y1)}, {int(x2)}, {int(y2)})"
            assert s.options is None
        else:
            assert s.gt_box is None
        if s.answer_kind == "option_text":
            assert s.options is not None and s.answer in s.options
    with pytest.raises(KeyError):
        ds.index_of("no-such-id")
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_specific_records(fixture_data_root):
    r = fixture_data_root
    train = load_benchmark("SAT2", "train", data_root=r)
    assert train.ids() == [
        f"vigorl_sat2_train_RL:{i}" for i in range(4)
    ]  # default id rule (docs/data.md#record-schemas)
    s = train[2]
    assert s.question == '<image>Is the "red" box above the blue one?\nA. yes\nB. no'
    assert (s.answer, s.options) == ("yes", ("yes", "no"))
    assert train[3].options == ("1", "2", "3", "4")
    test = load_benchmark("SAT2", "test", data_root=r)
    assert test.ids() == ["0", "1", "2", "3"]  # int ids cast to str
    assert test.index_of("2") == 2
    blink = load_benchmark("BLINK", data_root=r)
    assert blink.split == "val" and blink[0].options == ("yes", "no")
    pro = load_benchmark("ScreenSpotPro", data_root=r)
    assert pro[0].question == "<image>close the dialog"  # prepended without separator
    assert pro[1].gt_box == (600.0, 300.0, 700.0, 330.0)
    val = load_benchmark("SAT2", "val", data_root=r)
    assert val[0].image.b64 is not None and val[0].image().size == (320, 240)  # {"bytes"}
    assert val[1].image.path == "spatial_reasoning/images/sat2/living_1.jpg"  # {"path"}
    sa = load_benchmark("VisualSearchSA", "train", data_root=r)
    assert sa[0].image().mode == "RGBA"
    vwa = load_benchmark("VisualWebArena", "mcts", data_root=r)
    assert {s.answer.split()[0] for s in vwa} == {"click", "type", "scroll", "go_back", "stop"}
    assert vwa[0].options is None


def test_vwa_hash_split_disjoint_and_covering(fixture_data_root):
    mcts = load_benchmark("VisualWebArena", "mcts", data_root=fixture_data_root)
    train = load_benchmark("VisualWebArena", "train", data_root=fixture_data_root)
    val = load_benchmark("VisualWebArena", "val", data_root=fixture_data_root)
    assert mcts.ids() == VWA_IDS
    assert len(train) > 0 and len(val) > 0
    assert set(train.ids()).isdisjoint(val.ids())
    assert sorted(train.ids() + val.ids()) == sorted(mcts.ids())
    # the one split rule: val = hash_split(id, 0.05), train = the rest; file order kept
    assert val.ids() == [i for i in VWA_IDS if hash_split(i, 0.05)]
    assert train.ids() == [i for i in VWA_IDS if not hash_split(i, 0.05)]
    assert val.ids() == [i for i in VWA_IDS if split_of(i) == "val"]
    # not the mirror image (val = the complement of hash_split(id, 0.95)): those ids are train
    mirrored = [i for i in VWA_IDS if not hash_split(i, 0.95)]
    assert mirrored and set(mirrored) <= set(train.ids())
    v0 = val.ids()[0]
    assert val.index_of(v0) == 0  # index = position after filtering (docs/data.md#record-schemas)
    assert val[0].meta["line"] == VWA_IDS.index(v0) + 1
    with pytest.raises(KeyError):
        train.index_of(v0)


def test_visual_search_sa_first_existing_candidate(tmp_path):
    img = png(tmp_path, "visual_search/a.png")
    write_lines(tmp_path, "visual_search/vigorl_SA_MCTS.jsonl", [e_rec("second", img)])
    assert load_benchmark("VisualSearchSA", "mcts", data_root=tmp_path).ids() == ["second"]
    write_lines(tmp_path, "vstar/vigorl_SA_MCTS.jsonl", [e_rec("first", img)])
    ds = load_benchmark("VisualSearchSA", "mcts", data_root=tmp_path)
    assert ds.ids() == ["first"] and ds.path == tmp_path / "vstar/vigorl_SA_MCTS.jsonl"


def test_unknown_split_and_names(fixture_data_root):
    with pytest.raises(ValueError, match=r"valid splits: \['mcts', 'test', 'train', 'val'\]"):
        load_benchmark("SAT2", "validation", data_root=fixture_data_root)
    with pytest.raises(ValueError, match="unknown benchmark"):
        load_benchmark("SAT3", data_root=fixture_data_root)
    with pytest.raises(ValueError, match="prompt_newlines"):
        load_benchmark("SAT2", prompt_newlines="raw", data_root=fixture_data_root)


# ------------------------------------------------------------------------------------------
# missing data (docs/envs.md#errors)
# ------------------------------------------------------------------------------------------


def test_missing_file_kwarg_origin(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", "/somewhere/else")
    with pytest.raises(DataNotFoundError) as ei:
        load_benchmark("SAT2", "test", data_root=tmp_path)
    msg = str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)
    assert "ViGoRL/SAT2-v0" in msg and "'test'" in msg
    assert str(tmp_path / "spatial_reasoning/sat2_test/sat2_test.jsonl") in msg
    assert f"DATA_ROOT = {str(tmp_path)!r}" in msg and "kwarg" in msg
    assert "spatial_reasoning.tar" in msg
    assert "python -m vigorl_env.data.download spatial_reasoning" in msg
    assert "/somewhere/else" not in msg  # the kwarg wins over the env var


def test_missing_file_env_origin_and_custom_env_id(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path))
    assert resolve_data_root(None) == (tmp_path, "environment variable DATA_ROOT")
    with pytest.raises(DataNotFoundError) as ei:
        load_benchmark("OSAtlas", env_id="ViGoRL/OSAtlas-v0[custom]")
    msg = str(ei.value)
    assert "ViGoRL/OSAtlas-v0[custom] (split 'train')" in msg
    assert "environment variable DATA_ROOT" in msg
    assert str(tmp_path / "web_grounding/vigorl_osatlas_train_RL.jsonl") in msg
    assert "python -m vigorl_env.data.download web_grounding" in msg


def test_missing_data_root_unset(monkeypatch):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    assert resolve_data_root(None) == (None, "unset")
    with pytest.raises(DataNotFoundError) as ei:
        load_benchmark("VStar")
    msg = str(ei.value)
    assert "DATA_ROOT is not set" in msg
    assert "'visual_search/vstar/vstarbench_test.jsonl'" in msg
    assert "data_root=" in msg and "export DATA_ROOT=" in msg
    assert "python -m vigorl_env.data.download visual_search" in msg
    monkeypatch.setenv("DATA_ROOT", "")  # empty counts as unset
    assert resolve_data_root(None) == (None, "unset")


def test_missing_project_defined_and_candidates(tmp_path):
    with pytest.raises(DataNotFoundError) as ei:
        load_benchmark("RoboSpatial", data_root=tmp_path)
    assert "python -m vigorl_env.data.prepare robospatial" in str(ei.value)
    assert "download" not in str(ei.value)
    with pytest.raises(DataNotFoundError) as ei:
        load_benchmark("VisualSearchSA", "mcts", data_root=tmp_path)
    assert str(tmp_path / "vstar/vigorl_SA_MCTS.jsonl") in str(ei.value)
    assert str(tmp_path / "visual_search/vigorl_SA_MCTS.jsonl") in str(ei.value)


def test_missing_image_names_path_and_sample(tmp_path):
    write_lines(
        tmp_path,
        "spatial_reasoning/sat2_test/sat2_test.jsonl",
        [e_rec(7, "spatial_reasoning/nope.png")],
    )
    ds = load_benchmark("SAT2", "test", data_root=tmp_path)  # images are lazy: loading succeeds
    with pytest.raises(DataNotFoundError) as ei:
        ds[0].image()
    msg = str(ei.value)
    assert str(tmp_path.resolve() / "spatial_reasoning/nope.png") in msg and "sample_id '7'" in msg


# ------------------------------------------------------------------------------------------
# malformed records
# ------------------------------------------------------------------------------------------

REL_E = "spatial_reasoning/sat2_test/sat2_test.jsonl"
REL_R = "spatial_reasoning/vigorl_sat2_val_RL.jsonl"
REL_BOX_E = "web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl"
REL_BOX_R = "web_grounding/vigorl_osatlas_val_RL.jsonl"


@pytest.mark.parametrize(
    ("name", "split", "rel", "bad", "needles"),
    [
        ("SAT2", "test", REL_E, '{"id": 2, "image": "x.png", ', ["line 2", "malformed JSON"]),
        (
            "SAT2",
            "test",
            REL_E,
            {"id": 2, "conversations": [{"value": "q"}, {"value": "a"}]},
            ["line 2", "'image'"],
        ),
        ("SAT2", "test", REL_E, {"id": {"a": 1}, "image": "x.png"}, ["line 2", "'id'"]),
        (
            "SAT2",
            "test",
            REL_E,
            {"id": 2, "image": "x.png", "conversations": [{"value": "q"}]},
            ["line 2", "'conversations'"],
        ),
        (
            "SAT2",
            "test",
            REL_E,
            {"id": 2, "image": "x.png", "conversations": [{"value": 3}, {"value": "a"}]},
            ["line 2", "'conversations[0].value'"],
        ),
        ("SAT2", "test", REL_E, "[1, 2]", ["line 2", "JSON object"]),
        (
            "SAT2",
            "val",
            REL_R,
            {"problem": "<image>q", "images": ["a.png", "b.png"], "answer": "a"},
            ["line 2", "'images'", "2 entries"],
        ),
        (
            "SAT2",
            "val",
            REL_R,
            {"problem": "<image>q", "images": [], "answer": "a"},
            ["line 2", "'images'"],
        ),
        ("SAT2", "val", REL_R, {"images": ["a.png"], "answer": "a"}, ["line 2", "'problem'"]),
        ("SAT2", "val", REL_R, {"problem": "q", "images": ["a.png"]}, ["line 2", "'answer'"]),
        (
            "SAT2",
            "val",
            REL_R,
            {"problem": "q", "images": [{"url": "x"}], "answer": "a"},
            ["line 2", "'images[0]'"],
        ),
        (
            "SAT2",
            "val",
            REL_R,
            {"problem": "q", "images": ["a.png"], "answer": 3},
            ["line 2", "'answer'"],
        ),
        (
            "ScreenSpotV2",
            "test",
            REL_BOX_E,
            e_rec("b", "x.png", "<image>click", "(10, 20, 30)"),
            ["line 2", "'conversations[1].value'", "(10, 20, 30)"],
        ),
        (
            "ScreenSpotV2",
            "test",
            REL_BOX_E,
            e_rec("b", "x.png", "<image>click", "(30, 20, 10, 40)"),
            ["line 2", "'conversations[1].value'", "x1 > x2"],
        ),
        (
            "OSAtlas",
            "val",
            REL_BOX_R,
            {"problem": "q", "images": ["a.png"], "answer": "left button"},
            ["line 2", "'answer'"],
        ),
    ],
)
def test_data_format_errors(tmp_path, name, split, rel, bad, needles):
    good = (
        e_rec(1, "x.png", "<image>click", "(1, 2, 3, 4)")
        if rel.endswith("_test.jsonl")
        else {"problem": "<image>q", "images": ["a.png"], "answer": "(1, 2, 3, 4)"}
    )
    write_lines(tmp_path, rel, [good, bad])
    with pytest.raises(DataFormatError) as ei:
        load_benchmark(name, split, data_root=tmp_path)
    msg = str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert rel in msg
    for n in needles:
        assert n in msg


def test_box_formats_accepted(tmp_path):
    write_lines(
        tmp_path,
        REL_BOX_R,
        [
            {"problem": "q", "images": ["a.png"], "answer": "(1, 2, 30, 40)"},
            {"problem": "q", "images": ["a.png"], "answer": "[1.5, 2, 30, 40.25]"},
            {"problem": "q", "images": ["a.png"], "answer": [1, 2, 3, 4]},
        ],
    )
    ds = load_benchmark("OSAtlas", "val", data_root=tmp_path)
    assert [s.gt_box for s in ds] == [(1, 2, 30, 40), (1.5, 2, 30, 40.25), (1, 2, 3, 4)]
    assert [s.answer for s in ds] == ["(1, 2, 30, 40)", "(1.5, 2, 30, 40.25)", "(1, 2, 3, 4)"]


# ------------------------------------------------------------------------------------------
# images: traversal, bombs, bytes
# ------------------------------------------------------------------------------------------


def test_path_traversal_refused(tmp_path):
    root = tmp_path / "root"
    outside = png(tmp_path, "outside.png")
    assert outside
    png(root, "spatial_reasoning/ok.png")
    (root / "spatial_reasoning/link").symlink_to(tmp_path, target_is_directory=True)
    write_lines(
        root,
        REL_E,
        [
            e_rec("up", "../outside.png"),
            e_rec("sneaky", "spatial_reasoning/../../outside.png"),
            e_rec("link", "spatial_reasoning/link/outside.png"),
            e_rec("fine", "spatial_reasoning/x/../ok.png"),
        ],
    )
    ds = load_benchmark("SAT2", "test", data_root=root)
    for i in range(3):
        with pytest.raises(DataFormatError) as ei:
            ds[i].image()
        msg = str(ei.value)
        assert (
            REL_E in msg
            and f"line {i + 1}" in msg
            and repr(ds[i].sample_id) in msg
            and "outside" in msg
        )
    assert ds[3].image().size == (64, 48)


def test_absolute_path_allowed_in_schema_r(tmp_path):
    root = tmp_path / "root"
    absolute = tmp_path / png(tmp_path, "elsewhere/abs.png", size=(33, 22))
    write_lines(
        root, REL_R, [{"problem": "<image>q", "images": [{"path": str(absolute)}], "answer": "a"}]
    )
    assert load_benchmark("SAT2", "val", data_root=root)[0].image().size == (33, 22)


@pytest.mark.parametrize("limit", [1000, 200_000])  # > 2x limit: Pillow raises; 1x–2x: Pillow warns
def test_decompression_bomb_refused(fixture_data_root, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    s = load_benchmark("SAT2", "mcts", data_root=fixture_data_root)[0]  # 640x480 = 307,200 px
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(DataFormatError) as ei:
            s.image()
    msg = str(ei.value)
    assert (
        "307,200 pixels" in msg
        and f"{limit:,}" in msg
        and "raise PIL.Image.MAX_IMAGE_PIXELS" in msg
    )
    assert "sat2_mcts_0" in msg


def test_decompression_bomb_warning_as_error(fixture_data_root, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)
    s = load_benchmark("SAT2", "mcts", data_root=fixture_data_root)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(DataFormatError, match="307,200 pixels"):
            s.image()


def test_bytes_images(tmp_path):
    import io

    buf = io.BytesIO()
    Image.new("RGBA", (21, 13), (1, 2, 3, 4)).save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    write_lines(
        tmp_path,
        REL_R,
        [
            {"problem": "<image>q", "images": [{"bytes": b64}], "answer": "a", "id": "b0"},
            {
                "problem": "<image>q",
                "images": [{"bytes": "data:image/png;base64," + b64}],
                "answer": "a",
            },
            {
                "problem": "<image>q",
                "images": [{"bytes": base64.b64encode(b"not an image").decode()}],
                "answer": "a",
            },
        ],
    )
    ds = load_benchmark("SAT2", "val", data_root=tmp_path)
    img = ds[0].image()
    assert (img.size, img.mode, img.getpixel((0, 0))) == ((21, 13), "RGBA", (1, 2, 3, 4))
    assert ds[1].image().size == (21, 13)
    with pytest.raises(DataFormatError, match=r"line 3.*not a readable image"):
        ds[2].image()


def test_image_file_handles_closed(fixture_data_root):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    ds = load_benchmark("VStar", "test", data_root=fixture_data_root)
    ds[0].image()
    before = len(os.listdir("/proc/self/fd"))
    imgs = [ds[i % len(ds)].image() for i in range(20)]
    assert len(os.listdir("/proc/self/fd")) <= before
    assert imgs[0].getpixel((0, 0))  # pixels are loaded after the file is closed


def test_reroot_image_path(tmp_path):
    root = tmp_path / "data"
    rel = png(root, "spatial_reasoning/sat2/img_1.png")
    existing_abs = tmp_path / png(tmp_path, "real/img.png")
    assert reroot_image_path(existing_abs, root) == existing_abs
    authors = "/home/gsarch/data/spatial_reasoning/sat2/img_1.png"
    assert reroot_image_path(authors, root) == root / rel
    assert reroot_image_path(rel, root) == root / rel
    with pytest.raises(DataNotFoundError) as ei:
        reroot_image_path("/home/gsarch/data/web_action/missing.png", root)
    assert "/home/gsarch/data/web_action/missing.png" in str(ei.value)
    assert str(root / "web_action/missing.png") in str(ei.value)
    with pytest.raises(DataNotFoundError, match="no component"):
        reroot_image_path("/home/gsarch/other/x.png", root)


# ------------------------------------------------------------------------------------------
# text normalization
# ------------------------------------------------------------------------------------------


def test_prompt_newlines_both_ways(fixture_data_root):
    norm = load_benchmark("SAT2", "train", data_root=fixture_data_root)
    lit = load_benchmark("SAT2", "train", data_root=fixture_data_root, prompt_newlines="literal")
    raw = json.loads(
        (fixture_data_root / DOC_FILES[("SAT2", "train")]).read_text().splitlines()[2]
    )["problem"]
    assert "\\n" in raw and '\\"' in raw
    assert lit[2].question == raw  # the un-normalized bytes (already one leading <image>)
    assert norm[2].question == raw.replace("\\n", "\n").replace('\\"', '"')
    assert "\\" not in norm[2].question and "\n" in norm[2].question
    assert [s.options for s in lit] == [s.options for s in norm]  # options parse either way
    assert [s.sample_id for s in lit] == [s.sample_id for s in norm]


def test_image_marker_normalization(tmp_path, caplog):
    write_lines(
        tmp_path,
        REL_E,
        [
            e_rec("none", "x.png", "What is it?"),
            e_rec("two", "x.png", "<image>first <image>second<image>"),
            e_rec("one", "x.png", "Look: <image> here"),
        ],
    )
    with caplog.at_level(logging.WARNING, logger="vigorl_env.data.upstream"):
        ds = load_benchmark("SAT2", "test", data_root=tmp_path)
    assert [s.question for s in ds] == [
        "<image>What is it?",
        "<image>first second",
        "Look: <image> here",
    ]
    assert any(
        "more than one <image>" in r.getMessage() and "'two'" in r.getMessage()
        for r in caplog.records
    )


def test_parse_options():
    assert parse_options("<image>Q?\nA. left\nB. right") == ("left", "right")
    assert parse_options("Q?\n(A) a cat\n(B) a dog\n(C) both") == ("a cat", "a dog", "both")
    assert parse_options("Q?\nA) x\nB) y") == ("x", "y")
    assert parse_options("A. only one") is None
    assert parse_options("B. x\nC. y") is None  # must start at A
    assert parse_options("What is the A. team?") is None
    assert parse_options("Q\nA. 1\nB. 2\nD. 4") == ("1", "2")


def test_duplicate_ids_first_wins(tmp_path, caplog):
    write_lines(
        tmp_path, REL_E, [e_rec("d", "x.png", gt="no"), e_rec("u", "x.png"), e_rec("d", "x.png")]
    )
    with caplog.at_level(logging.WARNING, logger="vigorl_env.data.upstream"):
        ds = load_benchmark("SAT2", "test", data_root=tmp_path)
    assert len(ds) == 3 and ds.index_of("d") == 0 and ds[0].answer == "no"
    assert any("duplicate" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------
# pickling and speed
# ------------------------------------------------------------------------------------------


def test_pickle_roundtrip(fixture_data_root):
    ds = load_benchmark("SAT2", "val", data_root=fixture_data_root)
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2.ids() == ds.ids() and ds2.split == "val"
    assert ds2.index_of("sat2_val_1") == 1
    assert [s.question for s in ds2] == [s.question for s in ds]
    assert ds2[0].image().tobytes() == ds[0].image().tobytes()
    assert ds2[1].image().size == (512, 384)


def test_large_file_loads_fast(tmp_path):
    rec = {
        "problem": "<image>Which is closer?\\nA. the red chair\\nB. the blue table",
        "images": ["spatial_reasoning/images/x.png"],
        "answer": "the red chair",
    }
    line = json.dumps(rec) + "\n"
    p = tmp_path / REL_R
    p.parent.mkdir(parents=True)
    p.write_text(line * 10_000)
    t = time.perf_counter()
    ds = load_benchmark("SAT2", "val", data_root=tmp_path)
    elapsed = time.perf_counter() - t
    assert len(ds) == 10_000 and ds.index_of("vigorl_sat2_val_RL:9999") == 9999
    assert elapsed < 1.0, f"10k lines took {elapsed:.2f} s"

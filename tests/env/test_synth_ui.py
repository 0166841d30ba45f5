"""SynthGrounding and SynthWebAction (docs/data.md#procedural-datasets): determinism, pickling, constraints, GT rules.

The instruction / GT checks here re-derive the answer from the instruction text and the object
list with their own parsers, so a generator that names the wrong element (or a non-unique one)
fails even if it is self-consistent.
"""

from __future__ import annotations

import collections
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

from vigorl_env.data.base import Sample
from vigorl_env.data.synth import ui
from vigorl_env.data.synth.grounding import SynthGrounding
from vigorl_env.data.synth.webaction import SOM_COLORS, SynthWebAction
from vigorl_env.data.synth.webaction import H as WEB_H
from vigorl_env.data.synth.webaction import W as WEB_W

N = 200  # layouts per dataset for the distribution checks (generation only, no rendering)
SCREENS = {(1280, 800), (1920, 1080), (2560, 1440), (1170, 2532)}
GROUNDING_CATEGORIES = {"button", "icon", "checkbox", "link", "text_field", "sidebar_item"}


@pytest.fixture(scope="module")
def grounding() -> list[Sample]:
    ds = SynthGrounding(split="train", dataset_seed=3)
    return [ds[i] for i in range(N)]


@pytest.fixture(scope="module")
def webaction() -> list[Sample]:
    ds = SynthWebAction(split="train", dataset_seed=3)
    return [ds[i] for i in range(N)]


def _pixels(s: Sample) -> np.ndarray:
    return np.asarray(s.image())


def _record(s: Sample) -> tuple:
    return (
        s.sample_id,
        s.question,
        s.answer,
        s.answer_kind,
        s.gt_box,
        s.options,
        tuple(o.to_dict().__repr__() for o in s.objects or ()),
        s.target_ids,
        repr(s.meta),
    )


def _overlap(a, b) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


# --- determinism, pickling, ids ---------------------------------------------------------------


@pytest.mark.parametrize("cls", [SynthGrounding, SynthWebAction])
def test_same_key_is_bit_identical_and_other_keys_differ(cls):
    a, b = cls("val", 7), cls("val", 7)
    s1, s2 = a[5], b[5]
    assert _record(s1) == _record(s2)
    p1 = _pixels(s1)
    assert p1.dtype == np.uint8 and p1.ndim == 3 and p1.shape[2] == 3
    assert np.array_equal(p1, _pixels(s2))
    for other in (a[6], cls("val", 8)[5], cls("test", 7)[5]):
        assert other.question != s1.question or other.answer != s1.answer
        p = _pixels(other)
        assert p.shape != p1.shape or not np.array_equal(p, p1)


@pytest.mark.parametrize("cls", [SynthGrounding, SynthWebAction])
def test_dataset_sample_and_loader_pickle(cls):
    ds = cls("train", 11, size=50)
    ds2 = pickle.loads(pickle.dumps(ds))
    s = ds[3]
    assert _record(ds2[3]) == _record(s)
    loader = pickle.loads(pickle.dumps(s.image))
    assert np.array_equal(np.asarray(loader()), _pixels(s))
    s_back = pickle.loads(pickle.dumps(s))
    assert _record(s_back) == _record(s)


@pytest.mark.parametrize("cls", [SynthGrounding, SynthWebAction])
def test_index_of_round_trip(cls):
    ds = cls("test", 2)
    for i in (0, 1, 977, 2**31 - 1):
        sid = ds[i].sample_id
        assert sid == f"{cls.name}-test-2-{i}"
        assert ds.index_of(sid) == i
    with pytest.raises(KeyError):
        ds.index_of(f"{cls.name}-train-2-5")
    with pytest.raises(IndexError):
        cls("test", 2, size=4)[4]


# --- SynthGrounding ----------------------------------------------------------------------------

_PATTERNS: list[tuple[str, str]] = [  # (regex, rule)
    (r"(?:the '(.+)' button|'(.+)' button|the button labelled '(.+)')", "button"),
    (r"(?:the '(.+)' link|the link '(.+)')", "link"),
    (r"the '(.+)' (?:text|input) field", "field"),
    (r"the text field with placeholder '(.+)'", "placeholder"),
    (r"(?:the '(.+)' item in the sidebar|'(.+)' in the sidebar)", "sidebar"),
    (r"the '(.+)' tab in the bottom bar", "tab"),
    (r"the (\w+) icon in the top bar", "topicon"),
    (r"the checkbox (?:next to|for) '(.+)'", "checkbox"),
    (r"(?:the (\w+) icon in the '(.+)' row|the (\w+) button in the row of '(.+)')", "rowicon"),
]
_KIND = {
    "button": "text",
    "link": "text",
    "field": "text",
    "placeholder": "text",
    "sidebar": "text",
    "tab": "text",
    "topicon": "icon",
    "checkbox": "relational",
    "rowicon": "relational",
}


def _describes(rule: str, g: list[str], o) -> bool:
    """Whether object `o` fits the description `rule` with the instruction's quoted parts `g`."""
    a, cat = o.attributes, o.category
    if rule in ("button", "link", "checkbox"):
        return cat == rule and a["label"] == g[0]
    if rule in ("field", "placeholder"):
        return cat == "text_field" and g[0] in (a["label"], a["placeholder"])
    if rule in ("sidebar", "tab"):
        region = "sidebar" if rule == "sidebar" else "tab_bar"
        return cat == "sidebar_item" and a["region"] == region and a["label"] == g[0]
    if rule == "topicon":
        return cat == "icon" and a["region"] == "top_bar" and a["glyph"] == g[0]
    assert rule == "rowicon"
    return cat == "icon" and a["glyph"] == g[0] and a.get("row") == g[1]


def _matches(instruction: str, objects) -> tuple[str, list[str]]:
    """(instruction kind, ids of the objects the instruction describes), parsed independently."""
    for pat, rule in _PATTERNS:
        m = re.fullmatch(pat, instruction)
        if m:
            g = [x for x in m.groups() if x is not None]
            return _KIND[rule], [o.id for o in objects if _describes(rule, g, o)]
    raise AssertionError(f"instruction in no known form: {instruction!r}")


def test_grounding_target_is_the_unique_element_the_instruction_describes(grounding):
    for s in grounding:
        assert s.question.startswith("<image>") and s.question.count("<image>") == 1
        kind, hits = _matches(s.question[len("<image>") :], s.objects)
        assert hits == list(s.target_ids), (s.sample_id, s.question, hits)
        assert kind == s.meta["instruction_kind"]
        assert s.options is None and s.answer_kind == "point_in_box"
        quoted = re.findall(r"'(.+)'", s.question)  # a quoted name is on screen verbatim
        drawn = {op.text for op in s.image.args[0].ops if isinstance(op, ui.Text)}
        assert not quoted or quoted[0] in drawn, (s.sample_id, s.question)


def test_grounding_gt_box_is_target_box_inside_screen(grounding):
    for s in grounding:
        m = re.fullmatch(r"\((\d+), (\d+), (\d+), (\d+)\)", s.answer)
        assert m, s.answer
        box = tuple(float(v) for v in m.groups())
        assert box == s.gt_box
        (target,) = [o for o in s.objects if o.id == s.target_ids[0]]
        assert target.box == box
        w, h = s.meta["screen"]
        assert 0 <= box[0] < box[2] < w and 0 <= box[1] < box[3] < h


def test_grounding_layout_constraints(grounding):
    for s in grounding[:50]:
        w, h = s.meta["screen"]
        assert (w, h) in SCREENS
        objs = s.objects
        assert {o.category for o in objs} <= GROUNDING_CATEGORIES
        top_icons = [
            o for o in objs if o.category == "icon" and o.attributes["region"] == "top_bar"
        ]
        assert 2 <= len(top_icons) <= 4
        assert len({o.attributes["glyph"] for o in top_icons}) == len(top_icons)
        nav = [o for o in objs if o.category == "sidebar_item"]
        if h > w:  # phone: bottom tab bar
            assert len(nav) == 5 and {o.attributes["region"] for o in nav} == {"tab_bar"}
        else:
            assert 5 <= len(nav) <= 10 and {o.attributes["region"] for o in nav} == {"sidebar"}
        widgets = [o for o in objs if o.attributes["region"] == "content"]
        assert 6 <= len(widgets) <= 30
        for o in objs:
            assert set(o.attributes) >= {"label", "glyph", "region"}
            assert isinstance(o.attributes["label"], str) and o.attributes["label"]
            if o.category == "icon":
                assert o.attributes["glyph"] in ui.ICON_GLYPHS
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 < w and 0 <= y1 < y2 < h
            assert all(v == int(v) for v in o.box)
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                assert not _overlap(a.box, b.box), (s.sample_id, a, b)


def test_grounding_covers_kinds_screens_and_small_targets(grounding):
    kinds = collections.Counter(s.meta["instruction_kind"] for s in grounding)
    assert set(kinds) == {"text", "icon", "relational"} and min(kinds.values()) >= N // 8
    assert {tuple(s.meta["screen"]) for s in grounding} == SCREENS
    assert {s.meta["theme"] for s in grounding} == {"light", "dark"}
    cats = {o.category for s in grounding for o in s.objects if o.id == s.target_ids[0]}
    assert cats == GROUNDING_CATEGORIES
    # ScreenSpot-Pro-like: on 2560×1440 the checkboxes are at most ~20 px and targets are small
    big = [s for s in grounding if s.meta["screen"] == [2560, 1440]]
    assert big
    for s in big:
        for o in s.objects:
            if o.category == "checkbox":
                assert o.box[2] - o.box[0] + 1 <= 23
        x1, y1, x2, y2 = s.gt_box
        assert (x2 - x1 + 1) * (y2 - y1 + 1) < 0.01 * 2560 * 1440


def test_grounding_pixels_show_the_target():
    ds = SynthGrounding("val", 1)
    for i in range(4):
        s = ds[i]
        img = _pixels(s)
        assert img.shape[:2] == (s.meta["screen"][1], s.meta["screen"][0])
        x1, y1, x2, y2 = (int(v) for v in s.gt_box)
        patch = img[y1 : y2 + 1, x1 : x2 + 1].reshape(-1, 3)
        assert len(np.unique(patch, axis=0)) > 2  # something is drawn there, not flat background


# --- SynthWebAction ---------------------------------------------------------------------------

_ACTION = re.compile(
    r"click \[(\d+)\]|type \[(\d+)\] \[([^\]]+)\]|scroll \[down\]|go_back|stop \[(.*)\]"
)


def _parse_question(q: str) -> tuple[str, list[str]]:
    m = re.fullmatch(r"<image>OBJECTIVE: (.+)\nPREVIOUS ACTIONS:\n(.+)", q, re.DOTALL)
    assert m, q
    prev = m.group(2).split("\n")
    return m.group(1), [] if prev == ["None"] else prev


def test_webaction_marks_ids_and_boxes(webaction):
    for s in webaction:
        objs = s.objects
        assert 8 <= len(objs) <= 30
        ids = [o.attributes["som_id"] for o in objs]
        assert len(set(ids)) == len(ids) and all(1 <= i <= 999 for i in ids)
        for o in objs:
            assert o.id == str(o.attributes["som_id"]) and o.category == o.attributes["role"]
            assert o.attributes["text"] and o.attributes["role"] in {
                "link",
                "button",
                "searchbox",
                "textbox",
                "combobox",
            }
            x1, y1, x2, y2 = o.box
            assert 0 <= x1 < x2 < WEB_W and 0 <= y1 < y2 < WEB_H
        for i, a in enumerate(objs):
            for b in objs[i + 1 :]:
                assert not _overlap(a.box, b.box), (s.sample_id, a, b)


def test_webaction_gt_follows_the_page_rules(webaction):
    seen = collections.Counter()
    for s in webaction:
        assert s.answer_kind == "web_action" and s.gt_box is None and s.options is None
        m = _ACTION.fullmatch(s.answer)
        assert m, s.answer
        objective, prev = _parse_question(s.question)
        item = s.meta["item"]
        assert item in objective
        by_id = {o.id: o for o in s.objects}
        texts = [o.attributes["text"] for o in s.objects]
        kind = s.meta["page_kind"]
        seen[kind] += 1
        for a in prev:  # elements named by their text, never by id
            assert re.fullmatch(
                r"type \[search box\] \[[^\]]+\]|scroll \[down\]|click \[[^\]]*[^\d\]][^\]]*\]", a
            ), a
        if kind == "search":
            assert prev == []
            assert s.answer == f"type [{m.group(2)}] [{s.meta['query']}]"
            assert by_id[m.group(2)].category == "searchbox" and s.target_ids == (m.group(2),)
            assert item not in texts
        elif kind == "listed":
            assert prev[0] == f"type [search box] [{s.meta['query']}]"
            assert set(prev[1:]) <= {"scroll [down]"}
            tgt = by_id[m.group(1)]
            assert tgt.attributes["text"] == item and tgt.category == "link"
            assert s.target_ids == (m.group(1),) and texts.count(item) == 1
        elif kind == "more":
            assert s.answer == "scroll [down]" and s.target_ids == ()
            assert prev[0] == f"type [search box] [{s.meta['query']}]"
            assert item not in texts
        elif kind == "price":
            assert re.fullmatch(r"stop \[\$\d+\.\d\d\]", s.answer) and s.target_ids == ()
            assert s.answer == f"stop [{s.meta['price']}]"
            assert prev[-1] == f"click [{item}]"
            assert "price" in objective.lower() or "cost" in objective.lower()
        elif kind == "cart":
            tgt = by_id[m.group(1)]
            assert tgt.attributes["text"] == "Add to Cart" and tgt.category == "button"
            assert texts.count("Add to Cart") == 1 and s.target_ids == (m.group(1),)
            assert prev[-1] == f"click [{item}]" and "cart" in objective.lower()
        else:
            assert kind == "other" and s.answer == "go_back" and s.target_ids == ()
            assert prev[-1].startswith("click [") and prev[-1] != f"click [{item}]"
            assert item not in texts
    assert set(seen) == {"search", "listed", "more", "price", "cart", "other"}
    assert min(seen.values()) >= N // 12


def test_webaction_renders_set_of_marks():
    ds = SynthWebAction("val", 4)
    for i in range(3):
        s = ds[i]
        img = _pixels(s)
        assert img.shape == (WEB_H, WEB_W, 3)
        colors = {tuple(c) for c in SOM_COLORS}
        on_outline = 0
        for o in s.objects:
            x1, y1, _, y2 = (int(v) for v in o.box)
            on_outline += tuple(img[(y1 + y2) // 2, x1]) in colors
        assert on_outline >= 0.9 * len(s.objects)


def test_webaction_stop_price_is_printed_on_the_page():
    """The price answer is drawn on the item page exactly as in the GT (as a Text op)."""
    ds = SynthWebAction("train", 0)
    found = 0
    for i in range(60):
        s = ds[i]
        if s.meta["page_kind"] == "price":
            page = s.image.args[0]
            texts = [op.text for op in page.ops if isinstance(op, ui.Text)]
            assert s.meta["price"] in texts
            found += 1
    assert found


def test_records_and_pixels_do_not_depend_on_hash_seed():
    """No set/dict-order dependence: two interpreters with different PYTHONHASHSEED agree."""
    code = (
        "import hashlib, numpy as np\n"
        "from vigorl_env.data.synth.grounding import SynthGrounding\n"
        "from vigorl_env.data.synth.webaction import SynthWebAction\n"
        "m = hashlib.sha256()\n"
        "for cls in (SynthGrounding, SynthWebAction):\n"
        "    for i in range(3):\n"
        "        s = cls('train', 1)[i]\n"
        "        m.update(np.asarray(s.image()).tobytes())\n"
        "        m.update(repr((s.question, s.answer, [o.to_dict() for o in s.objects])).encode())\n"
        "print(m.hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 64

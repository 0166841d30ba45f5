"""ViGoRL/RenderedGrounding-v0: pages rendered by a real headless Chromium, boxes from the DOM
(docs/web.md#rendered-grounding). Without Playwright or Chromium the browser tests skip and say why.
"""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from vigorl_env.web.browser import browser_unavailable_reason
from vigorl_env.web.grounding import RenderedGrounding, describe
from vigorl_env.web.pages import THEMES, Element

try:  # tests/env as a package or as a plain rootdir-inserted directory
    from .test_no_gt_leak import Leak, Secrets, walk, walk_env
except ImportError:
    from test_no_gt_leak import Leak, Secrets, walk, walk_env

ENV_ID = "ViGoRL/RenderedGrounding-v0"
REASON = browser_unavailable_reason()
needs_browser = pytest.mark.skipif(REASON is not None, reason=f"no browser: {REASON}")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("web_grounding_cache")


@pytest.fixture(scope="module")
def data(cache):
    ds = RenderedGrounding(split="test", size=8, cache_dir=cache)
    samples = [ds[i] for i in range(8)]
    yield ds, samples
    ds.close()


def _rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])


@needs_browser
def test_every_box_holds_drawn_pixels(data):
    """Each element box covers pixels that differ from the page background (something is drawn
    there), and the same box moved off the element does not always (the check is not vacuous)."""
    _, samples = data
    checked = 0
    for s in samples:
        img = np.asarray(s.image()).astype(int)
        bg = _rgb(THEMES[s.meta["theme"]]["bg"])
        h, w = img.shape[:2]
        assert [w, h] == s.meta["screen"]
        for o in s.objects:
            x1, y1, x2, y2 = (round(v) for v in o.box)
            region = img[y1 : y2 + 1, x1 : x2 + 1]
            assert region.size and (np.abs(region - bg).sum(axis=2) > 30).any(), (s.sample_id, o)
            checked += 1
    assert checked > 8 * 10


@needs_browser
def test_dom_box_is_exact_for_a_filled_button(cache):
    """A primary button is filled with the accent colour: the accent pixels span its DOM box
    (to within anti-aliasing), so boxes are in screenshot pixels at the page's DPR."""
    ds = RenderedGrounding(split="train", size=60, cache_dir=cache)
    try:
        for i in range(60):
            s = ds[i]
            primary = [o for o in s.objects if o.category == "button" and
                       o.attributes["label"] in ("Submit", "Save changes", "Export")]  # fmt: skip
            if primary:
                break
        else:
            raise AssertionError("no page with a primary button")
        o = primary[0]
        img = np.asarray(s.image()).astype(int)
        accent = _rgb(THEMES[s.meta["theme"]]["accent"])
        dpr = s.meta["viewport"][2]
        x1, y1, x2, y2 = o.box
        pad = round(4 * dpr)
        sub = img[round(y1) - pad : round(y2) + pad + 1, round(x1) - pad : round(x2) + pad + 1]
        ys, xs = np.nonzero(np.abs(sub - accent).sum(axis=2) <= 6)
        found = (xs.min() + round(x1) - pad, ys.min() + round(y1) - pad,
                 xs.max() + round(x1) - pad, ys.max() + round(y1) - pad)  # fmt: skip
        assert np.allclose(found, o.box, atol=1.5 * dpr + 1), (found, o.box, s.sample_id)
    finally:
        ds.close()


@needs_browser
def test_second_epoch_reads_the_cache(data, cache):
    ds, samples = data
    again = RenderedGrounding(split="test", size=8, cache_dir=cache)
    try:
        for i, s in enumerate(samples):
            t = again[i]
            assert (t.question, t.answer, t.gt_box) == (s.question, s.answer, s.gt_box)
            assert np.array_equal(np.asarray(t.image()), np.asarray(s.image()))
        assert again.renders == 0  # no browser time at all
    finally:
        again.close()
    assert ds.renders == 8


@needs_browser
def test_rendering_is_deterministic(data, tmp_path):
    _, samples = data
    fresh = RenderedGrounding(split="test", size=8, cache_dir=tmp_path)
    try:
        for i in (0, 1):
            t = fresh[i]
            assert t.gt_box == samples[i].gt_box and t.objects == samples[i].objects
            assert np.array_equal(np.asarray(t.image()), np.asarray(samples[i].image()))
        assert fresh.renders == 2
        # a dataset pickles without its browser, and renders again in the copy
        copy = pickle.loads(pickle.dumps(fresh))
        assert copy[1].gt_box == samples[1].gt_box
    finally:
        fresh.close()


@needs_browser
def test_pages_vary(cache):
    ds = RenderedGrounding(split="val", size=40, cache_dir=cache)
    try:
        metas = [ds[i].meta for i in range(40)]
    finally:
        ds.close()
    assert {m["kind"] for m in metas} == {"news", "shop", "form", "dashboard", "settings"}
    assert len({m["theme"] for m in metas}) >= 3 and len({m["font"] for m in metas}) >= 3
    assert len({tuple(m["viewport"]) for m in metas}) >= 4


@needs_browser
def test_env_scores_points_in_the_dom_box(cache):
    env = gym.make(ENV_ID, split="test", size=8, cache_dir=cache)
    try:
        obs, info = env.reset(options={"index": 3})
        assert obs["text"].startswith("<image>") and "ground_truth" not in info
        _, _, _, _, info = env.step("<think>Here (1, 1).</think><answer>(1, 1)</answer>")
        box = info["ground_truth"]["box"]
        cx, cy = round((box[0] + box[2]) / 2), round((box[1] + box[3]) / 2)
        env.reset(options={"index": 3})
        _, reward, _, _, info = env.step(
            f"<think>The target ({cx}, {cy}).</think><answer>({cx}, {cy})</answer>"
        )
        assert info["reward_components"]["accuracy"] == 1.0 and reward == 1.0
        assert info["grounding"]["on_target"] == 1.0
        assert env.unwrapped.env_id == ENV_ID and env.unwrapped.get_state().env_id == ENV_ID
        other = gym.make("ViGoRL/SynthGrounding-v0", split="test", size=8)
        assert other.unwrapped.fingerprint != env.unwrapped.fingerprint
    finally:
        env.close()


@needs_browser
def test_check_env_passes(cache):
    env = gym.make(ENV_ID, split="test", size=8, cache_dir=cache)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


@needs_browser
@pytest.mark.parametrize("mode", ["single_turn", "multi_turn"])
def test_ground_truth_stays_hidden(cache, mode):
    """The walk of tests/env/test_no_gt_leak.py over this env: nothing public reaches the answer,
    the boxes or the objects before the end; the final info does."""
    env = gym.make(ENV_ID, split="test", size=8, cache_dir=cache, mode=mode)
    try:
        uw = env.unwrapped
        obs, info = env.reset(seed=5)
        ds = RenderedGrounding(split="test", size=8, cache_dir=cache)
        secrets = Secrets(ds[info["index"]], info)
        assert walk_env(uw, secrets) > 20
        walk(info, secrets, "reset info", set(), set())
        walk(obs["text"], secrets, "reset obs text", set(), set())
        if mode == "multi_turn":
            obs, _, _, _, info = env.step(
                '<think>Zoom (40, 50).</think>\n<tool_call>\n{"name": "search_coordinate", '
                '"arguments": {"coordinate": [40, 50]}}\n</tool_call>'
            )
            walk(info, secrets, "step info", set(), set())
            walk_env(uw, secrets)
        _, _, term, trunc, info = env.step("<think>(5, 5)</think><answer>(5, 5)</answer>")
        assert term or trunc
        with pytest.raises(Leak):
            walk(info, secrets, "final info", set(), set())
    finally:
        env.close()


def test_descriptions_are_unique_or_refused():
    """No browser needed: the description rule on hand-made elements."""
    b = (0, 0, 10, 10)
    e = [
        Element("e0", "button", "Edit", "main content", "Ada Park"),
        Element("e1", "button", "Edit", "main content", "Ben Ortiz"),
        Element("e2", "link", "Docs", "top bar"),
        Element("e3", "link", "Docs", "footer"),
        Element("e4", "link", "Home", "footer"),
        Element("e5", "link", "Home", "footer"),
        Element("e6", "button", "Save", "main content"),
    ]
    boxes = [b, b, b, b, (0, 50, 10, 60), (0, 20, 10, 30), b]
    vis = list(zip(e, boxes, strict=True))
    assert describe(e[6], b, vis) == 'the "Save" button'
    assert describe(e[1], b, vis) == 'the "Edit" button for "Ben Ortiz"'
    assert describe(e[3], b, vis) == 'the "Docs" link in the footer'
    assert describe(e[4], boxes[4], vis) == 'the second "Home" link from the top'
    assert describe(e[5], boxes[5], vis) == 'the first "Home" link from the top'
    many = [(Element(f"x{i}", "tab", "A", "top bar"), (0, i, 1, i + 1)) for i in range(7)]
    assert describe(many[6][0], many[6][1], many) is None


@needs_browser
def test_evaluation_runner_and_chance_baselines(data, cache, tmp_path):
    """The evaluation runner and both chance baselines run on the env (cached pages: no render)."""
    import asyncio

    from vigorl_agents.baselines import FullViewGuess, RandomZoom
    from vigorl_agents.eval import EvalConfig, evaluate

    for policy, mode in ((FullViewGuess("point_in_box"), "single_turn"),
                         (RandomZoom("point_in_box"), "multi_turn")):  # fmt: skip
        cfg = EvalConfig(
            env_ids=(ENV_ID,),
            split="test",
            limit=3,
            env_kwargs={"cache_dir": str(cache), "size": 8, "mode": mode},
        )
        summary = asyncio.run(
            evaluate(policy, cfg, tmp_path / policy.name, policy_name=policy.name)
        )
        (row,) = summary["rows"]
        assert row["n"] == 3 and row["mode"] == mode and row["errors"] == 0

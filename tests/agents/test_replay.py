"""Rebuilding a trajectory's images and drawing it: the pixels are the env's, the marks sit where
the model frame says."""

from __future__ import annotations

import asyncio

import gymnasium as gym
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb

from tests.agents.scripted import ScriptedPolicy
from vigorl_agents.policy import SamplingParams
from vigorl_agents.replay import (
    ANSWER_COLOR,
    GT_COLOR,
    draw_episodes,
    episode_marks,
    episode_view,
    replay,
    trajectory_images,
)
from vigorl_agents.rollout import Batcher, EpisodeSpec, run_episode
from vigorl_env.protocol import format_tool_call

ENV = "ViGoRL/SynthGrounding-v0"  # 1176x2520 phone screenshot, offset 50, crops 392x392, red dot
KW = {"split": "test", "mode": "multi_turn"}


def _play(env, turns):
    async def go():
        batcher = Batcher(ScriptedPolicy(turns))
        try:
            return await run_episode(env, batcher, EpisodeSpec(0), SamplingParams(seed=0))
        finally:
            await batcher.aclose()

    return asyncio.run(go())


def _step(x, y):
    return f"<think>\nLook here ({x}, {y}).\n</think>\n" + format_tool_call(x, y)


@pytest.fixture(scope="module")
def episode():
    env = gym.make(ENV, **KW)
    # the ground truth is revealed only at the end: one answer-only episode tells where it is
    gt = _play(env, ["<think>\n(1, 1)\n</think>\n<answer> (1, 1) </answer>"]).ground_truth["box"]
    cx, cy = int((gt[0] + gt[2]) / 2), int((gt[1] + gt[3]) / 2)
    turns = [
        _step(600, 1000),  # inside: a full 100x100 region
        _step(1170, 20),  # top-right corner: clipped to 56x70
        _step(-40, 300),  # outside: clamped to (0, 300), clipped to 50x100
        f"<think>\nThe icon ({cx}, {cy}).\n</think>\n<answer> ({cx}, {cy}) </answer>",
    ]
    traj = _play(env, turns)
    # the images the env returned, step by step, on a fresh env
    ref = gym.make(ENV, **KW)
    obs, _ = ref.reset(options={"index": 0})
    seen = [obs["image"]]
    for t in turns[:-1]:
        obs, *_ = ref.step(t)
        seen.append(obs["image"])
    return env, traj, seen, (cx, cy)


def test_images_are_the_ones_the_model_saw(episode):
    env, traj, seen, _ = episode
    images = trajectory_images(env, traj)
    assert len(images) == 4
    for got, want in zip(images, seen, strict=True):
        assert np.array_equal(np.asarray(got), want)


def test_crops_know_where_they_were_cut(episode):
    env, traj, _, _ = episode
    crops = replay(env, traj).crops
    assert [c.turn for c in crops] == [1, 2, 3]
    assert [c.box for c in crops] == [(550, 950, 650, 1050), (1120, 0, 1176, 70), (0, 250, 50, 350)]
    assert [c.clipped for c in crops] == [False, True, True]
    assert [c.clamped for c in crops] == [False, False, True]
    assert crops[2].point == (0, 300)


def test_replay_refuses_another_config(episode):
    _, traj, _, _ = episode
    other = gym.make(ENV, **KW, crop_size=224)
    with pytest.raises(ValueError, match="recorded with env config"):
        replay(other, traj)


def test_marks_point_answer_and_model_frame_gt(episode):
    _, traj, _, (cx, cy) = episode
    m = episode_marks(traj)
    assert m.answer_point == (cx, cy)
    assert len(m.gt_boxes) == 1 and m.gt_boxes[0][1] == tuple(traj.ground_truth["box"])
    assert m.gt_answer.startswith("a point inside [")  # model-frame box, like the answer
    assert (600, 1000) in m.think_points
    assert episode_marks(traj, ground_truth=False).gt_boxes == []


def _artist(ax, gid):
    found = [a for a in [*ax.patches, *ax.lines] if a.get_gid() == gid]
    assert len(found) == 1, gid
    return found[0]


def _render(fig):
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def _px(ax, x, y, height):
    dx, dy = ax.transData.transform((x, y))
    return round(height - dy), round(dx)  # row, column of the rendered image


def _near(color, rgb, tol=40):
    return np.abs(np.asarray(rgb) - np.array(to_rgb(color)) * 255).max() <= tol


def test_drawing_puts_gt_box_answer_and_crops_at_model_frame_pixels(episode):
    env, traj, _, (cx, cy) = episode
    obs, _ = env.reset(options={"index": 0})
    view = episode_view(ENV, obs["text"], replay(env, traj), traj)
    fig = draw_episodes([view], title="t")
    (ax,) = [a for a in fig.axes if a.get_gid() == "frame_0"]
    gl, gt_, gr, gb = traj.ground_truth["box"]
    gt = _artist(ax, "gt_box_1")
    assert gt.get_xy() == (gl, gt_) and gt.get_width() == gr - gl and gt.get_height() == gb - gt_
    assert tuple(_artist(ax, "answer_point").get_xydata()[0]) == (cx, cy)
    boxes = [(550, 950, 650, 1050), (1120, 0, 1176, 70), (0, 250, 50, 350)]
    for turn, (bl, bt, br, bb) in enumerate(boxes, start=1):
        box = _artist(ax, f"crop_box_{turn}")
        assert box.get_xy() == (bl, bt) and (box.get_width(), box.get_height()) == (
            br - bl,
            bb - bt,
        )
    assert tuple(_artist(ax, "tool_point_3").get_xydata()[0]) == (0, 300)

    img = _render(fig)
    H = img.shape[0]
    # the answer marker is orange at the answer's pixel
    assert _near(ANSWER_COLOR, img[_px(ax, cx, cy, H)])
    # the GT box's left edge is green along its height (dashed: most samples, not all)
    rows = [_px(ax, gl, y, H) for y in np.linspace(gt_ + 4, gb - 4, 25)]
    hits = sum(any(_near(GT_COLOR, img[r0, c0 + d]) for d in (-2, -1, 0, 1, 2)) for r0, c0 in rows)
    assert hits >= 12
    # the image under the marks is the model frame at the same coordinates: compare unmarked pixels
    frame = np.asarray(view.replay.frame).astype(int)
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(200):
        x, y = int(rng.integers(0, 1176)), int(rng.integers(1100, 2520))  # below marks and crops
        if abs(x - 600) < 80 and abs(y - 1000) < 80:
            continue
        diffs.append(np.abs(img[_px(ax, x + 0.5, y + 0.5, H)] - frame[y, x]).max())
    assert np.median(diffs) <= 12


def test_clipped_and_clamped_crops_say_so(episode):
    env, traj, _, _ = episode
    obs, _ = env.reset(options={"index": 0})
    fig = draw_episodes([episode_view(ENV, obs["text"], replay(env, traj), traj)])
    texts = [t.get_text() for t in fig.texts]
    assert "clipped at the image edge: 56×70 px" in texts
    assert "clipped at the image edge: 50×100 px" in texts
    assert "100×100 px region zoomed to 392×392" in texts
    assert texts.count("point outside the image: clamped") == 1
    crop_axes = sorted(a.get_gid() for a in fig.axes if a.get_gid().startswith("crop_"))
    assert crop_axes == ["crop_0_1", "crop_0_2", "crop_0_3"]


def test_no_text_overlaps_text_or_images(episode):
    env, traj, _, _ = episode
    obs, _ = env.reset(options={"index": 0})
    view = episode_view(ENV, obs["text"], replay(env, traj), traj)
    fig = draw_episodes([view, view], title="a title that must not run into the first panel")
    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.texts if t.get_text().strip()]
    for i, a in enumerate(boxes):
        for bx in boxes[i + 1 :]:
            assert not a.overlaps(bx), (a, bx)
        for ax in fig.axes:
            assert not a.overlaps(ax.get_window_extent(renderer)), (a, ax.get_gid())


def test_click_answer_outlines_the_clicked_element():
    env = gym.make("ViGoRL/SynthWebAction-v0", split="test")  # single-turn
    first = _play(env, ["<think>\n(1, 1)\n</think>\n<answer> go_back </answer>"])
    obj = next(
        o for o in first.ground_truth["objects"] if o["attributes"].get("som_id") is not None
    )
    som = obj["attributes"]["som_id"]
    traj = _play(
        env, [f"<think>\nThe link ({5}, {5}).\n</think>\n<answer> click [{som}] </answer>"]
    )
    m = episode_marks(traj)
    assert m.answer_box == tuple(obj["box"]) and m.answer_point is None
    obs, _ = env.reset(options={"index": 0})
    fig = draw_episodes(
        [episode_view("ViGoRL/SynthWebAction-v0", obs["text"], replay(env, traj), traj)]
    )
    (ax,) = [a for a in fig.axes if a.get_gid() == "frame_0"]
    box = _artist(ax, "answer_box")
    assert box.get_xy() == tuple(obj["box"][:2])
    assert box.get_width() == obj["box"][2] - obj["box"][0]

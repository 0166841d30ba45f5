"""Grounding precision (docs/rewards.md#grounding-precision) equals the plain every-point-against-
every-box definition, on both of its paths; and the env's 100,000-character action limit
(docs/envs.md#step) cuts, flags and scores a 5 MB action exactly like its first 100,000 characters."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import vigorl_env  # noqa: F401  (registers the ids)
from vigorl_env import metrics
from vigorl_env.env import MAX_ACTION_CHARS
from vigorl_env.metrics import grounding_precision
from vigorl_env.protocol import all_think_points


def reference(transcript, objects, target_ids=()):
    """The definition, written the obvious quadratic way."""
    points = all_think_points(transcript)
    targets = set(target_ids)

    def inside(p, b):
        return b[0] <= p[0] <= b[2] and b[1] <= p[1] <= b[3]

    on_object = sum(any(inside(p, b) for _, b in objects) for p in points)
    on_target = sum(any(inside(p, b) for i, b in objects if i in targets) for p in points)
    n = len(points)
    return {
        "points": n,
        "on_object": on_object / n if n else None,
        "on_target": on_target / n if n and targets else None,
    }


def _case(rng: np.random.Generator, n_points: int, n_objects: int, span: int):
    objects = []
    for k in range(n_objects):
        x1, y1 = rng.uniform(-20, span), rng.uniform(-20, span)
        w, h = rng.uniform(0, span / 3), rng.uniform(0, span / 3)
        if k % 7 == 0:  # integer boxes: points land exactly on their edges
            x1, y1, w, h = round(x1), round(y1), round(w), round(h)
        if k % 11 == 5:  # an inverted box holds nothing
            w = -w - 1
        objects.append((f"o{k}", (x1, y1, x1 + w, y1 + h)))
    if n_objects > 3:
        objects.append(("nan", (float("nan"), 0.0, 10.0, 10.0)))
        objects.append(("inf", (-math.inf, -math.inf, math.inf, 5.0)))
    xs = rng.integers(0, span, n_points)
    ys = rng.integers(0, span, n_points)
    # repeat some points (they count every time)
    pts = [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]
    pts += pts[: n_points // 4]
    # cut the points over several think blocks, with text that is not a point in between
    blocks = []
    for i in range(0, len(pts), 50):
        body = " ".join(f"({x}, {y})" for x, y in pts[i : i + 50])
        blocks.append(f"<think>step {i} {body} (1.5, 2) </think>\nnot here (3, 4)\n")
    targets = [oid for oid, _ in objects[::3]]
    return "".join(blocks), objects, targets


@pytest.mark.parametrize("force_grid", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_equals_brute_force_reference(seed, force_grid, monkeypatch):
    if force_grid:
        monkeypatch.setattr(metrics, "BRUTE_FORCE_MAX", 0)
    rng = np.random.default_rng(seed)
    n_points = int(rng.integers(0, 400))
    n_objects = int(rng.integers(0, 40))
    span = int(rng.choice([30, 300, 3000]))
    text, objects, targets = _case(rng, n_points, n_objects, span)
    got = grounding_precision(text, objects, targets)
    assert got == reference(text, objects, targets)
    assert got == grounding_precision(text, objects, targets)  # no state between calls


def test_large_input_takes_the_grid_path_and_stays_exact(monkeypatch):
    rng = np.random.default_rng(99)
    text, objects, targets = _case(rng, 3000, 60, 2000)
    calls = []
    real = metrics._BoxGrid

    class Spy(real):
        def __init__(self, boxes):
            calls.append(len(boxes))
            super().__init__(boxes)

    monkeypatch.setattr(metrics, "_BoxGrid", Spy)
    got = grounding_precision(text, objects, targets)
    assert calls == [len(objects)]
    want = reference(text, objects, targets)
    assert got == want and want["on_object"] not in (0.0, 1.0)  # a mixed case


def test_no_points_and_no_targets():
    objs = [("a", (0, 0, 10, 10))]
    assert grounding_precision("<think>none</think>", objs, ["a"]) == {
        "points": 0,
        "on_object": None,
        "on_target": None,
    }
    assert grounding_precision("<think>(5, 5) (50, 5)</think>", objs) == {
        "points": 2,
        "on_object": 0.5,
        "on_target": None,
    }


def _huge_action(w: int, h: int) -> str:
    """About 5 MB of think points spread over the frame, then an answer."""
    rng = np.random.default_rng(3)
    pts = [
        f"({x}, {y})"
        for x, y in zip(rng.integers(0, w, 500_000), rng.integers(0, h, 500_000), strict=True)
    ]
    blocks = ["<think>" + " ".join(pts[i : i + 50]) + "</think>\n" for i in range(0, len(pts), 50)]
    text = "".join(blocks) + "<answer>(10, 10)</answer>"
    assert len(text) > 5_000_000
    return text


@pytest.mark.parametrize("mode", ["single_turn", "multi_turn"])
def test_5mb_action_is_cut_flagged_and_scored_like_its_prefix(mode):
    env = gym.make("ViGoRL/SynthGrounding-v0", mode=mode, size=3)
    _, info = env.reset(seed=1)
    w, h = info["frame"]["model_size"]
    action = _huge_action(w, h)
    _, r, term, trunc, info = env.step(action)
    assert info["action_truncated"] is True
    cut = action[:MAX_ACTION_CHARS]
    assert cut.endswith(" ") and info["transcript"] == cut.rstrip()  # cut, then canonicalized
    assert env.unwrapped.get_state().actions == (cut.rstrip(),)
    ref = gym.make("ViGoRL/SynthGrounding-v0", mode=mode, size=3)
    ref.reset(seed=1)
    _, r2, term2, trunc2, info2 = ref.step(cut)
    assert "action_truncated" not in info2
    del info["action_truncated"]
    assert (r, term, trunc) == (r2, term2, trunc2)
    assert info == info2
    # the cut fell inside the think block: no answer, no format, but many grounded points
    assert info["end_reason"] in ("no_answer", "no_action")
    assert info["grounding"]["points"] > 5_000  # thousands of points: the grid path
    assert info["grounding"] == reference(
        cut,
        [(o["id"], o["box"]) for o in info["ground_truth"]["objects"]],
        info["ground_truth"]["target_ids"],
    )


def test_action_at_the_limit_is_not_cut():
    env = gym.make("ViGoRL/SynthSpatial-v0", size=3)
    env.reset(seed=0)
    body = "x" * (MAX_ACTION_CHARS - len("<think>(1, 2)</think><answer>a</answer>"))
    action = f"<think>(1, 2){body}</think><answer>a</answer>"
    assert len(action) == MAX_ACTION_CHARS
    _, _, _, _, info = env.step(action + "<|im_end|> \n")  # canonicalized first, then measured
    assert "action_truncated" not in info and info["transcript"] == action

"""Hostile multi-turn episodes on every env id (procedural ids, and the real ids on a fixture
DATA_ROOT; docs/envs.md#step): several steps of hostile text, tool calls with hostile coordinates
and forced-prefix paths never make `step` raise, and every info is sane (turn count, image count,
crop inside the frame, prefix rules, no ground truth before the end, reward components that add up
at the end).

Kept to a few seconds per env id: two configurations per id (a small image budget that reaches the
forced prefix quickly, and a small turn budget), datasets of two samples, 25 examples.
"""

from __future__ import annotations

import functools
import json

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vigorl_env
from vigorl_env import protocol, rewards

END_REASONS = {"answer", "no_action", "invalid_tool_call", "turn_limit", "image_budget"}
CONFIGS = (
    {"max_images": 2, "max_turns": 5, "draw_dot": True},
    {"max_images": 5, "max_turns": 3, "draw_dot": False},
)
GT_KEYS = {"ground_truth", "reward_components", "transcript", "end_reason", "grounding"}


@functools.cache
def _env(env_id: str, k: int, data_root: str | None = None):
    where = {"size": 2} if env_id in vigorl_env.PROCEDURAL_IDS else {"data_root": data_root}
    return gym.make(env_id, mode="multi_turn", **where, **CONFIGS[k])


HOSTILE_INT = st.one_of(
    st.integers(-999_999, 999_999),
    st.sampled_from([0, -1, 1, 10**6 - 1, -(10**6) + 1, 27, 28]),
)
NUMBER_TEXT = st.one_of(
    HOSTILE_INT.map(str),
    st.sampled_from(
        ["1234567", "9" * 5000, "1.5", "1e2", "-0", "007", "true", "null", '"5"', "[1]", "NaN"]
    ),
)
RAW_TOOL_CALL = st.builds(
    lambda name, x, y, ws: (
        f'<tool_call>{ws}{{{name}"arguments": {{"coordinate": [{x}, {y}]}}}}{ws}</tool_call>'
    ),
    st.sampled_from(['"name": "search_coordinate", ', '"name": "crop", ', "", '"name": 1, ']),
    NUMBER_TEXT,
    NUMBER_TEXT,
    st.sampled_from(["", "\n", " \u2003"]),
)
FRAGMENT = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<THINK>",
        "<answer>",
        "</answer>",
        "</ANSWER>",
        "<tool_call>",
        "</tool_call>",
        "<observation>",
        "</observation>",
        "<image>",
        protocol.FORCED_PREFIX,
        protocol.OBSERVATION_TEXT_DOT,
        "<|im_end|>",
        "<|endoftext|>",
        "(12, 34)",
        "(1234567, 1)",
        "red",
        "left",
        "click [12]",
        "scroll [down]",
        "\n",
        " ",
        "\x00",
        "\ud800",
        "{",
        "}",
        "[",
        "]",
    ]
)
THINK = st.builds(
    lambda body: f"<think>{body}</think>\n",
    st.lists(FRAGMENT | st.text(max_size=8), max_size=6).map("".join),
)
ACTION = st.one_of(
    st.text(max_size=200),
    st.lists(FRAGMENT | st.text(max_size=5), max_size=30).map("".join),
    st.builds(lambda t, x, y: t + protocol.format_tool_call(x, y), THINK, HOSTILE_INT, HOSTILE_INT),
    st.builds(lambda t, c: t + c, THINK, RAW_TOOL_CALL),
    st.builds(lambda t, a: f"{t}<answer>{a}</answer>", THINK, st.text(max_size=20)),
    st.builds(lambda a: f" {a} </answer>", st.text(max_size=20)),  # a forced-prefix continuation
    st.builds(lambda a: protocol.FORCED_PREFIX + a, st.text(max_size=20)),
    st.just(""),
)


SAFE_FRAGMENT = FRAGMENT.filter(
    lambda f: "tool_call" not in f.lower() and "answer" not in f.lower()
)
NOISE = st.lists(SAFE_FRAGMENT | st.text(max_size=6), max_size=8).map("".join)
CONTINUE = st.builds(
    lambda pre, x, y, post: f"{pre}{protocol.format_tool_call(x, y)}{post}",
    NOISE,
    HOSTILE_INT,
    HOSTILE_INT,
    st.one_of(NOISE, RAW_TOOL_CALL, st.just("<tool_call>")),
).filter(lambda a: "</answer>" not in a.lower())
"""An action that keeps the episode going: hostile text around a valid first tool call."""
EPISODE = st.builds(lambda middle, last: [*middle, last], st.lists(CONTINUE, max_size=5), ACTION)


def _run_episode(
    env_id: str, k: int, seed: int, actions: list[str], data_root: str | None = None
) -> None:
    env = _env(env_id, k, data_root)
    cfg = CONFIGS[k]
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    assert not GT_KEYS & set(info)
    w, h = info["frame"]["model_size"]
    pending = "assistant_prefix" in info
    num_images = 1
    _, top = rewards.reward_range("multi_turn", max_tool_calls=cfg["max_images"] - 1)
    for turn, action in enumerate(actions, start=1):
        obs, r, term, trunc, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert info["turn"] == turn
        assert info.get("prefix_prepended", False) == (
            pending and not protocol.canonicalize_action(action).startswith(protocol.FORCED_PREFIX)
        )
        tc = info["tool_call"]
        assert tc is None or (
            len(tc["coordinate"]) == 2 and all(type(v) is int for v in tc["coordinate"])
        )
        if "crop" in info:
            assert tc is not None and not pending
            x, y = info["crop"]["point"]
            left, top_, right, bottom = info["crop"]["box"]
            assert 0 <= x < w and 0 <= y < h
            assert 0 <= left < right <= w and 0 <= top_ < bottom <= h
            assert info["crop"]["clamped"] == ((x, y) != tuple(tc["coordinate"]))
            num_images += 1
            assert obs["text"] == protocol.observation_text(cfg["draw_dot"])
        assert info["num_images"] == num_images <= cfg["max_images"]
        if term or trunc:
            assert term != trunc
            assert info["end_reason"] in END_REASONS
            comps = info["reward_components"]
            assert r == comps["overall"] and 0.0 <= r <= top + 1e-9
            assert r == pytest.approx(0.6 * comps["accuracy"] + 0.4 * comps["format"])
            last = protocol.canonicalize_action(action)
            if info.get("prefix_prepended"):
                last = protocol.FORCED_PREFIX + last
            assert info["transcript"].endswith(last)
            assert "answer" in info["ground_truth"]
            if pending:  # a pending forced prefix always ends the episode
                assert info["end_reason"] in ("answer", "image_budget")
            if info["end_reason"] != "turn_limit":
                assert obs["text"] == ""
            json.dumps(info, allow_nan=False)  # plain data only
            with pytest.raises(gym.error.ResetNeeded):
                env.step("again")
            return
        assert r == 0.0 and not GT_KEYS & set(info)
        assert "crop" in info and not pending
        assert turn < cfg["max_turns"]
        pending = "assistant_prefix" in info
        assert pending == (num_images == cfg["max_images"])


@pytest.mark.parametrize("k", range(len(CONFIGS)))
@pytest.mark.parametrize("env_id", vigorl_env.PROCEDURAL_IDS)
def test_hostile_multi_turn_episodes(env_id, k):
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        derandomize=True,
    )
    @given(seed=st.integers(0, 1), actions=EPISODE)
    def run(seed, actions):
        _run_episode(env_id, k, seed, actions)

    run()


@pytest.mark.parametrize("env_id", vigorl_env.UPSTREAM_IDS)
def test_hostile_multi_turn_episodes_on_real_ids(env_id, fixture_data_root):
    """The same hostile episodes on every real benchmark id (fixture DATA_ROOT in the upstream
    formats): the step code is shared, but frames, answer kinds and crop settings differ."""
    root = str(fixture_data_root)

    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        derandomize=True,
    )
    @given(seed=st.integers(0, 3), k=st.sampled_from(range(len(CONFIGS))), actions=EPISODE)
    def run(seed, k, actions):
        _run_episode(env_id, k, seed, actions, root)

    run()


def test_forced_prefix_path_is_reached():
    """The strategy's scripted path: one crop fills a budget of 2, then the prefix is forced."""
    env_id = "ViGoRL/SynthSearch-v0"
    _run_episode(
        env_id, 0, 0, ["<think>(5, 5)</think>\n" + protocol.format_tool_call(-5, 99999), "blue"]
    )
    env = _env(env_id, 0)
    env.reset(seed=1)
    _, _, _, _, info = env.step("<think>x</think>\n" + protocol.format_tool_call(10, 10))
    assert info["assistant_prefix"] == protocol.FORCED_PREFIX
    _, _, term, trunc, info = env.step(protocol.FORCED_PREFIX + " red </answer>")
    assert (term, trunc, info["end_reason"]) == (True, False, "answer")
    assert "prefix_prepended" not in info

"""The env contract (docs/envs.md): registration, check_env, reset/step rules, determinism, state, pickling."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded
from gymnasium.utils.env_checker import check_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vigorl_env
from vigorl_env import protocol, rewards
from vigorl_env.env import EnvState, GroundedReasoningEnv, load_dataset

SYNTH_IDS = list(vigorl_env.PROCEDURAL_IDS)
REAL_IDS = list(vigorl_env.UPSTREAM_IDS)

DOC_IDS = [
    "ViGoRL/SAT2-v0",
    "ViGoRL/BLINK-v0",
    "ViGoRL/RoboSpatial-v0",
    "ViGoRL/VStar-v0",
    "ViGoRL/VisualSearchSA-v0",
    "ViGoRL/OSAtlas-v0",
    "ViGoRL/ScreenSpotV2-v0",
    "ViGoRL/ScreenSpotPro-v0",
    "ViGoRL/VisualWebArena-v0",
    "ViGoRL/SynthSearch-v0",
    "ViGoRL/SynthSpatial-v0",
    "ViGoRL/SynthGrounding-v0",
    "ViGoRL/SynthWebAction-v0",
]


def sample_of(env, info):
    """The episode's sample read from the data source itself (the env keeps it private)."""
    return load_dataset(env.unwrapped.config)[info["index"]]


def tc(x: int, y: int, think: str = "Look here.") -> str:
    return f"<think>{think} ({x}, {y})</think>\n" + protocol.format_tool_call(x, y)


def test_every_documented_id_is_registered_without_step_limit():
    assert sorted(vigorl_env.ENV_IDS) == sorted(DOC_IDS)
    for env_id in DOC_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps is None
        assert isinstance(spec.entry_point, str)


@pytest.mark.parametrize("env_id", SYNTH_IDS)
def test_check_env_procedural(env_id):
    env = gym.make(env_id, size=50)
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", REAL_IDS)
def test_check_env_real_on_fixture_root(env_id, fixture_data_root):
    env = gym.make(env_id, data_root=str(fixture_data_root))
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", REAL_IDS)
def test_real_ids_without_data_name_path_and_command(env_id, monkeypatch, tmp_path):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    with pytest.raises(vigorl_env.DataNotFoundError) as e:
        gym.make(env_id)
    msg = str(e.value)
    assert "DATA_ROOT" in msg and "not set" in msg
    assert "vigorl_env.data." in msg  # download or prepare command
    with pytest.raises(vigorl_env.DataNotFoundError) as e:
        gym.make(env_id, data_root=str(tmp_path))
    assert str(tmp_path) in str(e.value)


def test_procedural_envs_never_read_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "does-not-exist"))
    env = gym.make("ViGoRL/SynthSpatial-v0")
    obs, info = env.reset(seed=0)
    assert obs["image"].dtype == np.uint8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "both"},
        {"max_images": 0},
        {"offset": 0},
        {"crop_size": 27},
        {"min_pixels": 10_000, "max_pixels": 5_000},
        {"variant": "vanilla", "mode": "multi_turn"},
        {"variant": "plain"},
        {"accuracy_fn": "fuzzy"},
        {"answer_extraction": "last_line"},
        {"crop_preset": "huge"},
        {"reward_weights": {"accuracy": 1.0}},
        {"prompt_newlines": "crlf"},
    ],
)
def test_invalid_make_kwargs_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        gym.make("ViGoRL/SynthSearch-v0", **kwargs)


def test_reset_info_and_no_ground_truth_leak():
    env = gym.make("ViGoRL/SynthSearch-v0")
    obs, info = env.reset(seed=3)
    assert set(info) == {
        "system_prompt",
        "sample_id",
        "index",
        "split",
        "mode",
        "frame",
        "max_turns",
        "max_images",
        "crop",
    }
    assert info["mode"] == "multi_turn" and info["split"] == "train"
    assert info["crop"] == {
        "offset": 182,
        "crop_size": 672,
        "crop_size_effective": 672,
        "draw_dot": False,
    }
    w, h = info["frame"]["model_size"]
    assert obs["image"].shape == (h, w, 3) and w % 28 == 0 and h % 28 == 0
    assert w * h <= 2_850_000
    assert obs["text"].count("<image>") == 1
    assert info["system_prompt"].startswith(
        "You are a helpful assistant tasked with answering a question"
    )
    sample = sample_of(env, info)
    assert info["sample_id"] == sample.sample_id == f"SynthSearch-train-0-{info['index']}"
    # nothing in info names the answer or the objects
    flat = repr(info)
    assert "ground_truth" not in flat and "objects" not in flat and "answer'" not in flat


def test_defaults_follow_documented_table():
    cases = {
        "ViGoRL/SynthSpatial-v0": ("single_turn", 182, 672, False, 1260, 12_960_000),
        "ViGoRL/SynthGrounding-v0": ("single_turn", 50, 384, True, None, 4_194_304),
        "ViGoRL/SynthWebAction-v0": ("single_turn", 182, 672, False, None, 4_194_304),
        "ViGoRL/SynthSearch-v0": ("multi_turn", 182, 672, False, None, 2_850_000),
    }
    for env_id, (mode, off, crop, dot, side, maxp) in cases.items():
        cfg = gym.make(env_id).unwrapped.config
        assert (
            cfg.mode,
            cfg.offset,
            cfg.crop_size,
            cfg.draw_dot,
            cfg.max_side,
            cfg.max_pixels,
        ) == (mode, off, crop, dot, side, maxp)
    wide = gym.make("ViGoRL/SynthGrounding-v0", crop_preset="wide").unwrapped.config
    assert (wide.offset, wide.crop_size, wide.crop_size_effective, wide.draw_dot) == (
        100,
        512,
        504,
        True,
    )
    assert gym.make("ViGoRL/SynthSpatial-v0", max_side=None).unwrapped.config.max_side is None


def test_multi_turn_episode_crops_forced_prefix_and_reward():
    env = gym.make("ViGoRL/SynthSearch-v0")
    obs, info = env.reset(seed=1)
    answer = sample_of(env, info).answer
    w, h = info["frame"]["model_size"]
    points = [(100, 100), (400, 100), (100, 400), (400, 400)]
    for i, (x, y) in enumerate(points, start=1):
        obs, r, term, trunc, info = env.step(tc(x, y))
        assert (r, term, trunc) == (0.0, False, False)
        assert obs["image"].shape == (672, 672, 3)
        assert obs["text"] == protocol.OBSERVATION_TEXT_NO_DOT
        assert info["turn"] == i and info["num_images"] == i + 1
        assert info["tool_call"] == {"coordinate": [x, y]}
        assert info["crop"] == {
            "point": [x, y],
            "box": [max(0, x - 182), max(0, y - 182), min(w, x + 182), min(h, y + 182)],
            "clamped": False,
        }
    assert info["assistant_prefix"] == protocol.FORCED_PREFIX
    obs, r, term, trunc, info = env.step(f" {answer} </answer><|im_end|>")
    assert info["prefix_prepended"] is True
    assert (term, trunc, info["end_reason"]) == (True, False, "answer")
    assert info["transcript"].endswith(protocol.FORCED_PREFIX + f" {answer} </answer>")
    assert info["transcript"].count(protocol.OBSERVATION_TEXT_NO_DOT) == 4
    # the shape of row 18 of docs/rewards.md#worked-examples: acc 1, four distinct coordinates -> format 1.6
    assert info["reward_components"]["accuracy"] == 1.0
    assert info["reward_components"]["format"] == pytest.approx(1.6)
    assert r == pytest.approx(0.6 + 0.4 * 1.6)
    assert obs["text"] == "" and obs["image"].shape == (672, 672, 3)
    assert info["ground_truth"]["answer"] == answer
    with pytest.raises(ResetNeeded):
        env.step("more")


def test_multi_turn_end_reasons():
    env = gym.make("ViGoRL/SynthSearch-v0")
    env.reset(seed=0)
    _, _, term, trunc, info = env.step("<think>x</think> nothing to do")
    assert (term, trunc, info["end_reason"]) == (True, False, "no_action")
    env.reset(seed=0)
    bad = '<think>Region.</think>\n<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [100.5, 100]}}\n</tool_call>'
    _, r, term, _, info = env.step(bad)
    assert (term, info["end_reason"], r) == (True, "invalid_tool_call", 0.0)
    assert info["tool_call"] is None and "crop" not in info
    # turn limit: max_images high so the prefix never comes; fifth tool call truncates with a crop
    env = gym.make("ViGoRL/SynthSearch-v0", max_images=10)
    env.reset(seed=0)
    for i in range(5):
        obs, r, term, trunc, info = env.step(tc(50 + 60 * i, 80))
    assert (term, trunc, info["end_reason"]) == (False, True, "turn_limit")
    assert obs["text"] == protocol.OBSERVATION_TEXT_NO_DOT and obs["image"].shape == (672, 672, 3)
    assert info["transcript"].endswith(protocol.format_tool_call(290, 80))
    # image budget: forced prefix pending but no answer close
    env = gym.make("ViGoRL/SynthSearch-v0", max_images=2)
    env.reset(seed=0)
    _, _, _, _, info = env.step(tc(300, 300))
    assert info["assistant_prefix"] == protocol.FORCED_PREFIX
    _, _, term, trunc, info = env.step("I am not sure")
    assert (term, trunc, info["end_reason"]) == (False, True, "image_budget")


def test_clamped_point_and_dot_observation():
    env = gym.make("ViGoRL/SynthGrounding-v0", mode="multi_turn")
    _, info = env.reset(seed=2)
    w, h = info["frame"]["model_size"]
    obs, _, _, _, info = env.step(tc(-40, 5000))
    assert info["crop"]["point"] == [0, h - 1] and info["crop"]["clamped"] is True
    assert obs["image"].shape == (392, 392, 3)
    assert obs["text"] == protocol.OBSERVATION_TEXT_DOT
    # docs/rewards.md#multi-turn-score: diversity uses the raw coordinates
    assert info["tool_call"] == {"coordinate": [-40, 5000]}
    # the same clamped point asked for directly comes from the crop cache, but is not flagged clamped
    obs2, _, _, _, info2 = env.step(tc(0, h - 1))
    assert info2["crop"] == {"point": [0, h - 1], "box": info["crop"]["box"], "clamped": False}
    assert (obs2["image"] == obs["image"]).all()


def test_single_turn_grounding_reward_in_model_frame():
    env = gym.make("ViGoRL/SynthGrounding-v0")
    _, info = env.reset(seed=5)
    sample = sample_of(env, info)
    sx, sy = info["frame"]["scale"]
    x1, y1, x2, y2 = sample.gt_box
    cx, cy = round((x1 + x2) / 2 * sx), round((y1 + y2) / 2 * sy)
    obs, r, term, trunc, info = env.step(
        f"<think>The target ({cx}, {cy}).</think>\n<answer> ({cx}, {cy}) </answer>"
    )
    assert (r, term, trunc, info["end_reason"]) == (1.0, True, False, "answer")
    assert info["ground_truth"]["box"] == pytest.approx([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
    assert info["grounding"]["on_target"] == 1.0
    # an answer in the *original* frame misses whenever the frame was rescaled
    env.reset(seed=5)
    far = (round(x2 + 400), round(y2 + 400))
    _, r, _, _, info = env.step(f"<think>({far[0]}, {far[1]})</think><answer>{far}</answer>")
    assert info["reward_components"]["accuracy"] == 0.0 and r == 0.5


def test_single_turn_option_reward_and_vanilla():
    for variant, think in (("grounded", "The cube (10, 20) is left."), ("vanilla", "no points")):
        env = gym.make("ViGoRL/SynthSpatial-v0", variant=variant)
        _, info = env.reset(seed=11)
        answer = sample_of(env, info).answer
        _, r, _, _, info = env.step(f"<think>{think}</think>\n<answer> {answer} </answer>")
        assert r == 1.0, info["reward_components"]
    env = gym.make("ViGoRL/SynthSpatial-v0")
    env.reset(seed=11)
    _, r, _, _, info = env.step("just text")
    assert (r, info["end_reason"]) == (0.0, "no_answer")


def test_actions_bytes_and_types():
    env = gym.make("ViGoRL/SynthSpatial-v0")
    env.reset(seed=0)
    _, _, term, _, info = env.step(b"<think>\xff (1, 2)</think><answer>x</answer>")
    assert term and "\ufffd" in info["transcript"]
    env.reset(seed=0)
    with pytest.raises(TypeError):
        env.step(123)


def _run(env, seed, actions):
    out = [env.reset(seed=seed)]
    for a in actions:
        out.append(env.step(a))
        if out[-1][2] or out[-1][3]:
            break
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert gym.utils.env_checker.data_equivalence(x, y), (x, y)


def test_determinism_same_seed_same_actions():
    actions = [tc(120, 90), tc(700, 500), "<think>done</think><answer>red</answer>"]
    a = _run(gym.make("ViGoRL/SynthSearch-v0"), 7, actions)
    b = _run(gym.make("ViGoRL/SynthSearch-v0"), 7, actions)
    _assert_same(a, b)
    c = _run(gym.make("ViGoRL/SynthSearch-v0"), 8, actions)
    assert c[0][1]["sample_id"] != a[0][1]["sample_id"]


def test_observations_do_not_share_buffers():
    env = gym.make("ViGoRL/SynthSearch-v0")
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(tc(300, 300))
    obs1["image"][:] = 0
    obs0["image"][:] = 0
    env.reset(seed=0)
    obs2, *_ = env.step(tc(300, 300))  # from the crop cache
    assert obs2["image"].any()
    obs3, _ = env.reset(seed=0)  # from the frame cache
    assert obs3["image"].any()


def test_state_snapshot_restore_and_pickle():
    env = gym.make("ViGoRL/SynthSearch-v0")
    env.reset(seed=4)
    env.step(tc(200, 200))
    obs_a, _, _, _, info_a = env.step(tc(600, 300))
    state = env.unwrapped.get_state()
    assert isinstance(state, EnvState) and len(state.actions) == 2
    assert pickle.loads(pickle.dumps(state)) == state
    other = gym.make("ViGoRL/SynthSearch-v0")
    other.reset()
    obs_b, info_b = other.unwrapped.set_state(state)
    assert np.array_equal(obs_a["image"], obs_b["image"]) and obs_a["text"] == obs_b["text"]
    assert info_a == info_b
    # both continue identically
    fin = "<think>ok</think><answer>red</answer>"
    ra = env.step(fin)
    rb = other.step(fin)
    assert ra[1] == rb[1] and ra[4] == rb[4]
    with pytest.raises(ValueError):
        gym.make("ViGoRL/SynthSearch-v0", offset=100).unwrapped.set_state(state)
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    assert clone.fingerprint == env.unwrapped.fingerprint


def test_finalize_and_accuracy_of():
    env = gym.make("ViGoRL/SynthSearch-v0")
    _, info = env.reset(seed=9)
    answer = sample_of(env, info).answer
    assert env.unwrapped.accuracy_of(answer) == 1.0
    assert env.unwrapped.accuracy_of("definitely not " + answer) == 0.0
    env.step(tc(100, 100))
    reward, info = env.unwrapped.finalize("overlong")
    assert info["end_reason"] == "overlong" and reward == 0.0
    with pytest.raises(ResetNeeded):
        env.step("x")


def test_render_rgb_array():
    env = gym.make("ViGoRL/SynthSearch-v0", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    env.step(tc(300, 300))
    frame = env.render()
    assert frame.shape == obs["image"].shape and not np.array_equal(frame, obs["image"])


@pytest.mark.parametrize(
    "how",
    [
        {"vectorization_mode": "async", "vector_kwargs": {"shared_memory": False}},
        {},
        {"vectorization_mode": "sync"},
    ],
)
def test_vector_envs(how):
    envs = gym.make_vec("ViGoRL/SynthSpatial-v0", num_envs=2, **how)
    if not how:
        assert isinstance(envs, gym.vector.AsyncVectorEnv)
    try:
        obs, info = envs.reset(seed=[1, 2])
        assert len(obs["image"]) == 2 and obs["image"][0].ndim == 3
        obs, r, term, trunc, info = envs.step(
            ["<think>(1, 2)</think><answer>x</answer>", "nothing"]
        )
        assert term.tolist() == [True, True]
        assert r.shape == (2,)
    finally:
        envs.close()


HOSTILE = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.sampled_from(
            [
                "<think>",
                "</think>",
                "<answer>",
                "</answer>",
                "<tool_call>",
                "</tool_call>",
                "<ANSWER>",
                "<observation>",
                "</observation>",
                '{"name": "search_coordinate", "arguments": {"coordinate": [',
                "]}}",
                "12",
                "-5",
                "99999999",
                ", ",
                "(",
                ")",
                "\n",
                "<|im_end|>",
                protocol.FORCED_PREFIX,
                "\x00",
                "\ud800",
                "left",
                "red",
                "K",
                "1e9",
                "true",
                "null",
            ]
        ),
        max_size=40,
    ).map("".join),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=st.lists(HOSTILE, min_size=1, max_size=6))
def test_fuzz_step_never_raises(actions):
    for env_id, top in (
        ("ViGoRL/SynthSearch-v0", 0.6 + 0.4 * 1.6),
        ("ViGoRL/SynthWebAction-v0", 1.0),
    ):
        env = _FUZZ_ENVS[env_id]
        env.reset(seed=0)
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            assert 0.0 <= r <= top + 1e-9
            assert env.observation_space.contains(obs)
            if term or trunc:
                assert info["end_reason"]
                break


_FUZZ_ENVS = {
    "ViGoRL/SynthSearch-v0": gym.make("ViGoRL/SynthSearch-v0", size=4),
    "ViGoRL/SynthWebAction-v0": gym.make("ViGoRL/SynthWebAction-v0", size=4),
}


def test_long_hostile_action_is_handled():
    env = gym.make("ViGoRL/SynthSearch-v0")
    env.reset(seed=0)
    _, r, term, _, info = env.step("<answer>" * 12_500)
    assert (term, info["end_reason"], r) == (True, "no_action", 0.0)


def test_env_class_usable_directly():
    env = GroundedReasoningEnv("SynthWebAction", size=3)
    obs, info = env.reset(options={"index": 2})
    assert info["sample_id"] == "SynthWebAction-train-0-2"
    obs, info = env.reset(options={"sample_id": "SynthWebAction-train-0-1"})
    assert info["index"] == 1
    with pytest.raises(IndexError):
        env.reset(options={"index": 3})
    assert rewards.GroundTruth  # the env's reward module is the shared one


def test_one_home_per_fact():
    """Choices, default weights, env ids and the image marker are declared once and imported."""
    import ast
    from pathlib import Path

    from vigorl_env import config, registration
    from vigorl_env.data import upstream_records

    assert config.ACCURACY_FNS is rewards.ACCURACY_FNS
    assert config.ANSWER_EXTRACTIONS is rewards.ANSWER_EXTRACTIONS
    assert config.DEFAULT_WEIGHTS is rewards.DEFAULT_WEIGHTS
    assert config.MODES is rewards.MODES and config.VARIANTS is rewards.VARIANTS
    for mode in rewards.MODES:
        cfg = config.build_config("SynthSpatial", mode=mode)
        assert cfg.reward_weights == dict(rewards.DEFAULT_WEIGHTS[mode])
    assert upstream_records.IMAGE_MARKER is protocol.IMAGE_MARKER == "<image>"
    assert registration.ENV_ID_OF["SynthSearch"] == "ViGoRL/SynthSearch-v0"
    vec = gym.make_vec("ViGoRL/SynthSearch-v0", num_envs=1, size=3)
    try:
        assert vec.spec.id == "ViGoRL/SynthSearch-v0"
    finally:
        vec.close()
    # no other module of the package spells the marker as a string literal of its own
    pkg = Path(vigorl_env.__file__).parent
    spelled = []
    for path in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "<image>":
                spelled.append(str(path.relative_to(pkg)))
    assert spelled == ["protocol.py"]


NOT_A_TOOL_CALL = [
    "[100, 100]",  # JSON, not an object (a bare {…} regex never sees it)
    '"{\\"name\\": \\"crop\\", \\"arguments\\": {\\"coordinate\\": [100, 100]}}"',  # a string
    '{"arguments": {"coordinate": [100, 100]}}',  # no name
    '{"name": 1, "arguments": {"coordinate": [100, 100]}}',  # name not a string
    '{"name": "crop", "arguments": {"coordinate": [100, 100.0]}}',  # float coordinate
    '{"name": "crop", "arguments": {"coordinate": [100, 100]}} {"x": 1}',  # trailing data
    '{"name": "crop", "coordinate": [100, 100]}',  # coordinate outside arguments
    "crop(100, 100)",
]


@pytest.mark.parametrize("body", NOT_A_TOOL_CALL)
def test_tool_call_body_not_an_object_with_name_and_int_coordinate_is_invalid_everywhere(body):
    """One parser judges a body in the env and in the multi-turn format check."""
    call = f"<tool_call>\n{body}\n</tool_call>"
    good = protocol.format_tool_call(100, 100)
    answer = "<think>It is red.</think>\n<answer>red</answer>"
    obs_text = protocol.OBSERVATION_TEXT_NO_DOT
    gt = rewards.GroundTruth("red", "option_text")
    # a transcript built outside the env (MCTS, SFT) with the bad body fails format check 3
    ok = "\n".join(["<think>Look (100, 100).</think>\n" + good, obs_text, answer])
    bad = "\n".join(["<think>Look (100, 100).</think>\n" + call, obs_text, answer])
    assert rewards.multi_turn_reward(ok, gt) == {
        "overall": pytest.approx(1.0),
        "accuracy": 1.0,
        "format": 1.0,
        "unique_coords": 1,
        "num_tool_calls": 1,
    }
    assert rewards.multi_turn_reward(bad, gt) == {
        "overall": pytest.approx(0.6),
        "accuracy": 1.0,
        "format": 0.0,
        "unique_coords": 0,
        "num_tool_calls": 0,
    }
    # the env ends the episode on it, with no crop
    env = gym.make("ViGoRL/SynthSearch-v0", size=3)
    env.reset(seed=0)
    _, r, term, trunc, info = env.step("<think>Look (100, 100).</think>\n" + call)
    assert (term, trunc, info["end_reason"], r) == (True, False, "invalid_tool_call", 0.0)
    assert info["tool_call"] is None and "crop" not in info and info["tool_call_error"]

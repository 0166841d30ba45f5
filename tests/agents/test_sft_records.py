"""Trajectory → SFT record conversion (vigorl_agents.records): messages, images as the model saw
them, portable folders in all three file formats, and no torch import."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

from tests.agents.scripted import ScriptedPolicy
from vigorl_agents.policy import SamplingParams
from vigorl_agents.records import (
    image_folder,
    sft_record,
    trajectory_record,
    write_parquet,
    write_sft_jsonl,
    write_sharegpt_json,
)
from vigorl_agents.rollout import EpisodeSpec, run_episodes
from vigorl_agents.train.data import load_sft_file
from vigorl_env.protocol import FORCED_PREFIX, OBSERVATION_TEXT_NO_DOT, format_tool_call

SEARCH = "ViGoRL/SynthSearch-v0"
SEARCH_KW = {"max_pixels": 64 * 28 * 28, "crop_size": 224}
GROUNDING = "ViGoRL/SynthGrounding-v0"
GROUNDING_KW = {"max_pixels": 64 * 28 * 28}


def _run(env_id, kw, turns, n=2):
    return asyncio.run(
        run_episodes(
            lambda: gym.make(env_id, **kw),
            ScriptedPolicy(turns),
            [EpisodeSpec(i) for i in range(n)],
            SamplingParams(seed=0),
        )
    )


def _seen(env_id, kw, index, actions):
    """What a fresh env returns for `actions`: [reset frame, each step's crop] and
    [question, each step's observation text]."""
    env = gym.make(env_id, **kw)
    obs, _ = env.reset(options={"index": index})
    seen, texts = [obs["image"]], [obs["text"]]
    for a in actions:
        obs, *_ = env.step(a)
        seen.append(obs["image"])
        texts.append(obs["text"])
    return seen, texts


def _step(x, y):
    return f"<think> Look near ({x}, {y}). </think>\n" + format_tool_call(x, y)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Records of 2 multi-turn SynthSearch episodes (2 crops each) and 2 single-turn
    SynthGrounding ones, written under one data folder."""
    data = tmp_path_factory.mktemp("data")
    mt_turns = [_step(40, 30), _step(200, 100), "<think> Seen. </think>\n<answer> left </answer>"]
    st_turns = ["<think>\nThe target is at (20, 30).\n</think>\n<answer> (20, 30) </answer>"]
    records = []
    for env_id, kw, turns in ((SEARCH, SEARCH_KW, mt_turns), (GROUNDING, GROUNDING_KW, st_turns)):
        env = gym.make(env_id, **kw)
        for t in _run(env_id, kw, turns):
            records.append(trajectory_record(env, t, data, meta={"test": True}))
    return data, records, mt_turns, st_turns


def test_multi_turn_record_messages_and_images(converted):
    data, records, turns, _ = converted
    rec = records[0]
    assert rec["kind"] == "multi_turn" and rec["env_id"] == SEARCH
    assert rec["id"] == f"{rec['sample_id']}:0" and rec["meta"]["test"] is True
    assert [m["role"] for m in rec["messages"]] == [
        "system", "user", "assistant", "user", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert [m["content"] for m in rec["messages"][2::2]] == turns
    seen, texts = _seen(SEARCH, SEARCH_KW, 0, turns[:2])
    assert [rec["messages"][k]["content"] for k in (1, 3, 5)] == texts
    assert texts[1] == OBSERVATION_TEXT_NO_DOT and texts[0].startswith("<image>")
    # images: relative POSIX paths, [frame, crop 1, crop 2], the pixels the env returned
    assert rec["images"] == [f"images/{rec['sample_id']}/0_{k}.png" for k in range(3)]
    for path, want in zip(rec["images"], seen, strict=True):
        assert np.array_equal(np.asarray(Image.open(data / path)), want)
    assert rec["split"] in ("train", "val") and rec["frame"]["model_size"] == list(
        Image.open(data / rec["images"][0]).size
    )


def test_single_turn_record(converted):
    data, records, _, turns = converted
    rec = records[2]
    assert rec["kind"] == "direct" and rec["env_id"] == GROUNDING
    assert [m["role"] for m in rec["messages"]] == ["system", "user", "assistant"]
    assert rec["messages"][2]["content"] == turns[0]
    assert len(rec["images"]) == 1
    (want,), (question,) = _seen(GROUNDING, GROUNDING_KW, 0, [])
    assert rec["messages"][1]["content"] == question
    assert rec["sample_id"].endswith("-0")
    assert np.array_equal(np.asarray(Image.open(data / rec["images"][0])), want)
    assert rec["gt_answer"].startswith("(")  # the ground-truth box string, original frame


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_written_folder_can_move(converted, tmp_path, fmt):
    """Write the records, move the whole folder, load them with the SFT loader from there."""
    data, records, _, _ = converted
    src = tmp_path / "a"
    shutil.copytree(data, src)
    writer = {"jsonl": write_sft_jsonl, "json": write_sharegpt_json, "parquet": write_parquet}[fmt]
    writer(records, src / f"chains.{fmt}")
    if fmt == "json":
        info = json.loads((src / "dataset_info.json").read_text())
        assert info["chains"]["file_name"] == "chains.json"
        assert info["chains"]["columns"] == {"messages": "messages", "images": "images"}
    moved = tmp_path / "elsewhere" / "b"
    moved.parent.mkdir()
    src.rename(moved)
    loaded = load_sft_file(moved / f"chains.{fmt}", data_root=moved)
    assert [r.messages for r in loaded] == [r["messages"] for r in records]
    assert [r.kind for r in loaded] == [r["kind"] for r in records]
    for rec, got in zip(records, loaded, strict=True):
        assert [p.resolve() for p in got.images] == [(moved / p).resolve() for p in rec["images"]]
        assert all(p.is_file() for p in got.images)


def test_turn_limit_crop_without_answer_is_dropped(tmp_path):
    """A turn-limit episode ends on a tool call: the record ends with that assistant turn, and
    the crop nobody answered is neither an observation nor an image."""
    kw = {**SEARCH_KW, "max_turns": 2}
    (traj,) = _run(SEARCH, kw, [_step(40, 30), _step(200, 100)], n=1)
    assert traj.end_reason == "turn_limit" and all(t.crop for t in traj.turns)
    rec = trajectory_record(gym.make(SEARCH, **kw), traj, tmp_path)
    assert [m["role"] for m in rec["messages"]] == [
        "system", "user", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert len(rec["images"]) == 2


def test_forced_prefix_is_part_of_the_assistant_turn(tmp_path):
    kw = {**SEARCH_KW, "max_images": 2}  # after one crop the final answer is forced
    (traj,) = _run(SEARCH, kw, [_step(40, 30), " left </answer>"], n=1)
    assert traj.turns[1].prefix == FORCED_PREFIX
    rec = trajectory_record(gym.make(SEARCH, **kw), traj, tmp_path)
    assert rec["messages"][-1]["content"] == FORCED_PREFIX + " left </answer>"


def test_record_checks():
    base = {
        "record_id": "s:0",
        "sample_id": "s",
        "env_id": "e",
        "kind": "direct",
        "messages": [
            {"role": "user", "content": "<image>q"},
            {"role": "assistant", "content": "a"},
        ],
        "images": ["f.png"],
        "frame": {},
        "gt_answer": "a",
    }
    assert sft_record(**base)["split"] in ("train", "val")
    with pytest.raises(ValueError, match=r"1 <image> marker.* 2 image"):
        sft_record(**{**base, "images": ["f.png", "g.png"]})
    with pytest.raises(ValueError, match="kind"):
        sft_record(**{**base, "kind": "other"})
    with pytest.raises(ValueError, match="last message"):
        sft_record(**{**base, "messages": base["messages"][:1]})


def test_image_folder_names_cannot_escape():
    assert image_folder("SynthSearch-train-0-3") == "SynthSearch-train-0-3"
    names = {image_folder(s) for s in ("../../etc", "a/b", "a_b", "..", ".", "a b")}
    assert len(names) == 6  # distinct ids, distinct folders
    assert all("/" not in n and n not in (".", "..") and not n.startswith(".") for n in names)


def test_records_module_does_not_import_torch():
    code = (
        "import sys, vigorl_agents.records, vigorl_agents.replay; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)

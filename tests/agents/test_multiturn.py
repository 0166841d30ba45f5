"""Multi-turn conversion of single-turn chains (docs/mcts.md#multi-turn-conversion): exact tool
calls and observation texts, crops equal to the env's, loaders and the tiny model's processor."""

from __future__ import annotations

import json
import random
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import vigorl_env  # noqa: F401
from vigorl_agents.records import sft_record
from vigorl_agents.search.linearize import main as linearize_main
from vigorl_agents.search.multiturn import chain_to_dialog, convert_records, write_multi_turn
from vigorl_agents.train.data import load_sft_file
from vigorl_env.tasks import load_prompt

PFX = (
    "<think> Based on all the information I've gathered, I'll now provide my final answer. "
    "</think>\n<answer>"
)
OBS = (
    "<observation>\nHere is the crop of the image centered on the coordinate:\n<image>"
    "</observation>"
)
OBS_DOT = (
    "<observation>\nHere is the crop of the image centered on the coordinate, with a red dot at "
    "the coordinate location:\n<image></observation>"
)


def tc(x: int, y: int) -> str:
    return (
        "<tool_call>\n"
        f'{{"name": "search_coordinate", "arguments": {{"coordinate": [{x}, {y}]}}}}\n'
        "</tool_call>"
    )


S1 = "The star (100, 120) is small."
S2 = "I check the circle (105, 125) again."
S3 = "Next the square (400, 300) looks blue!"
S5 = "Also (50, 60) and (1000, 800) in one."
S6 = "Last (1200, 900)."
CHAIN = f"<think>\n{S1} {S2} {S3} Then (2900, 5)? {S5} {S6}\n</think>\n<answer> red </answer>"


def expected_turns(obs: str) -> list[tuple[str, str]]:
    """By hand: (105, 125) is 7.1 px from (100, 120): its chunk waits for the next call;
    (1000, 800) lies in the chunk (50, 60) took: no call; (1200, 900) comes after the 4th call:
    dropped."""
    return [
        ("assistant", f"<think> {S1} </think>\n{tc(100, 120)}"),
        ("user", obs),
        ("assistant", f"<think> {S2}\n\n{S3} </think>\n{tc(400, 300)}"),
        ("user", obs),
        ("assistant", f"<think> Then (2900, 5)? </think>\n{tc(2900, 5)}"),
        ("user", obs),
        ("assistant", f"<think> {S5} </think>\n{tc(50, 60)}"),
        ("user", obs),
        ("assistant", f"{PFX} red </answer>"),
    ]


def unreordered_id() -> str:
    for i in range(100):
        rid = f"x:{i}"
        if random.Random(f"42:{rid}").random() >= 0.2:
            return rid
    raise AssertionError


def test_chain_to_dialog_exact_turns():
    d = chain_to_dialog(CHAIN, record_id=unreordered_id(), draw_dot=False)
    assert [(m["role"], m["content"]) for m in d.messages] == expected_turns(OBS)
    assert d.points == [(100, 120), (400, 300), (2900, 5), (50, 60)]
    assert not d.reordered
    d = chain_to_dialog(CHAIN, record_id=unreordered_id(), draw_dot=True)
    assert [m["content"] for m in d.messages if m["role"] == "user"] == [OBS_DOT] * 4


def test_trailing_reasoning_and_no_answer():
    d = chain_to_dialog(
        CHAIN, record_id=unreordered_id(), draw_dot=False, keep_trailing_reasoning=True
    )
    assert d.messages[-1]["content"] == f"<think> {S6} </think>\n<answer> red </answer>"
    assert chain_to_dialog("<think>a (1, 2).</think>", record_id="x", draw_dot=False) is None
    # the answer's point is never a call; max_images=2 allows one call
    d = chain_to_dialog(
        "<think>A (10, 10). B (90, 90).</think><answer>(5, 5)</answer>",
        record_id=unreordered_id(),
        draw_dot=False,
        max_images=2,
    )
    assert d.points == [(10, 10)]
    assert d.messages[-1]["content"] == f"{PFX} (5, 5) </answer>"


def test_reordering_rule():
    chain = "<think>A (10, 10). B (100, 100). C (200, 200). D (300, 300).</think><answer>x</answer>"
    moved = 0
    for i in range(200):
        rid = f"s:{i}"
        d = chain_to_dialog(chain, record_id=rid, draw_dot=False)
        rng = random.Random(f"42:{rid}")
        order = [(10, 10), (100, 100), (200, 200), (300, 300)]
        if rng.random() < 0.2:
            j = rng.randint(2, 4)
            order = [*order[1 : j - 1], order[0], *order[j - 1 :]]
        assert d.points == order
        assert d.reordered == (order[0] != (10, 10))
        # the moved call keeps its own think text
        first = next(m for m in d.messages if "[10, 10]" in m["content"])
        assert first["content"].startswith("<think> A (10, 10). </think>")
        moved += d.reordered
    assert 15 <= moved <= 50  # about 0.2 x 2/3 x 200 ≈ 27


@pytest.mark.parametrize(
    ("env_id", "domain", "prompt", "obs"),
    [
        ("ViGoRL/SynthSearch-v0", "visual_search", "qa_multiturn", OBS),
        ("ViGoRL/SynthGrounding-v0", "web_grounding", "web_grounding_multiturn", OBS_DOT),
    ],
)
def test_crops_equal_the_envs_and_files_load(tmp_path, env_id, domain, prompt, obs):
    env = gym.make(env_id, mode="multi_turn")
    o, info = env.reset(options={"index": 1})
    sid = info["sample_id"]
    rid = f"{sid}:3"
    single = sft_record(
        record_id=rid,
        sample_id=sid,
        env_id=env_id,
        kind="corrected",
        messages=[
            {"role": "system", "content": "single-turn prompt"},
            {"role": "user", "content": o["text"]},
            {"role": "assistant", "content": CHAIN},
        ],
        images=["frame.png"],
        frame=info["frame"],
        gt_answer="red",
        meta={"env_split": "train"},
    )
    out = tmp_path / "mt"
    recs = convert_records([single], domain=domain, out_dir=out)
    write_multi_turn(recs, out)
    (rec,) = recs
    d = chain_to_dialog(CHAIN, record_id=rid, draw_dot=obs == OBS_DOT)
    assert rec["id"] == rid and rec["kind"] == "multi_turn" and rec["split"] == single["split"]
    assert rec["messages"][0]["content"] == load_prompt(prompt)
    assert rec["messages"][1]["content"] == o["text"]
    assert rec["messages"][2:] == d.messages
    assert [m["content"] for m in rec["messages"] if m["role"] == "user"][1:] == [obs] * 4
    folder = f"images/{sid}"
    assert rec["images"] == [f"{folder}/3_{k}.png" for k in range(5)]
    # replay the dialog in the env: every crop is the env's own observation, pixel for pixel
    o2, _ = env.reset(options={"sample_id": sid})
    assert np.array_equal(np.array(Image.open(out / rec["images"][0])), o2["image"])
    turns = [m for m in rec["messages"][2:] if m["role"] == "assistant"]
    for k, turn in enumerate(turns[:-1], 1):
        o2, r, term, trunc, step_info = env.step(turn["content"])
        assert not (term or trunc)
        assert step_info["tool_call"]["coordinate"] == list(d.points[k - 1])
        assert o2["text"] == obs
        assert np.array_equal(np.array(Image.open(out / rec["images"][k])), o2["image"])
    assert step_info["assistant_prefix"] == PFX
    o2, r, term, trunc, step_info = env.step(turns[-1]["content"][len(PFX) :])
    assert term and step_info["end_reason"] == "answer"
    assert step_info["reward_components"]["num_tool_calls"] == 4
    # the three files load with the SFT loader
    for name in ("multi_turn.jsonl", "multi_turn.json", "multi_turn.parquet"):
        (loaded,) = load_sft_file(out / name, data_root=out)
        assert loaded.messages == rec["messages"]
        assert [Path(p).name for p in loaded.images] == [Path(p).name for p in rec["images"]]
    assert json.loads((out / "dataset_info.json").read_text())["multi_turn"]["file_name"] == (
        "multi_turn.json"
    )


def test_tokenize_with_tiny_processor(tmp_path, tiny_qwen25_dir):
    pytest.importorskip("torch")
    from transformers import AutoProcessor

    from vigorl_agents.train.data import TokenizedExample, tokenize_record

    processor = AutoProcessor.from_pretrained(tiny_qwen25_dir)
    sid = "SynthSpatial-train-0-2"
    small = {"max_pixels": 50176, "crop_size": 224}  # the tiny processor's bounds
    env = gym.make("ViGoRL/SynthSpatial-v0", **small)
    o, info = env.reset(options={"sample_id": sid})
    step = "<think>The purple sphere (100, 300) is near.</think>"
    tree = {
        "thought_text": o["text"],
        "value": 0.5,
        "rollouts": [],
        "children": [
            {
                "thought_text": step,
                "rollouts": [
                    {
                        "ephemeral_texts": [o["text"], step, "<answer>left</answer>"],
                        "reward": 1.0,
                        "answered": True,
                    },
                    {
                        "ephemeral_texts": [
                            o["text"],
                            step,
                            "Orange (400, 200). <answer>right</answer>",
                        ],
                        "reward": 0.0,
                        "answered": True,
                    },
                ],
                "children": [],
            }
        ],
    }
    trees = tmp_path / "t.jsonl"
    trees.write_text(
        json.dumps(
            {
                "id": sid,
                "env_id": "ViGoRL/SynthSpatial-v0",
                "split": "train",
                "question": o["text"],
                "image": "procedural",
                "frame": info["frame"],
                "true_answer": "left",
                "tree": tree,
            }
        )
        + "\n"
    )
    out = tmp_path / "st" / "chains.jsonl"
    mt = tmp_path / "mt"
    assert (
        linearize_main(
            [
                str(trees),
                str(out),
                "--domain",
                "spatial",
                "--multi-turn",
                str(mt),
                "--env-kwargs",
                "max_pixels=50176",
                "crop_size=224",
            ]
        )
        == 0
    )
    single = load_sft_file(out, data_root=out.parent)
    multi = load_sft_file(mt / "multi_turn.jsonl", data_root=mt)
    assert [r.kind for r in single] == ["direct", "corrected"]
    assert [r.kind for r in multi] == ["multi_turn", "multi_turn"]
    assert len(multi[1].images) == 3  # frame + (100, 300) + (400, 200)
    assert multi[0].messages[0]["content"] == load_prompt("qa_multiturn")  # P5 for spatial
    for r in single + multi:
        ex = tokenize_record(r, processor)
        assert isinstance(ex, TokenizedExample), ex
    assert multi[0].meta["env_kwargs"] == {"max_pixels": 50176, "crop_size": 224}
    # the same trees without the search's env kwargs: the frames differ, which is an error
    with pytest.raises(ValueError, match=r"model frame \[\d+, \d+\] is not the tree's"):
        linearize_main([str(trees), str(tmp_path / "x.jsonl"), "--domain", "spatial"])


def test_imported_chain_cropped_from_its_own_model_frame(tmp_path):
    """A chain whose sample id is no env sample (an imported upstream chain) is cropped from its
    own model-frame image with the env's settings: the crops equal the env's for the same frame."""
    env = gym.make("ViGoRL/SynthGrounding-v0", mode="multi_turn")
    o, info = env.reset(options={"index": 2})
    root = tmp_path / "data"
    (root / "frames").mkdir(parents=True)
    Image.fromarray(o["image"]).save(root / "frames" / "shot.png")
    rec = sft_record(
        record_id="upstream_file:7",
        sample_id="upstream_file:7",
        env_id="ViGoRL/SynthGrounding-v0",
        kind="direct",
        messages=[
            {"role": "system", "content": "p"},
            {"role": "user", "content": "<image>Click Save"},
            {"role": "assistant", "content": CHAIN},
        ],
        images=["frames/shot.png"],
        frame=info["frame"],
        gt_answer="(1, 2, 3, 4)",
        meta={"source": "imported"},
    )
    from vigorl_agents.search.linearize import FrameSource

    out = tmp_path / "mt"
    (mt,) = convert_records(
        [rec], domain="web_grounding", out_dir=out, frames=FrameSource(data_root=root)
    )
    d = chain_to_dialog(CHAIN, record_id="upstream_file:7", draw_dot=True)
    assert mt["messages"][2:] == d.messages
    assert mt["messages"][0]["content"] == load_prompt("web_grounding_multiturn")
    for k, p in enumerate(d.points, 1):
        want = np.asarray(env.unwrapped.crop_at(p)[0])
        assert np.array_equal(np.array(Image.open(out / mt["images"][k])), want)
    # an image that is not the record's model frame is refused
    Image.fromarray(o["image"]).resize((100, 80)).save(root / "frames" / "shot.png")
    with pytest.raises(ValueError, match="not the model frame"):
        convert_records(
            [rec], domain="web_grounding", out_dir=out, frames=FrameSource(data_root=root)
        )

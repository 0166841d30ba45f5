"""MCTS linearization (docs/mcts.md#linearization): hand-built trees → exact chains and records."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import vigorl_env  # noqa: F401
from vigorl_agents.search.linearize import (
    linearize_sample,
    main,
    rollout_steps,
    system_prompt_of,
)
from vigorl_agents.search.trees import read_tree_file
from vigorl_agents.train.data import load_sft_file
from vigorl_env.tasks import load_prompt

BT = "Wait, this seems off. Let's try something else."
ENV_ID = "ViGoRL/SynthSpatial-v0"


def is_val(sample_id: str) -> bool:
    """The split rule written out independently: first 8 hex digits of sha256 / 2**32 < 0.05."""
    return int(hashlib.sha256(sample_id.encode()).hexdigest()[:8], 16) / 2**32 < 0.05


def ro(texts, reward, answered=True, final=None):
    return {
        "ephemeral_texts": texts,
        "reward": reward,
        "answered": answered,
        "final_answer": final,
    }


Q = "<image>Is the cube left or right of the sphere?\nA. left\nB. right"
A_TXT = "<think>The red cube (100, 200) is near the left edge.</think>"
B_TXT = "<think>It looks left.</think>\n<answer>A. left</answer>"
C_TXT = "<think>The sphere (300, 210).</think>"
D_TXT = "<think>Compare x of (100, 200) and (300, 210).</think>"


def hand_tree() -> dict:
    """root → A (two rollouts: correct, wrong), B (terminal, two equal correct rollouts),
    C (unanswered wrong + correct) → D (one correct, depth 2)."""
    a = {
        "thought_text": A_TXT,
        "is_terminal": False,
        "value": 0.5,
        "visit_count": 2,
        "rollouts": [
            ro(
                [
                    Q,
                    A_TXT,
                    "<think>The sphere (300, 210) is right of it.</think>",
                    "<answer>left</answer>",
                ],
                1.0,
                final="left",
            ),
            ro(
                [Q, A_TXT, "The cone (50, 60).", "<think>So</think> <answer>B. right</answer>"],
                0.0,
                final="right",
            ),
        ],
        "children": [],
    }
    b = {
        "thought_text": B_TXT,
        "answer": "left",
        "is_terminal": True,
        "value": 1.0,
        "visit_count": 2,
        "rollouts": [ro([Q, B_TXT], 1.0, final="left"), ro([Q, B_TXT], 1.0, final="left")],
        "children": [],
    }
    d = {
        "thought_text": D_TXT,
        "is_terminal": False,
        "value": 1.0,
        "visit_count": 1,
        "rollouts": [ro([Q, C_TXT, D_TXT, "<answer> left </answer>"], 1.0, final="left")],
        "children": [],
    }
    c = {
        "thought_text": C_TXT,
        "is_terminal": False,
        "value": 0.5,
        "visit_count": 3,
        "rollouts": [
            ro(
                [Q, C_TXT, "<think>Hmm (7, 8).</think>", "<think></think>", "More <image>"],
                0.0,
                answered=False,
            ),
            ro([Q, C_TXT, "<ANSWER>left</ANSWER>"], 1.0, final="left"),
        ],
        "children": [d],
    }
    return {
        "thought_text": Q,
        "is_terminal": False,
        "value": 0.7,
        "visit_count": 7,
        "rollouts": [],
        "children": [a, b, c],
    }


A_STEP = "The red cube (100, 200) is near the left edge."
EXPECTED = [
    # node A: direct, then corrected (wrong answer 'right' omitted)
    (
        "direct",
        f"<think>\n{A_STEP} The sphere (300, 210) is right of it.\n</think>\n<answer> left </answer>",
    ),
    (
        "corrected",
        f"<think>\n{A_STEP} The cone (50, 60). So\n{BT}\n{A_STEP} The sphere (300, 210) is right of "
        "it.\n</think>\n<answer> left </answer>",
    ),
    # node B: the terminal's text before <answer> is a step; answer minus the option letter;
    # its two identical rollouts give one chain (exact de-dup)
    ("direct", "<think>\nIt looks left.\n</think>\n<answer> left </answer>"),
    # node C: an unanswered rollout keeps every element as a step (tags removed, empties dropped)
    ("direct", "<think>\nThe sphere (300, 210).\n</think>\n<answer> left </answer>"),
    (
        "corrected",
        f"<think>\nThe sphere (300, 210). Hmm (7, 8). More\n{BT}\nThe sphere (300, 210).\n</think>\n"
        "<answer> left </answer>",
    ),
    # node D (depth 2)
    (
        "direct",
        "<think>\nThe sphere (300, 210). Compare x of (100, 200) and (300, 210).\n</think>\n"
        "<answer> left </answer>",
    ),
]


def test_rollout_steps_rules():
    assert rollout_steps(ro([Q, "<think>a (1, 2)</think>", "b <answer> C. x </answer>"], 1)) == (
        ["a (1, 2)", "b"],
        "x",
    )
    # unanswered: every element is a step, no answer
    assert rollout_steps(ro([Q, "a", "<think>b</think>"], 0, answered=False)) == (["a", "b"], None)
    # no `answered` flag (upstream): the last element minus answer tags is the answer
    r = {"ephemeral_texts": [Q, "<think>a</think>", "left"], "reward": 1.0}
    assert rollout_steps(r) == (["a"], "left")
    # ... only the answer tags go (an upstream rollout that ran out of steps ends on a thought)
    r = {"ephemeral_texts": [Q, "a", "<think>b (1, 2)</think></answer>"], "reward": 0.0}
    assert rollout_steps(r) == (["a"], "<think>b (1, 2)</think>")
    # a question without <image> gets it prepended (as the env's questions have it)
    from vigorl_agents.search.linearize import _question

    assert _question({"id": "x", "question": "Where?"}) == "<image>Where?"
    assert _question({"id": "x", "question": "<image>a<image>b"}) == "<image>ab"


def test_hand_tree_exact_chains():
    chains = linearize_sample("s", hand_tree())
    assert [(c.kind, c.text) for c in chains] == EXPECTED
    assert [c.depth for c in chains] == [1, 1, 1, 1, 1, 2]


def test_cap_is_the_seeded_sample():
    # 12 distinct correct rollouts at the root → 12 direct chains; cap 5
    root = {
        "thought_text": Q,
        "value": 1.0,
        "rollouts": [
            ro([Q, f"step {i} ({i}, {i})", "<answer>left</answer>"], 1.0) for i in range(12)
        ],
        "children": [],
    }
    full = [c.text for c in linearize_sample("cap-id", root)]
    assert full == [
        f"<think>\nstep {i} ({i}, {i})\n</think>\n<answer> left </answer>" for i in range(12)
    ]
    capped = [c.text for c in linearize_sample("cap-id", root, max_chains=5)]
    assert capped == random.Random("42:cap-id").sample(full, 5)
    assert capped != full[:5]
    assert [c.text for c in linearize_sample("cap-id", root, max_chains=12)] == full


def tree_record(sample_id: str, tree: dict, env_id: str = ENV_ID, **kw) -> dict:
    env = gym.make(env_id)
    obs, info = env.reset(options={"sample_id": sample_id})
    return {
        "id": sample_id,
        "env_id": env_id,
        "split": "train",
        "question": obs["text"],
        "image": "procedural",
        "frame": info["frame"],
        "true_answer": "left",
        "tree": tree,
        **kw,
    }


def ids_by_split() -> tuple[str, str]:
    ids = [f"SynthSpatial-train-0-{i}" for i in range(200)]
    val = next(i for i in ids if is_val(i))
    train = next(i for i in ids if not is_val(i))
    return train, val


def test_cli_writes_records_frames_split_and_ratio(tmp_path, capsys):
    train_id, val_id = ids_by_split()
    zero = {"thought_text": Q, "value": 0.0, "rollouts": [], "children": []}
    trees = tmp_path / "trees.jsonl"
    lines = [
        tree_record(train_id, hand_tree()),
        {"id": "SynthSpatial-train-0-999", "error": "timeout", "traceback": "..."},
        tree_record(val_id, hand_tree()),
        tree_record("SynthSpatial-train-0-5", zero),
        # another family (visual search): skipped by --domain spatial
        tree_record("SynthSearch-train-0-1", hand_tree(), env_id="ViGoRL/SynthSearch-v0"),
    ]
    trees.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out" / "chains.jsonl"
    assert (
        main(
            [
                str(trees),
                str(out),
                "--domain",
                "spatial",
                "--sharegpt",
                str(tmp_path / "out" / "chains.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "root-correct ratio 0.667 (2/3)" in printed
    assert "1 error-only ids" in printed
    assert "1 trees of other domains skipped" in printed
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 2 * len(EXPECTED)
    for k, (kind, text) in enumerate(EXPECTED):
        for sid, split in ((train_id, "train"), (val_id, "val")):
            r = next(r for r in recs if r["id"] == f"{sid}:{k}")
            assert (r["kind"], r["messages"][2]["content"], r["split"]) == (kind, text, split)
            assert r["messages"][0] == {
                "role": "system",
                "content": load_prompt("spatial_grounded"),
            }
            assert r["messages"][1]["content"].startswith("<image>")
            assert r["env_id"] == ENV_ID and r["gt_answer"] == "left"
    # the frame PNG is the env's model frame for that sample
    env = gym.make(ENV_ID)
    obs, info = env.reset(options={"sample_id": val_id})
    r = next(r for r in recs if r["sample_id"] == val_id)
    assert r["frame"] == info["frame"]
    saved = np.array(Image.open(out.parent / r["images"][0]))
    assert np.array_equal(saved, obs["image"])
    # the JSONL and the two sharegpt split files load with the SFT loader
    loaded = load_sft_file(out, data_root=out.parent)
    assert [x.id for x in loaded] == [r["id"] for r in recs]
    for split in ("train", "val"):
        loaded = load_sft_file(tmp_path / "out" / f"chains_{split}.json", data_root=out.parent)
        assert [x.id for x in loaded] == [r["id"] for r in recs if r["split"] == split]
        assert [x.messages for x in loaded] == [r["messages"] for r in recs if r["split"] == split]
    info_json = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info_json["chains_train"]["file_name"] == "chains_train.json"
    assert info_json["chains_val"]["file_name"] == "chains_val.json"


def test_visual_search_uses_the_single_turn_qa_prompt():
    assert system_prompt_of("visual_search").startswith(
        "You are an assistant answering a visual question by reasoning through image regions."
    )
    assert system_prompt_of("web_grounding") == load_prompt("web_grounding_grounded")


def upstream_line(question: str, answer: str) -> dict:
    """Upstream's record: no id, no env, terminal nodes hold only the answer text, rollouts
    without `answered` (their terminal rollout's last text is the bare answer)."""
    step = "<think>The button at (40, 50) reads Save.</think>"
    return {
        "question": question,
        "image": "web_grounding/images/shot.png",
        "true_answer": "(30, 40, 60, 70)",
        "system_prompt": "mcts prompt",
        "global_search_time": 1.5,
        "tree": {
            "thought_text": question,
            "is_terminal": False,
            "value": 0.5,
            "visit_count": 2,
            "rollouts": [],
            "used_coords": [],
            "children": [
                {
                    "thought_text": step,
                    "is_terminal": False,
                    "value": 0.5,
                    "visit_count": 2,
                    "used_coords": [[40, 50]],
                    "rollouts": [
                        {
                            "final_answer": answer,
                            "reward": 1.0,
                            "ephemeral_texts": [question, step, answer],
                            "ephemeral_depth": 2,
                            "depth": 0,
                        },
                        {
                            "final_answer": "(5, 5)",
                            "reward": 0.0,
                            "ephemeral_texts": [
                                question,
                                step,
                                "<think>Or (5, 5).</think>",
                                "(5, 5)",
                            ],
                        },
                    ],
                    "children": [
                        {
                            "thought_text": answer,
                            "is_terminal": True,
                            "value": 1.0,
                            "visit_count": 1,
                            "used_coords": [[40, 50]],
                            "children": [],
                            "rollouts": [
                                {
                                    "final_answer": answer,
                                    "reward": 1.0,
                                    "ephemeral_texts": [question, step, answer],
                                }
                            ],
                        },
                    ],
                }
            ],
        },
    }


def test_upstream_trees_several_lines_and_a_corrupt_line(tmp_path, capsys):
    f = tmp_path / "upstream_run.jsonl"
    good1 = json.dumps(upstream_line("<image>Click Save", "(45, 52)"))
    good2 = json.dumps(upstream_line("Click Open<image>", "(41, 51)"))
    f.write_text(good1 + "\n" + '{"tree": {"thought_text": "x", \n' + good2 + "\n")
    read = read_tree_file(f)
    assert [t["id"] for t in read.trees] == ["upstream_run:0", "upstream_run:2"]
    assert len(read.bad_lines) == 1
    assert read.bad_lines[0].startswith(f"{f}, line 2: not a JSON object")
    out = tmp_path / "o.jsonl"
    assert main([str(f), str(out), "--domain", "web_grounding"]) == 0
    cap = capsys.readouterr()
    assert f"unreadable: {f}, line 2: " in cap.err
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    step = "The button at (40, 50) reads Save."
    assert [(r["id"], r["kind"], r["messages"][2]["content"]) for r in recs] == [
        ("upstream_run:0:0", "direct", f"<think>\n{step}\n</think>\n<answer> (45, 52) </answer>"),
        (
            "upstream_run:0:1",
            "corrected",
            f"<think>\n{step} Or (5, 5).\n{BT}\n{step}\n</think>\n<answer> (45, 52) </answer>",
        ),
        ("upstream_run:2:0", "direct", f"<think>\n{step}\n</think>\n<answer> (41, 51) </answer>"),
        (
            "upstream_run:2:1",
            "corrected",
            f"<think>\n{step} Or (5, 5).\n{BT}\n{step}\n</think>\n<answer> (41, 51) </answer>",
        ),
    ]
    # the terminal child's rollout equals the sibling's direct chain: de-duplicated
    assert recs[0]["images"] == ["web_grounding/images/shot.png"]
    assert recs[2]["messages"][1]["content"] == "Click Open<image>"
    assert recs[0]["gt_answer"] == "(30, 40, 60, 70)"
    assert recs[0]["messages"][0]["content"] == load_prompt("web_grounding_grounded")


def test_cli_contract_as_a_module(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps(upstream_line("<image>Click Save", "(45, 52)")) + "\n")
    out = tmp_path / "o.jsonl"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "vigorl_agents.search.linearize",
            str(f),
            str(out),
            "--domain",
            "web_grounding",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 2
    assert "root-correct ratio 1.000 (1/1)" in r.stdout


@pytest.mark.parametrize("bad", ["[1, 2]", '{"id": "x", "tree": 5}', '{"id": "y"}'])
def test_bad_lines_named_rest_read(tmp_path, bad):
    f = tmp_path / "t.jsonl"
    good = json.dumps({"id": "a", "tree": {"thought_text": "q", "rollouts": []}})
    f.write_text(bad + "\n" + good + "\n" + '{"id": "torn", "tr')
    read = read_tree_file(f)
    assert [t["id"] for t in read.trees] == ["a"]
    assert len(read.bad_lines) == 1 and read.bad_lines[0].startswith(f"{f}, line 1: ")


def test_upstream_trees_to_model_frame_chains(tmp_path, monkeypatch):
    """Upstream trees → `--sharegpt` split files → the upstream importer: records with model-frame
    images and points moved from the teacher's frame, the split and ids kept."""
    from vigorl_agents.train.upstream import main as import_main

    root = tmp_path / "data"
    (root / "web_grounding" / "images").mkdir(parents=True)
    Image.new("RGB", (3840, 2160), (200, 30, 30)).save(root / "web_grounding/images/shot.png")
    monkeypatch.setenv("DATA_ROOT", str(root))
    f = tmp_path / "up.jsonl"
    f.write_text(json.dumps(upstream_line("<image>Click Save", "(45, 52)")) + "\n")
    out = tmp_path / "st" / "chains.jsonl"
    assert (
        main(
            [
                str(f),
                str(out),
                "--domain",
                "web_grounding",
                "--sharegpt",
                str(out.with_suffix(".json")),
            ]
        )
        == 0
    )
    split = "val" if is_val("up:0") else "train"
    imported = tmp_path / "st" / f"model_{split}.jsonl"
    src = tmp_path / "st" / f"chains_{split}.json"
    assert import_main([str(src), str(imported), "--domain", "web_grounding"]) == 0
    recs = [json.loads(x) for x in imported.read_text().splitlines()]
    assert [(r["id"], r["sample_id"]) for r in recs] == [("up:0:0", "up:0"), ("up:0:1", "up:0")]
    assert {r["split"] for r in recs} == {split}
    # 3840x2160: teacher frame 3836x2156 (m 4096, M 12,960,000), model frame 2716x1512: (40, 50) → (28, 35)
    assert recs[0]["frame"]["model_size"] == [2716, 1512]
    assert recs[0]["messages"][2]["content"] == (
        "<think>\nThe button at (28, 35) reads Save.\n</think>\n<answer> (32, 36) </answer>"
    )
    loaded = load_sft_file(imported, data_root=root)
    assert Image.open(loaded[0].images[0]).size == (2716, 1512)
    # and on to multi-turn dialogs, cropped from the imported model frame (web grounding: dot, 392)
    from vigorl_agents.search.multiturn import convert_records

    mt = convert_records(recs, domain="web_grounding", out_dir=tmp_path / "mt")
    # the corrected chain: (28, 35), then (5, 5) → (4, 4); the repeat of (28, 35) makes no call
    assert [m["meta"]["tool_calls"] for m in mt] == [[[28, 35]], [[28, 35], [4, 4]]]
    assert mt[0]["messages"][-1]["content"].endswith("<answer> (32, 36) </answer>")
    assert Image.open(tmp_path / "mt" / mt[0]["images"][1]).size == (392, 392)

"""Searching many samples: real procedural envs, the scripted teacher, the append-only tree file,
resume after a SIGKILL, error lines, time budget, shards, determinism."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vigorl_agents.jsonl import read_jsonl
from vigorl_agents.search import MCTSConfig
from vigorl_agents.search.run import RunConfig, make_env, plan, read_trees, run_search, shard_of
from vigorl_agents.search.teacher import ScriptedTeacher

ENVS = ("ViGoRL/SynthSpatial-v0", "ViGoRL/SynthSearch-v0")
SMALL = MCTSConfig(n_simulations=4, max_depth=6, rollout_max_steps=3)


def _cfg(**kw):
    base = {"env_ids": ENVS, "n_samples": 3, "mcts": SMALL, "max_in_flight": 4}
    return RunConfig(**{**base, **kw})


def _teacher(cfg):
    return ScriptedTeacher.for_envs([make_env(e, cfg) for e in cfg.env_ids])


def _trees(path):
    trees, _ = read_trees(path)
    return {k: v["tree"] for k, v in trees.items()}


def test_tree_lines_have_the_record_fields_and_runs_are_deterministic(tmp_path):
    cfg = _cfg()
    s1 = asyncio.run(run_search(_teacher(cfg), cfg, tmp_path / "a.jsonl"))
    s2 = asyncio.run(run_search(_teacher(cfg), cfg, tmp_path / "b.jsonl"))
    assert s1.written_trees == s2.written_trees == 6 and s1.written_errors == 0
    assert _trees(tmp_path / "a.jsonl") == _trees(tmp_path / "b.jsonl")
    rec = next(r for _, r in read_jsonl(tmp_path / "a.jsonl"))
    for key in (
        "id", "env_id", "split", "question", "image", "frame", "true_answer", "system_prompt",
        "k_thoughts", "tree", "global_search_time", "n_llm_calls", "config", "vigorl_version",
    ):  # fmt: skip
        assert key in rec
    assert rec["image"] == "procedural" and rec["split"] == "train"
    assert rec["system_prompt"].endswith(
        f"at least {rec['k_thoughts']} thoughts before providing the final answer."
    )
    tree = rec["tree"]
    assert tree["thought_text"] == rec["question"] and tree["depth"] == 0
    assert tree["visit_count"] == sum(c["visit_count"] for c in tree["children"])
    # a second call on the same file finds everything done
    s3 = asyncio.run(run_search(_teacher(cfg), cfg, tmp_path / "a.jsonl"))
    assert s3.skipped == 6 and s3.written_trees == 0


def test_trees_have_correct_and_wrong_branches(tmp_path):
    cfg = _cfg(n_samples=4, mcts=MCTSConfig(n_simulations=8))
    asyncio.run(run_search(_teacher(cfg), cfg, tmp_path / "t.jsonl"))

    def rewards(node):
        yield from (r["reward"] for r in node["rollouts"])
        for c in node["children"]:
            yield from rewards(c)

    for tree in _trees(tmp_path / "t.jsonl").values():
        rs = list(rewards(tree))
        assert 0 < sum(r >= 1 for r in rs) < len(rs)


KILL_SCRIPT = """
import asyncio, sys, time
from vigorl_agents.search import MCTSConfig
from vigorl_agents.search.run import RunConfig, make_env, run_search
from vigorl_agents.search.teacher import ScriptedTeacher

class Slow(ScriptedTeacher):
    async def generate(self, conversations, params):
        await asyncio.sleep(0.004)
        return await super().generate(conversations, params)

cfg = RunConfig(env_ids=%r, n_samples=4, mcts=MCTSConfig(n_simulations=4, max_depth=6,
                rollout_max_steps=3), max_in_flight=2)
t = Slow.for_envs([make_env(e, cfg) for e in cfg.env_ids])
asyncio.run(run_search(t, cfg, sys.argv[1]))
"""


@pytest.mark.timeout(300)
def test_killed_run_resumes_to_the_same_finished_set(tmp_path):
    cfg = _cfg(n_samples=4, max_in_flight=2)
    full = tmp_path / "full.jsonl"
    asyncio.run(run_search(_teacher(cfg), cfg, full))
    killed = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT % (ENVS,), str(killed)],
        env={**os.environ},
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if killed.exists() and killed.read_bytes().count(b"\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = set(_trees(killed))
    assert 2 <= len(done_before) < 8, "the kill must land mid-run"
    with killed.open("ab") as f:  # a write torn by the kill
        f.write(b'{"id": "SynthSpatial-train-0-3", "tree": {"thou')
    summary = asyncio.run(run_search(_teacher(cfg), cfg, killed))
    assert summary.skipped == len(done_before)
    assert summary.written_trees == 8 - len(done_before)
    assert _trees(killed) == _trees(full)
    lines = [r["id"] for _, r in read_jsonl(killed)]
    assert sorted(lines) == sorted(set(lines))  # each id exactly once


class FailingFor(ScriptedTeacher):
    """The scripted teacher, except that calls about `bad` fail (a server error)."""

    bad: str = ""

    async def generate(self, conversations, params):
        _, ep, _ = self._episodes[id(conversations[0].messages[1].images[0])]
        if ep.sample.sample_id == self.bad:
            raise RuntimeError("server died")
        return await super().generate(conversations, params)


def test_a_failing_sample_is_an_error_line_and_is_retried_on_resume(tmp_path):
    cfg = _cfg(env_ids=ENVS[:1])
    teacher = FailingFor.for_envs([make_env(ENVS[0], cfg)])
    teacher.bad = "SynthSpatial-train-0-1"
    out = tmp_path / "t.jsonl"
    s = asyncio.run(run_search(teacher, cfg, out))
    assert s.written_trees == 2 and s.written_errors == 1
    trees, errors = read_trees(out)
    assert set(errors) == {"SynthSpatial-train-0-1"}
    err = errors["SynthSpatial-train-0-1"]
    assert err["error"] == "RuntimeError: server died" and "Traceback" in err["traceback"]
    # no retry: skipped
    s = asyncio.run(run_search(teacher, RunConfig(**{**cfg.__dict__, "retry_errors": False}), out))
    assert s.skipped == 3 and s.written_trees == 0
    # retry with a working teacher
    s = asyncio.run(run_search(_teacher(cfg), cfg, out))
    assert s.written_trees == 1 and s.skipped == 2
    trees, errors = read_trees(out)
    assert len(trees) == 3 and errors == {}


def test_sample_over_its_time_budget_is_an_error_line(tmp_path):
    class Stalled(ScriptedTeacher):
        async def generate(self, conversations, params):
            await asyncio.sleep(5)

    cfg = _cfg(env_ids=ENVS[:1], n_samples=2, mcts=MCTSConfig(sample_timeout_s=0.2))
    teacher = Stalled.for_envs([make_env(ENVS[0], cfg)])
    t0 = time.monotonic()
    s = asyncio.run(run_search(teacher, cfg, tmp_path / "t.jsonl"))
    assert time.monotonic() - t0 < 4
    assert s.written_errors == 2
    _, errors = read_trees(tmp_path / "t.jsonl")
    assert all("sample_timeout_s=0.2" in e["error"] for e in errors.values())


def test_shards_are_disjoint_and_cover_the_plan():
    cfg = _cfg(n_samples=20)
    envs = {e: make_env(e, cfg) for e in ENVS}
    full = plan(cfg, envs)
    parts = [plan(RunConfig(**{**cfg.__dict__, "shards": 3, "shard": i}), envs) for i in range(3)]
    assert sorted(x for p in parts for x in p) == sorted(full) and len(full) == 40
    assert all(len(p) > 0 for p in parts)
    with pytest.raises(ValueError, match="unlimited; give n_samples"):
        plan(RunConfig(**{**cfg.__dict__, "n_samples": None}), envs)
    # the documented hash: sha256 of the id, first 16 hex digits, mod shards
    assert shard_of("abc", 7) == int("ba7816bf8f01cfea", 16) % 7


def test_upstream_style_tree_file_reads(tmp_path):
    """An upstream tree line (no answered flag, string coordinates, answer-only terminal) reads."""
    from vigorl_agents.search.tree import Node

    path = tmp_path / "up.jsonl"
    rec = {
        "id": 5,
        "tree": {
            "thought_text": "Q",
            "value": 0.5,
            "visit_count": 2,
            "used_coords": [],
            "children": [
                {"thought_text": "<think> x (3, 4) </think>", "used_coords": ["(3, 4)"],
                 "rollouts": [{"final_answer": "a", "reward": 1.0}]},
                {"thought_text": "b", "is_terminal": True, "answer": "b"},
            ],
        },
    }  # fmt: skip
    path.write_text(json.dumps(rec) + "\n" + json.dumps(rec | {"id": 6}) + "\n")
    trees, _ = read_trees(path)
    assert set(trees) == {"5", "6"}
    root = Node.from_dict(trees["5"]["tree"])
    assert root.children[0].used_coords == [(3, 4)] and root.children[0].depth == 1
    assert root.children[1].is_terminal and root.children[1].answer == "b"


def test_pool_envs_share_one_dataset_object():
    from vigorl_agents.search.run import EnvMaker

    maker = EnvMaker(_cfg())
    first, second, third = (maker(ENVS[0]) for _ in range(3))
    assert second.unwrapped._dataset is third.unwrapped._dataset
    assert first.unwrapped._dataset is not second.unwrapped._dataset
    # the same samples and frames whichever env of the pool runs a sample
    _, a = first.reset(options={"index": 5})
    _, b = third.reset(options={"index": 5})
    assert a["sample_id"] == b["sample_id"] and a["frame"] == b["frame"]
    assert first.unwrapped.frame_image.tobytes() == third.unwrapped.frame_image.tobytes()


def test_stop_after_takes_no_new_samples(tmp_path):
    cfg = _cfg(env_ids=ENVS[:1], n_samples=5, max_in_flight=1)
    s = asyncio.run(run_search(_teacher(cfg), cfg, tmp_path / "t.jsonl", stop_after=2))
    assert s.written_trees == 2
    s = asyncio.run(run_search(_teacher(cfg), cfg, tmp_path / "t.jsonl"))
    assert s.skipped == 2 and s.written_trees == 3

"""Rollout loop and evaluation with scripted policies (no model): batching, seeds, forced prefix,
resume after a failure, avg@k aggregation."""

from __future__ import annotations

import asyncio
import json

import pytest

from vigorl_agents.baselines import FullViewGuess, RandomZoom
from vigorl_agents.eval import EvalConfig, evaluate
from vigorl_agents.policy import Completion, SamplingParams, params_per_conversation
from vigorl_agents.rollout import EpisodeSpec, make_env_factory, run_episodes
from vigorl_env import protocol


class Recording(FullViewGuess):
    """A baseline that records batch sizes and params; optionally fails after `fail_after` calls."""

    def __init__(self, answer_kind, fail_after=None):
        super().__init__(answer_kind)
        self.batches, self.params, self.calls, self.fail_after = [], [], 0, fail_after

    async def generate(self, conversations, params):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("server went away")
        self.batches.append(len(conversations))
        self.params.extend(params_per_conversation(params, len(conversations)))
        await asyncio.sleep(0.001)
        return await super().generate(conversations, params)


class ZoomFourTimes(FullViewGuess):
    """Zooms until the env forces the final answer, then answers 'red'."""

    async def generate(self, conversations, params):
        out = []
        for conv, p in zip(
            conversations, params_per_conversation(params, len(conversations)), strict=True
        ):
            turns = sum(m.role == "assistant" for m in conv.messages)
            if conv.assistant_prefix:
                out.append([Completion(" red </answer>", "stop", "</answer>")])
                self.forced_params = p
            else:
                x, y = 100 + 150 * turns, 120
                out.append(
                    [
                        Completion(
                            f"<think>Look ({x}, {y}).</think>\n" + protocol.format_tool_call(x, y),
                            "stop",
                        )
                    ]
                )
        return out


def _run(policy, env_id, specs, params, **kw):
    return asyncio.run(run_episodes(make_env_factory(env_id, size=20), policy, specs, params, **kw))


def test_batches_form_and_results_do_not_depend_on_scheduling():
    specs = [EpisodeSpec(i) for i in range(12)]
    params = SamplingParams(seed=7)
    wide = Recording("option_text")
    a = _run(wide, "ViGoRL/SynthSpatial-v0", specs, params, max_in_flight=12)
    narrow = Recording("option_text")
    b = _run(narrow, "ViGoRL/SynthSpatial-v0", specs, params, max_in_flight=1)
    assert max(wide.batches) > 1 and max(narrow.batches) == 1
    assert [t.transcript for t in a] == [t.transcript for t in b]
    assert [t.sample_id for t in a] == [f"SynthSpatial-train-0-{i}" for i in range(12)]
    # every request has its own seed, none is the base seed reused
    seeds = [p.seed for p in wide.params]
    assert len(set(seeds)) == len(seeds) and 7 not in seeds


def test_forced_prefix_is_continued_greedily_and_recorded():
    policy = ZoomFourTimes("option_text")
    (traj,) = _run(
        policy, "ViGoRL/SynthSearch-v0", [EpisodeSpec(3)], SamplingParams(temperature=1.0, seed=1)
    )
    assert len(traj.turns) == 5 and [t.crop is not None for t in traj.turns] == [True] * 4 + [False]
    assert (
        traj.turns[-1].prefix == protocol.FORCED_PREFIX and traj.turns[-1].text == " red </answer>"
    )
    assert policy.forced_params.temperature == 0.0
    assert traj.end_reason == "answer"
    assert traj.components["format"] == pytest.approx(1.6)
    assert traj.transcript.endswith(protocol.FORCED_PREFIX + " red </answer>")
    # images by reference: crops are boxes, no pixels in the record
    assert "crop" in json.dumps(traj.to_dict()) and "array" not in json.dumps(traj.to_dict())


def test_eval_resumes_after_a_failure_and_keeps_results(tmp_path):
    cfg = EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=10, max_in_flight=2, max_batch=2)
    flaky = Recording("option_text", fail_after=3)
    with pytest.raises(RuntimeError, match="server went away"):
        asyncio.run(evaluate(flaky, cfg, tmp_path, policy_name="p"))
    kept = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert 1 <= len(kept) < 10
    good = Recording("option_text")
    summary = asyncio.run(evaluate(good, cfg, tmp_path, policy_name="p"))
    assert sum(good.batches) == 10 - len(kept)  # only the missing samples ran
    (row,) = summary["rows"]
    assert row["n"] == 10 and row["split"] == "test"
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    scores = [r["score"] for r in lines]
    assert row["accuracy"]["mean"] == pytest.approx(100 * sum(scores) / 10)
    assert (tmp_path / "report.md").read_text().count("ViGoRL/SynthSpatial-v0") == 1
    assert (tmp_path / "accuracy.png").exists()


def test_avg_at_k_and_multi_turn_defaults(tmp_path):
    cfg = EvalConfig(env_ids=("ViGoRL/SynthSearch-v0",), limit=4, k=3, env_kwargs={"max_images": 3})
    policy = RandomZoom("option_text")
    summary = asyncio.run(evaluate(policy, cfg, tmp_path, policy_name="rz"))
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {r["episode"] for r in lines} == {0, 1, 2}
    per_sample = {}
    for r in lines:
        per_sample.setdefault(r["sample_id"], []).append(r["score"])
    expected = 100 * sum(sum(v) / 3 for v in per_sample.values()) / 4
    assert summary["rows"][0]["accuracy"]["mean"] == pytest.approx(expected)
    assert cfg.sampling("multi_turn").top_p == 0.99 and cfg.sampling("single_turn").top_p == 1.0

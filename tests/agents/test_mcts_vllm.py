"""The search against a live vLLM server of the tiny Qwen2.5-VL: the network path (every call a
real request with its own seed, regex-constrained so each reply is a valid step)."""

from __future__ import annotations

import asyncio
import re

import pytest

from vigorl_agents.search import MCTSConfig
from vigorl_agents.search.run import RunConfig, read_trees, run_search

try:
    from vllm_fixtures import TINY_SERVED_NAME
except ImportError:  # tests/agents imported as a package
    from .vllm_fixtures import TINY_SERVED_NAME

STEP = r"(<think> [a-z ]{1,20} \([1-9][0-9]{0,2}, [1-9][0-9]{0,2}\)\. </think>)|(<answer> (left|right) </answer>)"


def _nodes(node):
    yield node
    for c in node["children"]:
        yield from _nodes(c)


@pytest.mark.vllm
def test_search_against_a_live_server(vllm_server, tmp_path):
    from vigorl_agents.backends.vllm_server import VLLMServerPolicy

    cfg = RunConfig(
        env_ids=("ViGoRL/SynthSpatial-v0",),
        n_samples=2,
        max_in_flight=2,
        env_kwargs={"max_pixels": 64 * 28 * 28},
        mcts=MCTSConfig(n_simulations=2, rollout_max_steps=2, max_tokens=40, regex=STEP),
    )

    async def go():
        policy = VLLMServerPolicy([vllm_server.base_url], TINY_SERVED_NAME, max_retries=2)
        try:
            return await run_search(policy, cfg, tmp_path / "trees.jsonl")
        finally:
            await policy.aclose()

    summary = asyncio.run(go())
    assert summary.written_trees == 2 and summary.written_errors == 0
    trees, errors = read_trees(tmp_path / "trees.jsonl")
    assert errors == {}
    for rec in trees.values():
        assert rec["search_stats"]["n_unparsable"] == 0
        assert rec["n_llm_calls"] >= 3
        nodes = list(_nodes(rec["tree"]))[1:]
        assert nodes and all(re.fullmatch(STEP, n["thought_text"].strip()) for n in nodes)
        assert rec["tree"]["visit_count"] > 0

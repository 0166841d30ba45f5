"""Token-out from the vLLM OpenAI server (text-in): the prompt ids it reports are exactly what the
chat template + image processor give for the same conversation, and a keep_tokens rollout over
it records them per turn so that its token stream can be built (live tiny Qwen2.5-VL server,
vllm_fixtures.py)."""

from __future__ import annotations

import asyncio

import pytest

from vigorl_agents.policy import SamplingParams
from vigorl_env.protocol import FORCED_PREFIX

try:
    from test_tokens import _conversation, _text_in_ids
    from vllm_fixtures import TINY_SERVED_NAME
except ImportError:  # tests/agents imported as a package
    from .test_tokens import _conversation, _text_in_ids
    from .vllm_fixtures import TINY_SERVED_NAME


@pytest.fixture(scope="module")
def processor(tiny_qwen25_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_qwen25_dir)


@pytest.mark.vllm
def test_the_server_reports_the_prompt_ids_it_fed(vllm_server, processor):
    from vigorl_agents.backends.vllm_server import VLLMServerPolicy
    from vigorl_agents.rollout import EpisodeSpec, make_env_factory, run_episodes
    from vigorl_agents.tokens import TokenBuilder, tokenize_trajectory

    conv = _conversation(2, FORCED_PREFIX)  # three images, the forced prefix continued
    params = SamplingParams(temperature=1.0, max_tokens=6, stop=(), seed=1, logprobs=True)
    kw = {"mode": "multi_turn", "max_pixels": 64 * 28 * 28, "crop_size": 112, "max_images": 3,
          "split": "test", "size": 4}  # fmt: skip

    async def go():
        policy = VLLMServerPolicy([vllm_server.base_url], TINY_SERVED_NAME, max_retries=2)
        try:
            (c,) = (await policy.generate([conv], params))[0]
            trajs = await run_episodes(
                make_env_factory("ViGoRL/SynthSearch-v0", **kw),
                policy,
                [EpisodeSpec(0), EpisodeSpec(1)],
                SamplingParams(temperature=1.0, max_tokens=40, seed=2),
                keep_tokens=True,
            )
            return c, trajs
        finally:
            await policy.aclose()

    c, trajs = asyncio.run(go())
    assert list(c.prompt_token_ids) == _text_in_ids(processor, conv)  # pads expanded, prefix in
    assert c.prompt_tokens == len(c.prompt_token_ids)
    assert len(c.token_ids) == len(c.logprobs) == 6
    builder = TokenBuilder.from_processor(processor)
    for traj in trajs:
        assert all(t.prompt_token_ids for t in traj.turns)
        s = tokenize_trajectory(traj, builder)
        assert s.prompt_ids == traj.turns[0].prompt_token_ids
        assert 0 <= s.prompt_mismatch <= len(traj.turns) - 1

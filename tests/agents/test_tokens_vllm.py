"""Token streams of real multi-turn rollouts over the in-process vLLM CPU engine (tiny Qwen2.5-VL).

The engine runs in a child process (this file is also the probe script), as in
test_vllm_engine.py: an in-process engine pins OpenMP threads and reseeds global RNGs. The child
runs every scenario on one engine and writes the trajectories as JSON; the tests rebuild each
trajectory's stream in the parent with the processor's `TokenBuilder` and check it against what
the engine reported it was fed. Sampling is regex-constrained so the random model makes valid
tool calls (two crops, then the forced final answer at the image budget of 3).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from vllm_fixtures import run_vllm_child

ENV = "ViGoRL/SynthSearch-v0"
KW = {"mode": "multi_turn", "max_pixels": 64 * 28 * 28, "crop_size": 112, "max_images": 3,
      "split": "test", "size": 8}  # fmt: skip
TOOL = (
    r'<think> [a-z]{2,6} \([1-9][0-9], [1-9][0-9]\) </think>\n<tool_call>\n\{"name": '
    r'"search_coordinate", "arguments": \{"coordinate": \[[1-9][0-9], [1-9][0-9]\]\}\}\n</tool_call>'
)
ANSWER = r" [a-z]{2,6} </answer>"
SINGLE = r"<think> [a-z ]{30,40} </think>\n<answer> [a-z]{2,6} </answer>"
EPISODES = 3


# --------------------------------------------------------------------------- the probe (child)


def _probe(model_dir: str) -> dict:
    import numpy as np

    from vigorl_agents.backends.vllm_engine import VLLMEnginePolicy
    from vigorl_agents.policy import Conversation, Message, SamplingParams
    from vigorl_agents.rollout import EpisodeSpec, TokenBudget, make_env_factory, run_episodes
    from vigorl_env.protocol import FORCED_PREFIX, OBSERVATION_TEXT_NO_DOT

    engine = VLLMEnginePolicy(model_dir, multiprocessing=False, limit_images=5)

    class Recording:
        """The engine, recording whether each request came token-in; `token_input=False` makes
        it a text-in policy (as a vLLM server is)."""

        continuous_batching = True

        def __init__(self, token_input: bool = True) -> None:
            self.model, self.min_pixels, self.max_pixels = engine.model, None, None
            self.supports_token_input = token_input
            self.token_in: list[bool] = []

        async def generate(self, convs, params):
            self.token_in += [c.prompt_token_ids is not None for c in convs]
            return await engine.generate(convs, params)

        async def aclose(self) -> None:
            return None

    params = SamplingParams(temperature=1.0, max_tokens=120, seed=5, logprobs=True, regex=TOOL)
    forced = params.with_(regex=ANSWER)
    specs = [EpisodeSpec(i % 2, episode=i) for i in range(EPISODES)]

    def rollout(env_kwargs=KW, p=params, token_input=True, **kw):
        policy = Recording(token_input)
        trajs = asyncio.run(
            run_episodes(
                make_env_factory(ENV, **env_kwargs), policy, specs, p, forced_params=forced, **kw
            )
        )
        return {"trajs": [t.to_dict() for t in trajs], "token_in": policy.token_in}

    out: dict = {"plain": rollout(keep_tokens=True)}
    out["text_in"] = rollout(keep_tokens=True, token_input=False)

    # token-in = text-in for the same prompt (two crops + the forced prefix: three images)
    rng = np.random.default_rng(0)

    def img(w, h):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    conv = Conversation(
        [
            Message("system", "You are a helpful assistant."),
            Message("user", "<image>\nWhat is left of the mug?", [img(196, 224)]),
            Message("assistant", "<think> mug (40, 50) </think>\n<tool_call>x</tool_call>"),
            Message("user", OBSERVATION_TEXT_NO_DOT, [img(112, 112)]),
            Message("assistant", "<think> closer (20, 30) </think>\n<tool_call>y</tool_call>"),
            Message("user", OBSERVATION_TEXT_NO_DOT, [img(84, 84)]),
        ],
        assistant_prefix=FORCED_PREFIX,
    )
    greedy = SamplingParams(temperature=0, max_tokens=8, stop=(), seed=None, logprobs=True)
    sampled = SamplingParams(n=2, temperature=1.0, max_tokens=8, stop=(), seed=3, logprobs=True)
    (a,), (a2, a3) = asyncio.run(engine.generate([conv, conv], [greedy, sampled]))
    token_conv = Conversation([Message("user", "<image>" * 3, conv.images)],
                              prompt_token_ids=list(a.prompt_token_ids))  # fmt: skip
    (b,), (b2, b3) = asyncio.run(engine.generate([token_conv, token_conv], [greedy, sampled]))
    out["same"] = {
        "prompt": [list(a.prompt_token_ids), list(b.prompt_token_ids)],
        "tokens": [[list(c.token_ids) for c in (a, a2, a3)], [list(c.token_ids) for c in (b, b2, b3)]],
        "logprobs": [[list(c.logprobs) for c in (a, a2, a3)], [list(c.logprobs) for c in (b, b2, b3)]],
    }  # fmt: skip

    # overlong: a turn cap, single-turn (exact budgets: `_exact_budgets`)
    out["cap"] = rollout(
        keep_tokens=True, token_budget=TokenBudget(max_response=10_000, per_turn_cap=12)
    )
    single = {**KW, "mode": "single_turn"}
    out["single_cap"] = rollout(
        single, params.with_(regex=SINGLE), keep_tokens=True,
        token_budget=TokenBudget(max_response=6),
    )  # fmt: skip
    out["engine"] = engine
    return out


def _exact_budgets(model_dir: str, out: dict) -> None:
    """Runs whose budget is the exact stream length of the plain run's episode 0 (fits), one
    less (overlong), and one that cannot fit the first observation."""
    from transformers import AutoProcessor

    from vigorl_agents.rollout import EpisodeSpec, TokenBudget, make_env_factory, run_episodes
    from vigorl_agents.tokens import TokenBuilder, tokenize_trajectory

    builder = TokenBuilder.from_processor(AutoProcessor.from_pretrained(model_dir))
    engine = out.pop("engine")
    plain = _trajectories(out["plain"]["trajs"])
    stream = tokenize_trajectory(plain[0], builder)
    n = len(stream.response_ids)
    first_o = next(b for k, _, b in stream.segments if k == "O")
    from vigorl_agents.policy import SamplingParams

    params = SamplingParams(temperature=1.0, max_tokens=120, seed=5, logprobs=True, regex=TOOL)
    forced = params.with_(regex=ANSWER)
    out["exact"] = {"n": n, "first_o": first_o}
    for name, budget in {"fits": n, "short": n - 1, "no_obs": first_o - 1}.items():
        trajs = asyncio.run(
            run_episodes(
                make_env_factory(ENV, **KW), engine, [EpisodeSpec(0, episode=0)], params,
                forced_params=forced, keep_tokens=True, token_budget=TokenBudget(budget),
                token_builder=builder,
            )
        )  # fmt: skip
        out["exact"][name] = trajs[0].to_dict()
    asyncio.run(engine.aclose())


def _trajectories(dicts: list[dict]):
    from vigorl_agents.rollout import Trajectory, TurnRecord

    return [Trajectory(**{**d, "turns": [TurnRecord(**t) for t in d["turns"]]}) for d in dicts]


# --------------------------------------------------------------------------- the tests (parent)


@pytest.fixture(scope="module")
def results(tiny_qwen25_dir, tmp_path_factory) -> dict:
    result_file = tmp_path_factory.mktemp("tokens_engine") / "results.json"
    run_vllm_child([__file__, str(tiny_qwen25_dir), str(result_file)])
    return json.loads(result_file.read_text())


@pytest.fixture(scope="module")
def builder(tiny_qwen25_dir):
    from transformers import AutoProcessor

    from vigorl_agents.tokens import TokenBuilder

    return TokenBuilder.from_processor(AutoProcessor.from_pretrained(tiny_qwen25_dir))


@pytest.mark.vllm
def test_rollout_stream_is_what_the_engine_was_fed(results, builder):
    """Every turn after the first goes token-in, and the stream rebuilt from the records equals
    the prompt the engine reports for the last turn + that turn's G (+ its E)."""
    from vigorl_agents.tokens import tokenize_trajectory

    trajs = _trajectories(results["plain"]["trajs"])
    assert len(trajs) == EPISODES
    n_turns = [len(t.turns) for t in trajs]
    assert results["plain"]["token_in"].count(False) == EPISODES  # only turn 0 is text-in
    assert len(results["plain"]["token_in"]) == sum(n_turns)
    assert max(n_turns) == 3  # two crops, then the forced answer
    for traj in trajs:
        s = tokenize_trajectory(traj, builder)
        assert s.prompt_mismatch == 0
        last = traj.turns[-1]
        e = builder.end_of_turn(last.token_ids, last.finish_reason)
        assert s.ids == last.prompt_token_ids + last.token_ids + e
        kinds = [k for k, _, _ in s.segments]
        if len(traj.turns) == 3:
            assert kinds == ["G", "E", "O", "G", "E", "O", "F", "G", "E"]
            assert traj.turns[2].prefix and traj.end_reason == "answer"
        assert s.num_images == len(traj.turns)
        assert s.has_logprobs and not s.overlong and set(s.response_mask) == {0, 1}
        assert len(s.response_logprobs) == len(s.response_ids)


@pytest.mark.vllm
def test_token_in_gives_the_text_in_logprobs(results):
    """The same prompt fed as ids (three images, forced prefix) and rendered from messages: the
    same prompt ids back, the same greedy and seeded tokens, the same logprobs."""
    import numpy as np

    same = results["same"]
    text_prompt, token_prompt = same["prompt"]
    assert token_prompt == text_prompt
    assert same["tokens"][0] == same["tokens"][1]
    for a, b in zip(*same["logprobs"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


@pytest.mark.vllm
def test_text_in_turns_that_re_tokenize_differently_are_counted(results, builder):
    """A text-in policy (as the vLLM server is) is fed each turn re-rendered from decoded text:
    the random model's sampled ids are rarely the tokenizer's own split of their text, so the
    prompts it reports differ from the stream (`prompt_mismatch`): what token-in avoids."""
    from vigorl_agents.tokens import tokenize_trajectory

    assert not any(results["text_in"]["token_in"])
    streams = [tokenize_trajectory(t, builder) for t in _trajectories(results["text_in"]["trajs"])]
    assert sum(s.prompt_mismatch for s in streams) > 0
    assert all(s.prompt_mismatch <= len(t["turns"]) - 1
               for s, t in zip(streams, results["text_in"]["trajs"], strict=True))  # fmt: skip


@pytest.mark.vllm
def test_overlong_trajectories_are_finalized_and_masked(results, builder):
    from vigorl_agents.tokens import tokenize_trajectory

    exact = results["exact"]
    fits, short, no_obs = (_trajectories([exact[k]])[0] for k in ("fits", "short", "no_obs"))
    plain = _trajectories(results["plain"]["trajs"])[0]
    # a budget of exactly the stream's length fits: the same episode as without a budget
    assert not fits.overlong and fits.end_reason == plain.end_reason
    assert [t.token_ids for t in fits.turns] == [t.token_ids for t in plain.turns]
    assert len(tokenize_trajectory(fits, builder).response_ids) == exact["n"]
    # one token less: overlong, finalized by the env, every mask value 0, within the budget
    for traj, budget in ((short, exact["n"] - 1), (no_obs, exact["first_o"] - 1)):
        assert traj.overlong and traj.end_reason == "overlong"
        s = tokenize_trajectory(traj, builder)
        assert s.overlong and set(s.response_mask) == {0}
        assert len(s.response_ids) <= budget
        assert traj.components  # the env scored the transcript so far
    # the first observation does not fit: turn 0 is kept, its crop is not in the stream
    assert len(no_obs.turns) == 1 and no_obs.turns[0].observation is None
    assert tokenize_trajectory(no_obs, builder).num_images == 1
    # a per-turn cap the tool call cannot fit in: finish reason length, never sent to the env
    for traj in _trajectories(results["cap"]["trajs"]):
        assert traj.overlong and traj.end_reason == "overlong"
        assert len(traj.turns) == 1 and traj.turns[0].finish_reason == "length"
        assert len(traj.turns[0].token_ids) == 12 and traj.transcript == ""
        assert set(tokenize_trajectory(traj, builder).response_mask) == {0}
    # single-turn: a response cut at max response is overlong too
    for traj in _trajectories(results["single_cap"]["trajs"]):
        assert traj.overlong and traj.end_reason == "overlong"
        # max_tokens = 6 - 1 (one position kept for the end-of-turn token)
        assert len(traj.turns[0].token_ids) == 5 and traj.reward == 0.0
        assert set(tokenize_trajectory(traj, builder).response_mask) == {0}


if __name__ == "__main__":
    try:
        import vllm  # noqa: F401
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(3)
    results = _probe(sys.argv[1])
    _exact_budgets(sys.argv[1], results)
    Path(sys.argv[2]).write_text(json.dumps(results))

"""Multi-turn rollout throughput through a live vLLM server: our loop vs the server's ceiling vs a
sequential turn-by-turn loop like upstream's (targets: ≥ 0.90× the ceiling, ≥ 5× sequential).

Setting: the tiny random Qwen2.5-VL served by a local vLLM (CPU build here); `ViGoRL/SynthSearch-v0`
in multi-turn mode with frames and crops sized to the tiny processor. The model's text is
constrained by a regular expression (vLLM structured outputs) to a think step + a tool call, so each
episode really runs 4 zooms and the forced final answer (5 dependent turns), like a trained model.

- ours: `run_episodes` with all episodes in flight (the real env between turns);
- ceiling: the very same requests (recorded from `ours`), sent all at once by a bare client loop
  with the same concurrency — no env, no dependency between turns: what the server can do;
- sequential: one episode at a time, one turn at a time (upstream's loop), on a subset.

    uv run python -m benchmarks.perf.rollout [--episodes 32] [--out benchmarks/results/rollout.md]
"""

from __future__ import annotations

import asyncio
import copy
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

from benchmarks.machine import machine_name
from benchmarks.report import write_results
from vigorl_agents.backends.launcher import VLLMServer
from vigorl_agents.backends.vllm_server import VLLMServerPolicy
from vigorl_agents.models.load import resolve_model
from vigorl_agents.policy import Conversation, SamplingParams, params_per_conversation
from vigorl_agents.rollout import EpisodeSpec, make_env_factory, run_episodes

TOOL_RE = (
    r"<think>[a-z]{3,8}( [a-z]{2,8}){1,3} \([1-9][0-9], [1-9][0-9]\)\.</think>\n<tool_call>\n"
    r'\{"name": "search_coordinate", "arguments": \{"coordinate": \[[1-9][0-9], [1-9][0-9]\]\}\}\n</tool_call>'
)
ANSWER_RE = r" [a-z]{3,8} </answer>"


@dataclass(frozen=True)
class Args:
    episodes: int = 32
    """Episodes for `ours` (and requests replayed for the ceiling)."""
    sequential_episodes: int = 4
    """Episodes for the sequential loop (it is slow; tokens/s is what is compared)."""
    max_tokens: int = 160
    concurrency: int = 32
    max_num_seqs: int = 32
    """vLLM --max-num-seqs."""
    model: str = "tiny-qwen2.5-vl"
    out: Path | None = None


class Recorder:
    """Wraps a policy and records every request (conversation snapshot + params) it forwards."""

    def __init__(self, policy: VLLMServerPolicy):
        self.policy = policy
        self.requests: list[tuple[Conversation, SamplingParams]] = []
        self.tokens = 0

    async def generate(self, conversations, params):
        ps = params_per_conversation(params, len(conversations))
        for c, p in zip(conversations, ps, strict=True):
            self.requests.append((Conversation(list(c.messages), c.assistant_prefix), p))
        out = await self.policy.generate(conversations, ps)
        self.tokens += sum(len(c.token_ids or ()) for res in out for c in res)
        return out

    async def aclose(self):
        return None


async def ours(
    policy, make_env, n: int, params, forced, concurrency: int
) -> tuple[float, int, list]:
    rec = Recorder(policy)
    t = time.perf_counter()
    trajs = await run_episodes(
        make_env,
        rec,
        [EpisodeSpec(i) for i in range(n)],
        params,
        forced_params=forced,
        max_in_flight=concurrency,
        max_batch=concurrency,
    )
    return time.perf_counter() - t, rec.tokens, rec.requests, trajs


async def ceiling(policy: VLLMServerPolicy, requests, concurrency: int) -> tuple[float, int]:
    """The same requests through a bare client loop: one task per request, bounded concurrency."""
    client = policy._endpoints[0].client
    bodies = [policy.request_body(c, p) for c, p in requests]  # encode images outside the timing
    sem = asyncio.Semaphore(concurrency)

    async def one(body):
        async with sem:
            r = await client.chat.completions.create(**copy.copy(body))
            return (
                sum(len(getattr(ch, "token_ids", None) or []) for ch in r.choices)
                or r.usage.completion_tokens
            )

    t = time.perf_counter()
    counts = await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - t, int(sum(counts))


async def sequential(policy, make_env, n: int, params, forced) -> tuple[float, int]:
    rec = Recorder(policy)
    t = time.perf_counter()
    await run_episodes(
        make_env,
        rec,
        [EpisodeSpec(i) for i in range(n)],
        params,
        forced_params=forced,
        max_in_flight=1,
        max_batch=1,
    )
    return time.perf_counter() - t, rec.tokens


def main(args: Args) -> dict:
    env_kwargs = {
        "mode": "multi_turn",
        "max_pixels": 64 * 28 * 28,
        "crop_size": 224,
        "split": "test",
        "size": max(args.episodes, args.sequential_episodes),
    }
    make_env = make_env_factory("ViGoRL/SynthSearch-v0", **env_kwargs)
    params = SamplingParams(
        temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=0, regex=TOOL_RE
    )
    forced = SamplingParams(temperature=0.0, max_tokens=16, seed=0, regex=ANSWER_RE)
    with VLLMServer(
        resolve_model(args.model), served_model_name="tiny", max_num_seqs=args.max_num_seqs
    ) as server:
        policy = VLLMServerPolicy([server.base_url], "tiny", max_concurrency=args.concurrency)

        async def run_all():
            # warm-up: compile structured-output grammars, first image paths
            await ours(policy, make_env, 2, params, forced, args.concurrency)
            t_ours, tok_ours, requests, trajs = await ours(
                policy, make_env, args.episodes, params, forced, args.concurrency
            )
            t_ceil, tok_ceil = await ceiling(policy, requests, args.concurrency)
            t_seq, tok_seq = await sequential(
                policy, make_env, args.sequential_episodes, params, forced
            )
            return t_ours, tok_ours, requests, trajs, t_ceil, tok_ceil, t_seq, tok_seq

        t_ours, tok_ours, requests, trajs, t_ceil, tok_ceil, t_seq, tok_seq = asyncio.run(run_all())
        startup = server.startup_seconds
    turns = sum(len(t.turns) for t in trajs)
    ours_tps, ceil_tps, seq_tps = tok_ours / t_ours, tok_ceil / t_ceil, tok_seq / t_seq
    result = {
        "episodes": args.episodes,
        "turns (ours)": turns,
        "mean turns per episode": round(turns / len(trajs), 2),
        "end reasons": dict(__import__("collections").Counter(t.end_reason for t in trajs)),
        "requests replayed (ceiling)": len(requests),
        "ours tokens/s": round(ours_tps, 1),
        "ceiling tokens/s": round(ceil_tps, 1),
        "sequential tokens/s": round(seq_tps, 1),
        "ours / ceiling": round(ours_tps / ceil_tps, 3),
        "ours / sequential": round(ours_tps / seq_tps, 2),
        "targets": ">= 0.90 and >= 5",
        "server": f"vLLM (CPU build) tiny Qwen2.5-VL, max_num_seqs {args.max_num_seqs}, start {startup:.0f} s",
        "concurrency": args.concurrency,
        "machine": machine_name(),
        "python": platform.python_version(),
    }
    table = "\n".join(
        ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in result.items())]
    )
    print(table)
    write_results(
        args.out,
        title="rollout benchmark",
        module="benchmarks.perf.rollout",
        table=table,
        result=result,
        runner="uv run python",
    )
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

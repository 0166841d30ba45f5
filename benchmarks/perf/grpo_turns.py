"""Multi-turn rollouts: our asynchronous turns vs one turn at a time (docs/benchmarks.md#grpo).

The same episodes (SynthSearch multi-turn zoom, per-request seeds, the same policy) run twice
through the one episode loop (`rollout.run_episodes`, token streams and response budget as in
GRPO):

- `async` (ours): each episode asks for its next turn as soon as its env has stepped; the engine
  batches whatever is in flight (continuous batching).
- `lockstep` (one turn at a time, as upstream's multi-turn rollout did): every live episode's
  turn t is held until all live episodes have asked for turn t, then they go together; an episode
  that ends leaves the barrier. Same requests, same seeds: only the scheduling differs.

The policy is the in-process vLLM engine of a model folder (`--model`, default the tiny random
Qwen2.5-VL: CPU build or GPU); turns are regex-constrained (a random model never makes a tool call
on its own) to a think + tool call, or an answer after the forced prefix; the lengths of the think
text vary, so turns of different episodes end at different times — the case asynchronous turns
are for. Reported: wall time per rollout (median of `--runs`), turns per episode, and the ratio.

    python -m benchmarks.perf.grpo_turns --episodes 32 --runs 3 --out benchmarks/results/grpo_turns.md
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

from benchmarks.machine import machine_name
from benchmarks.report import write_results

log = logging.getLogger("benchmarks.perf.grpo_turns")

TOOL = (
    r'<think> [a-z ]{4,60} \([1-9][0-9], [1-9][0-9]\) </think>\n<tool_call>\n\{"name": '
    r'"search_coordinate", "arguments": \{"coordinate": \[[1-9][0-9], [1-9][0-9]\]\}\}\n</tool_call>'
)
ANSWER = r" [a-z]{2,6} </answer>"


@dataclass(frozen=True)
class Args:
    model: str = "tiny-qwen2.5-vl"
    episodes: int = 32
    runs: int = 3
    max_images: int = 4
    max_pixels: int = 64 * 28 * 28
    crop_size: int = 112
    seed: int = 0
    out: Path | None = None


class Lockstep:
    """A policy wrapper that releases turn requests only when every live episode has asked."""

    continuous_batching = True

    def __init__(self, policy: Any, live: int) -> None:
        self.policy = policy
        self.supports_token_input = getattr(policy, "supports_token_input", False)
        self.model = getattr(policy, "model", None)
        self.processor = getattr(policy, "processor", None)
        self.min_pixels = getattr(policy, "min_pixels", None)
        self.max_pixels = getattr(policy, "max_pixels", None)
        self.live = live
        self.pending: list[tuple[Any, Any, asyncio.Future]] = []
        self.barriers = 0

    async def generate(self, convs: Any, params: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((convs, params, fut))
        self._release()
        return await fut

    def episode_done(self, _traj: Any = None) -> None:
        self.live -= 1
        self._release()

    def _release(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        batch, self.pending = self.pending, []
        self.barriers += 1
        for convs, params, fut in batch:
            task = asyncio.ensure_future(self.policy.generate(convs, params))
            task.add_done_callback(
                lambda t, f=fut: f.set_exception(t.exception()) if t.exception() else
                f.set_result(t.result())
            )  # fmt: skip

    async def aclose(self) -> None:
        return None


def _rollout(policy: Any, builder: Any, args: Args, lockstep: bool) -> tuple[float, list, int]:
    from vigorl_agents.policy import SamplingParams
    from vigorl_agents.rollout import EpisodeSpec, TokenBudget, make_env_factory, run_episodes

    make = make_env_factory(
        "ViGoRL/SynthSearch-v0",
        mode="multi_turn",
        max_pixels=args.max_pixels,
        crop_size=args.crop_size,
        max_images=args.max_images,
        split="train",
        size=args.episodes,
    )
    params = SamplingParams(temperature=1.0, max_tokens=160, seed=args.seed, logprobs=True,
                            regex=TOOL)  # fmt: skip
    specs = [EpisodeSpec(i, episode=0) for i in range(args.episodes)]
    pol = Lockstep(policy, len(specs)) if lockstep else policy
    t = time.perf_counter()
    trajs = asyncio.run(
        run_episodes(
            make, pol, specs, params,
            forced_params=params.with_(regex=ANSWER),
            max_in_flight=len(specs),
            keep_tokens=True,
            token_budget=TokenBudget(4096, 160),
            token_builder=builder,
            on_done=pol.episode_done if lockstep else None,
        )
    )  # fmt: skip
    return time.perf_counter() - t, trajs, getattr(pol, "barriers", 0)


def main(args: Args) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from vigorl_agents.backends.vllm_engine import VLLMEnginePolicy
    from vigorl_agents.models.load import resolve_model
    from vigorl_agents.tokens import TokenBuilder

    path = resolve_model(args.model)
    policy = VLLMEnginePolicy(path, multiprocessing=False, limit_images=args.max_images,
                              max_pixels=args.max_pixels, seed=args.seed)  # fmt: skip
    builder = TokenBuilder.for_policy(policy)
    _rollout(policy, builder, args, lockstep=False)  # warm-up (compilation, caches)
    times: dict[str, list[float]] = {"async": [], "lockstep": []}
    turns: dict[str, float] = {}
    same = True
    for _ in range(args.runs):
        for side in ("async", "lockstep"):
            dt, trajs, barriers = _rollout(policy, builder, args, lockstep=side == "lockstep")
            times[side].append(dt)
            turns[side] = statistics.mean(len(t.turns) for t in trajs)
            if side == "lockstep":
                turns["barriers"] = barriers
            key = [[tt.token_ids for tt in t.turns] for t in trajs]
            if side == "async":
                ref_key = key
            else:
                same = same and key == ref_key
    policy.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    import platform

    env = {"machine": machine_name(), "python": platform.python_version()}
    try:
        import torch

        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    table = "\n".join([
        "| rollout | wall s (median) | runs | turns/episode | ratio vs lockstep |",
        "|---|---|---|---|---|",
        f"| async (ours) | {med['async']:.2f} | {', '.join(f'{x:.2f}' for x in times['async'])} "
        f"| {turns['async']:.2f} | {med['lockstep'] / med['async']:.2f}× faster |",
        f"| lockstep (one turn at a time) | {med['lockstep']:.2f} | "
        f"{', '.join(f'{x:.2f}' for x in times['lockstep'])} | {turns['lockstep']:.2f} | 1.00× |",
        "",
        f"- {args.episodes} SynthSearch multi-turn episodes (max {args.max_images} images), vLLM "
        f"engine in-process on {env.get('gpu', env['machine'])}, model {args.model}; "
        f"regex-constrained turns; lockstep barriers: {turns.get('barriers')}",
        f"- the two sides sampled the same tokens in every episode: {same}",
    ])  # fmt: skip
    print(table)
    result = {"env": env, "times": times, "turns": turns, "same_tokens": same}
    write_results(args.out, title="Multi-turn rollouts: asynchronous turns vs lockstep",
                  module="benchmarks.perf.grpo_turns", table=table, result=result)  # fmt: skip
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

"""Tree-search throughput against one vLLM server: our async search vs a sequential search.

Setting: the tiny random Qwen2.5-VL behind a local vLLM server (`VLLMServer`), SynthSpatial
samples with frames sized to the tiny processor, every teacher call constrained by a regular
expression (vLLM structured outputs) to one valid thought step, so every tree has its full size. Both sides run the same `TreeSearch` with the same settings and seeds:

- ours: `run_search` with all samples of a worker in flight (default 64), the calls of an
  expansion and every rollout of its new children concurrent;
- sequential: upstream's structure, one request at a time per worker (the worker's policy calls
  are serialized by a lock and one sample is searched at a time).

Both sides get the same number of workers (`--workers`; each worker is one shard of the samples).
Reported: samples per hour, teacher calls per second, the ratio, and the server's batch occupancy
(mean of vLLM's `num_requests_running` gauge sampled every 0.2 s during the side). Target: ≥ 10×.

    uv run python -m benchmarks.perf.mcts [--samples 16] [--workers 1] [--n-simulations 4]
        [--out benchmarks/results/mcts.md]
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

from benchmarks.machine import machine_name
from vigorl_agents.backends.launcher import VLLMServer
from vigorl_agents.backends.vllm_server import VLLMServerPolicy
from vigorl_agents.models.load import resolve_model
from vigorl_agents.search import MCTSConfig
from vigorl_agents.search.run import RunConfig, run_search

STEP = r"<think> [a-z ]{1,20} \([1-9][0-9]{0,2}, [1-9][0-9]{0,2}\)\. </think>"
"""Thought steps only: every tree gets its full size (n_simulations × (3 + 6 × rollout steps)
calls, as with a teacher that explores before answering); rewards are all 0. This measures
throughput, not quality (the scripted-teacher run of the debug preset shows quality)."""


@dataclass(frozen=True)
class Args:
    samples: int = 16
    workers: int = 1
    n_simulations: int = 4
    max_in_flight: int = 64
    max_num_seqs: int = 128
    model: str = "tiny-qwen2.5-vl"
    out: Path | None = None
    """Markdown result file (default: print only)."""


class Serial:
    """One request at a time (upstream's per-worker structure)."""

    def __init__(self, policy: VLLMServerPolicy):
        self.policy = policy
        self.lock = asyncio.Lock()

    async def generate(self, conversations, params):
        async with self.lock:
            return await self.policy.generate(conversations, params)

    async def aclose(self) -> None:
        await self.policy.aclose()


async def _occupancy(root_url: str, stop: asyncio.Event, samples: list[float]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=root_url, timeout=10) as c:
        while not stop.is_set():
            try:
                text = (await c.get("/metrics")).text
                for line in text.splitlines():
                    if line.startswith("vllm:num_requests_running"):
                        samples.append(float(line.rsplit(" ", 1)[1]))
                        break
            except Exception:  # a missed sample is not a result
                pass
            await asyncio.sleep(0.2)


async def _side(server: VLLMServer, args: Args, sequential: bool, out_dir: Path) -> dict[str, Any]:
    mcts = MCTSConfig(
        n_simulations=args.n_simulations, rollout_max_steps=3, max_tokens=40, regex=STEP
    )
    occ: list[float] = []
    stop = asyncio.Event()
    poller = asyncio.create_task(_occupancy(server.root_url, stop, occ))
    policies = []

    async def worker(i: int) -> Any:
        base = VLLMServerPolicy([server.base_url], "tiny", max_concurrency=args.max_num_seqs)
        policy: Any = Serial(base) if sequential else base
        policies.append(policy)
        cfg = RunConfig(
            env_ids=("ViGoRL/SynthSpatial-v0",),
            n_samples=args.samples,
            env_kwargs={"max_pixels": 64 * 28 * 28},
            mcts=mcts,
            shards=args.workers,
            shard=i,
            max_in_flight=1 if sequential else args.max_in_flight,
        )
        return await run_search(policy, cfg, out_dir / f"w{i}.jsonl")

    t = time.perf_counter()
    results = await asyncio.gather(*(worker(i) for i in range(args.workers)))
    seconds = time.perf_counter() - t
    stop.set()
    await poller
    for p in policies:
        await p.aclose()
    trees = sum(r.written_trees for r in results)
    calls = sum(r.n_llm_calls for r in results)
    return {
        "side": "sequential" if sequential else "ours",
        "seconds": seconds,
        "trees": trees,
        "errors": sum(r.written_errors for r in results),
        "calls": calls,
        "samples_per_hour": trees / seconds * 3600,
        "calls_per_s": calls / seconds,
        "mean_running": statistics.fmean(occ) if occ else float("nan"),
        "max_running": max(occ) if occ else float("nan"),
    }


def main(args: Args) -> dict[str, Any]:
    with (
        VLLMServer(
            resolve_model(args.model), served_model_name="tiny", max_num_seqs=args.max_num_seqs
        ) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        ours = asyncio.run(_side(server, args, False, Path(tmp) / "ours"))
        seq = asyncio.run(_side(server, args, True, Path(tmp) / "seq"))
    ratio = ours["samples_per_hour"] / seq["samples_per_hour"]
    result = {
        "machine": machine_name(),
        "load_avg": os.getloadavg(),
        "args": {k: str(v) for k, v in dataclasses.asdict(args).items()},
        "ours": ours,
        "sequential": seq,
        "ratio": ratio,
        "target": ">= 10x at equal worker count",
    }
    lines = [
        "# MCTS search throughput: async vs sequential",
        "",
        f"Machine: {result['machine']} (load average at the end {result['load_avg']}). "
        f"vLLM server (CPU build), tiny random Qwen2.5-VL, regex-constrained steps; "
        f"{args.samples} SynthSpatial samples, {args.workers} worker(s), "
        f"{args.n_simulations} simulations per tree, rollouts up to 3 steps.",
        "",
        "| side | s | trees | calls | samples/h | calls/s | mean running | max running |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in (ours, seq):
        lines.append(
            f"| {s['side']} | {s['seconds']:.1f} | {s['trees']} | {s['calls']} | "
            f"{s['samples_per_hour']:.0f} | {s['calls_per_s']:.1f} | {s['mean_running']:.1f} | "
            f"{s['max_running']:.0f} |"
        )
    lines += ["", f"Ratio (samples/h, ours / sequential): **{ratio:.1f}x** (target >= 10x).", ""]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(result, indent=2, default=str))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            text + "\n```json\n" + json.dumps(result, indent=2, default=str) + "\n```\n"
        )
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

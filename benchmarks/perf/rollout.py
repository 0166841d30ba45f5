"""Multi-turn rollout throughput: our loop against what the vLLM server or engine can do.

Setting: the tiny random Qwen2.5-VL; `ViGoRL/SynthSearch-v0` in multi-turn mode with frames and
crops sized to the tiny processor. The model's text is constrained by a regular expression (vLLM
structured outputs) to a think step + a tool call, so each episode really runs 4 zooms and the
forced final answer (5 dependent turns), like a trained model.

Server path (a local vLLM server, `VLLMServerPolicy`):
- ours: `run_episodes` with all episodes in flight: real env resets (cold frame cache) and steps,
  request bodies built by the client, images sent once per episode and then referred to by id;
- ceiling: the very same requests sent all at once by a bare HTTP loop with bodies serialized
  before the clock starts — no env, no dependency between turns, so every request carries its
  images in full (nothing can be referred to yet);
- chains: the same requests as 32 chains of 5 dependent turns (each turn sent when the chain's
  previous answer is in), bodies built before the clock starts exactly as ours sends them (images
  of earlier turns by id): what the server can do for this dependent workload at zero client cost;
- sequential: one episode at a time, one turn at a time (upstream's loop), on a subset.

Engine path (`VLLMEnginePolicy`, the in-process engine GRPO samples from):
- ours: `run_episodes` over the engine policy, real envs as above;
- ceiling: bare `LLM.chat` (vLLM's `generate` with its chat rendering) over the very same
  conversations, one batched call per turn in dependent turn order (turn 1 of every episode, then
  turn 2, ...), messages built before the clock starts;
- sequential: as above.

Two workloads (`--groups`): every episode its own sample (evaluation), and 8 episodes per sample
(a GRPO group of n = 8, which shares one model frame). Ours and sequential pay for every env reset
(cold frame cache: a SynthSearch frame is a ~2600×1800 render resized to the tiny model's frame,
tens of milliseconds); the ceilings get their images for free.

Before every side, every cache that could carry work over is emptied: the env's frame cache, the
client's image cache and its record of which images the server holds, and the server's or engine's
prefix, multimodal-processor and encoder caches (the server runs with VLLM_SERVER_DEV_MODE=1 for
its cache-reset endpoints). Each side runs `--runs` times, interleaved; the table gives medians and
the per-run ratios, the load average before each run, and for the server the engine steps (vLLM's
iteration count) and the CPU seconds of the server's processes and of this client per side.
Targets: ours ≥ 0.90× both ceilings on both paths, ≥ 5× sequential.

    uv run python -m benchmarks.perf.rollout [--episodes 32] [--runs 3] [--groups 1 8]
        [--paths server engine] [--out benchmarks/results/rollout.md]
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tyro

import vigorl_env.env
from benchmarks.machine import machine_name
from benchmarks.report import write_results
from vigorl_agents.backends.launcher import VLLMServer
from vigorl_agents.backends.openai_messages import chat_template_flags
from vigorl_agents.backends.vllm_server import VLLMServerPolicy, _Held
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
    """Episodes for `ours` (and the requests replayed by the ceilings)."""
    sequential_episodes: int = 4
    """Episodes for the sequential loop (it is slow; tokens/s is what is compared)."""
    runs: int = 3
    """Timed runs of every side (medians are reported)."""
    groups: tuple[int, ...] = (1, 8)
    """Episodes per sample, one workload each: 1 = every episode its own sample (evaluation),
    8 = the n = 8 episodes of a GRPO group share a sample (and its frame)."""
    paths: tuple[str, ...] = ("server", "engine")
    max_tokens: int = 160
    concurrency: int = 32
    max_num_seqs: int = 32
    """vLLM --max-num-seqs (server) / max_num_seqs (engine)."""
    engine_multiprocessing: bool = False
    """Engine core in a separate process (vLLM's default) instead of in this process."""
    model: str = "tiny-qwen2.5-vl"
    out: Path | None = None


# --------------------------------------------------------------------------- recording


class Recorder:
    """Wraps a policy, records every request (conversation snapshot + params), counts tokens."""

    def __init__(self, policy: Any):
        self.policy = policy
        self.continuous_batching = getattr(policy, "continuous_batching", False)
        self.requests: list[tuple[int, Conversation, SamplingParams]] = []
        self.tokens = 0

    async def generate(self, conversations, params):
        ps = params_per_conversation(params, len(conversations))
        for c, p in zip(conversations, ps, strict=True):
            # id(c): the episode's conversation object (the same one every turn)
            self.requests.append((id(c), Conversation(list(c.messages), c.assistant_prefix), p))
        out = await self.policy.generate(conversations, ps)
        self.tokens += sum(len(c.token_ids or ()) for res in out for c in res)
        return out

    async def aclose(self):
        return None


def _turn(conv: Conversation) -> int:
    return sum(m.role == "assistant" for m in conv.messages)


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f}"


def _other_vllm_processes(own_pids: set[int]) -> int:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    pids = [
        int(line.split(None, 1)[0])
        for line in out.splitlines()[1:]
        if "vllm" in line and "ps -eo" not in line
    ]
    return len([p for p in pids if p not in own_pids and p != os.getpid()])


def _specs(n: int, group: int) -> list[EpisodeSpec]:
    return [EpisodeSpec(i // group, i % group) for i in range(n)]


async def _episodes(
    policy, make_env, n, params, forced, concurrency, group=1
) -> tuple[float, Recorder]:
    rec = Recorder(policy)
    vigorl_env.env.FRAME_CACHE.clear()
    made = vigorl_env.env.FRAME_CACHE.made
    t = time.perf_counter()
    trajs = await run_episodes(
        make_env,
        rec,
        _specs(n, group),
        params,
        forced_params=forced,
        max_in_flight=concurrency,
        max_batch=concurrency,
    )
    dt = time.perf_counter() - t
    rec.trajectories = trajs
    rec.frames_made = vigorl_env.env.FRAME_CACHE.made - made
    return dt, rec


# --------------------------------------------------------------------------- server path


def _raw(body: dict[str, Any]) -> bytes:
    """The request's JSON, serialized (before the clock starts)."""
    return json.dumps(body).encode()


class _Server:
    def __init__(self, server: VLLMServer, args: Args):
        import httpx

        self.server = server
        self.args = args
        self.http = httpx.AsyncClient(
            base_url=server.base_url,
            timeout=600,
            limits=httpx.Limits(max_connections=args.concurrency + 8),
        )

    async def reset_caches(self) -> None:
        import httpx

        async with httpx.AsyncClient(base_url=self.server.root_url, timeout=60) as c:
            for path in ("/reset_prefix_cache", "/reset_mm_cache", "/reset_encoder_cache"):
                r = await c.post(path)
                r.raise_for_status()
        vigorl_env.env.FRAME_CACHE.clear()

    async def steps(self) -> float:
        """Engine iterations so far (vLLM's iteration-tokens histogram count), NaN if absent."""
        import httpx

        async with httpx.AsyncClient(base_url=self.server.root_url, timeout=60) as c:
            text = (await c.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith("vllm:iteration_tokens_total_count"):
                return float(line.rsplit(" ", 1)[1])
        return float("nan")

    def policy(self) -> VLLMServerPolicy:
        return VLLMServerPolicy(
            [self.server.base_url], "tiny", max_concurrency=self.args.concurrency
        )

    async def post(self, payload: bytes) -> int:
        r = await self.http.post(
            "/chat/completions", content=payload, headers={"content-type": "application/json"}
        )
        r.raise_for_status()
        return sum(len(ch.get("token_ids") or []) for ch in r.json()["choices"])

    async def ceiling(self, requests) -> tuple[float, int]:
        """Every request at once, images in full, bodies serialized before the clock starts."""
        builder = self.policy()
        payloads = [_raw(builder.request_body(c, p)) for _, c, p in requests]
        sem = asyncio.Semaphore(self.args.concurrency)

        async def one(payload: bytes) -> int:
            async with sem:
                return await self.post(payload)

        t = time.perf_counter()
        counts = await asyncio.gather(*(one(b) for b in payloads))
        return time.perf_counter() - t, sum(counts)

    async def chains(self, requests) -> tuple[float, int]:
        """Each episode's turns in order, one chain per episode, all chains at once; each body
        refers by id to the images of the chain's earlier turns, as ours does."""
        builder = self.policy()
        by_episode: dict[int, list[bytes]] = collections.defaultdict(list)
        held: dict[int, _Held] = collections.defaultdict(_Held)
        for key, conv, p in requests:
            by_episode[key].append(_raw(builder.request_body(conv, p, held[key])))
            held[key].add(builder.image_cache.uuid(i) for i in conv.images)

        async def chain(payloads: list[bytes]) -> int:
            return sum([await self.post(b) for b in payloads])

        t = time.perf_counter()
        counts = await asyncio.gather(*(chain(b) for b in by_episode.values()))
        return time.perf_counter() - t, sum(counts)


def _cpu_of_group(pgid: int | None) -> float:
    """CPU seconds used so far by the processes of a process group (the server's)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if pgid is not None and int(stat[2]) == pgid:
            total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


async def _server_runs(srv: _Server, make_env, params, forced, group: int) -> dict[str, list]:
    args = srv.args
    res: dict[str, list] = collections.defaultdict(list)
    warm = srv.policy()  # compile the grammars, first image paths
    await _episodes(warm, make_env, 2, params, forced, args.concurrency)
    await warm.aclose()
    pgid = srv.server.pid
    for run in range(args.runs):
        res["load before run"].append(_load())
        await srv.reset_caches()
        policy = srv.policy()
        s0, c0, o0 = await srv.steps(), _cpu_of_group(pgid), _own_cpu()
        dt, rec = await _episodes(
            policy, make_env, args.episodes, params, forced, args.concurrency, group
        )
        res["ours engine steps"].append(await srv.steps() - s0)
        res["ours server CPU s"].append(round(_cpu_of_group(pgid) - c0, 1))
        res["ours client CPU s"].append(round(_own_cpu() - o0, 1))
        res["ours frames made"].append(rec.frames_made)
        res["ours"].append(rec.tokens / dt)
        res["ours wall s"].append(round(dt, 2))
        res["ours images sent / referred"].append(
            f"{policy.stats['images_sent']} / {policy.stats['images_referenced']}"
        )
        await policy.aclose()
        requests = rec.requests
        for side, replay in (("ceiling", srv.ceiling), ("chains", srv.chains)):
            await srv.reset_caches()
            s0, c0 = await srv.steps(), _cpu_of_group(pgid)
            dt, tok = await replay(requests)
            res[f"{side} engine steps"].append(await srv.steps() - s0)
            res[f"{side} server CPU s"].append(round(_cpu_of_group(pgid) - c0, 1))
            res[side].append(tok / dt)
            res[f"{side} wall s"].append(round(dt, 2))
        await srv.reset_caches()
        policy = srv.policy()
        dt, seq = await _episodes(
            policy, make_env, args.sequential_episodes, params, forced, 1, group
        )
        await policy.aclose()
        res["sequential"].append(seq.tokens / dt)
        res["requests"].append(len(requests))
        res["turns"].append(sum(len(t.turns) for t in rec.trajectories))
        res["end reasons"].append(dict(collections.Counter(t.end_reason for t in rec.trajectories)))
        print(f"server group {group} run {run}: " + ", ".join(
            f"{k} {v[-1]}" for k, v in res.items()), flush=True)  # fmt: skip
    return res


# --------------------------------------------------------------------------- engine path


def _engine_reset(policy) -> None:
    llm = policy.llm
    llm.reset_prefix_cache()
    llm.llm_engine.reset_mm_cache()
    llm.llm_engine.reset_encoder_cache()
    policy.image_ids.clear()
    vigorl_env.env.FRAME_CACHE.clear()


def _engine_ceiling(policy, requests) -> tuple[float, int]:
    """Bare `LLM.chat`, one batched call per turn (and per chat-template mode) in turn order."""
    from vigorl_agents.backends.vllm_engine import engine_messages

    llm = policy.llm
    turns: dict[tuple[int, bool], list] = collections.defaultdict(list)
    for _, conv, p in requests:
        turns[(_turn(conv), bool(conv.assistant_prefix))].append(
            (engine_messages(conv), policy.sampling_params(p), chat_template_flags(conv))
        )
    tokens = 0
    t = time.perf_counter()
    for key in sorted(turns):
        batch = turns[key]
        outs = llm.chat(
            [m for m, _, _ in batch], [sp for _, sp, _ in batch], use_tqdm=False, **batch[0][2]
        )
        tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
    return time.perf_counter() - t, tokens


def _engine_runs(policy, args: Args, make_env, params, forced, group: int) -> dict[str, list]:
    res: dict[str, list] = collections.defaultdict(list)
    asyncio.run(_episodes(policy, make_env, 2, params, forced, args.concurrency))  # warm-up
    for run in range(args.runs):
        res["load before run"].append(_load())
        _engine_reset(policy)
        dt, rec = asyncio.run(
            _episodes(policy, make_env, args.episodes, params, forced, args.concurrency, group)
        )
        res["ours"].append(rec.tokens / dt)
        res["ours wall s"].append(round(dt, 2))
        res["ours frames made"].append(rec.frames_made)
        _engine_reset(policy)
        dt, tok = _engine_ceiling(policy, rec.requests)
        res["ceiling"].append(tok / dt)
        res["ceiling wall s"].append(round(dt, 2))
        _engine_reset(policy)
        dt, seq = asyncio.run(
            _episodes(policy, make_env, args.sequential_episodes, params, forced, 1, group)
        )
        res["sequential"].append(seq.tokens / dt)
        res["requests"].append(len(rec.requests))
        res["turns"].append(sum(len(t.turns) for t in rec.trajectories))
        res["end reasons"].append(dict(collections.Counter(t.end_reason for t in rec.trajectories)))
        print(f"engine group {group} run {run}: " + ", ".join(
            f"{k} {v[-1]}" for k, v in res.items()), flush=True)  # fmt: skip
    return res


def _frame_ms(make_env, n: int = 8) -> float:
    """Median milliseconds of one cold reset (a model frame made) of this workload's env."""
    env = make_env()
    times = []
    for i in range(n):
        vigorl_env.env.FRAME_CACHE.clear()
        t = time.perf_counter()
        env.reset(options={"index": i % env.unwrapped.num_samples})  # small --episodes runs
        times.append(time.perf_counter() - t)
    env.close()
    return round(1000 * statistics.median(times), 1)


# --------------------------------------------------------------------------- report


def _summary(res: dict[str, list], ceilings: tuple[str, ...]) -> dict[str, Any]:
    med = {k: statistics.median(res[k]) for k in ("ours", "sequential", *ceilings)}
    out: dict[str, Any] = {f"{k} tokens/s (median)": round(v, 1) for k, v in med.items()}
    for c in ceilings:
        ratios = [o / x for o, x in zip(res["ours"], res[c], strict=True)]
        out[f"ours / {c} (median of runs)"] = round(statistics.median(ratios), 3)
        out[f"ours / {c} per run"] = [round(r, 3) for r in ratios]
    seq = [o / s for o, s in zip(res["ours"], res["sequential"], strict=True)]
    out["ours / sequential (median of runs)"] = round(statistics.median(seq), 2)
    out["ours / sequential per run"] = [round(r, 2) for r in seq]
    for k, v in res.items():
        if k not in med:
            out[k] = v
    return out


def _tables(result: dict[str, Any]) -> str:
    """A summary (one row per path and workload, medians) and every measure in detail."""

    def cell(d: dict, key: str) -> str:
        return str(d[key]) if key in d else "—"

    summary = [
        "| path, workload | ours tok/s | ceiling tok/s | chains tok/s | sequential tok/s "
        "| ours / ceiling | ours / chains | ours / sequential | frames made (ours) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    detail = ["| measure | value |", "|---|---|"]
    for k, v in result.items():
        if not isinstance(v, dict):
            detail.append(f"| {k} | {v} |")
            continue
        summary.append(
            f"| {k} | {cell(v, 'ours tokens/s (median)')} | {cell(v, 'ceiling tokens/s (median)')}"
            f" | {cell(v, 'chains tokens/s (median)')} | {cell(v, 'sequential tokens/s (median)')}"
            f" | **{cell(v, 'ours / ceiling (median of runs)')}**"
            f" | **{cell(v, 'ours / chains (median of runs)')}**"
            f" | **{cell(v, 'ours / sequential (median of runs)')}**"
            f" | {cell(v, 'ours frames made')} |"
        )
        detail += [f"| {k}: {kk} | {vv} |" for kk, vv in v.items()]
    return "\n".join([*summary, "", "Every measure (per-run lists are in run order):", "", *detail])


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
    result: dict[str, Any] = {
        "machine": machine_name(),
        "python": platform.python_version(),
        "load average (1/5 min) at start": _load(),
        "other vLLM processes at start": _other_vllm_processes(set()),
        "episodes": args.episodes,
        "runs": args.runs,
        "cold reset (one model frame made), ms": _frame_ms(make_env),
        "targets": "ours >= 0.90 x each ceiling, >= 5 x sequential",
    }
    if "server" in args.paths:
        with VLLMServer(
            resolve_model(args.model),
            served_model_name="tiny",
            max_num_seqs=args.max_num_seqs,
            env={"VLLM_SERVER_DEV_MODE": "1"},
        ) as server:
            what = (
                f"vLLM server (CPU build), tiny Qwen2.5-VL, max_num_seqs {args.max_num_seqs}, "
                f"concurrency {args.concurrency}, start {server.startup_seconds:.0f} s"
            )

            async def all_groups() -> dict[int, dict]:
                srv = _Server(server, args)
                try:
                    return {
                        g: await _server_runs(srv, make_env, params, forced, g) for g in args.groups
                    }
                finally:
                    await srv.http.aclose()

            for g, res in asyncio.run(all_groups()).items():
                result[f"server, {g} episode(s) per sample"] = {
                    "what": what,
                    **_summary(res, ("ceiling", "chains")),
                }
    if "engine" in args.paths:
        from vigorl_agents.backends.vllm_engine import VLLMEnginePolicy

        t = time.perf_counter()
        policy = VLLMEnginePolicy(
            resolve_model(args.model),
            multiprocessing=args.engine_multiprocessing,
            max_num_seqs=args.max_num_seqs,
        )
        what = (
            f"vllm.LLM in-process (CPU build), tiny Qwen2.5-VL, max_num_seqs "
            f"{args.max_num_seqs}, engine core in "
            f"{'a separate process' if args.engine_multiprocessing else 'this process'}, "
            f"start {time.perf_counter() - t:.0f} s"
        )
        try:
            for g in args.groups:
                res = _engine_runs(policy, args, make_env, params, forced, g)
                result[f"engine, {g} episode(s) per sample"] = {
                    "what": what,
                    **_summary(res, ("ceiling",)),
                }
        finally:
            policy.close()
    result["load average (1/5 min) at end"] = _load()
    table = _tables(result)
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

"""Searching many samples: bounded concurrency, sharding, append-only tree files and resume
(docs/mcts.md#execution-and-resume).

Every sample is one coroutine that holds one env of its own (a pool per env id, so
`accuracy_of` always scores against the right episode) and runs its tree search; up to
`max_in_flight` samples run at once, so a continuous-batching server sees many requests. Finished
trees and error lines go through one writer task to one append-only JSONL file (flush per line).
A restart cuts a torn last line, skips ids that have a tree line and retries ids that have only
error lines (unless `retry_errors=False`). Shards split the ids by a stable hash, so several
processes or machines can search disjoint parts into separate files.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigorl_agents.cli import EnvKwargs
from vigorl_agents.jsonl import JsonlAppender, cut_torn_tail, read_jsonl
from vigorl_agents.policy import Policy
from vigorl_agents.search.mcts import TreeSearch, k_thoughts, teacher_system_prompt
from vigorl_agents.search.tree import MCTSConfig

logger = logging.getLogger(__name__)

VIGORL_VERSION = "0.1.0"


def shard_of(sample_id: str, shards: int) -> int:
    """The shard of a sample: sha256(sample_id) as an integer, mod `shards` (stable across runs
    and machines, unlike Python's salted `hash`)."""
    return int(hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:16], 16) % shards


@dataclass(frozen=True)
class RunConfig:
    """What to search and how (docs/mcts.md#execution-and-resume)."""

    env_ids: tuple[str, ...] = ("ViGoRL/SynthSpatial-v0",)
    split: str | None = None
    """The env split (procedural default: train)."""
    n_samples: int | None = 24
    """Samples per env id, from `start` on (None: the whole split)."""
    start: int = 0
    seed: int = 42
    """Global seed: each sample's K and every request seed derive from it."""
    mcts: MCTSConfig = field(default_factory=MCTSConfig)
    max_in_flight: int = 64
    """Samples searched at once."""
    shards: int = 1
    shard: int = 0
    retry_errors: bool = True
    """Resume: search again the ids that have only error lines."""
    env_kwargs: EnvKwargs = field(default_factory=dict)
    """Extra make kwargs for every env (mode is always single_turn)."""

    def __post_init__(self) -> None:
        if self.shards < 1 or not 0 <= self.shard < self.shards:
            raise ValueError(
                f"need 0 <= shard < shards, got shard={self.shard}, shards={self.shards}"
            )
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")


@dataclass
class RunSummary:
    written_trees: int = 0
    written_errors: int = 0
    skipped: int = 0
    n_llm_calls: int = 0
    root_correct: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_trees(path: str | Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(trees by id, last error line by id) of a tree file; an id with a tree is not an error."""
    trees: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, Any]] = {}
    for _, rec in read_jsonl(path):
        sid = str(rec.get("id"))
        if "tree" in rec:
            trees.setdefault(sid, rec)
        elif "error" in rec:
            errors[sid] = rec
    return trees, {k: v for k, v in errors.items() if k not in trees}


def make_env(env_id: str, cfg: RunConfig, **extra: Any) -> Any:
    import gymnasium as gym

    import vigorl_env  # noqa: F401  (registers the ids)

    kwargs = {**cfg.env_kwargs, **extra, "mode": "single_turn"}
    if cfg.split is not None:
        kwargs["split"] = cfg.split
    return gym.make(env_id, **kwargs)


class EnvMaker:
    """Envs for the pool of each env id, all on ONE dataset object per env id (loaded once, from the
    first env's public config): 64 envs of a real benchmark do not load its split file 64 times,
    and envs on the same dataset object share model frames."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self._datasets: dict[str, Any] = {}

    def __call__(self, env_id: str) -> Any:
        if env_id not in self._datasets:
            from vigorl_env.env import load_dataset

            env = make_env(env_id, self.cfg)
            u = env.unwrapped
            self._datasets[env_id] = load_dataset(
                u.config, self.cfg.env_kwargs.get("data_root"), u.env_id
            )
            return env
        return make_env(env_id, self.cfg, dataset=self._datasets[env_id])


def plan(cfg: RunConfig, probe_envs: dict[str, Any]) -> list[tuple[str, str]]:
    """(env id, sample id) pairs of this shard, in split order per env id."""
    out = []
    for env_id in cfg.env_ids:
        u = probe_envs[env_id].unwrapped
        if cfg.n_samples is None and u.config.spec.procedural:
            raise ValueError(f"{env_id}: a procedural split is unlimited; give n_samples")
        stop = (
            u.num_samples
            if cfg.n_samples is None
            else min(u.num_samples, cfg.start + cfg.n_samples)
        )
        for i in range(cfg.start, stop):
            sid = u.sample_id_at(i)
            if shard_of(sid, cfg.shards) == cfg.shard:
                out.append((env_id, sid))
    return out


class _Progress:
    """A tqdm bar (samples done, calls/s, root-correct ratio) on a terminal, else a log line every
    `every_s` seconds."""

    def __init__(self, total: int, every_s: float = 10.0) -> None:
        self.total, self.every_s = total, every_s
        self.done = self.correct = self.calls = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty() and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="mcts", leave=False)

    def call(self) -> None:
        self.calls += 1

    def finished(self, root_correct: bool | None) -> None:
        self.done += 1
        self.correct += bool(root_correct)
        elapsed = max(time.monotonic() - self.start, 1e-9)
        stats = {
            "calls/s": f"{self.calls / elapsed:.1f}",
            "root_correct": f"{self.correct / self.done:.2f}",
        }
        if self.bar is not None:
            self.bar.set_postfix(stats, refresh=False)
            self.bar.update(1)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            logger.info(
                "mcts: %d/%d samples, %s calls/s, root correct %s",
                self.done, self.total, stats["calls/s"], stats["root_correct"],
            )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def run_search(
    policy: Policy,
    cfg: RunConfig,
    out_path: str | Path,
    *,
    env_factory: Callable[[str], Any] | None = None,
    stop_after: int | None = None,
) -> RunSummary:
    """Search every planned sample not yet in `out_path`; returns what this call wrote.

    `env_factory(env_id)` makes one env (default: `gym.make` in single-turn mode). A policy with
    an `announce(image, env_id=, sample_id=, frame=)` method (the scripted teacher) is told about
    each sample before its search and `forget(image)` after it. `stop_after` stops taking new
    samples after that many finished (tests use it to cut a run short as a kill would).
    """
    out_path = Path(out_path)
    factory = env_factory or EnvMaker(cfg)
    t0 = time.monotonic()
    if out_path.exists():
        cut_torn_tail(out_path)
    trees, errors = read_trees(out_path)
    pools: dict[str, list[Any]] = {env_id: [factory(env_id)] for env_id in cfg.env_ids}
    todo = []
    summary = RunSummary()
    for env_id, sid in plan(cfg, {k: v[0] for k, v in pools.items()}):
        if sid in trees or (sid in errors and not cfg.retry_errors):
            summary.skipped += 1
        else:
            todo.append((env_id, sid))
    logger.info(
        "mcts: %d sample(s) to search, %d already in %s", len(todo), summary.skipped, out_path
    )
    progress = _Progress(len(todo))
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    sem = asyncio.Semaphore(cfg.max_in_flight)
    stop = asyncio.Event()

    def take_env(env_id: str) -> Any:
        pool = pools[env_id]
        return pool.pop() if pool else factory(env_id)

    async def writer() -> None:
        with JsonlAppender(out_path) as out:
            while (rec := await queue.get()) is not None:
                out.write(rec)
                if "tree" in rec:
                    summary.written_trees += 1
                else:
                    summary.written_errors += 1

    async def one(env_id: str, sid: str) -> None:
        async with sem:
            if stop.is_set():
                return
            env = take_env(env_id)
            try:
                rec = await _search_sample(policy, env, env_id, sid, cfg, progress.call)
            finally:
                pools[env_id].append(env)
            if "tree" in rec:
                summary.n_llm_calls += rec["n_llm_calls"]
                summary.root_correct += rec["root_value"] > 0
            await queue.put(rec)
            progress.finished(rec.get("root_value", 0) > 0 if "tree" in rec else None)
            if stop_after is not None and progress.done >= stop_after:
                stop.set()

    writer_task = asyncio.create_task(writer())
    try:
        await asyncio.gather(*(one(e, s) for e, s in todo))
    finally:
        await queue.put(None)
        await writer_task
        progress.close()
    summary.seconds = time.monotonic() - t0
    return summary


async def _search_sample(
    policy: Policy, env: Any, env_id: str, sid: str, cfg: RunConfig, on_call: Callable[[], None]
) -> dict[str, Any]:
    """One sample's tree line, or its error line (a failure never escapes)."""
    u = env.unwrapped
    image = None
    try:
        obs, info = await asyncio.to_thread(env.reset, options={"sample_id": sid})
        image = u.frame_image
        k = k_thoughts(cfg.seed, sid, cfg.mcts)
        system_prompt = teacher_system_prompt(u.family.mcts_prompt(), k)
        announce = getattr(policy, "announce", None)
        if announce is not None:
            announce(image, env_id=env_id, sample_id=sid, frame=info["frame"])
        search = TreeSearch(
            policy,
            image=image,
            question=obs["text"],
            system_prompt=system_prompt,
            accuracy=u.accuracy_of,
            config=cfg.mcts,
            seed=cfg.seed,
            sample_id=sid,
            on_call=on_call,
        )
        t0 = time.monotonic()
        try:
            root = await asyncio.wait_for(search.run(), cfg.mcts.sample_timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"search exceeded sample_timeout_s={cfg.mcts.sample_timeout_s:g} s "
                f"after {search.stats.n_llm_calls} teacher calls"
            ) from None
        seconds = time.monotonic() - t0
        # the ground truth is read only now, from the end of a (no-op) single-turn episode
        _, _, _, _, final = env.step("")
        gt = final.get("ground_truth", {})
        return {
            "id": sid,
            "env_id": env_id,
            "split": info["split"],
            "question": obs["text"],
            "image": "procedural" if u.config.spec.procedural else None,
            "frame": info["frame"],
            "env_kwargs": dict(cfg.env_kwargs),
            "true_answer": gt.get("answer"),
            "system_prompt": system_prompt,
            "k_thoughts": k,
            "tree": root.to_dict(),
            "root_value": root.value,
            "global_search_time": seconds,
            "n_llm_calls": search.stats.n_llm_calls,
            "search_stats": search.stats.to_dict(),
            "config": {"seed": cfg.seed, **dataclasses.asdict(cfg.mcts)},
            "vigorl_version": VIGORL_VERSION,
        }
    except Exception as e:  # a failed sample becomes an error line, never an escape
        logger.warning("mcts: sample %s failed: %s: %s", sid, type(e).__name__, e)
        return {
            "id": sid,
            "env_id": env_id,
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }
    finally:
        forget = getattr(policy, "forget", None)
        if forget is not None and image is not None:
            forget(image)


def summarize(path: str | Path, env_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """Trees, errors and the root-correct ratio (share of trees with root value > 0) of a file."""
    trees, errors = read_trees(path)
    recs = [r for r in trees.values() if env_ids is None or r.get("env_id") in env_ids]
    correct = sum(float(r["tree"].get("value", 0.0)) > 0 for r in recs)
    return {
        "trees": len(recs),
        "errors": len(errors),
        "root_correct_ratio": correct / len(recs) if recs else 0.0,
        "n_llm_calls": sum(int(r.get("n_llm_calls", 0)) for r in recs),
    }

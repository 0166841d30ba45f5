"""Benchmark runner: policies × envs → per-sample JSONL, a table with 95 % CIs and a picture.

Until the model-backed agents exist, the policies are the chance-level baselines of
`vigorl_agents.baselines` — the floors every model must beat. Runs are resumable: per-sample
results are appended to `samples.jsonl` and samples already there are skipped.

    uv run python -m benchmarks.run                       # procedural suite, 100 samples per env
    uv run python -m benchmarks.run --episodes 20 --envs ViGoRL/SynthSearch-v0
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import tyro
from tqdm import tqdm

import vigorl_env
from benchmarks.machine import machine_name
from vigorl_agents.baselines import BASELINES
from vigorl_agents.stats import wald

log = logging.getLogger("benchmarks.run")


@dataclass(frozen=True)
class Args:
    """Run baselines over envs and report mean ± 95 % CI (SPEC §8.2)."""

    envs: tuple[str, ...] = vigorl_env.PROCEDURAL_IDS
    """Env ids to run (procedural ones need no data)."""
    baselines: tuple[str, ...] = tuple(BASELINES)
    """Policies: full_view_guess, random_zoom."""
    episodes: int = 100
    """Samples per env (indices 0 … episodes−1 of the split, in order, SPEC §8.1)."""
    split: str = "test"
    """Split of the procedural datasets (held-out seed space from training)."""
    seed: int = 0
    """Policy seed."""
    out: Path = Path("runs/baselines")
    """Output folder: samples.jsonl, summary.json, table.md, episodes.png."""
    picture: bool = True
    """Write episodes.png: one random-zoom episode per env with its points and crops."""
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra make kwargs for every env (e.g. data_root for real ids)."""


def run_episode(env: gym.Env, policy: Any, index: int) -> dict[str, Any]:
    """One episode; returns the per-sample record (SPEC §8.2 outputs)."""
    obs, info = env.reset(options={"index": index})
    policy.begin(obs, info, env.unwrapped.answer_kind)
    frame = info["frame"]
    sample_id = info["sample_id"]
    while True:
        action = policy.act(obs, info)
        obs, reward, term, trunc, info = env.step(action)
        if term or trunc:
            break
    comps = info["reward_components"]
    return {
        "sample_id": sample_id,
        "index": index,
        "transcript": info["transcript"],
        "score": comps["accuracy"],
        "reward": reward,
        "components": comps,
        "end_reason": info["end_reason"],
        "turns": info["turn"],
        "frame": frame,
        "grounding": info.get("grounding"),
    }


def _load_done(path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    done: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    if path.exists():
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    log.warning(
                        "%s:%d: unreadable line skipped (interrupted write?)", path, line_no
                    )
                    continue
                done[(rec["env_id"], rec["policy"])].append(rec)
    return done


def main(args: Args) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    samples_path = args.out / "samples.jsonl"
    done = _load_done(samples_path)
    (args.out / "config.json").write_text(json.dumps(asdict(args), default=str, indent=2))
    envs = {
        env_id: gym.make(env_id, split=args.split, **_size_kwargs(env_id, args), **args.make_kwargs)
        for env_id in args.envs
    }
    started = time.perf_counter()
    with samples_path.open("a", encoding="utf-8") as out:
        for env_id in args.envs:
            for name in args.baselines:
                policy = BASELINES[name](seed=args.seed)
                env = (
                    envs[env_id]
                    if policy.mode is None
                    else gym.make(
                        env_id,
                        split=args.split,
                        mode=policy.mode,
                        **_size_kwargs(env_id, args),
                        **args.make_kwargs,
                    )
                )
                seen = {r["sample_id"] for r in done[(env_id, name)]}
                todo = [i for i in range(args.episodes) if _sid(env, i) not in seen]
                for index in tqdm(
                    todo, desc=f"{env_id} · {name}", leave=False, disable=not sys.stderr.isatty()
                ):
                    rec = {"env_id": env_id, "policy": name, **run_episode(env, policy, index)}
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
                    done[(env_id, name)].append(rec)
    summary = summarize(done, args)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(summary)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    if args.picture:
        from benchmarks.picture import episodes_picture

        path = episodes_picture(args, args.out / "episodes.png")
        print(f"\npicture: {path}")
    print(f"results: {args.out}/ (samples.jsonl, summary.json, table.md)")
    return summary


def _size_kwargs(env_id: str, args: Args) -> dict[str, Any]:
    return {"size": args.episodes} if env_id in vigorl_env.PROCEDURAL_IDS else {}


def _sid(env: gym.Env, index: int) -> str:
    return env.unwrapped.dataset[index].sample_id


def summarize(done: dict[tuple[str, str], list[dict[str, Any]]], args: Args) -> dict[str, Any]:
    rows = []
    for env_id in args.envs:
        for name in args.baselines:
            recs = [r for r in done[(env_id, name)] if r["index"] < args.episodes]
            if not recs:
                continue
            acc = wald([r["score"] for r in recs])
            rew = wald([r["reward"] for r in recs])
            exact = wald([float(r["score"] == 1.0) for r in recs])
            ends: dict[str, int] = defaultdict(int)
            for r in recs:
                ends[r["end_reason"]] += 1
            rows.append(
                {
                    "env_id": env_id,
                    "policy": name,
                    "n": acc.n,
                    "accuracy": acc.to_dict(),
                    "exact": exact.to_dict(),
                    "reward": rew.to_dict(),
                    "end_reasons": dict(ends),
                }
            )
    return {
        "split": args.split,
        "ci": "wald 95% (SPEC §8.2)",
        "machine": machine_name(),
        "rows": rows,
    }


def markdown_table(summary: dict[str, Any]) -> str:
    lines = [
        "| env | policy | N | accuracy % (±95 % CI) | exact % | mean reward ×100 |",
        "|---|---|---|---|---|---|",
    ]
    for r in summary["rows"]:
        a, e, w = r["accuracy"], r["exact"], r["reward"]
        lines.append(
            f"| {r['env_id']} | {r['policy']} | {r['n']} | {a['mean']:.1f} ± {a['half_width']:.1f} "
            f"| {e['mean']:.1f} | {w['mean']:.1f} ± {w['half_width']:.1f} |"
        )
    lines.append(f"\nsplit {summary['split']}, CI {summary['ci']}, machine: {summary['machine']}")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    main(tyro.cli(Args))

"""Evaluation (SPEC §8): any policy over any env ids, resumable, mean ± 95 % CI, tables and a plot.

Per-sample score = the episode's `reward_components["accuracy"]` (web-action partial credit 0.5
counts as 0.5; the exact-match rate is reported beside it). Results are appended to
`samples.jsonl` as each episode ends; a rerun skips the (env, sample, episode) triples already
there, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

import vigorl_env
from vigorl_agents.policy import Policy, SamplingParams
from vigorl_agents.rollout import EpisodeSpec, Trajectory, make_env_factory, run_episodes
from vigorl_agents.stats import bootstrap, wald, wilson

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how to decode (defaults: SPEC §8.1)."""

    env_ids: tuple[str, ...] = vigorl_env.PROCEDURAL_IDS
    """Env ids to evaluate."""
    split: str | None = None
    """Split (None: each benchmark's default; procedural envs: test)."""
    limit: int | None = 100
    """First N samples in index order (None: the whole split; required for unlimited procedural data)."""
    k: int = 1
    """Episodes per sample (avg@k: per-sample score = mean over the k)."""
    temperature: float = 0.5
    top_p: float | None = None
    """None: 1.0 single-turn, 0.99 multi-turn (SPEC §8.1)."""
    top_k: int = -1
    max_tokens: int = 2048
    """Per-turn cap on new tokens."""
    seed: int = 42
    greedy: bool = False
    """Temperature 0 (then k must be 1)."""
    env_kwargs: dict[str, int | float | bool | str] = field(default_factory=dict)
    """Extra make kwargs for every env (mode, accuracy_fn="lenient_upstream", data_root, frame bounds…)."""
    max_in_flight: int = 32
    """Episodes in flight at once."""
    max_batch: int = 64
    """Largest batch handed to the policy."""

    def sampling(self, mode: str) -> SamplingParams:
        top_p = self.top_p if self.top_p is not None else (0.99 if mode == "multi_turn" else 1.0)
        temperature = 0.0 if self.greedy else self.temperature
        return SamplingParams(
            n=1,
            temperature=temperature,
            top_p=top_p,
            top_k=self.top_k,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )


def _make_kwargs(env_id: str, cfg: EvalConfig, extra: dict[str, Any]) -> dict[str, Any]:
    kw = {**cfg.env_kwargs, **extra}
    if env_id in vigorl_env.PROCEDURAL_IDS:
        kw.setdefault("split", cfg.split or "test")
        if cfg.limit is not None:
            kw.setdefault("size", cfg.limit)
    elif cfg.split is not None:
        kw.setdefault("split", cfg.split)
    return kw


def _load_done(path: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if not path.exists():
        return done
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                done[(rec["env_id"], rec["sample_id"], int(rec["episode"]))] = rec
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("%s:%d: unreadable record skipped (interrupted write?)", path, line_no)
    return done


def sample_record(traj: Trajectory, policy_name: str) -> dict[str, Any]:
    """The per-sample JSONL record (SPEC §8.2)."""
    answer = (
        traj.transcript.rsplit("<answer>", 1)[-1].split("</answer>", 1)[0].strip()
        if "<answer>" in traj.transcript
        else None
    )
    return {
        "env_id": traj.env_id,
        "policy": policy_name,
        "sample_id": traj.sample_id,
        "index": traj.index,
        "episode": traj.episode,
        "split": traj.split,
        "score": traj.score,
        "exact": float(traj.score == 1.0),
        "reward": traj.reward,
        "components": traj.components,
        "end_reason": traj.end_reason,
        "turns": len(traj.turns),
        "answer": answer,
        "transcript": traj.transcript,
        "frame": traj.frame,
        "grounding": traj.grounding,
        "config_fingerprint": traj.config_fingerprint,
        "trajectory": traj.to_dict(),
    }


async def evaluate(
    policy: Policy | Callable[[str], Policy],
    cfg: EvalConfig,
    out: Path,
    *,
    policy_name: str = "policy",
    env_kwargs_for: Callable[[str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate `policy` (or a per-env-id policy factory) on every env of `cfg`; write `out/`."""
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / "samples.jsonl"
    done = _load_done(samples_path)
    (out / "eval_config.json").write_text(
        json.dumps({"policy": policy_name, **asdict(cfg)}, indent=2, default=str)
    )
    with samples_path.open("a", encoding="utf-8") as sink:
        for env_id in cfg.env_ids:
            kw = _make_kwargs(env_id, cfg, env_kwargs_for(env_id) if env_kwargs_for else {})
            make = make_env_factory(env_id, **kw)
            probe = make()
            n = probe.unwrapped.num_samples
            if cfg.limit is None and n >= 2**31:
                raise ValueError(f"{env_id}: the procedural split is unlimited; set limit")
            n = n if cfg.limit is None else min(n, cfg.limit)
            mode = probe.unwrapped.config.mode
            ids = [probe.unwrapped.sample_id_at(i) for i in range(n)]
            probe.close()
            todo = [
                EpisodeSpec(i, e)
                for i in range(n)
                for e in range(cfg.k)
                if (env_id, ids[i], e) not in done
            ]
            pol = policy(env_id) if callable(policy) and not hasattr(policy, "generate") else policy
            bar = tqdm(total=len(todo), desc=f"{env_id} · {policy_name}", leave=False, disable=None)

            def on_done(traj: Trajectory, _bar=bar) -> None:
                rec = sample_record(traj, policy_name)
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
                done[(traj.env_id, traj.sample_id, traj.episode)] = rec
                _bar.update(1)

            if todo:
                await run_episodes(
                    make,
                    pol,
                    todo,
                    cfg.sampling(mode),
                    max_in_flight=cfg.max_in_flight,
                    max_batch=cfg.max_batch,
                    on_done=on_done,
                )
            bar.close()
    summary = summarize(done.values(), cfg, policy_name)
    write_reports(summary, out)
    return summary


def summarize(records, cfg: EvalConfig, policy_name: str) -> dict[str, Any]:
    """Aggregate per env: avg@k per sample, then mean ± CI over samples (SPEC §8.2)."""
    by_env: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["env_id"] in cfg.env_ids and r.get("policy", policy_name) == policy_name:
            by_env[r["env_id"]][r["sample_id"]].append(r)
    rows = []
    for env_id in cfg.env_ids:
        samples = by_env.get(env_id, {})
        if cfg.limit is not None:
            samples = {s: v for s, v in samples.items() if v[0]["index"] < cfg.limit}
        if not samples:
            continue
        per_sample = [sum(r["score"] for r in v) / len(v) for v in samples.values()]
        exact = [sum(r["exact"] for r in v) / len(v) for v in samples.values()]
        reward = [sum(r["reward"] for r in v) / len(v) for v in samples.values()]
        ends = Counter(r["end_reason"] for v in samples.values() for r in v)
        first = next(iter(samples.values()))[0]
        rows.append(
            {
                "env_id": env_id,
                "split": first["split"],
                "n": len(per_sample),
                "k": cfg.k,
                "accuracy": wald(per_sample).to_dict(),
                "accuracy_wilson": wilson(per_sample).to_dict(),
                "accuracy_bootstrap": bootstrap(per_sample).to_dict(),
                "exact": wald(exact).to_dict(),
                "reward": wald(reward).to_dict(),
                "end_reasons": dict(ends),
                "config_fingerprint": first["config_fingerprint"],
            }
        )
    return {
        "policy": policy_name,
        "ci": "95% Wald, population sigma (SPEC §8.2); Wilson and bootstrap beside",
        "decoding": {
            k: v
            for k, v in asdict(cfg).items()
            if k in ("temperature", "top_p", "top_k", "max_tokens", "seed", "greedy", "k")
        },
        "rows": rows,
    }


def markdown_tables(summary: dict[str, Any]) -> str:
    """One table per split."""
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in summary["rows"]:
        by_split[r["split"]].append(r)
    parts = []
    for split, rows in by_split.items():
        parts.append(f"### {summary['policy']} · split {split}\n")
        parts.append(
            "| env | N | accuracy % (± 95 % CI) | exact % | mean reward ×100 | end reasons |"
        )
        parts.append("|---|---|---|---|---|---|")
        for r in rows:
            a, e, w = r["accuracy"], r["exact"], r["reward"]
            ends = ", ".join(f"{k} {v}" for k, v in sorted(r["end_reasons"].items()))
            parts.append(
                f"| {r['env_id']} | {r['n']} | {a['mean']:.1f} ± {a['half_width']:.1f} | {e['mean']:.1f} "
                f"| {w['mean']:.1f} ± {w['half_width']:.1f} | {ends} |"
            )
        parts.append("")
    return "\n".join(parts)


def write_reports(summary: dict[str, Any], out: Path) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.md").write_text(markdown_tables(summary))
    plot_summary(summary, out / "accuracy.png")


def plot_summary(summary: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of accuracy with 95 % CI error bars, one bar per env."""
    rows = summary["rows"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.6))
    names = [r["env_id"].removeprefix("ViGoRL/").removesuffix("-v0") for r in rows]
    means = [r["accuracy"]["mean"] for r in rows]
    errs = [r["accuracy"]["half_width"] for r in rows]
    ax.bar(names, means, yerr=errs, capsize=4, color="#4C72B0")
    ax.set_ylabel("accuracy % (95 % CI)")
    ax.set_ylim(0, 100)
    ax.set_title(summary["policy"])
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

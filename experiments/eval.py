"""Evaluate a VLM policy on ViGoRL envs (SPEC §8): mean ± 95 % CI per benchmark, tables, a plot.

    # CPU, no downloads: the tiny random Qwen2.5-VL on the procedural suite (garbage text, real pipeline)
    uv run python experiments/eval.py debug

    # a released checkpoint on V*Bench through a local vLLM server (GPU machine, DATA_ROOT set)
    uv run python experiments/eval.py paper --policy.model gsarch/ViGoRL-Multiturn-3b-Visual-Search \
        --eval.env-ids ViGoRL/VStar-v0 --eval.limit None

Results go to `runs/eval/<name>/` (samples.jsonl, summary.json, report.md, accuracy.png) and an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import tyro

from vigorl_agents.eval import EvalConfig, evaluate, markdown_tables
from vigorl_agents.factory import PolicyConfig, open_policy

TINY_PIXELS = 64 * 28 * 28  # the tiny model's processor max: frames and crops must fit (SPEC §3.1)


@dataclass(frozen=True)
class Args:
    """One evaluation job."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "eval"
    """Run name: results in runs/eval/<name>/."""
    out_root: Path = Path("runs/eval")


PRESETS = {
    "debug": (
        "CPU smoke run: tiny random Qwen2.5-VL via transformers, 8 samples per procedural env, "
        "frames and crops sized to the tiny processor (224 px crops), 48 new tokens per turn.",
        Args(
            policy=PolicyConfig(backend="hf", model="tiny-qwen2.5-vl", device="cpu"),
            eval=EvalConfig(
                limit=8, max_tokens=48, env_kwargs={"max_pixels": TINY_PIXELS, "crop_size": 224}
            ),
            name="debug",
        ),
    ),
    "paper": (
        "Paper decoding (SPEC §8.1) through a local vLLM server; set --policy.model and --eval.env-ids.",
        Args(
            policy=PolicyConfig(backend="vllm-server", max_pixels=12_960_000),
            eval=EvalConfig(limit=None),
            name="paper",
        ),
    ),
}


def run(args: Args) -> dict:
    out = args.out_root / args.name
    policy_name = f"{args.policy.model} ({args.policy.backend})"

    async def go() -> dict:
        async with open_policy(args.policy) as policy:
            return await evaluate(policy, args.eval, out, policy_name=policy_name)

    summary = asyncio.run(go())
    print(markdown_tables(summary))
    print(f"results: {out}/ (samples.jsonl, summary.json, report.md, accuracy.png)")
    return summary


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configs = {k: (desc, a) for k, (desc, a) in PRESETS.items()}
    args = tyro.extras.overridable_config_cli(configs)
    run(replace(args))


if __name__ == "__main__":
    main()

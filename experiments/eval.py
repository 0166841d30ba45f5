"""Evaluate a VLM policy on ViGoRL envs: mean ± 95 % CI per benchmark, tables, a plot
(docs/evaluation.md).

    # CPU, no downloads: the tiny random Qwen2.5-VL on the procedural suite (garbage text, real pipeline)
    uv run python experiments/eval.py debug

    # a released checkpoint on V*Bench through a local vLLM server (GPU machine, DATA_ROOT set)
    uv run python experiments/eval.py paper --policy.model gsarch/ViGoRL-Multiturn-3b-Visual-Search \
        --eval.env-ids ViGoRL/VStar-v0 --eval.limit None

    # any preset: env make kwargs as KEY=VALUE, e.g. the multi-turn protocol with the lenient judge
    uv run python experiments/eval.py debug --eval.env-kwargs mode=multi_turn accuracy_fn=lenient_upstream

Results go to `runs/eval/<name>/` (samples.jsonl, eval_config.json, summary.json, report.md,
accuracy.png). An interrupted run resumes where it stopped; a rerun with other settings under the
same name is refused (pass --eval.overwrite to start afresh, or another --name).

Frames and crops are fitted to the policy's image-processor bounds
(`vigorl_agents.frame_bounds`): an env kwarg the processor cannot take unchanged is adapted (and
logged with the --policy flag that would keep the benchmark's sizes), or, if it was given
explicitly, refused with that flag named.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from vigorl_agents.cli import setup_logging
from vigorl_agents.eval import (
    EvalConfig,
    ResumeConfigError,
    check_resume,
    evaluate,
    markdown_tables,
)
from vigorl_agents.factory import PolicyConfig, open_policy
from vigorl_agents.frame_bounds import fit_env_kwargs_to_policy
from vigorl_agents.policy import PolicyUnavailableError
from vigorl_env import DataNotFoundError

log = logging.getLogger("experiments.eval")


@dataclass(frozen=True)
class Args:
    """One evaluation job."""

    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "eval"
    """Run name: results in runs/eval/<name>/."""
    out_root: Path = Path("runs/eval")
    verbose: Annotated[bool, tyro.conf.arg(aliases=("-v",))] = False
    """Debug logging, and the libraries' own messages and progress bars (quiet by default)."""


PRESETS = {
    "debug": (
        "CPU smoke run: tiny random Qwen2.5-VL via transformers, 8 samples per procedural env, "
        "frames and crops fitted to the tiny processor (224 px crops), 48 new tokens per turn.",
        Args(
            policy=PolicyConfig(backend="hf", model="tiny-qwen2.5-vl", device="cpu"),
            eval=EvalConfig(limit=8, max_tokens=48),
            name="debug",
        ),
    ),
    "paper": (
        "Paper decoding (docs/evaluation.md) through a local vLLM server; set --policy.model and "
        "--eval.env-ids.",
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
    # fit (or check) every env's frames against the processor before a model is loaded
    env_kwargs = {
        env_id: fit_env_kwargs_to_policy(args.policy, env_id, args.eval.env_kwargs)
        for env_id in args.eval.env_ids
    }
    check_resume(out, args.eval, policy_name, args.policy)  # before a model is loaded

    async def go() -> dict:
        async with open_policy(args.policy) as policy:
            return await evaluate(
                policy,
                args.eval,
                out,
                policy_name=policy_name,
                policy_config=args.policy,
                env_kwargs_for=env_kwargs.__getitem__,
            )

    summary = asyncio.run(go())
    print(markdown_tables(summary))
    print(f"results: {out}/ (samples.jsonl, summary.json, report.md, accuracy.png)")
    return summary


def main() -> None:
    args = tyro.extras.overridable_config_cli(PRESETS)
    setup_logging(args.verbose)
    try:
        run(args)
    except (ResumeConfigError, PolicyUnavailableError, DataNotFoundError) as e:
        # errors whose message says what to do: no traceback
        log.error("%s", e)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

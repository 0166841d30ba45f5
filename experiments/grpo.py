"""GRPO on grounded reasoning (docs/grpo.md): single-turn and multi-turn zoom, one process.

    # CPU, no downloads: the tiny random Qwen2.5-VL on procedural envs, a few RL steps
    uv run python -m experiments.grpo debug-single
    uv run python -m experiments.grpo debug-multi
    uv run python -m experiments.grpo debug-multi --grpo.rollout-backend vllm-engine

    # paper conditions (one GPU; the SFT checkpoint as --grpo.model)
    python -m experiments.grpo vigorl-spatial --grpo.model runs/sft/spatial/checkpoint-300
    python -m experiments.grpo vanilla-spatial --grpo.model Qwen/Qwen2.5-VL-3B-Instruct
    python -m experiments.grpo vigorl-search-multi --grpo.model runs/sft/search/checkpoint-200

Results go to `runs/grpo/<name>/` (checkpoint-N/ Hugging Face folders, metrics.jsonl, tb/ with
rewards, accuracy, KL, clip fraction, timings and drawn validation trajectories); an interrupted
run resumes from its latest checkpoint. Every field of `GRPOConfig` is a flag (`--grpo.FIELD`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import tyro

from vigorl_agents.cli import setup_logging
from vigorl_agents.train.grpo import GRPOConfig, train_grpo

logger = logging.getLogger(__name__)

TINY_PIXELS = 64 * 28 * 28
"""The tiny processor's max_pixels: frames and crops must fit it (docs/geometry.md)."""


@dataclass(frozen=True)
class Args:
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    name: str = "grpo"
    """Run name: outputs in out_root/<name>/ unless grpo.output_dir is set explicitly."""
    out_root: Path = Path("runs/grpo")
    verbose: bool = False


def _debug(env_id: str, **env_kwargs) -> GRPOConfig:
    return GRPOConfig(
        model="tiny-qwen2.5-vl",
        env_id=env_id,
        env_kwargs={"max_pixels": TINY_PIXELS, **env_kwargs},
        device="cpu",
        lr=1e-5,
        steps=4,
        prompts_per_step=4,
        group_size=4,
        mini_batch=8,
        micro_batch=4,
        max_prompt_tokens=1024,
        max_response_tokens=192,
        val_samples=4,
        val_every=2,
        save_every=2,
        log_trajectories=2,
    )


_MULTI = dict(  # docs/grpo.md#defaults: multi-turn column
    group_size=8,
    mini_batch=64,
    max_response_tokens=4096,
    per_turn_tokens=1024,
    max_grad_norm=0.2,
)
_PAPER = dict(
    model="Qwen/Qwen2.5-VL-3B-Instruct",
    bf16=True,
    weights_dtype="bf16",
    gradient_checkpointing=True,
    attn_implementation="sdpa",
    rollout_backend="vllm-engine",
    micro_batch=2,
)

PRESETS: dict[str, tuple[str, Args]] = {
    "debug-single": (
        "CPU minutes: tiny random model, SynthSpatial single-turn, 4 RL steps",
        Args(grpo=_debug("ViGoRL/SynthSpatial-v0"), name="debug-single"),
    ),
    "debug-multi": (
        "CPU minutes: tiny random model, SynthSearch multi-turn zoom (224-px crops), 4 RL steps",
        Args(
            grpo=replace(
                _debug("ViGoRL/SynthSearch-v0", mode="multi_turn", crop_size=224),
                group_size=4,
                per_turn_tokens=48,
                max_response_tokens=512,
                max_grad_norm=0.2,
            ),
            name="debug-multi",
        ),
    ),
    "vanilla-spatial": (
        "paper: vanilla thinking GRPO (no points required), spatial (SAT-2)",
        Args(
            grpo=GRPOConfig(**_PAPER, env_id="ViGoRL/SAT2-v0", env_kwargs={"variant": "vanilla"}),
            name="vanilla-spatial",
        ),
    ),
    "vigorl-spatial": (
        "paper: ViGoRL single-turn GRPO, spatial (SAT-2), from the MCTS-SFT checkpoint",
        Args(grpo=GRPOConfig(**_PAPER, env_id="ViGoRL/SAT2-v0"), name="vigorl-spatial"),
    ),
    "vigorl-web-grounding": (
        "paper: ViGoRL single-turn GRPO, web grounding (OS-Atlas), 6144 prompt tokens",
        Args(
            grpo=GRPOConfig(**_PAPER, env_id="ViGoRL/OSAtlas-v0", max_prompt_tokens=6144),
            name="vigorl-web-grounding",
        ),
    ),
    "vigorl-search-multi": (
        "paper: ViGoRL multi-turn zoom GRPO, visual search (8 per group, 1024-token turns)",
        Args(
            grpo=GRPOConfig(
                **_PAPER,
                **_MULTI,
                env_id="ViGoRL/VisualSearchSA-v0",
                env_kwargs={"mode": "multi_turn"},
            ),
            name="vigorl-search-multi",
        ),
    ),
    "synth-search-multi": (
        "procedural: multi-turn zoom GRPO on SynthSearch (no download), paper batch semantics",
        Args(
            grpo=GRPOConfig(
                **_PAPER,
                **_MULTI,
                env_id="ViGoRL/SynthSearch-v0",
                env_kwargs={"mode": "multi_turn"},
            ),
            name="synth-search-multi",
        ),
    ),
}


def main(args: Args) -> dict:
    setup_logging(args.verbose)
    cfg = args.grpo
    if cfg.output_dir == GRPOConfig.output_dir:
        cfg = replace(cfg, output_dir=str(args.out_root / args.name))
    result = train_grpo(cfg)
    last = result["history"][-1] if result["history"] else {}
    logger.info(
        "done: step %d, last reward %.3f accuracy %.3f, checkpoint %s",
        result["step"],
        last.get("reward", float("nan")),
        last.get("accuracy", float("nan")),
        result["checkpoint"],
    )
    return result


if __name__ == "__main__":
    main(tyro.extras.overridable_config_cli(PRESETS))

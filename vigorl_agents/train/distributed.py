"""DeepSpeed ZeRO-2/3 pieces of the SFT trainer that need no DeepSpeed import (docs/sft.md#multi-gpu-with-deepspeed).

* `dist_env()` reads rank / world size / local rank from the launcher's environment
  (`deepspeed --num_gpus N -m ...` and `torchrun --nproc_per_node N -m ...` both set RANK,
  WORLD_SIZE and LOCAL_RANK).
* `resolve_grad_accum` keeps the effective batch fixed when the GPU count changes:
  `per_device_batch × grad_accum × world_size = global_batch` (paper: 32).
* `deepspeed_config` builds the DeepSpeed config dict from an `SFTConfig`: bf16, batch sizes,
  gradient clipping, ZeRO stage parameters. The optimizer and the warmup-cosine schedule are NOT in
  it: the trainer hands its own torch AdamW and LambdaLR to `deepspeed.initialize`, so the schedule
  is the same object as in the one-process path.
* `rank_micro_batches` splits the micro-batches of one optimizer step between ranks
  (DistributedSampler-like: micro-batch k of the step goes to rank k mod world_size), so 1 GPU with
  grad_accum G·W and W GPUs with grad_accum G see exactly the same micro-batches per step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

ZERO_STAGES = {"zero2": 2, "zero3": 3}


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Rank / world size / local rank from the launcher's environment (1 process if unset)."""
    return DistEnv(
        rank=int(os.environ.get("RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def resolve_grad_accum(
    per_device_batch: int, grad_accum: int, global_batch: int | None, world_size: int
) -> int:
    """Accumulation steps per rank: `grad_accum` as given, or derived from `global_batch` so that
    per_device_batch × grad_accum × world_size == global_batch (raises if it does not divide)."""
    if global_batch is None:
        return grad_accum
    per_step = per_device_batch * world_size
    if global_batch < per_step or global_batch % per_step:
        raise ValueError(
            f"global_batch {global_batch} is not a multiple of per_device_batch {per_device_batch}"
            f" × world_size {world_size} = {per_step}"
        )
    return global_batch // per_step


def _zero_section(stage: int) -> dict[str, Any]:
    if stage == 2:
        return {
            "stage": 2,
            "allgather_partitions": True,
            "allgather_bucket_size": 500_000_000,
            "overlap_comm": True,
            "reduce_scatter": True,
            "reduce_bucket_size": 500_000_000,
            "contiguous_gradients": True,
            "round_robin_gradients": True,
        }
    if stage == 3:
        return {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "sub_group_size": 1_000_000_000,
            "reduce_bucket_size": 500_000_000,
            "stage3_prefetch_bucket_size": 500_000_000,
            "stage3_param_persistence_threshold": 1_000_000,
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    raise ValueError(f"unsupported ZeRO stage {stage}")


def deepspeed_config(cfg: Any, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config dict for `cfg` (an SFTConfig) on `world_size` ranks.

    `cfg.deepspeed` is "zero2", "zero3" or a JSON file; in a file, batch sizes, clipping and
    bf16 may be "auto" or absent (filled from `cfg`) but must agree with `cfg` when given."""
    if not cfg.deepspeed:
        raise ValueError("SFTConfig.deepspeed is not set")
    gas = resolve_grad_accum(cfg.per_device_batch, cfg.grad_accum, cfg.global_batch, world_size)
    ours: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.per_device_batch,
        "gradient_accumulation_steps": gas,
        "train_batch_size": cfg.per_device_batch * gas * world_size,
        "gradient_clipping": cfg.max_grad_norm,
        "bf16": {"enabled": bool(cfg.bf16)},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1_000_000_000,
        "wall_clock_breakdown": False,
    }
    if cfg.deepspeed in ZERO_STAGES:
        return {**ours, "zero_optimization": _zero_section(ZERO_STAGES[cfg.deepspeed])}
    with open(cfg.deepspeed, encoding="utf-8") as f:
        user = json.load(f)
    if not isinstance(user, dict):
        raise ValueError(f"{cfg.deepspeed}: a DeepSpeed config must be a JSON object")
    for key in ("optimizer", "scheduler"):
        if key in user:
            raise ValueError(
                f"{cfg.deepspeed}: drop '{key}': the trainer passes its own AdamW and "
                "warmup-cosine schedule to deepspeed.initialize"
            )
    out = dict(user)
    for key, value in ours.items():
        given = out.get(key, "auto")
        if key in ("bf16", "fp16") and isinstance(given, dict):
            enabled = given.get("enabled", "auto")
            if enabled not in ("auto", value["enabled"]):
                raise ValueError(
                    f"{cfg.deepspeed}: {key}.enabled={enabled} but SFTConfig says "
                    f"{value['enabled']}"
                )
            out[key] = {**given, "enabled": value["enabled"]}
        elif given == "auto":
            out[key] = value
        elif key in ("steps_per_print", "wall_clock_breakdown", "zero_allow_untested_optimizer"):
            continue
        elif given != value:
            raise ValueError(f"{cfg.deepspeed}: {key}={given} but SFTConfig gives {value}")
    zero = out.get("zero_optimization")
    if isinstance(zero, dict) and zero.get("stage") == 3:
        zero.setdefault("stage3_gather_16bit_weights_on_model_save", True)
    return out


def zero_stage(ds_config: dict[str, Any]) -> int:
    zero = ds_config.get("zero_optimization") or {}
    return int(zero.get("stage", 0))


def rank_micro_batches(micro_batches: list[T], rank: int, world_size: int) -> list[T]:
    """This rank's share of one optimizer step's micro-batches (micro-batch k → rank k mod W)."""
    return micro_batches[rank::world_size]

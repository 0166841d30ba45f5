"""The training engine that SFT and GRPO share: model, precision, kernels, LoRA, optimizer and
schedule, the DeepSpeed path, checkpoints and resume (docs/sft.md, docs/grpo.md).

A trainer is a loss and a data source over this engine, as TRL's trainers share one base: the
trainer builds micro-batches, calls `forward(fn, batch)` with its loss function, `backward(loss)`
per micro-batch and `optimizer_step()` once per optimizer step; `save(state)` writes a
checkpoint and `resume_state` / `restore(state)` bring a run back. Nothing about models,
precision or DeepSpeed lives in a trainer.

* **Trainable**: the language model (full fine-tuning); the vision tower and its patch merger are
  frozen by default (`freeze_vision`). `lora=True` trains peft LoRA adapters on the language
  model's projections instead (`train.lora`; merged weights in every checkpoint).
* **Precision**: `weights_dtype="fp32"` (default) keeps float32 weights; `bf16=True` runs the
  forward under `torch.autocast(bfloat16)`. `"bf16"` keeps the model in bfloat16 with float32
  master weights in AdamW (`train.precision`), as DeepSpeed's bf16 mode does; `"bf16_pure"` drops
  the master copy (least memory; updates below a bf16 step of the weight are lost).
* **Optimizer**: AdamW (betas 0.9/0.999, weight decay on ≥2-D weights only); linear warmup over
  `warmup_ratio` of the planned steps, then cosine (SFT) or constant (GRPO); gradient norm clipped
  to `max_grad_norm`; a non-finite norm skips the update (counted by the trainer).
* **DeepSpeed** ZeRO-2/3 through the standard launcher (`deepspeed="zero2" | "zero3" | <json>`):
  the same AdamW and schedule are handed to `deepspeed.initialize`; the HF model is wrapped in a
  module whose forward runs the trainer's loss function, so that ZeRO-3's hooks see the whole
  forward; checkpoints hold the HF folder (ZeRO-3: 16-bit weights gathered from all ranks) plus
  DeepSpeed's own state, pre-read with the restricted unpickler (`checkpoint`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vigorl_agents.train.checkpoint import (
    CHECKPOINT_RE,
    DS_DIR,
    OPTIM_FILE,
    STATE_FILE,
    STATE_VERSION,
    CheckpointError,
    check_deepspeed_pickles,
    checkpoint_files,
    checksum_problems,
    hash_files,
    list_checkpoints,
    read_checkpoint_state,
    rng_state,
    seed_all,
    set_rng_state,
    write_json,
)
from vigorl_agents.train.distributed import (
    DistEnv,
    deepspeed_config,
    dist_env,
    resolve_grad_accum,
    zero_stage,
)
from vigorl_agents.train.lora import (
    ADAPTER_DIR,
    add_lora,
    load_adapter,
    merged_state_dict,
    save_adapter,
)
from vigorl_agents.train.precision import MasterWeights

logger = logging.getLogger(__name__)


@dataclass
class EngineConfig:
    """What every trainer sets about the model and its optimization (SFTConfig, GRPOConfig)."""

    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """HF folder, Hub id or `tiny-qwen2.5-vl` / `tiny-qwen2-vl`."""
    output_dir: str = "runs/default"
    lr: float = 1e-6
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    per_device_batch: int = 1
    grad_accum: int = 4
    """Paper SFT: 1 × 4 × 8 GPUs = 32 sequences per step; on fewer GPUs raise this to keep 32."""
    bf16: bool = False
    """Autocast the forward to bfloat16 (float32 master weights). Paper runs: True on GPU."""
    weights_dtype: Literal["fp32", "bf16", "bf16_pure"] = "fp32"
    """"fp32" (default): float32 weights, forward under autocast when `bf16`. "bf16": the model in
    bfloat16 (no autocast) with float32 master weights in AdamW (`train.precision`; what DeepSpeed
    bf16 does). "bf16_pure": bf16 weights and AdamW state, no master copy: least memory, but
    updates smaller than a bf16 step of the weight round away (at lr 1e-6 nearly all of them).
    Single process only; DeepSpeed has its own bf16 config."""
    gradient_checkpointing: bool = False
    freeze_vision: bool = True
    lora: bool = False
    """LoRA adapters on the language model's projections instead of full fine-tuning (peft;
    `train.lora`). Checkpoints hold the merged weights (servable as they are) + `adapter/`."""
    lora_rank: int = 64
    lora_alpha: float = 128.0
    lora_dropout: float = 0.05
    vision_attention: Literal["grouped", "transformers"] = "grouped"
    """"grouped": the vision tower's block-diagonal attention as one SDPA call per distinct segment
    length (`models.vision_attention`; same result, ~9k fewer kernel launches per 4 × 1008²
    images). "transformers": its per-window loop. Flash-attention models keep their varlen path."""
    liger: bool = False
    """Liger kernels (GPU extra `liger-kernel`, CUDA only): fused RMSNorm, SwiGLU (language
    model and the vision tower's gated MLP) and RoPE (language model process-wide; vision RoPE
    through the grouped vision attention). See `apply_liger`."""
    seed: int = 0
    max_grad_norm: float = 1.0
    device: str = "auto"
    min_pixels: int | None = None
    """Processor pixel bounds override (must bracket the data's model frames:
    docs/backends.md#image-sizes-the-processor-must-keep-the-frame)."""
    max_pixels: int | None = None
    attn_implementation: str | None = None
    """e.g. "sdpa" or "flash_attention_2" (paper); None = transformers' default."""
    save_optimizer: bool = True
    """Write optimizer.pt and the RNG states (exact resume). False: model-only checkpoints
    (their trainer_state.json still records the files' sha256, but they cannot be resumed)."""
    global_batch: int | None = None
    """Effective batch (sequences per optimizer step) over all ranks; when set, grad_accum is
    derived: per_device_batch × grad_accum × world_size = global_batch (paper SFT: 32)."""
    deepspeed: str | None = None
    """None (one process), "zero2", "zero3" or a DeepSpeed JSON config; needs the launcher."""


# =========================================================================== model


def freeze_vision(model: Any) -> int:
    """Freeze the vision tower including the patch merger; return the number of frozen params."""
    visual = getattr(getattr(model, "model", model), "visual", None) or getattr(
        model, "visual", None
    )
    if visual is None:
        raise ValueError(f"{type(model).__name__} has no `visual` module to freeze")
    n = 0
    for p in visual.parameters():
        p.requires_grad_(False)
        n += p.numel()
    return n


def drop_input_grad_hooks(model: Any) -> int:
    """Remove every forward hook that `enable_input_require_grads` registered (all of them:
    `disable_input_require_grads` only knows the last call's, so a second enable leaks hooks)."""
    n = 0
    for module in model.modules():
        for key, fn in list(module._forward_hooks.items()):
            if getattr(fn, "__name__", "") == "make_inputs_require_grads":
                del module._forward_hooks[key]
                n += 1
    model._require_grads_hooks = []
    if hasattr(model, "_require_grads_hook"):
        del model._require_grads_hook
    return n


def _fn_module(model: Any) -> Any:
    """nn.Module around the HF model whose forward runs a trainer's loss function on it: what
    DeepSpeed wraps, so that ZeRO-3's hooks see the whole forward (root module included)."""
    import torch

    class LossFnModule(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, fn: Callable[[Any, Any], Any], batch: Any) -> Any:
            return fn(self.inner, batch)

    return LossFnModule(model)


def strip_prefix(sd: dict[str, Any], prefix: str = "inner.") -> dict[str, Any]:
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in sd.items()}


def _load_model(path: str, cfg: EngineConfig, device: Any):
    import torch
    from transformers import AutoProcessor

    from vigorl_agents.models.load import load_weights, set_processor_pixel_bounds

    bf16_weights = cfg.weights_dtype in ("bf16", "bf16_pure") and not cfg.deepspeed
    model = load_weights(
        path,
        dtype=torch.bfloat16 if bf16_weights else torch.float32,
        device=device,
        attn_implementation=cfg.attn_implementation,
        seed=cfg.seed,
    )
    processor = AutoProcessor.from_pretrained(path)
    set_processor_pixel_bounds(processor, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
    return model, processor


def speedups(model: Any, cfg: EngineConfig) -> dict[str, Any]:
    """Apply the configured kernel substitutions to a loaded model; return what was applied."""
    from vigorl_agents.models.vision_attention import set_vision_attention

    applied: dict[str, Any] = {
        "grouped_vision_attention_modules": set_vision_attention(model, cfg.vision_attention)
    }
    if cfg.liger:
        applied["liger"] = apply_liger(model)
    return applied


def apply_liger(model: Any) -> list[str]:
    """Liger kernels (Triton; GPU only) on this model: fused RMSNorm and SwiGLU MLP (language model
    and vision blocks), fused rotary embedding (vision: per attention module; language model: the
    `apply_rotary_pos_emb` of the transformers modeling file, i.e. process-wide for that
    architecture, as Liger's own patches do).

    Not used: Liger's M-RoPE patch (transformers 5 folds the M-RoPE sections into the rotary
    module and no longer calls the function it replaces: a silent no-op) and its cross-entropy
    (`losses.token_logprobs` already computes logits at scored positions only)."""
    import sys

    from vigorl_agents.models.vision_attention import uses_grouped_attention

    try:
        from liger_kernel.transformers import monkey_patch
        from liger_kernel.transformers.rope import (
            liger_rotary_pos_emb,
            liger_rotary_pos_emb_vision,
        )
        from liger_kernel.transformers.swiglu import LigerSwiGLUMLP
    except ImportError as e:
        raise ImportError(
            "liger=True needs the `liger-kernel` package (GPU extra: pip install "
            "'vigorl[gpu]'); it runs on CUDA only"
        ) from e
    name = type(model).__name__
    fns = {
        "Qwen2_5_VLForConditionalGeneration": monkey_patch.apply_liger_kernel_to_qwen2_5_vl,
        "Qwen2VLForConditionalGeneration": monkey_patch.apply_liger_kernel_to_qwen2_vl,
    }
    if name not in fns:
        raise ValueError(f"liger=True: no Liger patch for {name}")
    fns[name](
        rope=False,
        rms_norm=True,
        swiglu=True,
        cross_entropy=False,
        fused_linear_cross_entropy=False,
        model=model,
    )
    applied = ["rms_norm", "swiglu"]
    modeling = sys.modules[type(model).__module__]
    if hasattr(modeling, "apply_rotary_pos_emb"):
        modeling.apply_rotary_pos_emb = liger_rotary_pos_emb
        applied.append("rope")
    blocks = list(getattr(model.model.visual, "blocks", []))
    gated = [  # Qwen2.5-VL's vision MLP is SwiGLU (with biases); Qwen2-VL's is fc1-GELU-fc2
        b.mlp
        for b in blocks
        if hasattr(b.mlp, "gate_proj") and type(b.mlp.act_fn).__name__ in ("SiLU", "SiLUActivation")
    ]
    for mlp in gated:
        monkey_patch._patch_swiglu_module(mlp, LigerSwiGLUMLP)
    grouped = [b.attn for b in blocks if uses_grouped_attention(b.attn)]
    for attn in grouped:  # read by the grouped vision attention only (models.vision_attention)
        attn._vigorl_rotary = liger_rotary_pos_emb_vision
    applied += ["vision_swiglu"] * bool(gated) + ["vision_rope"] * bool(grouped)
    return applied


def warmup_schedule(
    optimizer: Any, total_steps: int, warmup_ratio: float, kind: Literal["cosine", "constant"]
) -> Any:
    """Linear warmup over `ceil(warmup_ratio · total_steps)` steps, then cosine decay to 0 over the
    rest (SFT) or constant (GRPO) — transformers' own schedule functions."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    warmup = math.ceil(warmup_ratio * total_steps)
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    raise ValueError(f"schedule must be 'cosine' or 'constant', not {kind!r}")


# =========================================================================== engine


class TrainEngine:
    """Model + optimizer + schedule (+ DeepSpeed) of one run; resume-aware construction.

    On construction the engine finds the latest `checkpoint-N` of
    `cfg.output_dir`, validates it with the trainer's `required_state` keys before anything is
    written, and loads its weights. The trainer then loads its data, calls
    `build_optimizer(total_steps, schedule)`, checks its own part of `resume_state` (data
    position) and calls `restore(resume_state)` for the optimizer, schedule and RNG."""

    def __init__(
        self,
        cfg: EngineConfig,
        *,
        required_state: tuple[str, ...] = (),
        kind: str = "vigorl",
    ):
        import torch

        from vigorl_agents.models.load import resolve_model

        if cfg.lora and cfg.deepspeed and zero_stage(deepspeed_config(cfg, 1)) == 3:
            raise ValueError(
                "LoRA with ZeRO-3 is not supported (the merged checkpoint needs whole weights on "
                "one rank); use deepspeed='zero2': the adapter's optimizer state is small"
            )
        if cfg.per_device_batch < 1 or cfg.grad_accum < 1:
            raise ValueError("per_device_batch and grad_accum must be >= 1")
        if cfg.weights_dtype not in ("fp32", "bf16", "bf16_pure"):
            raise ValueError(
                f"weights_dtype must be 'fp32', 'bf16' or 'bf16_pure', not {cfg.weights_dtype!r}"
            )
        self.cfg = cfg
        self.kind = kind
        self.out = Path(cfg.output_dir)
        self.ds = bool(cfg.deepspeed)
        self.env = dist_env() if self.ds else DistEnv()
        if not self.ds and dist_env().world_size > 1:
            raise ValueError("a multi-process launch needs `deepspeed` (zero2 / zero3)")
        self.world = self.env.world_size
        self.grad_accum = resolve_grad_accum(
            cfg.per_device_batch, cfg.grad_accum, cfg.global_batch, self.world
        )
        self.ds_engine: Any = None
        self.ds_config: dict[str, Any] | None = None
        self.zero_stage = 0
        if self.ds:
            self.ds_config = deepspeed_config(cfg, self.world)  # validates before any import
            try:
                import deepspeed
            except ImportError as e:
                raise ImportError(
                    "`deepspeed` (ZeRO) needs the `deepspeed` package (DeepSpeed is not installed)"
                ) from e
            if not torch.cuda.is_available():
                raise RuntimeError("`deepspeed` (DeepSpeed ZeRO) needs CUDA GPUs")
            torch.cuda.set_device(self.env.local_rank)
            deepspeed.init_distributed(dist_backend="nccl")
            self.device = torch.device("cuda", self.env.local_rank)
        else:
            self.device = torch.device(
                ("cuda" if torch.cuda.is_available() else "cpu")
                if cfg.device == "auto"
                else cfg.device
            )
        # Resume: validate before anything is written (a damaged folder must stay as it is).
        ckpts = list_checkpoints(self.out)
        self.resume_from: Path | None = ckpts[-1][1] if ckpts else None
        self.resume_state = (
            self._read_resume_state(self.resume_from, required_state) if self.resume_from else None
        )
        seed_all(cfg.seed)
        if self.resume_from is not None and cfg.lora:
            adapter = self.resume_from / ADAPTER_DIR / "adapter_model.safetensors"
            if not adapter.is_file():
                raise CheckpointError(
                    f"cannot resume from {self.resume_from}: {adapter} is missing"
                )
        # LoRA resumes from the base weights + the saved adapter (the folder's weights are merged)
        src = (
            str(self.resume_from) if self.resume_from and not cfg.lora else resolve_model(cfg.model)
        )
        self.base_model_path = resolve_model(cfg.model)
        try:
            self.model, self.processor = _load_model(src, cfg, self.device)
        except Exception as e:
            if self.resume_from is None:
                raise
            raise CheckpointError(
                f"cannot resume from {self.resume_from}: loading the model failed ({e})"
            ) from e
        self.frozen = freeze_vision(self.model) if cfg.freeze_vision else 0
        self.speedups = speedups(self.model, cfg)
        self.lora_model: Any = None
        if cfg.lora:
            self.lora_model = add_lora(
                self.model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout
            )
            if self.resume_from is not None:
                try:
                    load_adapter(self.lora_model, self.resume_from)
                except (OSError, ValueError, RuntimeError) as e:
                    raise CheckpointError(f"cannot resume from {self.resume_from}: {e}") from e
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        if cfg.freeze_vision:
            # transformers (gradient checkpointing) and peft hook every input embedding (the vision
            # patch embedding too) to require grad, which only reentrant checkpointing with frozen
            # embeddings needs. Here its one effect would be to pull the frozen vision tower into
            # autograd: forward, recompute and backward of ~9k attention calls per step, for nothing.
            drop_input_grad_hooks(self.model)
        self.model.config.use_cache = False
        self.pad_id = int(self.processor.tokenizer.pad_token_id)
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.total_steps = 0

    def build_optimizer(
        self, total_steps: int, schedule: Literal["cosine", "constant"] = "cosine"
    ) -> None:
        """AdamW + warmup schedule over `total_steps` planned optimizer steps (+ DeepSpeed's
        engine). Second phase of construction: a trainer knows its plan only once its data is
        loaded with the engine's processor."""
        import torch

        cfg = self.cfg
        self.total_steps = total_steps
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.master = (
            MasterWeights(trainable) if cfg.weights_dtype == "bf16" and not self.ds else None
        )
        decay, no_decay = [], []
        for p, q in zip(trainable, self.master.master if self.master else trainable, strict=True):
            (decay if p.ndim >= 2 else no_decay).append(q)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(
            # no empty group (LoRA has no 1-D trainables): DeepSpeed drops empty groups, and the
            # scheduler, built on this optimizer, would then step a group count that is not there
            [g for g in groups if g["params"]],
            lr=cfg.lr,
            betas=(0.9, 0.999),
            # one fused kernel over all parameters (CUDA) instead of foreach launches per group
            fused=self.device.type == "cuda" and not self.ds,
        )
        self.scheduler = warmup_schedule(
            self.optimizer, self.total_steps, cfg.warmup_ratio, schedule
        )
        if self.ds:
            import deepspeed

            self.ds_engine, _, _, _ = deepspeed.initialize(
                model=_fn_module(self.model),
                optimizer=self.optimizer,
                lr_scheduler=self.scheduler,
                config=self.ds_config,
            )
            self.zero_stage = zero_stage(self.ds_config)

    # ------------------------------------------------------------------ facts

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    def num_trainable(self) -> int:
        # ds_numel: ZeRO-3 partitioned params report numel() 0
        return sum(
            getattr(p, "ds_numel", p.numel()) for p in self.model.parameters() if p.requires_grad
        )

    def describe(self) -> str:
        return (
            f"{self.num_trainable()} trainable params, {self.frozen} frozen (vision); device "
            f"{self.device}; rank {self.env.rank}/{self.world}, grad_accum {self.grad_accum}"
            + (f", DeepSpeed ZeRO-{self.zero_stage}" if self.ds else "")
        )

    # ------------------------------------------------------------------ resume

    def _read_resume_state(self, folder: Path, required: tuple[str, ...]) -> dict[str, Any]:
        """`read_checkpoint_state`; under DeepSpeed each rank hashes its share of the files and
        every rank raises the same error (a rank that raised alone would hang the others)."""
        if not self.ds:
            return read_checkpoint_state(folder, required=required)
        import torch.distributed as dist

        state = read_checkpoint_state(folder, deepspeed=True, verify=False, required=required)
        mine = checksum_problems(folder, state["files"], (self.env.rank, self.world))
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, mine)
        problems = sorted({p for g in gathered for p in g})
        if problems:
            raise CheckpointError(f"cannot resume from {folder}: " + "; ".join(problems))
        return state

    def _resume_rng(self, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's RNG state: from the JSON state (one process) or `deepspeed/rng_rank{r}.json`
        (rank 0's when the run has more ranks than the one that saved)."""
        if not self.ds:
            return state["rng"]
        folder = self.resume_from / DS_DIR
        path = folder / f"rng_rank{self.env.rank}.json"
        if not path.is_file():
            logger.warning("%s is missing (saved with fewer ranks): using rank 0's RNG", path)
            path = folder / "rng_rank0.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot resume from {self.resume_from}: {path}: {e}") from e

    def restore(self, state: dict[str, Any]) -> int:
        """Load the optimizer, schedule, master weights and RNG of `state` (the validated
        `resume_state`); returns its step."""
        tag = f"global_step{state['step']}"  # DeepSpeed's tag; `latest` is not read
        if self.ds:
            check_deepspeed_pickles(self.resume_from / DS_DIR / tag)
        try:
            if self.ds:
                path, _ = self.ds_engine.load_checkpoint(
                    str(self.resume_from / DS_DIR),
                    tag=tag,
                    load_optimizer_states=True,
                    load_lr_scheduler_states=True,
                )
                if path is None:
                    raise RuntimeError("deepspeed found no checkpoint")
            else:
                if self.master is not None:
                    if state.get("master_weights") is None:
                        raise KeyError("no fp32 master weights (written without bf16 masters)")
                    self.master.load_state_dict(state["master_weights"])
                self.optimizer.load_state_dict(state["optimizer"])
                self.scheduler.load_state_dict(state["scheduler"])
        except (ValueError, KeyError, RuntimeError, AssertionError) as e:
            raise CheckpointError(
                f"cannot resume from {self.resume_from}: optimizer/scheduler state does not "
                f"fit this model ({e})"
            ) from e
        set_rng_state(self._resume_rng(state))
        logger.info("resumed from %s at step %d", self.resume_from, state["step"])
        return int(state["step"])

    # ------------------------------------------------------------------ steps

    def autocast(self):
        import torch

        if not self.cfg.bf16 or self.ds or self.cfg.weights_dtype != "fp32":
            # DeepSpeed bf16 / pure bf16: the weights themselves are bf16
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def train(self, mode: bool = True) -> None:
        (self.ds_engine or self.model).train(mode)

    def forward(self, fn: Callable[[Any, Any], Any], batch: Any) -> Any:
        """`fn(model, batch)` — through DeepSpeed's engine when there is one (ZeRO-3 gathers the
        parameters as the forward reaches them), else under the configured autocast."""
        if self.ds:
            return self.ds_engine(fn, batch)
        with self.autocast():
            return fn(self.model, batch)

    def backward(self, loss: Any) -> None:
        """Accumulate the gradient of one micro-batch. DeepSpeed: its backward and its `step`,
        which updates only at the end of its gradient-accumulation window."""
        if self.ds:
            self.ds_engine.backward(loss)
            self.ds_engine.step()
        else:
            loss.backward()

    def optimizer_step(self) -> tuple[float, bool, float]:
        """End an optimizer step: clip, skip a non-finite norm, update, advance the schedule.
        Returns (grad norm, skipped, lr used). DeepSpeed has already stepped in `backward`."""
        import torch

        lr = self.scheduler.get_last_lr()[0]
        if self.ds:
            norm = self.ds_engine.get_global_grad_norm()
            grad_norm = float(norm) if norm is not None else float("nan")
            return grad_norm, not math.isfinite(grad_norm), lr
        if self.master is not None:  # fp32 grads, clipping and AdamW on the master copies
            self.master.grads_to_master()
            params = self.master.master
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm))
        skipped = not math.isfinite(grad_norm)
        if not skipped:
            self.optimizer.step()
            if self.master is not None:
                self.master.master_to_model()
        with warnings.catch_warnings():
            # a skipped step still advances the schedule (the step count stays the plan's);
            # torch warns when the very first optimizer step is the skipped one
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, skipped, lr

    def zero_grad(self) -> None:
        """Drop accumulated gradients without updating (a step abandoned before its end)."""
        if self.ds:
            self.ds_engine.zero_grad()
        else:
            self.optimizer.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ weights

    def hf_state_dict(self) -> dict[str, Any] | None:
        """The model's weights under their Hugging Face names (what `save_pretrained` writes and
        what vLLM's loader reads): LoRA merged, DeepSpeed's wrapper prefix stripped, ZeRO-3
        gathered (collective: every rank must call; rank 0 gets the dict, others None)."""
        if self.cfg.lora:
            return merged_state_dict(self.model) if self.is_main else None
        if self.ds:
            if self.zero_stage == 3:
                sd = self.ds_engine._zero3_consolidated_16bit_state_dict()
            else:
                sd = self.ds_engine.module.state_dict() if self.is_main else None
            return strip_prefix(sd) if sd is not None else None
        return self.model.state_dict()

    def named_weights_for_sync(self) -> Iterator[tuple[str, Any]]:
        """(checkpoint name, tensor) of every weight, as `save_pretrained` names them — the names a
        vLLM engine's `load_weights` takes (`weight_sync.hf_names`). Collective under ZeRO-3."""
        from vigorl_agents.train.weight_sync import hf_names

        sd = self.hf_state_dict()
        if sd is None:
            return iter(())
        return hf_names(self.model, sd)

    # ------------------------------------------------------------------ checkpoints

    def _barrier(self) -> None:
        if self.ds:
            import torch.distributed as dist

            dist.barrier()

    def _save_weights(self, folder: Path, state_dict: dict[str, Any] | None = None) -> None:
        """HF weights + processor into `folder`; with LoRA the merged weights and `adapter/`."""
        if self.cfg.lora:
            state_dict = merged_state_dict(self.model)
            save_adapter(self.lora_model, folder)
        self.model.save_pretrained(folder, state_dict=state_dict)
        self.processor.save_pretrained(folder)

    def _finish_checkpoint(self, tmp: Path, state: dict[str, Any]) -> None:
        """Record the sha256 of every file of `tmp`, then write the state file (last)."""
        state["files"] = hash_files(tmp, checkpoint_files(tmp))
        write_json(tmp / STATE_FILE, state)

    def base_state(self, step: int) -> dict[str, Any]:
        """The engine's part of a checkpoint's JSON state."""
        return {
            "format": f"{self.kind}-checkpoint",
            "version": STATE_VERSION,
            "step": step,
            "deepspeed": self.ds,
            "world_size": self.world,
            "optimizer_saved": bool(self.ds or self.cfg.save_optimizer),
        }

    def save(
        self, step: int, state: dict[str, Any], extra: Callable[[Path], None] | None = None
    ) -> Path:
        """Write `checkpoint-{step}` atomically (temporary folder renamed into place).

        `state` is the trainer's JSON part (data position, config); `extra(tmp)` writes
        trainer files into the folder before it is hashed (rank 0 only)."""
        import torch

        final = self.out / f"checkpoint-{step}"
        tmp = self.out / f".tmp-checkpoint-{step}"
        main = self.is_main
        full = {**self.base_state(step), **state}
        if self.ds:
            self._barrier()
            if main:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir(parents=True)
            self._barrier()
            if self.zero_stage == 3:  # collective: every rank sends its partitions to rank 0
                sd = self.ds_engine._zero3_consolidated_16bit_state_dict()
            else:
                sd = self.ds_engine.module.state_dict() if main and not self.cfg.lora else None
            if main:
                self._save_weights(tmp, None if self.cfg.lora else strip_prefix(sd))
            del sd
            self.ds_engine.save_checkpoint(
                str(tmp / DS_DIR), tag=f"global_step{step}", client_state={"step": step}
            )
            write_json(tmp / DS_DIR / f"rng_rank{self.env.rank}.json", rng_state())
            self._barrier()
            if main:
                full["ds_config"] = self.ds_config
                if extra is not None:
                    extra(tmp)
                self._finish_checkpoint(tmp, full)
                if final.exists():
                    shutil.rmtree(final)
                tmp.rename(final)
                logger.info("saved %s", final)
            self._barrier()
            return final
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self._save_weights(tmp)
        if self.cfg.save_optimizer:
            tensors = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "master_weights": self.master.state_dict() if self.master else None,
            }
            torch.save(tensors, tmp / OPTIM_FILE)
            full["rng"] = rng_state()
        if extra is not None:
            extra(tmp)
        self._finish_checkpoint(tmp, full)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        logger.info("saved %s", final)
        return final


def checkpoint_step(folder: Path | None) -> int | None:
    """The step of a `checkpoint-N` folder (None for None or another name)."""
    if folder is None:
        return None
    m = CHECKPOINT_RE.match(folder.name)
    return int(m.group(1)) if m else None

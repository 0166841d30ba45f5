"""Single-process SFT of Qwen2-VL / Qwen2.5-VL on grounded chains (docs/sft.md), CPU or one GPU.

What the loop does, and why:

* **Loss** = next-token cross-entropy on the supervised tokens (assistant content + its
  `<|im_end|>`; masks from `data.tokenize_record`), **token mean per micro-batch**
  (docs/sft.md#training-loop); an optimizer step over `grad_accum` micro-batches averages those
  means (what LLaMA-Factory, which produced the paper's checkpoints, did). `loss_agg="token_mean"`
  instead divides the summed loss of the whole accumulation window by its supervised-token count
  (micro-batching then cannot change the value). The logits are computed only at supervised positions (hidden states gathered
  before `lm_head`): same value as the full-vocabulary logits of every position, without
  materialising L × 151k floats.
* **Trainable**: the language model (full fine-tuning); the vision tower and its patch merger are
  frozen by default (`freeze_vision`). `lora=True` trains peft LoRA adapters on the language
  model's projections instead (`train.lora`; merged weights in every checkpoint).
* **Precision**: `weights_dtype="fp32"` (default) keeps float32 weights; `bf16=True` runs the
  forward under `torch.autocast(bfloat16)`. `weights_dtype="bf16"` keeps the model itself in
  bfloat16 (bf16 GEMMs without per-op casts, half the weight traffic) and float32 master weights
  in AdamW (`train.precision`: grads moved to fp32, clipping and the update in fp32, then rounded
  into the model), as DeepSpeed's bf16 mode does. `"bf16_pure"` drops the master copy (least
  memory; updates below a bf16 step of the weight are lost, i.e. most of them at lr 1e-6).
* **Data overlap** (single process): while the accelerator runs step s, a background thread
  builds step s+1's micro-batches (image processor, tokenisation, collate; pinned memory on CUDA)
  and the main thread copies them with `non_blocking=True`. The window is still a function of the
  step (below), so the data order and exact resume are unchanged.
* **Schedule**: AdamW (betas 0.9/0.999, weight decay on ≥2-D weights only), linear warmup over
  `warmup_ratio` of the planned steps then cosine (`get_cosine_schedule_with_warmup`); gradient
  norm clipped to 1.0; a non-finite norm skips the update (logged). The plan is always
  `epochs × steps_per_epoch`; `max_steps` only stops the run early, so stopping and resuming never
  changes the schedule.
* **Data order**: epoch e visits the examples in `randperm(n)` drawn from a generator seeded with
  (seed, e); optimizer step s of the run is window s mod steps_per_epoch of epoch s // steps_per_epoch.
  The data position is therefore a function of the step, which makes resume exact.
* **Checkpoints** (docs/sft.md#checkpoints-and-safe-resume): `output_dir/checkpoint-{step}/`
  is a plain Hugging Face folder (model + processor, `from_pretrained` / vLLM load it as is) plus
  `optimizer.pt` (optimizer, scheduler and fp32 master tensors) and `trainer_state.json` (step,
  epoch, data position, RNG states, config, and the sha256 of every other file of the folder).
  Nothing a resume reads is unpickled with code execution: the state is JSON and `optimizer.pt`
  is read with torch's restricted unpickler (`weights_only=True`), so a crafted checkpoint is
  refused, never run. A checkpoint is written to a hidden temporary folder and renamed into
  place, so a crash mid-save never leaves a half folder under the final name.
* **Resume**: `train` resumes from the highest `checkpoint-N`. Before anything is written it
  checks the folder (required files, JSON state, sha256 of every recorded file, the optimizer
  file) and raises `CheckpointError` naming the folder and the file at fault; the steps after N
  are re-run, so their records are cut from `metrics.jsonl` (and hidden in tensorboard).
* **Logging**: `metrics.jsonl` (always; `vigorl_agents.jsonl` appender) and tensorboard
  (`torch.utils.tensorboard`, only if the `tensorboard` package is installed): loss, lr, grad
  norm, tokens/s, supervised tokens.

Multi-GPU: DeepSpeed ZeRO-2/3 through the standard launcher (`deepspeed --num_gpus N -m ...` or
`torchrun --nproc_per_node N -m ...`) with `deepspeed="zero2" | "zero3" | <json>`:

* the config dict comes from `distributed.deepspeed_config` (bf16, batch sizes, clipping 1.0, ZeRO
  stage); `global_batch` fixes `per_device_batch × grad_accum × world_size` (grad_accum derived);
* the same torch AdamW and warmup-cosine LambdaLR are handed to `deepspeed.initialize`;
* optimizer step s covers the same micro-batches as on one process; micro-batch k of the step goes
  to rank k mod world_size; a rank short of micro-batches at the end of an epoch runs a zero-weight
  filler so that every rank makes the same number of collective forward/backward passes; the loss is
  scaled so that the gradient equals the one-process gradient (both `loss_agg` modes);
* rank 0 logs and writes metrics; `checkpoint-N/` holds the HF folder (ZeRO-3: 16-bit weights
  gathered from all ranks) plus `deepspeed/` (`engine.save_checkpoint`: fp32 master weights,
  optimizer and scheduler partitions; `rng_rank{r}.json` per rank) for exact resume through
  `engine.load_checkpoint`. DeepSpeed unpickles its files without restriction, so each one is
  first read with the restricted unpickler (`check_deepspeed_pickles`) and refused if it holds
  anything but tensors, plain containers and the DeepSpeed classes its checkpoints need.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from vigorl_agents.jsonl import JsonlAppender, cut_torn_tail, read_jsonl
from vigorl_agents.train.data import (
    IGNORE_INDEX,
    PreflightError,
    SFTDataset,
    TokenizedExample,
    collate,
    load_sft_file,
    preflight,
)
from vigorl_agents.train.distributed import (
    DistEnv,
    deepspeed_config,
    dist_env,
    rank_micro_batches,
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
from vigorl_env.protocol import FORCED_PREFIX

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
"""Step, data position, RNG states, config and the sha256 of every other file (JSON)."""
OPTIM_FILE = "optimizer.pt"
"""Optimizer, scheduler and fp32 master weights (tensors; loaded with `weights_only=True`)."""
LEGACY_STATE_FILE = "trainer_state.pt"
"""The pickled state of checkpoints written before format version 2: refused, never loaded."""
STATE_VERSION = 2
DS_DIR = "deepspeed"
METRICS_FILE = "metrics.jsonl"
_CKPT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class CheckpointError(RuntimeError):
    """A checkpoint folder cannot be resumed from; nothing was written."""


@dataclass
class SFTConfig:
    """One SFT run (defaults: docs/sft.md#presets, paper Table A1, per-device values)."""

    model: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    """HF folder, Hub id or `tiny-qwen2.5-vl` / `tiny-qwen2-vl`."""
    train_file: str = ""
    """vigorl SFT JSONL, sharegpt JSON or parquet (docs/data.md#sft-record-formats)."""
    val_file: str | None = None
    output_dir: str = "runs/sft/default"
    data_root: str | None = None
    """Root for relative image paths (default: $DATA_ROOT)."""
    epochs: int = 3
    lr: float = 1e-6
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    per_device_batch: int = 1
    grad_accum: int = 4
    """Paper: 1 × 4 × 8 GPUs = 32 sequences per step; on fewer GPUs raise this to keep 32."""
    cutoff_len: int = 8192
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
    through the grouped vision attention). See `_apply_liger`."""
    seed: int = 0
    log_every: int = 1
    save_every: int = 100
    save_final: bool = True
    """Also save when the run stops. False: only every `save_every` steps (scaling checks)."""
    eval_every: int = 250
    max_steps: int | None = None
    """Stop after this many optimizer steps (the schedule still spans all epochs)."""
    max_grad_norm: float = 1.0
    loss_agg: Literal["microbatch_mean", "token_mean"] = "microbatch_mean"
    on_preflight: Literal["fatal", "skip"] = "fatal"
    mask_prefix: str | None = FORCED_PREFIX
    """Masked when an assistant turn starts with it (docs/protocol.md#forced-final-answer)."""
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
    derived: per_device_batch × grad_accum × world_size = global_batch (paper: 32)."""
    deepspeed: str | None = None
    """None (one process), "zero2", "zero3" or a DeepSpeed JSON config; needs the launcher."""


# =========================================================================== loss


def model_inputs(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


def compute_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """(sum of next-token cross-entropies over supervised positions, number of them).

    Position i predicts token i+1; it is supervised where `labels[i+1] != -100`. Hidden states
    are gathered at those positions before `lm_head`, so only the needed logits are computed."""
    import torch.nn.functional as F

    device = next(model.parameters()).device
    labels = batch["labels"].to(device)
    out = model.model(**model_inputs(batch, device), use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    target = labels[:, 1:]
    mask = target != IGNORE_INDEX
    logits = model.lm_head(hidden[mask]).float()
    loss_sum = F.cross_entropy(logits, target[mask], reduction="sum")
    return loss_sum, int(mask.sum())


def _num_supervised(batch: dict[str, Any]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


# =========================================================================== model


def _freeze_vision(model: Any) -> int:
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


def _loss_module(model: Any) -> Any:
    """nn.Module around the HF model whose forward returns `compute_loss`'s loss sum: what
    DeepSpeed wraps, so that ZeRO-3's hooks see the whole forward (root module included)."""
    import torch

    class SFTLossModule(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, batch: dict[str, Any]) -> Any:
            return compute_loss(self.inner, batch)[0]

    return SFTLossModule(model)


def _strip_prefix(sd: dict[str, Any], prefix: str = "inner.") -> dict[str, Any]:
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in sd.items()}


def _load_model(path: str, cfg: SFTConfig, device: Any):
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


def _speedups(model: Any, cfg: SFTConfig) -> dict[str, Any]:
    """Apply the configured kernel substitutions to a loaded model; return what was applied."""
    from vigorl_agents.models.vision_attention import set_vision_attention

    applied: dict[str, Any] = {
        "grouped_vision_attention_modules": set_vision_attention(model, cfg.vision_attention)
    }
    if cfg.liger:
        applied["liger"] = _apply_liger(model)
    return applied


def _apply_liger(model: Any) -> list[str]:
    """Liger kernels (Triton; GPU only) on this model: fused RMSNorm and SwiGLU MLP (language model
    and vision blocks), fused rotary embedding (vision: per attention module; language model: the
    `apply_rotary_pos_emb` of the transformers modeling file, i.e. process-wide for that
    architecture, as Liger's own patches do).

    Not used: Liger's M-RoPE patch (transformers 5 folds the M-RoPE sections into the rotary
    module and no longer calls the function it replaces: a silent no-op) and its cross-entropy
    (`compute_loss` already computes logits at supervised positions only)."""
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
            "SFTConfig.liger needs the `liger-kernel` package (GPU extra: pip install "
            "'vigorl[gpu]'); it runs on CUDA only"
        ) from e
    name = type(model).__name__
    fns = {
        "Qwen2_5_VLForConditionalGeneration": monkey_patch.apply_liger_kernel_to_qwen2_5_vl,
        "Qwen2VLForConditionalGeneration": monkey_patch.apply_liger_kernel_to_qwen2_vl,
    }
    if name not in fns:
        raise ValueError(f"SFTConfig.liger: no Liger patch for {name}")
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


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-N` folder, ascending (temporary folders ignored)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for d in out.iterdir():
        m = _CKPT.match(d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    return sorted(found)


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in chunks (hashlib releases the GIL: files hash in parallel)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(folder: Path) -> list[str]:
    """Every file of a checkpoint folder (POSIX paths relative to it), the state file excluded."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() != STATE_FILE
    )


def hash_files(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """{name: sha256} of `folder/name` for each name, several files at a time."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        digests = pool.map(lambda n: sha256_file(folder / n), names)
        return dict(zip(names, digests, strict=True))


def checksum_problems(
    folder: Path, files: dict[str, str], shard: tuple[int, int] = (0, 1)
) -> list[str]:
    """What differs between the files of `folder` and their recorded sha256 (`files`), one line
    per file, for the files of this shard (`(rank, world)`: file i belongs to rank i mod world)."""
    rank, world = shard
    names = [n for i, n in enumerate(sorted(files)) if i % world == rank]
    problems, present = [], []
    for n in names:
        if not _safe_relative(n):
            problems.append(f"{n!r} is not a path inside the checkpoint folder")
        elif not (folder / n).is_file():
            problems.append(f"{n} is missing")
        else:
            present.append(n)
    for n, digest in hash_files(folder, present).items():
        if digest != files[n]:
            problems.append(
                f"{n} does not match its recorded sha256 (damaged or changed since it was saved)"
            )
    return problems


def _safe_relative(name: str) -> bool:
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


def _load_tensors(path: Path) -> Any:
    """`torch.load` that never runs code: the restricted unpickler (`weights_only=True`) accepts
    tensors and plain containers and refuses any other global before creating it."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain "
            f"containers, which could run code when unpickled ({str(e).splitlines()[0]})"
        ) from e
    except Exception as e:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"cannot load {path}: {e}") from e


_DEEPSPEED_GLOBALS = (
    # What DeepSpeed's own ZeRO-2/3 checkpoint files hold besides tensors and plain containers
    # (read with torch.serialization.get_unsafe_globals_in_checkpoint from deepspeed 0.19.8
    # checkpoints, ZeRO-2 and ZeRO-3, bf16 and fp32): only the optimizer files have any.
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def _deepspeed_safe_globals() -> list[Any]:
    import importlib

    out = []
    for name in _DEEPSPEED_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            out.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):  # another DeepSpeed version: not allowed then
            continue
    return out


def check_deepspeed_pickles(tag_dir: Path) -> None:
    """Refuse DeepSpeed checkpoint files that could run code, before DeepSpeed reads them.

    `engine.load_checkpoint` unpickles its `.pt` files with `weights_only=False` (DeepSpeed's
    `TorchCheckpointEngine`), which runs whatever a crafted file asks for; it cannot be told
    otherwise. So each file is first read here with torch's restricted unpickler (tensors
    memory-mapped, not read), allowing only the few DeepSpeed classes its checkpoints hold
    (`_DEEPSPEED_GLOBALS`); a file with any other global is refused and DeepSpeed never sees it."""
    import pickle

    import torch

    files = sorted(tag_dir.rglob("*.pt"))
    if not files:
        raise CheckpointError(f"cannot resume: {tag_dir} holds no DeepSpeed checkpoint file")
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        for f in files:
            try:
                torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as e:
                raise CheckpointError(
                    f"refusing to resume from {f}: it holds Python objects outside the tensors, "
                    f"plain containers and DeepSpeed classes a checkpoint needs, and DeepSpeed "
                    f"would unpickle them unrestricted ({str(e).splitlines()[0]})"
                ) from e
            except Exception as e:
                raise CheckpointError(f"cannot resume from {f}: {e}") from e


def read_checkpoint_state(
    folder: Path, deepspeed: bool = False, *, verify: bool = True
) -> dict[str, Any]:
    """Validate a checkpoint folder for resume and return its trainer state.

    Nothing in the folder is unpickled: the state is JSON, the optimizer file is read with
    `weights_only=True` (see docs/sft.md#checkpoints-and-safe-resume). Order: required files,
    the JSON state, then the sha256 of every recorded file (`verify`; a DeepSpeed run checks its
    shard itself, `SFTTrainer`), then the optimizer file. `deepspeed`: the resuming run uses
    DeepSpeed (its optimizer state is in `folder/deepspeed/`). Raises `CheckpointError` naming the
    folder and what is wrong; reads only."""
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json is missing")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        problems.append(f"no model weights ({' / '.join(_WEIGHT_FILES)})")
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        if (folder / LEGACY_STATE_FILE).is_file():
            problems.append(
                f"it holds {LEGACY_STATE_FILE}, a pickle written by an older vigorl; it is not "
                f"loaded because unpickling a file can run code (resume needs {STATE_FILE} + "
                f"{OPTIM_FILE}: restart from the weights or retrain)"
            )
        else:
            problems.append(f"{STATE_FILE} is missing (not a resumable checkpoint)")
    if problems:
        raise CheckpointError(f"cannot resume from {folder}: " + "; ".join(problems))
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(
            f"cannot resume from {folder}: {STATE_FILE} is not valid JSON ({e})"
        ) from e
    need = ("version", "step", "steps_per_epoch", "num_examples", "deepspeed", "files")
    missing = [k for k in need if k not in state] if isinstance(state, dict) else list(need)
    if missing:
        raise CheckpointError(f"cannot resume from {folder}: {STATE_FILE} lacks {missing}")
    if state["version"] != STATE_VERSION:
        raise CheckpointError(
            f"cannot resume from {folder}: {STATE_FILE} has format version {state['version']!r}, "
            f"this vigorl reads version {STATE_VERSION}"
        )
    files = state["files"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise CheckpointError(f"cannot resume from {folder}: {STATE_FILE}: 'files' is malformed")
    written_by_ds = bool(state["deepspeed"])
    if written_by_ds != deepspeed:
        raise CheckpointError(
            f"cannot resume from {folder}: written by a "
            f"{'DeepSpeed' if written_by_ds else 'single-process'} run, this run is "
            f"{'DeepSpeed' if deepspeed else 'single-process'}"
        )
    m = _CKPT.match(folder.name)
    if m and int(m.group(1)) != state["step"]:
        raise CheckpointError(
            f"cannot resume from {folder}: its {STATE_FILE} says step {state['step']}"
        )
    if not state.get("optimizer_saved", True):
        raise CheckpointError(
            f"cannot resume from {folder}: written with save_optimizer=False (model only: no "
            f"optimizer state to resume exactly from)"
        )
    if deepspeed:
        if not (folder / DS_DIR / f"global_step{state['step']}").is_dir():
            raise CheckpointError(
                f"cannot resume from {folder}: {DS_DIR}/global_step{state['step']} is missing"
            )
    elif OPTIM_FILE not in files or "rng" not in state:
        raise CheckpointError(
            f"cannot resume from {folder}: {STATE_FILE} records no {OPTIM_FILE} / RNG state"
        )
    unlisted = sorted(set(checkpoint_files(folder)) - set(files))
    if unlisted:
        logger.warning("%s: files not written by the trainer (ignored): %s", folder, unlisted)
    if verify:
        bad = checksum_problems(folder, files)
        if bad:
            raise CheckpointError(f"cannot resume from {folder}: " + "; ".join(bad))
    if not deepspeed:
        try:
            saved = _load_tensors(folder / OPTIM_FILE)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume from {folder}: {e}") from e
        if not isinstance(saved, dict) or not {"optimizer", "scheduler"} <= saved.keys():
            raise CheckpointError(
                f"cannot resume from {folder}: {OPTIM_FILE} lacks the optimizer / scheduler state"
            )
        state = {**state, **saved}
    return state


def _b64(t: Any) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> Any:
    import torch

    return torch.frombuffer(bytearray(base64.b64decode(s, validate=True)), dtype=torch.uint8)


def _rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as JSON values (exact: ints, repr floats, base64 bytes)."""
    import numpy as np
    import torch

    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {
        "python": [version, list(words), gauss],
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        st["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, words, gauss = st["python"]
    random.setstate((int(version), tuple(int(w) for w in words), gauss))
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(st["torch"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in st["cuda"]])


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# =========================================================================== trainer


class SFTTrainer:
    """Holds the run (model, processor, data, optimizer); `run()` trains. `train(cfg)` is the
    one-call form. Construction resumes from the latest checkpoint of `output_dir` if any."""

    def __init__(self, cfg: SFTConfig):
        import torch
        from transformers import get_cosine_schedule_with_warmup

        from vigorl_agents.models.load import resolve_model

        if cfg.lora and cfg.deepspeed and zero_stage(deepspeed_config(cfg, 1)) == 3:
            raise ValueError(
                "LoRA with ZeRO-3 is not supported (the merged checkpoint needs whole weights on "
                "one rank); use deepspeed='zero2': the adapter's optimizer state is small"
            )
        if cfg.per_device_batch < 1 or cfg.grad_accum < 1 or cfg.epochs < 1:
            raise ValueError("per_device_batch, grad_accum and epochs must be >= 1")
        if not cfg.train_file:
            raise ValueError("SFTConfig.train_file is required")
        if cfg.weights_dtype not in ("fp32", "bf16", "bf16_pure"):
            raise ValueError(
                f"weights_dtype must be 'fp32', 'bf16' or 'bf16_pure', not {cfg.weights_dtype!r}"
            )
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.ds = bool(cfg.deepspeed)
        self.env = dist_env() if self.ds else DistEnv()
        if not self.ds and dist_env().world_size > 1:
            raise ValueError("a multi-process launch needs SFTConfig.deepspeed (zero2 / zero3)")
        self.world = self.env.world_size
        self.grad_accum = resolve_grad_accum(
            cfg.per_device_batch, cfg.grad_accum, cfg.global_batch, self.world
        )
        self.micro_per_step = self.grad_accum * self.world
        self.engine: Any = None
        self.ds_config: dict[str, Any] | None = None
        if self.ds:
            self.ds_config = deepspeed_config(cfg, self.world)  # validates before any import
            try:
                import deepspeed
            except ImportError as e:
                raise ImportError(
                    "SFTConfig.deepspeed needs the `deepspeed` package (DeepSpeed is not installed)"
                ) from e
            if not torch.cuda.is_available():
                raise RuntimeError("SFTConfig.deepspeed (DeepSpeed ZeRO) needs CUDA GPUs")
            self.ds_config = deepspeed_config(cfg, self.world)
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
        resume_state = self._read_resume_state(self.resume_from) if self.resume_from else None
        _seed_all(cfg.seed)
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
        try:
            self.model, self.processor = _load_model(src, cfg, self.device)
        except Exception as e:
            if self.resume_from is None:
                raise
            raise CheckpointError(
                f"cannot resume from {self.resume_from}: loading the model failed ({e})"
            ) from e
        self.frozen = _freeze_vision(self.model) if cfg.freeze_vision else 0
        self.speedups = _speedups(self.model, cfg)
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

        self.train_ds = self._dataset(cfg.train_file, "train")
        self.val_ds = self._dataset(cfg.val_file, "val") if cfg.val_file else None
        n = len(self.train_ds)
        if n == 0:
            raise ValueError(f"{cfg.train_file}: no example left after filtering")
        self.n_micro = math.ceil(n / cfg.per_device_batch)
        self.steps_per_epoch = math.ceil(self.n_micro / self.micro_per_step)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.stop_step = min(self.total_steps, cfg.max_steps or self.total_steps)

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
        warmup = math.ceil(cfg.warmup_ratio * self.total_steps)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        self.step = 0
        self._pool: ThreadPoolExecutor | None = None
        self._prefetch: tuple[int, Future] | None = None
        self._data_lock = threading.Lock()  # processor/tokenizer: one user at a time
        if self.ds:
            import deepspeed

            self.engine, _, _, _ = deepspeed.initialize(
                model=_loss_module(self.model),
                optimizer=self.optimizer,
                lr_scheduler=self.scheduler,
                config=self.ds_config,
            )
            self.zero_stage = zero_stage(self.ds_config)
        if resume_state is not None:
            if (
                resume_state["num_examples"] != n
                or resume_state["steps_per_epoch"] != self.steps_per_epoch
            ):
                raise CheckpointError(
                    f"cannot resume from {self.resume_from}: it was trained on "
                    f"{resume_state['num_examples']} examples ({resume_state['steps_per_epoch']} "
                    f"steps/epoch), this run has {n} ({self.steps_per_epoch})"
                )
            tag = f"global_step{resume_state['step']}"  # DeepSpeed's tag; `latest` is not read
            if self.ds:
                check_deepspeed_pickles(self.resume_from / DS_DIR / tag)
            try:
                if self.ds:
                    path, _ = self.engine.load_checkpoint(
                        str(self.resume_from / DS_DIR),
                        tag=tag,
                        load_optimizer_states=True,
                        load_lr_scheduler_states=True,
                    )
                    if path is None:
                        raise RuntimeError("deepspeed found no checkpoint")
                else:
                    if self.master is not None:
                        if resume_state.get("master_weights") is None:
                            raise KeyError("no fp32 master weights (written without bf16 masters)")
                        self.master.load_state_dict(resume_state["master_weights"])
                    self.optimizer.load_state_dict(resume_state["optimizer"])
                    self.scheduler.load_state_dict(resume_state["scheduler"])
            except (ValueError, KeyError, RuntimeError, AssertionError) as e:
                raise CheckpointError(
                    f"cannot resume from {self.resume_from}: optimizer/scheduler state does not "
                    f"fit this model ({e})"
                ) from e
            _set_rng_state(self._resume_rng(resume_state))
            self.step = int(resume_state["step"])
            logger.info("resumed from %s at step %d", self.resume_from, self.step)
        n_train = sum(
            getattr(p, "ds_numel", p.numel()) for p in self.model.parameters() if p.requires_grad
        )  # ds_numel: ZeRO-3 partitioned params report numel() 0
        logger.info(
            "SFT: %d examples, %d micro-batches/epoch, %d steps/epoch, %d planned, stop at %d; "
            "%d trainable params, %d frozen (vision); device %s; rank %d/%d, grad_accum %d%s",
            n,
            self.n_micro,
            self.steps_per_epoch,
            self.total_steps,
            self.stop_step,
            n_train,
            self.frozen,
            self.device,
            self.env.rank,
            self.world,
            self.grad_accum,
            f", DeepSpeed ZeRO-{self.zero_stage}" if self.ds else "",
        )

    # ------------------------------------------------------------------ resume

    def _read_resume_state(self, folder: Path) -> dict[str, Any]:
        """`read_checkpoint_state`; under DeepSpeed each rank hashes its share of the files and
        every rank raises the same error (a rank that raised alone would hang the others)."""
        if not self.ds:
            return read_checkpoint_state(folder)
        import torch.distributed as dist

        state = read_checkpoint_state(folder, deepspeed=True, verify=False)
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

    # ------------------------------------------------------------------ data

    def _dataset(self, path: str, name: str) -> SFTDataset:
        return SFTDataset(
            load_sft_file(path, self.cfg.data_root),
            self.processor,
            cutoff_len=self.cfg.cutoff_len,
            mask_prefix=self.cfg.mask_prefix,
            on_preflight=self.cfg.on_preflight,
            name=name,
        )

    def _epoch_order(self, epoch: int) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_ds), generator=g).tolist()

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, first micro-batch index within the epoch) of optimizer step `step` (0-based)."""
        return step // self.steps_per_epoch, (step % self.steps_per_epoch) * self.micro_per_step

    def global_window(self, step: int) -> list[list[int]]:
        """Example indices of each micro-batch of optimizer step `step`, all ranks."""
        epoch, first = self.position(step)
        order = self._epoch_order(epoch)
        b = self.cfg.per_device_batch
        last = min(first + self.micro_per_step, self.n_micro)
        return [order[i * b : (i + 1) * b] for i in range(first, last)]

    def window(self, step: int) -> list[list[int]]:
        """Example indices of each micro-batch of optimizer step `step` on this rank."""
        return rank_micro_batches(self.global_window(step), self.env.rank, self.world)

    def _micro_batch(self, idx: list[int], step: int | None = None) -> dict[str, Any] | None:
        examples: list[TokenizedExample] = []
        for i in idx:
            with self._data_lock:
                ex = self.train_ds[i]
            try:
                preflight(ex, max_len=self.cfg.cutoff_len)
            except PreflightError:
                if self.cfg.on_preflight == "fatal":
                    raise
                logger.warning(
                    "step %d: skipping example %s (preflight)",
                    self.step if step is None else step,
                    ex.id,
                )
                continue
            examples.append(ex)
        return collate(examples, self.pad_id) if examples else None

    def _build_step(self, step: int) -> list[dict[str, Any]]:
        """The non-empty micro-batches of optimizer step `step` on this rank, on the CPU (pinned
        when training on CUDA, so that the copy to the device can be asynchronous)."""
        batches = [b for b in (self._micro_batch(ix, step) for ix in self.window(step)) if b]
        if self.device.type == "cuda":
            batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
        return batches

    def _step_batches(self) -> list[dict[str, Any]]:
        """This step's micro-batches (prefetched if the previous step started building them),
        then start building the next step's in the background thread."""
        pre, self._prefetch = self._prefetch, None
        if pre is not None and pre[0] == self.step:
            batches = pre[1].result()  # re-raises a preflight error of that step here
        else:
            if pre is not None:
                pre[1].cancel()
                pre[1].exception()  # wait; whatever it built is for another step
            batches = self._build_step(self.step)
        nxt = self.step + 1
        if nxt < self.stop_step:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sft-data")
            self._prefetch = (nxt, self._pool.submit(self._build_step, nxt))
        return batches

    def _wait_prefetch(self) -> None:
        """Let a background build finish (before evaluation or saving use the processor)."""
        if self._prefetch is not None:
            self._prefetch[1].exception()

    def close(self) -> None:
        """Stop the background data thread (a pending prefetch is dropped)."""
        self._prefetch = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        import contextlib

        import torch

        if not self.cfg.bf16 or self.ds or self.cfg.weights_dtype != "fp32":
            # DeepSpeed bf16 / pure bf16: the weights themselves are bf16
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over the next accumulation window; returns its metrics."""
        import torch

        if self.ds:
            return self._train_step_ds()
        t0 = time.perf_counter()
        self.model.train()
        batches = self._step_batches()
        if not batches:
            raise RuntimeError(f"step {self.step}: every example of the window failed preflight")
        counts = [_num_supervised(b) for b in batches]
        total_sup = sum(counts)
        n_tokens = [int(b["attention_mask"].sum()) for b in batches]  # on the CPU: no sync
        non_blocking = self.device.type == "cuda"
        loss_value = 0.0
        tokens = 0
        for b, n_tok in zip(batches, n_tokens, strict=True):
            b = {k: v.to(self.device, non_blocking=non_blocking) for k, v in b.items()}
            with self._autocast():
                loss_sum, n_sup = compute_loss(self.model, b)
            if self.cfg.loss_agg == "microbatch_mean":
                loss = loss_sum / n_sup / len(batches)
            else:
                loss = loss_sum / total_sup
            loss.backward()
            loss_value += float(loss.detach())
            tokens += n_tok
        if self.master is not None:  # fp32 grads, clipping and AdamW on the master copies
            self.master.grads_to_master()
            params = self.master.master
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm))
        lr = self.scheduler.get_last_lr()[0]
        skipped = not math.isfinite(grad_norm)
        if skipped:
            logger.warning("step %d: non-finite grad norm %s, update skipped", self.step, grad_norm)
        else:
            self.optimizer.step()
            if self.master is not None:
                self.master.master_to_model()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        dt = time.perf_counter() - t0
        epoch, _ = self.position(self.step - 1)
        return {
            "step": self.step,
            "epoch": epoch,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": skipped,
            "tokens": tokens,
            "supervised_tokens": total_sup,
            "micro_batches": len(batches),
            "step_time_s": dt,
            "tokens_per_s": tokens / dt if dt > 0 else float("nan"),
        }

    def _filler(self) -> dict[str, Any]:
        """A valid micro-batch of the current step for a rank that has none left (weight 0)."""
        for ix in self.global_window(self.step):
            b = self._micro_batch(ix)
            if b is not None:
                return b
        raise RuntimeError(f"step {self.step}: every example of the window failed preflight")

    def _train_step_ds(self) -> dict[str, Any]:
        """DeepSpeed step: this rank's micro-batches (padded to grad_accum with zero-weight
        fillers), loss scaled so that the averaged gradient equals the one-process one."""
        import torch
        import torch.distributed as dist

        t0 = time.perf_counter()
        self.engine.train()
        real = [b for b in (self._micro_batch(ix) for ix in self.window(self.step)) if b]
        stats = torch.tensor(
            [len(real), sum(_num_supervised(b) for b in real)],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(stats)
        n_mb, total_sup = int(stats[0]), int(stats[1])
        if n_mb == 0:
            raise RuntimeError(f"step {self.step}: every example of the window failed preflight")
        work = [(b, 1.0) for b in real]
        if len(work) < self.grad_accum:
            filler = real[0] if real else self._filler()
            work += [(filler, 0.0)] * (self.grad_accum - len(work))
        scale = self.grad_accum * self.world  # undone by the engine (1/gas) and the DP mean (1/W)
        lr = self.scheduler.get_last_lr()[0]
        loss_value = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = 0
        for b, weight in work:
            loss_sum = self.engine(b)
            if self.cfg.loss_agg == "microbatch_mean":
                loss = loss_sum * (weight * scale / (_num_supervised(b) * n_mb))
            else:
                loss = loss_sum * (weight * scale / total_sup)
            self.engine.backward(loss)
            self.engine.step()
            loss_value += loss.detach().double() / scale
            tokens += int(b["attention_mask"].sum()) if weight else 0
        totals = torch.stack(
            [loss_value, torch.tensor(float(tokens), dtype=torch.float64, device=self.device)]
        )
        dist.all_reduce(totals)
        norm = self.engine.get_global_grad_norm()
        grad_norm = float(norm) if norm is not None else float("nan")
        self.step += 1
        dt = time.perf_counter() - t0
        epoch, _ = self.position(self.step - 1)
        return {
            "step": self.step,
            "epoch": epoch,
            "loss": float(totals[0]),
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": not math.isfinite(grad_norm),
            "tokens": int(totals[1]),
            "supervised_tokens": total_sup,
            "micro_batches": n_mb,
            "step_time_s": dt,
            "tokens_per_s": float(totals[1]) / dt if dt > 0 else float("nan"),
        }

    def evaluate(self) -> float:
        """Token-mean loss over all supervised tokens of the val file."""
        import torch

        if self.val_ds is None or len(self.val_ds) == 0:
            return float("nan")
        self._wait_prefetch()
        (self.engine or self.model).eval()
        total, count = 0.0, 0
        b = self.cfg.per_device_batch
        with torch.no_grad():
            # DeepSpeed: every rank evaluates the whole file (ZeRO-3 forwards are collective)
            for i in range(0, len(self.val_ds), b):
                batch = collate(
                    [self.val_ds[j] for j in range(i, min(i + b, len(self.val_ds)))], self.pad_id
                )
                if self.ds:
                    s, n = self.engine(batch), _num_supervised(batch)
                    total += float(s)
                    count += n
                    continue
                with self._autocast():
                    s, n = compute_loss(self.model, batch)
                total += float(s)
                count += n
        return total / max(count, 1)

    # ------------------------------------------------------------------ checkpoints

    def _barrier(self) -> None:
        if self.ds:
            import torch.distributed as dist

            dist.barrier()

    def _trainer_state(self) -> dict[str, Any]:
        """The JSON part of a checkpoint (its `files` are added once every other file exists)."""
        epoch, micro = self.position(self.step)
        return {
            "format": "vigorl-sft-checkpoint",
            "version": STATE_VERSION,
            "step": self.step,
            "epoch": epoch,
            "micro_index": micro,
            "steps_per_epoch": self.steps_per_epoch,
            "num_examples": len(self.train_ds),
            "deepspeed": self.ds,
            "world_size": self.world,
            "optimizer_saved": bool(self.ds or self.cfg.save_optimizer),
            "config": asdict(self.cfg),
        }

    def _finish_checkpoint(self, tmp: Path, state: dict[str, Any]) -> None:
        """Record the sha256 of every file of `tmp`, then write the state file (last)."""
        state["files"] = hash_files(tmp, checkpoint_files(tmp))
        _write_json(tmp / STATE_FILE, state)

    def _save_checkpoint_ds(self) -> Path:
        final = self.out / f"checkpoint-{self.step}"
        tmp = self.out / f".tmp-checkpoint-{self.step}"
        main = self.env.is_main
        self._barrier()
        if main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self._barrier()
        if self.zero_stage == 3:  # collective: every rank sends its partitions to rank 0
            sd = self.engine._zero3_consolidated_16bit_state_dict()
        else:
            sd = self.engine.module.state_dict() if main and not self.cfg.lora else None
        if main:
            self._save_weights(tmp, None if self.cfg.lora else _strip_prefix(sd))
        del sd
        self.engine.save_checkpoint(
            str(tmp / DS_DIR), tag=f"global_step{self.step}", client_state={"step": self.step}
        )
        _write_json(tmp / DS_DIR / f"rng_rank{self.env.rank}.json", _rng_state())
        self._barrier()
        if main:
            state = self._trainer_state()
            state["ds_config"] = self.ds_config
            self._finish_checkpoint(tmp, state)
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            logger.info("saved %s", final)
        self._barrier()
        return final

    def _save_weights(self, folder: Path, state_dict: dict[str, Any] | None = None) -> None:
        """HF weights + processor into `folder`; with LoRA the merged weights and `adapter/`."""
        if self.cfg.lora:
            state_dict = merged_state_dict(self.model)
            save_adapter(self.lora_model, folder)
        self.model.save_pretrained(folder, state_dict=state_dict)
        self.processor.save_pretrained(folder)

    def save_checkpoint(self) -> Path:
        """Write `checkpoint-{step}` atomically (temporary folder renamed into place)."""
        import torch

        if self.ds:
            return self._save_checkpoint_ds()
        self._wait_prefetch()
        final = self.out / f"checkpoint-{self.step}"
        tmp = self.out / f".tmp-checkpoint-{self.step}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self._save_weights(tmp)
        state = self._trainer_state()
        if self.cfg.save_optimizer:
            tensors = {
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "master_weights": self.master.state_dict() if self.master else None,
            }
            torch.save(tensors, tmp / OPTIM_FILE)
            state["rng"] = _rng_state()
        self._finish_checkpoint(tmp, state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        logger.info("saved %s", final)
        return final

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        import contextlib

        main = self.env.is_main
        self.out.mkdir(parents=True, exist_ok=True)
        if main:  # the steps after the checkpoint are re-run: their old records go
            truncate_metrics(self.out / METRICS_FILE, self.step)
        writer = _tensorboard(self.out / "tb", purge_step=self.step + 1) if main else None
        history: list[dict[str, Any]] = []
        last_ckpt: Path | None = self.resume_from
        val_loss = float("nan")
        metrics_cm = (
            JsonlAppender(self.out / METRICS_FILE) if main else contextlib.nullcontext(None)
        )
        with metrics_cm as metrics:

            def log(rec: dict[str, Any]) -> None:
                if metrics is None:  # ranks > 0 do not log
                    return
                metrics.write(rec)
                if writer is not None:
                    for k, v in rec.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                            writer.add_scalar(f"{rec.get('split', 'train')}/{k}", v, rec["step"])

            while self.step < self.stop_step:
                m = self.train_step()
                history.append(m)
                if main and (self.step % self.cfg.log_every == 0 or self.step == self.stop_step):
                    log(m)
                    logger.info(
                        "step %d/%d loss %.4f lr %.3g grad %.3f %.0f tok/s",
                        self.step,
                        self.stop_step,
                        m["loss"],
                        m["lr"],
                        m["grad_norm"],
                        m["tokens_per_s"],
                    )
                if self.val_ds is not None and self.step % self.cfg.eval_every == 0:
                    val_loss = self.evaluate()
                    log({"split": "val", "step": self.step, "loss": val_loss})
                if self.step % self.cfg.save_every == 0:
                    last_ckpt = self.save_checkpoint()
            if self.cfg.save_final and (
                last_ckpt is None or _CKPT.match(last_ckpt.name).group(1) != str(self.step)
            ):
                last_ckpt = self.save_checkpoint()
            if self.val_ds is not None and self.step % self.cfg.eval_every != 0:
                val_loss = self.evaluate()
                log({"split": "val", "step": self.step, "loss": val_loss})
        self.close()
        if writer is not None:
            writer.close()
        return {
            "step": self.step,
            "history": history,
            "checkpoint": str(last_ckpt),
            "val_loss": val_loss,
            "train_data": self.train_ds.summary(),
            "val_data": self.val_ds.summary() if self.val_ds is not None else None,
        }


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the records of steps <= `step` in the metrics file (a torn last line goes too);
    return how many were dropped. A resumed run re-runs the steps after its checkpoint, so their
    records from the interrupted run would otherwise appear twice."""
    cut_torn_tail(path)
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for _, rec in read_jsonl(path):
        if isinstance(rec.get("step"), int) and rec["step"] > step:
            dropped += 1
        else:
            keep.append(rec)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        tmp.replace(path)
        logger.info(
            "%s: dropped %d record(s) after step %d (re-run from there)", path, dropped, step
        )
    return dropped


def _tensorboard(path: Path, purge_step: int | None = None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    # purge_step: events of re-run steps (>= purge_step) from an interrupted run are hidden
    return SummaryWriter(str(path), purge_step=purge_step)


def train(cfg: SFTConfig) -> dict[str, Any]:
    """Train (or resume) one SFT run; returns step, per-step history, last checkpoint, data stats."""
    return SFTTrainer(cfg).run()

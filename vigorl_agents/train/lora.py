"""LoRA adapters (peft) on the language model for SFT, saved as servable merged checkpoints.

Why this shape:

* **Targets**: every projection of the language model's decoder layers (attention q/k/v/o and the
  MLP gate/up/down), nothing in the vision tower or merger (frozen by default anyway, docs/sft.md#training-loop), no
  embedding or `lm_head`. The regex is anchored on `language_model`, so Qwen2-VL and Qwen2.5-VL
  both match and a vision `qkv`/`proj` never does.
* **Checkpoints stay plain Hugging Face folders** (servable by vLLM / `from_pretrained` as they
  are): the saved weights are base + B·A·scale computed out of place (`merged_state_dict`); the
  in-memory model keeps its adapters untouched, so training continues bit-exactly. The adapter
  itself goes to `adapter/` (peft format), which is what resume reads: base weights + adapter +
  optimizer state give the exact next step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ADAPTER_DIR = "adapter"
TARGET_MODULES = (
    r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
)


def _peft():
    try:
        import peft
    except ImportError as e:
        raise ImportError(
            "SFTConfig.lora needs the `peft` package (pip install 'vigorl[train]')"
        ) from e
    return peft


def add_lora(model: Any, *, rank: int, alpha: float, dropout: float) -> Any:
    """Inject LoRA layers into `model` in place (returns the `PeftModel` wrapper, used for
    saving and loading the adapter). Only the adapter weights stay trainable."""
    peft = _peft()
    if rank < 1:
        raise ValueError(f"lora_rank must be >= 1, got {rank}")
    config = peft.LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=TARGET_MODULES,
        bias="none",
    )
    wrapped = peft.get_peft_model(model, config)
    n = sum(1 for m in model.modules() if isinstance(m, peft.tuners.lora.LoraLayer))
    if n == 0:
        raise ValueError(f"LoRA matched no module of {type(model).__name__} ({TARGET_MODULES})")
    return wrapped


def merged_state_dict(model: Any) -> dict[str, Any]:
    """The state dict of `model` as if its adapters were merged, with the original HF key names
    (`…q_proj.weight`, not `…q_proj.base_layer.weight`); computed out of place."""
    peft = _peft()
    merged: dict[str, Any] = {}
    for name, module in model.named_modules():
        if isinstance(module, peft.tuners.lora.LoraLayer) and not module.merged:
            base = module.get_base_layer()
            delta = sum(module.get_delta_weight(a) for a in module.active_adapters)
            merged[f"{name}.base_layer.weight"] = (base.weight + delta).to(base.weight.dtype)
    out: dict[str, Any] = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        out[key.replace(".base_layer.", ".")] = merged.get(key, value).detach()
    return out


def save_adapter(wrapped: Any, folder: Path) -> None:
    wrapped.save_pretrained(str(folder / ADAPTER_DIR))


def load_adapter(wrapped: Any, folder: Path) -> None:
    """Load `folder/adapter/` into an adapter-injected model; errors name what is missing."""
    from safetensors.torch import load_file

    peft = _peft()
    path = folder / ADAPTER_DIR / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (LoRA adapter of this checkpoint)")
    result = peft.set_peft_model_state_dict(wrapped, load_file(str(path)))
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"{path}: adapter keys not in this model: {unexpected[:5]}")

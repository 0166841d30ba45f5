"""Trainer parameter names → the checkpoint names a vLLM engine loads (docs/grpo.md#weight-sync).

After each GRPO update the rollout engine must hold the new weights. vLLM's loader reads
checkpoint names — the names `save_pretrained` writes (`model.layers.*`, `visual.*`, `lm_head.*`
for Qwen2-VL / Qwen2.5-VL) — while the trainer's module tree names the same tensors differently
depending on how it is wrapped:

* transformers ≥ 5 nests the language model and the vision tower: `model.language_model.*`,
  `model.visual.*`;
* DeepSpeed wraps the model in the trainer's loss module (`inner.`) and may add `module.`;
* peft's LoRA wraps it in `base_model.model.` and splits projections into `base_layer` +
  adapters (`lora.merged_state_dict` already merges those back);
* ZeRO-3 partitions: `TrainEngine.hf_state_dict` gathers first.

`hf_name` undoes every wrapper; `hf_names` maps a whole state dict, drops the output embedding
when it is tied to the input one and not stored, and refuses any name the checkpoint does not have
(a silently ignored tensor would leave the engine on old weights).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_WRAPPERS = ("inner.", "module.", "base_model.model.", "_orig_mod.")
_RENAMES = (("model.language_model.", "model."), ("model.visual.", "visual."))


def hf_name(name: str) -> str:
    """The checkpoint name of one trainer parameter / buffer name."""
    stripped = True
    while stripped:
        stripped = False
        for w in _WRAPPERS:
            if name.startswith(w):
                name, stripped = name[len(w) :], True
    name = name.replace(".base_layer.", ".")
    for old, new in _RENAMES:
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def hf_names(
    model: Any, state_dict: dict[str, Any], known: Iterable[str] | None = None
) -> list[tuple[str, Any]]:
    """[(checkpoint name, tensor)] of `state_dict`, for `VLLMEnginePolicy.load_weights`.

    `known`: the checkpoint's tensor names (`backends.vllm_engine.checkpoint_tensor_names`); a
    mapped name outside them raises ValueError naming it. LoRA adapter tensors are never synced
    (the state dict must be merged). `lm_head.weight` is dropped when the config ties it to the
    input embedding and the checkpoint does not store it."""
    known_set = set(known) if known is not None else None
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False)) or bool(
        getattr(getattr(getattr(model, "config", None), "text_config", None),
                "tie_word_embeddings", False)
    )  # fmt: skip
    out: list[tuple[str, Any]] = []
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if ".lora_" in key:
            raise ValueError(f"{key}: LoRA adapter tensor — sync the merged weights instead")
        name = hf_name(key)
        if name == "lm_head.weight" and tied and (known_set is None or name not in known_set):
            continue
        if known_set is not None and name not in known_set:
            unknown.append(f"{key} -> {name}")
            continue
        out.append((name, tensor))
    if unknown:
        raise ValueError(
            f"{len(unknown)} trainer tensor(s) have no counterpart in the engine's checkpoint: "
            + ", ".join(unknown[:5])
            + (" ..." if len(unknown) > 5 else "")
        )
    return out

"""Real Qwen2.5-VL architectures with random weights, for GPU throughput and scaling runs.

Why: the machines that run our GPU benchmarks and multi-GPU checks cannot reach the model hubs,
yet speed and memory depend only on the architecture. `shape-qwen2.5-vl-3b` / `-7b` are
Qwen2.5-VL-3B/7B-Instruct's exact layer shapes with the tiny model's tokenizer and processor (the
vocabulary size stays 151,936 / 152,064, so the embedding and `lm_head` cost what they cost in the
real model). The folder holds a config, the processor files and a marker, **no weights**: loading
builds the model with `from_config` directly on the target device, seeded, so two processes (1-GPU
and 2-GPU runs) start from identical weights without writing 7–15 GB to disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

RANDOM_INIT_MARKER = "vigorl_random_init.json"
SHAPE_RECIPE_VERSION = 1

_TEXT = {
    "3b": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "tie": True,
    },
    "7b": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "tie": False,
    },
}
SHAPE_MODELS: dict[str, str] = {"shape-qwen2.5-vl-3b": "3b", "shape-qwen2.5-vl-7b": "7b"}
"""Names `resolve_model` understands → size key."""


def shape_config(size: str, tiny_config: Any) -> Any:
    """Qwen2.5-VL-{3B,7B}-Instruct's architecture with `tiny_config`'s special token ids."""
    from transformers import Qwen2_5_VLConfig

    t = dict(_TEXT[size])
    tie = t.pop("tie")
    text = tiny_config.text_config
    return Qwen2_5_VLConfig(
        text_config={
            **t,
            "max_position_embeddings": 128000,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [16, 24, 24],
            },
            "bos_token_id": text.bos_token_id,
            "eos_token_id": text.eos_token_id,
            "pad_token_id": text.pad_token_id,
        },
        vision_config={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": t["hidden_size"],
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "hidden_act": "silu",
        },
        tie_word_embeddings=tie,
        image_token_id=tiny_config.image_token_id,
        video_token_id=tiny_config.video_token_id,
        vision_start_token_id=tiny_config.vision_start_token_id,
        vision_end_token_id=tiny_config.vision_end_token_id,
    )


def is_random_init(folder: str | Path) -> bool:
    """True for a `shape-*` folder (config + processor, weights built at load time)."""
    return (Path(folder) / RANDOM_INIT_MARKER).is_file()


def write_shape_folder(out: Path, name: str, tiny_folder: Path) -> None:
    """Write shape model `name`'s folder into `out`: the tiny model's processor files, the shape's
    config and the marker (no weights). `models.load.shape_model_dir` caches it."""
    from transformers import AutoConfig

    for f in tiny_folder.iterdir():
        if f.is_file() and not f.name.startswith(("model", "config.json", "vigorl_tiny")):
            shutil.copy2(f, out / f.name)
    shape_config(SHAPE_MODELS[name], AutoConfig.from_pretrained(tiny_folder)).save_pretrained(out)
    (out / RANDOM_INIT_MARKER).write_text(
        json.dumps({"recipe_version": SHAPE_RECIPE_VERSION, "name": name}), encoding="utf-8"
    )


def build_random(folder: str | Path, *, device: Any, seed: int = 0, **kwargs: Any) -> Any:
    """The model of a shape folder with seeded random weights, built on `device` (fast on GPU:
    no host-side init of billions of parameters, no copy); `kwargs` go to `from_config` (dtype,
    attn_implementation)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForImageTextToText.from_config(config, **kwargs)

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
import tempfile
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


def _is_current(folder: Path) -> bool:
    try:
        marker = json.loads((folder / RANDOM_INIT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("recipe_version") == SHAPE_RECIPE_VERSION


def is_random_init(folder: str | Path) -> bool:
    """True for a `shape-*` folder (config + processor, weights built at load time)."""
    return (Path(folder) / RANDOM_INIT_MARKER).is_file()


def shape_model_dir(name: str, cache: Path, tiny_folder: Path) -> Path:
    """Write (once) the folder of shape model `name` under `cache/shape/` from the tiny model's
    processor files; atomic rename so concurrent ranks never see a half folder."""
    from transformers import AutoConfig

    size = SHAPE_MODELS[name]
    folder = cache / "shape" / name
    if _is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
    try:
        for f in tiny_folder.iterdir():
            if f.is_file() and not f.name.startswith(("model", "config.json", "vigorl_tiny")):
                shutil.copy2(f, tmp / f.name)
        shape_config(size, AutoConfig.from_pretrained(tiny_folder)).save_pretrained(tmp)
        (tmp / RANDOM_INIT_MARKER).write_text(
            json.dumps({"recipe_version": SHAPE_RECIPE_VERSION, "name": name}), encoding="utf-8"
        )
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:
            if not _is_current(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_random(
    folder: str | Path,
    *,
    dtype: Any,
    device: Any,
    attn_implementation: str | None = None,
    seed: int = 0,
) -> Any:
    """The model of a shape folder with seeded random weights, built on `device` (fast on GPU:
    no host-side init of billions of parameters, no copy)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(folder)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    torch.manual_seed(seed)
    with torch.device(device):
        return AutoModelForImageTextToText.from_config(config, **kwargs)

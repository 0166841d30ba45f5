"""Models: the tiny offline Qwen2-VL / Qwen2.5-VL factory and one loading path for all checkpoints.

Importing this package loads neither torch nor transformers (they load inside the functions).
"""

from vigorl_agents.models.load import (
    TINY_MODELS,
    cache_root,
    check_processor_keeps_frames,
    default_dtype,
    load_hf,
    processor_pixel_bounds,
    resolve_model,
    set_processor_pixel_bounds,
    tiny_model_dir,
)
from vigorl_agents.models.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tiny_model

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "TINY_MODELS",
    "build_tiny_model",
    "cache_root",
    "check_processor_keeps_frames",
    "default_dtype",
    "load_hf",
    "processor_pixel_bounds",
    "resolve_model",
    "set_processor_pixel_bounds",
    "tiny_model_dir",
]

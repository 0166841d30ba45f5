"""Name → model folder, and one loading path for tiny and real Qwen2-VL / Qwen2.5-VL checkpoints.

Why one path: the HF backend, training and the tests must exercise the same code on the tiny model
(CPU, seconds) as on `gsarch/ViGoRL-3b-Spatial` (GPU), so the tiny model is a plain Hugging Face
folder and both go through `AutoModelForImageTextToText` / `AutoProcessor`.

docs/geometry.md#serving-the-frame-unchanged: the env already resized every image to its model frame; the processor must leave it
alone, i.e. its min_pixels ≤ the env's min_pixels and its max_pixels ≥ the env's max_pixels.
`processor_pixel_bounds` reads the bounds, `check_processor_keeps_frames` enforces the rule.
transformers 5.x stores them as `image_processor.size = {"shortest_edge": min_pixels,
"longest_edge": max_pixels}` (the `min_pixels`/`max_pixels` attributes of 4.x are gone).

torch and transformers are imported inside the functions, so importing this module stays light.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigorl_agents.models.shapes import (
    RANDOM_INIT_MARKER,
    SHAPE_MODELS,
    SHAPE_RECIPE_VERSION,
    build_random,
    is_random_init,
    write_shape_folder,
)
from vigorl_agents.models.tiny import MARKER_FILE, RECIPE_VERSION, build_tiny_model

logger = logging.getLogger(__name__)

TINY_MODELS: dict[str, str] = {"tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-qwen2-vl": "qwen2_vl"}
"""Special names that `resolve_model` builds locally (seed 0, default pixel bounds)."""
TINY_SEED = 0
TINY_MAX_PIXELS = 64 * 28 * 28

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def cache_root() -> Path:
    """`$VIGORL_CACHE` if set, else `~/.cache/vigorl`."""
    env = os.environ.get("VIGORL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vigorl"


def _marker_is_current(folder: Path, marker_file: str, version: int) -> bool:
    try:
        marker = json.loads((folder / marker_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("recipe_version") == version


def _build_once(
    folder: Path, is_current: Callable[[Path], bool], build: Callable[[Path], None]
) -> Path:
    """`folder`, built by `build(tmp)` unless `is_current(folder)` already holds.

    The build goes to a temporary sibling folder that is renamed into place, so concurrent
    processes (a test session and the vLLM server it starts, the ranks of a launch) never see a
    half-written folder."""
    if is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        build(tmp)
        if folder.exists() and not is_current(folder):
            shutil.rmtree(folder, ignore_errors=True)  # stale recipe or an interrupted build
        try:
            tmp.rename(folder)
        except OSError:
            if not is_current(folder):  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def tiny_model_dir(name: str) -> Path:
    """Build (once, cached) the tiny model called `name` and return its folder."""
    arch = TINY_MODELS[name]
    return _build_once(
        cache_root() / "tiny" / f"{arch}-seed{TINY_SEED}-{TINY_MAX_PIXELS}",
        lambda f: _marker_is_current(f, MARKER_FILE, RECIPE_VERSION),
        lambda tmp: build_tiny_model(
            tmp, arch=arch, seed=TINY_SEED, max_pixels=TINY_MAX_PIXELS, overwrite=True
        ),
    )


def shape_model_dir(name: str) -> Path:
    """Write (once, cached) the folder of architecture-only model `name` (`models.shapes`)."""
    return _build_once(
        cache_root() / "shape" / name,
        lambda f: _marker_is_current(f, RANDOM_INIT_MARKER, SHAPE_RECIPE_VERSION),
        lambda tmp: write_shape_folder(tmp, name, tiny_model_dir("tiny-qwen2.5-vl")),
    )


def resolve_model(name_or_path: str | os.PathLike[str]) -> str:
    """Turn a model name or folder into what `from_pretrained` / vLLM take.

    - an existing folder: returned as is; it must hold a `config.json`;
    - `tiny-qwen2.5-vl` / `tiny-qwen2-vl`: built once under `cache_root()/tiny/` and its folder
      returned;
    - `shape-qwen2.5-vl-3b` / `-7b`: the real architecture with random weights
      (`vigorl_agents.models.shapes`; the folder has no weights, `load_weights` builds them);
    - a Hub id `owner/name` (e.g. `gsarch/ViGoRL-3b-Spatial`) that is not a local folder: returned
      as is (transformers / vLLM download it);
    - anything else (a missing local path such as `./ckpt` or `/x/y/z`, a bare word): an error.
    """
    s = os.fspath(name_or_path)
    if s in TINY_MODELS:
        return str(tiny_model_dir(s))
    if s in SHAPE_MODELS:
        return str(shape_model_dir(s))
    path = Path(s).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model folder {path} has no config.json (not a Hugging Face model folder; "
                f"a training run folder keeps its checkpoints in subfolders)"
            )
        return s
    if path.exists():
        raise NotADirectoryError(
            f"model path {path} is a file; expected a Hugging Face model folder"
        )
    if _HUB_ID.match(s):  # exactly one slash, no leading '.', '/' or '~'
        return s
    if "/" in s or s.startswith((".", "~")):
        raise FileNotFoundError(f"model folder {s!r} does not exist")
    raise ValueError(
        f"unknown model {s!r}: expected a local folder, a Hugging Face Hub id 'owner/name' "
        f"(e.g. 'gsarch/ViGoRL-3b-Spatial') or one of {sorted(TINY_MODELS)}"
    )


# --------------------------------------------------------------------------- processor bounds


def _image_processor(processor: Any) -> Any:
    return getattr(processor, "image_processor", processor)


def processor_pixel_bounds(processor: Any) -> tuple[int, int]:
    """(min_pixels, max_pixels) the processor's image processor resizes into.

    Accepts a processor or an image processor; reads `size["shortest_edge"/"longest_edge"]`
    (transformers 5) or the `min_pixels`/`max_pixels` attributes (transformers 4).
    """
    ip = _image_processor(processor)
    size = getattr(ip, "size", None)
    lo = _get(size, "shortest_edge")
    hi = _get(size, "longest_edge")
    lo = lo if lo is not None else getattr(ip, "min_pixels", None)
    hi = hi if hi is not None else getattr(ip, "max_pixels", None)
    if lo is None or hi is None:
        raise ValueError(f"{type(ip).__name__} has no min/max pixel bounds (size={size!r})")
    return int(lo), int(hi)


def _get(size: Any, key: str) -> Any:
    if size is None:
        return None
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)


def set_processor_pixel_bounds(
    processor: Any, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> None:
    """Set the image processor's pixel bounds in place (either may be None: left unchanged)."""
    if min_pixels is None and max_pixels is None:
        return
    ip = _image_processor(processor)
    lo, hi = processor_pixel_bounds(ip)
    lo = lo if min_pixels is None else int(min_pixels)
    hi = hi if max_pixels is None else int(max_pixels)
    if not 0 < lo <= hi:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got {lo}, {hi}")
    size = getattr(ip, "size", None)
    if isinstance(size, dict):
        ip.size = {**size, "shortest_edge": lo, "longest_edge": hi}
    elif dataclasses.is_dataclass(size):  # transformers 5 SizeDict: replace, never mutate
        ip.size = dataclasses.replace(size, shortest_edge=lo, longest_edge=hi)
    if hasattr(ip, "min_pixels") or hasattr(ip, "max_pixels"):  # transformers 4.x processors
        ip.min_pixels, ip.max_pixels = lo, hi
    if processor_pixel_bounds(ip) != (lo, hi):
        raise RuntimeError(f"could not set pixel bounds on {type(ip).__name__}")


def check_processor_keeps_frames(processor: Any, *, min_pixels: int, max_pixels: int) -> None:
    """Raise ValueError unless the processor leaves every model frame of an env with pixel bounds
    [min_pixels, max_pixels] at its size (no second resize:
    docs/geometry.md#serving-the-frame-unchanged)."""
    lo, hi = processor_pixel_bounds(processor)
    if lo > min_pixels or hi < max_pixels:
        raise ValueError(
            f"processor pixel bounds [{lo}, {hi}] would resize the env's model frames "
            f"(env bounds [{min_pixels}, {max_pixels}]); the model frame must pass unresized "
            "(docs/geometry.md#serving-the-frame-unchanged): processor min_pixels <= "
            f"{min_pixels} and max_pixels >= {max_pixels}: pass min_pixels/max_pixels when loading"
        )


# --------------------------------------------------------------------------- transformers


def default_dtype(device: str):
    """bfloat16 on CUDA (what the checkpoints are trained in), float32 on CPU (bf16 is slow there)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def load_weights(
    path: str | os.PathLike[str],
    *,
    dtype: Any,
    device: Any,
    attn_implementation: str | None = None,
    seed: int = 0,
) -> Any:
    """The model of a resolved folder on `device`: `from_pretrained`, or for a `shape-*` folder
    (no weights) a seeded random init built on the device."""
    from transformers import AutoModelForImageTextToText

    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if is_random_init(path):
        logger.warning("%s: random weights (architecture-only model, seed %d)", path, seed)
        return build_random(path, device=device, seed=seed, **kwargs)
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    return model.to(device)


def load_hf(
    name_or_path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    dtype: Any = None,
    attn_implementation: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> tuple[Any, Any]:
    """Load (model, processor) with transformers; the same path for tiny and real checkpoints.

    `dtype` is a torch dtype or its name (default: `default_dtype(device)`); the model is moved to
    `device` and put in eval mode. `min_pixels` / `max_pixels` override the image processor's
    bounds (docs/geometry.md#serving-the-frame-unchanged: min_pixels <= the env's, max_pixels >= the env's).
    """
    import torch
    from transformers import AutoProcessor

    path = resolve_model(name_or_path)
    if dtype is None:
        dtype = default_dtype(device)
    elif isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    model = load_weights(path, dtype=dtype, device=device, attn_implementation=attn_implementation)
    model.eval()
    processor = AutoProcessor.from_pretrained(path)
    set_processor_pixel_bounds(processor, min_pixels=min_pixels, max_pixels=max_pixels)
    logger.info(
        "loaded %s (%s, %s on %s), processor pixel bounds %s",
        path,
        type(model).__name__,
        dtype,
        device,
        processor_pixel_bounds(processor),
    )
    return model, processor

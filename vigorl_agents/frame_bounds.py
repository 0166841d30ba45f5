"""Fit an env's model frames and crops to a policy's image-processor bounds.

Why: the env resizes every image once, to its model frame (docs/geometry.md), and the model must see
that frame unchanged — a processor that resized it again would shift every coordinate the model
writes. The Qwen2-VL processors leave an image alone iff its sides are multiples of 28 (always true
of model frames and crops) and its pixel count lies in the processor's [min_pixels, max_pixels]; the
transformers backend refuses any other image. A small processor (the tiny CPU model: [3136, 50176])
therefore cannot take a benchmark's default frames (SynthSearch: up to 2,850,000 px; crops
672² = 451,584 px), and a photo fed to the demo crashed with "image 0 is 2044x1372 px, outside the
processor's [3136, 50176]".

The rule (`fit_env_kwargs`), with [lo, hi] the processor's bounds and m, M, c' the env's resolved
min_pixels, max_pixels and effective crop side (defaults of the benchmark unless given):

* frames: every model frame has m ≤ w·h ≤ M, so [m, M] must lie inside [lo, hi].
  M > hi → max_pixels = hi; m < lo → min_pixels = lo.
* crops (multi-turn only; single-turn never crops): every crop is c'×c', so lo ≤ c'² ≤ hi.
  c'² > hi → crop_size = the largest multiple of 28 whose square is ≤ hi;
  c'² < lo → the smallest multiple of 28 whose square is ≥ lo.
* A bound the caller set explicitly in the env kwargs (`max_pixels`, `min_pixels`, `crop_size`, or a
  `crop_preset`) is never changed: if it does not fit, `ValueError` names the policy flag that widens
  the processor instead (`--policy.max-pixels N` / `--policy.min-pixels N`) and the env kwarg to
  drop. Every adapted value is logged with the flag that would keep the benchmark's own frames.
* `max_side` is left alone: it only pre-scales (never up), and the resize after it lands in [m, M]
  anyway. Frames of an extreme aspect ratio (long side / short side > M / 784) are the one exception
  — the env keeps the short side at 28 px, so such a frame exceeds M; no env kwarg fixes that and the
  backend reports it.

Adapting the env (rather than the processor) lowers the frame resolution: right for the tiny model,
a deviation from the benchmark's protocol for a real checkpoint, hence the logged flag. Torch-free at
import; `policy_pixel_bounds` loads the model's image-processor config when asked.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigorl_agents.factory import PolicyConfig

log = logging.getLogger(__name__)

FACTOR = 28
"""Side granularity of model frames and crops (Qwen2-VL's patch merge size)."""


def _flag(prefix: str, name: str) -> str:
    return f"{prefix}{name.replace('_', '-')}"


def fit_env_kwargs(
    env_id: str,
    processor_bounds: tuple[int, int],
    env_kwargs: Mapping[str, Any] | None = None,
    *,
    flag_prefix: str = "--policy.",
) -> dict[str, Any]:
    """`env_kwargs` plus the `min_pixels` / `max_pixels` / `crop_size` that put every model frame and
    crop of `env_id` inside `processor_bounds` = (min_pixels, max_pixels) of the policy's image
    processor (the rule is in this module's docstring).

    Raises ValueError when an explicitly given env kwarg conflicts with the bounds, or when no frame
    or crop size fits them; the message names the flag to pass (`flag_prefix` + min-pixels /
    max-pixels, e.g. `--policy.max-pixels 2850000`).
    """
    import gymnasium as gym

    import vigorl_env  # noqa: F401  (registers the ids)
    from vigorl_env.config import build_config
    from vigorl_env.geometry import effective_crop_size

    lo, hi = int(processor_bounds[0]), int(processor_bounds[1])
    if not 0 < lo <= hi:
        raise ValueError(
            f"processor bounds must satisfy 0 < min_pixels <= max_pixels, got {lo}, {hi}"
        )
    given = dict(env_kwargs or {})
    params = inspect.signature(build_config).parameters
    cfg = build_config(
        gym.spec(env_id).kwargs["benchmark"], **{k: v for k, v in given.items() if k in params}
    )
    out = dict(given)
    where = f"{env_id}: the policy's image processor takes [{lo}, {hi}] px per image"
    keep: dict[str, int] = {}  # processor bounds that would keep the benchmark's own sizes

    new_max = cfg.max_pixels
    if cfg.max_pixels > hi:
        if "max_pixels" in given:
            raise ValueError(
                f"{where}, but env max_pixels={cfg.max_pixels} makes larger frames: pass "
                f"{_flag(flag_prefix, 'max_pixels')} {cfg.max_pixels} (widen the processor) or "
                f"set the env's max_pixels <= {hi}"
            )
        new_max = out["max_pixels"] = hi
        keep["max_pixels"] = cfg.max_pixels
    new_min = cfg.min_pixels
    if cfg.min_pixels < lo:
        if "min_pixels" in given:
            raise ValueError(
                f"{where}, but env min_pixels={cfg.min_pixels} makes smaller frames: pass "
                f"{_flag(flag_prefix, 'min_pixels')} {cfg.min_pixels} (widen the processor) or "
                f"set the env's min_pixels >= {lo}"
            )
        new_min = out["min_pixels"] = lo
        keep["min_pixels"] = cfg.min_pixels
    if new_min > new_max:  # only when an explicit max_pixels lies below the processor's minimum
        raise ValueError(
            f"{where}, but env max_pixels={new_max} is below it: pass "
            f"{_flag(flag_prefix, 'min_pixels')} {cfg.min_pixels} (widen the processor) or set "
            f"the env's max_pixels >= {lo}"
        )

    if cfg.mode == "multi_turn":
        side = effective_crop_size(cfg.crop_size)
        if not lo <= side * side <= hi:
            explicit = "crop_size" in given or given.get("crop_preset") is not None
            need = "max_pixels" if side * side > hi else "min_pixels"
            if explicit:
                raise ValueError(
                    f"{where}, but crops are {side}x{side} = {side * side} px: pass "
                    f"{_flag(flag_prefix, need)} {side * side} (widen the processor) or set a "
                    f"crop_size whose 28-rounded square is in [{lo}, {hi}]"
                )
            fit = (
                math.isqrt(hi) // FACTOR * FACTOR
                if need == "max_pixels"
                else math.ceil(math.sqrt(lo) / FACTOR) * FACTOR
            )
            if fit < FACTOR or not lo <= fit * fit <= hi:
                raise ValueError(
                    f"{where}: no square crop with a side multiple of {FACTOR} fits; pass "
                    f"{_flag(flag_prefix, 'max_pixels')} {side * side}"
                )
            out["crop_size"] = fit
            pick = max if need == "max_pixels" else min
            keep[need] = pick(keep.get(need, side * side), side * side)

    changed = {
        k: out[k] for k in ("min_pixels", "max_pixels", "crop_size") if k in out and k not in given
    }
    if changed:
        log.warning(
            "%s; env kwargs set to %s (benchmark defaults: min_pixels=%d, max_pixels=%d, "
            "crop_size=%d); to keep the benchmark's sizes pass %s",
            where, changed, cfg.min_pixels, cfg.max_pixels, cfg.crop_size,
            " ".join(f"{_flag(flag_prefix, k)} {v}" for k, v in sorted(keep.items(), reverse=True)),
        )  # fmt: skip
    return out


def policy_pixel_bounds(cfg: PolicyConfig) -> tuple[int, int] | None:
    """(min_pixels, max_pixels) the policy built from `cfg` will resize into, or None when unknown.

    `cfg.min_pixels` / `cfg.max_pixels` win (the backends set them on the processor / pass them as
    vLLM's mm-processor kwargs); a bound left None is the model's own image-processor setting, read
    from its preprocessor config (a local folder, a tiny model — built if needed — or a Hub id,
    downloaded like the backend would). None when that config cannot be read, or for a vLLM
    server given by its endpoints only (its bounds were set where it was launched).
    """
    lo, hi = cfg.min_pixels, cfg.max_pixels
    if lo is not None and hi is not None:
        return int(lo), int(hi)
    if cfg.backend == "vllm-server" and cfg.endpoints:
        return None
    try:
        from transformers import AutoImageProcessor

        from vigorl_agents.models.load import processor_pixel_bounds, resolve_model

        own = processor_pixel_bounds(AutoImageProcessor.from_pretrained(resolve_model(cfg.model)))
    except Exception as e:  # unknown bounds only disable the fitting
        log.warning("could not read the image-processor bounds of %s: %s", cfg.model, e)
        return None
    return (own[0] if lo is None else int(lo)), (own[1] if hi is None else int(hi))


def fit_env_kwargs_to_policy(
    cfg: PolicyConfig, env_id: str, env_kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`fit_env_kwargs` with the bounds of the policy `cfg` builds (unchanged kwargs if unknown)."""
    bounds = policy_pixel_bounds(cfg)
    if bounds is None:
        return dict(env_kwargs or {})
    return fit_env_kwargs(env_id, bounds, env_kwargs)

"""Make-kwargs of the env (docs/envs.md#make-kwargs): defaults from the benchmark, validation, fingerprint.

Kept apart from the env class so the config can be built, validated and fingerprinted without
loading any data (the benchmark runner and MCTS use the fingerprint to match results to configs).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from vigorl_env.geometry import effective_crop_size
from vigorl_env.rewards import (
    ACCURACY_FNS,
    ANSWER_EXTRACTIONS,
    DEFAULT_WEIGHTS,
    MODES,
    VARIANTS,
)
from vigorl_env.tasks import BENCHMARKS, BenchmarkSpec

PROMPT_NEWLINES = ("normalized", "literal")
CROP_PRESETS = {"wide": {"offset": 100, "crop_size": 512, "draw_dot": True}}
RESOLUTIONS = {
    "lr": 1920
}  # ScreenSpot-Pro-LR (docs/geometry.md#defaults-per-benchmark, docs/envs.md#make-kwargs)
_UNSET: Any = object()


@dataclass(frozen=True)
class EnvConfig:
    """The resolved configuration of one env: every make kwarg with its default filled in."""

    benchmark: str
    split: str | None
    mode: str
    variant: str
    offset: int
    crop_size: int
    draw_dot: bool
    max_turns: int
    max_images: int
    min_pixels: int
    max_pixels: int
    max_side: int | None
    reward_weights: dict[str, float]
    diversity_bonus: float
    diversity_min_dist: float
    accuracy_fn: str
    answer_extraction: str
    system_prompt: str | None
    prompt_newlines: str
    dataset_seed: int | None
    size: int | None
    scene: dict[str, Any] | None = None
    """Procedural generator parameters (docs/envs.md#scene-parameters), resolved; None: defaults."""

    @property
    def spec(self) -> BenchmarkSpec:
        return BENCHMARKS[self.benchmark]

    @property
    def crop_size_effective(self) -> int:
        return effective_crop_size(self.crop_size)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the resolved make kwargs (data_root excluded, docs/envs.md#determinism-and-state).

        Resolved rather than as-passed, so an env made with a default spelled out matches one made
        without it.
        """
        d = asdict(self)
        if d["scene"] is None:  # the defaults: fingerprints of configs made before scene= existed
            del d["scene"]
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _pick(value: Any, default: Any) -> Any:
    return default if value is None or value is _UNSET else value


def build_config(
    benchmark: str,
    *,
    split: str | None = None,
    mode: str | None = None,
    variant: str = "grounded",
    offset: int | None = None,
    crop_size: int | None = None,
    draw_dot: bool | None = None,
    crop_preset: str | None = None,
    max_turns: int = 5,
    max_images: int = 5,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_side: int | None = _UNSET,
    resolution: str | None = None,
    reward_weights: dict[str, float] | None = None,
    diversity_bonus: float = 0.2,
    diversity_min_dist: float = 10.0,
    accuracy_fn: str = "normalized",
    answer_extraction: str = "tags",
    system_prompt: str | None = None,
    prompt_newlines: str = "normalized",
    dataset_seed: int | None = None,
    size: int | None = None,
    scene: dict[str, Any] | None = None,
) -> EnvConfig:
    """Fill defaults from the benchmark (docs/geometry.md#defaults-per-benchmark) and reject invalid values with `ValueError`."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")
    spec = BENCHMARKS[benchmark]
    fam = spec.family
    mode = _pick(mode, spec.default_mode)
    _check_choice("mode", mode, MODES)
    _check_choice("variant", variant, VARIANTS)
    if variant == "vanilla" and mode == "multi_turn":
        raise ValueError("variant='vanilla' is single-turn only; use mode='single_turn'")
    _check_choice("accuracy_fn", accuracy_fn, ACCURACY_FNS)
    _check_choice("answer_extraction", answer_extraction, ANSWER_EXTRACTIONS)
    _check_choice("prompt_newlines", prompt_newlines, PROMPT_NEWLINES)

    preset: dict[str, Any] = {}
    if crop_preset is not None:
        _check_choice("crop_preset", crop_preset, tuple(CROP_PRESETS))
        preset = CROP_PRESETS[crop_preset]
    offset = int(_pick(offset, preset.get("offset", fam.offset)))
    crop_size = int(_pick(crop_size, preset.get("crop_size", fam.crop_size)))
    draw_dot = bool(_pick(draw_dot, preset.get("draw_dot", fam.draw_dot)))

    if resolution is not None:
        if benchmark != "ScreenSpotPro":
            raise ValueError("resolution= applies to ScreenSpotPro only")
        _check_choice("resolution", resolution, tuple(RESOLUTIONS))
    if max_side is _UNSET:
        max_side = RESOLUTIONS[resolution] if resolution is not None else spec.max_side
    min_pixels = int(_pick(min_pixels, spec.min_pixels))
    max_pixels = int(_pick(max_pixels, spec.max_pixels))

    if offset < 1:
        raise ValueError(f"offset must be >= 1, got {offset}")
    if crop_size < 28:
        raise ValueError(f"crop_size must be >= 28, got {crop_size}")
    if max_turns < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    if min_pixels < 1 or min_pixels > max_pixels:
        raise ValueError(f"need 1 <= min_pixels <= max_pixels, got {min_pixels} > {max_pixels}")
    if max_side is not None and int(max_side) < 28:
        raise ValueError(f"max_side must be >= 28 or None, got {max_side}")

    weights = dict(DEFAULT_WEIGHTS[mode] if reward_weights is None else reward_weights)
    if set(weights) != {"accuracy", "format"}:
        raise ValueError(
            f"reward_weights needs exactly the keys accuracy and format, got {sorted(weights)}"
        )
    weights = {k: float(v) for k, v in weights.items()}
    if diversity_min_dist < 0:
        raise ValueError(f"diversity_min_dist must be >= 0, got {diversity_min_dist}")

    if spec.procedural:
        dataset_seed = 0 if dataset_seed is None else int(dataset_seed)
        if dataset_seed < 0:
            raise ValueError(f"dataset_seed must be >= 0, got {dataset_seed}")
        if size is not None and int(size) < 1:
            raise ValueError(f"size must be >= 1 or None, got {size}")
        size = None if size is None else int(size)
        scene = _resolve_scene(spec, scene)
    elif dataset_seed is not None or size is not None or scene is not None:
        raise ValueError(
            f"dataset_seed=, size= and scene= apply to procedural envs only, not {benchmark}"
        )

    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError("system_prompt must be a string")

    return EnvConfig(
        benchmark=benchmark,
        split=split,
        mode=mode,
        variant=variant,
        offset=offset,
        crop_size=crop_size,
        draw_dot=draw_dot,
        max_turns=int(max_turns),
        max_images=int(max_images),
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        max_side=None if max_side is None else int(max_side),
        reward_weights=weights,
        diversity_bonus=float(diversity_bonus),
        diversity_min_dist=float(diversity_min_dist),
        accuracy_fn=accuracy_fn,
        answer_extraction=answer_extraction,
        system_prompt=system_prompt,
        prompt_newlines=prompt_newlines,
        dataset_seed=dataset_seed,
        size=size,
        scene=scene,
    )


def _resolve_scene(spec: Any, scene: Any) -> dict[str, Any] | None:
    """`scene=` checked against the generator's parameters and resolved (lists, sorted keys);
    None when it leaves every parameter at its default (so the fingerprint is the default's)."""
    if scene is None:
        return None
    from vigorl_env.data.synth.common import resolve_scene

    gen = spec.generator
    resolved = resolve_scene(gen, scene)
    if resolved == gen.SCENE:
        return None
    return {k: list(v) for k, v in sorted(resolved.items())}


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")

"""Shared machinery of the procedural datasets: seeding, ids, the shipped font.

A sample is a pure function of (dataset_seed, split, index) (docs/data.md#procedural-datasets). Subclasses implement
`_generate(rng, sample_id, index)`; they must draw *everything* (layout, question, option order)
from `rng` and never from global state, and must render with the shipped TTF only, so images are
bit-identical across machines for a pinned Pillow major version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any, ClassVar

import numpy as np
from PIL import ImageFont

from vigorl_env.data.base import SPLIT_CODES, Sample

UNLIMITED = 2**31  # indices 0 … 2^31−1


@lru_cache(maxsize=64)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """The package's DejaVu Sans at `size` px (never a system font)."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = resources.files("vigorl_env") / "assets" / "fonts" / name
    with resources.as_file(path) as p:
        return ImageFont.truetype(str(p), size=size)


def sample_rng(dataset_seed: int, split: str, index: int) -> np.random.Generator:
    """RNG = Generator(PCG64(SeedSequence([dataset_seed, split_code, index])))."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([dataset_seed, SPLIT_CODES[split], index]))
    )


def resolve_scene(cls: type[SynthDataset], scene: Mapping[str, Any] | None) -> dict[str, Any]:
    """The generator parameters of `cls` with `scene` laid over its defaults, checked
    (docs/envs.md#scene-parameters): a range is `[lo, hi]` of ints with lo ≤ hi inside the
    parameter's allowed bounds, a choice list is a non-empty list of the allowed names. Unknown
    keys or bad values raise `ValueError` naming the parameter and what it accepts."""
    out = dict(cls.SCENE)
    if scene is None:
        return out
    if not isinstance(scene, Mapping):
        raise ValueError(f"{cls.name}: scene must be a mapping, got {type(scene).__name__}")
    unknown = sorted(set(scene) - set(cls.SCENE))
    if unknown:
        known = ", ".join(sorted(cls.SCENE)) or "none"
        raise ValueError(f"{cls.name}: unknown scene parameter(s) {unknown}; known: {known}")
    for key, value in scene.items():
        default = cls.SCENE[key]
        if isinstance(default[0], str):  # a choice among names
            if (
                isinstance(value, str)
                or not isinstance(value, (list, tuple))
                or not value
                or any(v not in default for v in value)
                or len(set(value)) != len(value)
            ):
                raise ValueError(
                    f"{cls.name}: scene {key} must be a non-empty list of distinct names among "
                    f"{list(default)}, got {value!r}"
                )
            out[key] = tuple(str(v) for v in value)
            continue
        lo_b, hi_b = cls.SCENE_BOUNDS[key]
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not lo_b <= value[0] <= value[1] <= hi_b
        ):
            raise ValueError(
                f"{cls.name}: scene {key} must be [lo, hi] integers with {lo_b} <= lo <= hi <= "
                f"{hi_b}, got {value!r}"
            )
        out[key] = (int(value[0]), int(value[1]))
    return out


class SynthDataset:
    """Base class: random access to procedural samples of one split."""

    name: str = "Synth"
    SCENE: ClassVar[dict[str, tuple]] = {}
    """Generator parameters a `scene=` make kwarg may change, with their defaults: `(lo, hi)`
    integer ranges (bounds in `SCENE_BOUNDS`) or tuples of allowed names (docs/envs.md#scene-parameters)."""
    SCENE_BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {}

    def __init__(
        self,
        split: str = "train",
        dataset_seed: int = 0,
        size: int | None = None,
        scene: Mapping[str, Any] | None = None,
    ):
        if split not in SPLIT_CODES:
            raise ValueError(
                f"{self.name}: unknown split {split!r}; expected one of {sorted(SPLIT_CODES)}"
            )
        if size is not None and not (1 <= int(size) <= UNLIMITED):
            raise ValueError(f"{self.name}: size must be in [1, 2^31] or None, got {size!r}")
        if int(dataset_seed) < 0:
            raise ValueError(f"{self.name}: dataset_seed must be >= 0, got {dataset_seed!r}")
        self.split = split
        self.dataset_seed = int(dataset_seed)
        self.size = None if size is None else int(size)
        self.scene = resolve_scene(type(self), scene)
        self._id_re = re.compile(rf"^{re.escape(self.name)}-{split}-{self.dataset_seed}-(\d+)$")

    @property
    def cache_key(self) -> tuple:
        """Equal for two datasets that yield the same sample at every index (a sample is a pure
        function of class, split, seed and index; `size` only bounds the indices), so envs of
        separate dataset objects share model frames (`vigorl_env.env.FrameCache`)."""
        key = (f"{type(self).__module__}.{type(self).__qualname__}", self.split, self.dataset_seed)
        if self.scene != type(self).SCENE:  # other generator parameters: other samples
            key += (tuple(sorted(self.scene.items())),)
        return key

    def __len__(self) -> int:
        return self.size if self.size is not None else UNLIMITED

    def __getitem__(self, index: int) -> Sample:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"{self.name}[{self.split}]: index {index} outside [0, {len(self)})")
        sample_id = f"{self.name}-{self.split}-{self.dataset_seed}-{index}"
        return self._generate(sample_rng(self.dataset_seed, self.split, index), sample_id, index)

    def index_of(self, sample_id: str) -> int:
        m = self._id_re.match(sample_id)
        if m is None or int(m.group(1)) >= len(self):
            raise KeyError(
                f"{self.name}[{self.split}, seed {self.dataset_seed}]: no sample {sample_id!r}"
            )
        return int(m.group(1))

    def _generate(self, rng: np.random.Generator, sample_id: str, index: int) -> Sample:
        raise NotImplementedError

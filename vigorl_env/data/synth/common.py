"""Shared machinery of the procedural datasets: seeding, ids, the shipped font.

A sample is a pure function of (dataset_seed, split, index) (docs/data.md#procedural-datasets). Subclasses implement
`_generate(rng, sample_id, index)`; they must draw *everything* (layout, question, option order)
from `rng` and never from global state, and must render with the shipped TTF only, so images are
bit-identical across machines for a pinned Pillow major version.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

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


class SynthDataset:
    """Base class: random access to procedural samples of one split."""

    name: str = "Synth"

    def __init__(self, split: str = "train", dataset_seed: int = 0, size: int | None = None):
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
        self._id_re = re.compile(rf"^{re.escape(self.name)}-{split}-{self.dataset_seed}-(\d+)$")

    @property
    def cache_key(self) -> tuple[str, str, int]:
        """Equal for two datasets that yield the same sample at every index (a sample is a pure
        function of class, split, seed and index; `size` only bounds the indices), so envs of
        separate dataset objects share model frames (`vigorl_env.env.FrameCache`)."""
        return (f"{type(self).__module__}.{type(self).__qualname__}", self.split, self.dataset_seed)

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

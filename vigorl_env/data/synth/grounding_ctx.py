"""Screen parameters and the layout state (`_Ctx`) shared by every SynthGrounding layout module.

Why it exists: the chrome, section and instruction modules all read and append to the same
per-attempt state (RNG, theme, UI scale, display list, interactive elements, used labels); it
lives here so those modules depend on it rather than on each other. Split out of `grounding.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigorl_env.data.synth.ui import Box, Op, Theme

#: (width, height, UI scales); the phone renders at @2.5x/@3x like a real device screenshot.
SCREENS: tuple[tuple[int, int, tuple[float, ...]], ...] = (
    (1280, 800, (1.0,)),
    (1920, 1080, (1.0, 1.25, 1.5)),
    (2560, 1440, (1.0, 1.25)),
    (1170, 2532, (2.5, 3.0)),
)
TOPBAR_GLYPHS: tuple[str, ...] = ("search", "gear", "bell", "plus", "home", "user")
ROW_GLYPH_SETS: tuple[tuple[str, ...], ...] = (
    ("trash",),
    ("gear", "trash"),
    ("bell",),
    ("user", "trash"),
    ("plus",),
    ("search",),
    ("gear",),
)
MIN_WIDGETS, MAX_WIDGETS = 6, 30
SECONDARY_LABELS: tuple[str, ...] = ("Cancel", "Back", "Discard", "Reset", "Skip", "Not now")


@dataclass
class _El:
    """An interactive element while the layout is built."""

    category: str
    box: Box
    label: str
    glyph: str | None = None
    region: str = "content"
    extra: dict[str, Any] = field(default_factory=dict)


class _Ctx:
    """Layout state of one attempt: RNG, theme, scale, display list, elements, used labels."""

    def __init__(
        self, rng: np.random.Generator, theme: Theme, s: float, mobile: bool, max_widgets: int
    ):
        self.rng, self.theme, self.s, self.mobile = rng, theme, s, mobile
        self.max_widgets = max_widgets
        self.limit = max_widgets  # widget cap of the column being filled
        self.ops: list[Op] = []
        self.els: list[_El] = []
        self.used: set[str] = set()
        self.sections: list[str] = []

    def px(self, v: float) -> int:
        return max(1, round(v * self.s))

    def ri(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi] (inclusive)."""
        return int(self.rng.integers(lo, hi + 1))

    def pick(self, seq: Sequence[Any]) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def fresh(self, vocab: Sequence[Any], key: Callable[[Any], str] = str) -> Any:
        """A vocabulary entry whose label is not on screen yet (a used one if all are)."""
        order = self.rng.permutation(len(vocab))
        for i in order:
            item = vocab[int(i)]
            if key(item) not in self.used:
                self.used.add(key(item))
                return item
        return vocab[int(order[0])]

    @property
    def n_widgets(self) -> int:
        return sum(e.region == "content" for e in self.els)

    @property
    def budget(self) -> int:
        return min(self.max_widgets, self.limit) - self.n_widgets

    def el(
        self,
        category: str,
        box: Box,
        label: str,
        glyph: str | None = None,
        region: str = "content",
        **extra: Any,
    ) -> None:
        self.els.append(_El(category, box, label, glyph, region, dict(extra)))

    # sizes (logical px × scale)
    @property
    def f_body(self) -> int:
        return self.px(14)

    @property
    def f_small(self) -> int:
        return self.px(12)

    @property
    def ctrl(self) -> int:
        return self.px(34)

    @property
    def radius(self) -> int:
        return self.px(6)

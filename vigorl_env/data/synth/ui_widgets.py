"""Colours, themes and widget helpers of the procedural screens (buttons, fields, links, ...).

Why it exists: each widget helper turns a box, a label and a `Theme` into drawing ops with the
geometry left to the caller, so SynthGrounding and SynthWebAction share one look without sharing
layout code. Split out of `ui.py`, which re-exports everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vigorl_env.data.synth.ui_draw import (
    RGB,
    Box,
    Glyph,
    Line,
    Op,
    Picture,
    Rect,
    Text,
    ellipsize,
    text_bbox,
    text_width,
)

# --------------------------------------------------------------------------------------------
# Colours and themes
# --------------------------------------------------------------------------------------------


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Integer blend a·(1−t) + b·t."""
    r, g, b_ = (round(x * (1 - t) + y * t) for x, y in zip(a, b, strict=True))
    return r, g, b_


WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
# fmt: off
ACCENTS: tuple[RGB, ...] = (
    (37, 99, 235), (79, 70, 229), (124, 58, 237), (13, 148, 136), (22, 163, 74), (234, 88, 12),
    (220, 38, 38), (219, 39, 119), (2, 132, 199), (202, 138, 4), (71, 85, 105),
)
# fmt: on


@dataclass(frozen=True)
class Theme:
    dark: bool
    bg: RGB
    surface: RGB
    surface_alt: RGB
    border: RGB
    text: RGB
    muted: RGB
    accent: RGB
    on_accent: RGB
    topbar: RGB
    on_topbar: RGB
    sidebar: RGB
    field: RGB
    danger: RGB


def make_theme(rng: np.random.Generator) -> Theme:
    """A light or dark colour scheme with a random accent and top-bar / sidebar styles."""
    dark = bool(rng.random() < 0.35)
    accent = ACCENTS[int(rng.integers(len(ACCENTS) - (1 if dark else 0)))]  # no slate when dark
    if dark:
        base = ((17, 24, 39), (24, 24, 27), (15, 23, 42), (28, 28, 30))[int(rng.integers(4))]
        surface = mix(base, WHITE, 0.06)
        theme = dict(
            bg=base,
            surface=surface,
            surface_alt=mix(base, WHITE, 0.03),
            border=mix(base, WHITE, 0.18),
            text=(236, 238, 242),
            muted=(156, 163, 175),
            field=mix(base, WHITE, 0.09),
            accent=mix(accent, WHITE, 0.3),
        )
    else:
        bg = ((248, 249, 251), (243, 244, 246), (255, 255, 255), (246, 247, 249))[
            int(rng.integers(4))
        ]
        theme = dict(
            bg=bg,
            surface=WHITE,
            surface_alt=mix(bg, (226, 232, 240), 0.45),
            border=(219, 223, 230),
            text=(31, 41, 55),
            muted=(107, 114, 128),
            field=WHITE,
            accent=accent,
        )
    acc = theme["accent"]
    style = int(rng.integers(3))  # 0 plain bar, 1 accent bar, 2 dark bar (light themes)
    if style == 1:
        topbar, on_topbar = mix(acc, BLACK, 0.1), WHITE
    elif style == 2 and not dark:
        topbar, on_topbar = (30, 41, 59), WHITE
    else:
        topbar, on_topbar = theme["surface"], theme["text"]
    sidebar = theme["surface_alt"] if rng.random() < 0.6 else theme["surface"]
    return Theme(
        dark=dark,
        on_accent=WHITE,
        topbar=topbar,
        on_topbar=on_topbar,
        sidebar=sidebar,
        danger=(220, 38, 38),
        **theme,
    )


# --------------------------------------------------------------------------------------------
# Widgets (each returns drawing ops; geometry is the caller's)
# --------------------------------------------------------------------------------------------


def button_ops(
    box: Box,
    label: str,
    size: int,
    style: str,
    theme: Theme,
    radius: int,
    glyph: str | None = None,
    bold: bool = True,
) -> list[Op]:
    """A labelled button; style ∈ primary | secondary | ghost | danger."""
    x1, y1, x2, y2 = box
    if style == "primary":
        fill, outline, fg = theme.accent, None, theme.on_accent
    elif style == "danger":
        fill, outline, fg = theme.danger, None, WHITE
    elif style == "ghost":
        fill, outline, fg = None, None, theme.accent
    else:
        fill, outline, fg = theme.surface, theme.border, theme.text
    ops: list[Op] = [Rect(box, fill=fill, outline=outline, width=1, radius=radius)]
    cy = (y1 + y2 + 1) // 2
    tw = text_width(label, size, bold)
    if glyph:
        g = int(size * 1.15)
        gap = max(4, size // 2)
        x = (x1 + x2 + 1 - (g + gap + tw)) // 2
        ops.append(Glyph(glyph, (x, cy - g // 2, x + g - 1, cy - g // 2 + g - 1), fg))
        ops.append(Text((x + g + gap, cy), label, size, fg, bold, "lm"))
    else:
        ops.append(Text(((x1 + x2 + 1) // 2, cy), label, size, fg, bold, "mm"))
    return ops


def button_width(label: str, size: int, pad: int, glyph: bool = False, bold: bool = True) -> int:
    extra = int(size * 1.15) + max(4, size // 2) if glyph else 0
    return text_width(label, size, bold) + 2 * pad + extra


def text_field_ops(
    box: Box,
    text: str,
    size: int,
    theme: Theme,
    radius: int,
    placeholder: bool = True,
    glyph: str | None = None,
) -> list[Op]:
    """A single-line input showing its placeholder (muted) or value."""
    x1, y1, x2, y2 = box
    h = y2 - y1 + 1
    pad = max(6, h // 3)
    ops: list[Op] = [Rect(box, fill=theme.field, outline=theme.border, width=1, radius=radius)]
    cy = (y1 + y2 + 1) // 2
    x = x1 + pad
    if glyph:
        g = int(size * 1.1)
        ops.append(Glyph(glyph, (x, cy - g // 2, x + g - 1, cy - g // 2 + g - 1), theme.muted))
        x += g + max(4, size // 2)
    shown = ellipsize(text, size, max(8, x2 - pad - x))
    ops.append(Text((x, cy), shown, size, theme.muted if placeholder else theme.text, False, "lm"))
    return ops


def checkbox_ops(box: Box, checked: bool, theme: Theme) -> list[Op]:
    side = box[2] - box[0] + 1
    r = max(2, side // 5)
    if checked:
        inset = max(2, side // 6)
        b = (box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset)
        return [Rect(box, fill=theme.accent, radius=r), Glyph("check", b, theme.on_accent)]
    return [
        Rect(
            box,
            fill=theme.field,
            outline=mix(theme.border, theme.muted, 0.5),
            width=max(1, side // 12),
            radius=r,
        )
    ]


def link_ops(
    x: int, cy: int, label: str, size: int, color: RGB, underline: bool, bold: bool = False
) -> tuple[list[Op], Box]:
    """A text link anchored left-middle at (x, cy); returns ops and its (padded) ink box."""
    x1, y1, x2, y2 = text_bbox(label, size, bold, "lm")
    ops: list[Op] = [Text((x, cy), label, size, color, bold, "lm")]
    if underline:
        uy = cy + y2 + max(1, size // 10)
        ops.append(Line((x + x1, uy, x + x2 - 1, uy), color, max(1, size // 14)))
        y2 = uy - cy
    pad = max(1, size // 8)
    return ops, (x + x1 - pad, cy + y1 - pad, x + x2 - 1 + pad, cy + y2 + pad)


def picture_op(rng: np.random.Generator, box: Box, radius: int = 0) -> Picture:
    """An image placeholder with random pleasant colours."""
    skies = (
        (186, 214, 242),
        (203, 226, 247),
        (250, 214, 170),
        (214, 204, 240),
        (190, 232, 222),
        (238, 238, 238),
        (245, 200, 200),
    )
    hills = (
        (76, 145, 92),
        (58, 110, 160),
        (120, 96, 160),
        (170, 110, 70),
        (60, 120, 120),
        (110, 110, 120),
        (180, 80, 90),
    )
    suns = ((255, 214, 92), (255, 255, 255), (255, 170, 120), (255, 236, 160))
    return Picture(
        box,
        skies[int(rng.integers(len(skies)))],
        hills[int(rng.integers(len(hills)))],
        suns[int(rng.integers(len(suns)))],
        radius,
    )


def paragraph_ops(
    x: int, y: int, lines: Sequence[str], size: int, color: RGB, line_h: int
) -> list[Op]:
    return [Text((x, y + i * line_h), s, size, color, False, "la") for i, s in enumerate(lines)]


def stars_ops(x: int, cy: int, rating: float, side: int, on: RGB, off: RGB) -> list[Op]:
    """Five rating stars (rounded to whole stars), left edge at x, centred on cy."""
    full = round(rating)
    return [
        Glyph(
            "star",
            (
                x + k * (side + 2),
                cy - side // 2,
                x + k * (side + 2) + side - 1,
                cy - side // 2 + side - 1,
            ),
            on if k < full else off,
        )
        for k in range(5)
    ]

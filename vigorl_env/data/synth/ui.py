"""Shared UI drawing primitives of the procedural screen datasets (SynthGrounding, SynthWebAction).

Why a display list: generators compute the whole layout eagerly (boxes, labels, ids) from the
sample RNG, but pixels are only needed when the env asks for the image. A `Page` is a frozen tuple
of plain drawing operations (ints, tuples, strings), so `functools.partial(render_page, page)` is a
cheap, picklable, zero-argument image loader (SPEC §2.6) and rendering is a pure function of it.

Everything is integer geometry drawn with PIL primitives and the shipped DejaVu font, so the same
page renders bit-identically on every machine for a pinned Pillow major version. Icon glyphs are
drawn 4× supersampled into a mask and box-filtered down (deterministic too), which keeps 16–20 px
icons recognisable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vigorl_env.data.synth.common import font

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]  # (x1, y1, x2, y2), inclusive, like PIL's rectangle

# --------------------------------------------------------------------------------------------
# Drawing operations and the renderer
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rect:
    box: Box
    fill: RGB | None = None
    outline: RGB | None = None
    width: int = 1
    radius: int = 0


@dataclass(frozen=True)
class Ellipse:
    box: Box
    fill: RGB | None = None
    outline: RGB | None = None
    width: int = 1


@dataclass(frozen=True)
class Line:
    points: tuple[int, ...]  # x0, y0, x1, y1, ...
    color: RGB
    width: int = 1


@dataclass(frozen=True)
class Polygon:
    points: tuple[int, ...]
    fill: RGB


@dataclass(frozen=True)
class Text:
    """One line of text; `anchor` is PIL's two-letter text anchor (e.g. "lm": left, middle)."""

    xy: tuple[int, int]
    text: str
    size: int
    color: RGB
    bold: bool = False
    anchor: str = "la"


@dataclass(frozen=True)
class Glyph:
    """An icon glyph (see GLYPHS) centred in `box`, side = the box's shorter side."""

    name: str
    box: Box
    color: RGB


@dataclass(frozen=True)
class Picture:
    """An image placeholder: a flat 'photo' (sky, hills, sun) like a thumbnail in a screenshot."""

    box: Box
    sky: RGB
    hill: RGB
    sun: RGB
    radius: int = 0


Op = Rect | Ellipse | Line | Polygon | Text | Glyph | Picture


@dataclass(frozen=True)
class Page:
    size: tuple[int, int]
    background: RGB
    ops: tuple[Op, ...]


def _fnt(size: int, bold: bool) -> ImageFont.FreeTypeFont:
    return _font_cached(int(size), bool(bold))


@lru_cache(maxsize=256)
def _font_cached(size: int, bold: bool) -> ImageFont.FreeTypeFont:
    return font(size, bold)


def render_page(page: Page) -> Image.Image:
    """Rasterize a page (pure function of `page`)."""
    img = Image.new("RGB", page.size, page.background)
    draw = ImageDraw.Draw(img)
    for op in page.ops:
        if isinstance(op, Rect):
            x1, y1, x2, y2 = op.box
            if x2 < x1 or y2 < y1:
                continue
            r = min(op.radius, (x2 - x1) // 2, (y2 - y1) // 2)
            if r > 0:
                draw.rounded_rectangle(op.box, r, fill=op.fill, outline=op.outline, width=op.width)
            else:
                draw.rectangle(op.box, fill=op.fill, outline=op.outline, width=op.width)
        elif isinstance(op, Text):
            draw.text(op.xy, op.text, fill=op.color, font=_fnt(op.size, op.bold), anchor=op.anchor)
        elif isinstance(op, Line):
            draw.line(op.points, fill=op.color, width=op.width)
        elif isinstance(op, Glyph):
            _paste_glyph(img, op)
        elif isinstance(op, Ellipse):
            draw.ellipse(op.box, fill=op.fill, outline=op.outline, width=op.width)
        elif isinstance(op, Polygon):
            draw.polygon(op.points, fill=op.fill)
        elif isinstance(op, Picture):
            _draw_picture(img, op)
        else:  # pragma: no cover - programmer error
            raise TypeError(f"unknown drawing op {op!r}")
    return img


def translate(op: Op, dx: int, dy: int) -> Op:
    """The same op moved by (dx, dy) (used to scroll a document into a viewport)."""

    def mv(b: Sequence[int]) -> tuple[int, ...]:
        return tuple(v + (dx if i % 2 == 0 else dy) for i, v in enumerate(b))

    if isinstance(op, Text):
        return replace(op, xy=(op.xy[0] + dx, op.xy[1] + dy))
    if isinstance(op, Line | Polygon):
        return replace(op, points=mv(op.points))
    return replace(op, box=mv(op.box))


def _draw_picture(img: Image.Image, op: Picture) -> None:
    x1, y1, x2, y2 = op.box
    w, h = x2 - x1 + 1, y2 - y1 + 1
    if w < 4 or h < 4:
        return
    tile = Image.new("RGB", (w, h), op.sky)
    d = ImageDraw.Draw(tile)
    r = max(2, min(w, h) // 8)
    d.ellipse((w * 7 // 10 - r, h // 4 - r, w * 7 // 10 + r, h // 4 + r), fill=op.sun)
    far = tuple(min(255, (c + s) // 2 + 20) for c, s in zip(op.hill, op.sky, strict=True))
    d.polygon([(0, h * 3 // 4), (w * 3 // 10, h * 2 // 5), (w * 6 // 10, h * 3 // 4)], fill=far)
    d.polygon([(w // 4, h), (w * 6 // 10, h // 2), (w, h * 17 // 20), (w, h)], fill=op.hill)
    d.rectangle((0, h * 17 // 20, w, h), fill=op.hill)
    if op.radius > 0:
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).rounded_rectangle((0, 0, w - 1, h - 1), op.radius, fill=255)
        img.paste(tile, (x1, y1), mask)
    else:
        img.paste(tile, (x1, y1))


# --------------------------------------------------------------------------------------------
# Icon glyphs (unit-square recipes drawn 4x supersampled)
# --------------------------------------------------------------------------------------------

#: Glyphs a grounding instruction may name ("the {glyph} icon in the top bar").
ICON_GLYPHS: tuple[str, ...] = ("search", "gear", "bell", "trash", "plus", "home", "user")
#: The accessible name a real UI gives each glyph (used as the element's label).
ICON_NAMES: dict[str, str] = {
    "search": "Search",
    "gear": "Settings",
    "bell": "Notifications",
    "trash": "Delete",
    "plus": "Add",
    "home": "Home",
    "user": "Account",
    "folder": "Folder",
    "doc": "Documents",
    "mail": "Mail",
    "calendar": "Calendar",
    "chart": "Analytics",
    "star": "Favorite",
    "chat": "Messages",
    "cart": "Cart",
    "grid": "Apps",
    "menu": "Menu",
    "card": "Billing",
}
_SS = 4  # supersampling factor of glyph masks


def _glyph_draw(name: str, d: ImageDraw.ImageDraw, n: int) -> None:
    """Draw glyph `name` with value 255 into an n×n mask (n = 4 × final side)."""

    def p(*v: float) -> list[int]:
        return [round(a * n) for a in v]

    def w(a: float) -> int:
        return max(1, round(a * n))

    on, off = 255, 0
    if name == "search":
        d.ellipse(p(0.1, 0.1, 0.66, 0.66), outline=on, width=w(0.11))
        d.line(p(0.58, 0.58, 0.9, 0.9), fill=on, width=w(0.14))
    elif name == "gear":
        for k in range(8):
            a = k * math.pi / 4
            c, s = math.cos(a), math.sin(a)
            d.line(
                p(0.5 + 0.2 * c, 0.5 + 0.2 * s, 0.5 + 0.45 * c, 0.5 + 0.45 * s),
                fill=on,
                width=w(0.15),
            )
        d.ellipse(p(0.17, 0.17, 0.83, 0.83), fill=on)
        d.ellipse(p(0.36, 0.36, 0.64, 0.64), fill=off)
    elif name == "bell":
        d.ellipse(p(0.45, 0.06, 0.55, 0.16), fill=on)
        d.ellipse(p(0.26, 0.13, 0.74, 0.55), fill=on)
        d.polygon(
            [
                tuple(p(*xy))
                for xy in (
                    (0.26, 0.34),
                    (0.74, 0.34),
                    (0.78, 0.68),
                    (0.9, 0.78),
                    (0.1, 0.78),
                    (0.22, 0.68),
                )
            ],
            fill=on,
        )
        d.ellipse(p(0.4, 0.8, 0.6, 0.96), fill=on)
    elif name == "trash":
        d.rectangle(p(0.12, 0.19, 0.88, 0.28), fill=on)
        d.rectangle(p(0.37, 0.08, 0.63, 0.19), outline=on, width=w(0.07))
        d.polygon(
            [tuple(p(*xy)) for xy in ((0.2, 0.33), (0.8, 0.33), (0.74, 0.93), (0.26, 0.93))],
            fill=on,
        )
        for x in (0.38, 0.5, 0.62):
            d.line(p(x, 0.43, x, 0.82), fill=off, width=w(0.055))
    elif name == "plus":
        d.rectangle(p(0.41, 0.1, 0.59, 0.9), fill=on)
        d.rectangle(p(0.1, 0.41, 0.9, 0.59), fill=on)
    elif name == "home":
        d.polygon([tuple(p(*xy)) for xy in ((0.5, 0.06), (0.96, 0.5), (0.04, 0.5))], fill=on)
        d.rectangle(p(0.18, 0.44, 0.82, 0.92), fill=on)
        d.rectangle(p(0.41, 0.62, 0.59, 0.92), fill=off)
    elif name == "user":
        d.ellipse(p(0.3, 0.06, 0.7, 0.46), fill=on)
        d.pieslice(p(0.1, 0.54, 0.9, 1.34), 180, 360, fill=on)
    elif name == "folder":
        d.polygon(
            [
                tuple(p(*xy))
                for xy in (
                    (0.06, 0.2),
                    (0.38, 0.2),
                    (0.48, 0.3),
                    (0.94, 0.3),
                    (0.94, 0.84),
                    (0.06, 0.84),
                )
            ],
            fill=on,
        )
        d.rectangle(p(0.12, 0.4, 0.88, 0.78), fill=off)
    elif name == "doc":
        d.polygon(
            [
                tuple(p(*xy))
                for xy in ((0.18, 0.06), (0.62, 0.06), (0.84, 0.28), (0.84, 0.94), (0.18, 0.94))
            ],
            fill=on,
        )
        d.rectangle(p(0.26, 0.16, 0.56, 0.86), fill=off)
        d.rectangle(p(0.56, 0.36, 0.76, 0.86), fill=off)
        for y in (0.46, 0.6, 0.74):
            d.line(p(0.32, y, 0.7, y), fill=on, width=w(0.06))
    elif name == "mail":
        d.rectangle(p(0.06, 0.2, 0.94, 0.8), outline=on, width=w(0.08))
        d.line(p(0.08, 0.24, 0.5, 0.56, 0.92, 0.24), fill=on, width=w(0.08))
    elif name == "calendar":
        d.rectangle(p(0.1, 0.16, 0.9, 0.9), outline=on, width=w(0.08))
        d.rectangle(p(0.1, 0.16, 0.9, 0.34), fill=on)
        d.line(p(0.3, 0.06, 0.3, 0.22), fill=on, width=w(0.08))
        d.line(p(0.7, 0.06, 0.7, 0.22), fill=on, width=w(0.08))
        for x in (0.3, 0.5, 0.7):
            for y in (0.5, 0.72):
                d.rectangle(p(x - 0.05, y - 0.05, x + 0.05, y + 0.05), fill=on)
    elif name == "chart":
        for x, top in ((0.14, 0.5), (0.41, 0.2), (0.68, 0.38)):
            d.rectangle(p(x, top, x + 0.18, 0.88), fill=on)
        d.line(p(0.06, 0.93, 0.94, 0.93), fill=on, width=w(0.06))
    elif name == "star":
        pts = []
        for k in range(10):
            r = 0.46 if k % 2 == 0 else 0.19
            a = -math.pi / 2 + k * math.pi / 5
            pts.append(tuple(p(0.5 + r * math.cos(a), 0.54 + r * math.sin(a))))
        d.polygon(pts, fill=on)
    elif name == "chat":
        d.rounded_rectangle(p(0.06, 0.12, 0.94, 0.7), w(0.14), fill=on)
        d.polygon([tuple(p(*xy)) for xy in ((0.2, 0.64), (0.44, 0.64), (0.18, 0.9))], fill=on)
    elif name == "cart":
        d.line(p(0.04, 0.16, 0.2, 0.16, 0.32, 0.66, 0.84, 0.66), fill=on, width=w(0.08))
        d.polygon(
            [tuple(p(*xy)) for xy in ((0.24, 0.28), (0.94, 0.28), (0.84, 0.56), (0.31, 0.56))],
            fill=on,
        )
        d.ellipse(p(0.3, 0.74, 0.44, 0.88), fill=on)
        d.ellipse(p(0.7, 0.74, 0.84, 0.88), fill=on)
    elif name == "grid":
        for x in (0.1, 0.56):
            for y in (0.1, 0.56):
                d.rectangle(p(x, y, x + 0.34, y + 0.34), fill=on)
    elif name == "menu":
        for y in (0.22, 0.5, 0.78):
            d.line(p(0.1, y, 0.9, y), fill=on, width=w(0.1))
    elif name == "card":
        d.rounded_rectangle(p(0.06, 0.2, 0.94, 0.8), w(0.08), outline=on, width=w(0.07))
        d.rectangle(p(0.06, 0.32, 0.94, 0.44), fill=on)
    elif name == "check":
        d.line(p(0.16, 0.52, 0.42, 0.76, 0.86, 0.26), fill=on, width=w(0.16), joint="curve")
    elif name == "chevron_down":
        d.line(p(0.2, 0.36, 0.5, 0.66, 0.8, 0.36), fill=on, width=w(0.12), joint="curve")
    elif name == "chevron_right":
        d.line(p(0.36, 0.2, 0.66, 0.5, 0.36, 0.8), fill=on, width=w(0.12), joint="curve")
    elif name == "dot":
        d.ellipse(p(0.3, 0.3, 0.7, 0.7), fill=on)
    else:
        raise ValueError(f"unknown glyph {name!r}")


@lru_cache(maxsize=512)
def glyph_mask(name: str, side: int) -> Image.Image:
    """The anti-aliased `side`×`side` "L" mask of a glyph (cached; treat as read-only)."""
    big = Image.new("L", (side * _SS, side * _SS), 0)
    _glyph_draw(name, ImageDraw.Draw(big), side * _SS)
    return big.resize((side, side), Image.Resampling.BOX)


def _paste_glyph(img: Image.Image, op: Glyph) -> None:
    x1, y1, x2, y2 = op.box
    side = min(x2 - x1 + 1, y2 - y1 + 1)
    if side < 4:
        return
    ox = x1 + (x2 - x1 + 1 - side) // 2
    oy = y1 + (y2 - y1 + 1 - side) // 2
    img.paste(op.color, (ox, oy, ox + side, oy + side), glyph_mask(op.name, side))


# --------------------------------------------------------------------------------------------
# Text measurement
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=16384)
def text_width(text: str, size: int, bold: bool = False) -> int:
    """Advance width of `text` in px (ceil), the number layouts reserve for it."""
    return math.ceil(_fnt(size, bold).getlength(text))


@lru_cache(maxsize=16384)
def text_bbox(text: str, size: int, bold: bool = False, anchor: str = "lm") -> Box:
    """Ink box of `text` relative to its anchor point (PIL `getbbox`)."""
    x1, y1, x2, y2 = _fnt(size, bold).getbbox(text, anchor=anchor)
    return int(x1), int(y1), int(x2), int(y2)


def wrap(text: str, size: int, max_w: int, bold: bool = False) -> list[str]:
    """Greedy word wrap to lines no wider than `max_w` (a longer single word gets its own line)."""
    lines: list[str] = []
    cur = ""
    for word in text.split():
        cand = f"{cur} {word}" if cur else word
        if cur and text_width(cand, size, bold) > max_w:
            lines.append(cur)
            cur = word
        else:
            cur = cand
    if cur:
        lines.append(cur)
    return lines


def ellipsize(text: str, size: int, max_w: int, bold: bool = False) -> str:
    """`text` cut with "…" to fit `max_w` (unchanged if it fits)."""
    if text_width(text, size, bold) <= max_w:
        return text
    while text and text_width(text + "…", size, bold) > max_w:
        text = text[:-1]
    return text.rstrip() + "…"


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


# --------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------

# fmt: off
APP_TITLES: tuple[str, ...] = (
    "Acme Cloud", "Nimbus CRM", "Orbit Mail", "Ledgerly", "Pulse Analytics", "Harbor Docs",
    "Taskly", "Northwind Admin", "Atlas Console", "Beacon Support", "Juniper Notes",
    "Cobalt Drive", "Vertex Studio", "Maple Billing", "Quartz HR", "Lumen Photos", "Tidal Finance",
    "Sprout Forms", "Relay Chat", "Summit Projects", "Keystone Wiki", "Cedar Calendar",
    "Falcon Deploy", "Mosaic Design",
)

PAGE_TITLES: tuple[str, ...] = (
    "Account settings", "Project overview", "Team members", "Billing and plans",
    "Notification settings", "Inbox", "Monthly report", "New invoice", "Edit profile", "Security",
    "Integrations", "Shared files", "Orders", "Customers", "Create campaign", "Preferences",
    "Workspace", "Support tickets", "Deployments", "Content library", "Checkout", "Privacy",
    "Subscriptions", "Audit log",
)

BUTTON_LABELS: tuple[str, ...] = (
    "Save", "Cancel", "Submit", "Apply", "Export as PDF", "Download", "Upload file", "Share",
    "Delete", "Edit", "Continue", "Back", "Next", "Sign in", "Create account", "Log out",
    "Create project", "New folder", "Invite members", "Add to cart", "Checkout", "Subscribe",
    "Save changes", "Discard", "Reset", "Send", "Reply", "Archive", "Duplicate", "Preview",
    "Publish", "Schedule", "Import", "Export CSV", "Filter", "Refresh", "Retry", "Confirm", "Done",
    "Close", "Print", "Copy link", "Rename", "Move to", "Upgrade plan", "Start free trial",
    "Contact sales", "View report", "Generate", "Run", "Deploy", "Approve", "Reject", "Book now",
    "Get started", "Add member", "New task", "Save draft", "Send invite", "Update", "Verify email",
    "Connect", "Disconnect", "Compose", "Attach file", "Mark as read", "Restore", "Pay now",
    "Add payment method", "Sync now",
)
#: Generic labels that a page repeats (cards, rows); they make uniqueness non-trivial.
GENERIC_BUTTONS: tuple[str, ...] = (
    "View", "Open", "Edit", "Details", "Manage",
)

LINK_LABELS: tuple[str, ...] = (
    "Forgot password?", "Privacy policy", "Terms of service", "Learn more", "View all",
    "Help center", "Contact us", "Documentation", "Release notes", "See details", "Manage cookies",
    "Change plan", "Read more", "Keyboard shortcuts", "Status page", "API reference",
    "Community forum", "Billing history", "Download invoice", "Edit profile", "Show more",
    "Report a problem", "Send feedback", "What's new", "Pricing", "Careers", "Accessibility",
    "Cookie settings", "Back to dashboard", "Resend code", "Use another account", "View changelog",
    "Open in new tab",
)

#: (field label, placeholder)
FIELDS: tuple[tuple[str, str], ...] = (
    ("Email address", "name@example.com"), ("Full name", "Jane Cooper"),
    ("Password", "Enter password"), ("Phone number", "+1 (555) 000-0000"),
    ("Company", "Acme Inc."), ("Project name", "e.g. Website redesign"), ("Username", "@username"),
    ("Street address", "123 Main St"), ("City", "San Francisco"), ("ZIP code", "94103"),
    ("Card number", "1234 5678 9012 3456"), ("Website", "https://"), ("Title", "Add a title"),
    ("Description", "Write a short description"), ("Tags", "Add tags"), ("Due date", "MM/DD/YYYY"),
    ("Amount", "0.00"), ("Subject", "What is this about?"), ("Recipient", "Add recipients"),
    ("Coupon code", "Enter code"), ("Job title", "Product designer"), ("Country", "United States"),
    ("Display name", "How others see you"), ("Repository URL", "git@github.com:org/repo"),
    ("Budget", "$5,000"), ("Start date", "Select a date"), ("Confirm password", "Repeat password"),
    ("Team name", "e.g. Marketing"), ("Invite by email", "colleague@company.com"),
    ("Notes", "Optional"),
)
SEARCH_PLACEHOLDERS: tuple[str, ...] = (
    "Search…", "Search files", "Search or jump to…", "Search messages", "Type to search",
    "Find a project",
)

CHECKBOX_LABELS: tuple[str, ...] = (
    "Remember me", "Send me product updates", "I agree to the Terms", "Enable notifications",
    "Email me a copy", "Make this project public", "Show hidden files", "Auto-save drafts",
    "Use dark mode", "Enable two-factor authentication", "Include archived items",
    "Notify team members", "Mark as important", "Allow comments", "Use default settings",
    "Sync across devices", "Compact view", "Show line numbers", "Weekly summary email",
    "Play sounds", "Require approval", "Keep me signed in", "Share usage data",
    "Open links in new tab", "Show tooltips", "Send read receipts",
)
CHECKBOX_HINTS: tuple[str, ...] = (
    "You can change this later.", "Applies to all workspaces.", "Recommended for most teams.",
    "Only admins can see this.", "Takes effect immediately.", "Uses a little more storage.",
)

#: (sidebar item, glyph)
SIDEBAR_ITEMS: tuple[tuple[str, str], ...] = (
    ("Dashboard", "grid"), ("Home", "home"), ("Inbox", "mail"), ("Projects", "folder"),
    ("Calendar", "calendar"), ("Reports", "chart"), ("Analytics", "chart"), ("Team", "user"),
    ("Settings", "gear"), ("Notifications", "bell"), ("Files", "folder"), ("Billing", "card"),
    ("Messages", "chat"), ("Documents", "doc"), ("Customers", "user"), ("Orders", "cart"),
    ("Favorites", "star"), ("Trash", "trash"), ("Search", "search"), ("Invoices", "doc"),
    ("Contacts", "user"), ("Starred", "star"), ("Drafts", "doc"), ("Integrations", "grid"),
)
TAB_ITEMS: tuple[tuple[str, str], ...] = (
    ("Home", "home"), ("Search", "search"), ("Inbox", "mail"), ("Activity", "bell"),
    ("Profile", "user"), ("Settings", "gear"), ("Files", "folder"), ("Chats", "chat"),
    ("Favorites", "star"), ("Create", "plus"), ("Calendar", "calendar"), ("Stats", "chart"),
)
SIDEBAR_HEADERS: tuple[str, ...] = (
    "MENU", "WORKSPACE", "GENERAL", "MAIN", "NAVIGATION",
)

SECTION_TITLES: tuple[str, ...] = (
    "Recent projects", "Your files", "Recommended", "Quick actions", "Team activity", "Upcoming",
    "Members", "Payment methods", "Connected apps", "Recent orders", "Saved reports", "Documents",
    "Notifications", "General", "Profile information", "Shipping address", "Security options",
)
CARD_TITLES: tuple[str, ...] = (
    "Website redesign", "Mobile app launch", "Annual report", "Brand guidelines", "Q3 roadmap",
    "Customer survey", "Onboarding flow", "Pricing page", "Data migration", "Holiday campaign",
    "Team offsite", "Security audit", "Help center revamp", "API v2", "Newsletter",
    "Product photos",
)
FIRST_NAMES: tuple[str, ...] = (
    "Alice", "Ben", "Carla", "Diego", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tara", "Umar", "Vera", "Wes",
    "Yuki",
)
LAST_NAMES: tuple[str, ...] = (
    "Johnson", "Nguyen", "Garcia", "Smith", "Kowalski", "Haddad", "Lee", "Tanaka", "Moreau",
    "Berg", "Patel", "Okafor", "Rossi", "Silva", "Novak", "Fischer", "Cohen", "Ito", "Larsen",
    "Walsh",
)
FILE_WORDS: tuple[str, ...] = (
    "budget", "roadmap", "invoice", "contract", "design review", "meeting notes", "sales report",
    "logo", "proposal", "timesheet", "release plan", "user research", "backup", "screenshot",
)
FILE_EXTS: tuple[str, ...] = (
    ".pdf", ".xlsx", ".docx", ".png", ".csv", ".zip", ".pptx",
)
STATUS_PILLS: tuple[str, ...] = (
    "Active", "Pending", "Draft", "Paid", "Overdue", "Archived", "Shared", "Private", "In review",
)
MONTHS: tuple[str, ...] = (
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
)
STAT_LABELS: tuple[str, ...] = (
    "Active users", "Revenue", "Open tickets", "Conversion rate", "Storage used", "New signups",
    "Avg. response time", "Tasks done", "Page views", "Refunds",
)
# fmt: on
SENTENCES: tuple[str, ...] = (
    "Changes are saved automatically and synced to every device you use.",
    "Invite teammates to collaborate on projects, files and reports.",
    "Only workspace admins can change billing details and plan limits.",
    "Your data is encrypted at rest and in transit.",
    "Export a copy of your reports as PDF or CSV at any time.",
    "Notifications are sent by email once a day unless you change this below.",
    "Archived items stay searchable but no longer appear in your dashboard.",
    "Connect your calendar to see upcoming deadlines next to your tasks.",
    "We will never share your email address with third parties.",
    "Usage is calculated at the end of each billing period.",
    "Two-factor authentication adds an extra layer of security to your account.",
    "Drag and drop files here, or browse to upload them.",
    "Deleted files are kept in the trash for 30 days before they are removed.",
    "The new editor is faster and supports keyboard shortcuts.",
    "Set default permissions for members who join this workspace.",
    "Reports are refreshed every hour with the latest activity.",
    "You can switch plans or cancel your subscription at any time.",
    "Integrations let you send updates to the tools your team already uses.",
    "Recent activity shows who changed what and when.",
    "Use tags to group related documents and find them quickly.",
    "Your trial ends in 12 days; add a payment method to keep your data.",
    "Shared links can be restricted to people in your organization.",
    "Customer records are updated automatically after every order.",
    "Schedule a report to receive it in your inbox every Monday.",
)


def sentence(rng: np.random.Generator) -> str:
    """One realistic UI sentence."""
    return SENTENCES[int(rng.integers(len(SENTENCES)))]


def paragraph_text(rng: np.random.Generator, n_sentences: int) -> str:
    idx = rng.choice(len(SENTENCES), min(n_sentences, len(SENTENCES)), replace=False)
    return " ".join(SENTENCES[int(i)] for i in idx)

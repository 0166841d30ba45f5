"""The display list of the procedural screens and its renderer (drawing ops, `render_page`, text).

Why it exists: generators build a whole layout eagerly from the sample RNG but pixels are needed only
when the env asks for the image. A `Page` is a frozen tuple of plain ops (ints, tuples, strings), so
`functools.partial(render_page, page)` is a cheap, picklable image loader (docs/data.md#the-internal-sample) and rendering
is a pure function of it. Text measurement lives here too because layouts must reserve exactly the
widths the renderer's font will draw. Split out of `ui.py`, which re-exports everything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from vigorl_env.data.synth.common import font
from vigorl_env.data.synth.ui_glyphs import glyph_mask

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

"""Shared drawing primitives of the procedural datasets: the colour table and flat 2-D shapes.

Colours are named by the words the questions use, so a question's colour word and the pixels agree
by construction. Shapes are drawn supersampled into a small RGBA patch and downsampled once, which
gives smooth edges at small sizes (an 18-px star stays a star) while staying deterministic (same
Pillow → same bytes); every drawn pixel stays inside the shape's inclusive box.
"""

from __future__ import annotations

import math
from functools import lru_cache

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

# Saturated, well separated colours: each reads unambiguously as its name on a mid-tone ground.
COLORS: dict[str, RGB] = {
    "red": (218, 38, 38),
    "green": (34, 168, 64),
    "blue": (38, 84, 222),
    "yellow": (244, 214, 36),
    "purple": (142, 58, 186),
    "orange": (246, 138, 26),
    "white": (246, 246, 246),
    "black": (22, 22, 22),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SHAPE_KINDS: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "star",
    "cross",
    "hexagon",
)

_SUPERSAMPLE = 4


def shade(rgb: RGB, factor: float) -> RGB:
    """`rgb` scaled by `factor` (darker < 1 < lighter toward white), clamped to [0, 255]."""
    if factor <= 1.0:
        return tuple(round(c * factor) for c in rgb)  # type: ignore[return-value]
    t = min(factor - 1.0, 1.0)
    return tuple(round(c + (255 - c) * t) for c in rgb)  # type: ignore[return-value]


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """Linear blend (1 − t)·a + t·b, rounded to integers."""
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def outline_for(name: str) -> RGB:
    """Edge colour of a flat shape: a darker shade of the fill; black gets a grey rim so it
    separates from dark ground instead of vanishing into it."""
    if name == "black":
        return (92, 92, 92)
    if name == "white":
        return (150, 150, 150)
    return shade(COLORS[name], 0.55)


def shape_polygon(kind: str, size: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape inscribed in the square [0, size]² (y down). Not for circles."""
    c = size / 2.0
    if kind == "square":
        return [(0, 0), (size, 0), (size, size), (0, size)]
    if kind == "triangle":
        return [(c, 0), (size, size), (0, size)]
    if kind == "diamond":
        return [(c, 0), (size, c), (c, size), (0, c)]
    if kind == "cross":
        a, b = size / 3.0, 2.0 * size / 3.0
        return [
            (a, 0),
            (b, 0),
            (b, a),
            (size, a),
            (size, b),
            (b, b),
            (b, size),
            (a, size),
            (a, b),
            (0, b),
            (0, a),
            (a, a),
        ]
    if kind == "hexagon":  # flat top: full width, height √3/2 of it, centred vertically
        h = size * math.sqrt(3) / 4.0
        return [
            (0, c),
            (size / 4, c - h),
            (3 * size / 4, c - h),
            (size, c),
            (3 * size / 4, c + h),
            (size / 4, c + h),
        ]
    if kind == "star":  # 5 points, apex up; outer radius set by the width, centred vertically
        r_out = size / (2.0 * math.cos(math.radians(18)))
        r_in = r_out * 0.42
        height = r_out * (1 + math.cos(math.radians(36)))
        cy = (size - height) / 2.0 + r_out
        pts = []
        for i in range(10):
            r = r_out if i % 2 == 0 else r_in
            ang = math.radians(-90 + 36 * i)
            pts.append((c + r * math.cos(ang), cy + r * math.sin(ang)))
        return pts
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")


@lru_cache(maxsize=1024)
def shape_patch(kind: str, side: int, fill: RGB, outline: RGB) -> Image.Image:
    """An RGBA `side`×`side` patch with the shape drawn antialiased (4× supersampled).

    Cached: the patch is a pure function of its arguments and callers only read it (paste).
    """
    n = side * _SUPERSAMPLE
    big = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    width = max(_SUPERSAMPLE, round(side * _SUPERSAMPLE / 16))
    if kind == "circle":
        d.ellipse([0, 0, n - 1, n - 1], fill=(*outline, 255))
        d.ellipse([width, width, n - 1 - width, n - 1 - width], fill=(*fill, 255))
    else:
        pts = [(min(x, n - 1), min(y, n - 1)) for x, y in shape_polygon(kind, float(n))]
        d.polygon(pts, fill=(*fill, 255), outline=(*outline, 255), width=width)
    return big.resize((side, side), Image.Resampling.BOX)  # area average: no ringing


def paste_shape(img: Image.Image, kind: str, x: int, y: int, side: int, color: str) -> None:
    """Draw shape `kind` of colour name `color` with its box's top-left at (x, y), in place."""
    patch = shape_patch(kind, side, COLORS[color], outline_for(color))
    img.paste(patch, (x, y), patch)

"""Icon glyphs of the procedural screens: unit-square recipes drawn 4x supersampled into a mask.

Why it exists: the glyph recipes are long, self-contained drawing code with no layout knowledge; the
renderer (`ui_draw`) only needs `glyph_mask`, and the generators only the glyph names
(`ICON_GLYPHS`, `ICON_NAMES`). Box-filtering a 4x mask keeps 16–20 px icons recognisable and stays
deterministic. Split out of `ui.py`, which re-exports everything.
"""

from __future__ import annotations

import math
from functools import lru_cache

from PIL import Image, ImageDraw

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

"""SynthWebAction's document model and shared page parts (header, product card, footer).

Why it exists: every page kind is built into a `_Doc` (page coordinates, before scrolling) from the
same parts: the site header with its nav, product cards, the footer. The viewport geometry (W, H,
SCROLL_STEP) lives here because the document and the viewport rules both depend on it.
Split out of `webaction.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vigorl_env.data.synth import ui
from vigorl_env.data.synth.ui import Box, Ellipse, Glyph, Line, Op, Rect, Text, Theme
from vigorl_env.data.synth.webaction_shop import (
    NAV_CATEGORIES,
    _Product,
)

W, H = 1280, 1440
SCROLL_STEP = 1200

# The document (page coordinates, before scrolling into the viewport)
# --------------------------------------------------------------------------------------------


@dataclass
class _Mark:
    role: str
    text: str
    box: Box
    key: str = ""


@dataclass
class _Doc:
    rng: np.random.Generator
    theme: Theme
    link_color: ui.RGB
    ops: list[Op] = field(default_factory=list)
    marks: list[_Mark] = field(default_factory=list)
    height: int = H

    def link(
        self,
        x: int,
        cy: int,
        text: str,
        size: int = 14,
        bold: bool = False,
        color: ui.RGB | None = None,
        underline: bool = False,
        key: str = "",
    ) -> Box:
        ops, box = ui.link_ops(x, cy, text, size, color or self.link_color, underline, bold)
        self.ops.extend(ops)
        self.marks.append(_Mark("link", text, box, key))
        return box

    def button(self, box: Box, text: str, size: int = 15, key: str = "") -> None:
        self.ops.extend(ui.button_ops(box, text, size, "primary", self.theme, 3))
        self.marks.append(_Mark("button", text, box, key))


def _shop_theme(rng: np.random.Generator) -> Theme:
    accent = (
        (25, 121, 195),
        (242, 111, 33),
        (0, 128, 96),
        (112, 48, 160),
        (196, 30, 58),
        (20, 110, 190),
        (230, 120, 0),
    )[int(rng.integers(7))]
    return Theme(
        dark=False,
        bg=ui.WHITE,
        surface=ui.WHITE,
        surface_alt=(245, 245, 245),
        border=(204, 204, 204),
        text=(51, 51, 51),
        muted=(117, 117, 117),
        accent=accent,
        on_accent=ui.WHITE,
        topbar=ui.WHITE,
        on_topbar=(51, 51, 51),
        sidebar=(245, 245, 245),
        field=ui.WHITE,
        danger=(200, 30, 30),
    )


HEADER_H = 176


def _header(
    d: _Doc, store: str, query: str | None, n_strip: int, n_cats: int, cart_count: int
) -> None:
    """Store header (y 0..HEADER_H): account strip, logo, search box and button, cart, nav."""
    t = d.theme
    dark_strip = bool(d.rng.random() < 0.5)
    strip_bg = (51, 51, 51) if dark_strip else (240, 240, 240)
    strip_fg = (235, 235, 235) if dark_strip else (80, 80, 80)
    d.ops.append(Rect((0, 0, W - 1, 35), fill=strip_bg))
    d.ops.append(
        Text(
            (40, 18),
            f"Welcome to {store}!" if d.rng.random() < 0.5 else "Default welcome msg!",
            13,
            strip_fg,
            False,
            "lm",
        )
    )
    links = (
        "My Account",
        "My Wish List",
        "Sign Out" if d.rng.random() < 0.5 else "Sign In",
        "Create an Account",
    )[:n_strip]
    x = W - 40 - sum(ui.text_width(s, 13) for s in links) - 26 * max(0, len(links) - 1)
    for s in links:
        box = d.link(x, 18, s, 13, color=strip_fg)
        x = box[2] + 24
    # logo
    cy = 36 + 46
    d.ops.append(Glyph("cart", (40, cy - 22, 83, cy + 21), t.accent))
    lw = ui.text_width(store, 24, True)
    d.ops.append(Text((92, cy), store, 24, (40, 40, 40), True, "lm"))
    d.marks.append(_Mark("link", store, (38, cy - 24, 92 + lw + 2, cy + 23), "logo"))
    # search box + button
    sx1, sx2 = 560, 1060
    box = (sx1, cy - 20, sx2, cy + 20)
    text = query if query is not None else "Search entire store here..."
    d.ops.extend(ui.text_field_ops(box, text, 15, t, 2, placeholder=query is None))
    d.marks.append(_Mark("searchbox", text, box, "search_box"))
    bb = (sx2 + 6, cy - 20, sx2 + 46, cy + 20)
    d.ops.append(Rect(bb, fill=t.accent, radius=2))
    d.ops.append(Glyph("search", (bb[0] + 10, bb[1] + 10, bb[2] - 10, bb[3] - 10), ui.WHITE))
    d.marks.append(_Mark("button", "Search", bb, "search_button"))
    # cart
    cx = W - 120
    d.ops.append(Glyph("cart", (cx, cy - 16, cx + 31, cy + 15), (80, 80, 80)))
    d.ops.append(Ellipse((cx + 22, cy - 22, cx + 40, cy - 4), fill=t.accent))
    d.ops.append(Text((cx + 31, cy - 13), str(cart_count), 11, ui.WHITE, True, "mm"))
    d.ops.append(Text((cx + 46, cy), "My Cart", 14, (60, 60, 60), False, "lm"))
    d.marks.append(
        _Mark(
            "link",
            "My Cart",
            (cx - 2, cy - 24, cx + 48 + ui.text_width("My Cart", 14), cy + 18),
            "cart",
        )
    )
    # category navigation
    nav_bg = ui.mix(t.accent, ui.WHITE, 0.9) if d.rng.random() < 0.5 else (240, 240, 240)
    d.ops.append(Rect((0, 128, W - 1, HEADER_H - 1), fill=nav_bg))
    d.ops.append(Line((0, HEADER_H - 1, W - 1, HEADER_H - 1), (220, 220, 220), 1))
    order = d.rng.permutation(len(NAV_CATEGORIES))
    x = 40
    for i in order[:n_cats]:
        name = NAV_CATEGORIES[int(i)]
        if x + ui.text_width(name, 14, True) > W - 40:
            continue
        box = d.link(x, 152, name, 14, bold=True, color=(60, 60, 60), key=f"nav:{name}")
        x = box[2] + 30


def _nav_fit(rng: np.random.Generator, budget: int) -> tuple[int, int]:
    """Strip-link and nav-category counts that fit the element budget (header has 4 fixed marks)."""
    budget = max(0, budget - 4)
    n_strip = min(int(rng.integers(0, 4)), budget)
    n_cats = min(int(rng.integers(2, 8)), budget - n_strip)
    return n_strip, max(0, n_cats)


CARD_W, CARD_GAP, PIC_H, NAME_LH = 283, 24, 220, 20
CARD_BODY = 12 + 3 * NAME_LH + 8 + 18 + 8 + 22 + 20  # a card below its picture (3 name lines kept)
CARD_H = PIC_H + CARD_BODY
GRID_TOP = HEADER_H + 24 + 160  # results grid origin (below title and toolbar)


def _product_card(
    d: _Doc, x: int, y: int, w: int, p: _Product, show_price: bool, pic_h: int = PIC_H
) -> None:
    d.ops.append(ui.picture_op(d.rng, (x, y, x + w - 1, y + pic_h - 1)))
    d.ops.append(Rect((x, y, x + w - 1, y + pic_h - 1), outline=(230, 230, 230)))
    lines = ui.wrap(p.name, 15, w)[:3]
    ny = y + pic_h + 12
    x2 = x
    for i, s in enumerate(lines):
        d.ops.append(Text((x, ny + i * NAME_LH + NAME_LH // 2), s, 15, d.link_color, False, "lm"))
        x2 = max(x2, x + ui.text_width(s, 15))
    t0 = ui.text_bbox(lines[0], 15, False, "lm")
    t1 = ui.text_bbox(lines[-1], 15, False, "lm")
    box = (
        x - 2,
        ny + NAME_LH // 2 + t0[1] - 2,
        min(x2 + 1, x + w - 1),
        ny + (len(lines) - 1) * NAME_LH + NAME_LH // 2 + t1[3] + 2,
    )
    d.marks.append(_Mark("link", p.name, box, f"product:{p.name}"))
    sy = ny + len(lines) * NAME_LH + 8 + 9
    d.ops.extend(ui.stars_ops(x, sy, p.rating, 14, (255, 165, 0), (220, 220, 220)))
    d.ops.append(Text((x + 5 * 16 + 6, sy), f"{p.reviews} Reviews", 12, d.theme.muted, False, "lm"))
    py = sy + 9 + 8 + 11
    if show_price:
        d.ops.append(Text((x, py), p.price, 18, (30, 30, 30), True, "lm"))
    else:
        badge = ("In stock", "Free shipping", "Ships in 24h", "Top rated")[p.reviews % 4]
        d.ops.append(Text((x, py), badge, 13, (0, 128, 0), False, "lm"))


def _footer(d: _Doc, y: int) -> int:
    d.ops.append(Rect((0, y, W - 1, y + 220), fill=(242, 242, 242)))
    for k, s in enumerate(
        (
            "About us",
            "Customer Service",
            "Privacy and Cookie Policy",
            "Search Terms",
            "Advanced Search",
            "Orders and Returns",
            "Contact Us",
        )
    ):
        d.link(40 + (k // 4) * 300, y + 40 + (k % 4) * 36, s, 14, color=(60, 60, 60))
    d.ops.append(
        Text(
            (40, y + 196),
            "Copyright © 2013-present Magento, Inc. All rights reserved.",
            12,
            (120, 120, 120),
            False,
            "lm",
        )
    )
    return y + 220

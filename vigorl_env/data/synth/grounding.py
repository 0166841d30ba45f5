"""SynthGrounding: procedural ScreenSpot-like GUI grounding (SPEC §2.7).

A screen (1280×800, 1920×1080, 2560×1440 desktop, or a 1170×2532 phone) has a top bar (app title,
2–4 icon buttons, sometimes a search field), navigation (desktop: a left sidebar with 5–10 items;
phone: a bottom tab bar with 5 items, recorded as `sidebar_item`s with region "tab_bar" because a
phone has no room for a sidebar) and 6–30 content widgets arranged in 1–3 columns of sections
(forms, tables, card grids, toolbars, settings lists, stat tiles, text with links) among clutter
(paragraphs, pictures, dividers, pills). UI scale varies per screen, so on 2560×1440 a checkbox is
~16 px: ScreenSpot-Pro-like small targets.

The instruction names exactly one element (checked against all interactive elements by the same
description rule, never by identity): text ("the 'Save' button", "the 'Docs' link", "the 'Email
address' text field", "the 'Inbox' item in the sidebar"), icon ("the bell icon in the top bar") or
relational ("the checkbox next to 'Remember me'", "the trash icon in the 'budget.pdf' row").
question = "<image>" + instruction; answer = "(x1, y1, x2, y2)" of the target's box (original frame,
inclusive integers); gt_box = the same as floats; objects = every interactive element.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from vigorl_env.data.base import Sample, SceneObject
from vigorl_env.data.synth import ui
from vigorl_env.data.synth.common import SynthDataset
from vigorl_env.data.synth.ui import Box, Glyph, Line, Op, Page, Rect, Text, Theme

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
MAX_ATTEMPTS = 64
INSTRUCTION_KINDS: tuple[str, ...] = ("text", "icon", "relational")
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


# --------------------------------------------------------------------------------------------
# Chrome: top bar, sidebar, phone status/tab bars
# --------------------------------------------------------------------------------------------


def _top_bar(c: _Ctx, w: int, top: int) -> int:
    """Top bar at y = top; returns its bottom (exclusive)."""
    t = c.theme
    h = c.px(56) if not c.mobile else c.px(52)
    c.ops.append(Rect((0, top, w - 1, top + h - 1), fill=t.topbar))
    if t.topbar == t.surface:
        c.ops.append(Line((0, top + h - 1, w - 1, top + h - 1), t.border, max(1, c.px(1))))
    cy = top + h // 2
    x = c.px(16) if c.mobile else c.px(20)
    title = c.pick(ui.APP_TITLES)
    if not c.mobile:
        lg = c.px(28)
        c.ops.append(
            Rect(
                (x, cy - lg // 2, x + lg - 1, cy - lg // 2 + lg - 1),
                fill=t.accent if t.topbar != t.accent else ui.WHITE,
                radius=c.px(6),
            )
        )
        c.ops.append(
            Text(
                (x + lg // 2, cy),
                title[0],
                c.px(16),
                ui.WHITE if t.topbar != t.accent else t.accent,
                True,
                "mm",
            )
        )
        x += lg + c.px(10)
    c.ops.append(
        Text((x, cy), title, c.px(17) if not c.mobile else c.px(19), t.on_topbar, True, "lm")
    )
    title_end = x + ui.text_width(title, c.px(17), True)

    n_icons = c.ri(2, 4) if not c.mobile else c.ri(2, 3)
    glyphs = [
        TOPBAR_GLYPHS[int(i)] for i in c.rng.choice(len(TOPBAR_GLYPHS), n_icons, replace=False)
    ]
    side, gap = c.px(36), c.px(6)
    xr = w - (c.px(12) if c.mobile else c.px(20))
    icon_color = t.on_topbar if t.topbar != t.surface else ui.mix(t.text, t.muted, 0.4)
    boxed = c.chance(0.35)
    for g in reversed(glyphs):
        box = (xr - side, cy - side // 2, xr - 1, cy - side // 2 + side - 1)
        if g == "user" and c.chance(0.6):  # an avatar
            c.ops.append(ui.Ellipse(box, fill=ui.mix(t.accent, ui.WHITE, 0.75)))
            gi = c.px(8)
            c.ops.append(
                Glyph(
                    "user",
                    (box[0] + gi, box[1] + gi, box[2] - gi, box[3] - gi),
                    ui.mix(t.accent, ui.BLACK, 0.2),
                )
            )
        else:
            if boxed:
                c.ops.append(Rect(box, fill=ui.mix(t.topbar, icon_color, 0.1), radius=c.px(8)))
            gi = c.px(8)
            c.ops.append(Glyph(g, (box[0] + gi, box[1] + gi, box[2] - gi, box[3] - gi), icon_color))
        c.el("icon", box, ui.ICON_NAMES[g], g, "top_bar")
        xr -= side + gap
    # an optional global search field between the title and the icons
    sx = title_end + c.px(40)
    fw = c.px(c.ri(240, 420))
    if not c.mobile and c.chance(0.5) and sx + fw < xr - c.px(24):
        if c.chance(0.5):  # centred search like many web apps
            sx = max(sx, (w - fw) // 2)
            sx = min(sx, xr - c.px(24) - fw)
        ph = c.fresh(ui.SEARCH_PLACEHOLDERS)
        fh = c.px(34)
        box = (sx, cy - fh // 2, sx + fw - 1, cy - fh // 2 + fh - 1)
        fill_t = (
            t
            if t.topbar == t.surface
            else replace(
                t, field=ui.mix(t.topbar, ui.WHITE, 0.9), border=ui.mix(t.topbar, ui.WHITE, 0.6)
            )
        )
        c.ops.extend(ui.text_field_ops(box, ph, c.f_body, fill_t, c.px(8), glyph="search"))
        c.el("text_field", box, ph, None, "top_bar", placeholder=ph)
    return top + h


def _sidebar(c: _Ctx, top: int, bottom: int) -> int:
    """Left navigation below the top bar; returns its width."""
    t = c.theme
    sw = c.px(c.ri(200, 256))
    c.ops.append(Rect((0, top, sw - 1, bottom - 1), fill=t.sidebar))
    c.ops.append(Line((sw - 1, top, sw - 1, bottom - 1), t.border, 1))
    n = c.ri(5, 10)
    items = [
        ui.SIDEBAR_ITEMS[int(i)] for i in c.rng.choice(len(ui.SIDEBAR_ITEMS), n, replace=False)
    ]
    split = c.ri(3, n - 2) if n >= 7 and c.chance(0.6) else n
    active = c.ri(0, n - 1)
    ih, gap = c.px(36), c.px(4)
    y = top + c.px(16)
    fs, gs = c.f_body, c.px(18)
    for i, (label, glyph) in enumerate(items):
        if i == 0 or i == split:
            if i == split:
                y += c.px(10)
            c.ops.append(
                Text(
                    (c.px(22), y + c.px(6)),
                    c.pick(ui.SIDEBAR_HEADERS),
                    c.px(11),
                    t.muted,
                    True,
                    "lm",
                )
            )
            y += c.px(20)
        box = (c.px(10), y, sw - c.px(10) - 1, y + ih - 1)
        on = i == active
        if on:
            c.ops.append(Rect(box, fill=ui.mix(t.sidebar, t.accent, 0.16), radius=c.radius))
        color = t.accent if on else ui.mix(t.text, t.muted, 0.3)
        cy = y + ih // 2
        gx = box[0] + c.px(12)
        c.ops.append(Glyph(glyph, (gx, cy - gs // 2, gx + gs - 1, cy - gs // 2 + gs - 1), color))
        c.ops.append(
            Text((gx + gs + c.px(12), cy), label, fs, t.text if not on else t.accent, on, "lm")
        )
        c.used.add(label)
        c.el("sidebar_item", box, label, glyph, "sidebar")
        y += ih + gap
    if y + c.px(56) < bottom:  # a signed-in user card at the bottom
        uy = bottom - c.px(52)
        c.ops.append(Line((0, uy - c.px(8), sw - 2, uy - c.px(8)), t.border, 1))
        av = c.px(28)
        c.ops.append(
            ui.Ellipse(
                (c.px(20), uy + c.px(4), c.px(20) + av - 1, uy + c.px(4) + av - 1),
                fill=ui.mix(t.accent, ui.WHITE, 0.6),
            )
        )
        name = f"{c.pick(ui.FIRST_NAMES)} {c.pick(ui.LAST_NAMES)}"
        c.ops.append(
            Text(
                (c.px(20) + av + c.px(10), uy + c.px(4) + av // 2),
                name,
                c.f_small,
                t.text,
                True,
                "lm",
            )
        )
    return sw


def _status_bar(c: _Ctx, w: int) -> int:
    t = c.theme
    h = c.px(44)
    c.ops.append(Rect((0, 0, w - 1, h - 1), fill=t.topbar))
    fg = t.on_topbar
    c.ops.append(
        Text((c.px(28), h // 2), f"{c.ri(7, 11)}:{c.ri(0, 59):02d}", c.px(15), fg, True, "lm")
    )
    bx = w - c.px(24) - c.px(26)
    cy = h // 2
    c.ops.append(
        Rect(
            (bx, cy - c.px(6), bx + c.px(24), cy + c.px(6)),
            outline=fg,
            width=c.px(1.2),
            radius=c.px(3),
        )
    )
    c.ops.append(
        Rect((bx + c.px(3), cy - c.px(3), bx + c.px(3 + c.ri(6, 18)), cy + c.px(3)), fill=fg)
    )
    for k in range(4):
        x = bx - c.px(40) + k * c.px(6)
        c.ops.append(Rect((x, cy + c.px(5) - c.px(3 + 2 * k), x + c.px(4), cy + c.px(5)), fill=fg))
    return h


def _tab_bar(c: _Ctx, w: int, h_screen: int) -> int:
    """Phone bottom tab bar with 5 items; returns its top."""
    t = c.theme
    h = c.px(64)
    home = c.px(24)
    top = h_screen - h - home
    c.ops.append(Rect((0, top, w - 1, h_screen - 1), fill=t.surface))
    c.ops.append(Line((0, top, w - 1, top), t.border, max(1, c.px(0.5))))
    c.ops.append(
        Rect(
            (w // 2 - c.px(67), h_screen - c.px(12), w // 2 + c.px(67), h_screen - c.px(7)),
            fill=t.text,
            radius=c.px(3),
        )
    )
    items = [ui.TAB_ITEMS[int(i)] for i in c.rng.choice(len(ui.TAB_ITEMS), 5, replace=False)]
    active = c.ri(0, 4)
    cw = w // 5
    gs = c.px(24)
    for i, (label, glyph) in enumerate(items):
        box = (i * cw + c.px(4), top + c.px(4), (i + 1) * cw - c.px(4) - 1, top + h - c.px(4) - 1)
        color = t.accent if i == active else t.muted
        cx = (box[0] + box[2] + 1) // 2
        gy = top + c.px(10)
        c.ops.append(Glyph(glyph, (cx - gs // 2, gy, cx - gs // 2 + gs - 1, gy + gs - 1), color))
        c.ops.append(Text((cx, gy + gs + c.px(10)), label, c.px(11), color, i == active, "mm"))
        c.used.add(label)
        c.el("sidebar_item", box, label, glyph, "tab_bar")
    return top


# --------------------------------------------------------------------------------------------
# Content sections: each draws into [x, x+w) × [y, y+hmax) and returns the height used (0: no fit)
# --------------------------------------------------------------------------------------------


def _card(c: _Ctx, x: int, y: int, w: int, h: int) -> None:
    t = c.theme
    if not t.dark:
        c.ops.append(
            Rect(
                (x + 1, y + 2, x + w, y + h + 1), fill=ui.mix(t.bg, ui.BLACK, 0.05), radius=c.px(10)
            )
        )
    c.ops.append(
        Rect((x, y, x + w - 1, y + h - 1), fill=t.surface, outline=t.border, radius=c.px(10))
    )


def _section_title(c: _Ctx, x: int, y: int, title: str) -> int:
    c.ops.append(Text((x, y), title, c.px(16), c.theme.text, True, "la"))
    return c.px(28)


def _button_row(c: _Ctx, x: int, y: int, w: int, labels: Sequence[tuple[str, str]]) -> int:
    """Buttons (label, style) left to right; those that don't fit are dropped. Returns count."""
    bx, n = x, 0
    for label, style in labels:
        bw = ui.button_width(label, c.f_body, c.px(16))
        if bx + bw > x + w:
            break
        box = (bx, y, bx + bw - 1, y + c.ctrl - 1)
        c.ops.extend(ui.button_ops(box, label, c.f_body, style, c.theme, c.radius))
        c.el("button", box, label)
        bx += bw + c.px(10)
        n += 1
    return n


def _form(c: _Ctx, x: int, y: int, w: int, hmax: int) -> int:
    p = c.px(20)
    iw = w - 2 * p
    if iw < c.px(200):
        return 0
    nf, nc, nb = c.ri(1, 5), c.ri(0, 3), c.ri(1, 3)
    two_col = iw >= c.px(520) and c.chance(0.5)
    row_h = c.px(18) + c.px(6) + c.ctrl + c.px(14)
    cb_h = c.px(28)

    def height(nf: int, nc: int) -> int:
        rows = (nf + 1) // 2 if two_col else nf
        return p + c.px(34) + rows * row_h + nc * cb_h + (c.px(8) if nc else 0) + c.ctrl + p

    while nf + nc + min(nb, 2) > c.budget or height(nf, nc) > hmax:
        if nc:
            nc -= 1
        elif nf > 1:
            nf -= 1
        elif nb > 1:
            nb -= 1
        else:
            return 0
    h = height(nf, nc)
    _card(c, x, y, w, h)
    t = c.theme
    cy = y + p
    c.ops.append(Text((x + p, cy), c.fresh(ui.SECTION_TITLES), c.px(16), t.text, True, "la"))
    cy += c.px(34)
    fw = (iw - c.px(16)) // 2 if two_col else min(iw, c.px(c.ri(320, 560)))
    for i in range(nf):
        col = i % 2 if two_col else 0
        fx = x + p + col * (fw + c.px(16))
        label, ph = c.fresh(ui.FIELDS, key=lambda f: f[0])
        c.ops.append(Text((fx, cy), label, c.px(13), t.text, True, "la"))
        box = (fx, cy + c.px(24), fx + fw - 1, cy + c.px(24) + c.ctrl - 1)
        c.ops.extend(ui.text_field_ops(box, ph, c.f_body, t, c.radius))
        c.el("text_field", box, label, placeholder=ph)
        if not two_col or col == 1 or i == nf - 1:
            cy += row_h
    for _ in range(nc):
        label = c.fresh(ui.CHECKBOX_LABELS)
        cb = c.px(16)
        bx, by = x + p, cy + (cb_h - cb) // 2
        box = (bx, by, bx + cb - 1, by + cb - 1)
        c.ops.extend(ui.checkbox_ops(box, c.chance(0.4), t))
        c.ops.append(Text((bx + cb + c.px(10), by + cb // 2), label, c.f_body, t.text, False, "lm"))
        c.el("checkbox", box, label)
        cy += cb_h
    if nc:
        cy += c.px(8)
    primary = c.fresh([b for b in ui.BUTTON_LABELS if b not in SECONDARY_LABELS])
    secondary = c.fresh(SECONDARY_LABELS)
    labels = [
        (primary, "danger" if primary in ("Delete", "Reject") else "primary"),
        (secondary, "secondary"),
    ]
    placed = _button_row(c, x + p, cy, iw, labels[: min(nb, 2)])
    if nb == 3 and c.budget > 0:  # a trailing link ("Forgot password?")
        label = c.fresh(ui.LINK_LABELS)
        bx = (
            x
            + p
            + sum(ui.button_width(lab, c.f_body, c.px(16)) + c.px(10) for lab, _ in labels[:placed])
        )
        ops, box = ui.link_ops(bx + c.px(8), cy + c.ctrl // 2, label, c.f_body, t.accent, False)
        if box[2] < x + w - p:
            c.ops.extend(ops)
            c.el("link", box, label)
    return h


def _row_name(c: _Ctx, kind: int) -> str:
    for _ in range(20):
        if kind == 0:
            word = c.pick(ui.FILE_WORDS)
            tag = c.pick(("", " v2", " final", " 2024", " Q3", " draft"))
            name = f"{word.capitalize()}{tag}{c.pick(ui.FILE_EXTS)}"
        elif kind == 1:
            name = f"{c.pick(ui.FIRST_NAMES)} {c.pick(ui.LAST_NAMES)}"
        elif kind == 2:
            name = f"Order #{c.ri(10000, 99999)}"
        else:
            name = c.pick(ui.CARD_TITLES)
        if name not in c.used:
            c.used.add(name)
            return name
    return f"Item {c.ri(100, 999)}"


def _table(c: _Ctx, x: int, y: int, w: int, hmax: int) -> int:
    t = c.theme
    row_h = c.px(46)
    glyphs = c.pick(ROW_GLYPH_SETS)
    link = c.pick(("Edit", "View", "Open")) if c.chance(0.3) else None
    per_row = 1 + len(glyphs) + (link is not None)
    head_h = c.px(40)
    wide = w >= c.px(520)
    n = c.ri(3, 8)
    top_h = c.px(44)
    while n > 2 and (
        n * per_row > c.budget or top_h + (head_h if wide else 0) + n * row_h + c.px(8) > hmax
    ):
        n -= 1
    if n * per_row > c.budget or top_h + (head_h if wide else 0) + n * row_h + c.px(8) > hmax:
        return 0
    if w < c.px(300):
        return 0
    # title row, with an optional button and filter field at the right
    c.ops.append(
        Text((x, y + c.ctrl // 2), c.fresh(ui.SECTION_TITLES), c.px(16), t.text, True, "lm")
    )
    xr = x + w
    extra_budget = c.budget - n * per_row
    if extra_budget > 0 and c.chance(0.6):
        label = c.fresh(ui.BUTTON_LABELS)
        bw = ui.button_width(label, c.f_body, c.px(14), glyph=True)
        if xr - bw > x + c.px(200):
            box = (xr - bw, y, xr - 1, y + c.ctrl - 1)
            c.ops.extend(ui.button_ops(box, label, c.f_body, "primary", t, c.radius, glyph="plus"))
            c.el("button", box, label)
            xr -= bw + c.px(10)
            extra_budget -= 1
    if extra_budget > 0 and wide and c.chance(0.5):
        ph = c.fresh(ui.SEARCH_PLACEHOLDERS)
        fw = c.px(200)
        if xr - fw > x + c.px(200):
            box = (xr - fw, y, xr - 1, y + c.ctrl - 1)
            c.ops.extend(ui.text_field_ops(box, ph, c.f_body, t, c.radius, glyph="search"))
            c.el("text_field", box, ph, placeholder=ph)
    ty = y + top_h
    total_h = (head_h if wide else 0) + n * row_h
    c.ops.append(
        Rect((x, ty, x + w - 1, ty + total_h - 1), fill=t.surface, outline=t.border, radius=c.px(8))
    )
    cb = c.px(16)
    name_x = x + c.px(16) + cb + c.px(14)
    icon_side = c.px(30)
    actions_w = len(glyphs) * (icon_side + c.px(6)) + (
        ui.text_width(link or "", c.f_body) + c.px(16)
    )
    col2 = name_x + int((w - (name_x - x) - actions_w) * 0.45)
    col3 = name_x + int((w - (name_x - x) - actions_w) * 0.72)
    ry = ty
    if wide:
        c.ops.append(
            Rect((x + 1, ty + 1, x + w - 2, ty + head_h - 1), fill=t.surface_alt, radius=c.px(7))
        )
        for hx, name in (
            (name_x, c.pick(("Name", "File", "Member", "Title"))),
            (col2, "Status"),
            (col3, c.pick(("Modified", "Owner", "Date", "Updated"))),
        ):
            c.ops.append(Text((hx, ty + head_h // 2), name, c.px(12), t.muted, True, "lm"))
        ry += head_h
    kind = c.ri(0, 3)
    for i in range(n):
        cy = ry + row_h // 2
        if i:
            c.ops.append(Line((x + 1, ry, x + w - 2, ry), t.border, 1))
        name = _row_name(c, kind)
        box = (x + c.px(16), cy - cb // 2, x + c.px(16) + cb - 1, cy - cb // 2 + cb - 1)
        c.ops.extend(ui.checkbox_ops(box, c.chance(0.3), t))
        c.el("checkbox", box, name)
        max_name = (col2 if wide else x + w - actions_w) - name_x - c.px(12)
        c.ops.append(
            Text(
                (name_x, cy), ui.ellipsize(name, c.f_body, max_name), c.f_body, t.text, False, "lm"
            )
        )
        if wide:
            pill = c.pick(ui.STATUS_PILLS)
            pw = ui.text_width(pill, c.px(12)) + c.px(16)
            c.ops.append(
                Rect(
                    (col2, cy - c.px(11), col2 + pw, cy + c.px(11)),
                    fill=ui.mix(t.surface, ui.ACCENTS[len(pill) % len(ui.ACCENTS)], 0.18),
                    radius=c.px(11),
                )
            )
            c.ops.append(Text((col2 + c.px(8), cy), pill, c.px(12), t.text, False, "lm"))
            date = f"{c.pick(ui.MONTHS)} {c.ri(1, 28)}, {c.ri(2021, 2025)}"
            c.ops.append(Text((col3, cy), date, c.px(13), t.muted, False, "lm"))
        ax = x + w - c.px(10)
        for g in reversed(glyphs):
            gb = (ax - icon_side, cy - icon_side // 2, ax - 1, cy - icon_side // 2 + icon_side - 1)
            gi = c.px(7)
            color = (
                t.danger if g == "trash" and c.theme.dark is False and c.chance(0.3) else t.muted
            )
            c.ops.append(Glyph(g, (gb[0] + gi, gb[1] + gi, gb[2] - gi, gb[3] - gi), color))
            c.el("icon", gb, ui.ICON_NAMES[g], g, row=name)
            ax -= icon_side + c.px(6)
        if link:
            ops, lb = ui.link_ops(
                ax - ui.text_width(link, c.f_body) - c.px(6), cy, link, c.f_body, t.accent, False
            )
            c.ops.extend(ops)
            c.el("link", lb, link, row=name)
        ry += row_h
    return top_h + total_h + c.px(8)


def _cards(c: _Ctx, x: int, y: int, w: int, hmax: int) -> int:
    t = c.theme
    gap = c.px(16)
    ncols = max(1, min(4, (w + gap) // (c.px(210) + gap)))
    nrows = c.ri(1, 2)
    cw = (w - (ncols - 1) * gap) // ncols
    if cw < c.px(150):
        return 0
    pic_h = min(cw * 9 // 16, c.px(150))
    ch = pic_h + c.px(12 + 22 + 40 + 12) + c.ctrl + c.px(14)
    title_h = c.px(28)
    while nrows > 1 and (title_h + nrows * (ch + gap) > hmax or nrows * ncols > c.budget):
        nrows -= 1
    while ncols > 1 and nrows * ncols > c.budget:
        ncols -= 1
    if title_h + nrows * (ch + gap) > hmax or nrows * ncols > c.budget:
        return 0
    _section_title(c, x, y, c.fresh(ui.SECTION_TITLES))
    style = c.pick(("primary", "secondary", "link"))
    for r in range(nrows):
        for k in range(ncols):
            cx, cy = x + k * (cw + gap), y + title_h + r * (ch + gap)
            _card(c, cx, cy, cw, ch)
            c.ops.append(ui.picture_op(c.rng, (cx + 1, cy + 1, cx + cw - 2, cy + pic_h), c.px(9)))
            p = c.px(14)
            ty = cy + pic_h + c.px(12)
            title = _row_name(c, 3) if c.chance(0.7) else c.pick(ui.CARD_TITLES)
            c.ops.append(
                Text(
                    (cx + p, ty),
                    ui.ellipsize(title, c.px(15), cw - 2 * p, True),
                    c.px(15),
                    t.text,
                    True,
                    "la",
                )
            )
            lines = ui.wrap(ui.sentence(c.rng), c.px(13), cw - 2 * p)[:2]
            c.ops.extend(
                ui.paragraph_ops(
                    cx + p,
                    ty + c.px(24),
                    [ui.ellipsize(s, c.px(13), cw - 2 * p) for s in lines],
                    c.px(13),
                    t.muted,
                    c.px(19),
                )
            )
            by = cy + ch - p - c.ctrl
            generic = c.chance(0.35)
            if style == "link":
                label = (
                    c.pick(("View details", "Open", "Learn more"))
                    if generic
                    else c.fresh(ui.LINK_LABELS)
                )
                ops, box = ui.link_ops(
                    cx + p, by + c.ctrl // 2, label, c.f_body, t.accent, c.chance(0.5)
                )
                c.ops.extend(ops)
                c.el("link", box, label)
            else:
                label = c.pick(ui.GENERIC_BUTTONS) if generic else c.fresh(ui.BUTTON_LABELS)
                bw = min(ui.button_width(label, c.f_body, c.px(14)), cw - 2 * p)
                box = (cx + p, by, cx + p + bw - 1, by + c.ctrl - 1)
                c.ops.extend(
                    ui.button_ops(
                        box,
                        ui.ellipsize(label, c.f_body, bw - c.px(8), True),
                        c.f_body,
                        style,
                        t,
                        c.radius,
                    )
                )
                c.el("button", box, label)
    return title_h + nrows * (ch + gap)


def _toolbar(c: _Ctx, x: int, y: int, w: int, hmax: int) -> int:
    if hmax < c.ctrl + c.px(12) or c.budget < 2:
        return 0
    t = c.theme
    xr, n = x, 0
    want = min(c.ri(2, 6), c.budget)
    if c.chance(0.5):
        ph = c.fresh(ui.SEARCH_PLACEHOLDERS)
        fw = min(c.px(c.ri(200, 300)), w // 2)
        box = (x, y, x + fw - 1, y + c.ctrl - 1)
        c.ops.extend(ui.text_field_ops(box, ph, c.f_body, t, c.radius, glyph="search"))
        c.el("text_field", box, ph, placeholder=ph)
        xr += fw + c.px(12)
        n += 1
    styles = ("secondary", "secondary", "ghost", "primary")
    glyph_for = {
        "Delete": "trash",
        "Share": "user",
        "Filter": "search",
        "Add member": "plus",
        "New folder": "plus",
        "New task": "plus",
        "Settings": "gear",
    }
    while n < want:
        label = c.fresh(ui.BUTTON_LABELS)
        g = glyph_for.get(label)
        bw = ui.button_width(label, c.f_body, c.px(14), glyph=g is not None)
        if xr + bw > x + w:
            break
        box = (xr, y, xr + bw - 1, y + c.ctrl - 1)
        c.ops.extend(ui.button_ops(box, label, c.f_body, c.pick(styles), t, c.radius, glyph=g))
        c.el("button", box, label)
        xr += bw + c.px(8)
        n += 1
    if n == 0:
        return 0
    return c.ctrl + c.px(12)


def _text_block(c: _Ctx, x: int, y: int, w: int, hmax: int) -> int:
    t = c.theme
    fs, lh = c.px(14), c.px(21)
    pic = w >= c.px(560) and c.chance(0.5)
    tw = w - (c.px(220) if pic else 0)
    lines = ui.wrap(ui.paragraph_text(c.rng, c.ri(1, 4)), fs, tw)[: c.ri(2, 6)]
    nl = min(c.ri(1, 3), c.budget)
    h = c.px(30) + len(lines) * lh + (c.px(10) + c.px(22) if nl else 0) + c.px(18)
    if pic:
        h = max(h, c.px(30) + c.px(150) + c.px(18))
    if h > hmax:
        return 0
    _section_title(c, x, y, c.fresh(ui.SECTION_TITLES + ui.CARD_TITLES))
    c.ops.extend(ui.paragraph_ops(x, y + c.px(30), lines, fs, ui.mix(t.text, t.muted, 0.5), lh))
    ly = y + c.px(30) + len(lines) * lh + c.px(10) + c.px(11)
    lx = x
    underline = c.chance(0.5)
    for _ in range(nl):
        label = c.fresh(ui.LINK_LABELS)
        if lx + ui.text_width(label, fs) > x + tw:
            break
        ops, box = ui.link_ops(lx, ly, label, fs, t.accent, underline)
        c.ops.extend(ops)
        c.el("link", box, label)
        lx = box[2] + c.px(24)
    if pic:
        c.ops.append(
            ui.picture_op(
                c.rng, (x + w - c.px(200), y + c.px(30), x + w - 1, y + c.px(180)), c.px(8)
            )
        )
    c.ops.append(Line((x, y + h - c.px(9), x + w - 1, y + h - c.px(9)), t.border, 1))
    return h


def _settings(c: _Ctx, x: int, y: int, w: int, hmax: int) -> int:
    t = c.theme
    p = c.px(20)
    row_h = c.px(56)
    n = min(c.ri(2, 6), c.budget)
    while n >= 2 and p + c.px(34) + n * row_h + p > hmax:
        n -= 1
    if n < 2 or w < c.px(280):
        return 0
    h = p + c.px(34) + n * row_h + p
    _card(c, x, y, w, h)
    c.ops.append(Text((x + p, y + p), c.fresh(ui.SECTION_TITLES), c.px(16), t.text, True, "la"))
    ry = y + p + c.px(34)
    cb = c.px(18)
    for i in range(n):
        if i:
            c.ops.append(Line((x + p, ry, x + w - p - 1, ry), t.border, 1))
        label = c.fresh(ui.CHECKBOX_LABELS)
        by = ry + c.px(12)
        box = (x + p, by, x + p + cb - 1, by + cb - 1)
        c.ops.extend(ui.checkbox_ops(box, c.chance(0.5), t))
        tx = x + p + cb + c.px(12)
        c.ops.append(
            Text(
                (tx, by + cb // 2),
                ui.ellipsize(label, c.f_body, x + w - p - tx),
                c.f_body,
                t.text,
                False,
                "lm",
            )
        )
        hint = ui.ellipsize(c.pick(ui.CHECKBOX_HINTS), c.px(12), x + w - p - tx)
        c.ops.append(Text((tx, by + cb // 2 + c.px(20)), hint, c.px(12), t.muted, False, "lm"))
        c.el("checkbox", box, label)
        ry += row_h
    return h


def _stats(c: _Ctx, x: int, y: int, w: int, hmax: int) -> int:
    t = c.theme
    gap = c.px(16)
    n = max(1, min(c.ri(2, 4), (w + gap) // (c.px(170) + gap)))
    h = c.px(104)
    if h + gap > hmax:
        return 0
    cw = (w - (n - 1) * gap) // n
    for k in range(n):
        cx = x + k * (cw + gap)
        _card(c, cx, y, cw, h)
        p = c.px(16)
        c.ops.append(
            Text(
                (cx + p, y + p),
                ui.ellipsize(c.fresh(ui.STAT_LABELS), c.px(13), cw - 2 * p),
                c.px(13),
                t.muted,
                False,
                "la",
            )
        )
        value = c.pick(
            (
                f"{c.ri(1, 99)},{c.ri(0, 999):03d}",
                f"{c.ri(1, 99)}.{c.ri(0, 9)}%",
                f"${c.ri(1, 999)}k",
                f"{c.ri(2, 59)} min",
            )
        )
        c.ops.append(Text((cx + p, y + c.px(40)), value, c.px(24), t.text, True, "la"))
        up = c.chance(0.6)
        delta = f"{'▲' if up else '▼'} {c.ri(1, 30)}.{c.ri(0, 9)}%"
        c.ops.append(
            Text(
                (cx + p, y + c.px(78)),
                delta,
                c.px(12),
                (22, 163, 74) if up else t.danger,
                False,
                "la",
            )
        )
        if c.budget > 0 and c.chance(0.3):
            label = c.fresh(ui.LINK_LABELS)
            lx = cx + cw - p - ui.text_width(label, c.px(12))
            if lx > cx + p + ui.text_width(delta, c.px(12)) + c.px(8):
                ops, box = ui.link_ops(lx, y + c.px(78) + c.px(7), label, c.px(12), t.accent, False)
                c.ops.extend(ops)
                c.el("link", box, label)
    return h + gap


SECTIONS: tuple[tuple[Callable[[_Ctx, int, int, int, int], int], float], ...] = (
    (_form, 3.0),
    (_table, 3.0),
    (_cards, 2.0),
    (_toolbar, 1.5),
    (_text_block, 1.5),
    (_settings, 2.0),
    (_stats, 1.0),
)


def _page_header(c: _Ctx, x: int, y: int, w: int) -> int:
    t = c.theme
    title = c.pick(ui.PAGE_TITLES)
    if c.mobile:
        c.ops.append(Text((x, y), title, c.px(24), t.text, True, "la"))
        return c.px(48)
    c.ops.append(Text((x, y), title, c.px(22), t.text, True, "la"))
    crumbs = f"Home  /  {c.fresh(ui.SECTION_TITLES)}  /  {title}"
    c.ops.append(Text((x, y + c.px(32)), crumbs, c.px(12), t.muted, False, "la"))
    xr = x + w
    for style in ("primary", "secondary")[: c.ri(0, 2)]:
        label = c.fresh(ui.BUTTON_LABELS)
        bw = ui.button_width(label, c.f_body, c.px(16))
        if xr - bw < x + ui.text_width(title, c.px(22), True) + c.px(40):
            break
        box = (xr - bw, y, xr - 1, y + c.ctrl - 1)
        c.ops.extend(ui.button_ops(box, label, c.f_body, style, t, c.radius))
        c.el("button", box, label)
        xr -= bw + c.px(10)
    return c.px(68)


def _layout(rng: np.random.Generator) -> tuple[_Ctx, tuple[int, int]]:
    sw_, sh_, scales = SCREENS[int(rng.integers(len(SCREENS)))]
    s = scales[int(rng.integers(len(scales)))]
    mobile = sh_ > sw_
    c = _Ctx(rng, ui.make_theme(rng), s, mobile, int(rng.integers(MIN_WIDGETS, MAX_WIDGETS + 1)))
    if mobile:
        top = _status_bar(c, sw_)
        top = _top_bar(c, sw_, top)
        bottom = _tab_bar(c, sw_, sh_)
        left, right = c.px(16), sw_ - c.px(16)
    else:
        top = _top_bar(c, sw_, 0)
        left = _sidebar(c, top, sh_) + c.px(28)
        right, bottom = sw_ - c.px(28), sh_
    y = top + c.px(20)
    y += _page_header(c, left, y, right - left)
    bottom -= c.px(16)
    cw = right - left
    gap = c.px(24)
    ncols = 1
    if not mobile:
        max_cols = 3 if cw >= c.px(1150) else 2 if cw >= c.px(700) else 1
        max_cols = min(max_cols, 1 + c.max_widgets // 8)  # few widgets: fewer columns
        ncols = c.ri(1, max_cols)
    weights = c.pick(((1, 1), (2, 1), (1, 2))) if ncols == 2 else (1,) * ncols
    total = sum(weights)
    usable = cw - (ncols - 1) * gap
    xs = left
    funcs = [f for f, _ in SECTIONS]
    probs = np.array([wt for _, wt in SECTIONS]) / sum(wt for _, wt in SECTIONS)
    for k in range(ncols):
        colw = usable * weights[k] // total if k < ncols - 1 else right - xs
        left_over = c.max_widgets - c.n_widgets
        c.limit = c.n_widgets + -(-left_over * weights[k] // sum(weights[k:]))
        cy, fails = y, 0
        while fails < 3:
            if c.budget > 0:
                f = funcs[int(rng.choice(len(funcs), p=probs))]
            elif c.chance(0.5):  # widget budget spent: sometimes fill on with clutter only
                f = (_text_block, _stats)[c.ri(0, 1)]
            else:
                break
            h = f(c, xs, cy, colw, bottom - cy)
            if h <= 0:
                fails += 1
                continue
            c.sections.append(f.__name__.lstrip("_"))
            cy += h + c.px(20)
        xs += colw + gap
    return c, (sw_, sh_)


# --------------------------------------------------------------------------------------------
# Instructions
# --------------------------------------------------------------------------------------------


def _describe(
    els: Sequence[_El], drawn: set[str], rng: np.random.Generator
) -> tuple[str, str, int] | None:
    """Pick (kind, instruction, target index) such that the description matches one element.

    A quoted name must be on screen verbatim (`drawn` = the texts drawn), so an ellipsized label
    or placeholder is never asked for.
    """
    by_label = Counter((e.category, e.label) for e in els)
    top_glyphs = Counter(e.glyph for e in els if e.category == "icon" and e.region == "top_bar")
    row_icons = Counter(
        (e.glyph, e.extra["row"]) for e in els if e.category == "icon" and "row" in e.extra
    )
    field_names = Counter(
        n
        for e in els
        if e.category == "text_field"
        for n in {e.label, e.extra.get("placeholder", e.label)}
    )
    cands: dict[str, list[tuple[int, list[str]]]] = {k: [] for k in INSTRUCTION_KINDS}
    for i, e in enumerate(els):
        lab = e.label
        unique = by_label[(e.category, lab)] == 1 and lab in drawn
        if e.category == "button" and unique:
            cands["text"].append(
                (i, [f"the '{lab}' button", f"'{lab}' button", f"the button labelled '{lab}'"])
            )
        elif e.category == "link" and unique:
            cands["text"].append((i, [f"the '{lab}' link", f"the link '{lab}'"]))
        elif e.category == "text_field":
            ph = e.extra.get("placeholder", lab)
            texts = []
            if field_names[lab] == 1 and lab in drawn:
                texts += [f"the '{lab}' text field", f"the '{lab}' input field"]
            if ph != lab and field_names[ph] == 1 and ph in drawn:
                texts.append(f"the text field with placeholder '{ph}'")
            if texts:
                cands["text"].append((i, texts))
        elif e.category == "sidebar_item" and unique:
            cands["text"].append(
                (
                    i,
                    [f"the '{lab}' tab in the bottom bar"]
                    if e.region == "tab_bar"
                    else [f"the '{lab}' item in the sidebar", f"'{lab}' in the sidebar"],
                )
            )
        elif e.category == "icon" and e.region == "top_bar" and top_glyphs[e.glyph] == 1:
            cands["icon"].append((i, [f"the {e.glyph} icon in the top bar"]))
        elif e.category == "checkbox" and unique:
            cands["relational"].append(
                (i, [f"the checkbox next to '{lab}'", f"the checkbox for '{lab}'"])
            )
        elif (
            e.category == "icon"
            and "row" in e.extra
            and row_icons[(e.glyph, e.extra["row"])] == 1
            and e.extra["row"] in drawn
        ):
            row = e.extra["row"]
            cands["relational"].append(
                (
                    i,
                    [
                        f"the {e.glyph} icon in the '{row}' row",
                        f"the {e.glyph} button in the row of '{row}'",
                    ],
                )
            )
    kinds = [k for k in INSTRUCTION_KINDS if cands[k]]
    if not kinds:
        return None
    kind = kinds[int(rng.integers(len(kinds)))]
    pool = cands[kind]
    if kind == "text":  # grouped by category so the ever-present navigation doesn't dominate
        groups: dict[str, list[tuple[int, list[str]]]] = {}
        for i, texts in pool:
            groups.setdefault(els[i].category, []).append((i, texts))
        pool = groups[sorted(groups)[int(rng.integers(len(groups)))]]
    idx, texts = pool[int(rng.integers(len(pool)))]
    return kind, texts[int(rng.integers(len(texts)))], idx


def _overlaps(els: Sequence[_El]) -> bool:
    for i, a in enumerate(els):
        for b in els[i + 1 :]:
            if (
                a.box[0] <= b.box[2]
                and b.box[0] <= a.box[2]
                and a.box[1] <= b.box[3]
                and b.box[1] <= a.box[3]
            ):
                return True
    return False


class SynthGrounding(SynthDataset):
    """Procedural GUI grounding: find the element an instruction names (answer = its box)."""

    name = "SynthGrounding"

    def _generate(self, rng: np.random.Generator, sample_id: str, index: int) -> Sample:
        # retries continue the same RNG stream, so they are deterministic too (~3 % need one)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            c, size = _layout(rng)
            if not MIN_WIDGETS <= c.n_widgets <= MAX_WIDGETS or _overlaps(c.els):
                continue
            pick = _describe(c.els, {op.text for op in c.ops if isinstance(op, Text)}, rng)
            if pick is not None:
                return self._sample(sample_id, c, size, pick, attempt)
        raise RuntimeError(
            f"{sample_id}: no valid layout in {MAX_ATTEMPTS} attempts"
        )  # pragma: no cover

    def _sample(
        self,
        sample_id: str,
        c: _Ctx,
        size: tuple[int, int],
        pick: tuple[str, str, int],
        attempt: int,
    ) -> Sample:
        kind, instruction, ti = pick
        page = Page(size, c.theme.bg, tuple(c.ops))
        objects = tuple(
            SceneObject(
                f"e{i}",
                e.category,
                {"label": e.label, "glyph": e.glyph, "region": e.region, **e.extra},
                tuple(float(v) for v in e.box),
            )
            for i, e in enumerate(c.els)
        )
        box = c.els[ti].box
        return Sample(
            sample_id=sample_id,
            question="<image>" + instruction,
            image=functools.partial(ui.render_page, page),
            answer=f"({box[0]}, {box[1]}, {box[2]}, {box[3]})",
            answer_kind="point_in_box",
            gt_box=tuple(float(v) for v in box),
            objects=objects,
            target_ids=(f"e{ti}",),
            meta={
                "generator": self.name,
                "instruction_kind": kind,
                "screen": list(size),
                "scale": c.s,
                "theme": "dark" if c.theme.dark else "light",
                "sections": list(c.sections),
                "attempts": attempt,
            },
        )

"""SynthGrounding screen layout: chrome (top bar, sidebar, phone bars), page header, column packing.

Why it exists: `_layout` decides the screen size, scale and theme, draws the chrome, then fills
1–3 columns with content sections (`grounding_sections`, `grounding_panels`) under the widget
budget; this is the part of the generator that is about the whole screen rather than one widget
group. Split out of `grounding.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from vigorl_env.data.synth import ui
from vigorl_env.data.synth.grounding_ctx import (
    MAX_WIDGETS,
    MIN_WIDGETS,
    SCREENS,
    TOPBAR_GLYPHS,
    _Ctx,
    _El,
)
from vigorl_env.data.synth.grounding_panels import SECTIONS, _stats, _text_block
from vigorl_env.data.synth.ui import Glyph, Line, Rect, Text

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

"""SynthGrounding content sections, part 2: toolbars, text blocks, settings, stats; the section table.

Why it exists: the lighter content sections (and `SECTIONS`, the weighted table `_layout` draws
from) kept apart from the widget-dense ones in `grounding_sections`, so neither module outgrows a
read. Split out of `grounding.py`.
"""

from __future__ import annotations

from collections.abc import Callable

from vigorl_env.data.synth import ui
from vigorl_env.data.synth.grounding_ctx import _Ctx
from vigorl_env.data.synth.grounding_sections import (
    _card,
    _cards,
    _form,
    _section_title,
    _table,
)
from vigorl_env.data.synth.ui import Line, Text


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

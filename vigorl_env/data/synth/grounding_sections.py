"""SynthGrounding content sections, part 1: shared helpers, forms, tables and card grids.

Why it exists: each section draws into [x, x+w) × [y, y+hmax), records its interactive elements and
returns the height used (0: no fit). These are the widget-dense sections; the lighter ones are in
`grounding_panels`. Split out of `grounding.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

from vigorl_env.data.synth import ui
from vigorl_env.data.synth.grounding_ctx import ROW_GLYPH_SETS, SECONDARY_LABELS, _Ctx
from vigorl_env.data.synth.ui import Glyph, Line, Rect, Text

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

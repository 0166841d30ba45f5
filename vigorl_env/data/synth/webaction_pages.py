"""SynthWebAction's page builders: the home page, the search results page and an item page.

Why it exists: each builder lays one page kind out into a `_Doc` and records its marks; the
results-page geometry helpers decide where the objective's item can appear relative to the fold,
which is what makes the `listed` / `more` ground truth unambiguous. Split out of `webaction.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vigorl_env.data.synth import ui
from vigorl_env.data.synth.ui import Glyph, Line, Rect, Text
from vigorl_env.data.synth.webaction_doc import (
    CARD_BODY,
    CARD_GAP,
    CARD_H,
    CARD_W,
    GRID_TOP,
    HEADER_H,
    NAME_LH,
    PIC_H,
    SCROLL_STEP,
    H,
    W,
    _Doc,
    _footer,
    _Mark,
    _product_card,
)
from vigorl_env.data.synth.webaction_shop import (
    DESCRIPTION_SENTENCES,
    NAV_CATEGORIES,
    _Kind,
    _Product,
    _products,
    _random_kind,
)

# Pages
# --------------------------------------------------------------------------------------------


def _home_page(d: _Doc, rng: np.random.Generator, exclude: _Kind) -> None:
    t = d.theme
    y = HEADER_H + 24
    hero = (40, y, W - 41, y + 300)
    d.ops.append(ui.picture_op(rng, hero))
    d.ops.append(Rect((80, y + 60, 620, y + 240), fill=(255, 255, 255)))
    head = ("Summer Sale", "New Arrivals", "Back to School", "Holiday Deals", "Spring Savings")[
        int(rng.integers(5))
    ]
    d.ops.append(Text((110, y + 105), head, 34, (30, 30, 30), True, "lm"))
    d.ops.append(
        Text(
            (110, y + 148),
            f"Up to {int(rng.integers(2, 8)) * 10}% off selected items",
            17,
            (80, 80, 80),
            False,
            "lm",
        )
    )
    d.button(
        (110, y + 178, 110 + ui.button_width("Shop Now", 15, 22) - 1, y + 217),
        "Shop Now",
        key="hero",
    )
    y += 300 + 40
    d.ops.append(
        Text(
            (40, y),
            ("Hot Sellers", "Featured Products", "Recommended for you")[int(rng.integers(3))],
            24,
            (40, 40, 40),
            False,
            "la",
        )
    )
    d.ops.append(Line((40, y + 40, W - 41, y + 40), t.border, 1))
    y += 60
    ncols = 4
    cw = (W - 80 - (ncols - 1) * CARD_GAP) // ncols
    for r in range(2):
        for k in range(ncols):
            kind, cat = _random_kind(rng, exclude)
            p = _products(rng, kind, cat, 1, set())[0]
            _product_card(
                d, 40 + k * (cw + CARD_GAP), y + r * (CARD_H - 20 + 30), cw, p, True, PIC_H - 20
            )
    d.height = _footer(d, y + 2 * (CARD_H + 10) + 40)


def _results_layout(per_page: int, pic_h: int) -> list[tuple[int, int]]:
    """The (x, y) of each card of a results page (3 columns right of the filters)."""
    pitch = pic_h + CARD_BODY + 16
    return [
        (330 + (i % 3) * (CARD_W + CARD_GAP), GRID_TOP + (i // 3) * pitch) for i in range(per_page)
    ]


def _results_height(per_page: int, pic_h: int) -> int:
    """Document height of a results page (grid, pagination, footer) as `_results_page` draws it."""
    return _results_layout(per_page, pic_h)[-1][1] + pic_h + CARD_BODY + 20 + 80 + 220


def _target_positions(per_page: int, pic_h: int, scroll: int, listed: bool) -> list[int]:
    """Card positions the objective's item may take on a results page seen from `scroll`.

    listed: cards whose reserved name area is fully in view. Not listed: cards whose name is
    entirely below the fold, provided some such card shows >= 60 px of its picture at the bottom
    (the visible hint that the list goes on).
    """
    cells = _results_layout(per_page, pic_h)
    names = [(y + pic_h + 10, y + pic_h + 12 + 3 * NAME_LH + 2) for _, y in cells]
    if listed:
        return [i for i, (a, b) in enumerate(names) if a >= scroll and b < scroll + H]
    pool = [i for i, (a, _) in enumerate(names) if a >= scroll + H]
    return pool if any(cells[i][1] <= scroll + H - 60 for i in pool) else []


def _results_view(
    rng: np.random.Generator, per_page: int, k_scroll: int, listed: bool
) -> tuple[int, int, list[int]]:
    """(picture height, scroll offset, target positions) of a results page.

    The drawn picture height is kept when it works; otherwise one that works is drawn (and the
    scroll reduced if none does), so every page kind succeeds without open-ended retries.
    """
    pic_h = int(rng.integers(180, 261))
    for k in range(k_scroll, -1, -1):

        def scroll_of(ph: int, k: int = k) -> int:  # browsers stop at the end of the page
            return min(k * SCROLL_STEP, max(0, _results_height(per_page, ph) - H))

        pool = _target_positions(per_page, pic_h, scroll_of(pic_h), listed)
        if pool:
            return pic_h, scroll_of(pic_h), pool
        ok = [
            ph for ph in range(180, 261) if _target_positions(per_page, ph, scroll_of(ph), listed)
        ]
        if ok:
            ph = ok[int(rng.integers(len(ok)))]
            return ph, scroll_of(ph), _target_positions(per_page, ph, scroll_of(ph), listed)
    return pic_h, 0, []


def _results_page(
    d: _Doc,
    rng: np.random.Generator,
    query: str,
    products: Sequence[_Product],
    total: int,
    filters: tuple[int, int],
    pic_h: int,
) -> None:
    t = d.theme
    y = HEADER_H + 24
    box = d.link(40, y + 8, "Home", 13)
    d.ops.append(
        Text((box[2] + 8, y + 8), f"›  Search results for: '{query}'", 13, t.muted, False, "lm")
    )
    d.ops.append(
        Text((40, y + 54), f"Search results for: '{query}'", 30, (40, 40, 40), False, "lm")
    )
    ty = y + 100
    # filters
    fy = ty
    d.ops.append(Text((40, fy), "Shop By", 20, (40, 40, 40), True, "la"))
    d.ops.append(Text((40, fy + 40), "Shopping Options", 14, t.muted, True, "la"))
    fy += 76
    n_cat, n_price = filters
    if n_cat:
        d.ops.append(Text((40, fy), "CATEGORY", 13, (60, 60, 60), True, "la"))
        fy += 30
        cat = products[0].category
        subs = [cat, *[c for c in NAV_CATEGORIES if c != cat]]
        for s in subs[:n_cat]:
            d.link(40, fy + 9, f"{ui.ellipsize(s, 14, 200)} ({int(rng.integers(1, 40))})", 14)
            fy += 30
        fy += 16
    if n_price:
        d.ops.append(Text((40, fy), "PRICE", 13, (60, 60, 60), True, "la"))
        fy += 30
        lo = 0
        for _ in range(n_price):
            hi = lo + int(rng.integers(1, 5)) * 10
            d.link(40, fy + 9, f"${lo}.00 - ${hi - 1}.99 ({int(rng.integers(1, 30))})", 14)
            lo, fy = hi, fy + 30
    # toolbar
    d.ops.append(
        Text((330, ty + 20), f"Items 1-{len(products)} of {total}", 14, (60, 60, 60), False, "lm")
    )
    sx = W - 40 - 170
    d.ops.append(Text((sx - 70, ty + 20), "Sort By", 14, (60, 60, 60), False, "lm"))
    sb = (sx, ty + 2, W - 41, ty + 38)
    d.ops.extend(ui.text_field_ops(sb, "Relevance", 14, t, 2, placeholder=False))
    d.ops.append(
        Glyph("chevron_down", (sb[2] - 26, sb[1] + 10, sb[2] - 10, sb[1] + 26), (90, 90, 90))
    )
    d.marks.append(_Mark("combobox", "Relevance", sb, "sort"))
    cells = _results_layout(len(products), pic_h)
    for p, (x, cy) in zip(products, cells, strict=True):
        _product_card(d, x, cy, CARD_W, p, False, pic_h)
    end = cells[-1][1] + pic_h + CARD_BODY + 20
    # pagination (below the grid)
    x = 330
    d.ops.append(Text((x, end + 20), "Page", 14, t.muted, False, "lm"))
    x += 50
    pages = -(-total // len(products))
    for k in range(1, min(pages, 4) + 1):
        if k == 1:
            d.ops.append(Rect((x - 6, end + 6, x + 16, end + 34), fill=(235, 235, 235)))
            d.ops.append(Text((x + 5, end + 20), "1", 14, (40, 40, 40), True, "mm"))
            x += 36
        else:
            b = d.link(x, end + 20, str(k), 14)
            x = b[2] + 34
    d.link(x + 10, end + 20, "Next ›", 14)
    d.height = _footer(d, end + 80)


def _item_page(d: _Doc, rng: np.random.Generator, p: _Product, related: Sequence[_Product]) -> None:
    t = d.theme
    y = HEADER_H + 20
    b = d.link(40, y + 8, "Home", 13)
    x = b[2] + 8
    d.ops.append(Text((x, y + 8), "›", 13, t.muted, False, "lm"))
    b = d.link(x + 16, y + 8, p.category, 13)
    d.ops.append(
        Text((b[2] + 8, y + 8), "›  " + ui.ellipsize(p.name, 13, 700), 13, t.muted, False, "lm")
    )
    y += 40
    d.ops.append(ui.picture_op(rng, (40, y, 599, y + 519)))
    d.ops.append(Rect((40, y, 599, y + 519), outline=(225, 225, 225)))
    for k in range(4):
        tb = (40 + k * 96, y + 534, 40 + k * 96 + 85, y + 619)
        d.ops.append(ui.picture_op(rng, tb))
        d.ops.append(
            Rect(tb, outline=t.accent if k == 0 else (225, 225, 225), width=2 if k == 0 else 1)
        )
    rx, rw = 640, W - 40 - 640
    lines = ui.wrap(p.name, 28, rw)[:3]
    for i, s in enumerate(lines):
        d.ops.append(Text((rx, y + i * 38), s, 28, (40, 40, 40), False, "la"))
    ry = y + len(lines) * 38 + 22
    d.ops.extend(ui.stars_ops(rx, ry, p.rating, 18, (255, 165, 0), (220, 220, 220)))
    b = d.link(rx + 5 * 20 + 14, ry, f"{p.reviews} Reviews", 14, key="reviews")
    d.link(b[2] + 22, ry, "Add Your Review", 14)
    ry += 56
    d.ops.append(Text((rx, ry), p.price, 34, (30, 30, 30), True, "lm"))
    sku = f"SKU: B0{int(rng.integers(10**7, 10**8))}"
    d.ops.append(Text((W - 40, ry - 10), "IN STOCK", 13, (60, 60, 60), True, "rm"))
    d.ops.append(Text((W - 40, ry + 12), sku, 13, t.muted, False, "rm"))
    ry += 48
    d.ops.append(Line((rx, ry, W - 41, ry), t.border, 1))
    ry += 24
    d.ops.append(Text((rx, ry + 48), "Qty", 14, (60, 60, 60), True, "lm"))
    qb = (rx + 40, ry + 26, rx + 99, ry + 71)
    d.ops.extend(ui.text_field_ops(qb, "1", 16, t, 2, placeholder=False))
    d.marks.append(_Mark("textbox", "Qty", qb, "qty"))
    cb = (rx + 120, ry + 26, rx + 120 + 239, ry + 71)
    d.button(cb, "Add to Cart", size=17, key="add_to_cart")
    ry += 100
    b = d.link(rx, ry, "Add to Wish List", 13, color=(90, 90, 90), key="wish")
    d.link(b[2] + 30, ry, "Add to Compare", 13, color=(90, 90, 90))
    # tabs and description
    ty = y + 660
    tx = 40
    for s in ("Details", "More Information", f"Reviews ({p.reviews})"):
        w = ui.text_width(s, 15, True) + 40
        tb = (tx, ty, tx + w - 1, ty + 43)
        d.ops.append(
            Rect(tb, fill=ui.WHITE if tx == 40 else (240, 240, 240), outline=(210, 210, 210))
        )
        d.ops.append(Text(((tb[0] + tb[2]) // 2, ty + 22), s, 15, (40, 40, 40), True, "mm"))
        d.marks.append(_Mark("link", s, tb, "tab"))
        tx += w + 4
    d.ops.append(Line((40, ty + 43, W - 41, ty + 43), (210, 210, 210), 1))
    idx = rng.choice(len(DESCRIPTION_SENTENCES), 4, replace=False)
    desc = f"The {p.name} is a great choice in {p.category}. " + " ".join(
        DESCRIPTION_SENTENCES[int(i)] for i in idx
    )
    lines = ui.wrap(desc, 15, W - 80)
    d.ops.extend(ui.paragraph_ops(40, ty + 68, lines, 15, (60, 60, 60), 24))
    y = ty + 68 + len(lines) * 24 + 40
    if related:
        d.ops.append(Text((40, y), "Related Products", 22, (40, 40, 40), False, "la"))
        y += 50
        cw = (W - 80 - 3 * CARD_GAP) // 4
        for k, q in enumerate(related[:4]):
            _product_card(d, 40 + k * (cw + CARD_GAP), y, cw, q, True, 180)
        y += CARD_H
    d.height = _footer(d, y + 40)

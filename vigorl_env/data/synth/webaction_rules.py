"""SynthWebAction's viewport, set-of-marks and ground-truth rules (one rule per page kind).

Why it exists: `_attempt` draws a page of a given kind, scrolls it into the viewport, marks the
fully visible elements and derives the single right action; the GT rules listed in `webaction.py`'s
docstring are implemented here and nowhere else. Split out of `webaction.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vigorl_env.data.synth import ui
from vigorl_env.data.synth.ui import Box, Page, Rect, Text
from vigorl_env.data.synth.webaction_doc import (
    SCROLL_STEP,
    H,
    W,
    _Doc,
    _header,
    _Mark,
    _nav_fit,
    _shop_theme,
)
from vigorl_env.data.synth.webaction_pages import (
    _home_page,
    _item_page,
    _results_page,
    _results_view,
)
from vigorl_env.data.synth.webaction_shop import (
    CART_OBJECTIVES,
    PRICE_OBJECTIVES,
    STORE_NAMES,
    _products,
    _random_kind,
)

MIN_MARKS, MAX_MARKS = 8, 30
#: Set-of-marks colours (matplotlib tab10 without its light grey), as in VWA screenshots.
SOM_COLORS: tuple[ui.RGB, ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
)

# Viewport, set-of-marks, sample
# --------------------------------------------------------------------------------------------


def _visible(box: Box, scroll: int) -> bool:
    return box[1] >= scroll and box[3] < scroll + H and box[0] >= 0 and box[2] < W


def _finalize(
    d: _Doc, rng: np.random.Generator, scroll: int
) -> tuple[Page, list[tuple[int, _Mark, Box]]]:
    """Scroll the document into the viewport, mark the fully visible elements, draw the marks."""
    ops = [ui.translate(op, 0, -scroll) for op in d.ops] if scroll else list(d.ops)
    vis = [m for m in d.marks if _visible(m.box, scroll)]
    vis.sort(key=lambda m: (m.box[1], m.box[0]))
    ids = np.sort(rng.choice(999, len(vis), replace=False) + 1)
    c0 = int(rng.integers(len(SOM_COLORS)))
    marked: list[tuple[int, _Mark, Box]] = []
    for k, (m, som) in enumerate(zip(vis, ids, strict=True)):
        color = SOM_COLORS[(c0 + k) % len(SOM_COLORS)]
        x1, y1, x2, y2 = m.box[0], m.box[1] - scroll, m.box[2], m.box[3] - scroll
        ops.append(Rect((x1, y1, x2, y2), outline=color, width=2))
        label = str(int(som))
        tw, th = ui.text_width(label, 12, True) + 6, 16
        tx, ty = x1, y1 - th  # above the top-left corner; left of it where there is no room above
        if ty < 0:
            tx, ty = (x1 - tw, y1) if x1 - tw >= 0 else (x1, y1)
        ops.append(Rect((tx, ty, tx + tw - 1, ty + th - 1), fill=color))
        ops.append(Text((tx + tw // 2, ty + th // 2), label, 12, ui.WHITE, True, "mm"))
        marked.append((int(som), m, (x1, y1, x2, y2)))
    return Page((W, H), ui.WHITE, tuple(ops)), marked


@dataclass(frozen=True)
class _Attempt:
    page: Page
    marked: list[tuple[int, _Mark, Box]]
    answer: str
    target: int | None  # SoM id the action acts on
    objective: str
    previous: list[str]
    meta: dict


def _attempt(rng: np.random.Generator, page_kind: str) -> _Attempt | None:
    """One try at a page of `page_kind`; None if the draw doesn't satisfy the constraints."""
    objective_kind = {"price": "price", "cart": "cart"}.get(page_kind) or (
        "price" if rng.random() < 0.5 else "cart"
    )
    kind, cat = _random_kind(rng)
    theme = _shop_theme(rng)
    link_color = (0, 107, 180) if rng.random() < 0.6 else ui.mix(theme.accent, ui.BLACK, 0.15)
    d = _Doc(rng, theme, link_color)
    store = STORE_NAMES[int(rng.integers(len(STORE_NAMES)))]
    query = kind.noun.lower()
    scroll, prev = 0, []
    cart_count = int(rng.integers(0, 6))
    if page_kind == "search":
        target = _products(rng, kind, cat, 1, set())[0]
        _home_page(d, rng, kind)
    elif page_kind in ("listed", "more"):
        per_page = (12, 15, 18, 24)[int(rng.integers(4))]
        k_scroll = int(rng.integers(0, 3)) if rng.random() < 0.5 else 0
        pic_h, scroll, positions = _results_view(rng, per_page, k_scroll, page_kind == "listed")
        if not positions:
            return None
        products = _products(rng, kind, cat, per_page, set())
        target = products[positions[int(rng.integers(len(positions)))]]
        total = per_page + int(rng.integers(1, 60))
        filters = (int(rng.integers(0, 4)), int(rng.integers(0, 4)))
        _results_page(d, rng, query, products, total, filters, pic_h)
        prev = [f"type [search box] [{query}]"] + ["scroll [down]"] * -(-scroll // SCROLL_STEP)
    else:
        pool = _products(rng, kind, cat, 6, set())
        target, other = pool[0], pool[1]
        shown = other if page_kind == "other" else target
        rel_kind, rel_cat = (kind, cat) if rng.random() < 0.5 else _random_kind(rng, kind)
        related = _products(rng, rel_kind, rel_cat, 4, {q.name for q in pool})
        _item_page(d, rng, shown, related[: int(rng.integers(0, 5))])
        prev = (
            [f"type [search box] [{query}]"]
            + ["scroll [down]"] * int(rng.integers(0, 2))
            + [f"click [{shown.name}]"]
        )
    # the header goes in last, sized to the element budget the visible content leaves
    if scroll == 0:
        n_content = sum(_visible(m.box, scroll) for m in d.marks)
        if n_content + 4 > MAX_MARKS:
            return None
        n_strip, n_cats = _nav_fit(rng, MAX_MARKS - n_content)
        hdr = _Doc(rng, theme, link_color)
        # the results page shows the query in the box; the home and item pages show the placeholder
        _header(
            hdr,
            store,
            query if page_kind in ("listed", "more") else None,
            n_strip,
            n_cats,
            cart_count,
        )
        d.ops[:0] = hdr.ops
        d.marks[:0] = hdr.marks
    page, marked = _finalize(d, rng, scroll)
    if not MIN_MARKS <= len(marked) <= MAX_MARKS:
        return None
    by_key = {m.key: som for som, m, _ in marked if m.key}
    templates = PRICE_OBJECTIVES if objective_kind == "price" else CART_OBJECTIVES
    objective = templates[int(rng.integers(len(templates)))].format(item=target.name)
    target_som: int | None = None
    if page_kind == "search":
        target_som = by_key["search_box"]
        answer = f"type [{target_som}] [{query}]"
    elif page_kind == "listed":
        target_som = by_key[f"product:{target.name}"]
        answer = f"click [{target_som}]"
    elif page_kind == "more":
        answer = "scroll [down]"
    elif page_kind == "other":
        answer = "go_back"
    elif objective_kind == "price":
        answer = f"stop [{target.price}]"
    else:
        if "add_to_cart" not in by_key:
            return None
        target_som = by_key["add_to_cart"]
        answer = f"click [{target_som}]"
    meta = {
        "page_kind": page_kind,
        "objective_kind": objective_kind,
        "item": target.name,
        "price": target.price,
        "query": query,
        "scroll": scroll,
        "store": store,
    }
    return _Attempt(page, marked, answer, target_som, objective, prev, meta)

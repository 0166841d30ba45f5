"""SynthWebAction: procedural VisualWebArena-like next-action prediction (docs/data.md#procedural-datasets).

A small shopping site (store name, category nav, search box, cart; products with brand, model,
price, rating) is rendered as a 1280×1440 browser viewport. Every interactive element that is
fully visible gets a set-of-marks annotation like VisualWebArena's SoM screenshots: its box
outlined in a colour and a tag with its unique id (1–999, increasing in reading order) in that
colour at its top-left (left of it where there is no room above). The user text is
"<image>OBJECTIVE: …", a newline, "PREVIOUS ACTIONS:", then one action per line naming elements by
their text (`type [search box] [wireless mouse]`, `click [Logitech M185 Wireless Mouse]`) or
"None". Pages taller than the viewport are scrolled like a browser (SCROLL_STEP px per
`scroll [down]`, stopping at the page end); elements cut by the viewport are not marked.

Page kinds and their ground truth (one rule each, so the right action is unambiguous):
- search   (home page, no previous action)              → `type [search box id] [query]`
- listed   (results page showing the objective's item)  → `click [id of the item's name link]`
- more     (results page without it, list continues
            below the fold: "Items 1-12 of 37", a cut
            card at the bottom)                         → `scroll [down]`
- price    (the item's page, price question)            → `stop [$13.49]` (price as printed)
- cart     (the item's page, "add to cart" objective)   → `click [Add to Cart button id]`
- other    (another item's page, either objective)      → `go_back`
Result cards show no price, so a price question on a results page can only be answered by opening
the item (otherwise `stop` would be as right as `click`). The query typed on the search page is the

Layout: `webaction_shop` (catalogue, objectives), `webaction_doc` (document model, header, cards,
footer, viewport size), `webaction_pages` (page builders), `webaction_rules` (viewport, set-of-marks,
GT rules); this module holds the dataset class and re-exports the public names.
"""

from __future__ import annotations

import functools

import numpy as np

from vigorl_env.data.base import Sample, SceneObject
from vigorl_env.data.synth import ui
from vigorl_env.data.synth.common import SynthDataset
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
)
from vigorl_env.data.synth.webaction_rules import (
    MAX_MARKS,
    MIN_MARKS,
    SOM_COLORS,
    _Attempt,
    _attempt,
)
from vigorl_env.data.synth.webaction_shop import (
    CART_OBJECTIVES,
    CATALOG,
    CONSUMABLE_SUFFIXES,
    CONSUMABLES,
    DESCRIPTION_SENTENCES,
    NAV_CATEGORIES,
    PRICE_CENTS,
    PRICE_OBJECTIVES,
    STORE_NAMES,
    SUFFIXES,
)
from vigorl_env.protocol import IMAGE_MARKER

__all__ = [
    "CARD_BODY",
    "CARD_GAP",
    "CARD_H",
    "CARD_W",
    "CART_OBJECTIVES",
    "CATALOG",
    "CONSUMABLES",
    "CONSUMABLE_SUFFIXES",
    "DESCRIPTION_SENTENCES",
    "GRID_TOP",
    "HEADER_H",
    "MAX_ATTEMPTS",
    "MAX_MARKS",
    "MIN_MARKS",
    "NAME_LH",
    "NAV_CATEGORIES",
    "PAGE_KINDS",
    "PIC_H",
    "PRICE_CENTS",
    "PRICE_OBJECTIVES",
    "SCROLL_STEP",
    "SOM_COLORS",
    "STORE_NAMES",
    "SUFFIXES",
    "H",
    "SynthWebAction",
    "W",
]

PAGE_KINDS: tuple[str, ...] = ("search", "listed", "more", "price", "cart", "other")
MAX_ATTEMPTS = 64


class SynthWebAction(SynthDataset):
    """Procedural web next-action prediction on a set-of-marks shopping-site screenshot."""

    name = "SynthWebAction"

    def _generate(self, rng: np.random.Generator, sample_id: str, index: int) -> Sample:
        # the page kind is drawn once, so the six GT rules stay equally likely whatever the retries
        page_kind = PAGE_KINDS[int(rng.integers(len(PAGE_KINDS)))]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            out = _attempt(rng, page_kind)
            if out is not None:
                return self._sample(sample_id, out, attempt)
        raise RuntimeError(
            f"{sample_id}: no valid page in {MAX_ATTEMPTS} attempts"
        )  # pragma: no cover

    def _sample(self, sample_id: str, out: _Attempt, attempt: int) -> Sample:
        objects = tuple(
            SceneObject(
                str(som),
                m.role,
                {"som_id": som, "text": m.text, "role": m.role},
                tuple(float(v) for v in box),
            )
            for som, m, box in out.marked
        )
        prev = "\n".join(out.previous) if out.previous else "None"
        return Sample(
            sample_id=sample_id,
            question=f"{IMAGE_MARKER}OBJECTIVE: {out.objective}\nPREVIOUS ACTIONS:\n{prev}",
            image=functools.partial(ui.render_page, out.page),
            answer=out.answer,
            answer_kind="web_action",
            objects=objects,
            target_ids=(str(out.target),) if out.target is not None else (),
            meta={**out.meta, "generator": self.name, "attempts": attempt},
        )

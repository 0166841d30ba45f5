"""SynthGrounding instruction generation: pick an element a description names uniquely.

Why it exists: the ground truth must be unambiguous, so the instruction is chosen by the same
description rule applied to every interactive element (never by identity); this rule is the part of
the generator a reviewer most needs to read on its own. Split out of `grounding.py`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from vigorl_env.data.synth.grounding_ctx import _El

INSTRUCTION_KINDS: tuple[str, ...] = ("text", "icon", "relational")


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

"""Shared UI drawing primitives of the procedural screen datasets (SynthGrounding, SynthWebAction).

Why a display list: generators compute the whole layout eagerly (boxes, labels, ids) from the
sample RNG, but pixels are only needed when the env asks for the image. A `Page` is a frozen tuple
of plain drawing operations (ints, tuples, strings), so `functools.partial(render_page, page)` is a
cheap, picklable, zero-argument image loader (docs/data.md#the-internal-sample) and rendering is a pure function of it.

Everything is integer geometry drawn with PIL primitives and the shipped DejaVu font, so the same
page renders bit-identically on every machine for a pinned Pillow major version. Icon glyphs are
drawn 4× supersampled into a mask and box-filtered down (deterministic too), which keeps 16–20 px
icons recognisable.

Layout: `ui_draw` (drawing ops, `render_page`, text measurement), `ui_glyphs` (icon glyphs),
`ui_widgets` (colours, themes, widget helpers), `ui_vocab` (label vocabulary). This module
re-exports their public names, so `from vigorl_env.data.synth import ui; ui.render_page(...)` works.
"""

from __future__ import annotations

from vigorl_env.data.synth.ui_draw import (
    RGB,
    Box,
    Ellipse,
    Glyph,
    Line,
    Op,
    Page,
    Picture,
    Polygon,
    Rect,
    Text,
    ellipsize,
    render_page,
    text_bbox,
    text_width,
    translate,
    wrap,
)
from vigorl_env.data.synth.ui_glyphs import (
    ICON_GLYPHS,
    ICON_NAMES,
    glyph_mask,
)
from vigorl_env.data.synth.ui_vocab import (
    APP_TITLES,
    BUTTON_LABELS,
    CARD_TITLES,
    CHECKBOX_HINTS,
    CHECKBOX_LABELS,
    FIELDS,
    FILE_EXTS,
    FILE_WORDS,
    FIRST_NAMES,
    GENERIC_BUTTONS,
    LAST_NAMES,
    LINK_LABELS,
    MONTHS,
    PAGE_TITLES,
    SEARCH_PLACEHOLDERS,
    SECTION_TITLES,
    SENTENCES,
    SIDEBAR_HEADERS,
    SIDEBAR_ITEMS,
    STAT_LABELS,
    STATUS_PILLS,
    TAB_ITEMS,
    paragraph_text,
    sentence,
)
from vigorl_env.data.synth.ui_widgets import (
    ACCENTS,
    BLACK,
    WHITE,
    Theme,
    button_ops,
    button_width,
    checkbox_ops,
    link_ops,
    make_theme,
    mix,
    paragraph_ops,
    picture_op,
    stars_ops,
    text_field_ops,
)

__all__ = [
    "ACCENTS",
    "APP_TITLES",
    "BLACK",
    "BUTTON_LABELS",
    "CARD_TITLES",
    "CHECKBOX_HINTS",
    "CHECKBOX_LABELS",
    "FIELDS",
    "FILE_EXTS",
    "FILE_WORDS",
    "FIRST_NAMES",
    "GENERIC_BUTTONS",
    "ICON_GLYPHS",
    "ICON_NAMES",
    "LAST_NAMES",
    "LINK_LABELS",
    "MONTHS",
    "PAGE_TITLES",
    "RGB",
    "SEARCH_PLACEHOLDERS",
    "SECTION_TITLES",
    "SENTENCES",
    "SIDEBAR_HEADERS",
    "SIDEBAR_ITEMS",
    "STATUS_PILLS",
    "STAT_LABELS",
    "TAB_ITEMS",
    "WHITE",
    "Box",
    "Ellipse",
    "Glyph",
    "Line",
    "Op",
    "Page",
    "Picture",
    "Polygon",
    "Rect",
    "Text",
    "Theme",
    "button_ops",
    "button_width",
    "checkbox_ops",
    "ellipsize",
    "glyph_mask",
    "link_ops",
    "make_theme",
    "mix",
    "paragraph_ops",
    "paragraph_text",
    "picture_op",
    "render_page",
    "sentence",
    "stars_ops",
    "text_bbox",
    "text_field_ops",
    "text_width",
    "translate",
    "wrap",
]

"""SynthGrounding: procedural ScreenSpot-like GUI grounding (docs/data.md#procedural-datasets).

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

Layout: `grounding_ctx` (screen parameters, layout state), `grounding_screen` (chrome, page header,
column packing), `grounding_sections` and `grounding_panels` (content sections),
`grounding_instructions` (the unique-description rule); this module holds the dataset class and
re-exports the public names.
"""

from __future__ import annotations

import functools

import numpy as np

from vigorl_env.data.base import Sample, SceneObject
from vigorl_env.data.synth import ui
from vigorl_env.data.synth.common import SynthDataset
from vigorl_env.data.synth.grounding_ctx import (
    MAX_WIDGETS,
    MIN_WIDGETS,
    ROW_GLYPH_SETS,
    SCREENS,
    SECONDARY_LABELS,
    TOPBAR_GLYPHS,
    _Ctx,
)
from vigorl_env.data.synth.grounding_instructions import INSTRUCTION_KINDS, _describe
from vigorl_env.data.synth.grounding_panels import SECTIONS
from vigorl_env.data.synth.grounding_screen import _layout, _overlaps
from vigorl_env.data.synth.ui import Page, Text
from vigorl_env.protocol import IMAGE_MARKER

__all__ = [
    "INSTRUCTION_KINDS",
    "MAX_ATTEMPTS",
    "MAX_WIDGETS",
    "MIN_WIDGETS",
    "ROW_GLYPH_SETS",
    "SCREENS",
    "SECONDARY_LABELS",
    "SECTIONS",
    "TOPBAR_GLYPHS",
    "SynthGrounding",
]

MAX_ATTEMPTS = 64


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
            question=IMAGE_MARKER + instruction,
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

"""Honest chance-level baselines: the floors a model must beat.

They read only what a model sees (the observation text and the image size), never the ground truth.
`FullViewGuess` answers at once with a random option / point / action; `RandomZoom` first zooms at
random points (multi-turn mode), then guesses the same way. Their text follows the protocol exactly,
so they earn full format credit and their accuracy is pure chance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigorl_env.protocol import format_tool_call

_OPTION = re.compile(r"^[A-Z]\.\s+(.+?)\s*$", re.MULTILINE)
_WEB_VERBS = ("click", "type", "scroll", "go_back", "stop")


def options_in(question: str) -> list[str]:
    """The `A. …` option lines of a question (SPEC §2.7), in order."""
    return _OPTION.findall(question)


def guess_answer(
    question: str, answer_kind: str, size: tuple[int, int], rng: np.random.Generator
) -> str:
    """A uniformly random answer of the right kind."""
    w, h = size
    if answer_kind == "point_in_box":
        return f"({int(rng.integers(0, w))}, {int(rng.integers(0, h))})"
    if answer_kind == "web_action":
        verb = _WEB_VERBS[int(rng.integers(0, len(_WEB_VERBS)))]
        elem = int(rng.integers(1, 1000))
        return {
            "click": f"click [{elem}]",
            "type": f"type [{elem}] [search]",
            "scroll": "scroll [down]",
            "go_back": "go_back",
            "stop": "stop []",
        }[verb]
    opts = options_in(question)
    return opts[int(rng.integers(0, len(opts)))] if opts else "yes"


@dataclass
class FullViewGuess:
    """Answer at full view, without zooming: one grounded step at a random point, a random answer."""

    seed: int = 0
    name: str = "full_view_guess"
    mode: str | None = None  # the benchmark's default mode
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def begin(self, obs: dict[str, Any], info: dict[str, Any], answer_kind: str) -> None:
        self.question = obs["text"]
        self.size = tuple(info["frame"]["model_size"])
        self.answer_kind = answer_kind
        self.turn = 0

    def _point(self) -> tuple[int, int]:
        return int(self.rng.integers(0, self.size[0])), int(self.rng.integers(0, self.size[1]))

    def _answer(self) -> str:
        x, y = self._point()
        guess = guess_answer(self.question, self.answer_kind, self.size, self.rng)
        return f"<think>\nI look at this region ({x}, {y}) and pick an answer.\n</think>\n<answer> {guess} </answer>"

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        self.turn += 1
        if "assistant_prefix" in info:  # forced final answer: continue after the prefix
            return (
                " "
                + guess_answer(self.question, self.answer_kind, self.size, self.rng)
                + " </answer>"
            )
        return self._answer()


@dataclass
class RandomZoom(FullViewGuess):
    """Zoom at 1–`max_zooms` random points (multi-turn), then guess."""

    name: str = "random_zoom"
    mode: str | None = "multi_turn"
    max_zooms: int = 3

    def begin(self, obs: dict[str, Any], info: dict[str, Any], answer_kind: str) -> None:
        super().begin(obs, info, answer_kind)
        self.zooms = int(self.rng.integers(1, self.max_zooms + 1))

    def act(self, obs: dict[str, Any], info: dict[str, Any]) -> str:
        if "assistant_prefix" in info or self.turn >= self.zooms:
            return super().act(obs, info)
        self.turn += 1
        x, y = self._point()
        return f"<think>\nZoom in on this region ({x}, {y}).\n</think>\n" + format_tool_call(x, y)


BASELINES = {"full_view_guess": FullViewGuess, "random_zoom": RandomZoom}

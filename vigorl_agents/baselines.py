"""Honest chance-level baselines, as Policies: the floors a model must beat.

They read only what a model sees (the question text and the image size in the conversation),
never the ground truth. `FullViewGuess` answers at once with a random option / point / action;
`RandomZoom` first zooms at random points (multi-turn mode), then guesses the same way. Their
text follows the protocol exactly, so they earn full format credit and their accuracy is chance.
Randomness comes from each request's seed, so runs are reproducible however requests are batched.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from vigorl_agents.policy import Completion, Conversation, RulePolicy, SamplingParams
from vigorl_env.protocol import format_tool_call

_OPTION = re.compile(r"^[A-Z]\.\s+(.+?)\s*$", re.MULTILINE)
_WEB_ACTIONS = ("click", "type", "scroll", "go_back", "stop")


def options_in(question: str) -> list[str]:
    """The `A. …` option lines of a question (docs/data.md#question-text), in order."""
    return _OPTION.findall(question)


def guess_answer(
    question: str, answer_kind: str, size: tuple[int, int], rng: np.random.Generator
) -> str:
    """A uniformly random answer of the right kind."""
    w, h = size
    if answer_kind == "point_in_box":
        return f"({int(rng.integers(0, w))}, {int(rng.integers(0, h))})"
    if answer_kind == "web_action":
        verb = _WEB_ACTIONS[int(rng.integers(0, len(_WEB_ACTIONS)))]
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
class FullViewGuess(RulePolicy):
    """Answer at full view: one grounded step at a random point, then a random answer."""

    answer_kind: str
    name: str = "full_view_guess"
    mode: str | None = None  # the benchmark's default mode

    def _context(self, conv: Conversation) -> tuple[str, tuple[int, int], int]:
        user = next(m for m in conv.messages if m.role == "user")
        img = user.images[0]
        size = (
            img.size
            if hasattr(img, "size") and not isinstance(img, np.ndarray)
            else (img.shape[1], img.shape[0])
        )
        turns = sum(m.role == "assistant" for m in conv.messages)
        return user.text, size, turns

    def _rng(self, conv: Conversation, params: SamplingParams) -> np.random.Generator:
        question, size, turns = self._context(conv)
        key = f"{params.seed}:{question}:{size}:{turns}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))

    def act(self, conv: Conversation, rng: np.random.Generator) -> Completion:
        question, size, _ = self._context(conv)
        guess = guess_answer(question, self.answer_kind, size, rng)
        if conv.assistant_prefix:  # forced final answer: continue after the prefix
            return Completion(f" {guess} </answer>", "stop", "</answer>")
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        text = f"<think>\nI look at this region ({x}, {y}) and pick an answer.\n</think>\n<answer> {guess} </answer>"
        return Completion(text, "stop", "</answer>")

    def complete(self, conv: Conversation, params: SamplingParams) -> list[Completion]:
        rng = self._rng(conv, params)
        return [self.act(conv, rng) for _ in range(params.n)]


@dataclass
class RandomZoom(FullViewGuess):
    """Zoom at 1–`max_zooms` random points (multi-turn), then guess."""

    name: str = "random_zoom"
    mode: str | None = "multi_turn"
    max_zooms: int = 3

    def act(self, conv: Conversation, rng: np.random.Generator) -> Completion:
        question, size, turns = self._context(conv)
        digest = hashlib.sha256(f"{question}:{size}".encode()).digest()
        zooms = 1 + digest[0] % self.max_zooms
        if conv.assistant_prefix or turns >= zooms:
            return super().act(conv, rng)
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        text = f"<think>\nZoom in on this region ({x}, {y}).\n</think>\n" + format_tool_call(x, y)
        return Completion(text, "stop", "</tool_call>")


BASELINES = {"full_view_guess": FullViewGuess, "random_zoom": RandomZoom}

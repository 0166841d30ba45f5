"""Parsing one model turn into a web action (docs/web.md#actions).

The grammar is the web-action answer of docs/rewards.md#accuracy-by-answer-kind: `click [id]`,
`type [id] [content]`, `scroll [down]` / `scroll [up]`, `go_back`, `stop [answer]`, inside the
turn's first `<answer>` block. VisualWebArena's optional `[press_enter_after=0|1]` suffix of
`type` is accepted (default 1: Enter is pressed after typing, as the system prompt says). The verb
is case-insensitive; the typed content keeps its case. Anything else is not an action (the env
turns it into a no-op with a flag, never an exception).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vigorl_env.protocol import extract_answer

_CLICK = re.compile(r"click\s*\[\s*(\d{1,9})\s*\]\s*", re.IGNORECASE | re.ASCII)
_TYPE = re.compile(
    r"type\s*\[\s*(\d{1,9})\s*\]\s*\[(.*?)\]\s*(?:\[\s*press_enter_after\s*=\s*([01])\s*\]\s*)?",
    re.IGNORECASE | re.DOTALL | re.ASCII,
)
_TYPE_GREEDY = re.compile(
    r"type\s*\[\s*(\d{1,9})\s*\]\s*\[(.*)\]\s*", re.IGNORECASE | re.DOTALL | re.ASCII
)
_SCROLL = re.compile(r"scroll\s*\[\s*(up|down)\s*\]\s*", re.IGNORECASE | re.ASCII)
_GO_BACK = re.compile(r"go_back\s*", re.IGNORECASE | re.ASCII)
_STOP = re.compile(r"stop\s*(?:\[(.*)\])?\s*", re.IGNORECASE | re.DOTALL | re.ASCII)


@dataclass(frozen=True)
class WebAction:
    """A parsed action; `error` is set (and the rest is None) when the text is not one."""

    verb: str | None
    element: int | None = None
    content: str | None = None
    press_enter: bool = True
    direction: str | None = None
    error: str | None = None

    def to_info(self) -> dict[str, object]:
        """`info["web_action"]` of a step."""
        return {
            "verb": self.verb,
            "element": self.element,
            "content": self.content,
            "direction": self.direction,
            "error": self.error,
        }


def parse_answer(answer: str) -> WebAction:
    """The action of a bare answer string (what is inside `<answer>`)."""
    a = answer.strip().strip("`").strip()
    if m := _CLICK.fullmatch(a):
        return WebAction("click", element=int(m.group(1)))
    if m := _TYPE.fullmatch(a):
        enter = m.group(3) != "0"
        return WebAction("type", element=int(m.group(1)), content=m.group(2), press_enter=enter)
    if m := _TYPE_GREEDY.fullmatch(a):  # content holding brackets: up to the last ']'
        return WebAction("type", element=int(m.group(1)), content=m.group(2))
    if m := _SCROLL.fullmatch(a):
        return WebAction("scroll", direction=m.group(1).lower())
    if _GO_BACK.fullmatch(a):
        return WebAction("go_back")
    if m := _STOP.fullmatch(a):
        return WebAction("stop", content=(m.group(1) or "").strip())
    head = " ".join(a.split())[:40]
    return WebAction(None, error=f"not an action of the grammar: {head!r}")


def parse_turn(text: str, answer_extraction: str = "tags") -> WebAction:
    """The action of one model turn: its first `<answer>` block (or, with
    `answer_extraction="whole_output"`, the whole text)."""
    answer = text.strip() if answer_extraction == "whole_output" else extract_answer(text)
    if answer is None:
        return WebAction(None, error="no <answer> block")
    return parse_answer(answer)

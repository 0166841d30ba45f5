"""The one text grammar of vigorl: parse and write model turns (docs/protocol.md).

Everything that reads or writes the assistant's text protocol lives here, so that the env, the
rewards, MCTS, the SFT builders, GRPO and evaluation agree on one grammar:

* think blocks and the integer points named inside them (`(x, y)`),
* the `<tool_call>` block of the multi-turn crop/zoom protocol (docs/protocol.md#tool-call),
* the `<answer>` block and answer points,
* the single-block format F1 (docs/rewards.md#primitives) and the multi-turn tag walk (docs/rewards.md#multi-turn-score check 2),
* the exact observation text, forced prefix and stop strings (docs/protocol.md#observation-text, docs/protocol.md#forced-final-answer).

Two rules hold throughout and are why the code looks the way it does:

* **ASCII case-insensitive tags** (docs/protocol.md#parsing-rules-that-hold-everywhere): `<THINK>` is a think tag, but the Kelvin sign or the long
  s never stand in for `k`/`s`. Tags are found with ``re.IGNORECASE | re.ASCII`` literal patterns.
  Whitespace (``\\s``) keeps its Unicode meaning (docs/protocol.md#parsing-rules-that-hold-everywhere); digits are ASCII ``0-9`` only and an
  integer literal has at most `MAX_INT_DIGITS` digits (docs/protocol.md#parsing-rules-that-hold-everywhere).
* **Linear time** (docs/protocol.md#parsing-rules-that-hold-everywhere): model text is hostile (a 100,000-character action may repeat
  `<answer>` 12,500 times without a close tag). Lazy regexes such as ``<answer>(.*?)</answer>``
  are quadratic on such input, so spans are found with two forward searches (first open tag, then
  the first close tag after it), which gives exactly the lazy-regex match, and the remaining
  regexes only use character classes that cannot backtrack more than once over a run.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "BACKTRACK",
    "FORCED_PREFIX",
    "IMAGE_MARKER",
    "MAX_INT_DIGITS",
    "OBSERVATION_TEXT_DOT",
    "OBSERVATION_TEXT_NO_DOT",
    "STOP_STRINGS",
    "TOOL_NAME",
    "ToolCall",
    "Turn",
    "all_think_points",
    "answer_point",
    "canonicalize_action",
    "contains_answer_close",
    "ends_with_answer_close",
    "extract_answer",
    "find_all_tool_calls",
    "find_tool_call",
    "format_tool_call",
    "matches_single_turn_format",
    "multi_turn_tag_walk_ok",
    "observation_text",
    "parse_tool_call_body",
    "parse_turn",
    "think_block",
    "think_points",
]

# --------------------------------------------------------------------------- constants (interface)

FORCED_PREFIX = (
    "<think> Based on all the information I've gathered, I'll now provide my final answer. "
    "</think>\n<answer>"
)
"""The assistant prefix forced once the image budget is spent; the next action starts with it
(docs/protocol.md#forced-final-answer)."""

BACKTRACK = "Wait, this seems off. Let's try something else."
"""The backtrack sentence (own line) between a failed and a fresh attempt in linearized chains
(docs/protocol.md#think-steps-and-points)."""

TOOL_NAME = "search_coordinate"
"""The tool name vigorl writes (docs/protocol.md#tool-call); parsing accepts any string name."""

STOP_STRINGS: tuple[str, ...] = ("</tool_call>", "</answer>", "<|im_end|>")
"""Generation stop strings, kept in the output (docs/protocol.md#limits-and-stop-strings)."""

IMAGE_MARKER = "<image>"
"""Where an image goes in a user turn: exactly one in a question, one per observation. The one
definition; every reader and writer of chat text (env, loaders, SFT, policies) imports it."""

OBSERVATION_TEXT_NO_DOT = (
    "<observation>\nHere is the crop of the image centered on the coordinate:\n"
    f"{IMAGE_MARKER}</observation>"
)
OBSERVATION_TEXT_DOT = (
    "<observation>\nHere is the crop of the image centered on the coordinate, with a red dot at the "
    f"coordinate location:\n{IMAGE_MARKER}</observation>"
)

MAX_INT_DIGITS = 6
"""Longest integer literal (leading zeros count, sign does not) in a point or coordinate
(docs/protocol.md#parsing-rules-that-hold-everywhere)."""

_END_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")

# --------------------------------------------------------------------------- tag search


def _tag(text: str) -> re.Pattern[str]:
    return re.compile(re.escape(text), re.IGNORECASE | re.ASCII)


_THINK_OPEN = _tag("<think>")
_THINK_CLOSE = _tag("</think>")
_ANSWER_OPEN = _tag("<answer>")
_ANSWER_CLOSE = _tag("</answer>")
_TOOL_OPEN = _tag("<tool_call>")
_TOOL_CLOSE = _tag("</tool_call>")

# The multi-turn tag walk alphabet (docs/rewards.md#multi-turn-score check 2); other text, `<image>` included, is ignored.
_WALK_TAG = re.compile(r"<(/?)(tool_call|observation|think|answer)>", re.IGNORECASE | re.ASCII)

_WS = re.compile(
    r"\s*"
)  # Unicode whitespace run (docs/protocol.md#parsing-rules-that-hold-everywhere)

# Think-step point: ASCII digits, the 6-digit cap is applied after matching (a longer literal is
# "no point"; the match cannot contain another `(`, so filtering afterwards is equivalent).
_POINT = re.compile(r"\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)")
_ANSWER_POINT = re.compile(r"\(\s*([+-]?)([0-9]+)\s*,\s*([+-]?)([0-9]+)\s*\)")


def _find(pattern: re.Pattern[str], text: str, pos: int = 0) -> int:
    m = pattern.search(text, pos)
    return -1 if m is None else m.start()


def _first_span(
    text: str, open_re: re.Pattern[str], close_re: re.Pattern[str], pos: int = 0
) -> tuple[int, int, int] | None:
    """The first `open(.*?)close` match at or after `pos` (DOTALL): (content_start, content_end, end).

    Equal to the lazy regex: the leftmost open tag that has a close tag after it is the first open
    tag (if the first one has none, no later one has), and the lazy group stops at the first close.
    Linear: two forward scans.
    """
    m = open_re.search(text, pos)
    if m is None:
        return None
    c = close_re.search(text, m.end())
    if c is None:
        return None
    return m.end(), c.start(), c.end()


def _spans(
    text: str, open_re: re.Pattern[str], close_re: re.Pattern[str]
) -> Iterator[tuple[int, int]]:
    """All non-overlapping `open(.*?)close` matches in order (like `re.finditer`), linear."""
    pos = 0
    while True:
        span = _first_span(text, open_re, close_re, pos)
        if span is None:
            return
        yield span[0], span[1]
        pos = span[2]


# --------------------------------------------------------------------------- observation / actions


def observation_text(draw_dot: bool) -> str:
    """The user turn that carries a crop (docs/protocol.md#observation-text), identical in SFT, RL and evaluation."""
    return OBSERVATION_TEXT_DOT if draw_dot else OBSERVATION_TEXT_NO_DOT


def _as_coordinate(v: object) -> int:
    if isinstance(v, bool):
        raise TypeError(f"coordinate must be an integer, not bool ({v!r})")
    i = operator.index(v)  # accepts numpy integers, rejects floats
    if len(str(abs(i))) > MAX_INT_DIGITS:
        raise ValueError(
            f"coordinate {i} has more than {MAX_INT_DIGITS} digits; it would not parse"
        )
    return int(i)


def format_tool_call(x: int, y: int) -> str:
    """The tool-call block (docs/protocol.md#tool-call) exactly as vigorl writes it (SFT targets, demos, tests)."""
    body = json.dumps(
        {"name": TOOL_NAME, "arguments": {"coordinate": [_as_coordinate(x), _as_coordinate(y)]}}
    )
    return f"<tool_call>\n{body}\n</tool_call>"


def canonicalize_action(action: object) -> str:
    """Canonical action text (docs/envs.md#step): `str` as is, `bytes` decoded (UTF-8, replacement), else TypeError.

    Then trailing whitespace is removed and one trailing `<|im_end|>` or `<|endoftext|>` (a stop
    token some backends leave in the text) is dropped. Nothing is stripped after that token, as
    written in the spec. Prepending a pending forced prefix is the env's job.
    """
    if isinstance(action, str):
        text = action
    elif isinstance(action, bytes):
        text = action.decode("utf-8", errors="replace")
    else:
        raise TypeError(f"action must be str or bytes, not {type(action).__name__}")
    text = text.rstrip()
    for token in _END_TOKENS:
        if text.endswith(token):
            return text[: -len(token)]
    return text


# --------------------------------------------------------------------------- tool calls


@dataclass(frozen=True)
class ToolCall:
    """One parsed `<tool_call>` span (docs/protocol.md#tool-call). `coordinate` is set iff `valid`; `error` says why not."""

    valid: bool
    coordinate: tuple[int, int] | None
    error: str | None


class _LongInt(str):
    """An integer literal with more than MAX_INT_DIGITS digits: never a valid coordinate.

    Kept as text so that huge literals elsewhere in the body neither cost int() conversion time nor
    trip Python's int-string length limit (a body is judged only by its coordinate).
    """


class _FloatLiteral(str):
    """A JSON number with a fraction or exponent: never a valid coordinate (kept as text)."""


def _parse_int(literal: str) -> int | _LongInt:
    digits = len(literal) - (literal[0] == "-")
    return int(literal) if digits <= MAX_INT_DIGITS else _LongInt(literal)


_DECODER = json.JSONDecoder(parse_int=_parse_int, parse_float=_FloatLiteral)


def _invalid(error: str) -> ToolCall:
    return ToolCall(valid=False, coordinate=None, error=error)


def parse_tool_call_body(body: str) -> ToolCall:
    """Judge a tool-call body (the text between the tags); see docs/protocol.md#tool-call.

    The stripped body must be a JSON object with a string `name` (its value is not checked: the
    paper's `crop` and vigorl's `search_coordinate` both pass) and an `arguments.coordinate` array
    of exactly two JSON integers of at most 6 digits; floats, strings and booleans are invalid;
    other keys are ignored; duplicate keys: the last one wins (json's default). The env (which
    ends the episode on an invalid call) and the multi-turn format check both judge bodies here.
    """
    try:
        obj = _DECODER.decode(body.strip())
    except RecursionError:
        return _invalid("tool-call body is nested too deeply to be a tool call")
    except ValueError as e:  # json.JSONDecodeError
        return _invalid(f"tool-call body is not valid JSON: {str(e)[:120]}")
    if not isinstance(obj, dict):
        return _invalid(f"tool-call body is a JSON {type(obj).__name__}, not an object")
    if not isinstance(obj.get("name"), str):
        return _invalid('tool-call body has no "name" string')
    args = obj.get("arguments")
    if not isinstance(args, dict):
        return _invalid('tool-call body has no "arguments" object')
    coord = args.get("coordinate")
    if not isinstance(coord, list):
        return _invalid('"arguments.coordinate" is missing or not an array')
    if len(coord) != 2:
        return _invalid(f'"arguments.coordinate" has {len(coord)} elements, not 2')
    for v in coord:
        if isinstance(v, _LongInt):
            return _invalid(f"coordinate literal {v[:20]!r} has more than {MAX_INT_DIGITS} digits")
        if isinstance(v, _FloatLiteral):
            return _invalid(f"coordinate {v[:20]!r} is not an integer")
        if type(v) is not int:  # bool, str, null, arrays, objects
            return _invalid(f"coordinate {v!r:.40} is a JSON {type(v).__name__}, not an integer")
    return ToolCall(valid=True, coordinate=(coord[0], coord[1]), error=None)


def find_tool_call(text: str) -> ToolCall | None:
    """The FIRST `<tool_call>`…`</tool_call>` span of `text`, judged; None iff there is none."""
    span = _first_span(text, _TOOL_OPEN, _TOOL_CLOSE)
    if span is None:
        return None
    return parse_tool_call_body(text[span[0] : span[1]])


def find_all_tool_calls(text: str) -> list[ToolCall]:
    """Every non-overlapping tool-call span in order, judged (multi-turn transcripts, docs/rewards.md#multi-turn-score)."""
    return [parse_tool_call_body(text[a:b]) for a, b in _spans(text, _TOOL_OPEN, _TOOL_CLOSE)]


# --------------------------------------------------------------------------- think / answer


def think_block(text: str) -> str | None:
    """Content of the first `<think>…</think>` block (DOTALL), or None."""
    span = _first_span(text, _THINK_OPEN, _THINK_CLOSE)
    return None if span is None else text[span[0] : span[1]]


def _points_in(s: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for m in _POINT.finditer(s):
        a, b = m.group(1), m.group(2)
        if len(a) <= MAX_INT_DIGITS and len(b) <= MAX_INT_DIGITS:
            out.append((int(a), int(b)))
    return out


def think_points(text: str) -> list[tuple[int, int]]:
    """Integer points `(x, y)` named in the FIRST think block (docs/rewards.md#primitives); `has_point` = bool of this."""
    block = think_block(text)
    return [] if block is None else _points_in(block)


def all_think_points(text: str) -> list[tuple[int, int]]:
    """Points of every think block of a transcript, in order (for docs/rewards.md#grounding-precision)."""
    out: list[tuple[int, int]] = []
    for a, b in _spans(text, _THINK_OPEN, _THINK_CLOSE):
        out.extend(_points_in(text[a:b]))
    return out


def extract_answer(text: str) -> str | None:
    """Content of the first `<answer>…</answer>` block (docs/rewards.md#primitives: DOTALL, tags case-insensitive), or None."""
    span = _first_span(text, _ANSWER_OPEN, _ANSWER_CLOSE)
    return None if span is None else text[span[0] : span[1]]


def contains_answer_close(text: str) -> bool:
    """True iff `</answer>` occurs (case-insensitive): the multi-turn 'answered' rule (docs/envs.md#step)."""
    return _ANSWER_CLOSE.search(text) is not None


def ends_with_answer_close(text: str) -> bool:
    """Multi-turn format check 1 (docs/rewards.md#multi-turn-score): `text.strip()` ends with `</answer>` (case-insensitive)."""
    t = text.rstrip()
    return len(t) >= 9 and _ANSWER_CLOSE.fullmatch(t, len(t) - 9) is not None


def answer_point(answer: str) -> tuple[int, int] | None:
    """`answer.strip()` is exactly `(x, y)` with signed integers of ≤ 6 ASCII digits (docs/rewards.md#primitives, docs/protocol.md#parsing-rules-that-hold-everywhere)."""
    m = _ANSWER_POINT.fullmatch(answer.strip())
    if m is None:
        return None
    sx, dx, sy, dy = m.groups()
    if len(dx) > MAX_INT_DIGITS or len(dy) > MAX_INT_DIGITS:
        return None
    return int(sx + dx), int(sy + dy)


# --------------------------------------------------------------------------- format grammars


def matches_single_turn_format(text: str) -> bool:
    """F1 (docs/rewards.md#primitives, docs/protocol.md#parsing-rules-that-hold-everywhere): `text.rstrip()` fully matches `<think>.*?</think>\\s*<answer>.*?</answer>`.

    DOTALL, tags ASCII case-insensitive, nothing before `<think>`. Equivalent linear test: the text
    starts with `<think>`, ends with `</answer>`, and some `</think>` after the opening tag is
    followed by a whitespace run and an `<answer>` tag that ends before the final `</answer>`.
    Whitespace runs after distinct `</think>` tags are disjoint, so the scan is linear.
    """
    t = text.rstrip()
    n = len(t)
    if _THINK_OPEN.match(t) is None or not ends_with_answer_close(t):
        return False
    final_close = n - 9
    pos = 7
    while True:
        m = _THINK_CLOSE.search(t, pos)
        if m is None:
            return False
        r = _WS.match(t, m.end()).end()
        if r + 8 <= final_close and _ANSWER_OPEN.match(t, r) is not None:
            return True
        pos = m.end()


# States of the multi-turn tag walk (docs/rewards.md#multi-turn-score check 2).
_EXPECT_THINK, _IN_THINK, _AFTER_THINK, _IN_TOOL, _EXPECT_OBS, _IN_OBS, _IN_ANSWER, _END = range(8)
_WALK: dict[tuple[int, str], int] = {
    (_EXPECT_THINK, "think"): _IN_THINK,
    (_IN_THINK, "/think"): _AFTER_THINK,
    (_AFTER_THINK, "tool_call"): _IN_TOOL,
    (_AFTER_THINK, "answer"): _IN_ANSWER,
    (_IN_TOOL, "/tool_call"): _EXPECT_OBS,
    (_EXPECT_OBS, "observation"): _IN_OBS,
    (_IN_OBS, "/observation"): _EXPECT_THINK,
    (_IN_ANSWER, "/answer"): _END,
}


def multi_turn_tag_walk_ok(text: str) -> bool:
    """Multi-turn format check 2 (docs/rewards.md#multi-turn-score): the tags `think`, `tool_call`, `observation`, `answer` (open/close, ASCII
    case-insensitive) form `(think tool_call observation)* think answer` exactly; other text is
    ignored. Any other tag order, any tag after the answer, or not reaching the answer fails."""
    state = _EXPECT_THINK
    for m in _WALK_TAG.finditer(text):
        key = (state, m.group(1) + m.group(2).lower())
        nxt = _WALK.get(key)
        if nxt is None:
            return False
        state = nxt
    return state == _END


# --------------------------------------------------------------------------- whole turn


@dataclass(frozen=True)
class Turn:
    """One assistant turn, parsed: first think block, its points, first tool call, first answer."""

    think: str | None
    points: tuple[tuple[int, int], ...]
    tool_call: ToolCall | None
    answer: str | None


def parse_turn(text: str) -> Turn:
    """Parse one assistant generation (any string; never raises on model text)."""
    think = think_block(text)
    return Turn(
        think=think,
        points=tuple(_points_in(think)) if think is not None else (),
        tool_call=find_tool_call(text),
        answer=extract_answer(text),
    )

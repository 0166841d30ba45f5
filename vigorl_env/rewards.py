"""Rule-based rewards and accuracy: pure functions of (text, ground truth, config) (docs/rewards.md, docs/rewards.md#lenient-judge).

One implementation is shared by the env, MCTS (`env.accuracy_of`), GRPO and evaluation, so the
reward that trains a policy is the metric that evaluates it. Ground truth is always in the model
frame (docs/geometry.md#model-frame). All text parsing goes through `vigorl_env.protocol` (one grammar) and is linear in the
length of the text (docs/protocol.md#parsing-rules-that-hold-everywhere).

* `answer_accuracy` scores a bare answer string; `accuracy` extracts the answer from a response or
  transcript first (`answer_extraction="tags"`, or `"whole_output"` for base models, docs/evaluation.md#protocol).
* `single_turn_reward` / `multi_turn_reward` return the `reward_components` dicts
  (docs/rewards.md#components).
* `accuracy_fn="lenient_upstream"` is the upstream-compatible substring judge (docs/rewards.md#lenient-judge), kept only to
  compare with published numbers.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from vigorl_env.data.base import ANSWER_KINDS, AnswerKind
from vigorl_env.protocol import (
    answer_point,
    ends_with_answer_close,
    extract_answer,
    find_all_tool_calls,
    matches_single_turn_format,
    multi_turn_tag_walk_ok,
    think_points,
)

__all__ = [
    "ACCURACY_FNS",
    "ANSWER_EXTRACTIONS",
    "DEFAULT_MULTI_TURN_WEIGHTS",
    "DEFAULT_SINGLE_TURN_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "LENIENT_POINT_MAX_CHARS",
    "MODES",
    "REWARD_RANGES",
    "VARIANTS",
    "GroundTruth",
    "accuracy",
    "answer_accuracy",
    "count_unique_coords",
    "format_multi_turn",
    "format_single_turn",
    "lenient_answer_point",
    "multi_turn_reward",
    "norm",
    "reward_range",
    "single_turn_reward",
    "strip_letter",
]

# The one declaration of these choices and defaults; `vigorl_env.config` validates make kwargs
# against them (docs/envs.md#make-kwargs, docs/rewards.md).
MODES: tuple[str, ...] = ("single_turn", "multi_turn")
VARIANTS: tuple[str, ...] = ("grounded", "vanilla")
ACCURACY_FNS: tuple[str, ...] = ("normalized", "lenient_upstream")
ANSWER_EXTRACTIONS: tuple[str, ...] = ("tags", "whole_output")
DEFAULT_SINGLE_TURN_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"accuracy": 0.5, "format": 0.5}
)
DEFAULT_MULTI_TURN_WEIGHTS: Mapping[str, float] = MappingProxyType({"accuracy": 0.6, "format": 0.4})
DEFAULT_WEIGHTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {"single_turn": DEFAULT_SINGLE_TURN_WEIGHTS, "multi_turn": DEFAULT_MULTI_TURN_WEIGHTS}
)


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class GroundTruth:
    """The answer to score against. `box` (x1, y1, x2, y2) is in the MODEL frame (floats, inclusive)
    and is required for `point_in_box`; `answer` is the GT string (docs/data.md#record-schemas) for every kind."""

    answer: str
    kind: AnswerKind
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ANSWER_KINDS:
            raise ValueError(f"unknown answer kind {self.kind!r}; expected one of {ANSWER_KINDS}")
        if not isinstance(self.answer, str):
            raise TypeError(f"GroundTruth.answer must be a str, not {type(self.answer).__name__}")
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise ValueError(f"GroundTruth.box must be 4 finite numbers, got {self.box!r}")
            if box[0] > box[2] or box[1] > box[3]:
                raise ValueError(f"GroundTruth.box must have x1 <= x2 and y1 <= y2, got {box}")
            object.__setattr__(self, "box", box)
        elif self.kind == "point_in_box":
            raise ValueError("GroundTruth of kind point_in_box needs a box (model frame)")


# --------------------------------------------------------------------------- primitives (docs/rewards.md#primitives)


def norm(s: str) -> str:
    """Strip, collapse every Unicode whitespace run to one space, lower-case (`str.lower`)."""
    return " ".join(s.split()).lower()


_LETTER = re.compile(r"[A-Za-z][.)]\s*(.*)", re.DOTALL)


def strip_letter(a: str) -> str:
    """Drop an option letter: `a.strip()` fully matching `[A-Za-z][.)]\\s*(.*)` gives group 1, else `a`."""
    m = _LETTER.fullmatch(a.strip())
    return a if m is None else m.group(1)


# --------------------------------------------------------------------------- kind accuracies (docs/rewards.md#accuracy-by-answer-kind)


def _option_text(answer: str, gt: str) -> float:
    g = norm(gt)
    return float(g == norm(answer) or g == norm(strip_letter(answer)))


def _in_box(
    point: tuple[float, float] | None, box: tuple[float, float, float, float] | None
) -> float:
    if point is None or box is None:
        return 0.0
    x, y = point
    x1, y1, x2, y2 = box
    return float(x1 <= x <= x2 and y1 <= y <= y2)


_VERB = re.compile(r"[a-z_]+")
_CLICK_ID = re.compile(r"\[([0-9]+)\]")
_BACKTICK_SPACE = " `"


def _verb(s: str) -> str:
    m = _VERB.match(s)
    return "" if m is None else m.group(0)


def _first_bracket(s: str) -> str | None:
    """Group 1 of the first `\\[(.*?)\\]`, stripped (docs/rewards.md#accuracy-by-answer-kind). Linear: if the first `[` has no
    `]` after it, no later `[` has one either."""
    i = s.find("[")
    if i < 0:
        return None
    j = s.find("]", i + 1)
    return None if j < 0 else s[i + 1 : j].strip()


def _click_id(s: str) -> str | None:
    """First `[digits]`, as a canonical integer string (`[01234]` = `[1234]`, docs/rewards.md#accuracy-by-answer-kind) without int()."""
    m = _CLICK_ID.search(s)
    return None if m is None else (m.group(1).lstrip("0") or "0")


def _web_action(answer: str, gt: str) -> float:
    """web_action accuracy (docs/rewards.md#accuracy-by-answer-kind): the leading verb decides the
    action type."""
    p = norm(answer).strip(_BACKTICK_SPACE)
    g = norm(gt).strip(_BACKTICK_SPACE)
    vp, vg = _verb(p), _verb(g)
    if vp in ("go_back", "stop"):
        return float(vg == vp)
    if vp == "scroll":
        bp, bg = _first_bracket(p), _first_bracket(g)
        return float(vg == "scroll" and bp is not None and bp == bg and bp in ("up", "down"))
    if vp == "click":
        ip, ig = _click_id(p), _click_id(g)
        if ip is None or ig is None:
            return 0.0
        return 0.5 * (vg == "click") + 0.5 * (ip == ig)
    if vp == "type":
        bp, bg = _first_bracket(p), _first_bracket(g)
        if bp is None or bg is None:
            return 0.0
        return 0.5 * (vg == "type") + 0.5 * (bp == bg)
    return 0.0


# Lenient judge (docs/rewards.md#lenient-judge): characters deleted on both sides (plus the space).
_LENIENT_DELETE = str.maketrans("", "", " .?!,;:'\"()[]{}<>/\\|=+-_*&^%$#@~`")


def _lenient_norm(s: str) -> str:
    return s.strip().translate(_LENIENT_DELETE).lower()


def _lenient_web_action(answer: str, gt: str) -> float:
    """Lenient web_action (docs/rewards.md#lenient-judge): substring action type in the order go_back, stop, scroll, click, type; no partial credit."""
    p = answer.strip().lower()
    g = gt.strip().lower()
    for word in ("go_back", "stop", "scroll"):
        if word in p:
            return float(word in g)
    if "click" in p:
        tokens = p.split(" ")
        return float(len(tokens) == 2 and "click" in g and tokens[1] in g)
    if "type" in p:
        tokens = p.split(" ")
        return float(len(tokens) == 3 and "type" in g and tokens[1] in g)
    return 0.0


LENIENT_POINT_MAX_CHARS = 200
"""Longest answer (after strip) the lenient judge hands to `ast.literal_eval` (bounded work)."""


def lenient_answer_point(answer: str) -> tuple[float, float] | None:
    """The point upstream's published evaluation read from an answer (docs/rewards.md#lenient-judge).

    Upstream parsed answers with Python's `ast.literal_eval`, so `[x, y]`, `x, y`, `(x, y,)` and
    float coordinates counted. Reproduced here with `ast.literal_eval` (never `eval`) on the
    stripped answer of at most `LENIENT_POINT_MAX_CHARS` characters: a tuple or list of exactly
    two int/float numbers (bool excluded) is the point; anything else (or anything that does not
    parse) is no point. Only the lenient judge uses this; the RL reward keeps `answer_point`.
    """
    text = answer.strip()
    if not text or len(text) > LENIENT_POINT_MAX_CHARS:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return float(value[0]), float(value[1])


def _check_accuracy_fn(accuracy_fn: str) -> None:
    if accuracy_fn not in ACCURACY_FNS:
        raise ValueError(f"unknown accuracy_fn {accuracy_fn!r}; expected one of {ACCURACY_FNS}")


def answer_accuracy(answer: str | None, gt: GroundTruth, accuracy_fn: str = "normalized") -> float:
    """Accuracy in [0, 1] of a bare answer string (docs/rewards.md#accuracy-by-answer-kind; docs/rewards.md#lenient-judge for `lenient_upstream`).

    Used by `env.accuracy_of` (MCTS) and by `accuracy`. With `normalized`, a missing or empty
    (after strip) answer scores 0 for every kind. The lenient judge has no such rule (an empty
    normalized GT matches anything, as upstream) but a missing answer (None) still scores 0.
    """
    _check_accuracy_fn(accuracy_fn)
    if answer is None:
        return 0.0
    if accuracy_fn == "lenient_upstream":
        if gt.kind == "option_text":
            return float(_lenient_norm(gt.answer.lower()) in _lenient_norm(answer))
        if gt.kind == "point_in_box":
            return _in_box(lenient_answer_point(answer), gt.box)
        return _lenient_web_action(answer, gt.answer)
    if not answer.strip():
        return 0.0
    if gt.kind == "option_text":
        return _option_text(answer, gt.answer)
    if gt.kind == "point_in_box":
        return _in_box(answer_point(answer), gt.box)
    return _web_action(answer, gt.answer)


def _answer_of(text: str, accuracy_fn: str, answer_extraction: str) -> str | None:
    if answer_extraction not in ANSWER_EXTRACTIONS:
        raise ValueError(
            f"unknown answer_extraction {answer_extraction!r}; expected one of {ANSWER_EXTRACTIONS}"
        )
    if answer_extraction == "whole_output":
        return text.strip()
    answer = extract_answer(text)
    if answer is None and accuracy_fn == "lenient_upstream":
        return text  # docs/rewards.md#lenient-judge: no answer block → the whole output is judged
    return answer


def accuracy(
    text: str,
    gt: GroundTruth,
    *,
    accuracy_fn: str = "normalized",
    answer_extraction: str = "tags",
) -> float:
    """Accuracy of a full response or transcript: extract the answer, then `answer_accuracy`.

    `answer_extraction="tags"`: the first `<answer>` block (docs/rewards.md#primitives); `"whole_output"`: the whole
    text, stripped (base-model evaluation, docs/evaluation.md#protocol).
    """
    _check_accuracy_fn(accuracy_fn)
    return answer_accuracy(_answer_of(text, accuracy_fn, answer_extraction), gt, accuracy_fn)


# --------------------------------------------------------------------------- format scores


def _kind_check(answer: str | None, kind: str) -> bool:
    """The single-turn kind check (docs/rewards.md#single-turn-score); web_action needs a non-empty
    answer too."""
    if answer is None:
        return False
    if kind == "point_in_box":
        return answer_point(answer) is not None
    return bool(answer.strip())


def format_single_turn(text: str, kind: str) -> int:
    """fmt = F1(text) ∧ kind check (docs/rewards.md#single-turn-score, docs/rewards.md#accuracy-by-answer-kind, docs/rewards.md#primitives): 1 or 0."""
    if kind not in ANSWER_KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {ANSWER_KINDS}")
    return int(matches_single_turn_format(text) and _kind_check(extract_answer(text), kind))


def count_unique_coords(coords: Iterable[tuple[int, int]], min_dist: float) -> int:
    """U of docs/rewards.md#multi-turn-score: coordinates kept greedily in order, one being kept iff its Euclidean distance to
    every kept one is ≥ `min_dist`.

    A grid of `min_dist` cells makes this linear in the number of coordinates (a hostile transcript
    can hold thousands of tool calls): a kept point closer than `min_dist` lies within one cell in
    each axis; ±2 cells are searched so that float rounding of the cell index cannot miss one, and a
    cell holds at most 4 kept points (they are pairwise ≥ `min_dist` apart).
    """
    if not min_dist >= 0:
        raise ValueError(f"diversity_min_dist must be >= 0, got {min_dist!r}")
    pts = list(coords)
    if min_dist == 0:
        return len(pts)
    if math.isinf(min_dist):
        return min(len(pts), 1)
    grid: dict[tuple[int, int], list[tuple[int, int]]] = {}
    kept = 0
    for x, y in pts:
        cx, cy = math.floor(x / min_dist), math.floor(y / min_dist)
        near = False
        for gx in range(cx - 2, cx + 3):
            for gy in range(cy - 2, cy + 3):
                for kx, ky in grid.get((gx, gy), ()):
                    if math.hypot(x - kx, y - ky) < min_dist:
                        near = True
                        break
                if near:
                    break
            if near:
                break
        if not near:
            grid.setdefault((cx, cy), []).append((x, y))
            kept += 1
    return kept


def format_multi_turn(
    transcript: str,
    kind: str,
    *,
    diversity_bonus: float = 0.2,
    diversity_min_dist: float = 10.0,
) -> tuple[float, int, int]:
    """(format_mt, U, num_tool_calls) of a transcript (docs/rewards.md#multi-turn-score).

    U and num_tool_calls count the valid tool calls of the transcript text (raw, unclamped
    coordinates) whatever the format score. format_mt is 0 unless: the stripped transcript ends with
    `</answer>`; the tag walk succeeds; every tool-call span is a valid call (docs/protocol.md#tool-call; the same test the
    env applies, docs/protocol.md#differences-from-upstream); the first answer is non-empty (and an answer point for
    point_in_box). Then format_mt = 1 + diversity_bonus·(U − 1) if U > 1, else 1.
    """
    if kind not in ANSWER_KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; expected one of {ANSWER_KINDS}")
    if not diversity_bonus >= 0:
        raise ValueError(f"diversity_bonus must be >= 0, got {diversity_bonus!r}")
    calls = find_all_tool_calls(transcript)
    coords = [c.coordinate for c in calls if c.valid and c.coordinate is not None]
    unique = count_unique_coords(coords, diversity_min_dist)
    ok = (
        ends_with_answer_close(transcript)
        and multi_turn_tag_walk_ok(transcript)
        and len(coords) == len(calls)
        and _kind_check(extract_answer(transcript), kind)
    )
    if not ok:
        return 0.0, unique, len(coords)
    fmt = 1.0 + diversity_bonus * (unique - 1) if unique > 1 else 1.0
    return fmt, unique, len(coords)


# --------------------------------------------------------------------------- components (docs/rewards.md#components)


def _weights(
    weights: Mapping[str, float] | None, default: Mapping[str, float]
) -> tuple[float, float]:
    if weights is None:
        weights = default
    if set(weights) != {"accuracy", "format"}:
        raise ValueError(
            f"reward weights need exactly the keys 'accuracy' and 'format', got {sorted(weights)}"
        )
    return float(weights["accuracy"]), float(weights["format"])


def single_turn_reward(
    text: str,
    gt: GroundTruth,
    *,
    variant: Literal["grounded", "vanilla"] = "grounded",
    weights: Mapping[str, float] | None = None,
    accuracy_fn: str = "normalized",
    answer_extraction: str = "tags",
) -> dict[str, float]:
    """Single-turn reward components (docs/rewards.md#single-turn-score).

    grounded: overall = w_acc·acc + w_fmt·(fmt·has_point), components overall, accuracy, format
    (= fmt·has_point), format_raw (fmt), has_point. vanilla: overall = w_acc·acc + w_fmt·fmt,
    components overall, accuracy, format. All values are floats.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    w_acc, w_fmt = _weights(weights, DEFAULT_SINGLE_TURN_WEIGHTS)
    acc = accuracy(text, gt, accuracy_fn=accuracy_fn, answer_extraction=answer_extraction)
    fmt = float(format_single_turn(text, gt.kind))
    if variant == "vanilla":
        return {"overall": w_acc * acc + w_fmt * fmt, "accuracy": acc, "format": fmt}
    has_point = float(bool(think_points(text)))
    fmt_g = fmt * has_point
    return {
        "overall": w_acc * acc + w_fmt * fmt_g,
        "accuracy": acc,
        "format": fmt_g,
        "format_raw": fmt,
        "has_point": has_point,
    }


def multi_turn_reward(
    transcript: str,
    gt: GroundTruth,
    *,
    weights: Mapping[str, float] | None = None,
    diversity_bonus: float = 0.2,
    diversity_min_dist: float = 10.0,
    accuracy_fn: str = "normalized",
    answer_extraction: str = "tags",
) -> dict[str, float | int]:
    """Multi-turn reward components (docs/rewards.md#multi-turn-score): overall = w_acc·acc + w_fmt·format_mt (max 1.24 with the
    defaults and 4 crops); `unique_coords` and `num_tool_calls` are ints."""
    w_acc, w_fmt = _weights(weights, DEFAULT_MULTI_TURN_WEIGHTS)
    acc = accuracy(transcript, gt, accuracy_fn=accuracy_fn, answer_extraction=answer_extraction)
    fmt, unique, n_calls = format_multi_turn(
        transcript, gt.kind, diversity_bonus=diversity_bonus, diversity_min_dist=diversity_min_dist
    )
    return {
        "overall": w_acc * acc + w_fmt * fmt,
        "accuracy": acc,
        "format": fmt,
        "unique_coords": unique,
        "num_tool_calls": n_calls,
    }


# --------------------------------------------------------------------------- ranges


def reward_range(
    mode: str,
    diversity_bonus: float = 0.2,
    max_tool_calls: int = 4,
    weights: Mapping[str, float] | None = None,
) -> tuple[float, float]:
    """(min, max) of `overall` for non-negative weights.

    single_turn: w_acc + w_fmt (1.0 by default). multi_turn: w_acc + w_fmt·(1 + bonus·(k − 1)) with
    k = max(1, max_tool_calls), the largest possible U; an env episode holds at most
    max_images − 1 = 4 crops, giving 0.6 + 0.4·1.6 = 1.24. Transcripts built outside the env can
    hold more tool calls: pass their count.
    """
    if mode == "single_turn":
        w_acc, w_fmt = _weights(weights, DEFAULT_SINGLE_TURN_WEIGHTS)
        return 0.0, w_acc + w_fmt
    if mode == "multi_turn":
        w_acc, w_fmt = _weights(weights, DEFAULT_MULTI_TURN_WEIGHTS)
        k = max(1, max_tool_calls)
        return 0.0, w_acc + w_fmt * (1.0 + diversity_bonus * (k - 1))
    raise ValueError(f"unknown mode {mode!r}; expected 'single_turn' or 'multi_turn'")


REWARD_RANGES: Mapping[str, tuple[float, float]] = {
    "single_turn": reward_range("single_turn"),
    "multi_turn": reward_range("multi_turn"),
}
"""Default-config (min, max) of `overall`: single_turn (0, 1.0), multi_turn (0, 1.24)."""

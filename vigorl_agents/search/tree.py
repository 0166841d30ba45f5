"""The search tree of grounded thought steps and its record form (docs/mcts.md#tree-record).

A node is one teacher generation (one thought step, or a final answer); the root holds the
question. Nodes serialize to the nested dicts of the tree files that linearization reads, with
`used_coords` as `[[x, y], ...]` and each rollout's fields as written by the search.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from vigorl_env import protocol

_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE | re.ASCII)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE | re.ASCII)
_THINK_TAG = re.compile(r"</?think>", re.IGNORECASE | re.ASCII)
_LETTER = re.compile(r"^[A-Z]\. ")


@dataclass(frozen=True)
class MCTSConfig:
    """Search parameters (docs/mcts.md#parameters; defaults: the paper's Table A4)."""

    n_simulations: int = 20
    max_depth: int = 10
    num_children_per_expand: int = 3
    n_rollouts_per_node: int = 2
    rollout_max_steps: int = 5
    exploration_c: float = 2.0
    expand_retries: int = 2
    coord_tolerance: float = 10.0
    sample_timeout_s: float = 3600.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    regex: str | None = None
    """Constrain every teacher call to this regular expression (vLLM structured outputs): for
    benchmarks and smoke runs with a tiny random model, so each call is a valid step."""
    k_min: int = 3
    k_max: int = 7
    """The suffix's K (at least K thoughts before the answer) is uniform in k_min..k_max."""

    def __post_init__(self) -> None:
        for name in (
            "n_simulations",
            "max_depth",
            "num_children_per_expand",
            "n_rollouts_per_node",
            "rollout_max_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.expand_retries < 0:
            raise ValueError(f"expand_retries must be >= 0, got {self.expand_retries}")
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError(f"need 1 <= k_min <= k_max, got {self.k_min}, {self.k_max}")


def is_terminal(text: str) -> bool:
    """A generation is terminal iff it contains `<answer>` (any ASCII case)."""
    return _ANSWER_OPEN.search(text) is not None


def terminal_answer(text: str) -> str | None:
    """The answer of a terminal generation: after the first `<answer>` up to the next `</answer>`
    (or the end), stripped, minus a leading `[A-Z]. `; None when there is no `<answer>`."""
    m = _ANSWER_OPEN.search(text)
    if m is None:
        return None
    rest = text[m.end() :]
    close = _ANSWER_CLOSE.search(rest)
    answer = (rest[: close.start()] if close else rest).strip()
    return _LETTER.sub("", answer, count=1)


def step_text(text: str) -> str:
    """A thought as it is shown to the teacher again: without `<think>`/`</think>`, stripped."""
    return _THINK_TAG.sub("", text).strip()


def is_parsable(text: str) -> bool:
    """A reply is a step iff it is terminal or holds a `<think>` block with non-empty content.

    Anything else (empty text, prose without tags, a bare point) is counted as unparsable: in an
    expansion it is discarded like a duplicate, in a rollout it ends the rollout with reward 0."""
    if is_terminal(text):
        return True
    block = protocol.think_block(text)
    return block is not None and block.strip() != ""


def points_of(text: str) -> list[tuple[int, int]]:
    """The think points of a generation (the first `<think>` block's `(x, y)` points)."""
    return list(protocol.think_points(text))


def same_point(a: tuple[float, float], b: tuple[float, float], tol: float) -> bool:
    """Two points are the same iff their Euclidean distance is below `tol`."""
    return math.hypot(a[0] - b[0], a[1] - b[1]) < tol


@dataclass
class Node:
    """One node of the search tree (docs/mcts.md#tree-record)."""

    thought_text: str
    depth: int
    parent: Node | None = None
    answer: str | None = None
    is_terminal: bool = False
    value: float = 0.0
    visit_count: int = 0
    rollouts: list[dict[str, Any]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)
    used_coords: list[tuple[int, int]] = field(default_factory=list)
    closed: bool = False
    expansion_failures: list[dict[str, Any]] = field(default_factory=list)

    def path_texts(self) -> list[str]:
        """Raw texts of the nodes below the root down to this one (root excluded), in order."""
        out: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node.thought_text)
            node = node.parent
        return out[::-1]

    def path(self) -> list[Node]:
        """Root ... self."""
        out: list[Node] = []
        node: Node | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "thought_text": self.thought_text,
            "answer": self.answer,
            "is_terminal": self.is_terminal,
            "value": self.value,
            "visit_count": self.visit_count,
            "depth": self.depth,
            "rollouts": [dict(r) for r in self.rollouts],
            "children": [c.to_dict() for c in self.children],
            "used_coords": [[int(x), int(y)] for x, y in self.used_coords],
            "closed": self.closed,
            "expansion_failures": [dict(f) for f in self.expansion_failures],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], parent: Node | None = None, depth: int = 0) -> Node:
        """A node from a tree record (ours or upstream's: missing fields take their defaults)."""
        node = cls(
            thought_text=str(d.get("thought_text", "")),
            depth=int(d.get("depth", depth)),
            parent=parent,
            answer=d.get("answer"),
            is_terminal=bool(d.get("is_terminal", False)),
            value=float(d.get("value", 0.0)),
            visit_count=int(d.get("visit_count", 0)),
            rollouts=[dict(r) for r in d.get("rollouts") or []],
            used_coords=[_coord(c) for c in d.get("used_coords") or []],
            closed=bool(d.get("closed", False)),
            expansion_failures=[dict(f) for f in d.get("expansion_failures") or []],
        )
        node.children = [cls.from_dict(c, node, depth + 1) for c in d.get("children") or []]
        return node


def _coord(c: Any) -> tuple[int, int]:
    """A used coordinate: `[x, y]` (ours) or an `"(x, y)"` string (upstream)."""
    if isinstance(c, str):
        m = re.search(r"(-?\d+)\s*,\s*(-?\d+)", c)
        if m is None:
            raise ValueError(f"not a coordinate: {c!r}")
        return int(m.group(1)), int(m.group(2))
    x, y = c
    return int(x), int(y)


def uct(child: Node, parent_visits: int, c: float) -> float:
    """UCB = Q + c·sqrt(ln(N_parent + 1) / (N_child + 1)) (plain UCT with +1 smoothing)."""
    return child.value + c * math.sqrt(math.log(parent_visits + 1) / (child.visit_count + 1))

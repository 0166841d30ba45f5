"""Monte Carlo tree search over grounded thought steps (docs/mcts.md#one-simulation).

One step is one teacher call: the teacher sees the model-frame image, the question and the thoughts
on the path so far, and writes one more grounded thought or a final answer. Values come only from
the env's accuracy function (`env.unwrapped.accuracy_of`): the teacher never sees the ground truth.
Within a tree, simulations run one after another; the calls of one expansion and the rollouts of
its new children run concurrently, so a continuous-batching server sees many requests at once.

Every request carries its own seed, a hash of (global seed, sample id, call counter), and counters
are handed out in a fixed order (before any concurrent call starts), so a deterministic teacher
reproduces the same tree whatever the timing of the replies.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vigorl_agents.chat import IMAGE_TOKEN
from vigorl_agents.policy import Conversation, Message, Policy, SamplingParams
from vigorl_agents.search.tree import (
    MCTSConfig,
    Node,
    is_parsable,
    is_terminal,
    points_of,
    same_point,
    step_text,
    terminal_answer,
    uct,
)

logger = logging.getLogger(__name__)

FORCE_FINAL_TEXT = (
    "\nYour turn! Max thoughts reached. You should now provide the final answer in the format "
    "<answer> ... </answer>"
)
"""The extra user message of a forced final call."""

K_SUFFIX = "\n- There should be at least {K} thoughts before providing the final answer."


def k_thoughts(seed: int, sample_id: str, config: MCTSConfig | None = None) -> int:
    """The sample's K (uniform in k_min..k_max from `random.Random(f"{seed}:{sample_id}")`)."""
    config = config or MCTSConfig()
    return random.Random(f"{seed}:{sample_id}").randint(config.k_min, config.k_max)


def teacher_system_prompt(family_prompt: str, k: int) -> str:
    """The family's MCTS teacher prompt plus the at-least-K-thoughts suffix."""
    return family_prompt + K_SUFFIX.format(K=k)


def request_seed(seed: int, sample_id: str, counter: int) -> int:
    """The per-request seed: a stable hash of (global seed, sample id, call counter), 31 bits."""
    digest = hashlib.sha256(f"{seed}:{sample_id}:{counter}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


def user_text(question: str, thoughts: list[str]) -> str:
    """The user message text (after the image): the question without `<image>`, stripped, then
    `\\n\\nPrevious thought {i}: {thought}` for each thought on the path."""
    text = question.replace(IMAGE_TOKEN, "").strip()
    for i, t in enumerate(thoughts, 1):
        # a literal <image> in a generation would be read as an image marker: drop it
        text += f"\n\nPrevious thought {i}: {step_text(t).replace(IMAGE_TOKEN, '')}"
    return text


def teacher_conversation(
    system_prompt: str, image: Any, question: str, thoughts: list[str], force_final: bool
) -> Conversation:
    """The messages of one teacher call (docs/mcts.md#one-step-one-teacher-call)."""
    messages = [
        Message("system", system_prompt),
        Message("user", IMAGE_TOKEN + user_text(question, thoughts), [image]),
    ]
    if force_final:
        messages.append(Message("user", FORCE_FINAL_TEXT))
    return Conversation(messages)


@dataclass
class SearchStats:
    n_llm_calls: int = 0
    n_unparsable: int = 0
    n_duplicates: int = 0
    n_expansion_failures: int = 0
    simulations: int = 0
    ended_early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TreeSearch:
    """The search of one sample's tree.

    `accuracy` scores a bare answer string (the env's `accuracy_of`); `policy` is the teacher.
    `run()` returns the root; `stats` counts calls, unparsable replies, discarded duplicates and
    failed expansions. Nothing in the search raises on a bad reply: only the policy (a dead server)
    or the accuracy function can make `run()` fail.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        image: Any,
        question: str,
        system_prompt: str,
        accuracy: Callable[[str | None], float],
        config: MCTSConfig,
        seed: int,
        sample_id: str,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        self.image = image
        self.question = question
        self.system_prompt = system_prompt
        self.accuracy = accuracy
        self.config = config
        self.seed = seed
        self.sample_id = sample_id
        self.on_call = on_call
        self.stats = SearchStats()
        self._counter = 0
        self.root = Node(thought_text=question, depth=0)

    # ------------------------------------------------------------------ calls
    def _reserve(self, n: int) -> int:
        """Reserve `n` consecutive call counters (before any concurrent call starts)."""
        base = self._counter
        self._counter += n
        return base

    async def _call(self, thoughts: list[str], force_final: bool, counter: int) -> str:
        cfg = self.config
        conv = teacher_conversation(
            self.system_prompt, self.image, self.question, thoughts, force_final
        )
        params = SamplingParams(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_tokens,
            stop=(),
            regex=cfg.regex,
            seed=request_seed(self.seed, self.sample_id, counter),
        )
        out = await self.policy.generate([conv], params)
        self.stats.n_llm_calls += 1
        if self.on_call is not None:
            self.on_call()
        return out[0][0].text

    # ------------------------------------------------------------------ search
    async def run(self) -> Node:
        for _ in range(self.config.n_simulations):
            if not await self.simulate():
                self.stats.ended_early = True
                break
        return self.root

    def select(self) -> Node | None:
        """Walk down by UCT over non-closed children; close nodes whose children are all closed
        (then restart from the root). None once the root is closed."""
        c = self.config.exploration_c
        while True:
            if self.root.closed:
                return None
            node = self.root
            restart = False
            while node.children:
                best, best_score = None, float("-inf")
                for child in node.children:
                    if child.closed:
                        continue
                    score = uct(child, node.visit_count, c)
                    if score > best_score:  # ties keep the lowest index
                        best, best_score = child, score
                if best is None:
                    node.closed = True
                    restart = True
                    break
                node = best
            if restart:
                continue
            if node.is_terminal:  # only reachable with a hand-made tree: never expand an answer
                node.closed = True
                continue
            return node

    async def simulate(self) -> bool:
        """One simulation; False when the root is closed (the search ends early)."""
        node = self.select()
        if node is None:
            return False
        self.stats.simulations += 1
        children = await self.expand(node)
        if not children:
            return True
        await self.rollouts_and_backup(node, children)
        return True

    async def expand(self, node: Node) -> list[Node]:
        cfg = self.config
        force_final = node.depth >= cfg.max_depth
        thoughts = node.path_texts()
        discarded: list[dict[str, Any]] = []
        for attempt in range(1 + cfg.expand_retries):
            base = self._reserve(cfg.num_children_per_expand)
            texts = await asyncio.gather(
                *(
                    self._call(thoughts, force_final, base + i)
                    for i in range(cfg.num_children_per_expand)
                )
            )
            survivors: list[Node] = []
            for text in texts:
                if not is_parsable(text):
                    self.stats.n_unparsable += 1
                    discarded.append({"attempt": attempt, "reason": "unparsable", "text": text})
                    continue
                pts = points_of(text)
                terminal = is_terminal(text)
                if not terminal and any(
                    same_point(p, u, cfg.coord_tolerance) for p in pts for u in node.used_coords
                ):
                    self.stats.n_duplicates += 1
                    discarded.append({"attempt": attempt, "reason": "same_point", "text": text})
                    continue
                survivors.append(
                    Node(
                        thought_text=text,
                        depth=node.depth + 1,
                        parent=node,
                        answer=terminal_answer(text) if terminal else None,
                        is_terminal=terminal,
                        used_coords=[*node.used_coords, *pts],
                    )
                )
            if survivors:
                node.children.extend(survivors)
                return survivors
        self.stats.n_expansion_failures += 1
        node.expansion_failures.append(
            {"attempts": 1 + cfg.expand_retries, "force_final": force_final, "discarded": discarded}
        )
        node.closed = True
        logger.debug("%s: expansion at depth %d failed; node closed", self.sample_id, node.depth)
        return []

    async def rollouts_and_backup(self, node: Node, children: list[Node]) -> None:
        cfg = self.config
        jobs = []
        for child in children:
            for _ in range(cfg.n_rollouts_per_node):
                jobs.append((child, self._reserve(cfg.rollout_max_steps)))
        results = await asyncio.gather(*(self.rollout(child, base) for child, base in jobs))
        path = node.path()
        for (child, _), rollout in zip(jobs, results, strict=True):
            child.rollouts.append(rollout)
            r = float(rollout["reward"])
            for n in (*path, child):
                n.visit_count += 1
                n.value += (r - n.value) / n.visit_count
        for child in children:
            if child.is_terminal:
                child.closed = True

    async def rollout(self, child: Node, base: int) -> dict[str, Any]:
        """One rollout below `child` (ephemeral steps, not stored as nodes)."""
        cfg = self.config
        path = child.path_texts()
        texts: list[str] = []
        answer: str | None = None
        unparsable = False
        if child.is_terminal:
            answer = child.answer
        else:
            d, e = 0, child.depth
            while d < cfg.rollout_max_steps and e < cfg.max_depth:
                force = d == cfg.rollout_max_steps - 1 or e == cfg.max_depth - 1
                text = await self._call(path + texts, force, base + d)
                if not is_parsable(text):
                    self.stats.n_unparsable += 1
                    unparsable = True
                    break
                texts.append(text)
                if is_terminal(text):
                    answer = terminal_answer(text)
                    break
                d += 1
                e += 1
        reward = float(self.accuracy(answer)) if answer is not None else 0.0
        same = different = 0
        for text in texts:
            for p in points_of(text):
                if any(same_point(p, u, cfg.coord_tolerance) for u in child.used_coords):
                    same += 1
                else:
                    different += 1
        rollout: dict[str, Any] = {
            "final_answer": answer,
            "answered": answer is not None,
            "reward": reward,
            "ephemeral_texts": [self.question, *path, *texts],
            "ephemeral_depth": len(texts),
            "depth": child.depth + len(texts),
            "num_same_points": same,
            "num_different_points": different,
        }
        if unparsable:
            rollout["unparsable"] = True
        return rollout

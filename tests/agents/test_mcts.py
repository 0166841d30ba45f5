"""The tree search of one sample: a toy tree with hand-computed values and visits, and the edge
cases of one simulation (empty expansion, all children closed, terminal re-selection, unparsable
replies, forced final, request seeds)."""

from __future__ import annotations

import asyncio
import math

import pytest
from PIL import Image

from vigorl_agents.policy import Completion
from vigorl_agents.search import MCTSConfig, TreeSearch, k_thoughts, request_seed
from vigorl_agents.search.mcts import FORCE_FINAL_TEXT, user_text
from vigorl_agents.search.tree import Node, terminal_answer

QUESTION = "<image>Which side?\nA. left\nB. right"


class PathPolicy:
    """A Policy whose replies are fixed per prompt path: `replies[(thoughts, forced)]` is a list
    consumed one reply per call (thoughts = the `Previous thought` texts in the user message)."""

    def __init__(self, replies: dict[tuple[tuple[str, ...], bool], list[str]]):
        self.replies = {k: list(v) for k, v in replies.items()}
        self.calls: list[tuple[tuple[str, ...], bool, int]] = []

    async def generate(self, conversations, params):
        (conv,) = conversations
        text = conv.messages[1].text
        thoughts = tuple(part.strip() for part in text.split("\n\nPrevious thought ")[1:])
        thoughts = tuple(t.split(": ", 1)[1] for t in thoughts)
        forced = len(conv.messages) == 3
        if forced:
            assert conv.messages[2].text == FORCE_FINAL_TEXT
        self.calls.append((thoughts, forced, params.seed))
        return [[Completion(self.replies[(thoughts, forced)].pop(0), "stop")]]

    async def aclose(self):
        return None


def accuracy(answer):
    return 1.0 if answer == "right" else 0.0


A = "<think>\nThe left half near (10, 10) is empty.\n</think>"
B = "<think>\nThe right half near (100, 100) holds the ball.\n</think>"
B_DUP = "<think>\nAgain the ball (100, 102).\n</think>"
A_DUP = "<think>\nStill the left (10, 15).\n</think>"
A2 = "<think>\nThe centre (50, 50) shows the ball is right.\n</think>"
RIGHT = "<answer> B. right </answer>"
WRONG = "<answer> left </answer>"


def _strip(t):
    return t.replace("<think>", "").replace("</think>", "").strip()


def _search(policy, **cfg):
    return TreeSearch(
        policy,
        image=Image.new("RGB", (8, 8)),
        question=QUESTION,
        system_prompt="sys",
        accuracy=accuracy,
        config=MCTSConfig(**cfg),
        seed=7,
        sample_id="s0",
    )


def test_toy_tree_values_and_visits_equal_the_hand_computation():
    a, b, a2 = _strip(A), _strip(B), _strip(A2)
    policy = PathPolicy(
        {
            ((), False): [A, B],  # the root's expansion
            ((a,), False): [A_DUP, A2],  # A's expansion (third simulation)
            ((a,), True): [WRONG],  # rollout below A: forced at once (rollout_max_steps = 1)
            ((b,), True): [RIGHT],
            ((b,), False): [RIGHT, B_DUP],  # B's expansion: a terminal child and a duplicate
            ((a, a2), True): [RIGHT],
        }
    )
    search = _search(
        policy,
        n_simulations=3,
        num_children_per_expand=2,
        n_rollouts_per_node=1,
        rollout_max_steps=1,
        max_depth=3,
        expand_retries=0,
    )
    root = asyncio.run(search.run())
    # sim 1: A (r 0), B (r 1). sim 2: UCT(A) = 2·sqrt(ln 3 / 2) = 1.48 < UCT(B) = 2.48 → expand B:
    # the answer child B1 (judged on its answer: 1), B_DUP discarded (2 px from (100, 100)).
    # sim 3: UCT(A) = 2·sqrt(ln 4 / 2) = 1.67 < UCT(B) = 1 + 2·sqrt(ln 4 / 3) = 2.36, but B's only
    # child is closed → B closed, restart → A; A_DUP discarded (5 px), A2 rolled out: 1.
    assert 2 * math.sqrt(math.log(3) / 2) < 1 + 2 * math.sqrt(math.log(3) / 2)
    node_a, node_b = root.children
    assert [c.thought_text for c in root.children] == [A, B]
    assert root.visit_count == 4 and root.value == pytest.approx(0.75)
    assert node_a.visit_count == 2 and node_a.value == pytest.approx(0.5)
    assert node_b.visit_count == 2 and node_b.value == pytest.approx(1.0)
    (b1,) = node_b.children
    assert b1.is_terminal and b1.answer == "right" and b1.closed and b1.visit_count == 1
    assert node_b.closed and not node_a.closed and not root.closed
    (a2_node,) = node_a.children
    assert a2_node.thought_text == A2 and a2_node.value == 1.0 and a2_node.depth == 2
    assert a2_node.used_coords == [(10, 10), (50, 50)]
    # calls: 2 + 2 rollouts, 2 (an answer child needs no rollout call), 2 + 1
    assert search.stats.n_llm_calls == 9 and search.stats.n_duplicates == 2
    # the rollout records
    (ra,) = node_a.rollouts
    assert ra == {
        "final_answer": "left",
        "answered": True,
        "reward": 0.0,
        "ephemeral_texts": [QUESTION, A, WRONG],
        "ephemeral_depth": 1,
        "depth": 2,
        "num_same_points": 0,
        "num_different_points": 0,
    }
    (rb1,) = b1.rollouts
    assert rb1["ephemeral_texts"] == [QUESTION, B, RIGHT] and rb1["ephemeral_depth"] == 0
    assert rb1["depth"] == 2 and rb1["reward"] == 1.0
    d = root.to_dict()
    assert d["children"][1]["children"][0]["used_coords"] == [[100, 100]]
    assert Node.from_dict(d).to_dict() == d


def test_empty_expansion_is_retried_then_recorded_and_closes_the_node():
    policy = PathPolicy({((), False): ["no tags here", "", "(3, 4)", "<think> </think>"]})
    search = _search(policy, num_children_per_expand=2, expand_retries=1, n_simulations=5)
    root = asyncio.run(search.run())
    assert root.closed and root.children == [] and search.stats.ended_early
    assert search.stats.n_llm_calls == 4 and search.stats.n_unparsable == 4
    (failure,) = root.expansion_failures
    assert failure["attempts"] == 2 and len(failure["discarded"]) == 4
    assert search.stats.simulations == 1


def test_terminal_children_are_closed_and_never_reselected():
    policy = PathPolicy({((), False): [RIGHT, WRONG, RIGHT]})
    search = _search(policy, n_simulations=4, num_children_per_expand=3)
    root = asyncio.run(search.run())
    # no rollout calls for answers; the second simulation finds every child closed → root closed
    assert search.stats.n_llm_calls == 3 and search.stats.ended_early
    assert search.stats.simulations == 1 and root.closed
    assert [c.visit_count for c in root.children] == [2, 2, 2]
    assert [c.value for c in root.children] == [1.0, 0.0, 1.0]
    assert root.visit_count == 6 and root.value == pytest.approx(4 / 6)


def test_unparsable_rollout_step_gives_a_zero_value_rollout_and_the_search_goes_on():
    a = _strip(A)
    policy = PathPolicy(
        {
            ((), False): [A],
            ((a,), False): ["garbage", RIGHT],  # rollout 1 step 0: garbage; then the expansion
        }
    )
    search = _search(
        policy, n_simulations=2, num_children_per_expand=1, n_rollouts_per_node=1,
        rollout_max_steps=3,
    )  # fmt: skip
    root = asyncio.run(search.run())
    (node_a,) = root.children
    (r,) = node_a.rollouts
    assert r["reward"] == 0.0 and r["answered"] is False and r["unparsable"] is True
    assert r["ephemeral_texts"] == [QUESTION, A] and r["final_answer"] is None
    assert search.stats.n_unparsable == 1
    (child,) = node_a.children  # the second simulation expanded A: the search went on
    assert child.is_terminal and child.value == 1.0


def test_rollout_forced_final_at_the_step_limit_and_depth_limit():
    a, s1 = _strip(A), "Next (60, 60)."
    step = "<think>\nNext (60, 60).\n</think>"
    policy = PathPolicy(
        {
            ((), False): [A],
            ((a,), False): [step],
            ((a, s1), True): [WRONG],  # max_depth 3: e = 2 = max_depth - 1 → forced
        }
    )
    search = _search(
        policy, n_simulations=1, num_children_per_expand=1, n_rollouts_per_node=1,
        rollout_max_steps=5, max_depth=3,
    )  # fmt: skip
    root = asyncio.run(search.run())
    (r,) = root.children[0].rollouts
    assert r["ephemeral_depth"] == 2 and r["final_answer"] == "left" and r["depth"] == 3
    assert r["num_different_points"] == 1 and r["num_same_points"] == 0
    assert [forced for _, forced, _ in policy.calls] == [False, False, True]


def test_request_seeds_differ_per_call_and_k_is_reproducible():
    policy = PathPolicy({((), False): [RIGHT, WRONG, RIGHT]})
    search = _search(policy, n_simulations=1)
    asyncio.run(search.run())
    seeds = [s for _, _, s in policy.calls]
    assert seeds == [request_seed(7, "s0", i) for i in range(3)] and len(set(seeds)) == 3
    assert k_thoughts(42, "x") == k_thoughts(42, "x")
    ks = {k_thoughts(0, f"id{i}") for i in range(200)}
    assert ks == {3, 4, 5, 6, 7}


def test_user_text_and_terminal_answer():
    assert user_text("<image>Q? ", ["<think> a (1, 2) </think>", "b"]) == (
        "Q?\n\nPrevious thought 1: a (1, 2)\n\nPrevious thought 2: b"
    )
    assert terminal_answer("x <ANSWER> C. blue") == "blue"
    assert terminal_answer("<answer> (3, 4) </answer> tail") == "(3, 4)"
    assert terminal_answer("no") is None

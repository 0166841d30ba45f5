"""Tree search over grounded thought steps: the warm-start data of docs/mcts.md.

`mcts` holds the search of one tree, `tree` the node and its record form, `run` the asynchronous
execution over many samples (append-only tree files, sharding, resume) and `teacher` the scripted
stand-in teacher used on machines without a 72B model.
"""

from vigorl_agents.search.mcts import (
    FORCE_FINAL_TEXT,
    SearchStats,
    TreeSearch,
    k_thoughts,
    request_seed,
    teacher_conversation,
    teacher_system_prompt,
)
from vigorl_agents.search.tree import MCTSConfig, Node

__all__ = [
    "FORCE_FINAL_TEXT",
    "MCTSConfig",
    "Node",
    "SearchStats",
    "TreeSearch",
    "k_thoughts",
    "request_seed",
    "teacher_conversation",
    "teacher_system_prompt",
]

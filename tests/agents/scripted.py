"""A scripted policy for tests: a real `Policy` that plays fixed turns, whatever the sample.

The rollout loop drives it like any backend, so tests of what is built from trajectories (SFT
records, replayed images, pictures) run the real episode loop without a model.
"""

from __future__ import annotations

from vigorl_agents.policy import Completion, RulePolicy


class ScriptedPolicy(RulePolicy):
    """Turn k of every episode answers `turns[k]` (k = assistant messages so far)."""

    def __init__(self, turns: list[str]):
        self.turns = turns

    def complete(self, conv, params):
        k = sum(m.role == "assistant" for m in conv.messages)
        return [Completion(self.turns[k], "stop")] * params.n

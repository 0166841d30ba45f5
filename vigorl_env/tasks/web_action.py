"""The web action family: crop defaults (docs/geometry.md#defaults-per-benchmark) and prompts
(docs/protocol.md#system-prompts)."""

from vigorl_env.tasks.base import TaskFamily

WEB_ACTION = TaskFamily(
    name="web_action",
    answer_kind="web_action",
    offset=182,
    crop_size=672,
    draw_dot=False,
    prompt_grounded="web_action_grounded",
    prompt_vanilla="web_action_vanilla",
    prompt_multi_turn="qa_multiturn",
    prompt_mcts="mcts_web_action",
)

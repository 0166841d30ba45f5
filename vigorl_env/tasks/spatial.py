"""The spatial family: crop defaults (docs/geometry.md#defaults-per-benchmark) and prompts
(docs/protocol.md#system-prompts)."""

from vigorl_env.tasks.base import TaskFamily

SPATIAL = TaskFamily(
    name="spatial",
    answer_kind="option_text",
    offset=182,
    crop_size=672,
    draw_dot=False,
    prompt_grounded="spatial_grounded",
    prompt_vanilla="spatial_vanilla",
    prompt_multi_turn="qa_multiturn",
    prompt_mcts="mcts_spatial",
)

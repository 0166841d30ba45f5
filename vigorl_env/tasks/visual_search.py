"""The visual search family: crop defaults (docs/geometry.md#defaults-per-benchmark) and prompts
(docs/protocol.md#system-prompts)."""

from vigorl_env.tasks.base import TaskFamily

VISUAL_SEARCH = TaskFamily(
    name="visual_search",
    answer_kind="option_text",
    offset=182,
    crop_size=672,
    draw_dot=False,
    prompt_grounded="visual_search_grounded",
    prompt_vanilla="spatial_vanilla",
    prompt_multi_turn="qa_multiturn",
    prompt_mcts="mcts_visual_search",
)

"""The web grounding family: crop defaults (docs/geometry.md#defaults-per-benchmark) and prompts
(docs/protocol.md#system-prompts)."""

from vigorl_env.tasks.base import TaskFamily

WEB_GROUNDING = TaskFamily(
    name="web_grounding",
    answer_kind="point_in_box",
    offset=50,
    crop_size=384,
    draw_dot=True,
    prompt_grounded="web_grounding_grounded",
    prompt_vanilla="web_grounding_vanilla",
    prompt_multi_turn="web_grounding_multiturn",
    prompt_mcts="mcts_web_grounding",
)

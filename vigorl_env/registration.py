"""Registration of the env ids (docs/envs.md#env-ids) with string entry points, so `import vigorl_env` stays
cheap: datasets and generators load only at `gymnasium.make`."""

from __future__ import annotations

import gymnasium as gym

from vigorl_env.tasks import BENCHMARKS

ENTRY_POINT = "vigorl_env.env:GroundedReasoningEnv"
VECTOR_ENTRY_POINT = "vigorl_env.vector:async_vector_env"
ENV_ID_OF: dict[str, str] = {b.name: b.env_id for b in BENCHMARKS.values()}
"""Benchmark name -> registered env id (the one place ids are spelled: `BenchmarkSpec.env_id`)."""
ENV_IDS: tuple[str, ...] = tuple(ENV_ID_OF.values())
PROCEDURAL_IDS: tuple[str, ...] = tuple(b.env_id for b in BENCHMARKS.values() if b.procedural)
UPSTREAM_IDS: tuple[str, ...] = tuple(b.env_id for b in BENCHMARKS.values() if not b.procedural)
WEB_ENTRY_POINTS: dict[str, str] = {
    "ViGoRL/MiniWoB-v0": "vigorl_env.web.miniwob:MiniWoBEnv",
    "ViGoRL/RenderedGrounding-v0": "vigorl_env.web.grounding:RenderedGroundingEnv",
}
"""The browser envs (docs/web.md): registered like the others, but kept out of `ENV_IDS` because
they need the `web` extra and a Chromium."""
WEB_IDS: tuple[str, ...] = tuple(WEB_ENTRY_POINTS)
WEB_ANSWER_KINDS: dict[str, str] = {
    "ViGoRL/MiniWoB-v0": "web_action",
    "ViGoRL/RenderedGrounding-v0": "point_in_box",
}
"""Answer kind of each browser env (they have no `benchmark` kwarg to look it up by)."""
WEB_MAKE_KWARGS: frozenset[str] = frozenset({"task", "cache_dir", "executable"})
"""Make kwargs only the browser envs take (docs/web.md), beside the common ones."""


def register_all() -> None:
    """Register every id once (no `max_episode_steps`: turn limits are internal, docs/envs.md#env-ids)."""
    for bench in BENCHMARKS.values():
        if bench.env_id not in gym.registry:
            gym.register(
                id=bench.env_id,
                entry_point=ENTRY_POINT,
                vector_entry_point=VECTOR_ENTRY_POINT,
                kwargs={"benchmark": bench.name},
            )
    for env_id, entry_point in WEB_ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point)

"""episodes.png of the main job: one random-zoom episode per env, drawn so that each reads at a
glance (model frame with crop boxes, points, answer and ground truth; the crops the model saw;
close-ups of the target; answer against ground truth). The drawing is `vigorl_agents.replay`'s,
the same as the demo's picture; see docs/benchmarks.md."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym

import vigorl_env
from vigorl_agents.baselines import RandomZoom
from vigorl_agents.policy import SamplingParams
from vigorl_agents.replay import EpisodeView, draw_episodes, episode_view, replay, save_figure
from vigorl_agents.rollout import Batcher, EpisodeSpec, run_episode

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def record_episode(env_id: str, index: int, seed: int, make_kwargs: dict[str, Any]) -> EpisodeView:
    """One multi-turn random-zoom episode through the project's rollout loop, images rebuilt."""
    env = gym.make(env_id, mode="multi_turn", **make_kwargs)
    bench = gym.spec(env_id).kwargs["benchmark"]
    policy = RandomZoom(answer_kind=vigorl_env.tasks.BENCHMARKS[bench].family.answer_kind)

    async def play():
        batcher = Batcher(policy)
        try:
            return await run_episode(env, batcher, EpisodeSpec(index), SamplingParams(seed=seed))
        finally:
            await batcher.aclose()

    try:
        traj = asyncio.run(play())
        obs, _ = env.reset(options={"index": index})
        return episode_view(env_id, obs["text"], replay(env, traj), traj)
    finally:
        env.close()


def episodes_figure(args: Any, index: int = 0) -> Figure:
    """The figure of episodes.png for the main job's `args` (envs, split, seed, env_kwargs)."""
    kw = {"split": args.split, **dict(args.env_kwargs)}
    views = [record_episode(e, index, args.seed, kw) for e in args.envs]
    return draw_episodes(
        views,
        title=f"random-zoom baseline, sample {index} of each env "
        f"({args.split} split; everything in model-frame pixels)",
    )


def episodes_picture(args: Any, path: Path, index: int = 0) -> Path:
    """Write episodes.png (see `episodes_figure`)."""
    return save_figure(episodes_figure(args, index), path)

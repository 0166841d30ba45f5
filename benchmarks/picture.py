"""A picture a person can look at: one random-zoom episode per env, with its points and crops."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import vigorl_env
from vigorl_agents.baselines import RandomZoom
from vigorl_agents.policy import SamplingParams
from vigorl_agents.rollout import Batcher, EpisodeSpec, run_episode
from vigorl_env.geometry import crop_zoom


def record_episode(
    env_id: str, index: int, seed: int, make_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """One random-zoom episode through the project's rollout loop, with its crops kept."""
    env = gym.make(env_id, mode="multi_turn", render_mode="rgb_array", **make_kwargs)
    bench = gym.spec(env_id).kwargs["benchmark"]
    policy = RandomZoom(answer_kind=vigorl_env.tasks.BENCHMARKS[bench].family.answer_kind)
    obs, info = env.reset(options={"index": index})
    question = obs["text"]

    async def play():
        batcher = Batcher(policy)
        try:
            return await run_episode(env, batcher, EpisodeSpec(index), SamplingParams(seed=seed))
        finally:
            await batcher.aclose()

    traj = asyncio.run(play())
    crops = []
    for turn in traj.turns:
        if turn.crop is not None:
            img, _ = crop_zoom(
                env.unwrapped.episode.frame_img,
                tuple(turn.crop["point"]),
                offset=env.unwrapped.config.offset,
                crop_size=env.unwrapped.config.crop_size,
                draw_dot=env.unwrapped.config.draw_dot,
            )
            crops.append((img, turn.crop))
    return {
        "env_id": env_id,
        "frame": env.render(),
        "crops": crops,
        "question": question,
        "transcript": traj.transcript,
        "gt": traj.ground_truth["answer"],
        "reward": traj.reward,
        "accuracy": traj.score,
    }


def episodes_picture(args: Any, path: Path, index: int = 0) -> Path:
    kw = dict(args.make_kwargs)
    eps = [record_episode(e, index, args.seed, {"split": args.split, **kw}) for e in args.envs]
    ncols = 1 + max(1, max(len(e["crops"]) for e in eps))
    fig, axes = plt.subplots(
        len(eps),
        ncols,
        figsize=(3.6 * (ncols + 1), 4.4 * len(eps)),
        squeeze=False,
        gridspec_kw={"width_ratios": [2] + [1] * (ncols - 1)},
    )
    for row, ep in zip(axes, eps, strict=True):
        for ax in row:
            ax.axis("off")
        row[0].imshow(ep["frame"])
        q = ep["question"].replace("<image>", "").strip().splitlines()[0]
        row[0].set_title(f"{ep['env_id']}\n" + textwrap.shorten(q, 70), fontsize=8)
        answer = ep["transcript"].rsplit("<answer>", 1)[-1].replace("</answer>", "").strip()
        row[0].text(
            0,
            -0.08,
            f"answer: {textwrap.shorten(answer, 40)} | GT: {textwrap.shorten(ep['gt'], 40)}"
            f" | acc {ep['accuracy']:.1f} reward {ep['reward']:.2f}",
            transform=row[0].transAxes,
            fontsize=7,
            va="top",
        )
        for i, (img, crop) in enumerate(ep["crops"], start=1):
            row[i].imshow(img)
            row[i].set_title(f"crop {i}: point {crop['point']}\nbox {crop['box']}", fontsize=8)
    fig.suptitle(
        "random-zoom baseline episodes (red: crop boxes and tool-call points, model frame)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path

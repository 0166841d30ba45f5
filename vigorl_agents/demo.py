"""Demo: one image + one query → the model's grounded chain, printed, and a picture of its points,
crops and answer (what upstream's demo_singleturn.py / demo_multiturn.py did).

    uv run python -m vigorl_agents.demo --image photo.jpg --query "What color is the mug?" \
        --policy.model gsarch/ViGoRL-Multiturn-3b-Visual-Search --task visual_search --mode multi_turn
    uv run python -m vigorl_agents.demo --image shot.png --query "the Export button" --task web_grounding \
        --policy.model tiny-qwen2.5-vl    # CPU, random weights: the pipeline, not the answers

The episode runs in the real env (`gym.make` of the family's procedural id with this one image as
its dataset: the family's frame, crop and prompt settings), so what the demo shows is exactly what
evaluation and training see. The frame and crop sizes are fitted to the policy's image processor
(`vigorl_agents.frame_bounds`; docs/geometry.md): a small processor gets smaller frames, and
`--policy.max-pixels` keeps the family's own. The picture is drawn by `vigorl_agents.replay`, like
the main job's episodes.png.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import tyro
from PIL import Image

import vigorl_env
from vigorl_agents.cli import EnvKwargs
from vigorl_agents.factory import PolicyConfig, open_policy
from vigorl_agents.frame_bounds import fit_env_kwargs, policy_pixel_bounds
from vigorl_agents.policy import SamplingParams
from vigorl_agents.replay import draw_episodes, episode_view, replay, save_figure
from vigorl_agents.rollout import Batcher, EpisodeSpec, Trajectory, run_episode
from vigorl_env.data.base import Sample
from vigorl_env.protocol import IMAGE_MARKER

log = logging.getLogger(__name__)

FAMILY_BENCHMARK = {
    "spatial": "SynthSpatial",
    "visual_search": "SynthSearch",
    "web_grounding": "SynthGrounding",
    "web_action": "SynthWebAction",
}
_KIND = {
    "spatial": "option_text",
    "visual_search": "option_text",
    "web_grounding": "point_in_box",
    "web_action": "web_action",
}


def _open(path: str) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


class OneImageDataset:
    """A one-sample dataset around a user's image and query (no ground truth: scores mean nothing).

    Picklable (the image is opened lazily from its path), as `gym.make(..., dataset=)` requires."""

    def __init__(self, image: str, query: str, task: str):
        q = query if IMAGE_MARKER in query else IMAGE_MARKER + query
        self.name, self.split = "demo", "test"
        kind = _KIND[task]
        box = (0.0, 0.0, 0.0, 0.0) if kind == "point_in_box" else None
        self.sample = Sample("demo-0", q, partial(_open, image), "", kind, gt_box=box)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Sample:
        if index != 0:
            raise IndexError(index)
        return self.sample

    def index_of(self, sample_id: str) -> int:
        if sample_id != "demo-0":
            raise KeyError(sample_id)
        return 0


@dataclass(frozen=True)
class Args:
    """Run one grounded-reasoning episode on your image."""

    image: Path
    """Image file (photo or screenshot)."""
    query: str
    """Question or instruction (for multiple choice, put the options in it: 'A. red\\nB. blue')."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    task: Literal["spatial", "visual_search", "web_grounding", "web_action"] = "visual_search"
    """Family: picks the system prompt, frame bounds and crop setting."""
    mode: Literal["single_turn", "multi_turn"] | None = None
    """Default: the family's (multi-turn for visual search)."""
    temperature: float = 0.0
    max_tokens: int = 1024
    env_kwargs: EnvKwargs = field(default_factory=dict)
    """Extra env kwargs as KEY=VALUE (max_pixels=1003520 crop_size=504; docs/envs.md#make-kwargs),
    read as by evaluation. Frame and crop sizes left out are fitted to the policy's image
    processor; ones given must fit it."""
    out: Path = Path("runs/demo/demo.png")


def env_id_of(task: str) -> str:
    return vigorl_env.tasks.BENCHMARKS[FAMILY_BENCHMARK[task]].env_id


def env_kwargs_of(args: Args, bounds: tuple[int, int] | None) -> dict[str, Any]:
    """The env kwargs: `--env-kwargs` and `--mode`, with frames and crops fitted to `bounds` (the
    policy's processor pixel bounds; None = unknown, nothing fitted)."""
    kw: dict[str, Any] = dict(args.env_kwargs)
    if args.mode is not None:
        kw["mode"] = args.mode
    if bounds is not None:
        kw = fit_env_kwargs(env_id_of(args.task), bounds, kw, flag_prefix="--policy.")
    return kw


def make_env(args: Args, bounds: tuple[int, int] | None = None) -> gym.Env:
    """The family's env with the user's image as its one-sample dataset."""
    dataset = OneImageDataset(str(args.image), args.query, args.task)
    return gym.make(env_id_of(args.task), dataset=dataset, **env_kwargs_of(args, bounds))


def draw(env: gym.Env, traj: Trajectory, query: str, path: Path) -> Path:
    """The episode's picture (`vigorl_agents.replay.draw_episodes`), without ground truth: the demo
    has none."""
    rep = replay(env, traj)
    view = episode_view(env.unwrapped.env_id, query, rep, traj, ground_truth=False)
    return save_figure(draw_episodes([view]), path)


async def demo(args: Args) -> tuple[Trajectory, Path]:
    """Run the episode and write its picture; returns the trajectory and the picture's path."""
    bounds = policy_pixel_bounds(args.policy)
    env = make_env(args, bounds)  # fails fast (before loading a model) on conflicting sizes
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=0)
    try:
        async with open_policy(args.policy) as policy:
            batcher = Batcher(policy)
            try:
                traj = await run_episode(env, batcher, EpisodeSpec(0), params)
            finally:
                await batcher.aclose()
        return traj, draw(env, traj, args.query, args.out)
    finally:
        env.close()


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.cli(Args, args=argv)
    traj, path = asyncio.run(demo(args))
    for i, turn in enumerate(traj.turns, 1):
        print(f"--- turn {i} ---\n{turn.prefix}{turn.text}")
    print(f"\nend: {traj.end_reason}; picture: {path}")


if __name__ == "__main__":
    main()

"""Demo: one image + one query → the model's grounded chain, printed, and a picture of its points,
crops and answer (what upstream's demo_singleturn.py / demo_multiturn.py did).

    uv run python -m vigorl_agents.demo --image photo.jpg --query "What color is the mug?" \
        --policy.model gsarch/ViGoRL-Multiturn-3b-Visual-Search --task visual_search --mode multi_turn
    uv run python -m vigorl_agents.demo --image shot.png --query "the Export button" --task web_grounding \
        --policy.model tiny-qwen2.5-vl    # CPU, random weights: the pipeline, not the answers

The episode runs in the real env (the family's frame, crop and prompt settings), so what the
demo shows is exactly what evaluation and training see.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import tyro
from PIL import Image, ImageDraw

from vigorl_agents.factory import PolicyConfig, open_policy
from vigorl_agents.policy import SamplingParams
from vigorl_agents.rollout import Batcher, EpisodeSpec, Trajectory, run_episode
from vigorl_env.data.base import Sample
from vigorl_env.env import GroundedReasoningEnv
from vigorl_env.geometry import crop_zoom
from vigorl_env.protocol import all_think_points, answer_point, extract_answer

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
    """A one-sample dataset around a user's image and query (no ground truth: scores mean nothing)."""

    def __init__(self, image: str, query: str, task: str):
        q = query if "<image>" in query else "<image>" + query
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
    env_kwargs: dict[str, int | float | bool | str] = field(default_factory=dict)
    """Extra env kwargs (max_pixels, crop_size, …)."""
    out: Path = Path("runs/demo/demo.png")


def make_env(args: Args) -> GroundedReasoningEnv:
    kw = dict(args.env_kwargs)
    if args.mode is not None:
        kw["mode"] = args.mode
    env = GroundedReasoningEnv(FAMILY_BENCHMARK[args.task], **kw)
    env.dataset = OneImageDataset(str(args.image), args.query, args.task)
    return env


def draw(env: GroundedReasoningEnv, traj: Trajectory, query: str, path: Path) -> Path:
    """Model-frame image with think points (numbered), crop boxes and the answer, crops beside it."""
    ep = env.episode
    frame = ep.frame_img.copy()
    d = ImageDraw.Draw(frame)
    for i, (x, y) in enumerate(all_think_points(traj.transcript), 1):
        d.ellipse(
            (x - 7, y - 7, x + 7, y + 7), fill=(0, 160, 255), outline=(255, 255, 255), width=2
        )
        d.text((x + 9, y - 7), str(i), fill=(0, 90, 200))
    crops = []
    for turn in traj.turns:
        if turn.crop:
            d.rectangle(turn.crop["box"], outline=(255, 0, 0), width=3)
            img, _ = crop_zoom(
                ep.frame_img,
                tuple(turn.crop["point"]),
                offset=env.config.offset,
                crop_size=env.config.crop_size,
                draw_dot=env.config.draw_dot,
            )
            crops.append(img)
    answer = extract_answer(traj.transcript)
    pt = answer_point(answer) if answer else None
    if pt:
        x, y = pt
        d.line((x - 14, y, x + 14, y), fill=(0, 200, 0), width=4)
        d.line((x, y - 14, x, y + 14), fill=(0, 200, 0), width=4)
    thumb = 256
    w = frame.width + (thumb + 8 if crops else 0)
    h = max(frame.height, len(crops) * (thumb + 8)) + 60
    canvas = Image.new("RGB", (w, h), "white")
    canvas.paste(frame, (0, 0))
    for i, c in enumerate(crops):
        canvas.paste(c.resize((thumb, thumb)), (frame.width + 8, i * (thumb + 8)))
    cd = ImageDraw.Draw(canvas)
    cd.text((4, h - 56), textwrap.shorten(f"Q: {query}", 160), fill=(0, 0, 0))
    cd.text(
        (4, h - 36),
        textwrap.shorten(f"A: {answer}  ({traj.end_reason}, {len(traj.turns)} turns)", 160),
        fill=(0, 0, 0),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


async def demo(args: Args) -> tuple[Trajectory, Path]:
    env = make_env(args)
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=0)
    async with open_policy(args.policy) as policy:
        batcher = Batcher(policy)
        try:
            traj = await run_episode(env, batcher, EpisodeSpec(0), params)
        finally:
            await batcher.aclose()
    return traj, draw(env, traj, args.query, args.out)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.cli(Args)
    traj, path = asyncio.run(demo(args))
    for i, turn in enumerate(traj.turns, 1):
        print(f"--- turn {i} ---\n{turn.prefix}{turn.text}")
    print(f"\nend: {traj.end_reason}; picture: {path}")


if __name__ == "__main__":
    main()

"""Zoom-step throughput of the env vs a bare PIL crop+resize of the same boxes (same run).

Setting: a V*-sized image (2246×1582, V*Bench's average) served through the real `ViGoRL/VStar-v0`
env from a temporary DATA_ROOT; multi-turn; every step is a full model turn (think text + tool
call) at a fresh random point, so the env parses, clamps, crops, resizes to 672², converts to the
observation array and builds its info. The baseline does only `frame.crop(box).resize((672, 672),
BICUBIC)` for the same boxes on the same model-frame image. Both are timed in interleaved blocks
and the ratio of medians is reported (target ≤ 1.10).

    uv run python -m benchmarks.perf.env_step [--steps 2000] [--out benchmarks/results/env_step.md]
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro
from PIL import Image

import vigorl_env  # noqa: F401  (registers the ids)
from benchmarks.machine import machine_name
from benchmarks.report import write_results
from vigorl_env.data.synth.search import SynthSearch
from vigorl_env.protocol import format_tool_call

W0, H0 = 2246, 1582


@dataclass(frozen=True)
class Args:
    steps: int = 2000
    """Zoom steps per side (env and bare), split into interleaved blocks."""
    block: int = 100
    """Steps per timed block."""
    seed: int = 0
    out: Path | None = None
    """Write the Markdown result table here (and a .json beside it)."""


def make_data_root(root: Path) -> None:
    """One V*-format record with a 2246×1582 procedural search image."""
    d = root / "visual_search" / "vstar"
    d.mkdir(parents=True)
    SynthSearch(split="test")[0].image().resize((W0, H0), Image.BICUBIC).save(d / "bench.png")
    rec = {
        "id": "bench-0",
        "image": "visual_search/vstar/bench.png",
        "conversations": [
            {"from": "human", "value": "<image>What is the color of the star?\nA. red\nB. blue"},
            {"from": "gpt", "value": "red"},
        ],
    }
    (d / "vstarbench_test.jsonl").write_text(json.dumps(rec) + "\n")


def main(args: Args) -> dict:
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        make_data_root(Path(tmp))
        env = gym.make("ViGoRL/VStar-v0", data_root=tmp, max_turns=10**9, max_images=10**9)
        obs, info = env.reset(options={"index": 0})
    w, h = info["frame"]["model_size"]
    frame_img = env.unwrapped.frame_image
    off = info["crop"]["offset"]
    c = info["crop"]["crop_size_effective"]
    points = [
        (int(x), int(y))
        for x, y in zip(rng.integers(0, w, args.steps), rng.integers(0, h, args.steps), strict=True)
    ]
    actions = [
        f"<think>\nThe region around ({x}, {y}) may hold the target; zoom in.\n</think>\n"
        + format_tool_call(x, y)
        for x, y in points
    ]
    boxes = [
        (max(0, x - off), max(0, y - off), min(w, x + off), min(h, y + off)) for x, y in points
    ]

    def env_block(lo: int, hi: int) -> float:
        t = time.perf_counter()
        for a in actions[lo:hi]:
            env.step(a)
        return (time.perf_counter() - t) / (hi - lo)

    def bare_block(lo: int, hi: int) -> float:
        t = time.perf_counter()
        for b in boxes[lo:hi]:
            frame_img.crop(b).resize((c, c), Image.BICUBIC)
        return (time.perf_counter() - t) / (hi - lo)

    env_block(0, min(50, args.steps))  # warm-up (caches of PIL/numpy, not of crops: points differ)
    bare_block(0, min(50, args.steps))
    env.unwrapped._crops.clear()
    env_t, bare_t = [], []
    for lo in range(0, args.steps, args.block):
        hi = min(lo + args.block, args.steps)
        bare_t.append(bare_block(lo, hi))
        env_t.append(env_block(lo, hi))
    env_med, bare_med = statistics.median(env_t), statistics.median(bare_t)
    result = {
        "image": f"{W0}x{H0} -> model frame {w}x{h}",
        "crop": f"offset {off}, resized to {c}x{c}, bicubic",
        "steps": args.steps,
        "env_step_ms": round(env_med * 1e3, 3),
        "bare_crop_resize_ms": round(bare_med * 1e3, 3),
        "env_steps_per_s": round(1 / env_med, 1),
        "bare_per_s": round(1 / bare_med, 1),
        "ratio_env_over_bare": round(env_med / bare_med, 3),
        "target": "<= 1.10",
        "machine": machine_name(),
        "python": platform.python_version(),
        "pillow": Image.__version__,
    }
    table = "\n".join(
        [
            "| measure | value |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in result.items()),
        ]
    )
    print(table)
    write_results(
        args.out,
        title="env_step benchmark",
        module="benchmarks.perf.env_step",
        table=table,
        result=result,
        runner="uv run python",
    )
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

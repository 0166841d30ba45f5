"""Web envs in a real browser: oracle success per MiniWoB++ task, live steps/s, rendered samples/s,
and the pictures (docs/web.md#benchmark).

1. Oracle and chance through the evaluation runner (`vigorl_agents.eval.evaluate`, the same code
   every model evaluation uses): `MiniWoBOracle` (scripted, reads the DOM-derived listing) and the
   `FullViewGuess` chance baseline, `--per-task` test episodes of every curated task each;
   success per task from the run's `samples.jsonl`.
2. Live throughput: the oracle's episodes in one env, timing resets (page load + seeding + marks +
   screenshot) and steps (action in the page + marks + screenshot) separately.
3. Rendered grounding: samples/s through `ViGoRL/RenderedGrounding-v0` resets, cold (a fresh cache:
   every page rendered by Chromium) and warm (the same samples again: read from the cache).
4. Pictures: a contact sheet of rendered pages (target box in red, other element boxes in green,
   instruction under each) and one live oracle episode per curated task (each step's screenshot
   with its marks and the action taken).

    uv run python -m benchmarks.perf.web [--per-task 10] [--samples 24] \
        [--out benchmarks/results/web.md]
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import tyro
from PIL import Image, ImageDraw

import vigorl_env  # registers the ids; FRAME_CACHE
from benchmarks.machine import machine_name
from benchmarks.report import write_results
from vigorl_agents.baselines import FullViewGuess
from vigorl_agents.eval import EvalConfig, evaluate
from vigorl_agents.policy import Conversation, Message, SamplingParams
from vigorl_agents.web_oracle import MiniWoBOracle
from vigorl_env.data.synth.common import font
from vigorl_env.web.miniwob import CURATED_TASKS

log = logging.getLogger(__name__)
MINIWOB = "ViGoRL/MiniWoB-v0"
GROUNDING = "ViGoRL/RenderedGrounding-v0"


@dataclass(frozen=True)
class Args:
    per_task: int = 10
    """Test episodes per curated task for the oracle/chance evaluation."""
    samples: int = 24
    """Rendered grounding samples timed cold and warm (and shown on the contact sheet, up to 24)."""
    runs: Path = Path("runs/web_bench")
    """Evaluation run folders (overwritten)."""
    out: Path | None = None
    """Write the Markdown result (and .json); the pictures go beside it."""


def _per_task(samples_jsonl: Path) -> dict[str, tuple[int, int]]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in samples_jsonl.read_text().splitlines():
        rec = json.loads(line)
        task = rec["sample_id"].split("/")[0]
        counts[task][0] += int(float(rec.get("score", rec.get("accuracy", 0.0))) >= 1.0)
        counts[task][1] += 1
    return {t: (c[0], c[1]) for t, c in counts.items()}


def run_evals(args: Args) -> dict[str, dict[str, tuple[int, int]]]:
    cfg = EvalConfig(
        env_ids=(MINIWOB,),
        split="test",
        limit=args.per_task * len(CURATED_TASKS),
        max_in_flight=4,
        overwrite=True,
    )
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for name, policy in (
        ("oracle", MiniWoBOracle()),
        ("chance", FullViewGuess(answer_kind="web_action")),
    ):
        t0 = time.perf_counter()
        asyncio.run(evaluate(policy, cfg, args.runs / name, policy_name=name))
        log.info("%s evaluation: %.1f s", name, time.perf_counter() - t0)
        out[name] = _per_task(args.runs / name / "samples.jsonl")
    return out


def _caption(img: Image.Image, text: str, width: int, size: int = 13) -> Image.Image:
    """`img` with `text` wrapped under it."""
    fnt = font(size)
    words, lines, cur = text.split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if fnt.getlength(trial) > width - 8 and cur:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    lines.append(cur)
    lines = lines[:4]
    out = Image.new("RGB", (img.width, img.height + 6 + (size + 4) * len(lines)), "white")
    out.paste(img, (0, 0))
    d = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        d.text((4, img.height + 3 + i * (size + 4)), line, fill=(0, 0, 0), font=fnt)
    return out


def live(args: Args, pictures: Path | None) -> dict[str, float]:
    """Oracle episodes in one env: reset and step timings; one picture per curated task."""
    oracle = MiniWoBOracle()
    env = gym.make(MINIWOB, split="test")
    resets, steps = [], []
    try:
        env.reset(options={"index": 0})  # browser start, not timed
        for k in range(3):
            for task in CURATED_TASKS:
                t0 = time.perf_counter()
                obs, info = env.reset(options={"sample_id": f"{task}/test/{k}"})
                resets.append(time.perf_counter() - t0)
                conv = Conversation([Message("system", info["system_prompt"]),
                                     Message("user", obs["text"], [obs["image"]])])  # fmt: skip
                frames = [(obs["image"], "reset")]
                while True:
                    (c,) = oracle.complete(conv, SamplingParams())
                    t0 = time.perf_counter()
                    obs, reward, term, trunc, info = env.step(c.text)
                    steps.append(time.perf_counter() - t0)
                    action = c.text.split("<answer>")[1].split("</answer>")[0].strip()
                    frames[-1] = (frames[-1][0], action)
                    conv.messages.append(Message("assistant", c.text))
                    if term or trunc:
                        frames.append((obs["image"], f"end: {info['end_reason']}, success "
                                       f"{info['reward_components']['accuracy']:g}"))  # fmt: skip
                        break
                    conv.messages.append(Message("user", obs["text"], [obs["image"]]))
                    frames.append((obs["image"], ""))
                if k == 0 and pictures is not None:
                    _episode_strip(task, info["ground_truth"]["utterance"], frames, pictures)
    finally:
        env.close()
    return {
        "reset_ms_median": 1000 * float(np.median(resets)),
        "step_ms_median": 1000 * float(np.median(steps)),
        "steps_per_s": len(steps) / float(np.sum(steps)),
        "episode_steps_per_s": len(steps) / float(np.sum(steps) + np.sum(resets)),
        "episodes": len(resets),
        "steps": len(steps),
    }


def _episode_strip(task: str, utterance: str, frames: list, folder: Path) -> None:
    thumbs = []
    for i, (arr, action) in enumerate(frames):
        img = Image.fromarray(arr).resize((arr.shape[1] // 2, arr.shape[0] // 2), Image.LANCZOS)
        label = f"step {i + 1}: {action}" if not action.startswith("end") else action
        thumbs.append(_caption(img, label, img.width, 11))
    h = max(t.height for t in thumbs)
    head = 24
    strip = Image.new("RGB", (sum(t.width + 8 for t in thumbs) + 8, h + head + 8), (235, 235, 235))
    ImageDraw.Draw(strip).text((8, 5), f"{task}: {utterance}", fill=(0, 0, 0), font=font(13, True))
    x = 8
    for t in thumbs:
        strip.paste(t, (x, head))
        x += t.width + 8
    folder.mkdir(parents=True, exist_ok=True)
    strip.save(folder / f"{task}.png", optimize=True)


def rendered(args: Args, sheet: Path | None) -> dict[str, float]:
    """Samples/s through env resets, cold (fresh cache) then warm (cache hits)."""
    cache = Path(tempfile.mkdtemp(prefix="vigorl_web_bench_"))
    try:
        env = gym.make(GROUNDING, split="test", size=args.samples, cache_dir=cache)
        env.reset(options={"index": 0})  # browser start + first render, not timed
        shutil.rmtree(cache)
        cache.mkdir()
        times = {}
        shots = []
        for phase in ("cold", "warm"):
            vigorl_env.env.FRAME_CACHE.clear()  # the model-frame cache would hide the disk cache
            t0 = time.perf_counter()
            for i in range(args.samples):
                obs, info = env.reset(options={"index": i})
                if phase == "warm" and sheet is not None:
                    _, _, _, _, end = env.step("<think>(1, 1)</think><answer>(1, 1)</answer>")
                    shots.append((obs["image"], obs["text"], end["ground_truth"]))
            times[phase] = time.perf_counter() - t0
        renders = env.unwrapped._dataset.renders
        env.close()
        if sheet is not None:
            _contact_sheet(shots[:24], sheet)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "samples": args.samples,
        "cold_samples_per_s": args.samples / times["cold"],
        "warm_samples_per_s": args.samples / times["warm"],
        "renders": renders,
    }


def _contact_sheet(shots: list, path: Path, cols: int = 6, cell: int = 360) -> None:
    cells = []
    for arr, text, gt in shots:
        img = Image.fromarray(arr)
        d = ImageDraw.Draw(img)
        lw = max(2, img.width // 300)
        for o in gt["objects"]:
            d.rectangle(o["box"], outline=(0, 170, 0), width=lw)
        d.rectangle(gt["box"], outline=(230, 0, 0), width=lw * 2)
        img.thumbnail((cell, cell), Image.LANCZOS)
        canvas = Image.new("RGB", (cell, cell), (255, 255, 255))
        canvas.paste(img, ((cell - img.width) // 2, (cell - img.height) // 2))
        cells.append(_caption(canvas, text.removeprefix("<image>"), cell, 12))
    h = max(c.height for c in cells)
    rows = (len(cells) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (cell + 6) + 6, rows * (h + 6) + 6), (220, 220, 220))
    for i, c in enumerate(cells):
        sheet.paste(c, (6 + (i % cols) * (cell + 6), 6 + (i // cols) * (h + 6)))
    sheet.save(path, optimize=True)


def _chromium_version() -> str:
    from vigorl_env.web.browser import find_chromium

    exe = find_chromium()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    return f"{out.stdout.strip()} ({exe})"


def main(args: Args) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    folder = args.out.parent if args.out is not None else None
    evals = run_evals(args)
    speed = live(args, folder / "web_episodes" if folder else None)
    grounding = rendered(args, folder / "web_contact_sheet.png" if folder else None)
    from importlib.metadata import version

    result = {
        "oracle": {t: list(v) for t, v in evals["oracle"].items()},
        "chance": {t: list(v) for t, v in evals["chance"].items()},
        "live": speed,
        "rendered": grounding,
        "machine": machine_name(),
        "python": platform.python_version(),
        "playwright": version("playwright"),
        "chromium": _chromium_version(),
    }
    rows = ["| task | oracle success | chance success |", "|---|---|---|"]
    for t in CURATED_TASKS:
        o, c = evals["oracle"].get(t, (0, 0)), evals["chance"].get(t, (0, 0))
        rows.append(f"| {t} | {o[0]}/{o[1]} | {c[0]}/{c[1]} |")
    ot = [sum(v[i] for v in evals["oracle"].values()) for i in (0, 1)]
    ct = [sum(v[i] for v in evals["chance"].values()) for i in (0, 1)]
    rows.append(f"| **all** | **{ot[0]}/{ot[1]}** | **{ct[0]}/{ct[1]}** |")
    table = "\n".join(
        [
            "MiniWoB++ test episodes through the evaluation runner (`ViGoRL/MiniWoB-v0`, "
            "split test, max 10 turns); success = the task's own raw reward > 0.",
            "",
            *rows,
            "",
            "| measure | value |",
            "|---|---|",
            f"| live reset (page load, seeding, marks, screenshot), median | {speed['reset_ms_median']:.0f} ms |",
            f"| live step (action in the page, marks, screenshot), median | {speed['step_ms_median']:.0f} ms |",
            f"| live steps/s (steps only) | {speed['steps_per_s']:.1f} |",
            f"| live steps/s (resets included, {speed['episodes']} episodes, {speed['steps']} steps) | {speed['episode_steps_per_s']:.1f} |",
            f"| rendered grounding samples/s, cold (Chromium renders each page) | {grounding['cold_samples_per_s']:.2f} |",
            f"| rendered grounding samples/s, warm (disk cache, {grounding['renders']} renders in all) | {grounding['warm_samples_per_s']:.1f} |",
            f"| machine | {result['machine']} |",
            f"| python / playwright | {result['python']} / {result['playwright']} |",
            f"| chromium | {result['chromium']} |",
            "| load | other jobs of the project shared the 2 cores during the run |",
            "",
            "Pictures: `web_contact_sheet.png` (rendered pages: target box red, other element "
            "boxes green, the instruction under each) and `web_episodes/<task>.png` (one oracle "
            "episode per curated task: each step's screenshot with its marks and the action).",
        ]
    )
    write_results(
        args.out,
        title="web benchmark (MiniWoB++ live episodes, rendered grounding)",
        module="benchmarks.perf.web",
        table=table,
        result=result,
        runner="uv run python",
    )
    print(table)
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

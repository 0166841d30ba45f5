"""Supervised fine-tuning on grounded chains (SPEC §10), single process (CPU or one GPU).

    # CPU, no downloads: tiny random Qwen2.5-VL on chains generated from the procedural envs
    uv run python experiments/sft.py debug

    # paper configuration (one GPU; effective batch 32 via grad accumulation), chains in the
    # model frame (vigorl SFT JSONL / sharegpt JSON, SPEC §10.1)
    uv run python experiments/sft.py spatial-3b --sft.train-file chains/train.jsonl \
        --sft.val-file chains/val.jsonl

Results go to `runs/sft/<name>/` (checkpoint-N/ Hugging Face folders, metrics.jsonl, tb/); an
interrupted run resumes from its latest checkpoint.

Multi-GPU (DeepSpeed ZeRO-2/3, SPEC §10.2; global batch kept at 32 whatever the GPU count):

    deepspeed --num_gpus 8 -m experiments.sft spatial-3b --sft.deepspeed zero3 \
        --sft.train-file chains/train.jsonl
    torchrun --nproc_per_node 2 -m experiments.sft debug-zero3   # tiny model, 2 GPUs

The debug data: SynthGrounding samples become single-turn chains
`<think>\\nThe target is at (x, y).\\n</think>\\n<answer> (x, y) </answer>` with (x, y) the centre of the
ground-truth box in the model frame; SynthSearch samples become multi-turn dialogs (one tool call on
the first target object, the env's crop as observation, then the answer). Frames are produced by the
envs with the tiny processor's max_pixels, crops are 224 px, so nothing is resized again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tyro

from vigorl_agents.train.sft import SFTConfig, train

TINY_PIXELS = 64 * 28 * 28  # the tiny processor's max_pixels: frames and crops must fit (SPEC §3.1)


@dataclass(frozen=True)
class DebugData:
    """Procedural SFT data generated into `<run>/data/` when `sft.train_file` is empty."""

    n_grounding: int = 12
    n_search: int = 6
    val_fraction: float = 0.25
    max_pixels: int = TINY_PIXELS
    """The envs' max_pixels: the model frames' size (the processor's bounds must bracket it)."""
    crop_size: int = 224


@dataclass(frozen=True)
class Args:
    sft: SFTConfig = field(default_factory=SFTConfig)
    debug_data: DebugData | None = None
    name: str = "sft"
    """Run name: outputs in out_root/<name>/ unless sft.output_dir is set explicitly."""
    out_root: Path = Path("runs/sft")


def _centre(box: Any) -> tuple[int, int]:
    x1, y1, x2, y2 = box
    return round((x1 + x2) / 2), round((y1 + y2) / 2)


def make_debug_data(out: Path, spec: DebugData, seed: int = 0) -> tuple[Path, Path]:
    """Write train.jsonl / val.jsonl (vigorl SFT JSONL, SPEC §10.1) with PNG images under `out`."""
    import gymnasium as gym
    from PIL import Image

    import vigorl_env  # noqa: F401 - registers the env ids
    from vigorl_env.protocol import format_tool_call

    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []

    def save(arr: Any, name: str) -> str:
        p = img_dir / name
        Image.fromarray(arr).save(p)
        return str(p.resolve())

    env = gym.make("ViGoRL/SynthGrounding-v0", max_pixels=spec.max_pixels)
    for i in range(spec.n_grounding):
        obs, info = env.reset(seed=seed, options={"index": i})
        ep = env.unwrapped.episode
        x, y = _centre(ep.gt.box)
        chain = f"<think>\nThe target is at ({x}, {y}).\n</think>\n<answer> ({x}, {y}) </answer>"
        records.append(
            {
                "id": f"{info['sample_id']}:0",
                "sample_id": info["sample_id"],
                "env_id": "ViGoRL/SynthGrounding-v0",
                "kind": "direct",
                "messages": [
                    {"role": "system", "content": info["system_prompt"]},
                    {"role": "user", "content": obs["text"]},
                    {"role": "assistant", "content": chain},
                ],
                "images": [save(obs["image"], f"{info['sample_id']}_0.png")],
                "frame": info["frame"],
                "gt_answer": ep.sample.answer,
                "meta": {"generator": "experiments/sft.py debug"},
            }
        )
    env.close()

    env = gym.make("ViGoRL/SynthSearch-v0", max_pixels=spec.max_pixels, crop_size=spec.crop_size)
    for i in range(spec.n_search):
        obs, info = env.reset(seed=seed, options={"index": i})
        ep = env.unwrapped.episode
        target = next(o for o in ep.sample.objects if o.id in ep.sample.target_ids)
        x, y = _centre(ep.frame.box_to_model(target.box))
        sid = info["sample_id"]
        images = [save(obs["image"], f"{sid}_0.png")]
        action = (
            f"<think> The {target.category} should be near ({x}, {y}). </think>\n"
            + format_tool_call(x, y)
        )
        obs2, _, terminated, _, _ = env.step(action)
        if terminated:
            continue
        images.append(save(obs2["image"], f"{sid}_1.png"))
        answer = (
            f"<think> The crop shows it clearly. </think>\n<answer> {ep.sample.answer} </answer>"
        )
        records.append(
            {
                "id": f"{sid}:0",
                "sample_id": sid,
                "env_id": "ViGoRL/SynthSearch-v0",
                "kind": "multi_turn",
                "messages": [
                    {"role": "system", "content": info["system_prompt"]},
                    {"role": "user", "content": obs["text"]},
                    {"role": "assistant", "content": action},
                    {"role": "user", "content": obs2["text"]},
                    {"role": "assistant", "content": answer},
                ],
                "images": images,
                "frame": info["frame"],
                "gt_answer": ep.sample.answer,
                "meta": {"generator": "experiments/sft.py debug"},
            }
        )
    env.close()

    every = max(2, round(1 / spec.val_fraction)) if spec.val_fraction > 0 else len(records) + 1
    val = [r for k, r in enumerate(records) if k % every == every - 1]
    tr = [r for k, r in enumerate(records) if k % every != every - 1]
    paths = []
    for name, rows in (("train", tr), ("val", val)):
        p = out / f"{name}.jsonl"
        p.write_text(
            "".join(json.dumps({**r, "split": name}) + "\n" for r in rows), encoding="utf-8"
        )
        paths.append(p)
    return paths[0], paths[1]


def _paper(model: str, max_pixels: int) -> SFTConfig:
    # SPEC §10.2 / Table A1 on one process: effective batch 32 = 1 × grad_accum 32.
    return SFTConfig(
        model=model,
        epochs=3,
        lr=1e-6,
        warmup_ratio=0.03,
        weight_decay=0.01,
        per_device_batch=1,
        grad_accum=32,
        global_batch=32,  # grad_accum = 32 / (per_device_batch × world size) under DeepSpeed
        cutoff_len=8192,
        bf16=True,
        weights_dtype="bf16",  # bf16 model + fp32 master AdamW (one process; DeepSpeed: its bf16)
        gradient_checkpointing=True,
        freeze_vision=True,
        seed=0,
        log_every=1,
        save_every=100,
        eval_every=250,
        attn_implementation="sdpa",
        min_pixels=3136,
        max_pixels=max_pixels,  # >= the env's M for the domain (SPEC §3.1, §3.2)
        device="cuda",
    )


_QWEN = {"3b": "Qwen/Qwen2.5-VL-3B-Instruct", "7b": "Qwen/Qwen2.5-VL-7B-Instruct"}
_DOMAIN_PIXELS = {"spatial": 12_960_000, "web-grounding": 4_194_304}

PRESETS: dict[str, tuple[str, Args]] = {
    "debug": (
        "CPU smoke run: tiny random Qwen2.5-VL, chains generated from SynthGrounding (single-turn) "
        "and SynthSearch (multi-turn), 2 epochs, lr 1e-3.",
        Args(
            sft=SFTConfig(
                model="tiny-qwen2.5-vl",
                epochs=2,
                lr=1e-3,
                warmup_ratio=0.1,
                per_device_batch=2,
                grad_accum=2,
                cutoff_len=2048,
                device="cpu",
                save_every=4,
                eval_every=4,
            ),
            debug_data=DebugData(),
            name="debug",
        ),
    ),
}
PRESETS["debug-zero3"] = (
    "GPU smoke run of the DeepSpeed path: the debug preset under ZeRO-3, bf16, global batch 4 "
    "(launch with `torchrun --nproc_per_node N -m experiments.sft debug-zero3`).",
    replace(
        PRESETS["debug"][1],
        sft=replace(
            PRESETS["debug"][1].sft, deepspeed="zero3", bf16=True, global_batch=4, device="cuda"
        ),
        name="debug-zero3",
    ),
)
SHAPE_PIXELS = 1008 * 1008  # ~1,296 image tokens per frame, the "realistic" batch
PRESETS["shape3b-zero3"] = (
    "GPU scaling check: Qwen2.5-VL-3B's architecture with seeded random weights "
    "(`shape-qwen2.5-vl-3b`) on procedural chains with ~1008² frames, DeepSpeed ZeRO-3, bf16, "
    "global batch 8 (2 per device; grad_accum 4 on 1 GPU, 2 on 2 GPUs), no checkpoint writes. "
    "`torchrun --nproc_per_node N -m experiments.sft shape3b-zero3`: same loss curve for N = 1, 2.",
    Args(
        sft=replace(
            PRESETS["debug"][1].sft,
            model="shape-qwen2.5-vl-3b",
            deepspeed="zero3",
            bf16=True,
            per_device_batch=2,
            global_batch=8,
            lr=1e-5,
            epochs=1,
            max_steps=6,
            cutoff_len=8192,
            gradient_checkpointing=True,
            attn_implementation="sdpa",
            min_pixels=3136,
            max_pixels=SHAPE_PIXELS,
            device="cuda",
            save_every=10**9,
            eval_every=10**9,
            save_final=False,
        ),
        debug_data=DebugData(n_grounding=40, n_search=16, max_pixels=SHAPE_PIXELS, crop_size=448),
        name="shape3b-zero3",
    ),
)
for _dom, _px in _DOMAIN_PIXELS.items():
    for _size, _model in _QWEN.items():
        PRESETS[f"{_dom}-{_size}"] = (
            f"Paper SFT ({_dom}, Qwen2.5-VL-{_size.upper()}): 3 epochs, lr 1e-6 cosine, warmup 0.03, "
            f"batch 32 (grad accum), bf16, vision frozen. Pass --sft.train-file/--sft.val-file: "
            f"chains in the model frame (SPEC §10.1; upstream MCTS_72b_reasoning_chains_*.json must "
            f"be imported first).",
            Args(sft=_paper(_model, _px), name=f"{_dom}-{_size}"),
        )


def _debug_data_once(out: Path, spec: DebugData) -> tuple[Path, Path]:
    """make_debug_data on rank 0 only; other ranks of a multi-process launch wait for it."""
    import os
    import time

    done = out / ".done"
    if int(os.environ.get("RANK", "0")) == 0:
        done.unlink(missing_ok=True)
        paths = make_debug_data(out, spec)
        done.write_text("ok")
        return paths
    deadline = time.monotonic() + 600
    while not done.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not write the debug data under {out}")
        time.sleep(0.5)
    return out / "train.jsonl", out / "val.jsonl"


def run(args: Args) -> dict:
    out = args.out_root / args.name
    sft = args.sft
    if sft.output_dir == SFTConfig.output_dir:
        sft = replace(sft, output_dir=str(out))
    if not sft.train_file:
        if args.debug_data is None:
            raise SystemExit("--sft.train-file is required (or use the debug preset)")
        train_file, val_file = _debug_data_once(Path(sft.output_dir) / "data", args.debug_data)
        sft = replace(sft, train_file=str(train_file), val_file=str(val_file))
    result = train(sft)
    if int(__import__("os").environ.get("RANK", "0")) != 0:
        return result
    last = result["history"][-1] if result["history"] else {}
    print(
        f"step {result['step']}: loss {last.get('loss', float('nan')):.4f}, "
        f"val loss {result['val_loss']:.4f}; train data {result['train_data']}"
    )
    print(f"checkpoint: {result['checkpoint']} (metrics: {sft.output_dir}/metrics.jsonl)")
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = tyro.extras.overridable_config_cli(PRESETS)
    run(args)


if __name__ == "__main__":
    main()

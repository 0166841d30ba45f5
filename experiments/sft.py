"""Supervised fine-tuning on grounded chains (docs/sft.md), single process (CPU or one GPU).

    # CPU, no downloads: tiny random Qwen2.5-VL on chains generated from the procedural envs
    uv run python experiments/sft.py debug

    # paper configuration (one GPU; effective batch 32 via grad accumulation), chains in the
    # model frame (vigorl SFT JSONL / sharegpt JSON, docs/data.md#sft-record-formats)
    uv run python experiments/sft.py spatial-3b --sft.train-file chains/train.jsonl \
        --sft.val-file chains/val.jsonl

Results go to `runs/sft/<name>/` (checkpoint-N/ Hugging Face folders, metrics.jsonl, tb/); an
interrupted run resumes from its latest checkpoint.

Multi-GPU (DeepSpeed ZeRO-2/3, docs/sft.md#multi-gpu-with-deepspeed; global batch kept at 32
whatever the GPU count):

    deepspeed --num_gpus 8 -m experiments.sft spatial-3b --sft.deepspeed zero3 \
        --sft.train-file chains/train.jsonl
    torchrun --nproc_per_node 2 -m experiments.sft debug-zero3   # tiny model, 2 GPUs

The debug data (`make_debug_data`): an oracle policy (`Oracle`) plays SynthGrounding (single-turn:
`<think>\\nThe target is at (x, y).\\n</think>\\n<answer> (x, y) </answer>` with (x, y) the centre of
the ground-truth box in the model frame) and SynthSearch (multi-turn: one tool call on the target
object, the env's crop as observation, then the answer) through the rollout loop
(`vigorl_agents.rollout.run_episodes`). The oracle knows the answers from its own copy of the
procedural dataset (same generator and seed, looked up by the sample id the env reports at reset)
and maps boxes with the env's frame info; it never reads the env's episode. The trajectories become
records through `vigorl_agents.records.trajectory_record` (images = [frame, crop 1, ...] as PNG,
paths relative to the data folder: docs/data.md#sft-record-formats). Frames are produced by the
envs with the tiny processor's max_pixels, crops are 224 px, so nothing is resized again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tyro

from vigorl_agents.policy import RulePolicy
from vigorl_agents.train.sft import SFTConfig, train

logger = logging.getLogger(__name__)

TINY_PIXELS = (
    64 * 28 * 28
)  # the tiny processor's max_pixels: frames and crops must fit (docs/geometry.md)


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


def _image_key(image: Any) -> str:
    """Content key of a model-frame image (the reset observation, or the PIL image the rollout
    made of it): the same pixels give the same key whatever the container."""
    import numpy as np

    arr = np.ascontiguousarray(np.asarray(image))
    return hashlib.sha256(str(arr.shape).encode() + arr.tobytes()).hexdigest()


class Oracle(RulePolicy):
    """A Policy that knows the answers: the chains of the debug data.

    It holds its own instance of the env's procedural dataset (same generator, same seed) and
    looks each episode's sample up by the `sample_id` the env reports at reset; the env's `frame`
    info maps the sample's original-frame boxes into the model frame. It never reads the env's
    episode. The env tells it about each reset through `announcing(env)` (its reset info, keyed by
    the frame's pixels, which are what the conversation carries).

    Turns: single-turn point_in_box → `<think>` naming the centre of the ground-truth box, then that
    point as the answer; multi-turn → one tool call on the first target object (or the box
    centre), then the answer from the crop (after a forced prefix: the answer only)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset
        self._episodes: dict[str, dict[str, Any]] = {}

    def announcing(self, env: Any) -> Any:
        """`env` wrapped so that each reset tells this oracle its sample id, frame and mode."""
        import gymnasium as gym

        oracle = self

        class Announce(gym.Wrapper):
            def reset(self, **kwargs: Any):
                obs, info = self.env.reset(**kwargs)
                oracle._episodes[_image_key(obs["image"])] = {
                    k: info[k] for k in ("sample_id", "frame", "mode")
                }
                return obs, info

        return Announce(env)

    def _turn(self, conv: Any) -> tuple[str, str]:
        from vigorl_env.geometry import Frame
        from vigorl_env.protocol import format_tool_call

        user = next(m for m in conv.messages if m.role == "user")
        ep = self._episodes[_image_key(user.images[0])]
        sample = self.dataset[self.dataset.index_of(ep["sample_id"])]
        frame = Frame(tuple(ep["frame"]["original_size"]), tuple(ep["frame"]["model_size"]))
        targets = [o for o in sample.objects or () if o.id in sample.target_ids]
        box = sample.gt_box if sample.gt_box is not None else targets[0].box
        x, y = _centre(frame.box_to_model(box))
        point = sample.answer_kind == "point_in_box"
        answer = f"({x}, {y})" if point else sample.answer
        if conv.assistant_prefix:  # forced final answer: continue after the prefix
            return f" {answer} </answer>", "</answer>"
        turns = sum(m.role == "assistant" for m in conv.messages)
        if ep["mode"] == "multi_turn" and turns == 0:
            name = targets[0].category if targets else "target"
            think = f"<think> The {name} should be near ({x}, {y}). </think>\n"
            return think + format_tool_call(x, y), "</tool_call>"
        if ep["mode"] == "multi_turn":
            return (
                f"<think> The crop shows it clearly. </think>\n<answer> {answer} </answer>",
                "</answer>",
            )
        return (
            f"<think>\nThe target is at ({x}, {y}).\n</think>\n<answer> {answer} </answer>",
            "</answer>",
        )

    def complete(self, conv: Any, params: Any) -> list[Any]:
        from vigorl_agents.policy import Completion

        text, stop = self._turn(conv)
        return [Completion(text, "stop", stop)] * params.n


def _oracle_records(
    env_id: str, dataset: Any, n: int, data_dir: Path, env_kwargs: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run the oracle on samples 0..n-1 of `env_id` and convert the solved episodes to records."""
    import asyncio

    import gymnasium as gym

    import vigorl_env  # noqa: F401 - registers the env ids
    from vigorl_agents.policy import SamplingParams
    from vigorl_agents.records import trajectory_record
    from vigorl_agents.rollout import EpisodeSpec, run_episodes

    oracle = Oracle(dataset)
    trajs = asyncio.run(
        run_episodes(
            lambda: oracle.announcing(gym.make(env_id, **env_kwargs)),
            oracle,
            [EpisodeSpec(i) for i in range(n)],
            SamplingParams(temperature=0.0, seed=None),
        )
    )
    solved = [t for t in trajs if t.score >= 1.0]
    if len(solved) < len(trajs):
        logger.warning(
            "%s: the oracle solved %d of %d episodes; the others are left out: %s",
            env_id,
            len(solved),
            len(trajs),
            [(t.sample_id, t.end_reason, t.score) for t in trajs if t.score < 1.0],
        )
    env = gym.make(env_id, **env_kwargs)  # the same kwargs: replays the episodes' images
    try:
        return [
            trajectory_record(env, t, data_dir, meta={"generator": "experiments/sft.py debug"})
            for t in solved
        ]
    finally:
        env.close()


def make_debug_data(out: Path, spec: DebugData, seed: int = 0) -> tuple[Path, Path]:
    """Write train.jsonl / val.jsonl (vigorl SFT JSONL, docs/data.md#sft-record-formats) and their
    PNG images under `out`, image paths relative to `out` (load with `data_root=out`)."""
    from vigorl_agents.records import write_sft_jsonl
    from vigorl_env.data.synth.grounding import SynthGrounding
    from vigorl_env.data.synth.search import SynthSearch

    out.mkdir(parents=True, exist_ok=True)
    records = _oracle_records(
        "ViGoRL/SynthGrounding-v0",
        SynthGrounding(split="train", dataset_seed=seed),
        spec.n_grounding,
        out,
        {"max_pixels": spec.max_pixels, "dataset_seed": seed},
    )
    records += _oracle_records(
        "ViGoRL/SynthSearch-v0",
        SynthSearch(split="train", dataset_seed=seed),
        spec.n_search,
        out,
        {"max_pixels": spec.max_pixels, "crop_size": spec.crop_size, "dataset_seed": seed},
    )
    # a positional split: the few debug records always leave some for val
    every = max(2, round(1 / spec.val_fraction)) if spec.val_fraction > 0 else len(records) + 1
    for k, r in enumerate(records):
        r["split"] = "val" if k % every == every - 1 else "train"
    return (
        write_sft_jsonl([r for r in records if r["split"] == "train"], out / "train.jsonl"),
        write_sft_jsonl([r for r in records if r["split"] == "val"], out / "val.jsonl"),
    )


def _paper(model: str, max_pixels: int) -> SFTConfig:
    # docs/sft.md#presets / paper Table A1 on one process: effective batch 32 = 1 × grad_accum 32.
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
        # >= the env's max_pixels for the domain (docs/geometry.md#defaults-per-benchmark)
        max_pixels=max_pixels,
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
            f"chains in the model frame (docs/data.md#sft-record-formats; upstream "
            f"MCTS_72b_reasoning_chains_*.json must be imported first).",
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
        data = Path(sft.output_dir) / "data"
        train_file, val_file = _debug_data_once(data, args.debug_data)
        # the records' image paths are relative to their folder
        sft = replace(sft, train_file=str(train_file), val_file=str(val_file), data_root=str(data))
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

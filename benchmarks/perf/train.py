"""SFT train throughput: our step (`SFTTrainer.train_step`) vs a bare transformers loop, one GPU.

Why: issue 4 item 6 asks for train tokens/s and MFU of our SFT step against plain transformers on
the same model and batch, measured in the same run (target: ≥ 10× an earlier plain loop,
≥ 30 % MFU); both ratios are printed.

Setting: a randomly initialised model of Qwen2.5-VL-3B's shape (config built exactly as in
`benchmarks.perf.hf_generate`: 36 × 2048 language model, 32 × 1280 vision tower, ~3.75 B params),
SDPA attention, batch 4; each sample is one random 1008² image (1,296
image tokens) + text so that the sequence is `image tokens + 2 + text_tokens` long (default 1,810
tokens: chat template, random user words and a supervised assistant answer). The four records go
through our data path (`SFTDataset` → `tokenize_record`, `collate`), written as a vigorl JSONL.

Sides, each timed as wall-clock per optimizer step with CUDA synchronised (median of `steps` after
`warmup` steps):

- ours (`ours`, `ours_ckpt`, `ours_liger`, … : `OURS_VARIANTS`): `SFTTrainer.train_step` with
  `SFTConfig(weights_dtype=--weights-dtype, attn_implementation="sdpa", per_device_batch=4,
  grad_accum=1)` plus the variant's overrides (vision attention, gradient checkpointing, Liger,
  LoRA); vision tower + merger frozen (the SFT default, docs/sft.md), loss = cross-entropy at supervised positions
  only, grad-norm clipping, AdamW + cosine schedule. The next step's batch is built in the
  trainer's background thread, as in training. The only substitution: the model comes from
  `from_config` (random init on the GPU) instead of `from_pretrained` (`engine._load_model` is
  patched), the processor is the tiny model's (same tokenizer/template).
- plain: the same architecture built in bf16 (bf16 weights, grads and AdamW state), the collated
  batch of ours, `model(**batch, labels=labels).loss.backward(); opt.step(); opt.zero_grad()` with
  torch AdamW, timed three ways: `plain_full` (everything trainable, gradient checkpointing: the
  setting of the earlier baseline loop), `plain_frozen` (vision frozen, gradient checkpointing) and
  `plain_frozen_nockpt` (vision frozen, no gradient checkpointing). Each of our rows is compared
  like for like with the plain side that has the same frozen parts and the same checkpointing
  setting: that is the headline ratio.

MFU = 6 · N_trainable · tokens/s / peak (also given with N = all parameters, the earlier
baseline's convention); tokens = non-padding tokens of the batch; peak = `peak_tflops` (989
TFLOP/s, H100 / H200 SXM bf16 dense). A cheap breakdown: our micro-batch build (CPU), the vision forward alone
(no grad), and the language-model-only fwd+bwd (text ids of the same length, no pixels).

    python -m benchmarks.perf.train [--steps 5] [--warmup 2] [--weights-dtype bf16] \
        [--sides plain_full ours ours_liger] [--profile --profile-side ours_liger] \
        [--out benchmarks/results/train.md]

`--weights-dtype` sets our sides' `SFTConfig.weights_dtype` (default "bf16": bf16 model, fp32 master
weights in AdamW; "bf16_pure": no master copy; "fp32": fp32 weights + autocast) unless a variant
sets its own. `--profile` runs `torch.profiler` over one step of `--profile-side` (after the timed
steps) and writes its top 25 ops by self CUDA time into the results.

CPU smoke run (tiny model, small inputs; seconds):

    .venv/bin/python -m benchmarks.perf.train --tiny --batch 2 --image-size 56 --text-tokens 160 \
        --steps 1 --warmup 1 --sides plain_full ours
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro
from PIL import Image

from benchmarks.machine import machine_name
from benchmarks.perf.hf_generate import MAX_PIXELS, MIN_PIXELS, WORDS, qwen25_vl_3b_shape
from benchmarks.report import write_results
from vigorl_env.protocol import IMAGE_MARKER

log = logging.getLogger("benchmarks.perf.train")


@dataclass(frozen=True)
class Args:
    batch: int = 4
    """Sequences per optimizer step (one micro-batch, no accumulation)."""
    image_size: int = 1008
    """Side of each sample's square random image (a multiple of 28)."""
    text_tokens: int = 512
    """Non-image tokens per sample (template + user text + answer); length = image tokens + 2 +
    this."""
    answer_words: int = 64
    """Random words of the (supervised) assistant answer."""
    steps: int = 5
    """Timed optimizer steps per side (median reported)."""
    warmup: int = 2
    peak_tflops: float = 989.0
    """bf16 dense peak used for MFU (H100 SXM; H200 has the same tensor-core peak)."""
    sides: tuple[str, ...] = (
        "plain_full",
        "plain_frozen",
        "plain_frozen_nockpt",
        "ours_ckpt",
        "ours",
        "ours_liger",
    )
    """Run in this order (plain first: Liger patches module-level functions). ours* variants are
    in `OURS_VARIANTS`; ratios are against plain_frozen (like for like) and plain_full."""
    breakdown: bool = True
    """Also time the vision forward alone and the language model alone (cheap)."""
    tiny: bool = False
    """Tiny random model (`vigorl_agents.models.tiny`) in float32 on CPU: a smoke run."""
    seed: int = 0
    out: Path | None = None
    """Write the Markdown table here (and a .json beside it)."""
    weights_dtype: str = "bf16"
    """Our sides' `SFTConfig.weights_dtype` (a variant may override it): "bf16" (bf16 model, fp32
    master weights in AdamW), "bf16_pure" or "fp32" (+ autocast). The tiny smoke run uses fp32."""
    profile: bool = False
    """torch.profiler over one step of `profile_side`: top-25 ops table."""
    profile_rows: int = 25
    profile_side: str = "ours"
    """Which of our variants `--profile` profiles."""


EARLIER_PLAIN_TOKENS_PER_S = 1335.0
"""A plain loop measured in an earlier run on another H100 host (bf16, SDPA, gradient
checkpointing, batch 4, vision trainable): a different job, kept only for continuity."""


PLAIN_SIDES = ("plain_full", "plain_frozen", "plain_frozen_nockpt")
"""The bare transformers loop: vision trainable / frozen (with gradient checkpointing) / frozen
without gradient checkpointing."""


def _like_for_like(row: dict) -> str:
    """The plain side doing the same work as `row`: vision frozen, same gradient checkpointing."""
    if row["side"] in PLAIN_SIDES:
        return row["side"]
    return "plain_frozen" if row.get("ckpt", True) else "plain_frozen_nockpt"


def _ratio(base: dict | None, row: dict) -> str:
    """`row`'s tokens/s over `base`'s (same batch, so the step-time ratio), or — if not run."""
    return f"{base['median_step_s'] / row['median_step_s']:.2f}×" if base else "—"


OURS_VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "ours": (
        {"vision_attention": "grouped", "gradient_checkpointing": False},
        "grouped vision attention, no gradient checkpointing",
    ),
    "ours_ckpt": (
        {"vision_attention": "grouped", "gradient_checkpointing": True},
        "grouped vision attention, gradient checkpointing",
    ),
    "ours_liger": (
        {"vision_attention": "grouped", "gradient_checkpointing": False, "liger": True},
        "grouped vision attention, no gradient checkpointing, Liger RMSNorm + SwiGLU + RoPE "
        "(language model and vision)",
    ),
    "ours_lora": (
        {"vision_attention": "grouped", "gradient_checkpointing": False, "lora": True},
        "grouped vision attention, no gradient checkpointing, LoRA r=64 on the language model",
    ),
    "ours_liger_pure": (
        {
            "vision_attention": "grouped",
            "gradient_checkpointing": False,
            "liger": True,
            "weights_dtype": "bf16_pure",
        },
        "as ours_liger without fp32 master weights",
    ),
    "ours_hf_vision": (
        {"vision_attention": "transformers", "gradient_checkpointing": True},
        "transformers' per-window vision attention, gradient checkpointing (previous run)",
    ),
}
"""Our SFT step's configurations (SFTConfig overrides, description)."""


# =========================================================================== data


def make_data(args: Args, processor: Any, tmp: Path) -> tuple[Path, list[int]]:
    """Write `batch` records (random image + words) as vigorl JSONL whose token length is
    image tokens + 2 + text_tokens (the number of user words adjusted per record; the closest
    length not above the target if it cannot be hit); return (file, lengths)."""
    from vigorl_agents.train.data import SFTRecord, TokenizedExample, tokenize_record

    rng = np.random.default_rng(args.seed)
    merge = int(processor.image_processor.merge_size)
    patch = int(processor.image_processor.patch_size)
    target = (args.image_size // patch) ** 2 // merge**2 + 2 + args.text_tokens
    lines, lengths = [], []
    for i in range(args.batch):
        img_path = tmp / f"img{i}.png"
        pixels = rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(img_path)
        answer = " ".join(rng.choice(WORDS, args.answer_words))
        pool = rng.choice(WORDS, 2 * args.text_tokens + 16)
        words, best, tried = max(1, args.text_tokens - args.answer_words - 30), None, set()
        while words not in tried and 1 <= words <= len(pool):
            tried.add(words)
            rec = {
                "messages": [
                    {"role": "user", "content": IMAGE_MARKER + " ".join(pool[:words])},
                    {"role": "assistant", "content": answer},
                ],
                "images": [str(img_path)],
            }
            ex = tokenize_record(
                SFTRecord(str(i), rec["messages"], [img_path]),
                processor,
                cutoff_len=10**6,
                with_pixels=False,
            )
            assert isinstance(ex, TokenizedExample), ex
            n = len(ex)
            if n <= target and (best is None or n > best[1]):
                best = (rec, n)
            if n == target:
                break
            words += (target - n) if abs(target - n) > 1 else (1 if n < target else -1)
        if best is None:
            raise ValueError(f"sample {i}: even one user word exceeds {target} tokens")
        lines.append(json.dumps(best[0]))
        lengths.append(best[1])
    path = tmp / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, lengths


# =========================================================================== models


def _processor(device: str) -> Any:
    from vigorl_agents.models.load import load_hf, tiny_model_dir

    _, processor = load_hf(
        tiny_model_dir("tiny-qwen2.5-vl"),
        device="cpu",
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
    )
    return processor


def _config(args: Args) -> Any:
    from transformers import AutoConfig

    from vigorl_agents.models.load import tiny_model_dir

    tiny_cfg = AutoConfig.from_pretrained(tiny_model_dir("tiny-qwen2.5-vl"))
    return tiny_cfg if args.tiny else qwen25_vl_3b_shape(tiny_cfg)


def _build(args: Args, dtype: Any, device: str) -> Any:
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(args.seed)
    t = time.perf_counter()
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            _config(args), dtype=dtype, attn_implementation="sdpa"
        )
    log.info("built %s model on %s in %.1f s", dtype, device, time.perf_counter() - t)
    return model


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _time(fn: Callable[[], Any], device: str, warmup: int, steps: int) -> list[float]:
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t
        log.info("  %s %d: %.3f s", "warm-up" if i < warmup else "step", i, dt)
        if i >= warmup:
            times.append(dt)
    return times


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    if device != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _profile(fn: Callable[[], Any], device: str, rows: int) -> str:
    """key_averages table (top `rows` ops by self CUDA time) of one call of `fn`."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    _sync(device)
    with profile(activities=acts) as prof:
        fn()
        _sync(device)
    ka = prof.key_averages()
    sort = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    try:
        return ka.table(sort_by=sort, row_limit=rows, max_name_column_width=70)
    except (AttributeError, KeyError, ValueError):
        sort = sort.replace("cuda", "device")
        return ka.table(sort_by=sort, row_limit=rows, max_name_column_width=70)


def _n_params(model: Any) -> tuple[int, int]:
    ps = list(model.parameters())
    return sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad)


# =========================================================================== sides


def run_ours(args: Args, train_file: Path, tmp: Path, device: str, side: str) -> dict:
    """Time `SFTTrainer.train_step` in the configuration `OURS_VARIANTS[side]`."""
    import torch

    from vigorl_agents.models.load import set_processor_pixel_bounds
    from vigorl_agents.train import engine as train_engine
    from vigorl_agents.train import sft

    overrides, described = OURS_VARIANTS[side]
    wdtype = "fp32" if args.tiny else overrides.get("weights_dtype", args.weights_dtype)
    overrides = {k: v for k, v in overrides.items() if k != "weights_dtype"}
    bf16_model = wdtype != "fp32"

    def load(path: str, cfg: Any, dev: Any):
        model = _build(args, torch.bfloat16 if bf16_model else torch.float32, str(dev))
        processor = _processor(device)
        set_processor_pixel_bounds(processor, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels)
        return model, processor

    cfg = sft.SFTConfig(
        model="tiny-qwen2.5-vl",
        train_file=str(train_file),
        output_dir=str(tmp / f"run-{side}"),
        epochs=1000,
        lr=1e-5,
        per_device_batch=args.batch,
        grad_accum=1,
        bf16=not args.tiny,
        weights_dtype=wdtype,
        attn_implementation="sdpa",
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
        device=device,
        seed=args.seed,
        **overrides,
    )
    saved, train_engine._load_model = train_engine._load_model, load
    try:
        trainer = sft.SFTTrainer(cfg)
    finally:
        train_engine._load_model = saved
    n_all, n_train = _n_params(trainer.model)
    losses: list[float] = []

    def step(tr: Any = trainer) -> None:
        losses.append(tr.train_step()["loss"])

    times = _time(step, device, args.warmup, args.steps)
    what = {
        "bf16": "bf16 weights + fp32 master AdamW, no autocast",
        "bf16_pure": "pure bf16 weights + AdamW, no autocast",
        "fp32": "fp32 weights + bf16 autocast" if not args.tiny else "fp32",
    }[wdtype]
    row: dict[str, Any] = {
        "side": side,
        "what": f"SFTTrainer.train_step ({what}, {described}, vision frozen)",
        "ckpt": bool(overrides.get("gradient_checkpointing", True)),
        "params": n_all,
        "trainable": n_train,
        "step_s": times,
        "losses": losses,
        "peak_mem_gib": _peak_gib(device),
    }
    if args.profile and side == args.profile_side:
        row["profile"] = _profile(step, device, args.profile_rows)
    trainer.close()
    if args.breakdown:
        batch = trainer._micro_batch(trainer.window(0)[0])
        window = trainer.window(0)[0]
        data_t = _time(lambda tr=trainer: tr._micro_batch(window), "cpu", 0, 2)
        row["micro_batch_build_s"] = statistics.median(data_t)
        row["vision_fwd_s"] = _vision_fwd(
            trainer.model, batch, device, autocast=not args.tiny and not bf16_model
        )
    del trainer, step
    _free(device)
    return row


def _vision_fwd(model: Any, batch: dict, device: str, autocast: bool) -> float:
    """Median seconds of the vision tower + merger forward on the batch's images (no grad)."""
    import contextlib

    import torch

    visual = model.model.visual
    dtype = next(visual.parameters()).dtype
    pv = batch["pixel_values"].to(device, dtype)
    grid = batch["image_grid_thw"].to(device)
    ctx = (
        (lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16))
        if autocast and device == "cuda"
        else contextlib.nullcontext
    )

    def fwd() -> None:
        with torch.no_grad(), ctx():
            visual(pv, grid_thw=grid)

    return statistics.median(_time(fwd, device, 1, 2))


def _to(batch: dict, device: str, dtype: Any) -> dict:
    out = {k: v.to(device) for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


def run_plain(args: Args, batch: dict, device: str, sides: list[str]) -> list[dict]:
    """The bare transformers loop on the same batch (bf16 model, AdamW), vision frozen and full."""
    import torch

    from vigorl_agents.train.sft import drop_input_grad_hooks

    dtype = torch.float32 if args.tiny else torch.bfloat16
    model = _build(args, dtype, device)
    model.config.use_cache = False
    model.train()
    inputs = _to(batch, device, dtype)
    rows = []
    for side in sides:
        frozen = side in ("plain_frozen", "plain_frozen_nockpt")
        ckpt = side != "plain_frozen_nockpt"
        if ckpt:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        else:
            model.gradient_checkpointing_disable()
        for p in model.model.visual.parameters():
            p.requires_grad_(not frozen)
        drop_input_grad_hooks(model)  # the hooks of gradient_checkpointing_enable
        if not frozen:  # the earlier baseline's loop: the hook gradient checkpointing installs
            model.enable_input_require_grads()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-5)
        losses: list[float] = []

        def step(model: Any = model, inputs: dict = inputs, opt: Any = opt, losses=losses):
            loss = model(**inputs, use_cache=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))

        _free(device)
        times = _time(step, device, args.warmup, args.steps)
        n_all, n_train = _n_params(model)
        rows.append(
            {
                "side": side,
                "what": f"bare HF loop, {dtype}, vision {'frozen' if frozen else 'trainable'}, "
                f"{'' if ckpt else 'no '}gradient checkpointing",
                "ckpt": ckpt,
                "params": n_all,
                "trainable": n_train,
                "step_s": times,
                "losses": losses,
                "peak_mem_gib": _peak_gib(device),
            }
        )
        del opt, step
        _free(device)
    if args.breakdown:
        rows[-1]["vision_fwd_s"] = _vision_fwd(model, inputs, device, autocast=False)
        rows[-1]["lm_only_fwd_bwd_s"] = _lm_only(args, model, inputs, device)
    del model, inputs
    _free(device)
    return rows


def _lm_only(args: Args, model: Any, inputs: dict, device: str) -> float:
    """Median fwd+bwd seconds of the model on text-only ids of the same shape (no pixels)."""
    import torch

    ids = inputs["input_ids"].clone()
    cfg = model.config
    vision = (
        (ids == cfg.image_token_id)
        | (ids == cfg.vision_start_token_id)
        | (ids == cfg.vision_end_token_id)
    )
    text = ids[~vision]
    ids[vision] = text[torch.randint(0, text.numel(), (int(vision.sum()),), device=device)]

    def fwd_bwd() -> None:
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)

    return statistics.median(_time(fwd_bwd, device, 1, 2))


# =========================================================================== report


def summarise(row: dict, tokens: int, peak: float) -> dict:
    t = statistics.median(row["step_s"])
    tps = tokens / t
    row["median_step_s"] = round(t, 3)
    row["tokens_per_s"] = round(tps, 1)
    row["mfu_trainable_pct"] = round(100 * 6 * row["trainable"] * tps / (peak * 1e12), 2)
    row["mfu_all_params_pct"] = round(100 * 6 * row["params"] * tps / (peak * 1e12), 2)
    row["step_s"] = [round(x, 3) for x in row["step_s"]]
    return row


def environment(device: str) -> dict[str, str]:
    import torch
    import transformers

    return {
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "none (CPU)",
        "host": machine_name(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def render(
    args: Args,
    env: dict,
    rows: list[dict],
    tokens: int,
    lengths: list[int],
    errors: dict[str, str] | None = None,
) -> str:
    by = {r["side"]: r for r in rows}
    head = (
        "| side | trainable params | step time (median) | tokens/s | MFU (6·N_trainable) "
        "| MFU (6·N_all) | ÷ plain, like for like | ÷ plain_full (plain also trains vision) "
        "| ÷ 1,335 tok/s (earlier plain loop, other machine) | peak mem GiB |"
        "\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = []
    for r in rows:
        ratio = " | ".join(_ratio(by.get(b), r) for b in (_like_for_like(r), "plain_full"))
        ratio = f"{ratio} | {r['tokens_per_s'] / EARLIER_PLAIN_TOKENS_PER_S:.2f}×"
        lines.append(
            f"| {r['side']}: {r['what']} | {r['trainable'] / 1e6:,.1f} M | {r['median_step_s']} s "
            f"| {r['tokens_per_s']:,.0f} | {r['mfu_trainable_pct']} % | {r['mfu_all_params_pct']} % "
            f"| {ratio} | {r['peak_mem_gib']} |"
        )
    extra = []
    for r in rows:
        for k in ("micro_batch_build_s", "vision_fwd_s", "lm_only_fwd_bwd_s"):
            if k in r:
                extra.append(f"- {r['side']}: {k} = {r[k]:.3f} s")
    about = [
        f"- GPU: {env['gpu']}; host: {env['host']}",
        f"- torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
        f"Python {env['python']}",
        f"- model: {'tiny random Qwen2.5-VL (fp32, CPU smoke)' if args.tiny else 'random Qwen2.5-VL-3B shape'}"
        f", {rows[0]['params'] / 1e6:,.1f} M params; SDPA; gradient checkpointing on the plain "
        f"sides (the earlier baseline's setting) and where a variant says so",
        f"- batch {args.batch}; each sample one random {args.image_size}² image + text, lengths "
        f"{lengths} → {tokens} tokens per step (no padding beyond the longest)",
        f"- MFU peak {args.peak_tflops:g} TFLOP/s (bf16 dense); median of {args.steps} steps "
        f"after {args.warmup} warm-ups; ratios are tokens/s over the reference's tokens/s (> 1: "
        "faster). **÷ plain, like for like** is the headline ratio: the bare transformers loop in "
        "the same run on the same batch with the same frozen parts (vision tower + merger) and the "
        "same gradient checkpointing setting (plain_frozen_nockpt for rows without checkpointing, "
        "plain_frozen for rows with it). "
        "÷ plain_full compares with a plain loop that also trains the vision tower (more work "
        "per step: not like for like). ÷ 1,335 compares with a plain loop measured in an earlier "
        "run on another H100 host (bf16, SDPA, gradient checkpointing, vision trainable): a "
        "different job, given only for continuity with older tables",
    ]
    profiles = []
    for r in rows:
        if r.get("profile"):
            profiles += [
                "",
                f"### Profile: {r['side']} (one step, top {args.profile_rows} ops by self "
                f"{'CUDA' if 'cuda' in r['profile'].lower() else 'CPU'} time)",
                "",
                "```",
                r["profile"].rstrip(),
                "```",
            ]
    failed = [
        f"- {side} did not run: {msg.splitlines()[0][:300]}" for side, msg in (errors or {}).items()
    ]
    return "\n".join([head, *lines, "", *about, *extra, *failed, *profiles])


def main(args: Args) -> dict:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    env = environment(device)
    log.info("environment: %s", env)
    rows: list[dict] = []
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        train_file, lengths = make_data(args, _processor(device), tmp)
        log.info("sample lengths %s", lengths)
        from vigorl_agents.train.data import SFTDataset, collate, load_sft_file

        processor = _processor(device)
        ds = SFTDataset(load_sft_file(train_file), processor)
        batch = collate([ds[i] for i in range(len(ds))], int(processor.tokenizer.pad_token_id))
        plain = [s for s in args.sides if s.startswith("plain")]
        if plain:
            try:
                rows += run_plain(args, batch, device, plain)
            except torch.OutOfMemoryError as e:
                errors["plain"] = f"OOM: {e}"
                log.error("plain: %s", e)
                _free(device)
        for side in args.sides:
            if side.startswith("plain"):
                continue
            if side not in OURS_VARIANTS:
                raise SystemExit(
                    f"unknown side {side!r}: {list(PLAIN_SIDES)} or {list(OURS_VARIANTS)}"
                )
            try:
                rows.append(run_ours(args, train_file, tmp, device, side))
            except (torch.OutOfMemoryError, ImportError) as e:  # report, go on with the others
                errors[side] = f"{type(e).__name__}: {e}"
                log.error("%s: %s", side, e)
                _free(device)
    tokens = int(batch["attention_mask"].sum())
    rows = [summarise(r, tokens, args.peak_tflops) for r in rows]
    table = render(args, env, rows, tokens, lengths, errors)
    print(table)
    result: dict[str, Any] = {
        **env,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "tokens_per_step": tokens,
        "sample_lengths": lengths,
        "rows": rows,
        "errors": errors,
    }
    write_results(
        args.out,
        title="SFT train step: ours vs a bare transformers loop",
        module="benchmarks.perf.train",
        table=table,
        result=result,
    )
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))

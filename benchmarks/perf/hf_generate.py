"""Decode throughput of the transformers backend: `HFPolicy.generate_sync` vs plain `model.generate`.

Why: `HFPolicy` replaces `generate`'s sampling with a per-row sampler (own seed per request, so
results do not depend on batching) and a per-row stop criterion (stop strings, per-row max_tokens);
this measures what that costs on a GPU, against plain `generate` with its own batch sampling, in
the same run on the same model and inputs.

Setting: a randomly initialised model of Qwen2.5-VL-3B's shape (36 layers × 2048, vision tower
32 × 1280; ~3.75 B parameters) in bf16 with SDPA attention, built on the GPU (no download); the
tokenizer and processor are the tiny model's (`vigorl_agents.models.tiny`: same special tokens and
chat template as Qwen). Each row is one conversation: a random 1008² image (1296 image tokens) and
~480 random words of text. Both sides sample at temperature 1 with no top-k / top-p.

- plain: the processor on the whole batch (left padding), then `model.generate(do_sample=True,
  min_new_tokens=max_new_tokens)`: every row decodes exactly `new_tokens` tokens;
- HFPolicy: `generate_sync(conversations, params)` with one seed per row and the default stop
  strings, all rows in one `generate` call (max_batch_size = the largest batch); rows end at
  `new_tokens` or EOS (rare with random weights; the tokens actually returned are counted).

Times are wall-clock from conversations to tokens, so both include preprocessing (the processor on
CPU and the copy to the GPU); plain `generate` alone is reported too. Each cell is the median of
`repeats` runs; the two sides alternate which goes first. A short warm-up runs each side at each
batch size first. The ratio is HFPolicy tokens/s over plain tokens/s (both with preprocessing).

    python -m benchmarks.perf.hf_generate [--batch-sizes 8 32] [--new-tokens 256] [--repeats 3] \
        [--out benchmarks/results/hf_generate.md]

CPU smoke run (the tiny model, small inputs; seconds):

    uv run python -m benchmarks.perf.hf_generate --tiny --batch-sizes 2 --new-tokens 8 \
        --repeats 1 --image-size 56 --prompt-words 20
"""

from __future__ import annotations

import logging
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tyro
from PIL import Image

from benchmarks.machine import machine_name
from benchmarks.report import write_results
from vigorl_agents.backends.hf import HFPolicy, render_prompt
from vigorl_agents.models.load import load_hf, tiny_model_dir
from vigorl_agents.policy import Conversation, Message, SamplingParams
from vigorl_env.protocol import IMAGE_MARKER

log = logging.getLogger("benchmarks.perf.hf_generate")

MIN_PIXELS, MAX_PIXELS = 3136, 12845056
"""Qwen2.5-VL's own processor bounds (the tiny model's max_pixels would reject 1008² images)."""
_WORDS_TEXT = (
    "the a of on in at to left right above below near far red blue green small large mug cup "
    "chair table lamp book bottle phone car person dog tree window door shelf button menu icon "
    "image crop point region object answer question option which closer color shape count zoom"
)
WORDS = _WORDS_TEXT.split()


@dataclass(frozen=True)
class Args:
    batch_sizes: tuple[int, ...] = (8, 32)
    """Conversations per `generate` call (one call per measurement)."""
    new_tokens: int = 256
    """Tokens decoded per row."""
    repeats: int = 3
    """Timed runs per (batch size, side); the median is reported."""
    image_size: int = 1008
    """Side of the square random image of each conversation (a multiple of 28)."""
    prompt_words: int = 480
    """Random words of user text per conversation (~1 token each)."""
    tiny: bool = False
    """Use the tiny random model (`vigorl_agents.models.tiny`) in float32: a CPU smoke run."""
    seed: int = 0
    out: Path | None = None
    """Write the Markdown result table here (and a .json beside it)."""


def qwen25_vl_3b_shape(tiny_config: Any) -> Any:
    """Qwen2.5-VL-3B-Instruct's architecture, with the tiny tokenizer's special token ids."""
    from vigorl_agents.models.shapes import shape_config

    return shape_config("3b", tiny_config)


def build_model(args: Args, device: str) -> tuple[Any, Any]:
    """(model, processor): the tiny model, or a random 3B-shaped one using the tiny processor."""
    import torch
    from transformers import AutoModelForImageTextToText

    dtype = torch.float32 if args.tiny else torch.bfloat16
    tiny, processor = load_hf(
        tiny_model_dir("tiny-qwen2.5-vl"),
        device=device,
        dtype=dtype,
        attn_implementation="sdpa",
        min_pixels=MIN_PIXELS,
        max_pixels=MAX_PIXELS,
    )
    if args.tiny:
        return tiny, processor
    t = time.perf_counter()
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            qwen25_vl_3b_shape(tiny.config), dtype=dtype, attn_implementation="sdpa"
        )
    model.eval()
    model.generation_config = tiny.generation_config  # special token ids only
    log.info("built the 3B-shaped model on %s in %.1f s", device, time.perf_counter() - t)
    return model, processor


def make_conversations(args: Args, n: int) -> list[Conversation]:
    rng = np.random.default_rng(args.seed)
    convs = []
    for _ in range(n):
        image = rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8)
        text = " ".join(rng.choice(WORDS, args.prompt_words))
        convs.append(
            Conversation(
                [Message("system", "Answer."), Message("user", IMAGE_MARKER + text, [image])]
            )
        )
    return convs


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_plain(model: Any, processor: Any, convs: list[Conversation], new: int, device: str):
    """Plain `generate` on the whole batch: (tokens, total seconds, generate-only seconds, length)."""
    _sync(device)
    t0 = time.perf_counter()
    tokenizer = processor.tokenizer
    saved, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        inputs = processor(
            text=[render_prompt(processor, c) for c in convs],
            images=[Image.fromarray(c.images[0]) for c in convs],
            return_tensors="pt",
            padding=True,
        ).to(device)
    finally:
        tokenizer.padding_side = saved
    _sync(device)
    t1 = time.perf_counter()
    out = model.generate(
        **inputs,
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
    )
    _sync(device)
    t2 = time.perf_counter()
    prompt_len = int(inputs["input_ids"].shape[1])
    return (out.shape[1] - prompt_len) * len(convs), t2 - t0, t2 - t1, prompt_len


def run_policy(policy: HFPolicy, convs: list[Conversation], new: int, device: str):
    """`HFPolicy.generate_sync`, one seed per row: (tokens, seconds, mean prompt tokens)."""
    params = [SamplingParams(temperature=1.0, max_tokens=new, seed=i) for i in range(len(convs))]
    _sync(device)
    t0 = time.perf_counter()
    outs = policy.generate_sync(convs, params)
    _sync(device)
    dt = time.perf_counter() - t0
    completions = [o[0] for o in outs]
    tokens = sum(len(c.token_ids) for c in completions)
    return tokens, dt, statistics.mean(c.prompt_tokens for c in completions)


def measure(args: Args, model: Any, processor: Any, device: str) -> list[dict]:
    policy = HFPolicy(model, processor=processor, max_batch_size=max(args.batch_sizes))
    convs = make_conversations(args, max(args.batch_sizes))
    rows = []
    for b in args.batch_sizes:
        batch = convs[:b]
        run_plain(model, processor, batch, 4, device)  # warm-up at this shape
        run_policy(policy, batch, 4, device)
        plain_t, plain_gen_t, pol_t = [], [], []
        plain_tok = pol_tok = prompt_len = 0
        mean_prompt = 0.0
        for rep in range(args.repeats):
            # alternate which side goes first (clock / thermal drift)
            for side in ("plain", "policy") if rep % 2 == 0 else ("policy", "plain"):
                if side == "plain":
                    plain_tok, t, t_gen, prompt_len = run_plain(
                        model, processor, batch, args.new_tokens, device
                    )
                    plain_t.append(t)
                    plain_gen_t.append(t_gen)
                    log.info("batch %d rep %d: plain %.1f tok/s", b, rep, plain_tok / t)
                else:
                    pol_tok, t, mean_prompt = run_policy(policy, batch, args.new_tokens, device)
                    pol_t.append(t)
                    log.info("batch %d rep %d: HFPolicy %.1f tok/s", b, rep, pol_tok / t)
        plain = plain_tok / statistics.median(plain_t)
        pol = pol_tok / statistics.median(pol_t)
        rows.append(
            {
                "batch": b,
                "prompt_tokens_padded": prompt_len,
                "prompt_tokens_mean": round(mean_prompt, 1),
                "new_tokens": args.new_tokens,
                "plain_generate_only_tok_s": round(plain_tok / statistics.median(plain_gen_t), 1),
                "plain_tok_s": round(plain, 1),
                "hfpolicy_tok_s": round(pol, 1),
                "ratio_hfpolicy_over_plain": round(pol / plain, 3),
                "hfpolicy_tokens_returned": pol_tok,
                "plain_tokens": plain_tok,
                "plain_s": [round(t, 3) for t in plain_t],
                "plain_generate_only_s": [round(t, 3) for t in plain_gen_t],
                "hfpolicy_s": [round(t, 3) for t in pol_t],
            }
        )
    # HFPolicy as it runs a model it loads by name: grouped vision attention (measured last, as
    # it patches the shared model's vision attention modules in place)
    from vigorl_agents.models.vision_attention import use_grouped_vision_attention

    use_grouped_vision_attention(model)
    for row in rows:
        batch = convs[: row["batch"]]
        run_policy(policy, batch, 4, device)
        times = []
        for _ in range(args.repeats):
            tok, t, _ = run_policy(policy, batch, args.new_tokens, device)
            times.append(t)
        row["hfpolicy_grouped_tok_s"] = round(tok / statistics.median(times), 1)
        row["ratio_grouped_over_plain"] = round(
            row["hfpolicy_grouped_tok_s"] / row["plain_tok_s"], 3
        )
        row["hfpolicy_grouped_s"] = [round(t, 3) for t in times]
    return rows


def environment(device: str) -> dict[str, str]:
    import torch
    import transformers

    gpu = torch.cuda.get_device_name() if device == "cuda" else "none (CPU)"
    return {
        "gpu": gpu,
        "host": machine_name(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def render(args: Args, env: dict[str, str], rows: list[dict], model_desc: str) -> str:
    header = (
        "| batch | prompt tokens (padded) | new tokens | plain generate only tok/s "
        "| plain tok/s | HFPolicy tok/s | HFPolicy / plain | HFPolicy, grouped vision attention "
        "tok/s | grouped / plain |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [
        f"| {r['batch']} | {r['prompt_tokens_padded']} | {r['new_tokens']} "
        f"| {r['plain_generate_only_tok_s']} | {r['plain_tok_s']} | {r['hfpolicy_tok_s']} "
        f"| {r['ratio_hfpolicy_over_plain']} | {r.get('hfpolicy_grouped_tok_s', '—')} "
        f"| {r.get('ratio_grouped_over_plain', '—')} |"
        for r in rows
    ]
    about = [
        f"- GPU: {env['gpu']}; host: {env['host']}",
        f"- torch {env['torch']} (CUDA {env['cuda']}), transformers {env['transformers']}, "
        f"Python {env['python']}",
        f"- model: {model_desc}",
        f"- each row: one random {args.image_size}² image + {args.prompt_words} random words; "
        f"temperature 1, no top-k/top-p; median of {args.repeats} runs",
        "- plain / HFPolicy tok/s include preprocessing (processor + copy to the device); "
        "'plain generate only' times `model.generate` alone",
    ]
    return "\n".join([header, *lines, "", *about])


def main(args: Args) -> dict:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    env = environment(device)
    log.info("environment: %s", env)
    model, processor = build_model(args, device)
    params = sum(p.numel() for p in model.parameters())
    model_desc = (
        "tiny random Qwen2.5-VL, float32" if args.tiny else "random Qwen2.5-VL-3B shape, bf16"
    ) + f", SDPA, {params / 1e6:,.1f} M parameters"
    rows = measure(args, model, processor, device)
    result: dict[str, Any] = {**env, "model": model_desc, "args": _jsonable(args), "rows": rows}
    if device == "cuda":
        result["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    table = render(args, env, rows, model_desc)
    print(table)
    write_results(
        args.out,
        title="HFPolicy vs plain `generate` (transformers backend)",
        module="benchmarks.perf.hf_generate",
        table=table,
        result=result,
    )
    return result


def _jsonable(args: Args) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


if __name__ == "__main__":
    main(tyro.cli(Args))

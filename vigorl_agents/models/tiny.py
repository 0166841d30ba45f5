"""A tiny, randomly initialised but *real* Qwen2.5-VL / Qwen2-VL, built offline in about a second.

Why: every model-facing code path (chat rendering, image placeholders, the HF backend, the vLLM
server and engine, training losses) must be tested against the real architecture and the real
processor, on a 2-core CPU, without a download. The recipe (sizes, processor, tokenizer) is the one
checked against vLLM 0.32 CPU (docs/backends.md#vllm-on-cpu):

- text model: hidden 64, 2 heads of head_dim 32 (vLLM's CPU attention rejects head_dim 16 at the
  first request), 1 KV head, 2 layers, M-RoPE sections [4, 6, 6] (sum = head_dim / 2);
- vision tower: depth 2, width 64, 2 heads (Qwen2.5-VL also has window attention settings);
- a byte-level BPE tokenizer trained here on protocol-like text, with Qwen's special tokens;
- a Qwen-style chatml template that takes string content or OpenAI-style content lists;
- `Qwen2VLImageProcessor` + an explicit `Qwen2VLVideoProcessor` (vLLM needs both) with
  `min_pixels <= 3136` so the model frame (docs/geometry.md#model-frame) is never resized again, and a small
  `max_pixels` (64·28·28 → at most 64 tokens per image) to keep CPU runs fast.

The weights are random: generated text is garbage (often not even valid UTF-8). Test structure,
token counts, finish reasons and determinism, never content. Same seed → byte-identical
`model.safetensors`.

torch, transformers and tokenizers are imported inside the functions that need them, so importing
this module stays light.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from vigorl_env.protocol import (
    BACKTRACK,
    FORCED_PREFIX,
    OBSERVATION_TEXT_DOT,
    OBSERVATION_TEXT_NO_DOT,
    format_tool_call,
)

logger = logging.getLogger(__name__)

Arch = Literal["qwen2_5_vl", "qwen2_vl"]
ARCHS: tuple[str, ...] = ("qwen2_5_vl", "qwen2_vl")

RECIPE_VERSION = 1
"""Bump when the recipe changes, so cached tiny models (load.resolve_model) are rebuilt."""
MARKER_FILE = "vigorl_tiny.json"
"""Written last into a built folder: its presence means the build completed."""

SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
INIT_STD = 0.3
"""Weight init std. transformers' 0.02 makes logits nearly flat, so greedy decoding repeats one token
whatever the prompt; 0.3 gives peaked logits that depend on the text and the image, which makes
determinism and stop tests meaningful."""
BPE_VOCAB_SIZE = 1024
"""Target size of the trained BPE vocabulary (special tokens and the 256 bytes included)."""

# Qwen2-VL / Qwen2.5-VL chatml (docs/protocol.md#chat-rendering). Content is a string or a list of parts: `text` parts
# render their text verbatim (never stripped, so `continue_final_message` can find it), and
# `image` / `image_url` parts (OpenAI style, or transformers' {"type": "image"}) render one
# `<|vision_start|><|image_pad|><|vision_end|>`; the processor expands the pad to (w/28)·(h/28).
# A conversation without a system message gets Qwen's default one, as the real templates do.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or content['type'] == 'image_url'"
    " or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)


# --------------------------------------------------------------------------- tokenizer corpus

_WORDS_TEXT = (
    "the a an of on in at to from with left right above below behind front near far next between "
    "red blue green yellow black white small large tall short round square mug cup chair table "
    "lamp book bottle phone laptop car person dog cat tree window door shelf counter button menu "
    "search icon link tab image crop coordinate point region object answer question option which "
    "is are closer farther facing color shape count how many where what camera view scene zoom "
    "I will look at first then check this seems the located there so final because"
)
_WORDS = _WORDS_TEXT.split()
_ACTIONS = (
    "click [{i}]",
    "type [{i}] [{w}]",
    "scroll [down]",
    "scroll [up]",
    "go_back",
    "stop [{w}]",
)


def _corpus(n_lines: int = 400) -> list[str]:
    """Protocol-like training text for the BPE (fixed RNG: the tokenizer never depends on the seed)."""
    rng = random.Random(1234)

    def words(k: int) -> str:
        return " ".join(rng.choice(_WORDS) for _ in range(k))

    def point() -> tuple[int, int]:
        return rng.randrange(0, 2000), rng.randrange(0, 2000)

    lines = [BACKTRACK, FORCED_PREFIX, OBSERVATION_TEXT_DOT, OBSERVATION_TEXT_NO_DOT]
    for i in range(n_lines):
        kind = i % 6
        x, y = point()
        if kind == 0:
            lines.append(
                f"<think>\n{words(8).capitalize()} ({x}, {y}).\n{words(6).capitalize()} "
                f"({y}, {x}).\n</think>\n<answer> {words(2)} </answer>"
            )
        elif kind == 1:
            lines.append(f"<think> {words(10)} ({x}, {y}). </think>\n{format_tool_call(x, y)}")
        elif kind == 2:
            action = rng.choice(_ACTIONS).format(i=rng.randrange(1000), w=words(1))
            lines.append(
                f"<think>\n{words(7).capitalize()}.\n</think>\n<answer> {action} </answer>"
            )
        elif kind == 3:
            obj = {
                "bbox_2d": [x, y, x + rng.randrange(200), y + rng.randrange(200)],
                "label": words(1),
            }
            lines.append(json.dumps(obj) + f"\n<answer> ({x}, {y}) </answer>")
        elif kind == 4:
            opts = ", ".join(f"({c}) {words(2)}" for c in "ABCD")
            lines.append(f"{words(9).capitalize()}? Options: {opts}. {rng.randrange(10**6)}")
        else:
            lines.append(f"{words(12)}. {x}.{y} {rng.random():.4f} {-x} {words(3).upper()}")
    return lines


def build_tokenizer(
    texts: Iterable[str] | None = None,
    vocab_size: int = BPE_VOCAB_SIZE,
    *,
    split_digits: bool = False,
):
    """Byte-level BPE trained on `texts` (default `_corpus()`) with Qwen's special tokens and chat
    template, wrapped as a transformers fast tokenizer. `split_digits`: digits are split one per
    token before BPE (every number is spelled the same way; the nano student uses it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() if texts is None else texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        bos_token=None,
        unk_token=None,
        model_max_length=32768,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


# --------------------------------------------------------------------------- model config


def _model_config(arch: Arch, tokenizer):
    """transformers config of the tiny model; token ids come from the trained tokenizer."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,  # head_dim 32 (vLLM CPU attention needs >= 32)
        "num_key_value_heads": 1,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "initializer_range": INIT_STD,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": [4, 6, 6],  # sums to head_dim / 2
        },
        "bos_token_id": ids[PAD_TOKEN],
        "eos_token_id": ids[EOS_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
        "dtype": "float32",
    }
    tokens = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = {
            "depth": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_heads": 2,
            "out_hidden_size": 64,
            "window_size": 112,  # 112 px = 4×4 merged patches per window
            "fullatt_block_indexes": [1],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "initializer_range": INIT_STD,
        }
        return Qwen2_5_VLConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens
        )
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = {
            "depth": 2,
            "embed_dim": 64,
            "hidden_size": 64,  # output width = text hidden size
            "mlp_ratio": 2,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "initializer_range": INIT_STD,
        }
        return Qwen2VLConfig(
            text_config=text, vision_config=vision, tie_word_embeddings=True, **tokens
        )
    raise ValueError(f"unknown tiny arch {arch!r}; expected one of {ARCHS}")


def _processor(arch: Arch, tokenizer, min_pixels: int, max_pixels: int):
    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    # vLLM builds the processor with a video processor whatever the limits say: it must exist.
    video_processor = Qwen2VLVideoProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    cls = Qwen2_5_VLProcessor if arch == "qwen2_5_vl" else Qwen2VLProcessor
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


# --------------------------------------------------------------------------- build


def build_tiny_model(
    out_dir: str | Path,
    *,
    arch: Arch = "qwen2_5_vl",
    seed: int = 0,
    min_pixels: int = 3136,
    max_pixels: int = 64 * 28 * 28,
    overwrite: bool = False,
) -> Path:
    """Build a tiny random Qwen2.5-VL / Qwen2-VL into `out_dir` (a plain Hugging Face folder).

    The folder holds config.json, generation_config.json, model.safetensors (float32), the
    tokenizer files, preprocessor/video preprocessor configs and chat_template.jinja, and loads
    with `AutoModelForImageTextToText` / `AutoProcessor` and with vLLM. `seed` fixes the weights
    (same seed → byte-identical model.safetensors); the tokenizer does not depend on it.
    `min_pixels` must stay <= 3136 so the env's model frames pass through unresized (docs/geometry.md#serving-the-frame-unchanged).

    Raises FileExistsError if `out_dir` exists and is not empty, unless `overwrite`.
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; expected one of {ARCHS}")
    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{out} exists and is not empty (pass overwrite=True to replace it)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    tokenizer = build_tokenizer()
    config = _model_config(arch, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.eval()
    eos = [tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)]
    model.generation_config = GenerationConfig(
        bos_token_id=eos[1], eos_token_id=eos, pad_token_id=eos[1]
    )
    model.save_pretrained(out)
    _processor(arch, tokenizer, min_pixels, max_pixels).save_pretrained(out)
    marker = {
        "recipe_version": RECIPE_VERSION,
        "arch": arch,
        "seed": seed,
        "min_pixels": min_pixels,
        "max_pixels": max_pixels,
    }
    (out / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "built tiny %s (seed %d) in %s in %.1f s", arch, seed, out, time.perf_counter() - t0
    )
    return out

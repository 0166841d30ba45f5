"""The transformers backend of the Policy protocol: batched `model.generate` in-process
(docs/backends.md#transformers-backend-hf).

The slow but dependency-light fallback (no vLLM), and the backend that samples with exactly the
weights a trainer holds in memory. Design choices, and why:

* **Prompts** are the processor's chat template with `{"type": "image"}` parts in `<image>` order
  (docs/protocol.md#chat-rendering), rendered with `add_generation_prompt=True`; a forced assistant
  prefix (docs/protocol.md#forced-final-answer) is
  appended right after the generation prompt, so the prompt ends exactly with
  `<|im_start|>assistant\\n{prefix}` and the model continues the same turn (what vLLM's
  `continue_final_message` renders too). Images go to the processor as-is (PIL RGB); one whose
  pixel count is outside the processor's [min_pixels, max_pixels] would be resized and its
  coordinates silently shifted, so it is an error (docs/geometry.md#serving-the-frame-unchanged).
  Prompts are never truncated: prompt + max_tokens over the model's positions is a `ValueError`.
* **Batch invariance.** The rollout loop gives each request its own seed so that results do not
  depend on how requests were batched. `generate`'s own sampling draws from one global RNG for the
  whole batch, so instead `generate` runs greedy and a logits processor (`_RowSampler`) picks each
  row's token itself: temperature / top-k / top-p per row and an exponential-race draw from the
  row's own `torch.Generator`, then it returns scores that make that token the argmax. Same seed →
  same sample, alone or in any batch (up to float noise of different batch shapes).
* **Clean decoding settings.** `generate` fills every unset option from `model.generation_config`
  (Qwen checkpoints ship `repetition_penalty=1.05`, `top_k=1`, ...), which `SamplingParams` has no
  way to express; generation runs with a config that holds only the special token ids.
* **Stops.** transformers' `StopStringCriteria` (token-level, catches stops split over tokens),
  EOS and each row's own `max_tokens` are checked by one criterion (`_RowStopper`) that records the
  step and reason each row ended, so rows with different params share a batch and trailing
  padding is never mistaken for output. Text is cut right after the first stop string (kept,
  docs/protocol.md#limits-and-stop-strings); token ids run up to and including the token that completed it (the same as vLLM).
* **Logprobs** are those of the sampled tokens under the unmodified model distribution
  (temperature 1, no top-k/top-p: vLLM's default "raw" logprobs), computed per step inside the
  sampler instead of keeping `output_scores` (batch × vocab × steps floats).
* **Padding.** Each conversation is processed once on its own (its length checked, its features
  reused by its n samples) and rows are LEFT-padded here, so the processor's `padding_side`,
  which a trainer may share, is never changed. `mm_token_type_ids` must travel with the batch:
  without it transformers 5.19 `generate` silently gives image tokens text positions (M-RoPE).
* `generate` runs in a worker thread under a lock: the event loop stays free, one batch at a time.
* On GPU in bf16, HF decoding is not bitwise reproducible run to run (seen on H200 with plain
  `generate` too, even greedy): same seed → same output holds exactly on CPU only.

torch and transformers are imported lazily so `import vigorl_agents` stays light.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vigorl_agents.chat import placeholder_image_part
from vigorl_agents.policy import (
    Completion,
    Conversation,
    ImageLike,
    SamplingParams,
    params_per_conversation,
)

log = logging.getLogger(__name__)

_EOS, _STOP, _LENGTH = 0, 1, 2
"""Why a row ended, as recorded by `_RowStopper` (priority in this order when several hold)."""


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------
def _to_rgb(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8 HxW[xC], got {arr.dtype} {arr.shape}")
    return Image.fromarray(arr).convert("RGB")


def render_prompt(processor: Any, conv: Conversation) -> str:
    """The prompt text of `conv`: chat template + generation prompt (+ the forced prefix)."""
    messages = conv.chat_messages(placeholder_image_part, with_prefix=False)
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):  # some versions return a one-element list
        text = text[0]
    return text + (conv.assistant_prefix or "")


def _resize_factor(image_processor: Any) -> int:
    """Sides the processor rounds images to: patch size × merge size (28 for Qwen2-VL)."""
    patch = int(getattr(image_processor, "patch_size", 14))
    return patch * int(getattr(image_processor, "merge_size", 2))


# ---------------------------------------------------------------------------------------------
# Per-row sampling and stopping inside `generate`
# ---------------------------------------------------------------------------------------------
def _row_seed(seed: int | None, sample: int) -> int:
    """A 63-bit seed for sample `sample` of a request; a fresh random one when `seed` is None."""
    entropy = [seed % 2**64, sample] if seed is not None else None
    words = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _stops(params: SamplingParams) -> tuple[str, ...]:
    return tuple(s for s in params.stop if s)


def _make_sampler(rows: list[SamplingParams], seeds: list[int], device: Any, want_lp: bool):
    import torch
    from transformers import LogitsProcessor

    class _RowSampler(LogitsProcessor):
        """Chooses every row's next token (see module doc); `generate` then takes the argmax."""

        def __init__(self) -> None:
            b = len(rows)
            self.temperature = torch.tensor([p.temperature for p in rows], device=device)
            self.top_p = torch.tensor([p.top_p for p in rows], device=device)
            self.top_k = torch.tensor(
                [p.top_k if p.top_k > 0 else 1 << 30 for p in rows], device=device
            )
            self.sampled = [i for i, p in enumerate(rows) if p.temperature > 0]
            self.sampled_t = torch.tensor(self.sampled, dtype=torch.long, device=device)
            self.filter = any(rows[i].top_k > 0 or rows[i].top_p < 1 for i in self.sampled)
            self.generators = {}
            for i in self.sampled:
                g = torch.Generator(device=device)
                g.manual_seed(seeds[i])
                self.generators[i] = g
            self.logprobs: list[torch.Tensor] = []
            self.want_lp = want_lp
            self.arange = torch.arange(b, device=device)
            self.bias = [(i, t, v) for i, p in enumerate(rows) for t, v in p.logit_bias]

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            raw = scores  # logprobs are the model's own (as vLLM reports them), bias excluded
            if self.bias:  # SamplingParams.logit_bias: added before anything is chosen
                scores = scores.clone()
                for i, t, v in self.bias:
                    scores[i, t] += v
            chosen = scores.argmax(dim=-1)
            if self.sampled:
                idx = self.sampled_t
                logits = scores[idx] / self.temperature[idx, None]
                if self.filter:
                    logits = self._top_k_top_p(logits, self.top_k[idx], self.top_p[idx])
                probs = logits.softmax(dim=-1)
                # exponential race: argmax(p / E), E ~ Exp(1) i.i.d., is a draw from p
                noise = torch.stack(
                    [
                        torch.empty(scores.shape[-1], device=scores.device).exponential_(
                            generator=self.generators[i]
                        )
                        for i in self.sampled
                    ]
                )
                chosen = chosen.index_copy(0, idx, (probs / noise).argmax(dim=-1))
            if self.want_lp:
                lp = raw.log_softmax(dim=-1)[self.arange, chosen]
                self.logprobs.append(lp)
            out = torch.full_like(scores, -math.inf)
            return out.scatter_(1, chosen[:, None], 0.0)

        @staticmethod
        def _top_k_top_p(logits: torch.Tensor, k: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
            """Keep each row's k best tokens, then the smallest prefix holding mass >= top_p."""
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            ranks = torch.arange(logits.shape[-1], device=logits.device)
            sorted_logits = sorted_logits.masked_fill(ranks[None, :] >= k[:, None], -math.inf)
            sorted_probs = sorted_logits.softmax(dim=-1)
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            sorted_logits = sorted_logits.masked_fill(mass_before >= p[:, None], -math.inf)
            return torch.full_like(logits, -math.inf).scatter(1, order, sorted_logits)

    return _RowSampler()


def _make_stopper(
    rows: list[SamplingParams],
    prompt_len: int,
    eos_ids: list[int],
    stop_criteria: dict[tuple[str, ...], Any],
    device: Any,
):
    import torch
    from transformers import StoppingCriteria

    class _RowStopper(StoppingCriteria):
        """EOS, stop strings and each row's own max_tokens; records when and why each row ended."""

        def __init__(self) -> None:
            b = len(rows)
            self.max_tokens = torch.tensor([p.max_tokens for p in rows], device=device)
            self.eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
            groups: dict[tuple[str, ...], list[int]] = {}
            for i, p in enumerate(rows):
                if stop := _stops(p):
                    groups.setdefault(stop, []).append(i)
            self.groups = [
                (
                    stop_criteria[stop],
                    torch.tensor(ix, dtype=torch.long, device=device),
                    len(ix) == b,
                )
                for stop, ix in groups.items()
            ]
            self.end_step = torch.full((b,), -1, dtype=torch.long, device=device)
            self.reason = torch.full((b,), -1, dtype=torch.long, device=device)

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            # tensor ops only (no host sync), so generate's deferred stop check stays valid
            step = input_ids.shape[1] - prompt_len
            eos_hit = torch.isin(input_ids[:, -1], self.eos)
            stop_hit = torch.zeros_like(eos_hit)
            for criterion, ix, whole in self.groups:
                if whole:
                    stop_hit = stop_hit | criterion(input_ids, scores)
                else:
                    stop_hit = stop_hit.index_copy(
                        0, ix, stop_hit[ix] | criterion(input_ids[ix], scores)
                    )
            len_hit = step >= self.max_tokens
            done = eos_hit | stop_hit | len_hit
            reason = torch.where(eos_hit, _EOS, torch.where(stop_hit, _STOP, _LENGTH))
            new = done & (self.end_step < 0)
            self.end_step = torch.where(new, step, self.end_step)
            self.reason = torch.where(new, reason, self.reason)
            return done

    return _RowStopper()


# ---------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------
@dataclass
class _Prepared:
    """One conversation, processed once (its rows reuse it for every sample)."""

    features: dict[str, Any]  # processor output, batch dimension 1
    prompt_tokens: int
    prompt_ids: tuple[int, ...] = ()  # what the model is fed (Completion.prompt_token_ids)


class HFPolicy:
    """`Policy` over an in-process transformers Qwen2-VL / Qwen2.5-VL model.

    `model_or_path` is a loaded model (then `processor` is required) or a name/path loaded with
    `vigorl_agents.models.load.load_hf`. `min_pixels` / `max_pixels` set the processor's bounds;
    they must satisfy min_pixels ≤ the env's m and max_pixels ≥ the env's M
    (docs/backends.md#image-sizes-the-processor-must-keep-the-frame).
    `max_batch_size` caps the sequences (conversations × n) of one `generate` call.
    `conv.prompt_token_ids`, when set, is fed as given (token-in, `supports_token_input`).
    A model loaded here by name runs the vision tower's windowed attention batched
    (`vision_attention="grouped"`, `models.vision_attention`: same output, one SDPA call per window
    length instead of one per window); a model passed in is used as it is.
    """

    supports_token_input = True
    """`Conversation.prompt_token_ids` is fed as given, with the image processor's features."""

    def __init__(
        self,
        model_or_path: Any,
        *,
        processor: Any = None,
        device: Any = None,
        dtype: Any = None,
        max_batch_size: int = 8,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        attn_implementation: str | None = None,
        vision_attention: str = "grouped",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        from vigorl_agents.models.load import load_hf, set_processor_pixel_bounds
        from vigorl_agents.models.vision_attention import (
            check_vision_attention,
            set_vision_attention,
        )

        check_vision_attention(vision_attention)

        if isinstance(model_or_path, (str, Path)):
            if device is None:
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            model, loaded = load_hf(
                str(model_or_path),
                device=device,
                dtype=dtype,
                attn_implementation=attn_implementation,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
            )
            processor = processor if processor is not None else loaded
            set_vision_attention(model, vision_attention)
        else:
            model = model_or_path
            if processor is None:
                raise ValueError("pass `processor=` together with a loaded model")
            if device is not None:
                model = model.to(device)
        set_processor_pixel_bounds(processor, min_pixels=min_pixels, max_pixels=max_pixels)
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        text_config = model.config.get_text_config()
        self.max_positions: int | None = getattr(text_config, "max_position_embeddings", None)
        self.eos_ids = self._eos_ids()
        gc = getattr(model, "generation_config", None)
        pad = getattr(gc, "pad_token_id", None)
        if pad is None:
            pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.eos_ids[0])
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self._lock: asyncio.Lock | None = None  # one per event loop: `_async_lock`
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._thread_lock = threading.Lock()  # also guards direct `generate_sync` callers
        self._closed = False

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> HFPolicy:
        """Load model and processor with `load_hf` (kwargs as in `__init__`)."""
        return cls(str(name_or_path), **kwargs)

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gc = getattr(self.model, "generation_config", None)
        for source in (getattr(gc, "eos_token_id", None), self.tokenizer.eos_token_id):
            for i in source if isinstance(source, (list, tuple)) else [source]:
                if i is not None and int(i) not in ids:
                    ids.append(int(i))
        if not ids:
            raise ValueError("the model has no EOS token id (generation_config or tokenizer)")
        return ids

    # -------------------------------------------------------------- Policy protocol
    async def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        """One list of `n` completions per conversation, in input order (see `Policy`)."""
        if self._closed:
            raise RuntimeError("HFPolicy is closed")
        conversations = list(conversations)
        per_conv = params_per_conversation(params, len(conversations))
        if not conversations:
            return []
        async with self._async_lock():
            return await asyncio.to_thread(self.generate_sync, conversations, per_conv)

    async def aclose(self) -> None:
        """Drop the model (its memory is freed when no one else holds it)."""
        async with self._async_lock():
            self._closed = True
            self.model = None
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    def _async_lock(self) -> asyncio.Lock:
        """The lock of the running event loop. An `asyncio.Lock` binds to the loop that first
        waits on it, and a caller may drive the policy from a new loop each time (GRPO runs one
        `asyncio.run` per RL step): the lock is made anew when the loop changes (the thread lock
        in `generate_sync` still serializes the model across loops and threads)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def __aenter__(self) -> HFPolicy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -------------------------------------------------------------- synchronous core
    def generate_sync(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        """The blocking implementation of `generate` (runs in a worker thread there)."""
        if self.model is None:
            raise RuntimeError("HFPolicy is closed")
        conversations = list(conversations)
        per_conv = params_per_conversation(params, len(conversations))
        with self._thread_lock:
            prepared = [
                self._prepare(i, c, p.max_tokens)
                for i, (c, p) in enumerate(zip(conversations, per_conv, strict=True))
            ]
            rows = [(ci, s) for ci, p in enumerate(per_conv) for s in range(p.n)]
            seeds = {(ci, s): _row_seed(per_conv[ci].seed, s) for ci, s in rows}
            # similar lengths together: less padding (results do not depend on the grouping)
            rows.sort(key=lambda r: prepared[r[0]].prompt_tokens)
            results: dict[tuple[int, int], Completion] = {}
            for start in range(0, len(rows), self.max_batch_size):
                chunk = rows[start : start + self.max_batch_size]
                outs = self._generate_batch(
                    [prepared[ci] for ci, _ in chunk],
                    [per_conv[ci] for ci, _ in chunk],
                    [seeds[r] for r in chunk],
                )
                results.update(zip(chunk, outs, strict=True))
        return [[results[(ci, s)] for s in range(p.n)] for ci, p in enumerate(per_conv)]

    def prompt_inputs(self, conv: Conversation) -> dict[str, Any]:
        """The processor's tensors for `conv` (batch of one): what `generate` feeds the model."""
        return self._prepare(0, conv, 0).features

    def _prepare(self, index: int, conv: Conversation, max_tokens: int) -> _Prepared:
        from vigorl_agents.models.load import processor_pixel_bounds

        images = [_to_rgb(img) for img in conv.images]
        lo, hi = processor_pixel_bounds(self.processor)
        factor = _resize_factor(self.processor.image_processor)
        for k, img in enumerate(images):
            w, h = img.size
            if not lo <= w * h <= hi:
                raise ValueError(
                    f"conversation {index}: image {k} is {w}x{h} = {w * h} px, outside the "
                    f"processor's [min_pixels, max_pixels] = [{lo}, {hi}]; it would be resized "
                    "and its coordinates shifted. Widen the processor (--policy.min-pixels / "
                    "--policy.max-pixels) or fit the env's frames to it (vigorl_agents.frame_bounds"
                    ", which experiments/eval.py applies); see docs/backends.md#image-sizes-the-"
                    "processor-must-keep-the-frame"
                )
            if w % factor or h % factor:
                log.warning(
                    "conversation %d: image %d is %dx%d, not a multiple of %d; the processor "
                    "rounds it (model frames from the env never are)", index, k, w, h, factor,
                )  # fmt: skip
        if conv.prompt_token_ids is not None:
            features = self._token_features(index, conv.prompt_token_ids, images)
        else:
            text = render_prompt(self.processor, conv)
            kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
            if images:
                kwargs["images"] = images
            features = dict(self.processor(**kwargs))  # never truncated
        n_prompt = int(features["input_ids"].shape[1])
        if self.max_positions is not None and n_prompt + max_tokens > self.max_positions:
            raise ValueError(
                f"conversation {index}: prompt of {n_prompt} tokens + max_tokens {max_tokens} = "
                f"{n_prompt + max_tokens} exceeds the model's {self.max_positions} positions "
                "(prompts are never truncated)"
            )
        return _Prepared(
            features=features,
            prompt_tokens=n_prompt,
            prompt_ids=tuple(int(t) for t in features["input_ids"][0].tolist()),
        )

    def _token_features(
        self, index: int, ids: Sequence[int], images: list[Image.Image]
    ) -> dict[str, Any]:
        """Token-in (docs/backends.md#token-in-and-token-out): the given ids as they are (image
        pads already expanded) + the image processor's pixel values and grids, with the same
        per-token tensors the processor's own call produces (attention mask, `mm_token_type_ids`
        marking the pads). The pad count must match the images' grids (else ValueError)."""
        import torch

        from vigorl_agents.train.data import vision_token_ids

        vt = vision_token_ids(self.processor)
        input_ids = torch.tensor([list(ids)], dtype=torch.long)
        features: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == vt.image_pad).to(torch.long),
        }
        n_pads = int((input_ids == vt.image_pad).sum())
        expected = 0
        if images:
            pixels = self.processor.image_processor(images=images, return_tensors="pt")
            features["pixel_values"] = pixels["pixel_values"]
            features["image_grid_thw"] = pixels["image_grid_thw"]
            expected = int(pixels["image_grid_thw"].prod(-1).sum()) // vt.merge_size**2
        if n_pads != expected:
            raise ValueError(
                f"conversation {index}: the token-in prompt holds {n_pads} <|image_pad|> tokens "
                f"but its {len(images)} image(s) give {expected} features"
            )
        return features

    def _collate(self, items: list[_Prepared]) -> dict[str, Any]:
        """Left-pad the per-token features, concatenate the image features in row order."""
        import torch
        from torch.nn.functional import pad

        def per_token(value: Any, item: _Prepared) -> bool:
            return (
                isinstance(value, torch.Tensor)
                and value.dim() == 2
                and tuple(value.shape) == (1, item.prompt_tokens)
            )

        length = max(it.prompt_tokens for it in items)
        keys = list(dict.fromkeys(k for it in items for k in it.features))
        batch: dict[str, Any] = {}
        for key in keys:
            values = [it.features.get(key) for it in items]
            if all(per_token(v, it) for v, it in zip(values, items, strict=True)):
                # input_ids, attention_mask, mm_token_type_ids (M-RoPE needs it: without it
                # generate silently gives image tokens text positions)
                fill = self.pad_id if key == "input_ids" else 0
                padded = [pad(v, (length - v.shape[1], 0), value=fill) for v in values]
                batch[key] = torch.cat(padded, dim=0)
            else:  # pixel_values, image_grid_thw: absent for text-only rows
                present = [v for v in values if v is not None]
                if all(isinstance(v, torch.Tensor) for v in present):
                    batch[key] = torch.cat(present, dim=0)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _stop_criterion(self, stop: tuple[str, ...]) -> Any:
        if stop not in self._stop_criteria:
            from transformers import StopStringCriteria

            self._stop_criteria[stop] = StopStringCriteria(
                tokenizer=self.tokenizer, stop_strings=list(stop)
            )
        return self._stop_criteria[stop]

    def _generate_batch(
        self, items: list[_Prepared], rows: list[SamplingParams], seeds: list[int]
    ) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        batch = self._collate(items)
        prompt_len = int(batch["input_ids"].shape[1])
        want_lp = any(p.logprobs for p in rows)
        sampler = _make_sampler(rows, seeds, self.device, want_lp)
        stops = {_stops(p) for p in rows if _stops(p)}
        stopper = _make_stopper(
            rows, prompt_len, self.eos_ids, {s: self._stop_criterion(s) for s in stops}, self.device
        )
        clean = GenerationConfig(
            bos_token_id=getattr(self.model.generation_config, "bos_token_id", None),
            eos_token_id=self.eos_ids,
            pad_token_id=self.pad_id,
        )
        model = self.model
        saved, was_training = model.generation_config, model.training
        model.generation_config = clean  # nothing inherited from the checkpoint's config
        model.eval()  # a trainer may share the model: its mode is restored below
        try:
            # no_grad, not inference_mode: the model caches tensors (M-RoPE deltas) that a
            # later training forward may touch
            with torch.no_grad():
                sequences = model.generate(
                    **batch,
                    max_new_tokens=max(p.max_tokens for p in rows),
                    do_sample=False,
                    num_beams=1,
                    logits_processor=LogitsProcessorList([sampler]),
                    stopping_criteria=StoppingCriteriaList([stopper]),
                )
        finally:
            model.generation_config = saved
            model.train(was_training)
        generated = sequences[:, prompt_len:].cpu()
        end_step = stopper.end_step.cpu().tolist()
        reasons = stopper.reason.cpu().tolist()
        logprobs = torch.stack(sampler.logprobs, dim=1).cpu() if want_lp else None
        out = []
        for r, p in enumerate(rows):
            end = end_step[r] if end_step[r] > 0 else generated.shape[1]
            ids = generated[r, :end].tolist()
            reason = reasons[r] if end_step[r] > 0 else _LENGTH
            text, stop_reason = self._finish_text(ids, _stops(p), reason)
            out.append(
                Completion(
                    text=text,
                    finish_reason="length" if reason == _LENGTH else "stop",
                    stop_reason=stop_reason,
                    token_ids=tuple(ids),
                    logprobs=tuple(logprobs[r, :end].tolist()) if p.logprobs else None,
                    prompt_tokens=items[r].prompt_tokens,
                    prompt_token_ids=items[r].prompt_ids,
                )
            )
        return out

    def _finish_text(
        self, ids: list[int], stop: Sequence[str], reason: int
    ) -> tuple[str, str | None]:
        """Decoded text (no special tokens), cut right after the first stop string; its reason."""
        text = self.tokenizer.decode(
            ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        if reason != _STOP:
            return text, None
        # the stop string that ended first (a token may complete one and run past it)
        raw = self.tokenizer.decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        found = [(raw.find(s) + len(s), s) for s in stop if s and s in raw]
        if not found:  # completed across the prompt boundary: nothing to cut
            return text, None
        stop_reason = min(found)[1]
        cut = text.find(stop_reason)
        if cut >= 0:
            text = text[: cut + len(stop_reason)]
        return text, stop_reason

"""Training token streams of trajectories, built by construction from the ids the rollout recorded
(docs/grpo.md#token-streams).

A GRPO update must score exactly the tokens the policy sampled, under exactly the context it
sampled them in. Decoding a turn to text and tokenizing the transcript again does not give that
back: BPE merges across turn boundaries, a stop string completed in the middle of a token, an
EOS the text no longer shows, and loss masks found by searching token patterns in the re-tokenized
text (a `\\n` before `<|im_start|>user` ending up trainable) were all upstream bugs. So the stream
is assembled from pieces whose ids are known:

    prompt  = the ids the backend fed the model on turn 0 (`Completion.prompt_token_ids`: system,
              question with the frame's image pads expanded, up to `<|im_start|>assistant\\n`)
    response = for each turn t:
      G_t  mask 1  the sampled ids as returned (a stop string's tokens and an EOS included)
      E_t  mask 0  `<|im_end|>`, only when turn t stopped on a stop string (not on EOS, not on
                   the token cap): the end of turn the chat template would have written
      O_t  mask 0  `\\n<|im_start|>user\\n` + the observation text with the crop as
                   `<|vision_start|>` + `<|image_pad|>` × k + `<|vision_end|>` +
                   `<|im_end|>\\n<|im_start|>assistant\\n` (only when the episode went on)
      F    mask 0  the forced prefix, right after the O_t that spent the image budget
                   (docs/protocol.md#forced-final-answer)

Only G is generated, so only G is trained; an overlong trajectory (`Trajectory.overlong`) has its
whole mask 0. Each text piece is tokenized on its own and lies between special tokens, where a
tokenizer splits anyway, so the pieces equal the chat template's rendering of the same turns
(tests check it). The rollout loop feeds a token-input policy this same stream on every later
turn (`Conversation.prompt_token_ids`), so the model conditions on exactly what is trained.

Images of a stream are the trajectory's `[frame, crop_1, ...]` in order
(`vigorl_agents.replay.trajectory_images`), the first `TokenStream.num_images` of them (a crop
made on the last turn, e.g. at the turn limit, is not in the stream).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vigorl_env.protocol import IMAGE_MARKER

if TYPE_CHECKING:
    from vigorl_agents.rollout import Trajectory, TurnRecord

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"
END_OF_TEXT = "<|endoftext|>"

SEGMENT_KINDS = ("G", "E", "O", "F")
"""Segment kinds of a response; only "G" (generated) has mask 1."""


def _smart_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """The Qwen2-VL image processor's resize rule (transformers' `smart_resize`): the size an
    image is processed at. Model frames and crops are already at it (docs/geometry.md)."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class TokenBuilder:
    """The ids of every piece of a stream for one model family (Qwen2-VL / Qwen2.5-VL chatml).

    `from_processor` reads the special ids from the processor's tokenizer and the image geometry
    (patch size, merge size, pixel bounds) from its image processor, so an image's pad count is
    the one the processor (and vLLM) gives it. Text pieces are tokenized once and cached.
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        patch_size: int,
        merge_size: int,
        min_pixels: int,
        max_pixels: int,
    ) -> None:
        self.tokenizer = tokenizer
        ids = tokenizer.convert_tokens_to_ids(
            [IM_START, IM_END, IMAGE_PAD, VISION_START, VISION_END]
        )
        self.im_start, self.im_end, self.image_pad, self.vision_start, self.vision_end = (
            int(i) for i in ids
        )
        ends = {self.im_end}
        eot = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
        if isinstance(eot, int) and eot != getattr(tokenizer, "unk_token_id", None):
            ends.add(int(eot))
        if getattr(tokenizer, "eos_token_id", None) is not None:
            ends.add(int(tokenizer.eos_token_id))
        self.end_ids = frozenset(ends)
        """Ids that end an assistant turn by themselves (no `<|im_end|>` is appended after them)."""
        self.patch_size, self.merge_size = int(patch_size), int(merge_size)
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self._text = functools.lru_cache(maxsize=256)(self._encode)

    @classmethod
    def from_processor(cls, processor: Any) -> TokenBuilder:
        """The builder of a Hugging Face Qwen2-VL / Qwen2.5-VL processor."""
        from vigorl_agents.models.load import processor_pixel_bounds

        ip = processor.image_processor
        lo, hi = processor_pixel_bounds(processor)
        return cls(
            processor.tokenizer,
            patch_size=int(ip.patch_size),
            merge_size=int(ip.merge_size),
            min_pixels=lo,
            max_pixels=hi,
        )

    @classmethod
    def for_policy(cls, policy: Any) -> TokenBuilder:
        """The builder of a policy's model: its processor (transformers backend) or the processor
        loaded from its model folder with its pixel bounds (vLLM engine)."""
        processor = getattr(policy, "processor", None)
        if processor is None:
            from transformers import AutoProcessor

            from vigorl_agents.models.load import set_processor_pixel_bounds

            model = getattr(policy, "model", None)
            if not isinstance(model, str):
                raise ValueError(
                    f"cannot tell the tokenizer of {type(policy).__name__}: pass token_builder="
                    "TokenBuilder.from_processor(processor)"
                )
            try:
                processor = AutoProcessor.from_pretrained(model)
            except (OSError, ValueError) as exc:
                raise ValueError(
                    f"cannot load the processor of {type(policy).__name__} model {model!r} "
                    f"({exc}); pass token_builder=TokenBuilder.from_processor(processor)"
                ) from exc
            set_processor_pixel_bounds(
                processor,
                min_pixels=getattr(policy, "min_pixels", None),
                max_pixels=getattr(policy, "max_pixels", None),
            )
        return cls.from_processor(processor)

    # ------------------------------------------------------------------ pieces
    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def text(self, text: str) -> list[int]:
        """Ids of a text piece (special tokens in it recognized), tokenized on its own."""
        return list(self._text(text)) if text else []

    def image_tokens(self, width: int, height: int) -> int:
        """`<|image_pad|>` count of a `width`×`height` image: (h/patch)·(w/patch)/merge² at the
        size the processor resizes it to (a model frame or crop is already at that size)."""
        factor = self.patch_size * self.merge_size
        h, w = _smart_resize(height, width, factor, self.min_pixels, self.max_pixels)
        return (h // self.patch_size) * (w // self.patch_size) // self.merge_size**2

    def image(self, width: int, height: int) -> list[int]:
        """`<|vision_start|>`, pads, `<|vision_end|>` of one image."""
        return [self.vision_start, *[self.image_pad] * self.image_tokens(width, height),
                self.vision_end]  # fmt: skip

    def observation(self, text: str, image_sizes: Sequence[Sequence[int]]) -> list[int]:
        """O_t: `\\n<|im_start|>user\\n` + `text` (each `<image>` as its image's vision block, sizes
        (w, h) in order) + `<|im_end|>\\n<|im_start|>assistant\\n`."""
        chunks = text.split(IMAGE_MARKER)
        if len(chunks) - 1 != len(image_sizes):
            raise ValueError(f"{len(chunks) - 1} <image> markers but {len(image_sizes)} images")
        chunks[0] = f"\n{IM_START}user\n{chunks[0]}"
        chunks[-1] = f"{chunks[-1]}{IM_END}\n{IM_START}assistant\n"
        ids = self.text(chunks[0])
        for size, chunk in zip(image_sizes, chunks[1:], strict=True):
            ids += self.image(int(size[0]), int(size[1]))
            ids += self.text(chunk)
        return ids

    def end_of_turn(self, token_ids: Sequence[int], finish_reason: str) -> list[int]:
        """E_t: `[<|im_end|>]` when the turn stopped on a stop string, i.e. finish reason "stop"
        and its last id is not an end token itself (the model's own `<|im_end|>` / EOS is part of
        G); nothing after an EOS or the token cap."""
        if finish_reason != "stop" or (token_ids and int(token_ids[-1]) in self.end_ids):
            return []
        return [self.im_end]

    def forced_prefix(self, prefix: str) -> list[int]:
        """F: the forced prefix's ids (empty string: none)."""
        return self.text(prefix)


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------
@dataclass
class TokenStream:
    """One trajectory as a training sequence: `prompt_ids + response_ids`, with a loss mask and
    the rollout logprobs over the response.

    `segments` are (kind, start, end) in response coordinates, kind in G/E/O/F (only G has mask
    1). `response_logprobs` holds the rollout's logprob of each G token (0.0 elsewhere, and
    everywhere if the backend returned none: `has_logprobs`). `num_images` is how many of the
    trajectory's images `[frame, crop_1, ...]` the stream holds. `overlong` streams have mask 0
    everywhere. `prompt_mismatch` counts the turns whose backend-reported prompt ids differ from
    the stream before that turn's G (0 for a token-input backend by construction; a text-in
    backend that re-tokenized a turn differently shows up here).
    """

    uid: str
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    response_logprobs: list[float] = field(default_factory=list)
    segments: list[tuple[str, int, int]] = field(default_factory=list)
    num_images: int = 1
    overlong: bool = False
    prompt_mismatch: int = 0
    has_logprobs: bool = True

    def add(self, kind: str, ids: Sequence[int], logprobs: Sequence[float] | None = None) -> None:
        """Append one segment (empty ones are skipped)."""
        if kind not in SEGMENT_KINDS:
            raise ValueError(f"unknown segment kind {kind!r}")
        if not ids:
            return
        start = len(self.response_ids)
        self.response_ids.extend(int(i) for i in ids)
        self.response_mask.extend([1 if kind == "G" else 0] * len(ids))
        if logprobs is not None:
            if len(logprobs) != len(ids):
                raise ValueError(f"{len(logprobs)} logprobs for {len(ids)} tokens")
            self.response_logprobs.extend(float(x) for x in logprobs)
        else:
            self.response_logprobs.extend([0.0] * len(ids))
        self.segments.append((kind, start, len(self.response_ids)))

    def mask_all(self) -> None:
        """The overlong filter: nothing of this trajectory is trained."""
        self.overlong = True
        self.response_mask = [0] * len(self.response_ids)

    @property
    def ids(self) -> list[int]:
        """The whole sequence: prompt + response."""
        return self.prompt_ids + self.response_ids

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def trajectory_uid(traj: Trajectory) -> str:
    """`env_id/split/sample_id#episode`: names a trajectory in errors and logs."""
    return f"{traj.env_id}/{traj.split}/{traj.sample_id}#{traj.episode}"


def begin_turn(stream: TokenStream, prefix: str | None, builder: TokenBuilder) -> None:
    """Before turn t > 0 is generated: F, if the turn starts with the forced prefix."""
    if prefix:
        stream.add("F", builder.forced_prefix(prefix))


def end_turn(stream: TokenStream, turn: TurnRecord, builder: TokenBuilder) -> None:
    """After turn t was generated: count a prompt mismatch (the ids the backend reports it fed
    differ from the stream so far), then add G_t and E_t."""
    if turn.token_ids is None:
        raise ValueError(f"{stream.uid}: a turn has no token ids")
    reported = turn.prompt_token_ids
    if reported is not None and list(reported) != stream.ids:
        stream.prompt_mismatch += 1
    if turn.logprobs is None:
        stream.has_logprobs = False
    stream.add("G", turn.token_ids, turn.logprobs)
    stream.add("E", builder.end_of_turn(turn.token_ids, turn.finish_reason))


def add_observation(
    stream: TokenStream, observation: dict[str, Any], builder: TokenBuilder
) -> None:
    """O_t of an episode that went on; `observation` = {"text", "image_sizes": [[w, h], ...]}."""
    stream.add("O", builder.observation(observation["text"], observation["image_sizes"]))
    stream.num_images += len(observation["image_sizes"])


def tokenize_trajectory(traj: Trajectory, builder: TokenBuilder) -> TokenStream:
    """The training stream of `traj` (see the module docstring), from its recorded ids.

    Needs a trajectory recorded with `run_episodes(..., keep_tokens=True)`: turn 0's
    `prompt_token_ids`, every turn's `token_ids`, and the observation after each turn that
    went on; raises ValueError when they are missing. The rollout loop builds the stream it
    feeds a token-input policy with the same three functions (`begin_turn`, `end_turn`,
    `add_observation`), so the two agree by construction.
    """
    uid = trajectory_uid(traj)
    if not traj.turns or traj.turns[0].prompt_token_ids is None:
        raise ValueError(
            f"{uid}: turn 0 has no prompt token ids (run the rollout with keep_tokens=True over a "
            "backend that reports them)"
        )
    stream = TokenStream(uid=uid, prompt_ids=list(traj.turns[0].prompt_token_ids))
    for t, turn in enumerate(traj.turns):
        if t > 0:
            begin_turn(stream, turn.prefix, builder)
        end_turn(stream, turn, builder)
        if t + 1 < len(traj.turns):
            if turn.observation is None:
                raise ValueError(f"{uid}: turn {t} went on but recorded no observation")
            add_observation(stream, turn.observation, builder)
    if traj.overlong:
        stream.mask_all()
    return stream

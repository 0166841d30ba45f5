"""The Policy protocol: given episodes' histories, return the next assistant turn (docs/backends.md).

Batch-first and async, so one rollout loop can keep many episodes in flight over any backend (vLLM
OpenAI server, in-process vLLM engine, transformers). Backends differ in what they can return
(token ids and logprobs where available) but never in what the text means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from vigorl_agents.chat import IMAGE_TOKEN, chat_messages
from vigorl_env.protocol import STOP_STRINGS

ImageLike = Image.Image | np.ndarray


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings of one request (defaults: the evaluation decoding, docs/evaluation.md#protocol)."""

    n: int = 1
    temperature: float = 0.5
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 2048
    stop: tuple[str, ...] = STOP_STRINGS
    seed: int | None = 42
    logprobs: bool = False
    regex: str | None = None
    """Constrain the output to this regular expression (vLLM structured outputs). For scripted
    benchmarks and tests that need format-following text from a random model; HF refuses it."""
    logit_bias: tuple[tuple[int, float], ...] = ()
    """(token id, bias) pairs added to the logits before sampling; GRPO rollouts put −100 on the
    vision tokens (`<|image_pad|>`, `<|vision_start|>`, `<|vision_end|>`) so that a sampled
    response never contains one (docs/grpo.md#sampling). A tuple, so the params stay hashable."""

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n > 1 and self.temperature == 0:
            raise ValueError(
                "n > 1 with temperature 0 gives n identical samples; use temperature > 0"
            )

    def with_(self, **changes) -> SamplingParams:
        return replace(self, **changes)


@dataclass
class Message:
    """One chat message. `text` holds one `<image>` marker per entry of `images`, in order."""

    role: Literal["system", "user", "assistant"]
    text: str
    images: list[ImageLike] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.text.count(IMAGE_TOKEN) != len(self.images):
            raise ValueError(
                f"{self.role} message has {self.text.count(IMAGE_TOKEN)} <image> markers but "
                f"{len(self.images)} images"
            )


@dataclass
class Conversation:
    """An episode's history as the model sees it; `assistant_prefix` is continued in the same turn.

    `prompt_token_ids` (token-in, docs/backends.md#token-in-and-token-out): when set, a backend
    with `supports_token_input = True` feeds exactly these ids (image pads expanded, the forced
    prefix included) together with `images` in order, instead of rendering `messages`; the
    rollout loop sets it so that the policy conditions on exactly the training token stream.
    `messages` stay the readable history (and what a text-in backend renders).
    """

    messages: list[Message]
    assistant_prefix: str | None = None
    prompt_token_ids: list[int] | None = None

    @property
    def images(self) -> list[ImageLike]:
        return [img for m in self.messages for img in m.images]

    def chat_messages(
        self, image_part: Callable[[ImageLike], dict[str, Any]], *, with_prefix: bool = True
    ) -> list[dict[str, Any]]:
        """Chat-template messages (`vigorl_agents.chat.chat_messages`, the one builder); each
        backend only says how an image travels (`image_part`). `with_prefix=False` leaves out the
        forced assistant prefix (for a backend that appends it to the rendered prompt itself)."""
        return chat_messages(
            [(m.role, m.text, m.images) for m in self.messages],
            image_part,
            assistant_prefix=self.assistant_prefix if with_prefix else None,
        )


@dataclass(frozen=True)
class Completion:
    """One sampled assistant turn.

    `text` excludes the assistant prefix and special tokens; a matched stop string is kept
    (docs/protocol.md#limits-and-stop-strings). `finish_reason` is "stop" (a stop string or EOS) or "length" (the token cap).
    `token_ids` are the generated ids exactly as sampled (a stop string's last token and an EOS
    included); `logprobs` theirs, when asked for. `prompt_token_ids` are the exact ids the backend
    fed the model for this request (image pads expanded, the forced prefix included): what a
    training token stream must start with (docs/backends.md#token-in-and-token-out).
    """

    text: str
    finish_reason: str
    stop_reason: str | None = None
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[float, ...] | None = None
    prompt_tokens: int | None = None
    prompt_token_ids: tuple[int, ...] | None = None


def params_per_conversation(
    params: SamplingParams | Sequence[SamplingParams], count: int
) -> list[SamplingParams]:
    """Normalize `generate`'s params argument to one `SamplingParams` per conversation."""
    if isinstance(params, SamplingParams):
        return [params] * count
    params = list(params)
    if len(params) != count:
        raise ValueError(f"{len(params)} sampling params for {count} conversations")
    return params


class RulePolicy:
    """Base of policies computed in-process by rules, not a model: baselines, the scripted tree-search
    teacher, oracles, test scripts. A subclass writes `complete(conv, params)` (the `params.n`
    completions of one conversation); `generate` maps it over the batch and there is nothing to
    close. One place for the batch plumbing every such policy would otherwise repeat."""

    def complete(self, conv: Conversation, params: SamplingParams) -> list[Completion]:
        raise NotImplementedError

    async def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        per = params_per_conversation(params, len(conversations))
        return [self.complete(c, p) for c, p in zip(conversations, per, strict=True)]

    async def aclose(self) -> None:
        return None


class PolicyRequestError(ValueError):
    """The backend refused a request (HTTP 4xx): retrying the same request cannot help.

    `endpoint` names the server (or the in-process engine), `message` is what it said.
    """

    def __init__(self, endpoint: str, status_code: int | None, message: str) -> None:
        self.endpoint = endpoint
        self.status_code = status_code
        self.message = message
        status = f" (HTTP {status_code})" if status_code is not None else ""
        super().__init__(f"{endpoint} refused the request{status}: {message}")


class PolicyUnavailableError(RuntimeError):
    """No endpoint answered within the retry budget (connection errors, timeouts, 5xx).

    `kept` says what survived the failure (the evaluation fills it in: how many episodes finished
    and the file that holds them), so the message tells the user what a rerun will resume from.
    Defined here, not in a backend, so the evaluation can catch it without importing openai.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        attempts: int,
        last_error: BaseException,
        *,
        timeout_s: float | None = None,
        kept: str | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.attempts = attempts
        self.last_error = last_error
        self.timeout_s = timeout_s
        self.kept = kept
        per_request = f" ({timeout_s:g} s each)" if timeout_s is not None else ""
        message = (
            f"no answer from {', '.join(self.endpoints)} after {attempts} attempts{per_request}; "
            f"last error: {type(last_error).__name__}: {last_error}"
        )
        if kept:
            message = f"{message.rstrip('.')}. {kept}"
        super().__init__(message)

    def with_kept(self, kept: str) -> PolicyUnavailableError:
        """The same failure, with what was kept."""
        return PolicyUnavailableError(
            self.endpoints, self.attempts, self.last_error, timeout_s=self.timeout_s, kept=kept
        )


@runtime_checkable
class Policy(Protocol):
    """Anything that turns conversations into next assistant turns.

    A policy that can be fed token ids (`Conversation.prompt_token_ids`) says so with a class
    attribute `supports_token_input = True`; any other policy renders `messages` (text-in).
    """

    async def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        """One list of `n` completions per conversation, in input order.

        `params` is one setting for all conversations or one per conversation (the rollout loop
        gives each request its own seed so results do not depend on how requests were batched).
        """
        ...

    async def aclose(self) -> None: ...

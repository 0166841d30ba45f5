"""Policy over one or more vLLM OpenAI-compatible servers (async, load-balanced, retried).

One chat-completions request per conversation (its `n` samples share the prompt's prefill), sent
as soon as the conversation asks (`continuous_batching`: the server batches concurrent requests
itself, so the rollout loop does not hold requests back to group them). Request bodies are built
inline on the event loop (a few milliseconds; a worker thread would make them queue for the
interpreter lock), except the PNG encoding of large new images, which runs in a thread.

Images are sent once per endpoint: each carries its content id (`uuid`), and a later request to an
endpoint that has answered a request with that image refers to it by id (vLLM's multimodal
processor cache). When the server has evicted it (400 "Cache miss"), the request is sent again at
once with the image data, and the endpoint forgets the id. A conversation goes to the endpoint that
holds its images (episode-to-endpoint affinity) unless that endpoint is down or has
`affinity_slack` more requests in flight than the least-loaded one; otherwise to the endpoint with
the fewest requests in flight. Connection errors, timeouts and 5xx answers
are retried with exponential backoff, on another endpoint when one is healthy, so a server that
dies mid-batch costs latency, not episodes. A 4xx answer is the caller's mistake (too many stop
strings or images, a prompt longer than the model) and raises at once with the server's message.
The openai client's own retries are off, so these are the only ones.

Timeouts and retries (docs/backends.md#timeouts-and-retries): each attempt may take `timeout`
seconds (default 120: the whole generation, since the answer is not streamed — raise it for long
generations on a loaded server); a request is tried at most `1 + max_retries` times (default 3
retries) and an endpoint that failed backs off 1, 2, 4 s (`backoff`). Every retry is logged with its
endpoint, and the last failure raises `PolicyUnavailableError` naming the endpoints, so a stalled
server stops a run after minutes, loudly, instead of an hour in silence.

vLLM request extensions used (vLLM ≥ 0.11; checked on 0.32): `top_k`,
`include_stop_str_in_output`, `skip_special_tokens`, `return_token_ids`,
`continue_final_message` / `add_generation_prompt` (forced prefix,
docs/protocol.md#forced-final-answer), `structured_outputs` (regex), image `uuid`s, the
`stop_reason` / `token_ids` fields of each returned choice and the response's `prompt_token_ids`
(the ids the server fed the model, image pads expanded: `Completion.prompt_token_ids`). The server
is text-in: it renders the conversation itself (docs/backends.md#token-in-and-token-out).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openai

from vigorl_agents.backends.openai_messages import (
    ImageURLCache,
    chat_template_flags,
    to_openai_messages,
)
from vigorl_agents.policy import (
    Completion,
    Conversation,
    ImageLike,
    PolicyRequestError,
    PolicyUnavailableError,
    SamplingParams,
    params_per_conversation,
)

log = logging.getLogger(__name__)

CACHE_MISS = "cache miss"
"""What vLLM's 400 answer says (case-insensitively) when a request refers to an image id it does
not hold (0.32: "Cache miss for image at index 0 but data is not provided.")."""


class _Held:
    """Image ids an endpoint has processed, as far as this client knows (LRU, bounded)."""

    def __init__(self, max_items: int = 65536) -> None:
        self.max_items = max_items
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, uid: object) -> bool:
        return uid in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self._ids[uid] = None
            self._ids.move_to_end(uid)
        while len(self._ids) > self.max_items:
            self._ids.popitem(last=False)

    def discard(self, uids: Iterable[str]) -> None:
        for uid in uids:
            self._ids.pop(uid, None)

    def clear(self) -> None:
        self._ids.clear()


@dataclass
class _Endpoint:
    url: str
    client: openai.AsyncOpenAI
    in_flight: int = 0
    down_until: float = 0.0  # monotonic time before which it is not tried unless all are down
    failures: int = 0  # consecutive
    held: _Held = field(default_factory=_Held)
    refer: bool = True  # refer to held images by id (off if the server keeps no image cache)
    references: int = 0
    misses: int = 0


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 429)
    return isinstance(
        exc, openai.APIConnectionError | openai.APITimeoutError | asyncio.TimeoutError
    )


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("message"):
            return str(body["message"])
    return str(exc.message)


def _pixels(image: ImageLike) -> int:
    if isinstance(image, np.ndarray):
        return int(image.shape[0] * image.shape[1]) if image.ndim >= 2 else int(image.size)
    return image.width * image.height


def sampling_fields(params: SamplingParams) -> tuple[dict[str, Any], dict[str, Any]]:
    """(top-level, `extra_body`) request fields for every field of `params` (each one is sent;
    tests check that changing any field changes the request)."""
    if params.n > 1 and params.temperature == 0:  # SamplingParams refuses it; belt and braces
        raise ValueError("n > 1 with temperature 0 gives identical samples")
    top: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop),
        "logprobs": params.logprobs,
    }
    extra: dict[str, Any] = {"top_k": params.top_k}
    if params.seed is not None:
        top["seed"] = params.seed
    if params.regex is not None:
        extra["structured_outputs"] = {"regex": params.regex}
    if params.logit_bias:
        top["logit_bias"] = {str(int(t)): float(b) for t, b in params.logit_bias}
    return top, extra


class VLLMServerPolicy:
    """`Policy` backed by vLLM servers at `endpoints` (base URLs such as http://127.0.0.1:8000/v1).

    `max_concurrency` bounds the requests in flight over all endpoints together. Each request is
    tried at most `1 + max_retries` times; after its k-th consecutive failure an endpoint backs off
    `backoff[0] * 2**(k-1)` seconds, at most `backoff[1]` (defaults 1, 2, 4 s). `timeout` is the
    limit of one attempt, in seconds. `refer_images=False` sends every image in full with every
    request (for a server started without its multimodal processor cache). New images of more
    than `thread_encode_pixels` pixels in all are hashed and PNG-encoded in a worker thread.
    `stats` counts requests, images sent in full, images referred to by id and cache-miss resends.
    """

    continuous_batching = True
    """Send each conversation's request as soon as it is asked for: the server batches itself."""

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        model: str,
        *,
        max_concurrency: int = 64,
        max_retries: int = 3,
        backoff: tuple[float, float] = (1.0, 4.0),
        timeout: float = 120.0,
        api_key: str = "EMPTY",
        image_format: str = "png",
        refer_images: bool = True,
        affinity_slack: int = 8,
        thread_encode_pixels: int = 1_000_000,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("VLLMServerPolicy needs at least one endpoint")
        if max_concurrency < 1 or max_retries < 0 or affinity_slack < 0:
            raise ValueError(
                "max_concurrency must be >= 1, max_retries >= 0 and affinity_slack >= 0"
            )
        if timeout <= 0 or backoff[0] < 0 or backoff[1] < backoff[0]:
            raise ValueError(
                f"need timeout > 0 and 0 <= backoff[0] <= backoff[1], got {timeout}, {backoff}"
            )
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.image_format = image_format
        self.image_cache = ImageURLCache()
        self.refer_images = refer_images
        self.affinity_slack = affinity_slack
        self.thread_encode_pixels = thread_encode_pixels
        self.max_concurrency = max_concurrency
        self.stats: Counter[str] = Counter()
        self._client_kwargs = {"api_key": api_key, "timeout": timeout, "max_retries": 0}
        self._endpoints = [_Endpoint(url.rstrip("/"), self._client(url)) for url in endpoints]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._clients_fresh = True
        self._rr = 0

    def _client(self, url: str) -> openai.AsyncOpenAI:
        # max_retries=0: the openai client's own retries are off, ours are the only ones
        return openai.AsyncOpenAI(base_url=url.rstrip("/"), **self._client_kwargs)

    def _bind_loop(self) -> asyncio.Semaphore:
        """Clients and the semaphore belong to one event loop; a new loop gets fresh ones.

        So `asyncio.run(policy.generate(...))` can be called repeatedly (each call has its own
        loop; pooled connections of a closed loop cannot be reused).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._semaphore is None:
            if not self._clients_fresh:  # used by another loop, or closed
                for ep in self._endpoints:
                    ep.client = self._client(ep.url)
            self._clients_fresh = False
            self._loop = loop
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
        return self._semaphore

    @property
    def endpoints(self) -> list[str]:
        return [ep.url for ep in self._endpoints]

    # ----------------------------------------------------------------- Policy
    async def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        per_conv = params_per_conversation(params, len(conversations))
        if any(c.prompt_token_ids is not None for c in conversations):
            # text-in only: rendering the messages instead would silently feed other ids
            raise ValueError(
                "VLLMServerPolicy is text-in: it cannot feed Conversation.prompt_token_ids "
                "(docs/backends.md#token-in-and-token-out)"
            )
        self._bind_loop()
        if len(conversations) == 1:  # the rollout loop's case: no gather
            return [await self._one(conversations[0], per_conv[0])]
        return list(
            await asyncio.gather(
                *(self._one(c, p) for c, p in zip(conversations, per_conv, strict=True))
            )
        )

    async def aclose(self) -> None:
        # Connections opened by another (finished) event loop cannot be closed from this one;
        # they are dropped with their clients.
        if self._loop is None or self._loop is asyncio.get_running_loop():
            for ep in self._endpoints:
                await ep.client.close()
        self.image_cache.clear()
        self._loop = self._semaphore = None  # a later generate() opens new clients

    async def __aenter__(self) -> VLLMServerPolicy:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -------------------------------------------------------------- requests
    def request_body(
        self, conv: Conversation, params: SamplingParams, held: _Held | None = None
    ) -> dict[str, Any]:
        """The JSON body of one chat-completions request (vLLM's extensions inline): every image
        with its content id, in full, or as a reference where `held` (an endpoint's) has it."""
        top, extra = sampling_fields(params)
        return {
            "model": self.model,
            "messages": to_openai_messages(
                conv,
                image_format=self.image_format,
                cache=self.image_cache,
                held=held.__contains__ if held is not None else None,
            ),
            **top,
            **extra,
            "include_stop_str_in_output": True,
            "skip_special_tokens": True,
            "return_token_ids": True,
            **chat_template_flags(conv),
        }

    async def _one(self, conv: Conversation, params: SamplingParams) -> list[Completion]:
        images = conv.images
        cache = self.image_cache
        if sum(_pixels(i) for i in images if not cache.knows(i)) >= self.thread_encode_pixels:
            # hashing a large new image takes a while: keep the event loop free meanwhile
            uids = await asyncio.to_thread(lambda: [cache.uuid(i) for i in images])
        else:
            uids = [cache.uuid(i) for i in images]
        async with self._bind_loop():
            response = await self._send(conv, params, images, uids)
        return _completions(response)

    async def _create(self, ep: _Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        """One HTTP request; the answer as parsed JSON.

        The body goes out as JSON bytes through the client's plain `post`: `chat.completions
        .create` first walks the whole body through its typed-dict transform (every part, every
        base64 string), which cost ~24 ms of event-loop time per multi-image request here, more
        than building the body. Errors are the client's (`openai.APIStatusError`, ...) as before.
        """
        payload = json.dumps(body).encode()
        return await ep.client.post("/chat/completions", content=payload, cast_to=dict)

    def _pick(self, uids: Sequence[str], avoid: _Endpoint | None) -> _Endpoint:
        now = time.monotonic()
        healthy = [ep for ep in self._endpoints if ep.down_until <= now]
        if avoid is not None and len(healthy) > 1:
            healthy = [ep for ep in healthy if ep is not avoid] or healthy
        pool = healthy or [min(self._endpoints, key=lambda ep: ep.down_until)]
        self._rr += 1
        n = len(pool)
        # least in flight; ties broken round-robin so idle endpoints share the load evenly
        least = min((pool[(self._rr + i) % n] for i in range(n)), key=lambda ep: ep.in_flight)
        if n > 1 and uids and self.refer_images:
            # affinity: the endpoint holding most of the conversation's images, unless busier
            held = [(sum(u in ep.held for u in uids), ep) for ep in pool]
            count, holder = max(held, key=lambda t: t[0])
            if count and holder.in_flight <= least.in_flight + self.affinity_slack:
                return holder
        return least

    async def _send(
        self,
        conv: Conversation,
        params: SamplingParams,
        images: Sequence[ImageLike],
        uids: Sequence[str],
    ) -> Any:
        attempts = 0
        last: _Endpoint | None = None
        tried: list[str] = []
        resend: _Endpoint | None = None  # the endpoint that missed an image: send it all again
        while True:
            if resend is not None:
                ep, held = resend, None
            else:
                ep = self._pick(uids, avoid=last)
                wait = ep.down_until - time.monotonic()
                if wait > 0:  # every endpoint is backing off: wait for the first to come back
                    await asyncio.sleep(wait)
                attempts += 1
                held = ep.held if self.refer_images and ep.refer else None
            if ep.url not in tried:
                tried.append(ep.url)
            refs = [u for u in uids if held is not None and u in held]
            ep.in_flight += 1
            try:
                await self._encode_large(images, uids, refs)
                body = self.request_body(conv, params, held)
                response = await self._create(ep, body)
            except openai.APIStatusError as exc:
                if not _retryable(exc):
                    message = _server_message(exc)
                    if refs and exc.status_code == 400 and CACHE_MISS in message.lower():
                        self._missed(ep, refs, message)
                        resend = ep
                        continue
                    raise PolicyRequestError(ep.url, exc.status_code, message) from None
                error: BaseException = exc
            except (TimeoutError, openai.APIConnectionError) as exc:
                error = exc
            else:
                ep.failures = 0
                ep.down_until = 0.0
                ep.held.add(uids)
                ep.references += len(refs)
                self.stats["requests"] += 1
                self.stats["images_sent"] += len(uids) - len(refs)
                self.stats["images_referenced"] += len(refs)
                return response
            finally:
                ep.in_flight -= 1
            resend = None
            ep.failures += 1
            ep.held.clear()  # a server that failed may have restarted with empty caches
            lo, hi = self.backoff
            delay = min(hi, lo * 2 ** (ep.failures - 1))
            ep.down_until = max(ep.down_until, time.monotonic() + delay)
            last = ep
            if attempts > self.max_retries:
                log.error(
                    "vLLM request to %s failed (%s: %s); attempt %d/%d, giving up",
                    ep.url, type(error).__name__, error or "timed out", attempts, attempts,
                )  # fmt: skip
                raise PolicyUnavailableError(
                    tried, attempts, error, timeout_s=self.timeout
                ) from error
            log.warning(
                "vLLM request to %s failed (%s: %s); attempt %d/%d, that endpoint backs off %.1f s",
                ep.url, type(error).__name__, error or "timed out", attempts,
                self.max_retries + 1, delay,
            )  # fmt: skip

    async def _encode_large(
        self, images: Sequence[ImageLike], uids: Sequence[str], refs: Sequence[str]
    ) -> None:
        """PNG-encode in a worker thread the images this request sends in full and that are not
        encoded yet, if they are large (Pillow's encoder releases the interpreter lock); small
        ones are encoded inline while the body is built, where a thread hop costs more."""
        cache, fmt = self.image_cache, self.image_format
        todo = [
            i
            for i, u in zip(images, uids, strict=True)
            if u not in refs and not cache.has_url(u, fmt)
        ]
        if sum(_pixels(i) for i in todo) >= self.thread_encode_pixels:
            await asyncio.to_thread(lambda: [cache.get(i, fmt) for i in todo])

    def _missed(self, ep: _Endpoint, refs: Sequence[str], message: str) -> None:
        """The endpoint no longer holds an image this request referred to: forget the request's
        references there (the resend carries them in full); stop referring to images on an
        endpoint that misses most of them (a server without its multimodal processor cache)."""
        ep.held.discard(refs)
        ep.misses += 1
        self.stats["cache_miss_resends"] += 1
        log.info("%s no longer holds an image (%s); resending it in full", ep.url, message)
        if ep.refer and ep.misses >= 8 and 2 * ep.misses > ep.references:
            ep.refer = False
            log.warning(
                "%s missed %d of %d image references (is its multimodal processor cache off?); "
                "sending every image in full to it from now on",
                ep.url, ep.misses, ep.references + ep.misses,
            )  # fmt: skip


def _completions(response: dict[str, Any]) -> list[Completion]:
    """vLLM's choices (parsed JSON) → `Completion`s, in choice-index order."""
    usage = response.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens")
    # the ids the server fed the model (image pads expanded), returned with `return_token_ids`
    prompt_ids = response.get("prompt_token_ids")
    prompt_ids = tuple(prompt_ids) if prompt_ids is not None else None
    out = []
    for choice in sorted(response["choices"], key=lambda c: c["index"]):
        stop_reason = choice.get("stop_reason")
        token_ids = choice.get("token_ids")
        logprobs = None
        content = (choice.get("logprobs") or {}).get("content")
        if content is not None:
            logprobs = tuple(float(t["logprob"]) for t in content)
        out.append(
            Completion(
                text=choice["message"].get("content") or "",
                finish_reason=choice["finish_reason"],
                # vLLM gives the matched stop string, a stop token id (int) or None (EOS)
                stop_reason=stop_reason if isinstance(stop_reason, str) else None,
                token_ids=tuple(token_ids) if token_ids is not None else None,
                logprobs=logprobs,
                prompt_tokens=prompt_tokens,
                prompt_token_ids=prompt_ids,
            )
        )
    return out

"""Policy over one or more vLLM OpenAI-compatible servers (async, load-balanced, retried).

One chat-completions request per conversation (its `n` samples share the prompt's prefill), sent
to the endpoint with the fewest requests in flight. Connection errors, timeouts and 5xx answers
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
docs/protocol.md#forced-final-answer), and the
`stop_reason` / `token_ids` fields of each returned choice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai

from vigorl_agents.backends.openai_messages import (
    ImageURLCache,
    chat_template_flags,
    to_openai_messages,
)
from vigorl_agents.policy import (
    Completion,
    Conversation,
    PolicyRequestError,
    PolicyUnavailableError,
    SamplingParams,
    params_per_conversation,
)

log = logging.getLogger(__name__)


@dataclass
class _Endpoint:
    url: str
    client: openai.AsyncOpenAI
    in_flight: int = 0
    down_until: float = 0.0  # monotonic time before which it is not tried unless all are down
    failures: int = 0  # consecutive


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


class VLLMServerPolicy:
    """`Policy` backed by vLLM servers at `endpoints` (base URLs such as http://127.0.0.1:8000/v1).

    `max_concurrency` bounds the requests in flight over all endpoints together. Each request is
    tried at most `1 + max_retries` times; after its k-th consecutive failure an endpoint backs off
    `backoff[0] * 2**(k-1)` seconds, at most `backoff[1]` (defaults 1, 2, 4 s). `timeout` is the
    limit of one attempt, in seconds.
    """

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
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        if not endpoints:
            raise ValueError("VLLMServerPolicy needs at least one endpoint")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError("max_concurrency must be >= 1 and max_retries >= 0")
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
        self.max_concurrency = max_concurrency
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
        self._bind_loop()
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
    def request_body(self, conv: Conversation, params: SamplingParams) -> dict[str, Any]:
        """The keyword arguments of `chat.completions.create` for one conversation."""
        if params.n > 1 and params.temperature == 0:  # SamplingParams refuses it; belt and braces
            raise ValueError("n > 1 with temperature 0 gives identical samples")
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(
                conv, image_format=self.image_format, cache=self.image_cache
            ),
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "stop": list(params.stop),
            "logprobs": params.logprobs,
            "extra_body": {
                "top_k": params.top_k,
                "include_stop_str_in_output": True,
                "skip_special_tokens": True,
                "return_token_ids": True,
                **chat_template_flags(conv),
            },
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.regex is not None:
            body["extra_body"]["structured_outputs"] = {"regex": params.regex}
        return body

    async def _one(self, conv: Conversation, params: SamplingParams) -> list[Completion]:
        # Encoding a large uncached image takes a while: keep the event loop free meanwhile.
        body = await asyncio.to_thread(self.request_body, conv, params)
        async with self._bind_loop():
            response = await self._send(body)
        return _completions(response)

    def _pick(self, avoid: _Endpoint | None) -> _Endpoint:
        now = time.monotonic()
        healthy = [ep for ep in self._endpoints if ep.down_until <= now]
        if avoid is not None and len(healthy) > 1:
            healthy = [ep for ep in healthy if ep is not avoid] or healthy
        pool = healthy or [min(self._endpoints, key=lambda ep: ep.down_until)]
        self._rr += 1
        n = len(pool)
        # least in flight; ties broken round-robin so idle endpoints share the load evenly
        return min((pool[(self._rr + i) % n] for i in range(n)), key=lambda ep: ep.in_flight)

    async def _send(self, body: dict[str, Any]) -> Any:
        attempts = 0
        last: _Endpoint | None = None
        tried: list[str] = []
        while True:
            ep = self._pick(avoid=last)
            wait = ep.down_until - time.monotonic()
            if wait > 0:  # every endpoint is backing off: wait for the first to come back
                await asyncio.sleep(wait)
            attempts += 1
            if ep.url not in tried:
                tried.append(ep.url)
            ep.in_flight += 1
            try:
                response = await ep.client.chat.completions.create(**body)
            except openai.APIStatusError as exc:
                if not _retryable(exc):
                    raise PolicyRequestError(
                        ep.url, exc.status_code, _server_message(exc)
                    ) from None
                error: BaseException = exc
            except (TimeoutError, openai.APIConnectionError) as exc:
                error = exc
            else:
                ep.failures = 0
                ep.down_until = 0.0
                return response
            finally:
                ep.in_flight -= 1
            ep.failures += 1
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


def _completions(response: Any) -> list[Completion]:
    """vLLM's choices → `Completion`s, in choice-index order."""
    prompt_tokens = response.usage.prompt_tokens if response.usage is not None else None
    out = []
    for choice in sorted(response.choices, key=lambda c: c.index):
        stop_reason = getattr(choice, "stop_reason", None)
        token_ids = getattr(choice, "token_ids", None)
        logprobs = None
        if choice.logprobs is not None and choice.logprobs.content is not None:
            logprobs = tuple(float(t.logprob) for t in choice.logprobs.content)
        out.append(
            Completion(
                text=choice.message.content or "",
                finish_reason=choice.finish_reason,
                # vLLM gives the matched stop string, a stop token id (int) or None (EOS)
                stop_reason=stop_reason if isinstance(stop_reason, str) else None,
                token_ids=tuple(token_ids) if token_ids is not None else None,
                logprobs=logprobs,
                prompt_tokens=prompt_tokens,
            )
        )
    return out

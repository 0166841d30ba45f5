"""Build a Policy from a backend name and a model (name or folder): one place for experiments,
benchmarks and the demo. Heavy libraries load only for the backend asked for."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

from vigorl_agents.policy import Policy

log = logging.getLogger(__name__)

BackendName = Literal["hf", "vllm-server", "vllm-engine"]


@dataclass(frozen=True)
class PolicyConfig:
    """Which model answers, through which backend."""

    backend: BackendName = "hf"
    """hf (transformers generate), vllm-server (OpenAI client; launches a local server unless
    endpoints are given) or vllm-engine (in-process vllm.LLM)."""
    model: str = "tiny-qwen2.5-vl"
    """A folder, a hub id (gsarch/ViGoRL-3b-Spatial, Qwen/Qwen2.5-VL-3B-Instruct) or tiny-qwen2.5-vl / tiny-qwen2-vl."""
    endpoints: tuple[str, ...] = ()
    """vllm-server: base URLs (http://host:port/v1) of running servers; empty = launch one here."""
    served_model_name: str | None = None
    """vllm-server: the model name the servers know (default: the launched one, or `model`)."""
    device: str | None = None
    """hf: cuda/cpu (default: cuda when available)."""
    dtype: str | None = None
    """hf / vLLM dtype (default: bf16 on GPU, fp32 on CPU)."""
    max_batch_size: int = 8
    """hf: rows per generate call."""
    min_pixels: int | None = None
    """Processor bounds; must admit the env's model frames unchanged (docs/geometry.md): min ≤ env
    min_pixels. Left None, evaluation fits the env's frames and crops to the model's own bounds."""
    max_pixels: int | None = None
    """max ≥ env max_pixels and ≥ crop area. Default: the model's own processor setting."""
    max_model_len: int = 8192
    """vLLM context length."""
    request_timeout_s: float = 120.0
    """vllm-server: limit of one request attempt in seconds (the whole generation: the answer is not
    streamed); a stalled server fails the attempt after this long. See docs/backends.md#timeouts-and-retries."""
    max_retries: int = 3
    """vllm-server: retries of a failed request (timeout, connection error, 5xx), so at most
    1 + max_retries attempts before PolicyUnavailableError."""
    retry_backoff_s: float = 1.0
    """vllm-server: an endpoint that failed waits this long before its next attempt, doubling per
    consecutive failure up to 4x (1, 2, 4 s)."""
    max_concurrency: int = 64
    """vllm-server: requests in flight at once, over all endpoints (the server batches them; raise
    it with several servers or a large `max_num_seqs`)."""


RESUME_FREE_POLICY_FIELDS = frozenset(
    {"endpoints", "served_model_name", "max_batch_size", "request_timeout_s", "max_retries",
     "retry_backoff_s", "max_concurrency"}
)  # fmt: skip
"""PolicyConfig fields that do not change what the model answers: a resumed evaluation may change
them (docs/evaluation.md#resume-and-config-fingerprints); any other change is refused."""


@contextlib.asynccontextmanager
async def open_policy(cfg: PolicyConfig) -> AsyncIterator[Policy]:
    """Yield a ready Policy; everything it started (a server, an engine) is stopped on exit."""
    with contextlib.ExitStack() as servers:
        policy = _build(cfg, servers)
        try:
            yield policy
        finally:
            await policy.aclose()


def _build(cfg: PolicyConfig, servers: contextlib.ExitStack) -> Policy:
    """The backend's policy; a server launched for it is registered on `servers`."""
    from vigorl_agents.models.load import resolve_model

    if cfg.backend == "hf":
        from vigorl_agents.backends.hf import HFPolicy

        return HFPolicy.from_pretrained(
            resolve_model(cfg.model),
            device=cfg.device,
            dtype=cfg.dtype,
            max_batch_size=cfg.max_batch_size,
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
        )
    if cfg.backend == "vllm-engine":
        from vigorl_agents.backends.vllm_engine import VLLMEnginePolicy

        return VLLMEnginePolicy(
            resolve_model(cfg.model),
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
        )
    if cfg.backend == "vllm-server":
        from vigorl_agents.backends.vllm_server import VLLMServerPolicy

        endpoints: Sequence[str] = cfg.endpoints
        name = cfg.served_model_name or cfg.model
        if not endpoints:
            from vigorl_agents.backends.launcher import VLLMServer

            server = VLLMServer(
                resolve_model(cfg.model),
                served_model_name="policy",
                dtype=cfg.dtype,
                max_model_len=cfg.max_model_len,
                min_pixels=cfg.min_pixels,
                max_pixels=cfg.max_pixels,
            )
            servers.enter_context(server)
            endpoints, name = [server.base_url], "policy"
            log.info("launched vLLM server at %s (pid %s)", server.base_url, server.pid)
        return VLLMServerPolicy(
            list(endpoints),
            name,
            timeout=cfg.request_timeout_s,
            max_retries=cfg.max_retries,
            backoff=(cfg.retry_backoff_s, 4 * cfg.retry_backoff_s),
            max_concurrency=cfg.max_concurrency,
        )
    raise ValueError(f"unknown backend {cfg.backend!r}; expected hf, vllm-server or vllm-engine")

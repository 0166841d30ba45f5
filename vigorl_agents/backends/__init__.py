"""Policy backends: a vLLM server client, an in-process vLLM engine, a server launcher.

Names are imported on first use, so `import vigorl_agents.backends` needs neither openai nor vllm:

- `VLLMServerPolicy` (vllm_server): async client of one or more vLLM OpenAI-compatible servers;
- `VLLMEnginePolicy` (vllm_engine): `vllm.LLM` in this process, with `load_weights` for RL;
- `HFPolicy` (hf): transformers in this process;
- `VLLMServer` (launcher): start/stop a server this process owns (free port, own process group);
- `to_openai_messages`, `ImageURLCache` (openai_messages): Conversation → OpenAI chat messages;
- `PolicyRequestError` (a request refused: fix the request), `PolicyUnavailableError` (no server
  answered within the retry budget).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "VLLMServerPolicy": "vllm_server",
    "PolicyRequestError": "vllm_server",
    "PolicyUnavailableError": "vllm_server",
    "VLLMEnginePolicy": "vllm_engine",
    "HFPolicy": "hf",
    "VLLMServer": "launcher",
    "ServerStartError": "launcher",
    "to_openai_messages": "openai_messages",
    "ImageURLCache": "openai_messages",
}

__all__ = [
    "HFPolicy",
    "ImageURLCache",
    "PolicyRequestError",
    "PolicyUnavailableError",
    "ServerStartError",
    "VLLMEnginePolicy",
    "VLLMServer",
    "VLLMServerPolicy",
    "to_openai_messages",
]

if TYPE_CHECKING:
    from vigorl_agents.backends.hf import HFPolicy
    from vigorl_agents.backends.launcher import ServerStartError, VLLMServer
    from vigorl_agents.backends.openai_messages import ImageURLCache, to_openai_messages
    from vigorl_agents.backends.vllm_engine import VLLMEnginePolicy
    from vigorl_agents.backends.vllm_server import (
        PolicyRequestError,
        PolicyUnavailableError,
        VLLMServerPolicy,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

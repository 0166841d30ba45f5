"""Policy over an in-process `vllm.LLM` engine (no server; the engine GRPO pushes weights into).

A batch of conversations — each with its own images, sampling settings and maybe a forced prefix
— is rendered by vLLM's own chat pipeline (`LLM.enqueue_chat`, the offline twin of the server's
chat endpoint) and run in one engine loop (`wait_for_completion`), so prefix and no-prefix
conversations share the batch. Images go in as PIL objects (`image_pil` parts): no PNG round trip.
`vllm.LLM` is synchronous, so `generate` runs it in a worker thread behind a lock; the event loop
stays free for the envs.

Weights: `load_weights` pushes Hugging Face-named tensors into the running engine through vLLM's
worker `reload_weights` (vLLM ≥ 0.2x; checked on 0.32) and then drops every cache derived from the
old weights (prefix KV blocks, vision-encoder outputs), so the next `generate` sees only the new
model. With `VLLM_ENABLE_V1_MULTIPROCESSING=0` (`multiprocessing=False`) the engine core lives in
this process and the tensors are handed over as they are; otherwise vLLM serializes them to its
engine-core process (fine for small models; large ones want vLLM's NCCL weight transfer).

vllm is imported when the policy is constructed, never at module import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vigorl_agents.backends.launcher import is_cpu_build
from vigorl_agents.backends.openai_messages import chat_template_flags
from vigorl_agents.policy import (
    Completion,
    Conversation,
    PolicyRequestError,
    SamplingParams,
    params_per_conversation,
)

log = logging.getLogger(__name__)

ENGINE = "vllm.LLM (in-process)"
"""What `PolicyRequestError.endpoint` names for engine-side refusals."""


def _image_pil_part(image: Any) -> dict[str, Any]:
    img = Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image
    return {"type": "image_pil", "image_pil": img}


def engine_messages(conv: Conversation) -> list[dict[str, Any]]:
    """Like `to_openai_messages` (the same builder), with PIL image parts instead of data URLs."""
    return conv.chat_messages(_image_pil_part)


class VLLMEnginePolicy:
    """`Policy` backed by `vllm.LLM(model, ...)` in this process.

    `limit_images` caps images per prompt; `min_pixels` / `max_pixels` go to the image processor
    (keep min ≤ the env's m and max ≥ its M so model frames are not resized again,
    docs/backends.md#image-sizes-the-processor-must-keep-the-frame).
    `seed` seeds the engine; each request's `SamplingParams.seed` seeds its samples.
    `multiprocessing=False` sets `VLLM_ENABLE_V1_MULTIPROCESSING=0` (engine core in this
    process: faster start, direct weight loading); None leaves the environment as it is. vLLM
    reads that variable once per process. Other keyword arguments go to `vllm.LLM`.

    Side effects on the host process (vLLM's, on the CPU build at least): it reseeds the global
    RNGs, lowers torch's thread count and pins OpenMP threads to cores. Tests therefore run
    the engine in a child process.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        dtype: str | None = None,
        max_model_len: int = 4096,
        limit_images: int = 5,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        seed: int = 0,
        multiprocessing: bool | None = None,
        **llm_kwargs: Any,
    ) -> None:
        cpu = is_cpu_build()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; vLLM's default is huge
        if multiprocessing is not None:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1" if multiprocessing else "0"
        import vllm  # heavy: only when an engine is wanted

        mm_kwargs = {
            k: v
            for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels))
            if v is not None
        }
        kwargs: dict[str, Any] = {
            "dtype": dtype or ("float32" if cpu else "auto"),
            "max_model_len": max_model_len,
            "limit_mm_per_prompt": {"image": limit_images, "video": 0},
            "seed": seed,
        }
        if mm_kwargs:
            kwargs["mm_processor_kwargs"] = mm_kwargs
        if cpu:
            kwargs["enforce_eager"] = True
        kwargs.update(llm_kwargs)
        self.model = str(model)
        self.llm = vllm.LLM(model=self.model, **kwargs)
        self._vllm = vllm
        # Refusals of a request (vLLM's server maps VLLMClientError to HTTP 4xx).
        self._client_errors: tuple[type[BaseException], ...] = (ValueError, TypeError)
        try:
            from vllm.exceptions import VLLMClientError

            self._client_errors += (VLLMClientError,)
        except ImportError:  # older vLLM: plain ValueErrors
            pass
        self._lock = threading.Lock()
        self._checkpoint_names = checkpoint_tensor_names(self.model)
        self.weight_version = 0

    # ----------------------------------------------------------------- Policy
    async def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        per_conv = params_per_conversation(params, len(conversations))
        if not conversations:
            return []
        return await asyncio.to_thread(self.generate_sync, list(conversations), per_conv)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Shut the engine down (frees its memory; later calls fail)."""
        with self._lock:
            llm = getattr(self, "llm", None)
            if llm is None:
                return
            self.llm = None
            shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                shutdown()

    # ------------------------------------------------------------- generation
    def sampling_params(self, params: SamplingParams) -> Any:
        """Our settings as vLLM's `SamplingParams` (stop strings kept in the text)."""
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            max_tokens=params.max_tokens,
            stop=list(params.stop),
            seed=params.seed,
            logprobs=0 if params.logprobs else None,
            include_stop_str_in_output=True,
            skip_special_tokens=True,
        )

    def generate_sync(
        self, conversations: Sequence[Conversation], params: Sequence[SamplingParams]
    ) -> list[list[Completion]]:
        """The blocking body of `generate`."""
        groups: dict[bool, list[int]] = {}
        for i, conv in enumerate(conversations):
            groups.setdefault(bool(conv.assistant_prefix), []).append(i)
        with self._lock:
            if self.llm is None:
                raise RuntimeError("VLLMEnginePolicy is closed")
            ids: dict[str, int] = {}
            try:
                for indices in groups.values():
                    flags = chat_template_flags(conversations[indices[0]])
                    added = self.llm.enqueue_chat(
                        [engine_messages(conversations[i]) for i in indices],
                        [self.sampling_params(params[i]) for i in indices],
                        use_tqdm=False,
                        **flags,
                    )
                    ids.update(zip(added, indices, strict=True))
                    # vLLM returns its internal id ("7-1a2b3c4d"); outputs carry the external "7"
                    ids.update(
                        (rid.rsplit("-", 1)[0], i) for rid, i in zip(added, indices, strict=True)
                    )
            except Exception as exc:  # rendering refused a conversation (images, length, ...)
                if ids:
                    self.llm.llm_engine.abort_request([r for r in ids if "-" in r], internal=True)
                if isinstance(exc, self._client_errors):
                    raise PolicyRequestError(ENGINE, None, str(exc)) from exc
                raise
            outputs = self.llm.wait_for_completion(use_tqdm=False)
        results: list[list[Completion] | None] = [None] * len(conversations)
        for out in outputs:
            index = ids.get(out.request_id)
            if index is not None:
                results[index] = _completions(out)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"vLLM engine returned no output for conversations {missing}")
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- weights
    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Replace the running model's weights with `named_tensors` (Hugging Face names).

        A subset of the model may be given, made of whole modules: vLLM reloads module by module
        and fuses q/k/v and gate/up projections, and a module given only part of its tensors
        comes back partly undefined (checked on 0.32: reloading `q_proj.weight` alone, even
        with its own values, changes the output). Such partial updates raise ValueError
        (`check_complete_modules`). Waits for in-flight generation (same lock), then drops every
        cache computed from the old weights (prefix KV blocks, vision-encoder outputs).
        """
        weights = list(named_tensors)  # may cross a process boundary: no generators
        check_complete_modules((name for name, _ in weights), self._checkpoint_names)
        with self._lock:
            if self.llm is None:
                raise RuntimeError("VLLMEnginePolicy is closed")
            self.llm.collective_rpc(
                "reload_weights",
                kwargs={"weights_iterator": weights, "is_checkpoint_format": True},
            )
            # reload_weights clears the worker-side encoder and multimodal caches only; the
            # scheduler and the front end would still believe in them ("Encoder cache miss").
            # Reset each cache end to end, and drop KV blocks computed with the old weights.
            engine = self.llm.llm_engine
            engine.reset_encoder_cache()
            engine.reset_mm_cache()
            if not self.llm.reset_prefix_cache():
                log.warning("vLLM did not reset its prefix cache after a weight update")
            self.weight_version += 1
        log.info("loaded %d tensors into the vLLM engine (weight version %d)", len(weights),
                 self.weight_version)  # fmt: skip


_FUSED_SIBLINGS = {
    "q_proj": ("q_proj", "k_proj", "v_proj"),
    "k_proj": ("q_proj", "k_proj", "v_proj"),
    "v_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_proj": ("gate_proj", "up_proj"),
    "up_proj": ("gate_proj", "up_proj"),
}


def checkpoint_tensor_names(model_dir: str | os.PathLike) -> set[str] | None:
    """Tensor names of a local safetensors checkpoint (headers only), or None if not local."""
    path = Path(model_dir)
    if not path.is_dir():
        return None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    names: set[str] = set()
    for file in sorted(path.glob("*.safetensors")):
        with open(file, "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        names |= {k for k in header if k != "__metadata__"}
    return names or None


def check_complete_modules(names: Iterable[str], known: set[str] | None) -> None:
    """Refuse a partial update that vLLM's in-place reload would corrupt.

    vLLM re-materializes every module it receives a tensor for, and fuses q/k/v and gate/up
    projections into one module: a module given only some of its tensors (a bias without its
    weight, `q_proj` without `k_proj`/`v_proj`) comes back partly undefined (checked on 0.32).
    So every tensor of each touched module — fused siblings included — must be given. `known`
    is the checkpoint's tensor names (None: only the fused-sibling rule is checked).
    """
    given = set(names)
    modules: set[str] = set()
    for name in given:
        module = name.rpartition(".")[0]
        parent, _, leaf = module.rpartition(".")
        modules.update(f"{parent}.{sib}" for sib in _FUSED_SIBLINGS.get(leaf, (leaf,)))
    if known is not None:
        required = {k for k in known if k.rpartition(".")[0] in modules}
    else:  # which tensors a module has is unknown: require the same kind from fused siblings
        required = set()
        for name in given:
            module, _, kind = name.rpartition(".")
            parent, _, leaf = module.rpartition(".")
            required.update(f"{parent}.{sib}.{kind}" for sib in _FUSED_SIBLINGS.get(leaf, ()))
    missing = sorted(required - given)
    if missing:
        shown = ", ".join(missing[:6]) + (
            f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        )
        raise ValueError(
            f"load_weights needs every tensor of each module it touches (vLLM reloads whole, "
            f"fused modules); missing: {shown}"
        )


def _completions(out: Any) -> list[Completion]:
    prompt_tokens = len(out.prompt_token_ids) if out.prompt_token_ids is not None else None
    completions = []
    for c in sorted(out.outputs, key=lambda c: c.index):
        logprobs = None
        if c.logprobs is not None:
            logprobs = tuple(
                float(step[tok].logprob) for tok, step in zip(c.token_ids, c.logprobs, strict=True)
            )
        completions.append(
            Completion(
                text=c.text,
                finish_reason=c.finish_reason,
                stop_reason=c.stop_reason if isinstance(c.stop_reason, str) else None,
                token_ids=tuple(c.token_ids),
                logprobs=logprobs,
                prompt_tokens=prompt_tokens,
            )
        )
    return completions

"""Policy over an in-process `vllm.LLM` engine (no server; the engine GRPO pushes weights into).

The engine runs continuously in one worker thread: conversations are rendered by vLLM's own chat
pipeline (`LLM.enqueue_chat`, the offline twin of the server's chat endpoint) and added to the
running engine as soon as they are asked for, and each request's result is handed back the moment
it finishes (`LLMEngine.step`), so an episode whose turn ended early steps its env and asks again
while the others are still decoding — the engine batches whatever is in flight, as a vLLM server
does (`continuous_batching`). Prefix and no-prefix conversations share the engine. Images go in as
PIL objects (`image_pil` parts, no PNG round trip) with their content id (`uuid`), so vLLM hashes
each image once per episode instead of once per turn, and equal frames of the n episodes of one
sample share vLLM's processed-image cache. The event loop stays free for the envs.

Token-out and token-in (docs/backends.md#token-in-and-token-out): each completion carries the
prompt ids vLLM fed the model; a conversation with `prompt_token_ids` goes in as a `TokensPrompt`
with its images (each image's pad run cut to one pad, which vLLM expands again itself), so a
rollout can feed the training token stream as it is.

Every field of `SamplingParams` is honoured (`regex` through vLLM's structured outputs); a field
this backend does not know raises instead of being dropped.

Weights: `load_weights` pushes Hugging Face-named tensors into the running engine through vLLM's
worker `reload_weights` (vLLM ≥ 0.2x; checked on 0.32) once the requests in flight have finished
(new ones wait), and then drops every cache derived from the old weights (prefix KV blocks,
vision-encoder outputs), so the next request sees only the new model. With
`VLLM_ENABLE_V1_MULTIPROCESSING=0` (`multiprocessing=False`) the engine core lives in this process
and the tensors are handed over as they are; otherwise vLLM serializes them to its engine-core
process (fine for small models; large ones want vLLM's NCCL weight transfer).

vllm is imported when the policy is constructed, never at module import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
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
from vigorl_agents.backends.openai_messages import ImageURLCache, chat_template_flags
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


def engine_messages(conv: Conversation, ids: ImageURLCache | None = None) -> list[dict[str, Any]]:
    """Like `to_openai_messages` (the same builder), with PIL image parts instead of data URLs;
    with `ids`, each part carries the image's content id (`uuid`)."""

    def part(image: Any) -> dict[str, Any]:
        img = Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image
        out: dict[str, Any] = {"type": "image_pil", "image_pil": img}
        if ids is not None:
            out["uuid"] = ids.uuid(image)
        return out

    return conv.chat_messages(part)


def collapse_image_pads(ids: Sequence[int], vision: tuple[int, int, int]) -> list[int]:
    """`ids` with each image's run of pads (`vision_start`, pad × k, `vision_end`) cut to one pad.

    vLLM's multimodal processor expands the first `<|image_pad|>` of each image to the image's
    token count itself, also in a token prompt: fed already-expanded pads, it expands them
    again (checked on 0.32: 56 pads became 111). So token-in sends one pad per image and vLLM
    puts back its own count; the prompt ids it reports equal the caller's when both counts agree
    (the rollout loop compares them: `TokenStream.prompt_mismatch`). Pads outside a
    `vision_start` … `vision_end` block are left alone. `vision` = (pad, start, end) ids."""
    pad, start, end = vision
    out: list[int] = []
    i, n = 0, len(ids)
    while i < n:
        t = int(ids[i])
        out.append(t)
        i += 1
        if t == start and i < n and ids[i] == pad:
            j = i
            while j < n and ids[j] == pad:
                j += 1
            if j < n and ids[j] == end:
                out.append(pad)
                i = j
    return out


def engine_tokens_prompt(
    conv: Conversation, vision: tuple[int, int, int], ids: ImageURLCache | None = None
) -> dict[str, Any]:
    """Token-in: vLLM's `TokensPrompt` for `conv.prompt_token_ids` (image pads collapsed,
    `collapse_image_pads`; vision = (pad, start, end) ids) with `conv.images` in order (PIL;
    with `ids`, their content ids)."""
    if conv.prompt_token_ids is None:
        raise ValueError("engine_tokens_prompt needs conv.prompt_token_ids")
    images = [
        Image.fromarray(np.asarray(i)) if isinstance(i, np.ndarray) else i for i in conv.images
    ]
    prompt: dict[str, Any] = {
        "prompt_token_ids": collapse_image_pads(conv.prompt_token_ids, vision)
    }
    if images:
        prompt["multi_modal_data"] = {"image": images}
        if ids is not None:
            prompt["multi_modal_uuids"] = {"image": [ids.uuid(i) for i in conv.images]}
    return prompt


def engine_sampling_params(vllm: Any, params: SamplingParams) -> Any:
    """`params` as vLLM's `SamplingParams` (stop strings kept in the text), every field mapped.

    A field of `SamplingParams` this function does not know raises `NotImplementedError`: a
    setting is honoured or refused, never dropped.
    """
    known = {"n", "temperature", "top_p", "top_k", "max_tokens", "stop", "seed", "logprobs",
             "regex", "logit_bias"}  # fmt: skip
    unknown = [f.name for f in dataclasses.fields(params) if f.name not in known]
    if unknown:
        raise NotImplementedError(f"the vLLM engine backend cannot honour {unknown}")
    structured = None
    if params.regex is not None:
        structured = vllm.sampling_params.StructuredOutputsParams(regex=params.regex)
    return vllm.SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        max_tokens=params.max_tokens,
        stop=list(params.stop),
        seed=params.seed,
        logprobs=0 if params.logprobs else None,
        structured_outputs=structured,
        logit_bias=dict(params.logit_bias) or None,
        include_stop_str_in_output=True,
        skip_special_tokens=True,
    )


@dataclasses.dataclass(eq=False)
class _Job:
    """One conversation's request, from `submit` to its result."""

    messages: list[dict[str, Any]]
    flags: dict[str, bool]
    params: SamplingParams
    future: concurrent.futures.Future
    ids: tuple[str, ...] = ()  # vLLM's internal and external request ids, once added
    retried: bool = False
    tokens: dict[str, Any] | None = None  # token-in: a TokensPrompt instead of `messages`


def _deliver(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    except concurrent.futures.InvalidStateError:  # cancelled by its caller meanwhile
        pass


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

    continuous_batching = True
    """Send each conversation's request as soon as it is asked for: the engine batches itself."""

    supports_token_input = True
    """`Conversation.prompt_token_ids` is fed as given (a `TokensPrompt`), nothing rendered."""

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
            if not any("chunked_prefill" in k for k in llm_kwargs):
                # vLLM 0.32 CPU: a seeded request whose prefill is chunked crashes the engine
                # ("CPU Generator does not use offset") once several prompts arrive together;
                # whole prompts per step avoid the path (every rollout request carries a seed)
                kwargs["enable_chunked_prefill"] = False
                kwargs["max_num_batched_tokens"] = max_model_len
        kwargs.update(llm_kwargs)
        self.model = str(model)
        self.min_pixels, self.max_pixels = min_pixels, max_pixels  # for TokenBuilder.for_policy
        self.llm = vllm.LLM(model=self.model, **kwargs)
        self._vllm = vllm
        # Refusals of a request (vLLM's server maps VLLMClientError to HTTP 4xx).
        self._client_errors: tuple[type[BaseException], ...] = (ValueError, TypeError)
        try:
            from vllm.exceptions import VLLMClientError

            self._client_errors += (VLLMClientError,)
        except ImportError:  # older vLLM: plain ValueErrors
            pass
        self.image_ids = ImageURLCache()  # content ids only (no encoding)
        tok = self.llm.get_tokenizer()
        self.vision_ids: tuple[int, int, int] = tuple(  # type: ignore[assignment]
            int(i)
            for i in tok.convert_tokens_to_ids(
                ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>"]
            )
        )
        self._lock = threading.Lock()  # the engine: its thread, load_weights, close
        self._cond = threading.Condition()  # the queues below
        self._incoming: list[_Job] = []
        self._aborts: list[_Job] = []
        self._active: set[_Job] = set()  # taken by the engine thread, not yet finished
        self._by_id: dict[str, _Job] = {}  # engine thread only
        self._paused = 0
        self._closed = False
        self._thread: threading.Thread | None = None
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
        futures = self.submit(conversations, per_conv)
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def generate_sync(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        """`generate` for callers without an event loop (blocks until every result is in)."""
        per_conv = params_per_conversation(params, len(conversations))
        return [f.result() for f in self.submit(conversations, per_conv)]

    def submit(
        self, conversations: Sequence[Conversation], params: Sequence[SamplingParams]
    ) -> list[concurrent.futures.Future]:
        """Queue the conversations for the engine thread; one future per conversation, holding
        its list of `n` completions. Cancelling a future aborts its request."""
        for p in params:  # refuse before anything is queued
            try:
                engine_sampling_params(self._vllm, p)
            except self._client_errors as exc:
                raise PolicyRequestError(ENGINE, None, str(exc)) from exc
        jobs = [
            _Job(
                engine_messages(c, self.image_ids),
                chat_template_flags(c),
                p,
                concurrent.futures.Future(),
            )
            if c.prompt_token_ids is None
            else _Job(
                [],
                {},
                p,
                concurrent.futures.Future(),
                tokens=engine_tokens_prompt(c, self.vision_ids, self.image_ids),
            )
            for c, p in zip(conversations, params, strict=True)
        ]
        with self._cond:
            if self._closed or self.llm is None:
                raise RuntimeError("VLLMEnginePolicy is closed")
            self._incoming.extend(jobs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vllm-engine", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        for job in jobs:
            job.future.add_done_callback(lambda f, j=job: f.cancelled() and self._abort(j))
        return [job.future for job in jobs]

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the engine thread and shut the engine down (frees its memory; later calls fail).
        Requests still queued or running fail with RuntimeError."""
        with self._cond:
            self._closed = True
            left, self._incoming = self._incoming + list(self._active), []
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        for job in left:
            _deliver(job, error=RuntimeError("VLLMEnginePolicy is closed"))
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
        """Our settings as vLLM's `SamplingParams` (`engine_sampling_params`)."""
        return engine_sampling_params(self._vllm, params)

    def _abort(self, job: _Job) -> None:
        with self._cond:
            self._aborts.append(job)
            self._cond.notify_all()

    def _run(self) -> None:
        """The engine thread: add what was submitted, step, hand out what finished."""
        while True:
            with self._cond:
                while not (
                    self._closed
                    or self._aborts
                    or self._by_id
                    or (self._incoming and not self._paused)
                ):
                    self._cond.wait()
                if self._closed:
                    return
                jobs: list[_Job] = []
                if not self._paused:
                    jobs, self._incoming = self._incoming, []
                    self._active.update(jobs)
                aborts, self._aborts = self._aborts, []
            try:
                with self._lock:
                    self._abort_jobs(aborts)
                    for job in jobs:
                        self._add(job)
                    outputs = self.llm.llm_engine.step() if self._by_id else []
                for out in outputs:
                    if out.finished:
                        self._finish(out)
            except Exception as exc:  # the engine itself failed: every request in flight fails
                log.exception("the vLLM engine failed; failing its %d requests", len(self._by_id))
                self._fail_all(exc)

    def _add(self, job: _Job) -> None:
        if job.future.cancelled():
            self._done(job)
            return
        try:
            if job.tokens is not None:  # token-in: the ids as given, nothing rendered
                (rid,) = self.llm.enqueue(
                    [job.tokens], [self.sampling_params(job.params)], use_tqdm=False
                )
            else:
                (rid,) = self.llm.enqueue_chat(
                    [job.messages],
                    [self.sampling_params(job.params)],
                    use_tqdm=False,
                    **job.flags,
                )
        except Exception as exc:  # rendering refused the conversation (images, length, ...)
            if isinstance(exc, self._client_errors):
                exc = PolicyRequestError(ENGINE, None, str(exc))
            self._done(job, error=exc)
            return
        # vLLM returns its internal id ("7-1a2b3c4d"); outputs carry the external "7"
        job.ids = (rid, rid.rsplit("-", 1)[0])
        for i in job.ids:
            self._by_id[i] = job

    def _finish(self, out: Any) -> None:
        job = self._by_id.get(out.request_id)
        if job is None:
            return
        error = getattr(out, "error", None)
        if error is not None and error.retryable and not job.retried:
            # e.g. vLLM's front-end and engine image caches drifted apart: the front end has
            # dropped the stale entries, so the same request (images included) goes through now
            log.info("vLLM engine asks to retry request %s (%s)", out.request_id, error.message)
            self._forget(job)
            job.retried = True
            self._add(job)
            return
        if error is not None:
            self._done(job, error=RuntimeError(f"vLLM engine: {error.code}: {error.message}"))
        else:
            self._done(job, _completions(out))

    def _done(self, job: _Job, result: Any = None, error: BaseException | None = None) -> None:
        self._forget(job)
        with self._cond:
            self._active.discard(job)
            if not self._active:
                self._cond.notify_all()  # load_weights waits for an idle engine
        _deliver(job, result, error)  # last: whoever gets it sees the engine's state after it

    def _forget(self, job: _Job) -> None:
        for i in job.ids:
            self._by_id.pop(i, None)
        job.ids = ()

    def _abort_jobs(self, jobs: Sequence[_Job]) -> None:
        internal = [job.ids[0] for job in jobs if job.ids]
        if internal:
            self.llm.llm_engine.abort_request(internal, internal=True)
        for job in jobs:
            if job in self._active:
                self._done(job, error=concurrent.futures.CancelledError())

    def _fail_all(self, exc: BaseException) -> None:
        for job in {*self._by_id.values()}:
            self._done(job, error=exc)
        with self._cond:
            stuck = list(self._active)
        for job in stuck:  # taken but never added
            self._done(job, error=exc)

    # ---------------------------------------------------------------- weights
    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Replace the running model's weights with `named_tensors` (Hugging Face names).

        A subset of the model may be given, made of whole modules: vLLM reloads module by module
        and fuses q/k/v and gate/up projections, and a module given only part of its tensors
        comes back partly undefined (checked on 0.32: reloading `q_proj.weight` alone, even
        with its own values, changes the output). Such partial updates raise ValueError
        (`check_complete_modules`). Waits until the requests in flight have finished (requests
        submitted meanwhile wait for the new weights), then drops every cache computed from the
        old weights (prefix KV blocks, vision-encoder outputs).
        """
        weights = list(named_tensors)  # may cross a process boundary: no generators
        check_complete_modules((name for name, _ in weights), self._checkpoint_names)
        with self._cond:
            if self._closed:
                raise RuntimeError("VLLMEnginePolicy is closed")
            self._paused += 1
            while self._active:
                self._cond.wait()
        try:
            with self._lock:
                self._reload(weights)
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()
        log.info("loaded %d tensors into the vLLM engine (weight version %d)", len(weights),
                 self.weight_version)  # fmt: skip

    def _reload(self, weights: list[tuple[str, Any]]) -> None:
        if self.llm is None:
            raise RuntimeError("VLLMEnginePolicy is closed")
        self.llm.collective_rpc(
            "reload_weights",
            kwargs={"weights_iterator": weights, "is_checkpoint_format": True},
        )
        # A tied output head (Qwen2.5-VL-3B ties it to the input embedding) gets no tensor of
        # its own: vLLM's layer-wise reload leaves it, and the kernels prepared from it (the
        # CPU build's packed GEMM), on the OLD embedding (checked on 0.32: trainer/engine
        # logprob gap 0.3 nats/token after a sync that changed the embedding). Load the new
        # embedding into it, point the head at it and prepare the head's kernels again.
        embedding = [t for name, t in weights if name.endswith("embed_tokens.weight")]
        if embedding:
            retied = self.llm.collective_rpc(
                _retie_output_head, kwargs={"embedding": embedding[-1]}
            )
            if any(retied):
                log.debug("reloaded the tied output head with the new input embedding")
        # reload_weights clears the worker-side encoder and multimodal caches only; the
        # scheduler and the front end would still believe in them ("Encoder cache miss").
        # Reset each cache end to end, and drop KV blocks computed with the old weights.
        engine = self.llm.llm_engine
        engine.reset_encoder_cache()
        engine.reset_mm_cache()
        if not self.llm.reset_prefix_cache():
            log.warning("vLLM did not reset its prefix cache after a weight update")
        self.weight_version += 1


def _retie_output_head(worker: Any, embedding: Any) -> bool:
    """(Runs in the vLLM worker.) For a model whose output head is tied to its input embedding:
    load `embedding` into the embedding (its own weight loader: vocabulary padding, sharding)
    and point the head at it. Returns whether the model ties them."""
    model = worker.model_runner.get_model()
    heads = {n: m for n, m in model.named_modules() if n.endswith("lm_head")}
    embeds = {n: m for n, m in model.named_modules() if n.endswith("embed_tokens")}
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    tied = bool(getattr(text, "tie_word_embeddings", False)) or bool(
        getattr(config, "tie_word_embeddings", False)
    )
    if not tied or len(heads) != 1 or len(embeds) != 1:
        return False
    (head,), (embed,) = heads.values(), embeds.values()
    import torch

    with torch.no_grad():
        embed.weight_loader(embed.weight, embedding.to(embed.weight.device, embed.weight.dtype))
    head.weight = embed.weight
    # kernels prepared from the head's weight at load time (the CPU build packs it into
    # `cpu_linear`) are prepared again from the new one
    method = getattr(head, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(head)
    return True


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
    prompt_ids = tuple(out.prompt_token_ids) if out.prompt_token_ids is not None else None
    prompt_tokens = len(prompt_ids) if prompt_ids is not None else None
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
                prompt_token_ids=prompt_ids,
            )
        )
    return completions

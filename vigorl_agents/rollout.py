"""The one episode loop of the project: many episodes in flight over any Policy.

The env contract is docs/envs.md, the text protocol docs/protocol.md.

Each episode is an asyncio task that owns one env. Its model calls go through a `Batcher`: for a
backend that batches concurrent requests itself (`continuous_batching`: a vLLM server or engine)
each request leaves at once, so the engine always holds every episode that is waiting for it; for
one that needs full batches (transformers) the requests of all in-flight episodes are grouped into
batched `Policy.generate` calls. With the former, an episode's first request leaves right after
its own reset (a model frame to render or decode and resize: tens of milliseconds), so the server
starts working after one reset rather than after all of them; the n episodes of one sample share
one frame (`vigorl_env.env.FrameCache`). Trajectories reference images
(sample id + crop boxes) instead of holding pixels, and record per turn which text and tokens the
model generated (the forced prefix is not generated: docs/protocol.md#forced-final-answer).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from PIL import Image

import vigorl_env  # registers the env ids
from vigorl_agents.policy import Completion, Conversation, Message, Policy, SamplingParams
from vigorl_agents.tokens import (
    TokenBuilder,
    TokenStream,
    add_observation,
    begin_turn,
    end_turn,
    trajectory_uid,
)
from vigorl_env.protocol import extract_answer

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Conversations from env observations (docs/protocol.md#chat-rendering)
# ---------------------------------------------------------------------------------------------
def _pil(image: Any) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))


def start_conversation(obs: dict[str, Any], info: dict[str, Any]) -> Conversation:
    """System prompt + the question with the model-frame image."""
    conv = Conversation(
        messages=[
            Message("system", info["system_prompt"]),
            Message("user", obs["text"], [_pil(obs["image"])]),
        ]
    )
    conv.assistant_prefix = info.get("assistant_prefix")
    return conv


def continue_conversation(
    conv: Conversation, action: str, obs: dict[str, Any] | None, info: dict[str, Any]
) -> None:
    """Append the assistant turn and, if the episode goes on, the observation turn."""
    conv.messages.append(Message("assistant", action))
    conv.assistant_prefix = None
    if obs is not None:
        conv.messages.append(Message("user", obs["text"], [_pil(obs["image"])]))
        conv.assistant_prefix = info.get("assistant_prefix")


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
@dataclass
class TurnRecord:
    """One assistant turn: the forced prefix (not generated) and what the model generated.

    With `run_episodes(..., keep_tokens=True)` it also keeps what a training token stream is built
    from (`vigorl_agents.tokens`): `prompt_token_ids`, the ids the backend reports it fed the
    model for this turn, and `observation` = {"text", "image_sizes": [[w, h]]}, the user turn the
    env answered with when the episode went on.
    """

    prefix: str
    text: str
    finish_reason: str
    stop_reason: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    prompt_tokens: int | None = None
    crop: dict[str, Any] | None = None
    prompt_token_ids: list[int] | None = None
    observation: dict[str, Any] | None = None


@dataclass
class Trajectory:
    """An episode as training and evaluation data; images by reference (sample id + crop boxes)."""

    env_id: str
    sample_id: str
    index: int
    split: str
    episode: int
    config_fingerprint: str
    frame: dict[str, Any]
    turns: list[TurnRecord] = field(default_factory=list)
    transcript: str = ""
    reward: float = 0.0
    components: dict[str, Any] = field(default_factory=dict)
    end_reason: str = ""
    ground_truth: dict[str, Any] = field(default_factory=dict)
    grounding: dict[str, Any] | None = None
    answer: str | None = None
    """The answer the accuracy scored (`scored_answer`), None if there was none."""
    overlong: bool = False
    """Ended by the response token budget (`TokenBudget`, docs/grpo.md#overlong-trajectories):
    finalized with end reason "overlong"; its whole training mask is 0."""

    @property
    def score(self) -> float:
        """Per-sample evaluation score = the episode's accuracy (docs/evaluation.md#protocol)."""
        return float(self.components.get("accuracy", 0.0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scored_answer(
    transcript: str, answer_extraction: str = "tags", accuracy_fn: str = "normalized"
) -> str | None:
    """The answer the env's accuracy reads from `transcript` (docs/rewards.md): the first
    `<answer>` block by `vigorl_env.protocol.extract_answer` (the reward's own parser: first block,
    tags ASCII case-insensitive); with `answer_extraction="whole_output"` the whole transcript,
    stripped; with the lenient judge and no answer block, the whole transcript."""
    if answer_extraction == "whole_output":
        return transcript.strip()
    answer = extract_answer(transcript)
    if answer is None and accuracy_fn == "lenient_upstream":
        return transcript
    return answer


class EpisodeDataError(Exception):
    """An episode could not start because its sample's data is unreadable (a corrupt or missing
    image, a malformed record): a fault of that sample, not of the run. `run_episodes` hands it to
    its `on_error` callback, if any, and goes on with the other episodes."""

    def __init__(self, env_id: str, split: str, spec: EpisodeSpec, sample_id: str | None,
                 cause: BaseException) -> None:  # fmt: skip
        self.env_id, self.split, self.spec, self.sample_id, self.cause = (
            env_id, split, spec, sample_id, cause,
        )  # fmt: skip
        super().__init__(
            f"{env_id}[{split}] sample {sample_id or spec.index!r} (index {spec.index}): "
            f"{type(cause).__name__}: {cause}"
        )


# ---------------------------------------------------------------------------------------------
# Batching the requests of in-flight episodes
# ---------------------------------------------------------------------------------------------
class Batcher:
    """Collects single-conversation requests from many episodes into batched policy calls.

    Requests equal in everything but their seed share a batch; a batch leaves once the first
    request has waited `linger` seconds for others to join (or it is full), so latency stays low
    while batches fill. A policy with `continuous_batching = True` batches concurrent requests
    itself: each request is passed on at once, alone, so no episode waits for a batch to fill or
    for the slowest request of its batch.
    """

    def __init__(self, policy: Policy, max_batch: int = 64, linger: float = 0.002):
        self.policy = policy
        self.max_batch = max_batch
        self.linger = linger
        self.direct = bool(getattr(policy, "continuous_batching", False))
        self._queue: asyncio.Queue[tuple[Conversation, SamplingParams, asyncio.Future]] = (
            asyncio.Queue()
        )
        self._worker: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    async def generate(self, conv: Conversation, params: SamplingParams) -> list[Completion]:
        if self.direct:
            (result,) = await self.policy.generate([conv], [params])
            return result
        if self._worker is None:
            self._worker = asyncio.create_task(self._run())
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((conv, params, fut))
        return await fut

    async def _run(self) -> None:
        while True:
            items = [await self._queue.get()]
            # let the other in-flight episodes add their requests, then drain without waiting
            # (no wait_for(queue.get()): a timeout racing a put can drop a request)
            await asyncio.sleep(self.linger)
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            # group by everything but the seed: each request keeps its own seed
            groups: dict[
                SamplingParams, list[tuple[Conversation, SamplingParams, asyncio.Future]]
            ] = {}
            for conv, params, fut in items:
                groups.setdefault(params.with_(seed=None), []).append((conv, params, fut))
            for group in groups.values():
                task = asyncio.create_task(self._dispatch(group))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _dispatch(
        self, group: list[tuple[Conversation, SamplingParams, asyncio.Future]]
    ) -> None:
        try:
            results = await self.policy.generate([c for c, _, _ in group], [p for _, p, _ in group])
        except Exception as e:  # delivered to every waiting episode
            for _, _, fut in group:
                if not fut.done():
                    fut.set_exception(e)
            return
        for (_, _, fut), res in zip(group, results, strict=True):
            if not fut.done():
                fut.set_result(res)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None


# ---------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeSpec:
    """Which episode to run: sample `index` of the env's split, repetition `episode` (for avg@k/GRPO)."""

    index: int
    episode: int = 0


@dataclass(frozen=True)
class TokenBudget:
    """The response token budget of a training rollout (docs/grpo.md#overlong-trajectories).

    Each turn may generate `min(per_turn_cap, max_response - len(response so far) - 1)` tokens
    (`per_turn_cap` None: the sampling params' max_tokens); the one position kept back is for
    the `<|im_end|>` appended after a turn that stopped on a stop string, so a stream never
    exceeds `max_response`. A trajectory is overlong, and ends by `env.finalize("overlong")`,
    when that is ≤ 0, when a turn hits its cap (finish reason "length": no stop string, no EOS),
    or when the next observation (+ forced prefix) does not fit in `max_response`.
    """

    max_response: int
    per_turn_cap: int | None = None

    def __post_init__(self) -> None:
        if self.max_response < 1:
            raise ValueError(f"max_response must be >= 1, got {self.max_response}")
        if self.per_turn_cap is not None and self.per_turn_cap < 1:
            raise ValueError(f"per_turn_cap must be >= 1, got {self.per_turn_cap}")


@dataclass
class TokenOptions:
    """What `run_episode` keeps and enforces about tokens (built by `run_episodes`)."""

    keep: bool = False
    builder: TokenBuilder | None = None
    budget: TokenBudget | None = None
    token_input: bool = False
    """Send turns > 0 as token-in (`Conversation.prompt_token_ids`): the stream so far."""


def request_seed(base: int | None, sample_id: str, episode: int, turn: int) -> int | None:
    """Per-request seed from (base, sample, episode, turn): deterministic whatever the scheduling
    (never one fixed seed for every request, unlike upstream: docs/evaluation.md#protocol)."""
    if base is None:
        return None
    h = hashlib.sha256(f"{base}:{sample_id}:{episode}:{turn}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


async def run_episode(
    env: gym.Env,
    batcher: Batcher,
    spec: EpisodeSpec,
    params: SamplingParams,
    forced_params: SamplingParams | None = None,
    reset_executor: Executor | None = None,
    tokens: TokenOptions | None = None,
) -> Trajectory:
    """Play one episode: reset to `spec.index`, ask the policy for each turn, step the env.

    With `reset_executor`, the reset runs there (a worker thread) instead of on the event loop.
    `tokens` (see `run_episodes`' keep_tokens / token_budget) keeps per-turn ids, feeds a
    token-input policy the training stream and ends overlong episodes.
    """
    tokens = tokens or TokenOptions()
    uw = env.unwrapped
    reset = functools.partial(env.reset, options={"index": spec.index})
    try:
        if reset_executor is None:
            obs, info = reset()
        else:
            obs, info = await asyncio.get_running_loop().run_in_executor(reset_executor, reset)
    except (vigorl_env.DataFormatError, vigorl_env.DataNotFoundError) as e:
        try:
            sample_id: str | None = uw.sample_id_at(spec.index)
        except Exception:  # the id is only for the message
            sample_id = None
        raise EpisodeDataError(uw.env_id, uw.split, spec, sample_id, e) from e
    traj = Trajectory(
        env_id=uw.env_id,
        sample_id=info["sample_id"],
        index=spec.index,
        split=info["split"],
        episode=spec.episode,
        config_fingerprint=uw.fingerprint,
        frame=info["frame"],
    )
    conv = start_conversation(obs, info)
    forced = forced_params or params.with_(temperature=0.0, n=1)
    builder, budget = tokens.builder, tokens.budget
    stream: TokenStream | None = None  # the training stream so far (from turn 0's prompt ids)
    turn = 0
    while True:
        prefix = conv.assistant_prefix or ""
        p = forced if prefix else params
        p = p.with_(n=1, seed=request_seed(p.seed, traj.sample_id, spec.episode, turn))
        if turn > 0 and stream is not None:
            begin_turn(stream, prefix, builder)
            if tokens.token_input:
                conv.prompt_token_ids = stream.ids
        if budget is not None:
            used = len(stream.response_ids) if stream is not None else 0
            cap = budget.per_turn_cap if budget.per_turn_cap is not None else p.max_tokens
            max_tokens = min(cap, budget.max_response - used - 1)  # - 1: room for E_t
            if max_tokens <= 0:
                return _finalize_overlong(env, traj, "no response budget left")
            p = p.with_(max_tokens=max_tokens)
        (completion,) = await batcher.generate(conv, p)
        record = TurnRecord(
            prefix=prefix,
            text=completion.text,
            finish_reason=completion.finish_reason,
            stop_reason=completion.stop_reason,
            token_ids=list(completion.token_ids) if completion.token_ids is not None else None,
            logprobs=list(completion.logprobs) if completion.logprobs is not None else None,
            prompt_tokens=completion.prompt_tokens,
        )
        if tokens.keep:
            if completion.prompt_token_ids is not None:
                record.prompt_token_ids = list(completion.prompt_token_ids)
            if builder is not None and turn == 0:
                if record.prompt_token_ids is None:
                    raise ValueError(
                        f"{type(batcher.policy).__name__} reported no prompt token ids: a "
                        "token stream needs a backend that does (docs/backends.md#token-in-and-"
                        "token-out)"
                    )
                stream = TokenStream(trajectory_uid(traj), list(record.prompt_token_ids))
            if stream is not None:
                end_turn(stream, record, builder)
        if budget is not None:
            if completion.finish_reason == "length":
                traj.turns.append(record)
                return _finalize_overlong(env, traj, "turn hit its token cap")
            if len(stream.response_ids) > budget.max_response:  # its end-of-turn token
                traj.turns.append(record)
                return _finalize_overlong(env, traj, "end of turn past the budget")
        action = prefix + completion.text
        obs, reward, terminated, truncated, info = env.step(action)
        record.crop = info.get("crop")
        traj.turns.append(record)
        turn += 1
        done = terminated or truncated
        if not done and tokens.keep:
            image = obs["image"]
            w, h = image.size if isinstance(image, Image.Image) else image.shape[1::-1]
            observation = {"text": obs["text"], "image_sizes": [[int(w), int(h)]]}
            if stream is not None:
                add_observation(stream, observation, builder)
                nxt = builder.forced_prefix(info.get("assistant_prefix") or "")
                if budget is not None and len(stream.response_ids) + len(nxt) > budget.max_response:
                    return _finalize_overlong(env, traj, "next observation does not fit")
            record.observation = observation
        continue_conversation(conv, action, None if done else obs, info)
        if done:
            _finish(env, traj, reward, info)
            return traj


def _finish(env: gym.Env, traj: Trajectory, reward: float, info: dict[str, Any]) -> None:
    """Copy the episode's end (reward, components, transcript, ...) into `traj`."""
    traj.transcript = info["transcript"]
    traj.reward = float(reward)
    traj.components = dict(info["reward_components"])
    traj.end_reason = info["end_reason"]
    traj.ground_truth = info["ground_truth"]
    traj.grounding = info.get("grounding")
    cfg = env.unwrapped.config
    traj.answer = scored_answer(traj.transcript, cfg.answer_extraction, cfg.accuracy_fn)


def _finalize_overlong(env: gym.Env, traj: Trajectory, why: str) -> Trajectory:
    """End a running episode by the token budget: the env scores the transcript so far
    (`finalize("overlong")`, docs/envs.md#step) and the trajectory is marked overlong (its whole
    training mask is 0). A turn cut at its cap is recorded but never sent to the env."""
    reward, info = env.unwrapped.finalize("overlong")
    _finish(env, traj, reward, info)
    traj.overlong = True
    log.debug("%s: overlong after %d turns (%s)", trajectory_uid(traj), len(traj.turns), why)
    return traj


async def run_episodes(
    make_env: Callable[[], gym.Env],
    policy: Policy,
    specs: Iterable[EpisodeSpec],
    params: SamplingParams,
    *,
    max_in_flight: int = 32,
    max_batch: int = 64,
    forced_params: SamplingParams | None = None,
    on_done: Callable[[Trajectory], None] | None = None,
    on_error: Callable[[EpisodeDataError], None] | None = None,
    on_abort: Callable[[EpisodeSpec, BaseException], None] | None = None,
    reset_workers: int = 0,
    keep_tokens: bool = False,
    token_budget: TokenBudget | None = None,
    token_builder: TokenBuilder | None = None,
) -> list[Trajectory]:
    """Run many episodes concurrently (at most `max_in_flight` envs alive) and return them in order.

    `on_done` is called as each episode finishes (e.g. to append it to a JSONL file), so an
    interrupted run keeps everything finished so far. With `on_error`, an episode whose sample
    cannot be read (`EpisodeDataError`) is handed to it and left out of the result; without, it
    raises. Any other failure (the policy's, a bug) cancels the episodes still running and
    propagates; before it does, `on_abort(spec, exc)` is called for every episode that had started
    and not ended (so a caller can record them, e.g. as error lines to retry). No callback fires
    after this function has raised.

    Resets run on the event loop (`reset_workers=0`, the default) or in that many threads. With a
    `continuous_batching` policy each episode's first request leaves right after its own reset,
    so the server starts after one reset, not after all of them. Threads measured slower (vLLM
    CPU server on 2 cores, docs/benchmarks.md): a frame is mostly Python and Pillow work holding
    the interpreter lock, so a reset thread and the event loop hand the lock back and forth (a
    cached reset then takes ~25 ms instead of 2) and requests trickle out, multiplying the
    server's scheduling steps.

    Tokens (docs/grpo.md#token-streams): `keep_tokens=True` keeps in each `TurnRecord` the prompt
    ids the backend reports and the observation the env answered with, so that
    `vigorl_agents.tokens.tokenize_trajectory` can build the training stream; with a policy whose
    `supports_token_input` is true, turns after the first are then sent as that stream (token-in),
    so the model conditions on exactly what will be trained. `token_budget` (needs keep_tokens)
    caps each trajectory's response tokens and ends overlong ones (`TokenBudget`).
    `token_builder` defaults to `TokenBuilder.for_policy(policy)`.
    """
    if token_budget is not None and not keep_tokens:
        raise ValueError("token_budget needs keep_tokens=True (the budget counts stream tokens)")
    token_input = keep_tokens and bool(getattr(policy, "supports_token_input", False))
    if token_builder is None and (token_input or token_budget is not None):
        token_builder = TokenBuilder.for_policy(policy)
    tokens = TokenOptions(
        keep=keep_tokens, builder=token_builder, budget=token_budget, token_input=token_input
    )
    specs = list(specs)
    batcher = Batcher(policy, max_batch=max_batch)
    pool: asyncio.Queue[gym.Env] = asyncio.Queue()
    for _ in range(min(max_in_flight, max(1, len(specs)))):
        pool.put_nowait(make_env())
    results: list[Trajectory | None] = [None] * len(specs)
    executor = (
        ThreadPoolExecutor(reset_workers, thread_name_prefix="env-reset")
        if reset_workers > 0
        else None
    )

    started: set[int] = set()
    ended: set[int] = set()

    async def one(i: int, spec: EpisodeSpec) -> None:
        env = await pool.get()
        started.add(i)
        try:
            traj = await run_episode(
                env, batcher, spec, params, forced_params, executor, tokens=tokens
            )
        except EpisodeDataError as e:
            if on_error is None:
                raise
            ended.add(i)
            on_error(e)
            return
        finally:
            pool.put_nowait(env)
        ended.add(i)
        results[i] = traj
        if on_done is not None:
            on_done(traj)

    tasks = [asyncio.ensure_future(one(i, s)) for i, s in enumerate(specs)]
    try:
        await asyncio.gather(*tasks)
    except BaseException as exc:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if on_abort is not None:
            for i in sorted(started - ended):
                on_abort(specs[i], exc)
        raise
    finally:
        await batcher.aclose()
        if executor is not None:  # a reset still running holds its env: let it end first
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        while not pool.empty():
            pool.get_nowait().close()
    return [r for r in results if r is not None]


def make_env_factory(env_id: str, **kwargs: Any) -> Callable[[], gym.Env]:
    """A picklable-enough factory for `run_episodes`."""

    def make() -> gym.Env:
        return gym.make(env_id, **kwargs)

    return make


def env_ids_of(trajs: Sequence[Trajectory]) -> list[str]:
    return sorted({t.env_id for t in trajs})

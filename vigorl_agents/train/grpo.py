"""GRPO with grounded rewards, single-turn and multi-turn zoom (docs/grpo.md): a loss and a data
source (rollouts from registered envs) over the shared training engine (`train.engine`).

One RL step (docs/grpo.md#one-rl-step):

1. take `prompts_per_step` samples of the env's train split (the data position is a function of
   the step: exact resume);
2. roll out `group_size` trajectories per prompt through the one episode loop
   (`rollout.run_episodes`, asynchronous turns) with per-request seeds derived from
   (seed, step, sample, k), keeping token ids (`keep_tokens`) and the response budget
   (`TokenBudget`: overlong trajectories are finalized by the env and fully masked);
3. reward = the env's overall score (the functions evaluation uses) + the opt-in grounding term
   `grounding_reward · on_target`;
4. build each trajectory's training stream by construction from the recorded ids
   (`tokens.tokenize_trajectory`), its images `[frame, crop_1, ...]` replayed from the env, and
   check it (`preflight`, before every pass);
5. old log-probs with the actor and reference log-probs with the frozen initial weights, on the
   exact streams; group-normalized advantages (`losses.group_advantages`);
6. split the trajectories into mini-batches (a seeded permutation) and take one optimizer step per
   mini-batch (`losses.grpo_loss`, token mean over the mini-batch whatever the micro-batching),
   for `ppo_epochs` passes; a non-finite gradient norm skips the step and is counted;
7. push the new weights into the rollout engine (vLLM engine: `load_weights` with names mapped by
   `weight_sync`; the transformers backend shares the trainer's model), validate, checkpoint.

Rollout backends: `hf` (transformers, the trainer's own model: no copy, no sync; the fallback
where vLLM is absent), `vllm-engine` (in-process vLLM, colocated; on CUDA it sleeps during the
update).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from vigorl_agents.cli import EnvKwargs
from vigorl_agents.jsonl import JsonlAppender
from vigorl_agents.train.checkpoint import (
    METRICS_FILE,
    list_checkpoints,
    tensorboard_writer,
    truncate_metrics,
)
from vigorl_agents.train.engine import EngineConfig, TrainEngine, checkpoint_step
from vigorl_agents.train.losses import group_advantages, grpo_loss, token_logprobs

logger = logging.getLogger(__name__)

RolloutBackend = Literal["hf", "vllm-engine"]


class PreflightDropped(Exception):
    """Internal: a trajectory failed preflight with `preflight="drop"`."""


@dataclass
class GRPOConfig(EngineConfig):
    """One GRPO run (defaults: docs/grpo.md#defaults, upstream's effective values, single-turn).

    Batch semantics: `prompts_per_step` × `group_size` trajectories per RL step, split into
    mini-batches of `mini_batch` trajectories, one optimizer step each, `ppo_epochs` passes;
    `micro_batch` trajectories per forward only bound memory (the loss is the token mean of the
    whole mini-batch, so they never change the result)."""

    output_dir: str = "runs/grpo/default"
    env_id: str = "ViGoRL/SynthSpatial-v0"
    env_kwargs: EnvKwargs = field(default_factory=dict)
    """Make kwargs of the env (KEY=VALUE ...), e.g. mode=multi_turn."""
    split: str = "train"
    val_split: str | None = "val"
    val_samples: int = 64
    val_temperature: float = 0.5
    steps: int = 500
    """RL steps planned (the schedule spans them)."""
    max_steps: int | None = None
    """Stop after this many RL steps (the schedule still spans `steps`)."""
    prompts_per_step: int = 128
    group_size: int = 5
    mini_batch: int = 320
    """Trajectories per optimizer step; must divide prompts_per_step × group_size."""
    ppo_epochs: int = 1
    micro_batch: int = 4
    """Trajectories per forward/backward (memory only)."""
    max_prompt_tokens: int = 4096
    max_response_tokens: int = 2048
    per_turn_tokens: int | None = None
    """Multi-turn per-turn token cap (upstream 1024); None: the whole response budget."""
    temperature: float = 1.0
    top_p: float = 0.99
    top_k: int = -1
    adv_norm: Literal["std", "mean_only"] = "std"
    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip: float | None = 3.0
    kl_coef: float = 0.01
    """k3 KL to the frozen reference, as a loss term; 0 keeps no reference model."""
    loss_agg: Literal["token_mean", "microbatch_mean"] = "token_mean"
    warmup_ratio: float = 0.05
    schedule: Literal["constant", "cosine"] = "constant"
    grounding_reward: float = 0.0
    """Opt-in (beyond the paper): add this × on_target (the env's grounding precision: share of
    think-step points inside a target box, procedural envs) to the reward. Logged either way."""
    rollout_backend: RolloutBackend = "hf"
    rollout_regex: str | None = None
    """Constrain sampled turns to this regular expression (vLLM structured outputs; the
    transformers backend refuses it). Only for plumbing runs of random models, which otherwise
    never make a tool call: constrained samples are not the model's distribution."""
    rollout_forced_regex: str | None = None
    """The same for the turn after the forced prefix (docs/protocol.md#forced-final-answer)."""
    rollout_max_in_flight: int = 64
    rollout_batch: int = 16
    """transformers backend: sequences per generate call."""
    vllm_gpu_memory_utilization: float = 0.35
    vllm_sleep: bool | None = None
    """Put the colocated vLLM engine to sleep during the update (None: on CUDA)."""
    preflight: Literal["fatal", "drop"] = "fatal"
    drop_overlong_prompts: bool = False
    mask_overlong: bool = True
    """The overlong filter (docs/grpo.md#overlong-trajectories): a trajectory ended by the token
    budget keeps its reward (and its place in the group's statistics) but trains no token. False
    trains its sampled tokens anyway (toy runs with a tiny budget)."""
    val_every: int = 25
    save_every: int = 25
    keep_checkpoints: int = 50
    log_trajectories: int = 4
    """Trajectories drawn into tensorboard at each validation (frame, crops, points)."""
    max_skipped_steps: int = 10
    """Stop the run when this many optimizer steps had a non-finite gradient norm."""
    save_final: bool = True


# =========================================================================== helpers


def step_seed(seed: int, step: int) -> int:
    """The base sampling seed of RL step `step` (per-request seeds derive from it, the sample and
    k: `rollout.request_seed`), so samples differ across steps yet runs are reproducible."""
    h = hashlib.sha256(f"grpo:{seed}:{step}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


@dataclass
class Example:
    """One trajectory as training tensors (prompt + response) with its per-token values."""

    uid: str
    group: int
    reward: float
    input_ids: Any
    target_mask: Any  # bool [L]: response tokens with mask 1
    pixel_values: Any
    image_grid_thw: Any
    mm_token_type_ids: Any
    rollout_logp: Any  # [N] over the target tokens
    n_target: int
    masked: bool
    old_logp: Any = None
    ref_logp: Any = None
    advantage: float = 0.0
    preflight_dropped: bool = False


def collate_examples(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-pad examples into model inputs + `target_mask` ([B, L] bool)."""
    import torch

    L = max(int(e.input_ids.shape[0]) for e in examples)
    B = len(examples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    mm = torch.zeros((B, L), dtype=torch.long)
    tm = torch.zeros((B, L), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = int(e.input_ids.shape[0])
        ids[i, :n] = e.input_ids
        attn[i, :n] = 1
        mm[i, :n] = e.mm_token_type_ids
        tm[i, :n] = e.target_mask
    out: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": attn,
        "mm_token_type_ids": mm,
        "target_mask": tm,
    }
    with_images = [e for e in examples if e.image_grid_thw is not None]
    if with_images:
        out["pixel_values"] = torch.cat([e.pixel_values for e in with_images], dim=0)
        out["image_grid_thw"] = torch.cat([e.image_grid_thw for e in with_images], dim=0)
    return out


# =========================================================================== trainer


class GRPOTrainer:
    """Holds the run (engine, reference, rollout policy, envs); `run()` trains. Construction
    resumes from the latest checkpoint of `output_dir` if any."""

    def __init__(self, cfg: GRPOConfig, reward_fn: Any = None):
        """`reward_fn(trajectory) -> float`, if given, replaces the env's overall score as the
        base reward (toy rewards, reward models); the grounding term is still added."""
        n_traj = cfg.prompts_per_step * cfg.group_size
        if cfg.prompts_per_step < 1 or cfg.group_size < 1 or cfg.ppo_epochs < 1:
            raise ValueError("prompts_per_step, group_size and ppo_epochs must be >= 1")
        if cfg.mini_batch < 1 or n_traj % cfg.mini_batch:
            raise ValueError(
                f"mini_batch {cfg.mini_batch} must divide the {n_traj} trajectories per step "
                f"(prompts_per_step {cfg.prompts_per_step} × group_size {cfg.group_size})"
            )
        if cfg.micro_batch < 1:
            raise ValueError("micro_batch must be >= 1")
        if cfg.deepspeed:
            raise NotImplementedError(
                "GRPO under DeepSpeed is not wired yet (multi-GPU GRPO is its own piece of work, "
                "docs/grpo.md#multi-gpu); run on one process"
            )
        self.cfg = cfg
        self.reward_fn = reward_fn
        self.out = Path(cfg.output_dir)
        self.eng = TrainEngine(cfg, required_state=("data_position", "config"), kind="vigorl-grpo")
        eng = self.eng
        self.device = eng.device
        self.model, self.processor, self.pad_id = eng.model, eng.processor, eng.pad_id
        eng.build_optimizer(cfg.steps * self.optimizer_steps_per_rl_step, cfg.schedule)
        self.step = 0
        self.skipped_total = 0
        state = eng.resume_state
        if state is not None:
            self.step = eng.restore(state)
            self.skipped_total = int(state.get("skipped_total", 0))
        self.stop_step = min(cfg.steps, cfg.max_steps or cfg.steps)
        self.ref_model = self._reference() if cfg.kl_coef != 0.0 else None
        self._envs: dict[str, Any] = {}
        self.policy: Any = None
        from vigorl_agents.tokens import TokenBuilder

        self.builder = TokenBuilder.from_processor(self.processor)
        from vigorl_agents.train.data import vision_token_ids

        vt = vision_token_ids(self.processor)
        # docs/grpo.md#sampling: a sampled response never holds a vision token
        self.vision_bias = tuple(
            (t, -100.0) for t in (vt.image_pad, vt.vision_start, vt.vision_end)
        )
        self._check_prompt_budget()
        logger.info(
            "GRPO: %s %s, %d prompts × %d = %d trajectories/step, mini-batch %d → %d optimizer "
            "steps/RL step, %d RL steps planned, stop at %d; %s; rollouts: %s",
            cfg.env_id,
            cfg.env_kwargs or "",
            cfg.prompts_per_step,
            cfg.group_size,
            n_traj,
            cfg.mini_batch,
            self.optimizer_steps_per_rl_step,
            cfg.steps,
            self.stop_step,
            eng.describe(),
            cfg.rollout_backend,
        )

    @property
    def optimizer_steps_per_rl_step(self) -> int:
        c = self.cfg
        return c.prompts_per_step * c.group_size // c.mini_batch * c.ppo_epochs

    # ------------------------------------------------------------------ setup

    def _reference(self) -> Any:
        """The frozen initial weights (never updated; on resume, still the initial ones)."""
        import torch

        from vigorl_agents.train.engine import _load_model

        if self.cfg.lora:
            return "adapter-disabled"  # the base weights under the adapters
        ref, _ = _load_model(self.eng.base_model_path, self.cfg, self.device)
        if self.cfg.bf16 and self.device.type == "cuda" and self.cfg.weights_dtype == "fp32":
            ref = ref.to(torch.bfloat16)
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        from vigorl_agents.models.vision_attention import set_vision_attention

        set_vision_attention(ref, self.cfg.vision_attention)
        return ref

    def env(self, split: str) -> Any:
        """One env of `split` for replaying images and prompt checks (cached)."""
        import gymnasium as gym

        import vigorl_env  # noqa: F401

        if split not in self._envs:
            self._envs[split] = gym.make(self.cfg.env_id, split=split, **self.cfg.env_kwargs)
        return self._envs[split]

    def make_env_factory(self, split: str):
        import gymnasium as gym

        import vigorl_env  # noqa: F401

        cfg = self.cfg

        def make() -> Any:
            return gym.make(cfg.env_id, split=split, **cfg.env_kwargs)

        return make

    def _check_prompt_budget(self) -> None:
        """Refuse a config whose worst-case prompt exceeds `max_prompt_tokens` (docs/grpo.md#
        prompt-length): image tokens counted expanded at the frame's pixel cap + the longest
        prompt text among the first samples of the split."""
        env = self.env(self.cfg.split).unwrapped
        max_pixels = int(env.config.max_pixels)
        worst_image = max_pixels // (28 * 28)
        longest_text = 0
        n = min(env.num_samples, 32)
        for i in range(n):
            obs, info = env.reset(options={"index": i})
            text = self.builder.text(info["system_prompt"] + "\n" + obs["text"])
            longest_text = max(longest_text, len(text))
        worst = worst_image + longest_text + 16  # + the chat template's role markers
        self.worst_prompt_tokens = worst
        if worst > self.cfg.max_prompt_tokens and not self.cfg.drop_overlong_prompts:
            raise ValueError(
                f"worst-case prompt {worst} tokens ({worst_image} image tokens at max_pixels "
                f"{max_pixels} + {longest_text} text tokens) exceeds max_prompt_tokens "
                f"{self.cfg.max_prompt_tokens}: raise max_prompt_tokens, lower the env's "
                f"max_pixels, or pass drop_overlong_prompts=True (such prompts are dropped and "
                f"counted; prompts are never truncated)"
            )

    def open_policy(self) -> Any:
        cfg = self.cfg
        if cfg.rollout_backend == "hf":
            from vigorl_agents.backends.hf import HFPolicy

            return HFPolicy(self.model, processor=self.processor, max_batch_size=cfg.rollout_batch)
        if cfg.rollout_backend == "vllm-engine":
            from vigorl_agents.backends.vllm_engine import VLLMEnginePolicy
            from vigorl_agents.models.load import processor_pixel_bounds

            lo, hi = processor_pixel_bounds(self.processor)
            src = str(self.eng.resume_from) if self.eng.resume_from else self.eng.base_model_path
            kwargs: dict[str, Any] = {}
            if self.device.type == "cuda":
                kwargs["gpu_memory_utilization"] = cfg.vllm_gpu_memory_utilization
                kwargs["enable_sleep_mode"] = self._sleep
            max_images = int(self.env(cfg.split).unwrapped.config.max_images)
            return VLLMEnginePolicy(
                src,
                max_model_len=cfg.max_prompt_tokens + cfg.max_response_tokens,
                limit_images=max_images,
                min_pixels=lo,
                max_pixels=hi,
                seed=cfg.seed,
                dtype="bfloat16" if self.device.type == "cuda" else None,
                multiprocessing=False,  # engine core in this process: weights handed over as is
                **kwargs,
            )
        raise ValueError(f"unknown rollout_backend {cfg.rollout_backend!r}")

    @property
    def _sleep(self) -> bool:
        s = self.cfg.vllm_sleep  # sleep mode is CUDA-only in vLLM
        return self.device.type == "cuda" and (s is None or bool(s))

    # ------------------------------------------------------------------ data position

    def prompt_indices(self, step: int) -> list[int]:
        """Sample indices of RL step `step`: epoch e visits the split in a permutation seeded
        with (seed, e); an unlimited procedural split is read in order from a seeded offset."""
        import torch

        n = self.env(self.cfg.split).unwrapped.num_samples
        B = self.cfg.prompts_per_step
        first = step * B
        if n >= 2**31 - 1:
            offset = step_seed(self.cfg.seed, -1) % (2**30)
            return [offset + first + i for i in range(B)]
        out = []
        for j in range(first, first + B):
            epoch, pos = divmod(j, n)
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            out.append(int(torch.randperm(n, generator=g)[pos]))
        return out

    # ------------------------------------------------------------------ rollouts

    def rollout(self, indices: list[int], *, split: str, n: int, temperature: float, seed: int):
        from vigorl_agents.policy import SamplingParams
        from vigorl_agents.rollout import EpisodeSpec, TokenBudget, run_episodes

        cfg = self.cfg
        # episode = slot · n + k: a sample drawn twice in one step (epoch wrap) makes two groups
        specs = [
            EpisodeSpec(index=i, episode=slot * n + k)
            for slot, i in enumerate(indices)
            for k in range(n)
        ]
        params = SamplingParams(
            temperature=temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            max_tokens=cfg.per_turn_tokens or cfg.max_response_tokens,
            seed=seed,
            logprobs=True,
            logit_bias=self.vision_bias,
        )
        # the forced-answer turn is sampled like every other (its tokens are trained)
        forced = params.with_(regex=cfg.rollout_forced_regex)
        params = params.with_(regex=cfg.rollout_regex)
        budget = TokenBudget(cfg.max_response_tokens, cfg.per_turn_tokens)
        return asyncio.run(
            run_episodes(
                self.make_env_factory(split),
                self.policy,
                specs,
                params,
                max_in_flight=cfg.rollout_max_in_flight,
                forced_params=forced,
                keep_tokens=True,
                token_budget=budget,
                token_builder=self.builder,
            )
        )

    def reward_of(self, traj: Any) -> tuple[float, float | None]:
        """(training reward, on_target): the env's overall score + the opt-in grounding term."""
        on_target = (traj.grounding or {}).get("on_target")
        r = float(traj.reward if self.reward_fn is None else self.reward_fn(traj))
        if self.cfg.grounding_reward:
            r += self.cfg.grounding_reward * float(on_target or 0.0)
        if not math.isfinite(r):
            raise ValueError(f"non-finite reward {r}")
        return r, on_target

    # ------------------------------------------------------------------ examples

    def build_examples(self, trajs: list[Any], split: str, n: int) -> tuple[list[Example], Counter]:
        """Training streams of `trajs` (tokens by construction, images replayed, preflight)."""
        import torch

        from vigorl_agents.replay import trajectory_images
        from vigorl_agents.tokens import tokenize_trajectory
        from vigorl_agents.train.data import vision_token_ids

        vt = vision_token_ids(self.processor)
        env = self.env(split)
        groups = {}
        counts: Counter = Counter()
        examples: list[Example] = []
        for traj in trajs:
            g = groups.setdefault(traj.episode // n, len(groups))  # the prompt's slot
            masked = False
            try:
                reward, _ = self.reward_of(traj)
            except Exception as e:  # the trajectory is masked, the step goes on
                logger.warning("reward of %s#%d failed: %s", traj.sample_id, traj.episode, e)
                counts["reward_errors"] += 1
                reward, masked = float("nan"), True  # left out of its group's statistics
            stream = tokenize_trajectory(traj, self.builder)
            counts["prompt_mismatch"] += stream.prompt_mismatch
            images = trajectory_images(env, traj)[: stream.num_images]
            ids = torch.tensor(stream.ids, dtype=torch.long)
            n_prompt = len(stream.prompt_ids)
            if n_prompt > self.cfg.max_prompt_tokens:
                if not self.cfg.drop_overlong_prompts:
                    raise ValueError(
                        f"{stream.uid}: prompt of {n_prompt} tokens > max_prompt_tokens "
                        f"{self.cfg.max_prompt_tokens}"
                    )
                counts["dropped_overlong_prompts"] += 1
                masked = True
            if traj.overlong:
                counts["overlong"] += 1
                if not self.cfg.mask_overlong:  # train the sampled tokens anyway
                    stream.response_mask = [
                        int(kind == "G") for kind, a, b in stream.segments for _ in range(b - a)
                    ]
            tmask = torch.zeros(len(ids), dtype=torch.bool)
            tmask[n_prompt:] = torch.tensor(stream.response_mask, dtype=torch.bool)
            if masked:
                tmask[:] = False
            rollout_lp = torch.tensor(stream.response_logprobs, dtype=torch.float32)[
                torch.tensor(stream.response_mask, dtype=torch.bool)
            ]
            out = self.processor.image_processor(images=images, return_tensors="pt")
            ex = Example(
                uid=stream.uid,
                group=g,
                reward=reward,
                input_ids=ids,
                target_mask=tmask,
                pixel_values=out["pixel_values"],
                image_grid_thw=out["image_grid_thw"].to(torch.long),
                mm_token_type_ids=(ids == vt.image_pad).long(),
                rollout_logp=rollout_lp if not masked else rollout_lp[:0],
                n_target=int(tmask.sum()),
                masked=masked,
            )
            examples.append(ex)
        return examples, counts

    def preflight(self, examples: list[Example], counts: Counter) -> None:
        """docs/grpo.md#preflight: vision tokens match the image grids, vision start/end counts
        equal the images, length within max prompt + max response, nothing of a vision token or
        an inserted segment is trained. Raises `PreflightError` naming the trajectory (or, with
        `preflight="drop"`, masks it and counts)."""
        from vigorl_agents.train.data import (
            PreflightError,
            vision_token_ids,
            vision_token_problems,
        )

        vt = vision_token_ids(self.processor)
        max_len = self.cfg.max_prompt_tokens + self.cfg.max_response_tokens
        for ex in examples:
            if ex.preflight_dropped:  # masked (and counted) by an earlier pass of this step
                continue
            ids = ex.input_ids
            problems = vision_token_problems(ids, ex.image_grid_thw, vt, ex.target_mask)
            if len(ids) > max_len and not ex.masked:  # a masked one is never forwarded
                problems.append(f"length {len(ids)} > {max_len}")
            if int(ex.target_mask.sum()) != ex.rollout_logp.numel() and not ex.masked:
                problems.append("mask length differs from the response's sampled tokens")
            if problems:
                msg = f"trajectory {ex.uid!r}: " + "; ".join(problems)
                if self.cfg.preflight == "fatal":
                    raise PreflightError(msg)
                logger.warning("preflight: %s (masked)", msg)
                counts["preflight_dropped"] += 1
                ex.target_mask[:] = False
                ex.masked, ex.n_target, ex.preflight_dropped = True, 0, True

    # ------------------------------------------------------------------ log-probs

    def _micro_batches(self, examples: list[Example]) -> list[list[Example]]:
        m = self.cfg.micro_batch
        return [examples[i : i + m] for i in range(0, len(examples), m)]

    def _logp(self, model: Any, batch: dict[str, Any], with_entropy: bool = False):
        return token_logprobs(
            model,
            batch,
            batch["target_mask"],
            temperature=self.cfg.temperature,
            with_entropy=with_entropy,
        )

    def _split(self, flat: Any, examples: list[Example]) -> list[Any]:
        sizes = [e.n_target for e in examples]
        return list(flat.detach().float().cpu().split(sizes))

    def score(self, model: Any, examples: list[Example], attr: str) -> None:
        """Set `attr` (old_logp / ref_logp) of every example from `model`, without gradient."""
        import torch

        live = [e for e in examples if e.n_target > 0]
        for mb in self._micro_batches(live):
            batch = collate_examples(mb, self.pad_id)
            with torch.no_grad():
                if model is self.model:
                    logp, _ = self.eng.forward(self._logp, batch)
                elif model == "adapter-disabled":
                    with self.eng.lora_model.disable_adapter():
                        logp, _ = self.eng.forward(self._logp, batch)
                else:
                    with self.eng.autocast():
                        logp, _ = self._logp(model, batch)
            for e, lp in zip(mb, self._split(logp, mb), strict=True):
                setattr(e, attr, lp)

    # ------------------------------------------------------------------ update

    def update(self, examples: list[Example]) -> dict[str, Any]:
        """Mini-batch optimizer steps over the examples (docs/grpo.md#batch-semantics)."""
        import torch

        cfg = self.cfg
        stats_sum: Counter = Counter()
        opt_steps = skipped = 0
        grad_norms: list[float] = []
        entropy_sum = entropy_n = 0.0
        tokens = 0
        t0 = time.perf_counter()
        self.eng.train()
        for epoch in range(cfg.ppo_epochs):
            g = torch.Generator().manual_seed(step_seed(cfg.seed, self.step) + epoch)
            order = torch.randperm(len(examples), generator=g).tolist()
            for start in range(0, len(order), cfg.mini_batch):
                mini = [examples[i] for i in order[start : start + cfg.mini_batch]]
                live = [e for e in mini if e.n_target > 0]
                denom = float(sum(e.n_target for e in live))
                micro = self._micro_batches(live)
                for mb in micro:
                    batch = collate_examples(mb, self.pad_id)
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    logp, ent = self.eng.forward(
                        lambda model, b: self._logp(model, b, with_entropy=True), batch
                    )
                    old = torch.cat([e.old_logp for e in mb]).to(self.device)
                    ref = (
                        torch.cat([e.ref_logp for e in mb]).to(self.device)
                        if self.ref_model is not None
                        else None
                    )
                    adv = torch.cat([torch.full((e.n_target,), e.advantage) for e in mb]).to(
                        self.device
                    )
                    one = torch.ones_like(logp)
                    loss, st = grpo_loss(
                        logp[None],
                        old[None],
                        ref[None] if ref is not None else None,
                        adv[None],
                        one[None],
                        eps_low=cfg.eps_low,
                        eps_high=cfg.eps_high,
                        dual_clip=cfg.dual_clip,
                        kl_coef=cfg.kl_coef,
                        denom=denom if cfg.loss_agg == "token_mean" else None,
                    )
                    if cfg.loss_agg == "microbatch_mean":
                        loss = loss / len(micro)
                    self.eng.backward(loss)
                    for k in ("pg_loss_sum", "kl_sum", "clip_sum", "dual_clip_sum", "ratio_sum"):
                        stats_sum[k] += st[k]
                    stats_sum["loss"] += float(loss.detach())
                    entropy_sum += float(ent.sum())
                    entropy_n += ent.numel()
                    tokens += int(batch["attention_mask"].sum())
                # a mini-batch with nothing to train still takes its (empty) optimizer step, so
                # the schedule advances by the configured steps per RL step whatever is masked
                grad_norm, skip, lr = self.eng.optimizer_step()
                opt_steps += 1
                grad_norms.append(grad_norm)
                if skip:
                    skipped += 1
                    self.skipped_total += 1
                    logger.warning(
                        "RL step %d: non-finite grad norm %s, optimizer step skipped (%d so far)",
                        self.step,
                        grad_norm,
                        self.skipped_total,
                    )
                    if self.skipped_total >= cfg.max_skipped_steps:
                        raise RuntimeError(
                            f"{self.skipped_total} optimizer steps had a non-finite gradient "
                            f"norm (max_skipped_steps {cfg.max_skipped_steps}): stopping; the "
                            f"last checkpoint is intact"
                        )
        dt = time.perf_counter() - t0
        n_tok = max(sum(e.n_target for e in examples) * cfg.ppo_epochs, 1)
        return {
            "loss": stats_sum["loss"] / max(opt_steps, 1),
            "pg_loss": stats_sum["pg_loss_sum"] / n_tok,
            "kl": stats_sum["kl_sum"] / n_tok,
            "clip_frac": stats_sum["clip_sum"] / n_tok,
            "dual_clip_frac": stats_sum["dual_clip_sum"] / n_tok,
            "ratio_mean": stats_sum["ratio_sum"] / n_tok,
            "entropy": entropy_sum / max(entropy_n, 1),
            "grad_norm": _mean([g for g in grad_norms if math.isfinite(g)]),
            "optimizer_steps": opt_steps,
            "skipped_steps": skipped,
            "lr": self.eng.scheduler.get_last_lr()[0],
            "update_s": dt,
            "update_tokens_per_s": tokens / dt if dt > 0 else float("nan"),
        }

    # ------------------------------------------------------------------ one RL step

    def _sync_weights(self) -> float:
        """Push the trainer's weights into the vLLM engine (names mapped and checked)."""
        if self.cfg.rollout_backend != "vllm-engine":
            return 0.0
        from vigorl_agents.backends.vllm_engine import checkpoint_tensor_names
        from vigorl_agents.train.weight_sync import hf_names

        t0 = time.perf_counter()
        sd = self.eng.hf_state_dict()
        known = checkpoint_tensor_names(self.eng.base_model_path)
        named = hf_names(self.model, sd, known)
        if self.cfg.freeze_vision:  # frozen: unchanged, not sent
            named = [(k, v) for k, v in named if not k.startswith("visual.")]
        self.policy.load_weights(named)
        return time.perf_counter() - t0

    def _wake(self) -> None:
        if self.cfg.rollout_backend == "vllm-engine" and self._sleep:
            self.policy.llm.wake_up()

    def _sleep_engine(self) -> None:
        if self.cfg.rollout_backend == "vllm-engine" and self._sleep:
            self.policy.llm.sleep(level=1)

    def rl_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t_step = time.perf_counter()
        indices = self.prompt_indices(self.step)
        self.eng.train(False)
        self._wake()
        t0 = time.perf_counter()
        trajs = self.rollout(
            indices,
            split=cfg.split,
            n=cfg.group_size,
            temperature=cfg.temperature,
            seed=step_seed(cfg.seed, self.step),
        )
        rollout_s = time.perf_counter() - t0
        self._sleep_engine()
        gen_tokens = sum(len(t.token_ids or ()) for tr in trajs for t in tr.turns)
        examples, counts = self.build_examples(trajs, cfg.split, cfg.group_size)
        # advantages over every trajectory of the group, masked ones included
        import torch

        # a trajectory whose reward failed is masked and left out of its group's statistics (an
        # infrastructure failure must not move the others' advantages); overlong ones stay in
        scored = [e for e in examples if math.isfinite(e.reward)]
        adv = group_advantages(
            torch.tensor([e.reward for e in scored]), [e.group for e in scored], mode=cfg.adv_norm
        )
        for e, a in zip(scored, adv.tolist(), strict=True):
            e.advantage = a
        self.preflight(examples, counts)
        t0 = time.perf_counter()
        self.score(self.model, examples, "old_logp")
        old_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.ref_model is not None:
            self.preflight(examples, counts)
            self.score(self.ref_model, examples, "ref_logp")
        ref_s = time.perf_counter() - t0
        self.preflight(examples, counts)
        up = self.update(examples)
        sync_s = self._sync_weights()
        self.step += 1
        rec = {
            "step": self.step,
            **self.rollout_metrics(trajs, examples),
            **up,
            "rollout_s": rollout_s,
            "old_logprob_s": old_s,
            "ref_logprob_s": ref_s,
            "sync_s": sync_s,
            "step_s": time.perf_counter() - t_step,
            "rollout_tokens_per_s": gen_tokens / rollout_s if rollout_s > 0 else float("nan"),
            "rollout_vs_recomputed_logp": self._logp_gap(examples),
            "prompts": len(indices),
            "trajectories": len(examples),
            "mini_batch": cfg.mini_batch,
            "zero_adv_groups": self._zero_adv_groups(examples),
            "skipped_total": self.skipped_total,
            **{k: int(v) for k, v in counts.items()},
        }
        return rec

    @staticmethod
    def _zero_adv_groups(examples: list[Example]) -> float:
        by: dict[int, list[float]] = {}
        for e in examples:
            if math.isfinite(e.reward):
                by.setdefault(e.group, []).append(e.reward)
        return _mean([float(max(v) == min(v)) for v in by.values()])

    @staticmethod
    def _logp_gap(examples: list[Example]) -> float:
        """Mean |rollout logprob − recomputed old logprob| per trained token: how far the rollout
        engine's numbers are from the trainer's (0 up to kernels for the shared HF model)."""
        gaps = []
        for e in examples:
            if e.n_target and e.old_logp is not None and e.rollout_logp.numel() == e.n_target:
                gaps.append(float((e.rollout_logp - e.old_logp).abs().mean()))
        return _mean(gaps)

    def rollout_metrics(self, trajs: list[Any], examples: list[Example] | None) -> dict[str, Any]:
        comps: dict[str, list[float]] = {}
        for t in trajs:
            for k, v in t.components.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    comps.setdefault(k, []).append(float(v))
        on_target = [
            float(t.grounding["on_target"])
            for t in trajs
            if t.grounding and t.grounding.get("on_target") is not None
        ]
        out = {
            "reward": _mean([float(t.reward) for t in trajs]),
            "accuracy": _mean(comps.get("accuracy", [])),
            "format_rate": _mean([float(v > 0) for v in comps.get("format", [])]),
            "turns": _mean([float(len(t.turns)) for t in trajs]),
            "crops": _mean([float(sum(1 for x in t.turns if x.crop)) for t in trajs]),
            "response_tokens": _mean(
                [float(sum(len(x.token_ids or ()) for x in t.turns)) for t in trajs]
            ),
            "overlong_frac": _mean([float(t.overlong) for t in trajs]),
            "grounding_on_target": _mean(on_target),
            "grounding_points_frac": len(on_target) / max(len(trajs), 1),
        }
        for k, v in comps.items():
            out[f"reward/{k}"] = _mean(v)
        if examples is not None:
            out["train_reward"] = _mean([e.reward for e in examples if math.isfinite(e.reward)])
        return out

    # ------------------------------------------------------------------ validation

    def validate(self, writer: Any = None) -> dict[str, Any]:
        """Val split, n = 1, temperature `val_temperature` (both modes): mean reward/accuracy."""
        cfg = self.cfg
        if not cfg.val_split or cfg.val_samples <= 0:
            return {}
        env = self.env(cfg.val_split).unwrapped
        n = min(cfg.val_samples, env.num_samples)
        self.eng.train(False)
        self._wake()
        trajs = self.rollout(
            list(range(n)), split=cfg.val_split, n=1, temperature=cfg.val_temperature,
            seed=step_seed(cfg.seed + 1, 0),
        )  # fmt: skip
        self._sleep_engine()
        rec = {"split": "val", "step": self.step, **self.rollout_metrics(trajs, None)}
        if writer is not None and cfg.log_trajectories:
            self._draw(writer, trajs[: cfg.log_trajectories])
        return rec

    def _draw(self, writer: Any, trajs: list[Any]) -> None:
        """A few validation trajectories (frame, crops, points, ground truth) into tensorboard."""
        try:
            from vigorl_agents.replay import draw_episodes, episode_view, replay

            env = self.env(self.cfg.val_split)
            views = []
            for t in trajs:
                obs, _ = env.reset(options={"index": t.index})
                views.append(episode_view(t.env_id, obs["text"], replay(env, t), t))
            fig = draw_episodes(views, title=f"validation, step {self.step}")
            writer.add_figure("val/trajectories", fig, self.step)
        except Exception as e:  # a picture must never stop training
            logger.warning("could not draw validation trajectories: %s", e)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        state = {
            "data_position": {
                "rl_step": self.step,
                "prompts_seen": self.step * self.cfg.prompts_per_step,
            },
            "skipped_total": self.skipped_total,
            "config": asdict(self.cfg),
        }
        path = self.eng.save(self.step, state)
        ckpts = list_checkpoints(self.out)
        for _, old in ckpts[: max(0, len(ckpts) - self.cfg.keep_checkpoints)]:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
        return path

    # ------------------------------------------------------------------ loop

    def run(self, progress: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        truncate_metrics(self.out / METRICS_FILE, self.step)
        writer = tensorboard_writer(self.out / "tb", purge_step=self.step + 1)
        history: list[dict[str, Any]] = []
        val_history: list[dict[str, Any]] = []
        last_ckpt = self.eng.resume_from
        self.policy = self.open_policy()
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.stop_step, initial=self.step, desc="GRPO", unit="step")
        try:
            with JsonlAppender(self.out / METRICS_FILE) as metrics:

                def log(rec: dict[str, Any]) -> None:
                    # undefined means (e.g. no trained token) are written as null, not NaN
                    metrics.write(
                        {
                            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                            for k, v in rec.items()
                        }
                    )
                    if writer is not None:
                        split = rec.get("split", "train")
                        for k, v in rec.items():
                            if (
                                isinstance(v, (int, float))
                                and not isinstance(v, bool)
                                and k != "step"
                            ):
                                writer.add_scalar(f"{split}/{k}", v, rec["step"])

                if self.step == 0 and cfg.val_split:
                    v = self.validate(writer)
                    if v:
                        val_history.append(v)
                        log(v)
                while self.step < self.stop_step:
                    if bar is not None:
                        bar.set_postfix_str(f"rollout (step {self.step + 1})")
                    m = self.rl_step()
                    history.append(m)
                    log(m)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(reward=f"{m['reward']:.3f}", acc=f"{m['accuracy']:.3f}")
                    logger.info(
                        "RL step %d/%d reward %.3f acc %.3f kl %.4f clip %.3f grad %.3f "
                        "(rollout %.1fs, update %.1fs)",
                        self.step, self.stop_step, m["reward"], m["accuracy"], m["kl"],
                        m["clip_frac"], m["grad_norm"], m["rollout_s"], m["update_s"],
                    )  # fmt: skip
                    if cfg.val_split and self.step % cfg.val_every == 0:
                        v = self.validate(writer)
                        val_history.append(v)
                        log(v)
                    if self.step % cfg.save_every == 0:
                        last_ckpt = self.save_checkpoint()
                if cfg.save_final and checkpoint_step(last_ckpt) != self.step:
                    last_ckpt = self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
            self.close()
        return {
            "step": self.step,
            "history": history,
            "val": val_history,
            "checkpoint": str(last_ckpt) if last_ckpt else None,
        }

    def close(self) -> None:
        policy, self.policy = self.policy, None
        if policy is not None and self.cfg.rollout_backend != "hf":
            with contextlib.suppress(Exception):
                policy.close()
        for env in self._envs.values():
            with contextlib.suppress(Exception):
                env.close()
        self._envs.clear()


def train_grpo(cfg: GRPOConfig, progress: bool = True, reward_fn: Any = None) -> dict[str, Any]:
    """Train (or resume) one GRPO run; returns step, per-step history, validation records and
    the last checkpoint. `reward_fn`: see `GRPOTrainer`."""
    return GRPOTrainer(cfg, reward_fn=reward_fn).run(progress=progress)

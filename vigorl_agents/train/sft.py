"""SFT of Qwen2-VL / Qwen2.5-VL on grounded chains (docs/sft.md): a loss and a data source over
the shared training engine (`train.engine`: model, precision, LoRA, optimizer, DeepSpeed,
checkpoints — the same engine GRPO uses).

What the loop does, and why:

* **Loss** = next-token cross-entropy on the supervised tokens (assistant content + its
  `<|im_end|>`; masks from `data.tokenize_record`), **token mean per micro-batch**
  (docs/sft.md#training-loop); an optimizer step over `grad_accum` micro-batches averages those
  means (what LLaMA-Factory, which produced the paper's checkpoints, did). `loss_agg="token_mean"`
  instead divides the summed loss of the whole accumulation window by its supervised-token count
  (micro-batching then cannot change the value). The logits are computed only at supervised positions (hidden states gathered
  before `lm_head`): same value as the full-vocabulary logits of every position, without
  materialising L × 151k floats.
* **Trainable**: the language model (full fine-tuning); the vision tower and its patch merger are
  frozen by default (`freeze_vision`). `lora=True` trains peft LoRA adapters on the language
  model's projections instead (`train.lora`; merged weights in every checkpoint).
* **Precision**: `weights_dtype="fp32"` (default) keeps float32 weights; `bf16=True` runs the
  forward under `torch.autocast(bfloat16)`. `weights_dtype="bf16"` keeps the model itself in
  bfloat16 (bf16 GEMMs without per-op casts, half the weight traffic) and float32 master weights
  in AdamW (`train.precision`: grads moved to fp32, clipping and the update in fp32, then rounded
  into the model), as DeepSpeed's bf16 mode does. `"bf16_pure"` drops the master copy (least
  memory; updates below a bf16 step of the weight are lost, i.e. most of them at lr 1e-6).
* **Data overlap** (single process): while the accelerator runs step s, a background thread
  builds step s+1's micro-batches (image processor, tokenisation, collate; pinned memory on CUDA)
  and the main thread copies them with `non_blocking=True`. The window is still a function of the
  step (below), so the data order and exact resume are unchanged.
* **Schedule**: AdamW (betas 0.9/0.999, weight decay on ≥2-D weights only), linear warmup over
  `warmup_ratio` of the planned steps then cosine (`get_cosine_schedule_with_warmup`); gradient
  norm clipped to 1.0; a non-finite norm skips the update (logged). The plan is always
  `epochs × steps_per_epoch`; `max_steps` only stops the run early, so stopping and resuming never
  changes the schedule.
* **Data order**: epoch e visits the examples in `randperm(n)` drawn from a generator seeded with
  (seed, e); optimizer step s of the run is window s mod steps_per_epoch of epoch s // steps_per_epoch.
  The data position is therefore a function of the step, which makes resume exact.
* **Checkpoints** (docs/sft.md#checkpoints-and-resume): `output_dir/checkpoint-{step}/`
  is a plain Hugging Face folder (model + processor, `from_pretrained` / vLLM load it as is) plus
  `optimizer.pt` (optimizer, scheduler and fp32 master tensors) and `trainer_state.json` (step,
  epoch, data position, RNG states, config, and the sha256 of every other file of the folder).
  Nothing a resume reads is unpickled with code execution: the state is JSON and `optimizer.pt`
  is read with torch's restricted unpickler (`weights_only=True`), so a crafted checkpoint is
  refused, never run. A checkpoint is written to a hidden temporary folder and renamed into
  place, so a crash mid-save never leaves a half folder under the final name.
* **Resume**: `train` resumes from the highest `checkpoint-N`. Before anything is written it
  checks the folder (required files, JSON state, sha256 of every recorded file, the optimizer
  file) and raises `CheckpointError` naming the folder and the file at fault; the steps after N
  are re-run, so their records are cut from `metrics.jsonl` (and hidden in tensorboard).
* **Logging**: `metrics.jsonl` (always; `vigorl_agents.jsonl` appender) and tensorboard
  (`torch.utils.tensorboard`, only if the `tensorboard` package is installed): loss, lr, grad
  norm, tokens/s, supervised tokens.

Multi-GPU: DeepSpeed ZeRO-2/3 through the standard launcher (`deepspeed --num_gpus N -m ...` or
`torchrun --nproc_per_node N -m ...`) with `deepspeed="zero2" | "zero3" | <json>`:

* the config dict comes from `distributed.deepspeed_config` (bf16, batch sizes, clipping 1.0, ZeRO
  stage); `global_batch` fixes `per_device_batch × grad_accum × world_size` (grad_accum derived);
* the same torch AdamW and warmup-cosine LambdaLR are handed to `deepspeed.initialize`;
* optimizer step s covers the same micro-batches as on one process; micro-batch k of the step goes
  to rank k mod world_size; a rank short of micro-batches at the end of an epoch runs a zero-weight
  filler so that every rank makes the same number of collective forward/backward passes; the loss is
  scaled so that the gradient equals the one-process gradient (both `loss_agg` modes);
* rank 0 logs and writes metrics; `checkpoint-N/` holds the HF folder (ZeRO-3: 16-bit weights
  gathered from all ranks) plus `deepspeed/` (`engine.save_checkpoint`: fp32 master weights,
  optimizer and scheduler partitions; `rng_rank{r}.json` per rank) for exact resume through
  `engine.load_checkpoint`. DeepSpeed unpickles its files without restriction, so each one is
  first read with the restricted unpickler (`check_deepspeed_pickles`) and refused if it holds
  anything but tensors, plain containers and the DeepSpeed classes its checkpoints need.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from vigorl_agents.jsonl import JsonlAppender
from vigorl_agents.train.checkpoint import (  # re-exported: the SFT API of earlier versions
    CHECKPOINT_RE,
    METRICS_FILE,
    CheckpointError,
    check_deepspeed_pickles,
    list_checkpoints,
    read_checkpoint_state,
    tensorboard_writer,
    truncate_metrics,
)
from vigorl_agents.train.data import (
    PreflightError,
    SFTDataset,
    TokenizedExample,
    collate,
    load_sft_file,
    preflight,
)
from vigorl_agents.train.distributed import rank_micro_batches
from vigorl_agents.train.engine import (  # noqa: F401  (re-exported)
    EngineConfig,
    TrainEngine,
    _load_model,
    drop_input_grad_hooks,
)
from vigorl_agents.train.losses import model_inputs, num_supervised, sft_loss_sum
from vigorl_env.protocol import FORCED_PREFIX

logger = logging.getLogger(__name__)

__all__ = [
    "CheckpointError",
    "SFTConfig",
    "SFTTrainer",
    "check_deepspeed_pickles",
    "compute_loss",
    "drop_input_grad_hooks",
    "list_checkpoints",
    "model_inputs",
    "read_checkpoint_state",
    "train",
    "truncate_metrics",
]


@dataclass
class SFTConfig(EngineConfig):
    """One SFT run (defaults: docs/sft.md#presets, paper Table A1, per-device values). The model,
    precision, LoRA, optimizer and DeepSpeed fields are the engine's (`EngineConfig`)."""

    output_dir: str = "runs/sft/default"
    train_file: str = ""
    """vigorl SFT JSONL, sharegpt JSON or parquet (docs/data.md#sft-record-formats)."""
    val_file: str | None = None
    data_root: str | None = None
    """Root for relative image paths (default: $DATA_ROOT)."""
    epochs: int = 3
    cutoff_len: int = 8192
    log_every: int = 1
    save_every: int = 100
    save_final: bool = True
    """Also save when the run stops. False: only every `save_every` steps (scaling checks)."""
    eval_every: int = 250
    max_steps: int | None = None
    """Stop after this many optimizer steps (the schedule still spans all epochs)."""
    loss_agg: Literal["microbatch_mean", "token_mean"] = "microbatch_mean"
    on_preflight: Literal["fatal", "skip"] = "fatal"
    mask_prefix: str | None = FORCED_PREFIX
    """Masked when an assistant turn starts with it (docs/protocol.md#forced-final-answer)."""


# =========================================================================== loss


def compute_loss(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """(sum of next-token cross-entropies over supervised positions, number of them): the SFT
    loss, `losses.sft_loss_sum` (hidden states gathered at the supervised positions before
    `lm_head`, so only the needed logits are computed)."""
    return sft_loss_sum(model, batch)


def _loss_sum(model: Any, batch: dict[str, Any]) -> Any:
    return compute_loss(model, batch)[0]


_num_supervised = num_supervised

# =========================================================================== trainer


class SFTTrainer:
    """Holds the run (engine, data); `run()` trains. `train(cfg)` is the one-call form.
    Construction resumes from the latest checkpoint of `output_dir` if any."""

    def __init__(self, cfg: SFTConfig):
        if cfg.epochs < 1:
            raise ValueError("per_device_batch, grad_accum and epochs must be >= 1")
        if not cfg.train_file:
            raise ValueError("SFTConfig.train_file is required")
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.eng = TrainEngine(
            cfg, required_state=("steps_per_epoch", "num_examples"), kind="vigorl-sft"
        )
        eng = self.eng
        self.ds, self.env, self.world = eng.ds, eng.env, eng.world
        self.grad_accum = eng.grad_accum
        self.micro_per_step = self.grad_accum * self.world
        self.device = eng.device
        self.resume_from = eng.resume_from
        self.model, self.processor, self.pad_id = eng.model, eng.processor, eng.pad_id
        self.speedups, self.frozen = eng.speedups, eng.frozen

        self.train_ds = self._dataset(cfg.train_file, "train")
        self.val_ds = self._dataset(cfg.val_file, "val") if cfg.val_file else None
        n = len(self.train_ds)
        if n == 0:
            raise ValueError(f"{cfg.train_file}: no example left after filtering")
        self.n_micro = math.ceil(n / cfg.per_device_batch)
        self.steps_per_epoch = math.ceil(self.n_micro / self.micro_per_step)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.stop_step = min(self.total_steps, cfg.max_steps or self.total_steps)
        eng.build_optimizer(self.total_steps, "cosine")
        self.optimizer, self.scheduler, self.master = eng.optimizer, eng.scheduler, eng.master
        self.engine = eng.ds_engine  # DeepSpeed's engine (None on one process)
        self.zero_stage = eng.zero_stage
        self.step = 0
        self._pool: ThreadPoolExecutor | None = None
        self._prefetch: tuple[int, Future] | None = None
        self._data_lock = threading.Lock()  # processor/tokenizer: one user at a time
        state = eng.resume_state
        if state is not None:
            if state["num_examples"] != n or state["steps_per_epoch"] != self.steps_per_epoch:
                raise CheckpointError(
                    f"cannot resume from {self.resume_from}: it was trained on "
                    f"{state['num_examples']} examples ({state['steps_per_epoch']} "
                    f"steps/epoch), this run has {n} ({self.steps_per_epoch})"
                )
            self.step = eng.restore(state)
        logger.info(
            "SFT: %d examples, %d micro-batches/epoch, %d steps/epoch, %d planned, stop at %d; %s",
            n,
            self.n_micro,
            self.steps_per_epoch,
            self.total_steps,
            self.stop_step,
            eng.describe(),
        )

    # ------------------------------------------------------------------ data

    def _dataset(self, path: str, name: str) -> SFTDataset:
        return SFTDataset(
            load_sft_file(path, self.cfg.data_root),
            self.processor,
            cutoff_len=self.cfg.cutoff_len,
            mask_prefix=self.cfg.mask_prefix,
            on_preflight=self.cfg.on_preflight,
            name=name,
        )

    def _epoch_order(self, epoch: int) -> list[int]:
        import torch

        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.train_ds), generator=g).tolist()

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, first micro-batch index within the epoch) of optimizer step `step` (0-based)."""
        return step // self.steps_per_epoch, (step % self.steps_per_epoch) * self.micro_per_step

    def global_window(self, step: int) -> list[list[int]]:
        """Example indices of each micro-batch of optimizer step `step`, all ranks."""
        epoch, first = self.position(step)
        order = self._epoch_order(epoch)
        b = self.cfg.per_device_batch
        last = min(first + self.micro_per_step, self.n_micro)
        return [order[i * b : (i + 1) * b] for i in range(first, last)]

    def window(self, step: int) -> list[list[int]]:
        """Example indices of each micro-batch of optimizer step `step` on this rank."""
        return rank_micro_batches(self.global_window(step), self.env.rank, self.world)

    def _micro_batch(self, idx: list[int], step: int | None = None) -> dict[str, Any] | None:
        examples: list[TokenizedExample] = []
        for i in idx:
            with self._data_lock:
                ex = self.train_ds[i]
            try:
                preflight(ex, max_len=self.cfg.cutoff_len)
            except PreflightError:
                if self.cfg.on_preflight == "fatal":
                    raise
                logger.warning(
                    "step %d: skipping example %s (preflight)",
                    self.step if step is None else step,
                    ex.id,
                )
                continue
            examples.append(ex)
        return collate(examples, self.pad_id) if examples else None

    def _build_step(self, step: int) -> list[dict[str, Any]]:
        """The non-empty micro-batches of optimizer step `step` on this rank, on the CPU (pinned
        when training on CUDA, so that the copy to the device can be asynchronous)."""
        batches = [b for b in (self._micro_batch(ix, step) for ix in self.window(step)) if b]
        if self.device.type == "cuda":
            batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
        return batches

    def _step_batches(self) -> list[dict[str, Any]]:
        """This step's micro-batches (prefetched if the previous step started building them),
        then start building the next step's in the background thread."""
        pre, self._prefetch = self._prefetch, None
        if pre is not None and pre[0] == self.step:
            batches = pre[1].result()  # re-raises a preflight error of that step here
        else:
            if pre is not None:
                pre[1].cancel()
                pre[1].exception()  # wait; whatever it built is for another step
            batches = self._build_step(self.step)
        nxt = self.step + 1
        if nxt < self.stop_step:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sft-data")
            self._prefetch = (nxt, self._pool.submit(self._build_step, nxt))
        return batches

    def _wait_prefetch(self) -> None:
        """Let a background build finish (before evaluation or saving use the processor)."""
        if self._prefetch is not None:
            self._prefetch[1].exception()

    def close(self) -> None:
        """Stop the background data thread (a pending prefetch is dropped)."""
        self._prefetch = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        return self.eng.autocast()

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over the next accumulation window; returns its metrics."""
        if self.ds:
            return self._train_step_ds()
        t0 = time.perf_counter()
        self.eng.train()
        batches = self._step_batches()
        if not batches:
            raise RuntimeError(f"step {self.step}: every example of the window failed preflight")
        counts = [_num_supervised(b) for b in batches]
        total_sup = sum(counts)
        n_tokens = [int(b["attention_mask"].sum()) for b in batches]  # on the CPU: no sync
        non_blocking = self.device.type == "cuda"
        loss_value = 0.0
        tokens = 0
        for b, n_tok in zip(batches, n_tokens, strict=True):
            b = {k: v.to(self.device, non_blocking=non_blocking) for k, v in b.items()}
            loss_sum, n_sup = self.eng.forward(compute_loss, b)
            if self.cfg.loss_agg == "microbatch_mean":
                loss = loss_sum / n_sup / len(batches)
            else:
                loss = loss_sum / total_sup
            self.eng.backward(loss)
            loss_value += float(loss.detach())
            tokens += n_tok
        grad_norm, skipped, lr = self.eng.optimizer_step()
        if skipped:
            logger.warning("step %d: non-finite grad norm %s, update skipped", self.step, grad_norm)
        self.step += 1
        dt = time.perf_counter() - t0
        epoch, _ = self.position(self.step - 1)
        return {
            "step": self.step,
            "epoch": epoch,
            "loss": loss_value,
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": skipped,
            "tokens": tokens,
            "supervised_tokens": total_sup,
            "micro_batches": len(batches),
            "step_time_s": dt,
            "tokens_per_s": tokens / dt if dt > 0 else float("nan"),
        }

    def _filler(self) -> dict[str, Any]:
        """A valid micro-batch of the current step for a rank that has none left (weight 0)."""
        for ix in self.global_window(self.step):
            b = self._micro_batch(ix)
            if b is not None:
                return b
        raise RuntimeError(f"step {self.step}: every example of the window failed preflight")

    def _train_step_ds(self) -> dict[str, Any]:
        """DeepSpeed step: this rank's micro-batches (padded to grad_accum with zero-weight
        fillers), loss scaled so that the averaged gradient equals the one-process one."""
        import torch
        import torch.distributed as dist

        t0 = time.perf_counter()
        self.eng.train()
        real = [b for b in (self._micro_batch(ix) for ix in self.window(self.step)) if b]
        stats = torch.tensor(
            [len(real), sum(_num_supervised(b) for b in real)],
            dtype=torch.float64,
            device=self.device,
        )
        dist.all_reduce(stats)
        n_mb, total_sup = int(stats[0]), int(stats[1])
        if n_mb == 0:
            raise RuntimeError(f"step {self.step}: every example of the window failed preflight")
        work = [(b, 1.0) for b in real]
        if len(work) < self.grad_accum:
            filler = real[0] if real else self._filler()
            work += [(filler, 0.0)] * (self.grad_accum - len(work))
        scale = self.grad_accum * self.world  # undone by the engine (1/gas) and the DP mean (1/W)
        loss_value = torch.zeros((), dtype=torch.float64, device=self.device)
        tokens = 0
        for b, weight in work:
            loss_sum = self.eng.forward(_loss_sum, b)
            if self.cfg.loss_agg == "microbatch_mean":
                loss = loss_sum * (weight * scale / (_num_supervised(b) * n_mb))
            else:
                loss = loss_sum * (weight * scale / total_sup)
            self.eng.backward(loss)
            loss_value += loss.detach().double() / scale
            tokens += int(b["attention_mask"].sum()) if weight else 0
        totals = torch.stack(
            [loss_value, torch.tensor(float(tokens), dtype=torch.float64, device=self.device)]
        )
        dist.all_reduce(totals)
        grad_norm, skipped, lr = self.eng.optimizer_step()
        self.step += 1
        dt = time.perf_counter() - t0
        epoch, _ = self.position(self.step - 1)
        return {
            "step": self.step,
            "epoch": epoch,
            "loss": float(totals[0]),
            "lr": lr,
            "grad_norm": grad_norm,
            "skipped": skipped,
            "tokens": int(totals[1]),
            "supervised_tokens": total_sup,
            "micro_batches": n_mb,
            "step_time_s": dt,
            "tokens_per_s": float(totals[1]) / dt if dt > 0 else float("nan"),
        }

    def evaluate(self) -> float:
        """Token-mean loss over all supervised tokens of the val file."""
        import torch

        if self.val_ds is None or len(self.val_ds) == 0:
            return float("nan")
        self._wait_prefetch()
        self.eng.train(False)
        total, count = 0.0, 0
        b = self.cfg.per_device_batch
        with torch.no_grad():
            # DeepSpeed: every rank evaluates the whole file (ZeRO-3 forwards are collective)
            for i in range(0, len(self.val_ds), b):
                batch = collate(
                    [self.val_ds[j] for j in range(i, min(i + b, len(self.val_ds)))], self.pad_id
                )
                total += float(self.eng.forward(_loss_sum, batch))
                count += _num_supervised(batch)
        return total / max(count, 1)

    # ------------------------------------------------------------------ checkpoints

    def _trainer_state(self) -> dict[str, Any]:
        """The SFT part of a checkpoint's JSON state (data position, config)."""
        epoch, micro = self.position(self.step)
        return {
            "epoch": epoch,
            "micro_index": micro,
            "steps_per_epoch": self.steps_per_epoch,
            "num_examples": len(self.train_ds),
            "config": asdict(self.cfg),
        }

    def save_checkpoint(self) -> Path:
        """Write `checkpoint-{step}` atomically (temporary folder renamed into place)."""
        if not self.ds:
            self._wait_prefetch()
        return self.eng.save(self.step, self._trainer_state())

    # ------------------------------------------------------------------ loop

    def run(self) -> dict[str, Any]:
        main = self.env.is_main
        self.out.mkdir(parents=True, exist_ok=True)
        if main:  # the steps after the checkpoint are re-run: their old records go
            truncate_metrics(self.out / METRICS_FILE, self.step)
        writer = tensorboard_writer(self.out / "tb", purge_step=self.step + 1) if main else None
        history: list[dict[str, Any]] = []
        last_ckpt: Path | None = self.resume_from
        val_loss = float("nan")
        metrics_cm = (
            JsonlAppender(self.out / METRICS_FILE) if main else contextlib.nullcontext(None)
        )
        with metrics_cm as metrics:

            def log(rec: dict[str, Any]) -> None:
                if metrics is None:  # ranks > 0 do not log
                    return
                metrics.write(rec)
                if writer is not None:
                    for k, v in rec.items():
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                            writer.add_scalar(f"{rec.get('split', 'train')}/{k}", v, rec["step"])

            while self.step < self.stop_step:
                m = self.train_step()
                history.append(m)
                if main and (self.step % self.cfg.log_every == 0 or self.step == self.stop_step):
                    log(m)
                    logger.info(
                        "step %d/%d loss %.4f lr %.3g grad %.3f %.0f tok/s",
                        self.step,
                        self.stop_step,
                        m["loss"],
                        m["lr"],
                        m["grad_norm"],
                        m["tokens_per_s"],
                    )
                if self.val_ds is not None and self.step % self.cfg.eval_every == 0:
                    val_loss = self.evaluate()
                    log({"split": "val", "step": self.step, "loss": val_loss})
                if self.step % self.cfg.save_every == 0:
                    last_ckpt = self.save_checkpoint()
            if self.cfg.save_final and (
                last_ckpt is None or CHECKPOINT_RE.match(last_ckpt.name).group(1) != str(self.step)
            ):
                last_ckpt = self.save_checkpoint()
            if self.val_ds is not None and self.step % self.cfg.eval_every != 0:
                val_loss = self.evaluate()
                log({"split": "val", "step": self.step, "loss": val_loss})
        self.close()
        if writer is not None:
            writer.close()
        return {
            "step": self.step,
            "history": history,
            "checkpoint": str(last_ckpt),
            "val_loss": val_loss,
            "train_data": self.train_ds.summary(),
            "val_data": self.val_ds.summary() if self.val_ds is not None else None,
        }


def train(cfg: SFTConfig) -> dict[str, Any]:
    """Train (or resume) one SFT run; returns step, per-step history, last checkpoint, data stats."""
    return SFTTrainer(cfg).run()

"""GRPO RL-step time on one GPU: rollout / old log-prob / reference / update, and our update against a
plain transformers loop doing the same work (docs/benchmarks.md#grpo).

Setting: a randomly initialised model of Qwen2.5-VL-3B's shape (`benchmarks.perf.hf_generate`),
the tiny model's processor (same tokenizer and template), procedural envs (SynthSpatial single-turn,
SynthSearch multi-turn zoom) at `--max-pixels`. Our side is `GRPOTrainer.rl_step` with
`GRPOConfig(weights_dtype="bf16"` (fp32 master weights), SDPA, Liger on CUDA, vision frozen, the
reference model kept (k3 KL, coefficient 0.01)`)` and the transformers rollout backend (the
trainer's own model: no weight copy). Random weights never stop on their own, so every response
runs to `--max-response` tokens; `mask_overlong=False` trains those tokens anyway (the update does
the work of a real step of that length), and in the multi-turn env they never make a tool call
(turns/episode = 1: the table says so).

Timed: each RL step's phases as `rl_step` reports them (median over `--steps` after `--warmup`).
Update tokens/s counts the non-padding tokens of every forward/backward of the update (prompt +
response); MFU = 6 · N_all · tokens/s / peak (N_all = every parameter, frozen vision included, as
the issue counts it; `--peak-tflops` 989 = H100/H200 SXM bf16 dense).

Plain side ("plain", like for like): the same architecture in bf16 (bf16 weights, grads and AdamW
state), vision frozen, the SAME examples of our last step in the same micro-batches and
mini-batches, `model(**inputs).logits` over every position → `log_softmax` → gather the response
tokens → the same GRPO loss function → backward → AdamW step per mini-batch; gradient
checkpointing as ours. The ratio ours/plain compares the update phase only, same work.

    python -m benchmarks.perf.grpo --modes single multi --out benchmarks/results/grpo.md

CPU smoke run (tiny model; seconds): `python -m benchmarks.perf.grpo --tiny --steps 1 --warmup 0`
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tyro

from benchmarks.machine import machine_name
from benchmarks.perf.train import _config, _free, _peak_gib, _sync
from benchmarks.report import write_results

log = logging.getLogger("benchmarks.perf.grpo")


@dataclass(frozen=True)
class Args:
    modes: tuple[str, ...] = ("single", "multi")
    tiny: bool = False
    """The tiny model (CPU smoke run) instead of the 3B shape."""
    steps: int = 2
    warmup: int = 1
    prompts: int = 8
    group: int = 4
    micro_batch: int = 4
    max_response: int = 256
    max_pixels: int = 448 * 448
    """Model-frame pixel cap of the envs (256 image tokens at 448²)."""
    gradient_checkpointing: bool = True
    liger: bool = True
    plain: bool = True
    peak_tflops: float = 989.0
    seed: int = 0
    out: Path | None = None
    plain_from: Path | None = None
    """(internal) run only the plain side on the examples saved in this file, print its row."""
    extra: dict[str, Any] = field(default_factory=dict)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _patched_loader(args: Args):
    """`engine._load_model` that builds the model from its config on the device (random init,
    seeded: the policy and the reference start equal) with the tiny processor."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vigorl_agents.models.load import set_processor_pixel_bounds, tiny_model_dir

    def load(path: str, cfg: Any, device: Any):
        bf16 = cfg.weights_dtype in ("bf16", "bf16_pure")
        torch.manual_seed(args.seed)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(
                _config(args),
                dtype=torch.bfloat16 if bf16 else torch.float32,
                attn_implementation="sdpa",
            )
        processor = AutoProcessor.from_pretrained(tiny_model_dir("tiny-qwen2.5-vl"))
        set_processor_pixel_bounds(processor, min_pixels=28 * 28 * 4, max_pixels=args.max_pixels)
        return model, processor

    return load


def _grpo_config(args: Args, mode: str, out: Path) -> Any:
    import torch

    from vigorl_agents.train.grpo import GRPOConfig

    cuda = torch.cuda.is_available()
    multi = mode == "multi"
    return GRPOConfig(
        model="tiny-qwen2.5-vl",  # the processor's source; weights come from `_patched_loader`
        output_dir=str(out),
        env_id="ViGoRL/SynthSearch-v0" if multi else "ViGoRL/SynthSpatial-v0",
        env_kwargs={"max_pixels": args.max_pixels, **({"mode": "multi_turn"} if multi else {})},
        device="cuda" if cuda else "cpu",
        weights_dtype="bf16" if cuda else "fp32",
        attn_implementation="sdpa",
        liger=args.liger and cuda and not args.tiny,
        gradient_checkpointing=args.gradient_checkpointing,
        lr=1e-6,
        steps=args.warmup + args.steps,
        prompts_per_step=args.prompts,
        group_size=args.group,
        mini_batch=args.prompts * args.group // (16 if multi else 2) or 1,
        micro_batch=args.micro_batch,
        max_prompt_tokens=4096,
        max_response_tokens=args.max_response,
        per_turn_tokens=min(args.max_response, 1024) if multi else None,
        max_grad_norm=0.2 if multi else 1.0,
        mask_overlong=False,
        val_split=None,
        save_final=False,
        rollout_batch=args.prompts * args.group,
        seed=args.seed,
    )


def run_ours(args: Args, mode: str, tmp: Path) -> tuple[dict, Any]:
    from vigorl_agents.train import engine as train_engine
    from vigorl_agents.train.grpo import GRPOTrainer

    cfg = _grpo_config(args, mode, tmp / f"run-{mode}")
    saved = train_engine._load_model
    train_engine._load_model = _patched_loader(args)
    try:
        trainer = GRPOTrainer(cfg)
    finally:
        train_engine._load_model = saved
    trainer.policy = trainer.open_policy()
    recs = []
    captured: dict[str, Any] = {}
    update = trainer.update

    def capture(examples):  # keep the last step's examples for the plain side
        captured["examples"] = examples
        return update(examples)

    trainer.update = capture
    for i in range(args.warmup + args.steps):
        _sync(_device())
        rec = trainer.rl_step()
        _sync(_device())
        log.info(
            "%s step %d: %s", mode, i, {k: rec[k] for k in ("rollout_s", "update_s", "step_s")}
        )
        if i >= args.warmup:
            recs.append(rec)
    n_all = sum(p.numel() for p in trainer.model.parameters())
    n_train = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    med = {
        k: statistics.median(r[k] for r in recs)
        for k in ("rollout_s", "old_logprob_s", "ref_logprob_s", "update_s", "step_s",
                  "update_tokens_per_s", "rollout_tokens_per_s", "turns", "response_tokens")
    }  # fmt: skip
    row = {
        "side": "ours",
        "mode": mode,
        **med,
        "params": n_all,
        "trainable": n_train,
        "optimizer_steps": recs[-1]["optimizer_steps"],
        "trajectories": recs[-1]["trajectories"],
        "peak_mem_gib": _peak_gib(_device()),
    }
    examples = captured["examples"]
    m = cfg.micro_batch

    def micro(xs: list) -> list:  # the trainer's micro-batching, without holding the trainer
        return [xs[i : i + m] for i in range(0, len(xs), m)]

    trainer.update = update  # drop the closure's reference to the trainer
    captured.clear()
    trainer.close()
    del trainer
    _free(_device())
    return row, (examples, micro, cfg)


def run_plain(args: Args, mode: str, examples: list, micro_fn: Any, cfg: Any) -> dict:
    """The plain transformers update on the same examples (see the module docstring)."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vigorl_agents.train.grpo import collate_examples
    from vigorl_agents.train.losses import grpo_loss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(
            _config(args),
            dtype=torch.bfloat16 if device == "cuda" else torch.float32,
            attn_implementation="sdpa",
        )
    for p in model.model.visual.parameters():
        p.requires_grad_(False)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    pad = 0
    live = [e for e in examples if e.n_target > 0]

    def update() -> int:
        tokens = 0
        for start in range(0, len(live), cfg.mini_batch):
            mini = live[start : start + cfg.mini_batch]
            denom = float(sum(e.n_target for e in mini))
            for mb in micro_fn(mini):
                batch = {k: v.to(device) for k, v in collate_examples(mb, pad).items()}
                tm = batch.pop("target_mask")
                logits = model(**batch).logits.float()
                logp_all = torch.log_softmax(logits[:, :-1], -1)
                tgt = batch["input_ids"][:, 1:]
                logp = logp_all.gather(-1, tgt[..., None])[..., 0][tm[:, 1:]]
                old = torch.cat([e.old_logp for e in mb]).to(device)
                ref = torch.cat([e.ref_logp for e in mb]).to(device)
                adv = torch.cat([torch.full((e.n_target,), e.advantage) for e in mb]).to(device)
                loss, _ = grpo_loss(logp[None], old[None], ref[None], adv[None],
                                    torch.ones_like(logp)[None], denom=denom)  # fmt: skip
                loss.backward()
                tokens += int(batch["attention_mask"].sum())
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return tokens

    times, tokens = [], 0
    for i in range(args.warmup + args.steps):
        _sync(_device())
        t = time.perf_counter()
        tokens = update()
        _sync(_device())
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    dt = statistics.median(times)
    row = {
        "side": "plain",
        "mode": mode,
        "update_s": dt,
        "update_tokens_per_s": tokens / dt,
        "params": sum(p.numel() for p in model.parameters()),
        "peak_mem_gib": _peak_gib(_device()),
    }
    return row


def render(rows: list[dict], args: Args, env: dict) -> str:
    lines = [
        "| mode | side | rollout s | old logp s | ref logp s | update s | RL step s | update tok/s "
        "| MFU (6·N_all) % | update ÷ plain (same work) | turns/ep | resp tok | peak GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    plain = {r["mode"]: r for r in rows if r["side"] == "plain"}
    for r in rows:
        mfu = 100 * 6 * r["params"] * r["update_tokens_per_s"] / (args.peak_tflops * 1e12)
        ratio = ""
        if r["side"] == "ours" and r["mode"] in plain:
            ratio = f"{r['update_tokens_per_s'] / plain[r['mode']]['update_tokens_per_s']:.2f}×"

        def f(k: str, r: dict = r) -> str:
            return f"{r[k]:.2f}" if k in r else "–"

        lines.append(
            f"| {r['mode']} | {r['side']} | {f('rollout_s')} | {f('old_logprob_s')} | "
            f"{f('ref_logprob_s')} | {f('update_s')} | {f('step_s')} | "
            f"{r['update_tokens_per_s']:,.0f} | {mfu:.1f} | {ratio} | "
            f"{r.get('turns', '–')} | {r.get('response_tokens', '–')} | {r['peak_mem_gib']} |"
        )
    lines += [
        "",
        f"- machine: {env['gpu']} ({env['cpu']}); torch {env['torch']}, transformers "
        f"{env['transformers']}",
        f"- {args.prompts} prompts × {args.group} samples per RL step, responses of "
        f"{args.max_response} tokens (random weights never stop), frames ≤ {args.max_pixels} px, "
        f"micro-batch {args.micro_batch}; median of {args.steps} RL steps after {args.warmup} "
        f"warm-up; rollouts through the transformers backend (the trainer's model)",
        "- update ÷ plain: the same examples, micro-batches and mini-batches, the same frozen "
        "vision tower and checkpointing; plain = bf16 weights/AdamW, full-vocabulary logits",
    ]
    return "\n".join(lines)


def environment() -> dict[str, str]:
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return {
        "gpu": gpu,
        "cpu": machine_name(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def _plain_in_child(args: Args, mode: str, examples: list, cfg: Any, tmp: Path) -> dict:
    """The plain side in its own process (a fresh GPU: our trainer's memory cannot linger)."""
    import subprocess
    import sys

    import torch

    path = tmp / f"examples-{mode}.pt"
    torch.save(
        {"examples": [vars(e) for e in examples], "mini_batch": cfg.mini_batch,
         "max_grad_norm": cfg.max_grad_norm, "mode": mode},
        path,
    )  # fmt: skip
    cmd = [sys.executable, "-m", "benchmarks.perf.grpo", "--plain-from", str(path),
           "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--micro-batch", str(args.micro_batch), "--seed", str(args.seed)]  # fmt: skip
    if args.tiny:
        cmd.append("--tiny")
    if not args.gradient_checkpointing:
        cmd.append("--no-gradient-checkpointing")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"plain side failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _plain_main(args: Args) -> None:
    import torch

    from vigorl_agents.train.grpo import Example

    saved = torch.load(args.plain_from, weights_only=False)  # our own file, just written
    examples = [Example(**e) for e in saved["examples"]]
    m = args.micro_batch

    def micro(xs: list) -> list:
        return [xs[i : i + m] for i in range(0, len(xs), m)]

    cfg = type("Cfg", (), {"mini_batch": saved["mini_batch"],
                           "max_grad_norm": saved["max_grad_norm"]})  # fmt: skip
    row = run_plain(args, saved["mode"], examples, micro, cfg)
    print(json.dumps(row))


def main(args: Args) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    env = environment()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for mode in args.modes:
            ours, (examples, _micro, cfg) = run_ours(args, mode, Path(d))
            rows.append(ours)
            if args.plain:
                rows.append(_plain_in_child(args, mode, examples, cfg, Path(d)))
            del examples
            _free(_device())
    table = render(rows, args, env)
    print(table)
    result = {"env": env, "rows": rows, "args": json.loads(json.dumps(vars(args), default=str))}
    write_results(
        args.out, title="GRPO RL step, one GPU", module="benchmarks.perf.grpo", table=table,
        result=result,
    )  # fmt: skip
    return result


if __name__ == "__main__":
    _args = tyro.cli(Args)
    if _args.plain_from is not None:
        _plain_main(_args)
    else:
        main(_args)

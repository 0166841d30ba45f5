"""DeepSpeed path of the SFT trainer: the config dict (no deepspeed import) and, on GPUs, ZeRO-3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vigorl_agents.train.distributed import (
    deepspeed_config,
    rank_micro_batches,
    resolve_grad_accum,
    zero_stage,
)
from vigorl_agents.train.sft import SFTConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("world,gas", [(1, 32), (2, 16), (4, 8), (8, 4)])
def test_global_batch_is_kept_across_world_sizes(world, gas):
    cfg = SFTConfig(per_device_batch=1, global_batch=32, deepspeed="zero3", bf16=True)
    ds = deepspeed_config(cfg, world)
    assert ds["gradient_accumulation_steps"] == gas
    assert ds["train_micro_batch_size_per_gpu"] == 1
    assert ds["train_batch_size"] == 32 == 1 * gas * world


def test_grad_accum_without_global_batch_and_bad_division():
    assert resolve_grad_accum(2, 3, None, 4) == 3
    assert resolve_grad_accum(2, 3, 16, 4) == 2
    with pytest.raises(ValueError, match="global_batch"):
        resolve_grad_accum(2, 1, 12, 4)  # 12 / (2 × 4) does not divide
    with pytest.raises(ValueError, match="global_batch"):
        resolve_grad_accum(4, 1, 4, 2)  # smaller than one micro-batch per rank


def test_zero3_and_zero2_sections():
    z3 = deepspeed_config(SFTConfig(deepspeed="zero3", bf16=True, global_batch=32), 8)
    assert zero_stage(z3) == 3
    assert z3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert z3["bf16"] == {"enabled": True} and z3["fp16"] == {"enabled": False}
    assert z3["gradient_clipping"] == 1.0
    assert "optimizer" not in z3 and "scheduler" not in z3  # the trainer passes its own
    z2 = deepspeed_config(SFTConfig(deepspeed="zero2", bf16=False, max_grad_norm=0.5), 2)
    assert zero_stage(z2) == 2
    assert z2["bf16"] == {"enabled": False}
    assert z2["gradient_clipping"] == 0.5
    assert z2["train_batch_size"] == 1 * 4 * 2  # grad_accum as given when global_batch is None
    json.dumps(z3)  # plain JSON


def test_json_config_auto_values_filled_and_conflicts_rejected(tmp_path):
    f = tmp_path / "ds.json"
    f.write_text(
        json.dumps(
            {
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                "bf16": {"enabled": "auto"},
                "zero_optimization": {"stage": 3},
            }
        )
    )
    cfg = SFTConfig(deepspeed=str(f), per_device_batch=2, global_batch=32, bf16=True)
    ds = deepspeed_config(cfg, 4)
    assert ds["gradient_accumulation_steps"] == 4 and ds["train_batch_size"] == 32
    assert ds["bf16"]["enabled"] is True and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    f.write_text(json.dumps({"gradient_accumulation_steps": 3}))
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        deepspeed_config(cfg, 4)
    f.write_text(json.dumps({"optimizer": {"type": "AdamW"}}))
    with pytest.raises(ValueError, match="optimizer"):
        deepspeed_config(cfg, 4)


def test_rank_split_covers_the_step_once():
    micro = [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    shares = [rank_micro_batches(micro, r, 2) for r in range(2)]
    assert shares == [[[0, 1], [4, 5], [8]], [[2, 3], [6, 7]]]
    assert sorted(m for share in shares for m in share) == sorted(micro)
    assert rank_micro_batches(micro, 0, 1) == micro


def test_single_process_window_unchanged_by_global_batch(tiny_qwen25_dir, tmp_path):
    """global_batch on one process = grad_accum global_batch / per_device_batch."""
    pytest.importorskip("torch")
    from vigorl_agents.train.sft import SFTTrainer

    tests = Path(__file__).parent
    sys.path.insert(0, str(tests))
    from test_sft_train import cfg_for

    train_file = _tiny_train_file(tmp_path)
    a = SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "a", grad_accum=2))
    b = SFTTrainer(
        cfg_for(tiny_qwen25_dir, train_file, tmp_path / "b", grad_accum=7, global_batch=4)
    )
    assert a.grad_accum == b.grad_accum == 2
    assert [a.window(s) for s in range(a.total_steps)] == [
        b.window(s) for s in range(b.total_steps)
    ]


def _tiny_train_file(tmp_path: Path) -> Path:
    f = tmp_path / "t.jsonl"
    rows = [
        {
            "id": f"t{k}",
            "messages": [
                {"role": "user", "content": f"Say {k}."},
                {"role": "assistant", "content": f"<answer> {k} </answer>"},
            ],
            "images": [],
        }
        for k in range(5)
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def _cuda_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(_cuda_count() < 1, reason="needs CUDA")
def test_zero3_matches_across_gpu_counts(tmp_path):
    """ZeRO-3 debug run on 1 GPU and (if present) 2 GPUs, same global batch: same losses."""
    pytest.importorskip("deepspeed")
    losses = {}
    for n in sorted({1, min(2, _cuda_count())}):
        out = tmp_path / f"n{n}"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={n}",
            "-m",
            "experiments.sft",
            "debug-zero3",
            "--out-root",
            str(out),
            "--sft.max-steps",
            "6",
        ]
        env = {**os.environ, "NCCL_NVLS_ENABLE": "0"}
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=900)
        rows = [json.loads(line) for line in (out / "debug-zero3" / "metrics.jsonl").open()]
        losses[n] = [r["loss"] for r in rows if r.get("split") != "val"]
        assert (out / "debug-zero3" / "checkpoint-6" / "deepspeed" / "latest").is_file()
        assert (out / "debug-zero3" / "checkpoint-6" / "config.json").is_file()
    if 2 in losses:
        assert losses[1] == pytest.approx(losses[2], rel=2e-2, abs=2e-2)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_deepspeed_files_are_pre_read_without_running_code(tmp_path):
    """DeepSpeed unpickles its checkpoint files unrestricted; the trainer reads them first with
    the restricted unpickler: plain tensor files pass, a payload is refused before it runs."""
    torch = pytest.importorskip("torch")
    from vigorl_agents.train.sft import CheckpointError, check_deepspeed_pickles

    tag = tmp_path / "deepspeed" / "global_step2"
    tag.mkdir(parents=True)
    with pytest.raises(CheckpointError, match="no DeepSpeed checkpoint file"):
        check_deepspeed_pickles(tag)
    torch.save(
        {"module": {"w": torch.ones(2)}, "global_steps": 2}, tag / "mp_rank_00_model_states.pt"
    )
    check_deepspeed_pickles(tag)
    marker = tmp_path / "pwned"
    torch.save(
        {"optimizer_state_dict": {"x": _Payload(marker)}},
        tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt",
    )
    with pytest.raises(CheckpointError, match=r"refusing to resume from .*optim_states\.pt"):
        check_deepspeed_pickles(tag)
    assert not marker.exists()

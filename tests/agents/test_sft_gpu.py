"""GPU paths of the SFT trainer (skipped without CUDA): Liger kernels with bf16 + fp32 masters on
one GPU, and LoRA under DeepSpeed ZeRO-2 on two. Run on the device with
`python -m pytest -m gpu tests/agents/test_sft_gpu.py tests/agents/test_sft_deepspeed.py`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[2]
_CUDA = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.fixture(scope="module")
def debug_data(tmp_path_factory):
    sys.path.insert(0, str(ROOT))
    from experiments.sft import DebugData, make_debug_data

    return make_debug_data(tmp_path_factory.mktemp("data"), DebugData())


def _cfg(train_file, out, **kw):
    from vigorl_agents.train.sft import SFTConfig

    base = SFTConfig(
        model="tiny-qwen2.5-vl",
        train_file=str(train_file),
        output_dir=str(out),
        epochs=3,
        lr=1e-3,
        warmup_ratio=0.0,
        per_device_batch=2,
        grad_accum=2,
        device="cuda",
        save_every=1000,
        eval_every=1000,
        attn_implementation="sdpa",
    )
    return replace(base, **kw)


@pytest.mark.gpu
@pytest.mark.skipif(_CUDA < 1, reason="needs CUDA")
def test_liger_bf16_masters_match_and_learn(debug_data, tmp_path):
    """Liger + bf16 weights with fp32 masters: the first loss equals the plain kernels' (same
    batch, bf16 rounding apart), training lowers the loss, the checkpoint loads as plain HF."""
    pytest.importorskip("liger_kernel")
    from transformers import AutoModelForImageTextToText

    from vigorl_agents.train.data import collate
    from vigorl_agents.train.sft import SFTTrainer, compute_loss

    train_file, _ = debug_data
    ref = SFTTrainer(_cfg(train_file, tmp_path / "ref", weights_dtype="bf16", max_steps=1))
    ref_first = ref.train_step()["loss"]
    ref.close()
    tr = SFTTrainer(_cfg(train_file, tmp_path / "liger", weights_dtype="bf16", liger=True))
    assert "rms_norm" in tr.speedups["liger"] and "vision_rope" in tr.speedups["liger"]
    fixed = collate([tr.train_ds[i] for i in range(len(tr.train_ds))], tr.pad_id)
    fixed = {k: v.to("cuda") for k, v in fixed.items()}

    def fixed_loss() -> float:
        with torch.no_grad():
            s, n = compute_loss(tr.model.eval(), fixed)
        return float(s) / n

    before = fixed_loss()
    out = tr.run()
    assert out["history"][0]["loss"] == pytest.approx(ref_first, rel=1e-2)
    assert fixed_loss() < 0.8 * before
    loaded = AutoModelForImageTextToText.from_pretrained(out["checkpoint"], dtype=torch.bfloat16)
    trained = dict(tr.model.named_parameters())
    for name, p in list(loaded.named_parameters())[:20]:
        assert torch.equal(p.cuda(), trained[name].detach()), name


@pytest.mark.gpu
@pytest.mark.skipif(_CUDA < 2, reason="needs 2 GPUs")
def test_lora_under_zero2_on_two_gpus(tmp_path):
    """LoRA + ZeRO-2 over 2 GPUs: trains, writes a merged HF folder + adapter/, resumes."""
    pytest.importorskip("deepspeed")
    base = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "-m",
        "experiments.sft",
        "debug-zero3",
        "--out-root",
        str(tmp_path),
        "--sft.deepspeed",
        "zero2",
        "--sft.lora",
        "--sft.lora-rank",
        "8",
        "--sft.lr",
        "1e-2",
    ]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0"}
    subprocess.run([*base, "--sft.max-steps", "4"], cwd=ROOT, env=env, check=True, timeout=900)
    run = tmp_path / "debug-zero3"
    ck = run / "checkpoint-4"
    assert (ck / "adapter" / "adapter_model.safetensors").is_file()
    assert (ck / "config.json").is_file() and (ck / "deepspeed" / "latest").is_file()
    subprocess.run([*base, "--sft.max-steps", "6"], cwd=ROOT, env=env, check=True, timeout=900)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").open()]
    train = [r for r in rows if r.get("split") != "val"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    assert train[-1]["loss"] < train[0]["loss"]
    from transformers import AutoModelForImageTextToText

    m = AutoModelForImageTextToText.from_pretrained(run / "checkpoint-6")
    assert not any("lora" in k for k in m.state_dict())

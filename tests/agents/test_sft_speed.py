"""SFT speed options on the tiny Qwen2.5-VL (CPU): pure-bf16 weights, background batch building."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.train.data import collate  # noqa: E402
from vigorl_agents.train.sft import SFTConfig, SFTTrainer, compute_loss  # noqa: E402


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six single-image records and a text-only one (the pattern of test_sft_train.py)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("sftspeed")
    rows = []
    for k in range(6):
        w, h = [(112, 84), (84, 112), (56, 112)][k % 3]
        img = Image.new("RGB", (w, h), (30 * k, 120, 250 - 30 * k))
        img.paste((255, 255, 0), (k * 5, k * 3, k * 5 + 20, k * 3 + 20))
        p = d / f"f{k}.png"
        img.save(p)
        x, y = 10 + k * 5, 13 + k * 3
        messages = [
            {"role": "user", "content": f"<image>Where is the square {k}?"},
            {
                "role": "assistant",
                "content": f"<think>\nThe target is at ({x}, {y}).\n</think>\n"
                f"<answer> ({x}, {y}) </answer>",
            },
        ]
        rows.append({"id": f"ex{k}", "messages": messages, "images": [str(p)]})
    rows.append(
        {
            "id": "text",
            "messages": [
                {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "<answer> hi </answer>"},
            ],
            "images": [],
        }
    )
    f = d / "train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def cfg_for(tiny_dir: Path, train_file: Path, out: Path, **kw) -> SFTConfig:
    base = SFTConfig(
        model=str(tiny_dir),
        train_file=str(train_file),
        output_dir=str(out),
        epochs=3,
        lr=2e-3,
        warmup_ratio=0.0,
        per_device_batch=2,
        grad_accum=2,
        device="cpu",
        save_every=1000,
        eval_every=1000,
    )
    return replace(base, **kw)


def test_bf16_weights_step_runs_and_lowers_fixed_batch_loss(tiny_qwen25_dir, train_file, tmp_path):
    tr = SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "run", weights_dtype="bf16"))
    assert {p.dtype for p in tr.model.parameters()} == {torch.bfloat16}
    fixed = collate([tr.train_ds[i] for i in range(len(tr.train_ds))], tr.pad_id)

    def fixed_loss() -> float:
        with torch.no_grad():
            s, n = compute_loss(tr.model.eval(), fixed)
        return float(s) / n

    before = fixed_loss()
    hist = [tr.train_step() for _ in range(tr.total_steps)]
    tr.close()
    assert all(m["grad_norm"] > 0 and not m["skipped"] for m in hist)
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)
    # pure bf16: the weights and the AdamW state stay bf16, no autocast
    assert {p.dtype for p in tr.model.parameters()} == {torch.bfloat16}
    st = next(iter(tr.optimizer.state.values()))
    assert st["exp_avg"].dtype == torch.bfloat16


def test_prefetched_batches_equal_synchronous_ones(tiny_qwen25_dir, train_file, tmp_path):
    """The background thread builds exactly the next step's window (data order unchanged)."""
    tr = SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "run", max_steps=3))
    tr.train_step()
    assert tr._prefetch is not None and tr._prefetch[0] == 1
    got = tr._prefetch[1].result()
    want = [collate([tr.train_ds[i] for i in ix], tr.pad_id) for ix in tr.window(1)]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in w)
    # the same losses as a trainer that never prefetches a usable batch
    ref = SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "ref", max_steps=3))
    ref.stop_step = 0  # nothing past the current step is prefetched
    ref_losses = [ref.train_step()["loss"] for _ in range(3)]
    assert ref._prefetch is None
    tr2 = SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "pre", max_steps=3))
    pre_losses = [tr2.train_step()["loss"] for _ in range(3)]
    assert pre_losses == ref_losses
    tr.close()
    tr2.close()


def test_frozen_vision_tower_stays_out_of_autograd_with_checkpointing(
    tiny_qwen25_dir, train_file, tmp_path
):
    """transformers' checkpointing hooks make the patch embedding require grad; the trainer undoes it
    for a frozen tower (otherwise it runs forward, recompute and backward for nothing)."""
    import torch

    trainer = SFTTrainer(
        cfg_for(tiny_qwen25_dir, train_file, tmp_path, gradient_checkpointing=True)
    )
    try:
        batch = collate([trainer.train_ds[0]], trainer.pad_id)
        visual = trainer.model.model.visual
        out = visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
        hidden = out.pooler_output if hasattr(out, "pooler_output") else out
        hidden = hidden[0] if isinstance(hidden, (tuple, list)) else hidden
        assert isinstance(hidden, torch.Tensor) and not hidden.requires_grad
        loss_sum, n = compute_loss(trainer.model, batch)
        (loss_sum / n).backward()
        lm = [
            p
            for name, p in trainer.model.named_parameters()
            if "visual" not in name and p.requires_grad
        ]
        assert lm and all(p.grad is not None for p in lm[:5])
        assert all(p.grad is None for p in visual.parameters())
    finally:
        trainer.close()

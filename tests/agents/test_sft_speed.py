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


@pytest.mark.parametrize("dtype", ["bf16", "bf16_pure"])
def test_bf16_weights_step_runs_and_lowers_fixed_batch_loss(
    tiny_qwen25_dir, train_file, tmp_path, dtype
):
    tr = SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "run", weights_dtype=dtype))
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
    # the weights stay bf16, no autocast; AdamW state fp32 with masters, bf16 without
    assert {p.dtype for p in tr.model.parameters()} == {torch.bfloat16}
    st = next(iter(tr.optimizer.state.values()))
    assert st["exp_avg"].dtype == (torch.float32 if dtype == "bf16" else torch.bfloat16)
    if dtype == "bf16":  # the model holds the bf16 rounding of the fp32 masters
        trainable = [p for p in tr.model.parameters() if p.requires_grad]
        assert all(
            torch.equal(p, m.to(torch.bfloat16))
            for p, m in zip(trainable, tr.master.master, strict=True)
        )


def test_small_updates_survive_only_with_fp32_masters(tiny_qwen25_dir, train_file, tmp_path):
    """At lr 1e-6 an AdamW update (~1e-6) is far below a bf16 step of the weights (~1e-3 for the
    tiny model's ~0.3 weights): pure bf16 loses every update, the fp32 masters keep them."""
    kw = {"lr": 1e-6, "max_steps": 3}
    pure = SFTTrainer(
        cfg_for(tiny_qwen25_dir, train_file, tmp_path / "p", weights_dtype="bf16_pure", **kw)
    )
    before = [p.detach().clone() for p in pure.model.parameters() if p.requires_grad]
    for _ in range(3):
        pure.train_step()
    pure.close()
    after = [p for p in pure.model.parameters() if p.requires_grad]

    def frac_changed(xs, ys) -> float:
        n = sum(x.numel() for x in xs)
        return sum(int((x != y).sum()) for x, y in zip(xs, ys, strict=True)) / n

    pure_frac = frac_changed(before, after)  # only near-zero weights can move by ~1e-6
    mixed = SFTTrainer(
        cfg_for(tiny_qwen25_dir, train_file, tmp_path / "m", weights_dtype="bf16", **kw)
    )
    start = [m.detach().clone() for m in mixed.master.master]
    for _ in range(3):
        mixed.train_step()
    mixed.close()
    master_frac = frac_changed(start, mixed.master.master)
    assert master_frac > 0.95 and pure_frac < 0.3, (master_frac, pure_frac)


def test_bf16_master_weights_resume_exactly(tiny_qwen25_dir, train_file, tmp_path):
    from vigorl_agents.train.sft import CheckpointError, train

    kw = {"weights_dtype": "bf16", "lr": 1e-3}
    full = train(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "full", max_steps=3, **kw))
    part = cfg_for(tiny_qwen25_dir, train_file, tmp_path / "part", max_steps=2, save_every=2, **kw)
    first = train(part)
    resumed = SFTTrainer(replace(part, max_steps=3))
    masters = [m.detach().clone() for m in resumed.master.master]
    second = resumed.run()
    assert [m["loss"] for m in first["history"] + second["history"]] == [
        m["loss"] for m in full["history"]
    ]
    # the masters came back as fp32 values, not as the bf16 rounding of the saved weights
    assert any(not torch.equal(m, m.to(torch.bfloat16).float()) for m in masters)
    # a checkpoint written without masters cannot be resumed with weights_dtype="bf16"
    pure = cfg_for(tiny_qwen25_dir, train_file, tmp_path / "pure", max_steps=1)
    train(replace(pure, weights_dtype="bf16_pure"))
    with pytest.raises(CheckpointError, match="master"):
        SFTTrainer(replace(pure, weights_dtype="bf16", max_steps=2))


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

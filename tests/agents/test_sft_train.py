"""Single-process SFT trainer on the tiny Qwen2.5-VL (CPU): loss, learning, freezing, save/load, resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.train.data import IGNORE_INDEX, collate  # noqa: E402
from vigorl_agents.train.sft import (  # noqa: E402
    CheckpointError,
    SFTConfig,
    SFTTrainer,
    compute_loss,
    list_checkpoints,
    train,
)
from vigorl_env.protocol import FORCED_PREFIX, OBSERVATION_TEXT_NO_DOT, format_tool_call  # noqa: E402

SYSTEM = "You answer with grounded reasoning."


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six records: single-turn with one image, multi-turn with a crop, and a text-only one."""
    from PIL import Image

    d = tmp_path_factory.mktemp("sftdata")
    rows = []
    for k in range(6):
        w, h = [(112, 84), (84, 112), (56, 112)][k % 3]
        img = Image.new("RGB", (w, h), (30 * k, 120, 250 - 30 * k))
        img.paste((255, 255, 0), (k * 5, k * 3, k * 5 + 20, k * 3 + 20))
        p = d / f"f{k}.png"
        img.save(p)
        x, y = 10 + k * 5, 13 + k * 3
        if k % 3 == 1:
            crop = d / f"c{k}.png"
            Image.new("RGB", (56, 56), (255, 255, 0)).save(crop)
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"<image>What color is object {k}?"},
                {
                    "role": "assistant",
                    "content": f"<think> It is near ({x}, {y}). </think>\n"
                    + format_tool_call(x, y),
                },
                {"role": "user", "content": OBSERVATION_TEXT_NO_DOT},
                {"role": "assistant", "content": FORCED_PREFIX + " yellow </answer>"},
            ]
            images = [str(p), str(crop)]
        else:
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"<image>Where is the square {k}?"},
                {
                    "role": "assistant",
                    "content": f"<think>\nThe target is at ({x}, {y}).\n</think>\n<answer> ({x}, {y}) </answer>",
                },
            ]
            images = [str(p)]
        rows.append({"id": f"ex{k}", "kind": "direct", "messages": messages, "images": images})
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
        epochs=2,
        lr=2e-3,
        warmup_ratio=0.0,
        per_device_batch=2,
        grad_accum=2,
        device="cpu",
        save_every=1000,
        eval_every=1000,
    )
    return replace(base, **kw)


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen2_vl"])
def test_loss_matches_hand_computed_cross_entropy(request, arch, train_file, tmp_path):
    import torch.nn.functional as F

    tiny = request.getfixturevalue("tiny_qwen25_dir" if arch == "qwen2_5_vl" else "tiny_qwen2_dir")
    tr = SFTTrainer(cfg_for(tiny, train_file, tmp_path / "run"))
    batch = collate([tr.train_ds[i] for i in range(3)], tr.pad_id)
    model = tr.model.eval()
    with torch.no_grad():
        loss_sum, n = compute_loss(model, batch)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
    # next-token CE over positions whose *next* label is supervised
    lp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    tgt = batch["labels"][:, 1:]
    mask = tgt != IGNORE_INDEX
    hand = -lp[mask].gather(-1, tgt[mask][:, None]).sum()
    assert n == int(mask.sum()) == sum(tr.train_ds[i].num_supervised for i in range(3))
    assert float(loss_sum) == pytest.approx(float(hand), rel=1e-5)
    ce = F.cross_entropy(logits[:, :-1][mask], tgt[mask], reduction="mean")
    assert float(loss_sum) / n == pytest.approx(float(ce), rel=1e-5)
    # mRoPE positions come from mm_token_type_ids: dropping them changes the logits
    # (Qwen2-VL refuses to run without them; Qwen2.5-VL silently falls back to 1-D positions)
    no_mm = {k: v for k, v in inputs.items() if k != "mm_token_type_ids"}
    with torch.no_grad():
        if arch == "qwen2_vl":
            with pytest.raises(ValueError, match="mm_token_type_ids"):
                model(**no_mm)
        else:
            assert not torch.allclose(model(**no_mm).logits, logits)
    # the mask matters: the mean over every real position differs
    allpos = batch["attention_mask"][:, 1:].bool()
    ce_all = F.cross_entropy(logits[:, :-1][allpos], batch["input_ids"][:, 1:][allpos])
    assert abs(float(ce_all) - float(ce)) > 1e-3


def test_training_learns_freezes_vision_and_saves_hf_folder(tiny_qwen25_dir, train_file, tmp_path):
    from transformers import AutoModelForImageTextToText

    cfg = cfg_for(tiny_qwen25_dir, train_file, tmp_path / "run", epochs=3)
    tr = SFTTrainer(cfg)
    fixed = collate([tr.train_ds[i] for i in range(len(tr.train_ds))], tr.pad_id)

    def fixed_loss() -> float:
        with torch.no_grad():
            s, n = compute_loss(tr.model.eval(), fixed)
        return float(s) / n

    before_loss = fixed_loss()
    before = {k: v.detach().clone() for k, v in tr.model.state_dict().items()}
    out = tr.run()
    assert out["step"] == tr.total_steps == 3 * 2  # 7 examples → 4 micro-batches → 2 steps/epoch
    after_loss = fixed_loss()
    assert after_loss < 0.8 * before_loss, (before_loss, after_loss)
    state = tr.model.state_dict()
    vis = [k for k in state if ".visual." in f".{k}"]
    lm = [k for k in state if "language_model" in k]
    assert any("merger" in k for k in vis) and vis and lm
    assert all(torch.equal(state[k], before[k]) for k in vis)
    assert sum(not torch.equal(state[k], before[k]) for k in lm) > len(lm) // 2
    # metrics.jsonl has every step with loss, lr, grad norm and throughput
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(1, 7))
    assert all(m["tokens_per_s"] > 0 and m["grad_norm"] > 0 for m in lines)
    assert lines[0]["lr"] == pytest.approx(2e-3) and lines[-1]["lr"] < 2e-3
    # the checkpoint is a plain HF folder: from_pretrained → identical logits
    ckpt = Path(out["checkpoint"])
    assert ckpt.name == "checkpoint-6" and (ckpt / "trainer_state.json").is_file()
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["version"] == 2
    # every other file of the folder is recorded with its sha256
    files = sorted(
        str(q.relative_to(ckpt))
        for q in ckpt.rglob("*")
        if q.is_file() and q.name != "trainer_state.json"
    )
    assert (
        sorted(state["files"]) == files and "optimizer.pt" in files and "model.safetensors" in files
    )
    assert (
        state["files"]["model.safetensors"]
        == hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    )
    loaded = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    inputs = {k: v for k, v in fixed.items() if k != "labels"}
    with torch.no_grad():
        a = tr.model.eval()(**inputs).logits
        b = loaded(**inputs).logits
    assert torch.equal(a, b)


def test_resume_gives_identical_next_steps(tiny_qwen25_dir, train_file, tmp_path):
    full = train(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "full", max_steps=3))
    part = cfg_for(tiny_qwen25_dir, train_file, tmp_path / "part", max_steps=2, save_every=2)
    first = train(part)
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [2]
    resumed = SFTTrainer(replace(part, max_steps=3))
    assert resumed.step == 2 and resumed.resume_from.name == "checkpoint-2"
    second = resumed.run()
    losses_full = [m["loss"] for m in full["history"]]
    losses_split = [m["loss"] for m in first["history"] + second["history"]]
    assert losses_split[:2] == losses_full[:2]
    assert losses_split[2] == pytest.approx(losses_full[2], rel=1e-6, abs=1e-7)
    assert second["history"][0]["lr"] == full["history"][2]["lr"]  # scheduler restored (epoch 2)
    assert second["history"][0]["epoch"] == 1


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_corrupt_checkpoint_is_an_error_and_untouched(tiny_qwen25_dir, train_file, tmp_path):
    src = tmp_path / "src"
    train(cfg_for(tiny_qwen25_dir, train_file, src, max_steps=1))
    good = src / "checkpoint-1"
    for damage in ("truncate_weights", "drop_state", "garble_state"):
        out = tmp_path / damage
        shutil.copytree(good, out / "checkpoint-1")
        ck = out / "checkpoint-1"
        if damage == "truncate_weights":
            w = ck / "model.safetensors"
            w.write_bytes(w.read_bytes()[:1000])
        elif damage == "drop_state":
            (ck / "trainer_state.json").unlink()
        else:
            (ck / "trainer_state.json").write_bytes(b"not a JSON file")
        digest = _tree_digest(out)
        with pytest.raises(CheckpointError, match=f"cannot resume from {ck}"):
            SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, out, max_steps=2))
        assert _tree_digest(out) == digest  # nothing written, nothing overwritten


class _Payload:
    """Pickles to `open(marker, "w")`: unpickling it with code execution creates the marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_pickle_in_checkpoint_is_refused_and_never_run(
    tiny_qwen25_dir, train_file, tmp_path
):
    """A checkpoint someone sends must not run code on resume: the legacy pickled
    trainer_state.pt is refused unread, and a pickle payload in optimizer.pt (checksum forged to
    match) is refused by the restricted unpickler before it creates anything."""
    src = tmp_path / "src"
    train(cfg_for(tiny_qwen25_dir, train_file, src, max_steps=1))
    good = src / "checkpoint-1"

    # 1. an old-style checkpoint: trainer_state.pt is a pickle with a payload
    marker = tmp_path / "pwned_legacy"
    legacy = tmp_path / "legacy" / "checkpoint-1"
    shutil.copytree(good, legacy)
    (legacy / "trainer_state.json").unlink()
    torch.save({"step": 1, "payload": _Payload(marker)}, legacy / "trainer_state.pt")
    with pytest.raises(CheckpointError, match=r"trainer_state\.pt, a pickle .* not loaded"):
        SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, legacy.parent, max_steps=2))
    assert not marker.exists()

    # 2. the current layout with a payload in optimizer.pt and its sha256 updated to match
    marker = tmp_path / "pwned_optimizer"
    ck = tmp_path / "forged" / "checkpoint-1"
    shutil.copytree(good, ck)
    torch.save({"optimizer": _Payload(marker), "scheduler": {}}, ck / "optimizer.pt")
    state = json.loads((ck / "trainer_state.json").read_text())
    state["files"]["optimizer.pt"] = hashlib.sha256((ck / "optimizer.pt").read_bytes()).hexdigest()
    (ck / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match=r"refusing to load .*optimizer\.pt"):
        SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, ck.parent, max_steps=2))
    assert not marker.exists()


def test_zeroed_weights_are_caught_by_the_checksum(tiny_qwen25_dir, train_file, tmp_path):
    """Zeroed bytes inside model.safetensors keep a loadable file (only tensor data changes), so
    only the recorded sha256 can tell: resume names the damaged file and writes nothing."""
    out = tmp_path / "run"
    train(cfg_for(tiny_qwen25_dir, train_file, out, max_steps=1))
    w = out / "checkpoint-1" / "model.safetensors"
    data = bytearray(w.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = bytes(4096)
    w.write_bytes(bytes(data))
    digest = _tree_digest(out)
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors does not match its recorded sha256"
    ):
        SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, out, max_steps=2))
    assert _tree_digest(out) == digest


def test_resume_cuts_rerun_steps_from_metrics(tiny_qwen25_dir, train_file, tmp_path):
    """A run killed after logging step 3 but before saving it resumes from checkpoint-2: step 3
    is re-run, and metrics.jsonl holds each step once (the re-run's values), torn tail cut."""
    out = tmp_path / "run"
    cfg = cfg_for(tiny_qwen25_dir, train_file, out, max_steps=3, save_every=2, save_final=False)
    first = train(cfg)
    assert [s for s, _ in list_checkpoints(out)] == [2]
    metrics = out / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"step": 4, "loss": 1.')  # torn write of the killed process
    second = train(replace(cfg, max_steps=4))
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["loss"] == second["history"][0]["loss"]
    assert rows[2]["loss"] == pytest.approx(first["history"][2]["loss"], rel=1e-6, abs=1e-7)


def test_token_mean_aggregation_option(tiny_qwen25_dir, train_file, tmp_path):
    """microbatch_mean (docs/sft.md#training-loop) = mean of per-micro-batch token means; token_mean = one mean."""
    cfg = cfg_for(tiny_qwen25_dir, train_file, tmp_path / "a", max_steps=1)
    tr = SFTTrainer(cfg)
    window = tr.window(0)
    batches = [collate([tr.train_ds[i] for i in ix], tr.pad_id) for ix in window]
    with torch.no_grad():
        parts = [compute_loss(tr.model, b) for b in batches]
    micro = sum(float(s) / n for s, n in parts) / len(parts)
    token = sum(float(s) for s, _ in parts) / sum(n for _, n in parts)
    assert abs(micro - token) > 1e-4  # the test data makes the two differ
    assert tr.train_step()["loss"] == pytest.approx(micro, rel=1e-5)
    tr2 = SFTTrainer(replace(cfg, output_dir=str(tmp_path / "b"), loss_agg="token_mean"))
    assert tr2.train_step()["loss"] == pytest.approx(token, rel=1e-5)


def test_unsupported_options_raise(tiny_qwen25_dir, train_file, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ds\.json"):  # a DeepSpeed JSON that isn't there
        SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path, deepspeed="ds.json"))
    with pytest.raises(ValueError, match=r"LoRA with ZeRO-3"):
        SFTTrainer(cfg_for(tiny_qwen25_dir, train_file, tmp_path, lora=True, deepspeed="zero3"))


def test_lora_trains_adapters_only_and_saves_merged_hf_folder(
    tiny_qwen25_dir, train_file, tmp_path
):
    """LoRA: only lora_A/B train; the checkpoint is a plain HF folder whose weights are the
    merged model (same logits as the adapter model in memory), plus adapter/."""
    from transformers import AutoModelForImageTextToText

    cfg = cfg_for(
        tiny_qwen25_dir, train_file, tmp_path / "run", lora=True, lora_rank=4, lr=1e-2, epochs=3
    )
    tr = SFTTrainer(cfg)
    trainable = [n for n, p in tr.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert all("language_model" in n for n in trainable)
    # 2 layers × (q, k, v, o, gate, up, down) × (A, B)
    assert len(trainable) == 2 * 7 * 2
    fixed = collate([tr.train_ds[i] for i in range(len(tr.train_ds))], tr.pad_id)

    def fixed_loss() -> float:
        with torch.no_grad():
            s, n = compute_loss(tr.model.eval(), fixed)
        return float(s) / n

    base = {n: p.detach().clone() for n, p in tr.model.named_parameters() if not p.requires_grad}
    before = fixed_loss()
    out = tr.run()
    assert fixed_loss() < 0.9 * before
    assert all(torch.equal(p, base[n]) for n, p in tr.model.named_parameters() if n in base)
    ckpt = Path(out["checkpoint"])
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    loaded = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    assert not any("lora" in k for k in loaded.state_dict())
    inputs = {k: v for k, v in fixed.items() if k != "labels"}
    with torch.no_grad():
        a = tr.model.eval()(**inputs).logits
        b = loaded(**inputs).logits
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # the merged weights differ from the base weights (the adapter learned something)
    plain = AutoModelForImageTextToText.from_pretrained(tiny_qwen25_dir, dtype=torch.float32)
    with torch.no_grad():
        c = plain.eval()(**inputs).logits
    assert not torch.allclose(b, c, atol=1e-3)


@pytest.mark.parametrize("lora", [False, True])
def test_frozen_vision_tower_stays_out_of_autograd(tiny_qwen25_dir, train_file, tmp_path, lora):
    """Gradient checkpointing (and peft) hook input embeddings to require grad; with the vision
    tower frozen its output must not require grad, even after a second enable call."""
    cfg = cfg_for(
        tiny_qwen25_dir, train_file, tmp_path, gradient_checkpointing=True, lora=lora, lora_rank=4
    )
    tr = SFTTrainer(cfg)
    batch = collate([tr.train_ds[0]], tr.pad_id)
    visual = tr.model.model.visual
    tr.model.train()
    out = visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    assert not getattr(out, "pooler_output", out).requires_grad
    tr.model.enable_input_require_grads()
    tr.model.enable_input_require_grads()  # transformers keeps only the last handle
    from vigorl_agents.train.sft import drop_input_grad_hooks

    assert drop_input_grad_hooks(tr.model) >= 4
    out = visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    assert not getattr(out, "pooler_output", out).requires_grad
    loss, n = compute_loss(tr.model, batch)
    loss.backward()  # the language model still gets gradients
    assert any(p.grad is not None for p in tr.model.parameters() if p.requires_grad)


def test_lora_resume_gives_identical_next_step(tiny_qwen25_dir, train_file, tmp_path):
    kw = {"lora": True, "lora_rank": 4, "lr": 1e-2}
    full = train(cfg_for(tiny_qwen25_dir, train_file, tmp_path / "full", max_steps=3, **kw))
    part = cfg_for(tiny_qwen25_dir, train_file, tmp_path / "part", max_steps=2, save_every=2, **kw)
    first = train(part)
    resumed = SFTTrainer(replace(part, max_steps=3))
    assert resumed.step == 2
    second = resumed.run()
    losses_full = [m["loss"] for m in full["history"]]
    losses_split = [m["loss"] for m in first["history"] + second["history"]]
    assert losses_split[2] == pytest.approx(losses_full[2], rel=1e-6, abs=1e-7)
    # a checkpoint without its adapter cannot be resumed as LoRA, and is left as it is
    shutil.rmtree(tmp_path / "part" / "checkpoint-3" / "adapter")
    with pytest.raises(CheckpointError, match="adapter"):
        SFTTrainer(replace(part, max_steps=4))


def test_debug_preset_generates_data_and_trains(tmp_path, monkeypatch):
    """experiments/sft.py debug: procedural chains (single- and multi-turn) → one CPU step."""
    import sys

    monkeypatch.setenv("VIGORL_CACHE", str(tmp_path / "cache"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from experiments.sft import PRESETS, DebugData, run

    _, args = PRESETS["debug"]
    args = replace(
        args,
        out_root=tmp_path / "runs",
        debug_data=DebugData(n_grounding=3, n_search=2, val_fraction=0.25),
        sft=replace(args.sft, max_steps=1),
    )
    result = run(args)
    data = tmp_path / "runs" / "debug" / "data"
    rows = [
        json.loads(x)
        for f in ("train.jsonl", "val.jsonl")
        for x in (data / f).read_text().splitlines()
    ]
    kinds = sorted(r["kind"] for r in rows)
    assert kinds.count("direct") == 3 and kinds.count("multi_turn") == 2
    mt = next(r for r in rows if r["kind"] == "multi_turn")
    assert len(mt["images"]) == 2 and [m["role"] for m in mt["messages"]] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    st = next(r for r in rows if r["kind"] == "direct")
    assert st["messages"][2]["content"].startswith("<think>\nThe target is at (")
    # the oracle's chains are right (only solved episodes are kept, and all were)
    assert (
        st["messages"][2]["content"].endswith(" </answer>")
        and mt["gt_answer"] in (mt["messages"][-1]["content"])
    )
    # image paths relative to the data folder, which the run uses as its data root
    assert all(p.startswith("images/") and (data / p).is_file() for r in rows for p in r["images"])
    assert result["step"] == 1 and result["train_data"]["dropped"] == {}
    assert Path(result["checkpoint"]).name == "checkpoint-1"


def test_gradient_checkpointing_same_step_and_bf16_runs(tiny_qwen25_dir, train_file, tmp_path):
    base = cfg_for(tiny_qwen25_dir, train_file, tmp_path / "a", max_steps=1)
    plain = SFTTrainer(base)
    m0 = plain.train_step()
    gc = SFTTrainer(replace(base, output_dir=str(tmp_path / "b"), gradient_checkpointing=True))
    m1 = gc.train_step()
    assert m1["loss"] == pytest.approx(m0["loss"], rel=1e-6)
    assert m1["grad_norm"] == pytest.approx(m0["grad_norm"], rel=1e-4)
    bf = SFTTrainer(replace(base, output_dir=str(tmp_path / "c"), bf16=True))
    m2 = bf.train_step()
    assert m2["loss"] == pytest.approx(m0["loss"], rel=0.05) and m2["grad_norm"] > 0
    assert next(bf.model.parameters()).dtype == torch.float32  # float32 master weights

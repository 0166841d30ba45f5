"""End to end on CPU with the tiny model: experiments/eval.py's debug preset and the demo."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from experiments.eval import PRESETS, run
from vigorl_agents.demo import Args as DemoArgs
from vigorl_agents.demo import demo
from vigorl_agents.factory import PolicyConfig


def test_eval_debug_preset_writes_report_with_cis(tmp_path, tiny_qwen25_dir):
    _, args = PRESETS["debug"]
    args = replace(
        args,
        policy=replace(args.policy, model=str(tiny_qwen25_dir)),
        eval=replace(
            args.eval,
            env_ids=("ViGoRL/SynthSearch-v0", "ViGoRL/SynthGrounding-v0"),
            limit=3,
            max_tokens=16,
        ),
        out_root=tmp_path,
    )
    summary = run(args)
    assert [r["n"] for r in summary["rows"]] == [3, 3]
    out = tmp_path / "debug"
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 6
    # real generations went through the env: token ids recorded for each generated turn
    turns = [t for r in recs for t in r["trajectory"]["turns"]]
    assert turns and all(t["token_ids"] and len(t["token_ids"]) <= 16 for t in turns)
    assert all(0 <= r["score"] <= 1 for r in recs)
    assert "±" in (out / "report.md").read_text() and (out / "accuracy.png").exists()
    # the preset gives no frame kwargs: frames and crops were fitted to the tiny processor's
    # [3136, 50176] px (SynthSearch's own frames reach 2.85 MP)
    sizes = [r["frame"]["model_size"] for r in recs]
    assert all(3136 <= w * h <= 50176 for w, h in sizes)
    # resumable: a rerun does nothing new
    run(args)
    assert len((out / "samples.jsonl").read_text().splitlines()) == 6
    # an explicit frame kwarg the processor cannot take is refused before any model loads
    too_big = replace(args, eval=replace(args.eval, env_kwargs={"max_pixels": 2_850_000}))
    with pytest.raises(ValueError, match=r"--policy\.max-pixels 2850000"):
        run(too_big)


def test_demo_writes_picture(tmp_path, tiny_qwen25_dir):
    img = tmp_path / "shot.png"
    Image.new("RGB", (300, 200), (200, 220, 240)).save(img)
    args = DemoArgs(
        image=img,
        query="the Export button",
        task="web_grounding",
        mode="multi_turn",
        policy=PolicyConfig(backend="hf", model=str(tiny_qwen25_dir), device="cpu"),
        max_tokens=24,
        env_kwargs={"max_pixels": 64 * 28 * 28, "crop_size": 224},
        out=tmp_path / "demo.png",
    )
    traj, path = asyncio.run(demo(args))
    assert Path(path).exists() and Image.open(path).width >= traj.frame["model_size"][0]
    assert traj.turns and traj.frame["original_size"] == [300, 200]

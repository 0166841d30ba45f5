"""experiments/mcts.py end to end on CPU: the scripted teacher searches procedural samples, the
trees are linearized both ways and the outputs load with the SFT loaders."""

from __future__ import annotations

import json
from dataclasses import replace

from experiments.mcts import PRESETS, run
from vigorl_agents.search import MCTSConfig
from vigorl_agents.train.data import load_sft_file


def test_debug_preset_small_end_to_end(tmp_path):
    _, args = PRESETS["debug"]
    args = replace(
        args,
        run=replace(args.run, n_samples=2, mcts=MCTSConfig(n_simulations=4, rollout_max_steps=3)),
        out_root=tmp_path,
        max_chains=3,
    )
    summary = run(args)
    out = tmp_path / "debug"
    for name in ("SynthSpatial", "SynthSearch"):
        trees = [json.loads(x) for x in (out / "trees" / f"{name}.jsonl").read_text().splitlines()]
        assert len(trees) == 2 and all("tree" in t for t in trees)
        single = load_sft_file(out / "sft" / name / "single_turn.jsonl", out / "sft" / name)
        assert 0 < len(single) <= 2 * 3
        assert all(r.images for r in single)
        assert (out / "sft" / name / "sharegpt_train.json").exists() or (
            out / "sft" / name / "sharegpt_val.json"
        ).exists()
        assert any((out / "sft" / name / "multi_turn").iterdir())
    assert set(summary["trees"]) == {"ViGoRL/SynthSpatial-v0", "ViGoRL/SynthSearch-v0"}
    assert json.loads((out / "summary.json").read_text())["trees"] == summary["trees"]
    # a rerun resumes: nothing new is searched
    again = run(replace(args, linearize=False))
    assert again["trees"] == summary["trees"]

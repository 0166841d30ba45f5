"""GRPO with the in-process vLLM engine as the rollout engine (CPU build, tiny Qwen2.5-VL).

Runs in child processes (vLLM reseeds and pins the host process): the multi-turn debug
configuration with regex-constrained turns (a random model never makes a tool call on its own),
and the single-turn debug preset through the command line. Checks that the engine holds the
trainer's weights after each sync — the engine's logprobs of what it sampled equal the trainer's
recomputed ones — and that a trainer change the engine was not told about shows up as a gap.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from vllm_fixtures import run_vllm_child

TOOL = (
    r'<think> [a-z]{2,6} \([1-9][0-9], [1-9][0-9]\) </think>\n<tool_call>\n\{"name": '
    r'"search_coordinate", "arguments": \{"coordinate": \[[1-9][0-9], [1-9][0-9]\]\}\}\n</tool_call>'
)
ANSWER = r" [a-z]{2,6} </answer>"


def _even_share(traj) -> float:
    """Toy reward that varies within a group: the share of sampled even token ids."""
    ids = [t for turn in traj.turns for t in (turn.token_ids or ())]
    return sum(t % 2 == 0 for t in ids) / max(len(ids), 1)


def _child_multi(model_dir: str, out_dir: str) -> dict:
    from dataclasses import replace

    import torch

    from vigorl_agents.train.grpo import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(
        model=model_dir,
        output_dir=out_dir,
        env_id="ViGoRL/SynthSearch-v0",
        env_kwargs={
            "mode": "multi_turn",
            "max_pixels": 64 * 28 * 28,
            "crop_size": 112,
            "max_images": 3,
            "size": 4,
        },
        device="cpu",
        lr=1e-3,
        warmup_ratio=0.0,
        steps=2,
        prompts_per_step=2,
        group_size=2,
        mini_batch=4,
        micro_batch=4,
        max_prompt_tokens=1024,
        max_response_tokens=400,
        per_turn_tokens=120,
        kl_coef=0.01,
        val_split=None,
        save_final=False,
        rollout_backend="vllm-engine",
        rollout_regex=TOOL,
        rollout_forced_regex=ANSWER,
    )
    trainer = GRPOTrainer(cfg, reward_fn=_even_share)
    trainer.policy = trainer.open_policy()

    def gap() -> float:
        trajs = trainer.rollout([0, 1], split="train", n=2, temperature=1.0, seed=77)
        exs, _ = trainer.build_examples(trajs, "train", 2)
        trainer.score(trainer.model, exs, "old_logp")
        return trainer._logp_gap(exs)

    recs = [trainer.rl_step() for _ in range(2)]
    # vLLM reports the logprobs of the regex-constrained distribution: compare unconstrained
    # samples (every sampled token trained, overlong or not) for the sync checks
    trainer.cfg = replace(
        trainer.cfg, rollout_regex=None, rollout_forced_regex=None, mask_overlong=False
    )
    synced = gap()
    with torch.no_grad():  # a change the engine is not told about
        for p in trainer.model.model.language_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale = gap()
    trainer._sync_weights()
    resynced = gap()
    trainer.close()
    return {"recs": recs, "synced": synced, "stale": stale, "resynced": resynced}


@pytest.fixture(scope="module")
def multi(tiny_qwen25_dir, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("grpo_vllm")
    out = tmp / "result.json"
    run_vllm_child(
        [__file__, str(tiny_qwen25_dir), str(tmp / "run"), str(out)], cwd=tmp, timeout=900
    )
    return json.loads(out.read_text())


def test_multi_turn_rl_steps_with_the_vllm_engine(multi):
    recs = multi["recs"]
    assert [r["step"] for r in recs] == [1, 2]
    for r in recs:
        assert r["trajectories"] == 4 and r["optimizer_steps"] == 1
        assert r["turns"] > 1 and r["crops"] > 0  # real multi-turn zoom episodes
        assert r.get("prompt_mismatch", 0) == 0  # token-in: the engine saw the training stream
        assert r["sync_s"] > 0
        assert r["grad_norm"] > 0


def test_engine_logprobs_equal_the_trainers_only_after_a_sync(multi):
    assert multi["synced"] < 0.02
    assert multi["stale"] > 10 * max(multi["synced"], 1e-3)  # the control sees the change
    assert multi["resynced"] < 0.02


def test_debug_single_preset_through_the_cli_with_the_engine(tmp_path):
    run_vllm_child(
        ["-m", "experiments.grpo", "debug-single", "--grpo.rollout-backend", "vllm-engine",
         "--grpo.steps", "1", "--grpo.val-samples", "2", "--grpo.output-dir",
         str(tmp_path / "run")],
        timeout=900,
    )  # fmt: skip
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    train = [r for r in recs if r.get("split") != "val"]
    assert [r["step"] for r in train] == [1]
    assert train[0]["trajectories"] == 16
    assert (tmp_path / "run" / "checkpoint-1" / "trainer_state.json").is_file()


if __name__ == "__main__":
    model_dir, run_dir, result = sys.argv[1:4]
    Path(result).write_text(json.dumps(_child_multi(model_dir, run_dir)))

"""GRPO trainer on the tiny Qwen2.5-VL, CPU, transformers rollouts (docs/grpo.md).

The learning tests use a toy reward (`reward_fn`): 1 when the first sampled token has an even id.
A random model has no format to reward, so this is what makes the advantages non-zero; the
assertion is on the model itself: the probability mass it puts on even ids at the first response
position of a fixed prompt rises after a few RL steps, and falls when the reward's sign flips.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.train.grpo import (  # noqa: E402
    Example,
    GRPOConfig,
    GRPOTrainer,
    collate_examples,
    train_grpo,
)
from vigorl_agents.train.losses import model_inputs  # noqa: E402

TINY_PIXELS = 64 * 28 * 28


def even_share(traj) -> float:
    """Toy reward: 1 when the first sampled token has an even id."""
    ids = [t for turn in traj.turns for t in (turn.token_ids or ())]
    return float(bool(ids) and ids[0] % 2 == 0)


def _cfg(tmp_path: Path, tiny_dir: Path, **kw) -> GRPOConfig:
    base = dict(
        model=str(tiny_dir),
        output_dir=str(tmp_path / "run"),
        env_id="ViGoRL/SynthSpatial-v0",
        # one sample: every step trains on the prompt the probe measures
        env_kwargs={"max_pixels": TINY_PIXELS, "size": 1},
        device="cpu",
        lr=1e-4,
        warmup_ratio=0.0,
        steps=3,
        prompts_per_step=1,
        group_size=16,
        mini_batch=16,
        micro_batch=8,
        max_prompt_tokens=1024,
        max_response_tokens=4,
        mask_overlong=False,
        kl_coef=0.0,
        val_split=None,
        save_every=100,
        save_final=False,
        seed=0,
    )
    base.update(kw)
    return GRPOConfig(**base)


def _even_mass(trainer: GRPOTrainer, ex: Example) -> float:
    """Probability of an even token id right after the prompt of `ex`."""
    ids = ex.input_ids[: trainer._probe_len]
    probe = replace(ex, input_ids=ids, target_mask=torch.zeros(len(ids), dtype=torch.bool),
                    mm_token_type_ids=ex.mm_token_type_ids[: len(ids)])  # fmt: skip
    batch = collate_examples([probe], trainer.pad_id)
    with torch.no_grad():
        out = trainer.model.model(**model_inputs(batch, trainer.device), use_cache=False)
        p = trainer.model.lm_head(out.last_hidden_state[0, -1]).float().softmax(-1)
    return float(p[0::2].sum())


def _probe_example(trainer: GRPOTrainer) -> Example:
    trajs = trainer.rollout([0], split="train", n=1, temperature=1.0, seed=123)
    (ex,), _ = trainer.build_examples(trajs, "train", 1)
    trainer._probe_len = ex.input_ids.shape[0] - len(trajs[0].turns[0].token_ids)
    return ex


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_probability_of_rewarded_tokens_moves_with_the_advantage_sign(
    tmp_path, tiny_qwen25_dir, sign
):
    trainer = GRPOTrainer(_cfg(tmp_path, tiny_qwen25_dir), reward_fn=lambda t: sign * even_share(t))
    trainer.policy = trainer.open_policy()
    try:
        probe = _probe_example(trainer)
        before = _even_mass(trainer, probe)
        recs = [trainer.rl_step() for _ in range(3)]
        after = _even_mass(trainer, probe)
    finally:
        trainer.close()
    assert all(r["optimizer_steps"] == 1 for r in recs)
    assert all(r["trajectories"] == 16 and r["prompts"] == 1 for r in recs)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in recs)
    # the rollout engine (the trainer's own model) and the recomputed old logprobs agree
    assert all(r["rollout_vs_recomputed_logp"] < 1e-3 for r in recs)
    # measured: 0.38 -> 0.60 (+) and 0.38 -> 0.22 (-) over 4 steps; 3 steps here
    if sign > 0:
        assert after > before + 0.08, (before, after)
    else:
        assert after < before - 0.08, (before, after)


def test_resume_after_a_stop_gives_the_same_next_step(tmp_path, tiny_qwen25_dir):
    """Two steps in one go == one step, a new process-like trainer resuming, then step two."""
    full = train_grpo(
        _cfg(tmp_path / "a", tiny_qwen25_dir, steps=2, save_every=1),
        progress=False,
        reward_fn=even_share,
    )
    cfg_b = _cfg(tmp_path / "b", tiny_qwen25_dir, steps=2, save_every=1)
    first = train_grpo(replace(cfg_b, max_steps=1), progress=False, reward_fn=even_share)
    assert first["step"] == 1
    resumed = train_grpo(cfg_b, progress=False, reward_fn=even_share)
    assert resumed["step"] == 2 and len(resumed["history"]) == 1
    a, b = full["history"][1], resumed["history"][0]
    for k in ("reward", "train_reward", "loss", "pg_loss", "grad_norm", "response_tokens"):
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k
    from safetensors.torch import load_file

    wa = load_file(str(Path(full["checkpoint"]) / "model.safetensors"))
    wb = load_file(str(Path(resumed["checkpoint"]) / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # the weights did move (the resume compared something)
    first_w = load_file(str(Path(first["checkpoint"]) / "model.safetensors"))
    assert any(not torch.equal(first_w[k], wb[k]) for k in wb)
    # metrics.jsonl of the resumed run: one record per step, no duplicates
    steps = [json.loads(x)["step"] for x in (Path(cfg_b.output_dir) / "metrics.jsonl").open()]
    assert steps == [1, 2]


def test_grounding_reward_is_opt_in_and_adds_w_times_on_target(tmp_path, tiny_qwen25_dir):
    from types import SimpleNamespace

    trainer = GRPOTrainer(_cfg(tmp_path, tiny_qwen25_dir))
    traj = SimpleNamespace(reward=0.3, grounding={"on_target": 0.5, "points": 2})
    no_points = SimpleNamespace(reward=0.3, grounding={"on_target": None, "points": 0})
    assert trainer.reward_of(traj) == (0.3, 0.5)  # off by default: the env's score only
    trainer.cfg = replace(trainer.cfg, grounding_reward=0.4)
    assert trainer.reward_of(traj)[0] == pytest.approx(0.3 + 0.4 * 0.5)
    assert trainer.reward_of(no_points)[0] == pytest.approx(0.3)  # no point: nothing added
    trainer.close()

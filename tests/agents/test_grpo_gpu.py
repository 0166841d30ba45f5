"""GRPO on one GPU (skipped without CUDA): bf16 weights with fp32 masters, Liger when installed,
the toy reward of test_grpo.py. Run on the device with `python -m pytest -m gpu
tests/agents/test_grpo_gpu.py`."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rl_steps_on_cuda_move_the_rewarded_probability(tmp_path, tiny_qwen25_dir):
    from test_grpo import _cfg, _even_mass, _probe_example, even_share

    from vigorl_agents.train.grpo import GRPOTrainer

    cfg = _cfg(
        tmp_path,
        tiny_qwen25_dir,
        device="cuda",
        weights_dtype="bf16",
        liger=importlib.util.find_spec("liger_kernel") is not None,
        attn_implementation="sdpa",
        kl_coef=0.01,
        lr=1e-4,
    )
    trainer = GRPOTrainer(cfg, reward_fn=even_share)
    trainer.policy = trainer.open_policy()
    try:
        probe = _probe_example(trainer)
        before = _even_mass(trainer, probe)
        recs = [trainer.rl_step() for _ in range(3)]
        after = _even_mass(trainer, probe)
    finally:
        trainer.close()
    assert trainer.ref_model is not None
    assert all(r["optimizer_steps"] == 1 and r["grad_norm"] > 0 for r in recs)
    assert recs[-1]["kl"] > 0  # the policy left the reference
    assert after > before + 0.05, (before, after)

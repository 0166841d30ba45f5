"""GRPO's bad-input rules on the tiny Qwen2.5-VL, CPU, transformers rollouts (docs/grpo.md#bad-input).

Each test makes one thing go wrong — a config that cannot be honoured, a reward function that
raises, a training stream that breaks the preflight rules, a non-finite gradient — and checks
what the trainer does about it: refuse at start-up with the numbers, or mask exactly the
trajectories concerned, count them and go on. Faults inside a step are injected by a subclass
that corrupts what the real trainer built (the model, rollouts and update all run for real).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_grpo import _cfg as grpo_cfg  # noqa: E402

from vigorl_agents.train.data import PreflightError, vision_token_ids  # noqa: E402
from vigorl_agents.train.grpo import Example, GRPOConfig, GRPOTrainer  # noqa: E402

TINY_PIXELS = 64 * 28 * 28


def _cfg(tmp_path: Path, tiny_dir: Path, **kw) -> GRPOConfig:
    """test_grpo's configuration (one sample, tiny model, CPU), smaller: 4 samples of 6 tokens."""
    base = dict(steps=2, group_size=4, mini_batch=4, micro_batch=4, max_response_tokens=6)
    return grpo_cfg(tmp_path, tiny_dir, **{**base, **kw})


class Recording(GRPOTrainer):
    """The real trainer; keeps the examples of the last step and lets a test corrupt them."""

    corrupt = None  # (trainer, examples) -> None, applied once the real examples are built

    def build_examples(self, trajs, split, n):
        examples, counts = super().build_examples(trajs, split, n)
        if self.corrupt is not None:
            type(self).corrupt(self, examples)
        self.examples = examples
        return examples, counts


def _trainable(trainer: GRPOTrainer) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in trainer.model.named_parameters() if p.requires_grad}


def _step(trainer: GRPOTrainer, n: int = 1) -> list[dict]:
    trainer.policy = trainer.open_policy()
    try:
        return [trainer.rl_step() for _ in range(n)]
    finally:
        trainer.close()


def _by_episode(examples: list[Example]) -> dict[int, Example]:
    return {int(e.uid.rsplit("#", 1)[1]): e for e in examples}


# =========================================================================== refused at start-up


def test_mini_batch_that_does_not_divide_the_trajectories_is_refused_with_the_numbers(tmp_path):
    cfg = GRPOConfig(
        output_dir=str(tmp_path / "run"), prompts_per_step=2, group_size=3, mini_batch=4
    )
    with pytest.raises(ValueError) as e:
        GRPOTrainer(cfg)  # refused before any model is loaded (no model needed)
    msg = str(e.value)
    assert "mini_batch 4" in msg and "6 trajectories" in msg, msg
    assert "prompts_per_step 2" in msg and "group_size 3" in msg, msg
    assert not (tmp_path / "run").exists()


def test_deepspeed_is_refused_with_a_clear_message(tmp_path):
    cfg = GRPOConfig(output_dir=str(tmp_path / "run"), deepspeed="zero2", mini_batch=320)
    with pytest.raises(NotImplementedError, match="GRPO under DeepSpeed is not wired") as e:
        GRPOTrainer(cfg)
    assert "one process" in str(e.value)


_BUDGET_RE = re.compile(
    r"worst-case prompt (\d+) tokens \((\d+) image tokens at max_pixels (\d+) \+ (\d+) text "
    r"tokens\) exceeds max_prompt_tokens (\d+)"
)


def test_worst_case_prompt_above_max_prompt_tokens_is_refused_then_accepted_with_drop(
    tmp_path, tiny_qwen25_dir
):
    with pytest.raises(ValueError) as e:
        GRPOTrainer(_cfg(tmp_path / "a", tiny_qwen25_dir, max_prompt_tokens=64))
    m = _BUDGET_RE.search(str(e.value))
    assert m, str(e.value)
    worst, image, max_pixels, text, limit = map(int, m.groups())
    assert (max_pixels, image, limit) == (TINY_PIXELS, TINY_PIXELS // (28 * 28), 64)
    assert worst == image + text + 16 and text > 0
    assert "drop_overlong_prompts" in str(e.value)

    trainer = GRPOTrainer(
        _cfg(tmp_path / "b", tiny_qwen25_dir, max_prompt_tokens=64, drop_overlong_prompts=True)
    )
    assert trainer.worst_prompt_tokens == worst
    # the bound is a bound: the prompt the backend really fed is no longer than the worst case,
    # and longer than the limit (the refusal was right)
    trainer.policy = trainer.open_policy()
    try:
        (traj,) = trainer.rollout([0], split="train", n=1, temperature=1.0, seed=1)
    finally:
        trainer.close()
    n_prompt = len(traj.turns[0].prompt_token_ids)
    assert 64 < n_prompt <= worst, (n_prompt, worst)


def test_dropped_overlong_prompts_are_masked_and_counted_and_the_step_goes_on(
    tmp_path, tiny_qwen25_dir
):
    trainer = Recording(
        _cfg(tmp_path, tiny_qwen25_dir, max_prompt_tokens=64, drop_overlong_prompts=True)
    )
    before = {k: v.clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
    (rec,) = _step(trainer)
    assert rec["dropped_overlong_prompts"] == 4
    assert all(e.n_target == 0 and e.masked for e in trainer.examples)
    # the mini-batch's (empty) optimizer step is taken, so the schedule advances; nothing moves
    assert rec["optimizer_steps"] == 1
    assert trainer.eng.scheduler.last_epoch == 1
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_kl_coef_zero_keeps_no_reference_model(tmp_path, tiny_qwen25_dir):
    trainer = GRPOTrainer(_cfg(tmp_path / "a", tiny_qwen25_dir, kl_coef=0.0))
    assert trainer.ref_model is None
    with_kl = GRPOTrainer(_cfg(tmp_path / "b", tiny_qwen25_dir, kl_coef=0.01))
    ref = with_kl.ref_model
    assert ref is not None and ref is not with_kl.model
    assert not any(p.requires_grad for p in ref.parameters())
    # a separate copy of the initial weights, not a view of the trained ones
    (name, p), *_ = ((k, v) for k, v in with_kl.model.named_parameters() if v.requires_grad)
    assert torch.equal(dict(ref.named_parameters())[name], p)
    assert dict(ref.named_parameters())[name].data_ptr() != p.data_ptr()


# =========================================================================== inside a step


def test_reward_errors_mask_exactly_those_trajectories_and_the_step_goes_on(
    tmp_path, tiny_qwen25_dir
):
    def reward_fn(traj) -> float:
        if traj.episode == 1:
            raise RuntimeError("reward service down")
        if traj.episode == 3:
            return float("nan")  # a non-finite reward is an error too
        return float(traj.episode == 0)

    trainer = Recording(_cfg(tmp_path, tiny_qwen25_dir), reward_fn=reward_fn)
    before = _trainable(trainer)
    (rec,) = _step(trainer)
    ex = _by_episode(trainer.examples)
    assert sorted(ex) == [0, 1, 2, 3]
    assert rec["reward_errors"] == 2
    for k in (1, 3):
        assert ex[k].masked and ex[k].n_target == 0 and not bool(ex[k].target_mask.any())
    for k in (0, 2):
        assert not ex[k].masked and ex[k].n_target > 0
    assert ex[0].advantage > 0 > ex[2].advantage
    # the step went on: one optimizer step on the two good trajectories, and the weights moved
    assert rec["optimizer_steps"] == 1 and rec["skipped_steps"] == 0
    assert math.isfinite(rec["grad_norm"]) and rec["grad_norm"] > 0
    after = _trainable(trainer)
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _train_a_vision_token(trainer: GRPOTrainer, examples: list[Example]) -> None:
    """Example of episode 1: mark its first <|image_pad|> as a trained token."""
    vt = vision_token_ids(trainer.processor)
    e = _by_episode(examples)[1]
    first_pad = int((e.input_ids == vt.image_pad).nonzero()[0])
    e.target_mask[first_pad] = True
    e.n_target = int(e.target_mask.sum())


def _drop_an_image_pad(trainer: GRPOTrainer, examples: list[Example]) -> None:
    """Example of episode 2: remove one <|image_pad|> (the stream no longer fits its image)."""
    vt = vision_token_ids(trainer.processor)
    e = _by_episode(examples)[2]
    keep = torch.ones(len(e.input_ids), dtype=torch.bool)
    keep[int((e.input_ids == vt.image_pad).nonzero()[0])] = False
    e.input_ids, e.target_mask = e.input_ids[keep], e.target_mask[keep]
    e.mm_token_type_ids = e.mm_token_type_ids[keep]


def _corrupting(fn):
    return type(f"Corrupting_{fn.__name__}", (Recording,), {"corrupt": fn})


@pytest.mark.parametrize(
    ("corrupt", "episode", "problem"),
    [
        (_train_a_vision_token, 1, "a vision token is trained"),
        (_drop_an_image_pad, 2, "<|image_pad|> tokens, image grids give"),
    ],
)
def test_preflight_violation_is_fatal_naming_the_trajectory(
    tmp_path, tiny_qwen25_dir, corrupt, episode, problem
):
    trainer = _corrupting(corrupt)(_cfg(tmp_path, tiny_qwen25_dir, preflight="fatal"))
    before = _trainable(trainer)
    with pytest.raises(PreflightError) as e:
        _step(trainer)
    msg = str(e.value)
    uid = _by_episode(trainer.examples)[episode].uid
    assert f"trajectory {uid!r}" in msg and problem in msg, msg
    assert uid.endswith(f"#{episode}") and "SynthSpatial" in uid
    # raised before any parameter update of the step
    after = _trainable(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trainer.step == 0


def test_preflight_drop_masks_the_bad_trajectory_and_the_step_goes_on(tmp_path, tiny_qwen25_dir):
    trainer = _corrupting(_drop_an_image_pad)(_cfg(tmp_path, tiny_qwen25_dir, preflight="drop"))
    (rec,) = _step(trainer)
    ex = _by_episode(trainer.examples)
    assert ex[2].masked and ex[2].n_target == 0 and not bool(ex[2].target_mask.any())
    assert all(not ex[k].masked and ex[k].n_target > 0 for k in (0, 1, 3))
    assert rec["preflight_dropped"] == 1  # once, though preflight ran before two passes
    assert rec["optimizer_steps"] == 1 and trainer.step == 1


def test_preflight_drop_counts_a_bad_trajectory_once(tmp_path, tiny_qwen25_dir):
    trainer = _corrupting(_drop_an_image_pad)(
        _cfg(tmp_path, tiny_qwen25_dir, preflight="drop", kl_coef=0.01)
    )
    (rec,) = _step(trainer)
    assert rec["preflight_dropped"] == 1


def test_non_finite_gradient_skips_the_step_and_stops_after_max_skipped_steps(
    tmp_path, tiny_qwen25_dir
):
    class NanAdvantage(GRPOTrainer):
        def update(self, examples):
            examples[0].advantage = float("nan")  # its loss, hence the gradient, is NaN
            return super().update(examples)

    trainer = NanAdvantage(_cfg(tmp_path, tiny_qwen25_dir, max_skipped_steps=2))
    before = _trainable(trainer)
    trainer.policy = trainer.open_policy()
    try:
        rec = trainer.rl_step()
        assert rec["skipped_steps"] == 1 and rec["skipped_total"] == 1
        assert rec["optimizer_steps"] == 1 and math.isnan(rec["grad_norm"])
        after = _trainable(trainer)
        assert all(torch.equal(before[k], after[k]) for k in before)  # no update applied
        with pytest.raises(RuntimeError, match=r"2 optimizer steps had a non-finite gradient"):
            trainer.rl_step()
    finally:
        trainer.close()

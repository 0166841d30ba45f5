"""GRPO maths against hand computation on tiny tensors (docs/grpo.md#advantages, #loss)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from vigorl_agents.train.losses import group_advantages, grpo_loss  # noqa: E402


def test_group_advantages_std_and_mean_only_by_hand():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.2])
    g = ["a", "a", "a", "a", "b", "b", "c"]
    adv = group_advantages(r, g)
    # group a: mean 0.5, unbiased std sqrt(((.5^2)*4)/3) = sqrt(1/3)
    s = math.sqrt(1 / 3)
    expect_a = [0.5 / (s + 1e-6), -0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.5 / (s + 1e-6)]
    assert adv[:4].tolist() == pytest.approx(expect_a, rel=1e-6)
    assert adv[4:6].tolist() == [0.0, 0.0]  # equal rewards: A = 0
    assert adv[6].item() == 0.0  # a group of one
    mo = group_advantages(r, g, mode="mean_only")
    assert mo.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0])
    # tensor group ids, interleaved order
    adv2 = group_advantages(torch.tensor([3.0, 1.0, 5.0, 1.0]), torch.tensor([0, 1, 0, 1]))
    assert adv2[1].item() == 0.0 and adv2[3].item() == 0.0
    assert adv2[0].item() == pytest.approx(-1 / (math.sqrt(2) + 1e-6))
    with pytest.raises(ValueError, match="rewards but"):
        group_advantages(torch.tensor([1.0, 2.0]), [0])
    with pytest.raises(ValueError, match="mode"):
        group_advantages(r, g, mode="rank")


def _hand_token_loss(lp, old, ref, a, el=0.2, eh=0.28, dual=3.0, kl=0.01):
    ratio = math.exp(lp - old)
    clipped = math.exp(min(max(lp - old, math.log(1 - el)), math.log(1 + eh)))
    L = max(-a * ratio, -a * clipped)
    if a < 0:
        L = min(L, -a * dual)
    d = ref - lp
    k3 = min(max(math.exp(d) - d - 1, -10), 10)
    return L + kl * k3, k3


def test_grpo_loss_matches_hand_computation_clip_dual_clip_and_kl():
    # row 0: A=+1 — ratio 1.5 is clipped at 1.28; ratio 0.5 unclipped for positive A
    # row 1: A=-1 — ratio 5 hits the dual clip (3.0); ratio 0.7 is clipped at 0.8
    lp = torch.tensor([[math.log(1.5), math.log(0.5), -1.0], [math.log(5.0), math.log(0.7), -2.0]])
    old = torch.zeros(2, 3)
    old[:, 2] = lp[:, 2]  # ratio 1 on the last column
    ref = torch.tensor([[-0.1, -0.9, -1.2], [0.3, -0.2, -2.5]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # last token of row 1 masked
    loss, stats = grpo_loss(lp, old, ref, adv, mask)
    parts, k3s = [], []
    for b in range(2):
        for t in range(3):
            if mask[b, t]:
                v, k = _hand_token_loss(lp[b, t].item(), old[b, t].item(), ref[b, t].item(),
                                        adv[b].item())  # fmt: skip
                parts.append(v)
                k3s.append(k)
    assert loss.item() == pytest.approx(sum(parts) / 5, rel=1e-5)
    assert stats["kl"] == pytest.approx(sum(k3s) / 5, rel=1e-5)
    # clipped active: row0 col0 (1.5 > 1.28, A>0) and row1 col1 (0.7 < 0.8, A<0) -> 2 of 5
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    assert stats["dual_clip_frac"] == pytest.approx(1 / 5)  # row1 col0
    assert stats["tokens"] == 5


def test_masked_tokens_contribute_nothing_value_or_gradient():
    torch.manual_seed(0)
    lp = torch.randn(3, 6, requires_grad=True)
    old = lp.detach() + 0.1 * torch.randn(3, 6)
    ref = lp.detach() + 0.1 * torch.randn(3, 6)
    adv = torch.tensor([0.7, -1.2, 0.3])
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, :2] = 0
    loss, _ = grpo_loss(lp, old, ref, adv, mask)
    loss.backward()
    assert torch.all(lp.grad[mask == 0] == 0)
    assert torch.all(lp.grad[mask == 1] != 0)
    # garbage in masked positions changes nothing
    lp2 = lp.detach().clone()
    lp2[mask == 0] = 1e4
    loss2, _ = grpo_loss(lp2, old, ref, adv, mask)
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-6)


def test_token_mean_is_unchanged_by_micro_batch_split():
    torch.manual_seed(1)
    B, T = 6, 9
    lp = torch.randn(B, T, requires_grad=True)
    old = lp.detach() + 0.2 * torch.randn(B, T)
    ref = lp.detach() + 0.2 * torch.randn(B, T)
    adv = torch.randn(B)
    mask = (torch.rand(B, T) > 0.3).long()
    whole, _ = grpo_loss(lp, old, ref, adv, mask)
    whole.backward()
    g_whole = lp.grad.clone()
    lp.grad = None
    denom = float(mask.sum())
    total = 0.0
    for rows in ([0, 1], [2], [3, 4, 5]):
        part, _ = grpo_loss(lp[rows], old[rows], ref[rows], adv[rows], mask[rows], denom=denom)
        part.backward()
        total += part.item()
    assert total == pytest.approx(whole.item(), rel=1e-6)
    assert torch.allclose(lp.grad, g_whole, atol=1e-7)
    # the per-micro-batch mean (what `denom=None` on each part gives) differs: the split matters
    per_mb = (
        sum(
            grpo_loss(lp[r], old[r], ref[r], adv[r], mask[r])[0].item()
            for r in ([0, 1], [2], [3, 4, 5])
        )
        / 3
    )
    assert per_mb != pytest.approx(whole.item(), rel=1e-3)


def test_kl_is_zero_when_policy_equals_reference_and_gradient_direction():
    lp = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    _, stats = grpo_loss(lp, lp.detach(), lp.detach(), torch.tensor([0.0]), torch.ones(1, 3))
    assert stats["kl"] == 0.0
    # positive advantage at ratio 1: the gradient raises logp (loss falls when logp rises)
    loss, _ = grpo_loss(lp, lp.detach(), None, torch.tensor([1.0]), torch.ones(1, 3))
    loss.backward()
    assert torch.all(lp.grad < 0)
    lp.grad = None
    loss, _ = grpo_loss(lp, lp.detach(), None, torch.tensor([-1.0]), torch.ones(1, 3))
    loss.backward()
    assert torch.all(lp.grad > 0)


def test_kl_coef_zero_ignores_reference():
    lp = torch.randn(2, 4)
    a, _ = grpo_loss(lp, lp + 0.1, lp + 5.0, torch.tensor([1.0, -1.0]), torch.ones(2, 4),
                     kl_coef=0.0)  # fmt: skip
    b, _ = grpo_loss(lp, lp + 0.1, None, torch.tensor([1.0, -1.0]), torch.ones(2, 4))
    assert a.item() == pytest.approx(b.item())

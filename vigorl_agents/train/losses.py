"""The losses of the training engine: pure torch functions that SFT, GRPO and other tools call.

* `token_logprobs(model, inputs, target_mask)`: log-probabilities of the scored tokens of a batch
  (hidden states gathered at the positions that predict them before `lm_head`, so only the logits
  that are needed exist). SFT's cross-entropy (`sft_loss_sum`) and GRPO's old / reference /
  current log-probabilities all come from it: one forward convention for every loss.
* `group_advantages(rewards, group_ids, mode)`: GRPO's group-normalized advantages
  (docs/grpo.md#advantages).
* `grpo_loss(logp, old_logp, ref_logp, advantages, mask, ...)`: the clipped objective with the
  asymmetric clip, the dual clip for negative advantages and the k3 KL term, aggregated as a token
  mean (docs/grpo.md#loss). `denom` lets a caller that splits a mini-batch into micro-batches (or
  across ranks) divide every part by the token count of the whole mini-batch, so the split never
  changes the value or the gradient.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
MODEL_INPUT_KEYS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_thw",
    "mm_token_type_ids",
    "position_ids",
)
"""What a Qwen2-VL / Qwen2.5-VL forward takes from a batch (labels and masks stay out)."""


def model_inputs(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """The model's inputs of `batch`, on `device`."""
    return {k: batch[k].to(device) for k in MODEL_INPUT_KEYS if k in batch}


def token_logprobs(
    model: Any,
    batch: dict[str, Any],
    target_mask: torch.Tensor,
    *,
    targets: torch.Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities of the scored tokens of `batch`, flat in row-major order.

    `target_mask[b, j]` (bool, [B, L]) says token j of row b is scored: it is predicted by the
    hidden state at j − 1 (so column 0 is never scored). `targets` ([B, L], default
    `batch["input_ids"]`) gives the token ids. `temperature` divides the logits (GRPO scores
    tokens under the sampling temperature, as the rollout engine produced them). Returns
    `(logp[N], entropy[N] | None)` with N = target_mask.sum(); the entropy of each predicted
    distribution is computed without gradient (it is logged, never optimized).
    """
    device = next(model.parameters()).device
    target_mask = target_mask.to(device)
    tgt = (batch["input_ids"] if targets is None else targets).to(device)
    out = model.model(**model_inputs(batch, device), use_cache=False)
    pos = target_mask[:, 1:]
    hidden = out.last_hidden_state[:, :-1][pos]
    logits = model.lm_head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = -F.cross_entropy(logits, tgt[:, 1:][pos], reduction="none")
    entropy = None
    if with_entropy:
        with torch.no_grad():
            lsm = torch.log_softmax(logits.detach(), dim=-1)
            entropy = -(lsm.exp() * lsm).sum(-1)
    return logp, entropy


def sft_loss_sum(model: Any, batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
    """(sum of next-token cross-entropies over the supervised tokens, their number).

    Token j is supervised where `labels[j] != -100` (unshifted labels, as transformers expects);
    the cross-entropy is `-token_logprobs`."""
    labels = batch["labels"]
    mask = labels != IGNORE_INDEX
    mask[:, 0] = False
    logp, _ = token_logprobs(model, batch, mask, targets=labels)
    return -logp.sum(), int(mask.sum())


def num_supervised(batch: dict[str, Any]) -> int:
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


# =========================================================================== GRPO


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor | list[Any],
    mode: Literal["std", "mean_only"] = "std",
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO advantages: per group g (the samples of one prompt), A_i = (r_i − mean_g) / (std_g + eps)
    with the unbiased std (n − 1), or A_i = r_i − mean_g for `mode="mean_only"`.

    A group of equal rewards (or of one sample) gets A = 0. `group_ids` may be any hashable labels
    (a tensor or a list); the result is float32 [N] in input order."""
    if mode not in ("std", "mean_only"):
        raise ValueError(f"mode must be 'std' or 'mean_only', not {mode!r}")
    r = torch.as_tensor(rewards, dtype=torch.float64).flatten()
    labels = group_ids.tolist() if isinstance(group_ids, torch.Tensor) else list(group_ids)
    if len(labels) != r.numel():
        raise ValueError(f"{r.numel()} rewards but {len(labels)} group ids")
    index: dict[Any, list[int]] = {}
    for i, g in enumerate(labels):
        index.setdefault(g, []).append(i)
    adv = torch.zeros_like(r)
    for members in index.values():
        idx = torch.tensor(members)
        rg = r[idx]
        centered = rg - rg.mean()
        if mode == "mean_only":
            adv[idx] = centered
        elif len(members) > 1:
            adv[idx] = centered / (rg.std(unbiased=True) + eps)
        # one sample: A = 0 (no baseline to compare with)
    return adv.float()


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    dual_clip: float | None = 3.0,
    kl_coef: float = 0.01,
    denom: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective on [B, T] tensors of per-token log-probabilities (docs/grpo.md#loss).

    Per token: ρ = exp(logp − old); ρ̄ = exp(clamp(logp − old, ln(1 − eps_low), ln(1 + eps_high)));
    L = max(−A·ρ, −A·ρ̄), and for A < 0 L = min(L, −A·dual_clip); plus `kl_coef`·k3 with
    δ = ref − logp, k3 = clamp(exp(δ) − δ − 1, −10, 10) (`ref_logp=None` or `kl_coef=0`: no KL).
    `advantages` is [B] (broadcast over tokens) or [B, T]. The loss is the sum over mask-1 tokens
    divided by `denom` (default: their count), so a caller that splits a mini-batch passes the
    whole mini-batch's count and the parts add up to the whole.

    Stats (detached floats over the mask-1 tokens given): `pg_loss`, `kl` (mean k3), `clip_frac`
    (tokens where the clipped ratio is the active term), `dual_clip_frac`, `ratio_mean`,
    `tokens` (count), and the sums `*_sum` a caller adds up across micro-batches.
    """
    m = mask.to(logp.dtype)
    n_tokens = float(m.sum())
    if denom is None:
        denom = max(n_tokens, 1.0)
    adv = advantages.to(logp.dtype)
    if adv.dim() == 1:
        adv = adv[:, None]
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    clipped = torch.exp(log_ratio.clamp(math.log(1.0 - eps_low), math.log(1.0 + eps_high)))
    loss_unclipped = -adv * ratio
    loss_clipped = -adv * clipped
    per_token = torch.maximum(loss_unclipped, loss_clipped)
    dual_active = torch.zeros_like(per_token, dtype=torch.bool)
    if dual_clip is not None:
        cap = -adv * dual_clip
        dual_active = (adv < 0) & (cap < per_token)
        per_token = torch.where(adv < 0, torch.minimum(per_token, cap), per_token)
    pg = per_token
    kl = torch.zeros_like(per_token)
    if ref_logp is not None and kl_coef != 0.0:
        delta = ref_logp - logp
        kl = (torch.exp(delta) - delta - 1.0).clamp(-10.0, 10.0)
        per_token = per_token + kl_coef * kl
    loss = (per_token * m).sum() / denom
    with torch.no_grad():
        clip_active = (loss_clipped > loss_unclipped) & ~dual_active
        sums = {
            "pg_loss_sum": float((pg * m).sum()),
            "kl_sum": float((kl * m).sum()),
            "clip_sum": float((clip_active.to(m.dtype) * m).sum()),
            "dual_clip_sum": float((dual_active.to(m.dtype) * m).sum()),
            "ratio_sum": float((ratio * m).sum()),
        }
    d = max(n_tokens, 1.0)
    stats = {
        "pg_loss": sums["pg_loss_sum"] / d,
        "kl": sums["kl_sum"] / d,
        "clip_frac": sums["clip_sum"] / d,
        "dual_clip_frac": sums["dual_clip_sum"] / d,
        "ratio_mean": sums["ratio_sum"] / d,
        "tokens": n_tokens,
        **sums,
    }
    return loss, stats


def scatter_tokens(flat: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Put the flat per-token values of `token_logprobs` back at their [B, L] positions."""
    out = torch.full(mask.shape, fill, dtype=flat.dtype, device=flat.device)
    out[mask.to(flat.device)] = flat
    return out

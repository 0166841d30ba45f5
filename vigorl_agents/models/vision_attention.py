"""Batched block-diagonal attention for the Qwen2-VL / Qwen2.5-VL vision towers.

Why: without flash-attention (no wheel on the registry, never required), transformers runs the
vision tower's attention as one SDPA call **per segment** of `cu_seqlens`: per window in
Qwen2.5-VL's windowed layers (81 windows of 64 patches for a 1008² image, 28 of 32 layers) and per
image in the full-attention layers. Four 1008² images cost ~9,100 tiny kernel launches per vision
forward, ~60 µs of host time each against ~7 µs of GPU work: on an H100 the frozen vision forward
took 0.41 s of a 0.89 s SFT step, almost all of it launch overhead (benchmarks/results/train.md).

Segments of equal length are independent attention problems of the same shape, so they stack
into one batch: this module groups the segments of `cu_seqlens` by length and runs **one SDPA call
per distinct length** (one for a batch of 1008² images; a handful when image sizes differ or edge
windows are short). The math is the same attention over the same segments (no mask, no padding,
no extra FLOPs); only the launch pattern changes. The grouping plan depends only on `cu_seqlens`,
which the vision tower builds once per forward and passes to every layer, so it is computed once
per forward and cached on that tensor.

`use_grouped_vision_attention(model)` swaps the `forward` of every vision attention module of a
loaded model (instance-level, nothing global is patched); models configured for flash-attention
keep transformers' varlen path, which already does this in one kernel.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import types
from typing import Any

_PLAN_ATTR = "_vigorl_segment_plan"
VISION_ATTENTION_MODES = ("grouped", "transformers")
_ATTENTION_CLASSES = ("Qwen2_5_VLVisionAttention", "VisionAttention", "Qwen2VLVisionAttention")


class _Plan:
    """How to turn a packed (…, S, …) sequence into per-length batches and back.

    `groups`: (length, count) in the order the segments appear after `perm`; `perm`/`inv`: the
    gather indices (None when the segments are already grouped, e.g. all of one length)."""

    __slots__ = ("groups", "inv", "perm")

    def __init__(self, groups: list[tuple[int, int]], perm: Any, inv: Any):
        self.groups = groups
        self.perm = perm
        self.inv = inv


def segment_plan(cu_seqlens: Any) -> _Plan:
    """Group the segments of `cu_seqlens` (1-D, cumulative, starting at 0) by length."""
    import torch

    cached = getattr(cu_seqlens, _PLAN_ATTR, None)
    if cached is not None:
        return cached
    bounds = cu_seqlens.tolist()  # one host sync per forward (transformers' loop does it per layer)
    segs = [(b, e - b) for b, e in itertools.pairwise(bounds) if e > b]
    by_len: dict[int, list[int]] = {}
    for start, length in segs:
        by_len.setdefault(length, []).append(start)
    # Consecutive runs of equal length need no reordering when there is a single group.
    if len(by_len) == 1:
        ((length, starts),) = by_len.items()
        plan = _Plan([(length, len(starts))], None, None)
    else:
        order = sorted(by_len.items(), key=lambda kv: -kv[0])
        device = cu_seqlens.device
        perm = torch.cat(
            [torch.arange(s, s + length, device=device) for length, starts in order for s in starts]
        )
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=device)
        plan = _Plan([(length, len(starts)) for length, starts in order], perm, inv)
    with contextlib.suppress(AttributeError, RuntimeError):  # tensors refusing attributes
        setattr(cu_seqlens, _PLAN_ATTR, plan)
    return plan


def grouped_attention(q: Any, k: Any, v: Any, cu_seqlens: Any, scale: float) -> Any:
    """Block-diagonal attention. q, k, v: (S, heads, head_dim) packed segments; returns
    (S, heads, head_dim). Equal-length segments run as one batched SDPA call."""
    import torch
    import torch.nn.functional as F

    plan = segment_plan(cu_seqlens)
    if plan.perm is not None:
        q, k, v = (t.index_select(0, plan.perm) for t in (q, k, v))
    outs, at = [], 0
    for length, count in plan.groups:
        n = length * count
        qg, kg, vg = (
            t[at : at + n].view(count, length, t.shape[1], t.shape[2]).transpose(1, 2)
            for t in (q, k, v)
        )
        o = F.scaled_dot_product_attention(qg, kg, vg, scale=scale)  # (count, H, L, D)
        outs.append(o.transpose(1, 2).reshape(n, q.shape[1], q.shape[2]))
        at += n
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)
    if plan.inv is not None:
        out = out.index_select(0, plan.inv)
    return out


def _grouped_forward(
    self: Any,
    hidden_states: Any,
    cu_seqlens: Any,
    position_embeddings: Any = None,
    **kwargs: Any,
) -> Any:
    """Drop-in `forward` of transformers' vision attention (same projections and rotary)."""
    seq_length = hidden_states.shape[0]
    q, k, v = (
        self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3)
    ).unbind(0)
    if position_embeddings is None:
        raise ValueError("grouped vision attention needs position_embeddings (cos, sin)")
    cos, sin = position_embeddings
    # a fused kernel with the same fp32 math may be set per module (SFTConfig.liger)
    rotary = (
        getattr(self, "_vigorl_rotary", None)
        or sys.modules[type(self).__module__].apply_rotary_pos_emb_vision
    )
    q, k = rotary(q, k, cos, sin)
    out = grouped_attention(q, k, v, cu_seqlens, self.scaling)
    return self.proj(out.reshape(seq_length, -1))


def _wants_flash(module: Any) -> bool:
    impl = getattr(getattr(module, "config", None), "_attn_implementation", None) or ""
    return "flash" in impl


def use_grouped_vision_attention(model: Any) -> int:
    """Route every vision attention module of `model` through `grouped_attention`.

    Returns how many modules were switched (0 for models without a Qwen-VL vision tower, or when
    the vision config asks for flash-attention, whose varlen kernel already batches segments)."""
    n = 0
    for module in model.modules():
        if type(module).__name__ not in _ATTENTION_CLASSES or not hasattr(module, "qkv"):
            continue
        if _wants_flash(module):
            continue
        module.forward = types.MethodType(_grouped_forward, module)
        n += 1
    return n


def check_vision_attention(mode: str) -> str:
    if mode not in VISION_ATTENTION_MODES:
        raise ValueError(f"vision_attention must be one of {VISION_ATTENTION_MODES}, not {mode!r}")
    return mode


def set_vision_attention(model: Any, mode: str) -> int:
    """Apply a `vision_attention` mode: "grouped" (`use_grouped_vision_attention`; returns the
    modules switched) or "transformers" (the model as it is; 0)."""
    if check_vision_attention(mode) == "grouped":
        return use_grouped_vision_attention(model)
    return 0


def uses_grouped_attention(module: Any) -> bool:
    """True for a vision attention module switched by `use_grouped_vision_attention`."""
    fwd = vars(module).get("forward")
    return getattr(fwd, "__func__", None) is _grouped_forward

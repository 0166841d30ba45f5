"""Grouped vision attention (vigorl_agents.models.vision_attention) against transformers' own
per-segment loop, on the tiny Qwen2-VL / Qwen2.5-VL vision towers with mixed image sizes."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.models.vision_attention import (  # noqa: E402
    grouped_attention,
    segment_plan,
    use_grouped_vision_attention,
)


def _loop_attention(q, k, v, cu, scale):
    """Reference: one SDPA call per segment (what transformers does without flash-attention)."""
    import torch.nn.functional as F

    outs = []
    b = cu.tolist()
    for s, e in itertools.pairwise(b):
        qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, scale=scale).transpose(0, 1))
    return torch.cat(outs, 0)


@pytest.mark.parametrize(
    "lengths",
    [
        [16, 16, 16, 16],  # one group: no gather
        [16, 12, 16, 4, 9, 16, 12],  # mixed lengths, interleaved
        [5, 0, 7],  # empty segment (transformers' window seqlens can repeat a boundary)
    ],
)
def test_grouped_matches_per_segment_loop(lengths):
    g = torch.Generator().manual_seed(0)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    s = int(cu[-1])
    q, k, v = (torch.randn(s, 3, 8, generator=g) for _ in range(3))
    out = grouped_attention(q, k, v, cu, scale=8**-0.5)
    ref = _loop_attention(q, k, v, cu, scale=8**-0.5)
    assert out.shape == (s, 3, 8)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # a wrong grouping (e.g. treating everything as one segment) differs from the reference
    whole = _loop_attention(q, k, v, torch.tensor([0, s]), scale=8**-0.5)
    assert not torch.allclose(whole, ref, atol=1e-3)


def test_plan_groups_by_length_and_is_cached():
    cu = torch.tensor([0, 4, 8, 10, 14, 16])
    plan = segment_plan(cu)
    assert plan.groups == [(4, 3), (2, 2)]
    assert plan.perm.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 8, 9, 14, 15]
    assert plan.inv[plan.perm].tolist() == list(range(16))
    assert segment_plan(cu) is plan
    uniform = segment_plan(torch.tensor([0, 3, 6, 9]))
    assert uniform.groups == [(3, 3)] and uniform.perm is None


@pytest.mark.parametrize("name", ["tiny-qwen2.5-vl", "tiny-qwen2-vl"])
def test_vision_tower_output_unchanged(name):
    """Whole vision tower (windowed + full layers) on three images whose grids leave partial
    windows: the patched tower gives transformers' output."""
    from transformers import AutoModelForImageTextToText

    from vigorl_agents.models.load import tiny_model_dir

    model = AutoModelForImageTextToText.from_pretrained(
        tiny_model_dir(name), dtype=torch.float32, attn_implementation="sdpa"
    ).eval()
    visual = model.model.visual
    grids = torch.tensor([[1, 10, 14], [1, 8, 8], [1, 6, 22]])  # patches (t, h, w)
    n = int(grids.prod(-1).sum())
    cfg = visual.config
    dim = 3 * cfg.temporal_patch_size * cfg.patch_size**2
    pixels = torch.randn(n, dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = visual(pixels, grid_thw=grids)
        ref = getattr(ref, "pooler_output", ref)
        switched = use_grouped_vision_attention(model)
        out = visual(pixels, grid_thw=grids)
        out = getattr(out, "pooler_output", out)
    assert switched == cfg.depth
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_flash_configured_models_are_left_alone():
    from transformers import AutoModelForImageTextToText

    from vigorl_agents.models.load import tiny_model_dir

    model = AutoModelForImageTextToText.from_pretrained(
        tiny_model_dir("tiny-qwen2.5-vl"), dtype=torch.float32, attn_implementation="sdpa"
    )
    model.model.visual.config._attn_implementation = "flash_attention_2"
    assert use_grouped_vision_attention(model) == 0


def test_modes_are_checked_and_switched_modules_are_known():
    from transformers import AutoModelForImageTextToText

    from vigorl_agents.models.load import tiny_model_dir
    from vigorl_agents.models.vision_attention import set_vision_attention, uses_grouped_attention

    model = AutoModelForImageTextToText.from_pretrained(
        tiny_model_dir("tiny-qwen2.5-vl"), dtype=torch.float32, attn_implementation="sdpa"
    )
    attn = model.model.visual.blocks[0].attn
    with pytest.raises(ValueError, match="vision_attention"):
        set_vision_attention(model, "flash")
    assert set_vision_attention(model, "transformers") == 0 and not uses_grouped_attention(attn)
    assert set_vision_attention(model, "grouped") == 2 and uses_grouped_attention(attn)

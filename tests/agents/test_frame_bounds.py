"""The frame-bounds rule: env kwargs that keep every model frame and crop inside a processor's bounds."""

from __future__ import annotations

import logging

import pytest

from vigorl_agents.frame_bounds import fit_env_kwargs, policy_pixel_bounds
from vigorl_env.config import build_config
from vigorl_env.geometry import crop_zoom, effective_crop_size, smart_resize

TINY = (3136, 64 * 28 * 28)  # the tiny model's processor: [3136, 50176]
QWEN = (3136, 12_845_056)  # Qwen2.5-VL's released preprocessor config


def _frames_and_crops_fit(env_id: str, kwargs: dict, bounds: tuple[int, int]) -> None:
    """Real sizes through the env's own geometry: photos, a tall phone shot, a tiny icon."""
    import gymnasium as gym

    lo, hi = bounds
    cfg = build_config(gym.spec(env_id).kwargs["benchmark"], **kwargs)
    for w0, h0 in [(2044, 1372), (1080, 2400), (3840, 2160), (50, 40), (640, 480)]:
        w, h = smart_resize(
            w0, h0, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, max_side=cfg.max_side
        )
        assert lo <= w * h <= hi, (w0, h0, w, h)
        if cfg.mode == "multi_turn":
            from PIL import Image

            crop, _ = crop_zoom(
                Image.new("RGB", (w, h)),
                (w // 3, h // 3),
                offset=cfg.offset,
                crop_size=cfg.crop_size,
                draw_dot=cfg.draw_dot,
            )
            assert lo <= crop.width * crop.height <= hi


def test_tiny_processor_caps_frames_and_crops_of_visual_search(caplog):
    with caplog.at_level(logging.WARNING, logger="vigorl_agents.frame_bounds"):
        out = fit_env_kwargs("ViGoRL/SynthSearch-v0", TINY, {"split": "test"})
    # 2,850,000 px frames → 50,176; 672² crops → 224² = 50,176; min 3136 already fits
    assert out == {"split": "test", "max_pixels": 50176, "crop_size": 224}
    assert "pass --policy.max-pixels 2850000\n" in caplog.text + "\n"  # the larger of frame/crop
    _frames_and_crops_fit("ViGoRL/SynthSearch-v0", out, TINY)


def test_the_demo_photo_fits_after_fitting():
    # the crash this fixes: a 2044x1372 photo was a 2044x1372 frame (> 50,176 px)
    out = fit_env_kwargs("ViGoRL/SynthSearch-v0", TINY)
    w, h = smart_resize(2044, 1372, min_pixels=3136, max_pixels=out["max_pixels"])
    assert (w, h) == (252, 168) and w * h <= TINY[1]


def test_wide_processor_changes_nothing():
    kw = {"split": "test", "mode": "multi_turn"}
    assert fit_env_kwargs("ViGoRL/SynthSearch-v0", QWEN, kw) == kw


def test_real_benchmark_default_above_the_released_processor_is_capped(caplog):
    # V*: max_pixels 12,960,000 > 12,845,056; needs no data (only the config is resolved)
    with caplog.at_level(logging.WARNING, logger="vigorl_agents.frame_bounds"):
        out = fit_env_kwargs("ViGoRL/VStar-v0", QWEN)
    assert out == {"max_pixels": 12_845_056}
    assert "--policy.max-pixels 12960000" in caplog.text  # how to keep the benchmark's frames


def test_single_turn_never_crops_so_crop_size_stays():
    out = fit_env_kwargs("ViGoRL/SynthGrounding-v0", TINY)
    assert out == {"max_pixels": 50176}
    assert "crop_size" not in out


def test_min_pixels_and_crop_raised_to_a_large_minimum():
    bounds = (500_000, 12_845_056)
    out = fit_env_kwargs("ViGoRL/SynthSearch-v0", bounds)
    # crop 672² = 451,584 < 500,000 → smallest multiple of 28 whose square is ≥ 500,000: 728
    assert out == {"min_pixels": 500_000, "crop_size": 728}
    assert effective_crop_size(728) ** 2 == 529_984
    _frames_and_crops_fit("ViGoRL/SynthSearch-v0", out, bounds)


def test_explicit_env_max_pixels_is_kept_or_refused_with_the_flag():
    with pytest.raises(ValueError, match=r"--policy\.max-pixels 2850000"):
        fit_env_kwargs("ViGoRL/SynthSearch-v0", TINY, {"max_pixels": 2_850_000})
    # an explicit value that fits is left alone
    out = fit_env_kwargs("ViGoRL/SynthSearch-v0", TINY, {"max_pixels": 40_000, "crop_size": 196})
    assert out == {"max_pixels": 40_000, "crop_size": 196}


def test_explicit_crop_too_large_names_the_flag():
    with pytest.raises(ValueError, match=r"--policy\.max-pixels 451584"):
        fit_env_kwargs("ViGoRL/SynthSearch-v0", TINY, {"crop_size": 672})
    with pytest.raises(ValueError, match=r"--policy\.max-pixels 254016"):  # wide preset: 504²
        fit_env_kwargs("ViGoRL/SynthSearch-v0", TINY, {"crop_preset": "wide"})


def test_explicit_min_pixels_below_processor_min_names_the_flag():
    with pytest.raises(ValueError, match=r"--policy\.min-pixels 1000"):
        fit_env_kwargs("ViGoRL/SynthGrounding-v0", (3136, 4_194_304), {"min_pixels": 1000})
    with pytest.raises(ValueError, match=r"--policy\.min-pixels 3136"):  # max below processor min
        fit_env_kwargs("ViGoRL/SynthGrounding-v0", (5000, 4_194_304), {"max_pixels": 4000})


def test_flag_prefix_and_bad_bounds():
    with pytest.raises(ValueError, match=r"--eval\.policy\.max-pixels"):
        fit_env_kwargs(
            "ViGoRL/SynthSearch-v0", TINY, {"max_pixels": 2_850_000}, flag_prefix="--eval.policy."
        )
    with pytest.raises(ValueError, match="0 < min_pixels <= max_pixels"):
        fit_env_kwargs("ViGoRL/SynthSearch-v0", (50_000, 3136))


def test_non_config_kwargs_pass_through():
    out = fit_env_kwargs("ViGoRL/SynthSearch-v0", TINY, {"render_mode": "rgb_array", "size": 4})
    assert out == {"render_mode": "rgb_array", "size": 4, "max_pixels": 50176, "crop_size": 224}


def test_policy_bounds_from_config_and_from_the_model_folder(tiny_qwen25_dir):
    from vigorl_agents.factory import PolicyConfig

    assert policy_pixel_bounds(PolicyConfig(min_pixels=1, max_pixels=2)) == (1, 2)
    assert policy_pixel_bounds(PolicyConfig(model=str(tiny_qwen25_dir))) == TINY
    assert policy_pixel_bounds(PolicyConfig(model=str(tiny_qwen25_dir), max_pixels=10**6)) == (
        3136,
        10**6,
    )
    remote = PolicyConfig(backend="vllm-server", endpoints=("http://h:1/v1",))
    assert policy_pixel_bounds(remote) is None

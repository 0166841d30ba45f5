"""The demo on CPU, for real: the README's line with the tiny model on a photo-sized image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vigorl_agents.demo import Args, OneImageDataset, env_kwargs_of, make_env

TINY = (3136, 64 * 28 * 28)


def _photo(path: Path) -> Path:
    """A 2044x1372 photo-sized image: left half pure red, right half pure blue (easy to find again
    in the picture), with some texture so it is not trivially compressible."""
    rng = np.random.default_rng(0)
    a = np.zeros((1372, 2044, 3), np.uint8)
    a[:, :1022] = (230, 20, 20)
    a[:, 1022:] = (20, 20, 230)
    a[::97, :] = rng.integers(0, 255, size=(len(range(0, 1372, 97)), 2044, 3), dtype=np.uint8)
    Image.fromarray(a).save(path, quality=95)
    return path


@pytest.mark.slow
def test_readme_demo_line_runs_on_cpu(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    photo = _photo(tmp_path / "photo.jpg")
    out = tmp_path / "demo.png"
    env = {**os.environ, "VIGORL_CACHE": str(tmp_path / "cache")}  # builds the tiny model here
    cmd = [sys.executable, "-m", "vigorl_agents.demo", "--image", str(photo),
           "--query", "What color is the mug?", "--policy.model", "tiny-qwen2.5-vl",
           "--policy.device", "cpu", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=540)
    assert run.returncode == 0, run.stderr[-3000:]
    # it used to crash: "image 0 is 2044x1372 px, outside the processor's [3136, 50176]"
    assert "outside the processor" not in run.stderr
    # the frames were fitted to the tiny processor, and the log says how to keep the family's
    assert "'max_pixels': 50176" in run.stderr and "--policy.max-pixels 2850000" in run.stderr
    # the printed chain: turns in order, then how it ended and where the picture is
    lines = run.stdout.splitlines()
    turns = [ln for ln in lines if ln.startswith("--- turn ")]
    assert turns and turns == [f"--- turn {i} ---" for i in range(1, len(turns) + 1)]
    assert lines[lines.index("--- turn 1 ---") + 1].strip()  # the model's text follows
    end = lines[-1]
    assert end.startswith("end: ") and end.endswith(f"; picture: {out}")
    assert end.split("end: ")[1].split(";")[0] in {
        "answer", "no_action", "invalid_tool_call", "turn_limit", "image_budget",
    }  # fmt: skip
    # the picture shows the model frame: 252x168 (2044x1372 under 50,176 px), drawn 420 px wide,
    # so about 210x280 px each of the photo's red and blue halves
    pic = np.asarray(Image.open(out).convert("RGB")).astype(int)
    red = (np.abs(pic - (230, 20, 20)).max(-1) < 40).sum()
    blue = (np.abs(pic - (20, 20, 230)).max(-1) < 40).sum()
    assert 0.7 * 210 * 280 < red < 1.2 * 210 * 280
    assert 0.7 * 210 * 280 < blue < 1.2 * 210 * 280


def test_env_has_the_image_as_its_dataset_and_fitted_frames(tmp_path):
    photo = _photo(tmp_path / "photo.jpg")
    args = Args(image=photo, query="What color is the mug?\nA. red\nB. blue")
    env = make_env(args, TINY)
    obs, info = env.reset()
    uw = env.unwrapped
    assert uw.env_id == "ViGoRL/SynthSearch-v0" and uw.num_samples == 1
    assert info["sample_id"] == "demo-0" and info["mode"] == "multi_turn"
    assert obs["text"] == "<image>What color is the mug?\nA. red\nB. blue"
    assert obs["image"].shape == (168, 252, 3)  # inside [3136, 50176]
    crop, _ = uw.crop_at((100, 100))
    assert crop.size == (224, 224)  # 224² = 50,176: the processor's maximum


def test_conflicting_sizes_fail_before_loading_a_model(tmp_path):
    args = Args(image=tmp_path / "x.jpg", query="q", env_kwargs={"max_pixels": 2_850_000})
    with pytest.raises(ValueError, match=r"--policy\.max-pixels 2850000"):
        env_kwargs_of(args, TINY)
    # a wide processor (e.g. --policy.max-pixels 2850000) needs no fitting
    assert env_kwargs_of(Args(image=Path("x"), query="q"), (3136, 2_850_000)) == {}
    # unknown bounds (a remote server): the kwargs as given
    assert env_kwargs_of(Args(image=Path("x"), query="q", mode="single_turn"), None) == {
        "mode": "single_turn"
    }


def test_one_image_dataset_pickles(tmp_path):
    import pickle

    ds = OneImageDataset(str(_photo(tmp_path / "p.jpg")), "the red half", "web_grounding")
    again = pickle.loads(pickle.dumps(ds))
    assert again[0].image().size == (2044, 1372)
    assert again[0].answer_kind == "point_in_box"


def test_env_kwargs_flag_reads_key_value_like_evaluation(tmp_path):
    import tyro

    args = tyro.cli(
        Args,
        args=[
            "--image",
            str(tmp_path / "x.png"),
            "--query",
            "q",
            "--env-kwargs",
            "crop_size=504",
            "draw_dot=true",
            "offset=100",
        ],
    )
    assert args.env_kwargs == {"crop_size": 504, "draw_dot": True, "offset": 100}
    with pytest.raises(SystemExit):
        tyro.cli(Args, args=["--image", "x", "--query", "q", "--env-kwargs", "no_such_key=1"])

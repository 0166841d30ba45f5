"""Model frames are made once per sample and frame setting, whichever env instance resets it.

The n episodes of one sample (GRPO groups, avg@k) run on different env instances, often at the
same time in different threads; each frame (a render or decode plus the documented resize) is the
dominant cost of `reset`. These tests count the frames actually made (through a dataset that counts
its image loads) and check that sharing them changes no observation.
"""

from __future__ import annotations

import threading
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest

import vigorl_env  # noqa: F401  (registers the ids)
from vigorl_env.data.synth.search import SynthSearch
from vigorl_env.env import FRAME_CACHE, FrameCache
from vigorl_env.geometry import model_frame

KW = {"mode": "multi_turn", "max_pixels": 64 * 28 * 28, "crop_size": 224}
LOADS: Counter[tuple[str, int]] = Counter()


class _CountedImage:
    """A sample's image loader that counts how often the image is produced."""

    def __init__(self, load, key):
        self.load, self.key = load, key

    def __call__(self):
        LOADS[self.key] += 1
        return self.load()


class CountingSearch(SynthSearch):
    """SynthSearch whose samples count their image loads (per dataset seed and index)."""

    name = "SynthSearch"

    def _generate(self, rng, sample_id, index):
        import dataclasses

        sample = super()._generate(rng, sample_id, index)
        key = (f"{self.split}-{self.dataset_seed}", index)
        return dataclasses.replace(sample, image=_CountedImage(sample.image, key))


class NoKeySearch(CountingSearch):
    """The same samples without `cache_key`: frames may be shared only through the object."""

    cache_key = None


@pytest.fixture(autouse=True)
def _cold():
    FRAME_CACHE.clear()
    LOADS.clear()
    yield
    FRAME_CACHE.clear()


def _env(dataset, **kw):
    return gym.make("ViGoRL/SynthSearch-v0", dataset=dataset, **{**KW, **kw})


def _documented_frame(index: int, max_pixels: int = KW["max_pixels"]) -> np.ndarray:
    sample = SynthSearch(split="test", size=8)[index]
    img, _ = model_frame(sample.image(), min_pixels=3136, max_pixels=max_pixels)
    return np.asarray(img)


def test_envs_with_separate_dataset_objects_share_one_frame_per_sample():
    envs = [_env(CountingSearch(split="test", size=8)) for _ in range(3)]
    for env in envs:
        for index in (2, 5, 2):
            obs, _ = env.reset(options={"index": index})
            np.testing.assert_array_equal(obs["image"], _documented_frame(index))
    assert LOADS == {("test-0", 2): 1, ("test-0", 5): 1}
    # another seed is other samples: its own frames
    _env(CountingSearch(split="test", size=8, dataset_seed=1)).reset(options={"index": 2})
    assert LOADS[("test-1", 2)] == 1


def test_concurrent_resets_of_one_sample_make_its_frame_once():
    envs = [_env(CountingSearch(split="test", size=8)) for _ in range(6)]
    start = threading.Barrier(len(envs))
    frames: list[np.ndarray] = [None] * len(envs)  # type: ignore[list-item]

    def reset(i: int) -> None:
        start.wait()
        frames[i] = envs[i].reset(options={"index": 4})[0]["image"]

    threads = [threading.Thread(target=reset, args=(i,)) for i in range(len(envs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert LOADS == {("test-0", 4): 1}
    for f in frames:
        np.testing.assert_array_equal(f, _documented_frame(4))
    assert len({id(f) for f in frames}) == len(frames)  # each reset still returns its own copy


def test_without_cache_key_only_envs_holding_the_same_dataset_object_share():
    shared = NoKeySearch(split="test", size=8)
    for env in (_env(shared), _env(shared)):
        env.reset(options={"index": 1})
    assert LOADS == {("test-0", 1): 1}
    _env(NoKeySearch(split="test", size=8)).reset(options={"index": 1})  # equal, but unknown
    assert LOADS == {("test-0", 1): 2}


def test_frame_settings_are_part_of_the_key():
    ds = CountingSearch(split="test", size=8)
    small, _ = _env(ds, max_pixels=32 * 28 * 28).reset(options={"index": 0})
    big, _ = _env(ds).reset(options={"index": 0})
    assert LOADS == {("test-0", 0): 2}
    np.testing.assert_array_equal(small["image"], _documented_frame(0, 32 * 28 * 28))
    np.testing.assert_array_equal(big["image"], _documented_frame(0))


def test_a_failed_frame_is_not_cached_and_waiters_make_their_own():
    cache = FrameCache()
    calls = []

    def bad():
        calls.append("bad")
        raise OSError("unreadable")

    with pytest.raises(OSError):
        cache.get_or("k", None, bad)
    ok = model_frame(SynthSearch(split="test", size=1)[0].image(), min_pixels=3136,
                     max_pixels=50176)  # fmt: skip
    assert cache.get_or("k", None, lambda: ok) is not None and len(cache) == 1
    assert cache.made == 1 and calls == ["bad"]


def test_the_cache_is_bounded_by_entries_and_bytes():
    img = model_frame(SynthSearch(split="test", size=1)[0].image(), min_pixels=3136,
                      max_pixels=50176)  # fmt: skip
    size = img[0].width * img[0].height * 3
    by_count = FrameCache(max_entries=2)
    by_bytes = FrameCache(max_bytes=2 * size)
    for k in range(4):
        by_count.get_or(k, None, lambda: img)
        by_bytes.get_or(k, None, lambda: img)
    assert len(by_count) == 2 and len(by_bytes) == 2

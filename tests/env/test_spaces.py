"""AnyText / VarImage (docs/envs.md#spaces): membership, sampling, seeding, pickling, check_env, vector envs."""

from __future__ import annotations

import pickle
import warnings
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.spaces import Dict, Tuple
from gymnasium.utils.env_checker import check_env
from gymnasium.vector.utils import (
    batch_differing_spaces,
    batch_space,
    concatenate,
    create_empty_array,
)

from vigorl_env.spaces import SAMPLE_CHARACTERS, AnyText, VarImage

# --- AnyText --------------------------------------------------------------------------------------


def test_anytext_contains():
    space = AnyText()
    assert space.max_length == 100_000
    assert "" in space
    assert "<answer>ſ K 日本</answer>\x00" in space  # any str, not a closed alphabet
    assert "x" * 100_000 in space
    assert "x" * 100_001 not in space
    assert b"bytes" not in space
    assert None not in space
    assert 3 not in space
    assert np.array("s") not in space
    assert "abc" not in AnyText(max_length=2)


def test_anytext_sample_alphabet_length_and_seed():
    space = AnyText(seed=7)
    samples = [space.sample() for _ in range(300)]
    assert all(isinstance(s, str) and 0 <= len(s) <= 64 for s in samples)
    assert all(set(s) <= set(SAMPLE_CHARACTERS) for s in samples)
    assert {len(s) for s in samples} >= {0, 64}  # both ends of the range are reachable
    expected = {chr(c) for c in range(32, 127)} | {"\n"}  # printable ASCII and newline
    assert set(SAMPLE_CHARACTERS) == expected
    assert set("".join(samples)) == expected  # all reachable; no tabs or other controls
    again = AnyText(seed=7)
    assert [again.sample() for _ in range(300)] == samples
    other = AnyText()
    other.seed(8)
    assert [other.sample() for _ in range(5)] != samples[:5]
    assert all(len(AnyText(max_length=3, seed=i).sample()) <= 3 for i in range(50))
    assert AnyText(max_length=0, seed=0).sample() == ""


def test_anytext_flags_eq_repr():
    space = AnyText(max_length=10)
    assert space.is_np_flattenable is False
    assert space.shape is None and space.dtype is None
    assert space == AnyText(max_length=10)
    assert space != AnyText(max_length=11)
    assert space != VarImage()
    assert repr(space) == "AnyText(max_length=10)"
    with pytest.raises(ValueError):
        space.sample(mask=np.ones(1, dtype=np.int8))
    with pytest.raises(ValueError):
        AnyText(max_length=-1)


# --- VarImage -------------------------------------------------------------------------------------


def test_varimage_contains():
    space = VarImage(max_height=100, max_width=50)
    assert np.zeros((1, 1, 3), np.uint8) in space
    assert np.zeros((100, 50, 3), np.uint8) in space
    assert np.zeros((101, 50, 3), np.uint8) not in space
    assert np.zeros((100, 51, 3), np.uint8) not in space
    assert np.zeros((0, 5, 3), np.uint8) not in space
    assert np.zeros((5, 5, 4), np.uint8) not in space
    assert np.zeros((5, 5), np.uint8) not in space
    assert np.zeros((5, 5, 3), np.float32) not in space
    assert np.zeros((5, 5, 3), np.int64) not in space
    assert np.zeros((5, 5, 3), np.uint8).tolist() not in space
    assert "img" not in space
    # Non-contiguous views are still arrays of the right kind.
    assert np.zeros((10, 10, 3), np.uint8)[::2, ::3] in space
    default = VarImage()
    assert (default.max_height, default.max_width) == (65536, 65536)
    assert np.zeros((3000, 4000, 3), np.uint8) in default


def test_varimage_sample_sizes_and_seed():
    space = VarImage(seed=3)
    samples = [space.sample() for _ in range(200)]
    assert all(s in space for s in samples)
    assert all(s.dtype == np.uint8 and s.ndim == 3 and s.shape[2] == 3 for s in samples)
    heights = {s.shape[0] for s in samples}
    widths = {s.shape[1] for s in samples}
    assert min(heights) >= 1 and max(heights) <= 64 and len(heights) > 20
    assert min(widths) >= 1 and max(widths) <= 64 and len(widths) > 20
    again = VarImage(seed=3)
    assert all(np.array_equal(a, again.sample()) for a in samples)
    small = VarImage(max_height=2, max_width=1, seed=0)
    assert all(small.sample().shape[:2] in {(1, 1), (2, 1)} for _ in range(20))


def test_varimage_flags_eq_repr_json():
    space = VarImage(max_height=10, max_width=20)
    assert space.is_np_flattenable is False
    assert space.shape is None and space.dtype == np.uint8
    assert space == VarImage(max_height=10, max_width=20)
    assert space != VarImage(max_height=10, max_width=21)
    assert space != AnyText()
    assert repr(space) == "VarImage(max_height=10, max_width=20)"
    xs = [space.sample() for _ in range(3)]
    back = space.from_jsonable(space.to_jsonable(xs))
    assert all(np.array_equal(a, b) and b.dtype == np.uint8 for a, b in zip(xs, back, strict=True))
    with pytest.raises(ValueError):
        VarImage(max_height=0)


def test_pickle_and_deepcopy_keep_rng_state():
    for space in (AnyText(max_length=50, seed=1), VarImage(max_height=9, seed=1)):
        space.sample()
        clone = pickle.loads(pickle.dumps(space))
        dup = deepcopy(space)
        assert clone == space and dup == space
        a, b, c = space.sample(), clone.sample(), dup.sample()
        if isinstance(a, np.ndarray):
            assert np.array_equal(a, b) and np.array_equal(a, c)
        else:
            assert a == b == c


def test_dict_space_seed_sample_contains():
    obs_space = Dict({"image": VarImage(), "text": AnyText()})
    obs_space.seed(123)
    x = obs_space.sample()
    assert x in obs_space
    obs_space.seed(123)
    y = obs_space.sample()
    assert np.array_equal(x["image"], y["image"]) and x["text"] == y["text"]
    assert {"image": np.zeros((2, 2, 3), np.uint8), "text": 5} not in obs_space


# --- vector helpers -------------------------------------------------------------------------------


def test_batch_helpers():
    text = AnyText(seed=0)
    batched = batch_space(text, 3)
    assert isinstance(batched, Tuple) and len(batched) == 3
    assert all(s == text and s is not text for s in batched.spaces)
    a = batched.sample()
    assert isinstance(a, tuple) and len(a) == 3 and a in batched
    # The batch's copies are seeded differently from each other, and batching does not advance
    # the single space's RNG.
    states = {str(s.np_random.bit_generator.state) for s in batched.spaces}
    assert len(states) == 3
    assert text.sample() == AnyText(seed=0).sample()
    image = VarImage()
    empty = create_empty_array(image, 2)
    assert len(empty) == 2 and all(e in image for e in empty)
    assert create_empty_array(text, 2) == ("", "")
    items = [np.zeros((2, 3, 3), np.uint8), np.ones((4, 1, 3), np.uint8)]
    out = concatenate(image, items, empty)
    assert isinstance(out, tuple) and out[0] is items[0] and out[1] is items[1]
    assert concatenate(text, ["a", "b"], None) == ("a", "b")
    diff = batch_differing_spaces([AnyText(max_length=3), AnyText(max_length=5)])
    assert isinstance(diff, Tuple) and [s.max_length for s in diff.spaces] == [3, 5]


# --- a tiny env using these spaces ----------------------------------------------------------------


class _EchoEnv(gym.Env[dict[str, Any], str]):
    """Image of a seeded random size, text echo; ends after two steps. Fresh arrays every call."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        self.observation_space = Dict({"image": VarImage(), "text": AnyText()})
        self.action_space = AnyText(max_length=1000)
        self._t = 0
        self._img = np.zeros((1, 1, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        h, w = (int(v) for v in self.np_random.integers(1, 40, size=2))
        self._img = self.np_random.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        self._t = 0
        return {"image": self._img.copy(), "text": f"size {w}x{h}"}, {"size": [w, h]}

    def step(self, action: str):
        if not isinstance(action, str):
            raise TypeError(type(action))
        self._t += 1
        obs = {"image": self._img[: 1 + self._t % 2].copy(), "text": action[::-1]}
        return obs, float(len(action) % 3), self._t >= 2, False, {"turn": self._t}


_ENV_ID = "VigorlSpacesTest/Echo-v0"


@pytest.fixture
def echo_id():
    gym.register(id=_ENV_ID, entry_point=_EchoEnv, disable_env_checker=True)
    try:
        yield _ENV_ID
    finally:
        gym.registry.pop(_ENV_ID, None)


def test_check_env_passes_without_warnings(echo_id):
    env = gym.make(echo_id).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any gymnasium warning about the spaces fails the test
        check_env(env)
    # The passive checker (what gym.make installs) is also quiet.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrapped = gym.make(echo_id, disable_env_checker=False)
        wrapped.reset(seed=0)
        wrapped.step(wrapped.action_space.sample())


def test_env_with_these_spaces_pickles(echo_id):
    env = gym.make(echo_id).unwrapped
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.observation_space == env.observation_space
    o1, *_ = env.step("abc")
    o2, *_ = clone.step("abc")
    assert np.array_equal(o1["image"], o2["image"]) and o1["text"] == o2["text"] == "cba"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(echo_id, mode):
    kwargs = {"shared_memory": False} if mode == "async" else {}
    envs = gym.make_vec(echo_id, num_envs=2, vectorization_mode=mode, vector_kwargs=kwargs)
    try:
        assert isinstance(envs.action_space, Tuple) and len(envs.action_space) == 2
        assert envs.single_action_space == AnyText(max_length=1000)
        obs, info = envs.reset(seed=[1, 2])
        assert isinstance(obs["image"], tuple) and len(obs["image"]) == 2
        assert all(img in VarImage() for img in obs["image"])
        assert obs in envs.observation_space
        # Same seeds as two single envs.
        for i, seed in enumerate([1, 2]):
            single_obs, _ = _EchoEnv().reset(seed=seed)
            assert np.array_equal(obs["image"][i], single_obs["image"])
            assert obs["text"][i] == single_obs["text"]
        obs, reward, term, trunc, info = envs.step(("hello", "a\nb"))
        assert obs["text"] == ("olleh", "b\na")
        assert reward.tolist() == [2.0, 0.0]
        assert info["turn"].tolist() == [1, 1]
        assert term.tolist() == [False, False] and trunc.tolist() == [False, False]
        obs, *_ = envs.step(envs.action_space.sample())
        assert obs in envs.observation_space
    finally:
        envs.close()


def test_async_shared_memory_refused_clearly(echo_id):
    # A 65536x65536 image per env cannot live in shared memory: gymnasium says to disable it.
    with pytest.raises(ValueError, match="shared_memory=False"):
        gym.make_vec(echo_id, num_envs=2, vectorization_mode="async")

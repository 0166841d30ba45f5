"""Ground truth has no back door: before an episode ends, nothing public on the unwrapped env and
nothing in `info` reaches the answer, the boxes or the objects (docs/envs.md#ground-truth).

The walk is concrete: starting from every public attribute of the unwrapped env (properties
evaluated, bound methods skipped) and from every reset/step info, it follows dict/list/tuple/set
items and every attribute of nested objects (private ones included: a `_x` inside a public object
is just as reachable), and fails on

- an object of a ground-truth type: `Sample`, `SceneObject`, `GroundTruth`, the env's `_Episode`,
  or anything with the `Dataset` interface (a dataset hands out every sample's answer);
- a string equal to the answer (or, for options, the right option), a 4-number sequence equal to
  the ground-truth box or an object box (original or model frame), a tuple equal to the target
  ids, or a dict key naming ground truth (`ground_truth`, `answer`, `objects`, `target_ids`, ...).

The positive controls check that the same walk does find the ground truth where it is meant to
be: in the final step's info, and in the private episode.
"""

from __future__ import annotations

import contextlib
import types
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import vigorl_env
from vigorl_env import protocol
from vigorl_env.data.base import Dataset, Sample, SceneObject
from vigorl_env.env import GroundedReasoningEnv, _Episode, load_dataset
from vigorl_env.rewards import GroundTruth

GT_TYPES = (Sample, SceneObject, GroundTruth, _Episode)
GT_KEYS = {"ground_truth", "answer", "objects", "target_ids", "gt_box", "gt", "sample", "episode"}


class Leak(AssertionError):
    pass


class Secrets:
    """What must stay hidden for one episode, from the data source itself."""

    def __init__(self, sample: Sample, info: dict[str, Any]):
        sx, sy = info["frame"]["scale"]
        self.strings = {sample.answer.strip().lower()}
        self.boxes: list[tuple[float, ...]] = []
        boxes = [sample.gt_box] if sample.gt_box is not None else []
        boxes += [o.box for o in sample.objects or ()]
        for b in boxes:
            self.boxes.append(tuple(float(v) for v in b))
            self.boxes.append((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy))
        self.target_ids = tuple(sample.target_ids)
        self.sample_id = sample.sample_id

    def check_value(self, value: Any, path: str) -> None:
        if isinstance(value, str):
            if value.strip().lower() in self.strings:
                raise Leak(f"{path} = {value!r} is the answer")
            return
        if (
            isinstance(value, (list, tuple))
            and len(value) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            vals = tuple(float(v) for v in value)
            for b in self.boxes:
                if np.allclose(vals, b, rtol=0, atol=1e-9):
                    raise Leak(f"{path} = {value!r} is a ground-truth box")
        if self.target_ids and isinstance(value, (list, tuple)) and tuple(value) == self.target_ids:
            raise Leak(f"{path} = {value!r} are the target ids")


def walk(root: Any, secrets: Secrets, path: str, seen: set[int], skip: set[int]) -> int:
    """Visit everything reachable from `root`; raise `Leak` on ground truth; return nodes seen."""
    stack = [(root, path)]
    count = 0
    while stack:
        obj, where = stack.pop()
        if id(obj) in seen or id(obj) in skip:
            continue
        seen.add(id(obj))
        count += 1
        if isinstance(obj, GT_TYPES):
            raise Leak(f"{where} is a {type(obj).__name__}")
        if not isinstance(obj, type) and isinstance(obj, Dataset):
            raise Leak(f"{where} is a dataset ({type(obj).__name__})")
        secrets.check_value(obj, where)
        if isinstance(obj, (str, bytes, int, float, bool, type(None), np.generic)):
            continue
        if isinstance(obj, np.ndarray):
            if obj.size == 4 and obj.dtype.kind in "iuf":
                secrets.check_value(obj.tolist(), where)
            continue
        if isinstance(
            obj,
            (
                types.ModuleType,
                types.FunctionType,
                types.BuiltinFunctionType,
                types.MethodType,
                type,
            ),
        ):
            continue
        if isinstance(obj, dict):
            for k, v in obj.items():
                if isinstance(k, str) and k in GT_KEYS:
                    raise Leak(f"{where} has the key {k!r}")
                stack.append((v, f"{where}[{k!r}]"))
            continue
        if isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(obj))
            continue
        attrs: dict[str, Any] = {}
        with contextlib.suppress(TypeError):
            attrs.update(vars(obj))
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if isinstance(slot, str) and hasattr(obj, slot):
                    attrs[slot] = getattr(obj, slot)
        for k, v in attrs.items():
            stack.append((v, f"{where}.{k}"))
    return count


def walk_env(env: GroundedReasoningEnv, secrets: Secrets) -> int:
    """Every public attribute of the unwrapped env (properties evaluated), walked to the bottom."""
    seen: set[int] = set()
    n = 0
    for name in dir(env):
        if name.startswith("_"):
            continue
        try:
            value = getattr(env, name)
        except Exception:  # e.g. a property that needs a reset
            continue
        if isinstance(value, types.MethodType):
            continue
        n += walk(value, secrets, f"env.{name}", seen, skip={id(env)})
    return n


def _episode_actions(env_id: str, mode: str) -> list[str]:
    if mode == "single_turn":
        return ["<think>(5, 5)</think><answer>x</answer>"]
    return [
        "<think>Here (40, 50).</think>\n" + protocol.format_tool_call(40, 50),
        "<think>There (300, 20).</think>\n" + protocol.format_tool_call(300, 20),
        "<think>Done.</think><answer>none</answer>",
    ]


def _check_episode(env: gym.Env, data_root: Any = None, seed: int = 3) -> None:
    uw = env.unwrapped
    with pytest.raises(RuntimeError):
        _ = uw.frame_image  # before the first reset
    obs, info = env.reset(seed=seed)
    sample = load_dataset(uw.config, data_root, uw.env_id)[info["index"]]
    secrets = Secrets(sample, info)
    assert walk_env(uw, secrets) > 20  # the walk really went somewhere
    walk(info, secrets, "reset info", set(), set())
    walk(obs["text"], secrets, "reset obs text", set(), set())
    actions = _episode_actions(uw.env_id, uw.config.mode)
    for i, action in enumerate(actions):
        obs, _, term, trunc, info = env.step(action)
        walk_env(uw, secrets)  # the env never exposes it, not even after the end
        if term or trunc:
            assert i == len(actions) - 1 or uw.config.mode == "single_turn"
            # positive control: the same walk does find the final step's ground truth
            with pytest.raises(Leak):
                walk(info, secrets, "final info", set(), set())
            break
        walk(info, secrets, f"step {i + 1} info", set(), set())
        walk(obs["text"], secrets, f"step {i + 1} obs text", set(), set())
    else:
        raise AssertionError("the episode did not end")
    # positive control: the private episode does hold it
    with pytest.raises(Leak):
        walk(uw._episode, secrets, "env._episode", set(), set())


MODES = ("single_turn", "multi_turn")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env_id", vigorl_env.PROCEDURAL_IDS)
def test_procedural_envs_hide_ground_truth(env_id, mode):
    _check_episode(gym.make(env_id, mode=mode, size=20))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("env_id", vigorl_env.UPSTREAM_IDS)
def test_upstream_envs_hide_ground_truth(env_id, mode, fixture_data_root):
    root = str(fixture_data_root)
    _check_episode(gym.make(env_id, mode=mode, data_root=root), root, seed=1)


def test_old_back_doors_are_closed():
    env = gym.make("ViGoRL/SynthSearch-v0", size=5).unwrapped
    env.reset(seed=0)
    assert not hasattr(env, "episode")
    assert not hasattr(env, "dataset")


def test_walker_catches_a_leak():
    """A public attribute that holds the sample, an answer or a box is caught (the walk is not vacuous)."""
    env = gym.make("ViGoRL/SynthSearch-v0", size=5).unwrapped
    _, info = env.reset(seed=0)
    sample = load_dataset(env.config)[info["index"]]
    secrets = Secrets(sample, info)
    env.leaky = {"nested": [sample]}
    with pytest.raises(Leak, match="Sample"):
        walk_env(env, secrets)
    env.leaky = types.SimpleNamespace(x=[" " + sample.answer.upper()])
    with pytest.raises(Leak, match="answer"):
        walk_env(env, secrets)
    env.leaky = [list(sample.objects[0].box)]
    with pytest.raises(Leak, match="box"):
        walk_env(env, secrets)
    del env.leaky
    walk_env(env, secrets)


def test_frame_image_and_crop_at_match_the_observations():
    env = gym.make("ViGoRL/SynthGrounding-v0", mode="multi_turn", size=5)
    obs, info = env.reset(seed=2)
    uw = env.unwrapped
    frame = uw.frame_image
    assert np.array_equal(np.asarray(frame), obs["image"])
    frame.paste((0, 0, 0), (0, 0, frame.width, frame.height))  # a copy: the env's frame is intact
    assert np.array_equal(np.asarray(uw.frame_image), obs["image"])
    img, crop = uw.crop_at((-40, 30))
    assert crop.clamped is True and crop.point == (0, 30)
    obs2, _, _, _, info2 = env.step("<think>(0, 0)</think>\n" + protocol.format_tool_call(-40, 30))
    assert np.array_equal(np.asarray(img), obs2["image"])
    assert info2["crop"] == crop.to_info()
    # crop_at does not move the episode: the transcript has only the one step
    uw.crop_at((10, 10))
    assert uw.get_state().actions == (uw.transcript(),)


def test_dataset_kwarg_pickles_vectorizes_and_changes_the_fingerprint():
    import pickle

    from vigorl_env.data.synth.search import SynthSearch

    ds = SynthSearch(split="val", dataset_seed=3, size=4)
    env = gym.make("ViGoRL/SynthSearch-v0", dataset=ds)
    _, info = env.reset(seed=0)
    assert info["split"] == "val" and info["sample_id"].startswith("SynthSearch-val-3-")
    assert env.unwrapped.num_samples == 4
    assert env.unwrapped.sample_id_at(1) == "SynthSearch-val-3-1"
    plain = gym.make("ViGoRL/SynthSearch-v0").unwrapped
    assert env.unwrapped.fingerprint != plain.fingerprint
    assert (
        env.unwrapped.fingerprint
        == gym.make("ViGoRL/SynthSearch-v0", dataset=ds).unwrapped.fingerprint
    )
    # states replay on an env with the same dataset, not on the registered one
    env.step("<think>(1, 1)</think>\n" + protocol.format_tool_call(100, 100))
    state = env.unwrapped.get_state()
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    obs_c, _ = clone.set_state(state)
    assert clone.get_state() == state
    with pytest.raises(ValueError, match="different config"):
        plain.set_state(state)
    with pytest.raises(ValueError, match="split"):
        gym.make("ViGoRL/SynthSearch-v0", dataset=ds, split="train")
    with pytest.raises(TypeError, match="Dataset interface"):
        gym.make("ViGoRL/SynthSearch-v0", dataset=[1, 2, 3])
    vec = gym.make_vec("ViGoRL/SynthSearch-v0", num_envs=2, dataset=ds)
    try:
        _, vinfo = vec.reset(seed=0)
        assert all(s.startswith("SynthSearch-val-3-") for s in vinfo["sample_id"])
    finally:
        vec.close()


def test_dataset_kwarg_needs_no_data_root_for_upstream_ids(monkeypatch):
    """A passed-in dataset replaces the benchmark's files: no DATA_ROOT is read."""
    from vigorl_env.data.synth.grounding import SynthGrounding

    monkeypatch.delenv("DATA_ROOT", raising=False)
    env = gym.make("ViGoRL/ScreenSpotV2-v0", dataset=SynthGrounding(split="test", size=2))
    _, info = env.reset(options={"index": 1})
    assert info["sample_id"] == "SynthGrounding-test-0-1"
    assert env.unwrapped.config.max_pixels == 12_960_000  # the benchmark's defaults still apply

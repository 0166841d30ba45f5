"""What keeps the rollout loop at the engine's speed, with scripted policies (no model).

- a backend that batches itself (`continuous_batching`) gets each request at once, alone, and the
  results equal those of the batched path (per-request seeds);
- resets run off the event loop, so the first request leaves before every env has reset;
- the n episodes of one sample share one frame render, even on envs whose datasets are separate
  objects and when their resets run at the same time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter

import gymnasium as gym
import pytest

from vigorl_agents.baselines import RandomZoom
from vigorl_agents.policy import params_per_conversation
from vigorl_agents.rollout import EpisodeSpec, make_env_factory, run_episodes
from vigorl_env.data.synth.search import SynthSearch
from vigorl_env.env import FRAME_CACHE

KW = {"mode": "multi_turn", "max_pixels": 64 * 28 * 28, "crop_size": 224, "max_images": 3}
RENDERS: Counter[int] = Counter()


class _Counted:
    def __init__(self, load, index):
        self.load, self.index = load, index

    def __call__(self):
        RENDERS[self.index] += 1
        return self.load()


class CountingSearch(SynthSearch):
    """SynthSearch whose samples count their renders (a real dataset, used through `dataset=`)."""

    name = "SynthSearch"

    def _generate(self, rng, sample_id, index):
        sample = super()._generate(rng, sample_id, index)
        return dataclasses.replace(sample, image=_Counted(sample.image, index))


class Zoomer(RandomZoom):
    """RandomZoom that records every call: (batch size, frames made so far in its run)."""

    continuous_batching = False

    def __init__(self):
        super().__init__("option_text")
        self.calls: list[tuple[int, int]] = []
        self._made = FRAME_CACHE.made

    async def generate(self, conversations, params):
        self.calls.append((len(conversations), FRAME_CACHE.made - self._made))
        await asyncio.sleep(0.002)
        return await super().generate(
            conversations, params_per_conversation(params, len(conversations))
        )


class ContinuousZoomer(Zoomer):
    continuous_batching = True


@pytest.fixture(autouse=True)
def _cold():
    FRAME_CACHE.clear()
    RENDERS.clear()
    yield
    FRAME_CACHE.clear()


def _separate_datasets():
    """A factory whose every env holds its own dataset object (as separate processes would)."""
    return lambda: gym.make(
        "ViGoRL/SynthSearch-v0", dataset=CountingSearch(split="test", size=8), **KW
    )


def _run(policy, specs, make=None, **kw):
    make = make or make_env_factory("ViGoRL/SynthSearch-v0", split="test", size=8, **KW)
    from vigorl_agents.policy import SamplingParams

    return asyncio.run(run_episodes(make, policy, specs, SamplingParams(seed=3), **kw))


def test_continuous_backends_get_each_request_at_once_and_the_same_results():
    specs = [EpisodeSpec(i) for i in range(8)]
    batched, direct = Zoomer(), ContinuousZoomer()
    a = _run(batched, specs, max_in_flight=8)
    b = _run(direct, specs, max_in_flight=8)
    assert max(n for n, _ in batched.calls) > 1  # grouped
    assert {n for n, _ in direct.calls} == {1}  # never held back to form a batch
    assert len(direct.calls) == sum(len(t.turns) for t in b)
    assert [t.transcript for t in a] == [t.transcript for t in b]
    assert [t.reward for t in a] == [t.reward for t in b]


def test_the_first_request_leaves_before_every_env_has_reset():
    """Regression: every reset ran on the event loop before the first request left (an idle
    server for the whole start-up)."""
    policy = ContinuousZoomer()
    _run(policy, [EpisodeSpec(i) for i in range(8)], max_in_flight=8)
    assert policy.calls[0][1] < 8, policy.calls[:3]
    # and answers are served while resets go on: requests of later turns leave meanwhile
    assert len([made for _, made in policy.calls if made < 8]) > 1


@pytest.mark.parametrize("reset_workers", [1, 3])
def test_the_n_episodes_of_one_sample_share_one_frame_render(reset_workers):
    n = 4
    specs = [EpisodeSpec(i, e) for i in (2, 5) for e in range(n)]
    t = time.perf_counter()
    trajs = _run(
        ContinuousZoomer(),
        specs,
        make=_separate_datasets(),
        max_in_flight=len(specs),
        reset_workers=reset_workers,
    )
    assert time.perf_counter() - t < 60
    assert RENDERS == {2: 1, 5: 1}  # one render per sample, not per episode or per env
    assert [(t.index, t.episode) for t in trajs] == [(s.index, s.episode) for s in specs]
    for i in (2, 5):
        group = [t for t in trajs if t.index == i]
        assert len({str(t.frame) for t in group}) == 1
        # the episodes differ (own seeds) although they share the frame
        assert len({t.transcript for t in group}) > 1

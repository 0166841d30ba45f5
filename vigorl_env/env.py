"""GroundedReasoningEnv: the one env class, composed from a benchmark (task family + dataset).

## Description
A vision-language model answers a question about one image while pointing at image regions. An
action is the model's text for one assistant turn. In single-turn mode the turn is scored at once;
in multi-turn mode a `<tool_call>` with a coordinate returns a zoomed crop of the image around that
point (docs/geometry.md#crop) and the episode goes on until an answer, a bad action or the turn/image budget.

## Observation
`{"image": uint8 array (H, W, 3), "text": str}`: at reset the model-frame image and the question
(with exactly one `<image>`); after a crop, the zoomed crop and the observation text (docs/protocol.md#observation-text);
after the end, the last image and `""`.

## Action
Any `str` (bytes are decoded as UTF-8 with replacement). No string makes `step` raise. Text beyond
`MAX_ACTION_CHARS` (100,000, the action space's bound) is cut off before parsing and scoring, and
`info["action_truncated"]` is set; the transcript and `get_state()` hold the cut text.

## Reward
0 until the episode ends; then the single-turn (docs/rewards.md#single-turn-score) or multi-turn (docs/rewards.md#multi-turn-score) overall score of
the transcript, with its components in `info["reward_components"]`.

## Episode End
Single-turn: after the first action. Multi-turn: the rules of docs/envs.md#step (answer, invalid tool call, no
action, turn limit, image budget after the forced final answer).

## Arguments
The make kwargs of docs/envs.md (see `vigorl_env.config.build_config`), plus `data_root` and
`dataset`: any object with the `vigorl_env.data.base.Dataset` interface (`name`, `split`, `len`,
`[index]` giving `Sample`s, `index_of`) replaces the benchmark's own data, e.g.
`gym.make("ViGoRL/VStar-v0", dataset=my_dataset)`. The benchmark still picks the task family,
prompts and frame/crop defaults. A passed-in dataset must pickle (async vector envs ship it to their
workers) and its class, name and split are mixed into `env.fingerprint`, so states and results of a
custom dataset never match the registered one's. `split=`, if given, must equal `dataset.split`.

## Ground truth
The episode (sample and ground truth) is private. Public, ground-truth-free views: `frame_image`
(the model-frame image), `crop_at(point)` (the crop the env would return), `num_samples`,
`sample_id_at(index)`, `transcript()`, `get_state()`. The ground truth appears only in the final
step's `info["ground_truth"]` and, as a score, through `accuracy_of(answer)`.

## Version History
- v0: initial release.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from PIL import Image, ImageDraw

from vigorl_env import protocol, rewards
from vigorl_env.config import EnvConfig, build_config
from vigorl_env.data.base import Dataset, Sample
from vigorl_env.geometry import CropInfo, Frame, crop_zoom, model_frame
from vigorl_env.metrics import grounding_precision
from vigorl_env.spaces import AnyText, VarImage

FRAME_CACHE_SIZE = 64
"""Model frames kept by the process-wide frame cache (`FRAME_CACHE`), at most; see also
`FRAME_CACHE_BYTES`."""
FRAME_CACHE_BYTES = 1 << 30
CROP_CACHE_SIZE = 32
MAX_ACTION_CHARS = 100_000
"""Longest action (after canonicalization) the env reads; longer ones are cut to it and flagged
with `info["action_truncated"]` (docs/envs.md#step)."""


def join_transcript(actions: Sequence[str], observations: Sequence[str]) -> str:
    """The scored text of an episode: its actions joined by newlines with the observation text
    that followed each one between them (every env's `transcript`, docs/envs.md#step)."""
    parts: list[str] = []
    for i, action in enumerate(actions):
        if i:
            parts.append(observations[i - 1])
        parts.append(action)
    return "\n".join(parts)


@dataclass(frozen=True)
class EnvState:
    """A cheap, immutable, picklable snapshot of an episode (docs/envs.md#determinism-and-state): replaying `actions` after a
    reset to `index` reproduces the episode exactly."""

    env_id: str
    config_fingerprint: str
    split: str
    index: int
    actions: tuple[str, ...]


class _LRU(OrderedDict):
    """A tiny LRU map (model frames and crops), dropped when the env is pickled."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get_or(self, key: Any, make: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > self.maxsize:
            self.popitem(last=False)
        return value


class FrameCache:
    """Model frames shared by every env of this process, made once per sample and frame setting.

    Why: the n episodes of one sample (GRPO groups, avg@k) run on different env instances, and
    making a model frame (render or decode, then the resize of docs/geometry.md#the-resize-rule)
    is the dominant cost of `reset`. Entries are keyed by the dataset's `cache_key` (equal keys
    mean equal samples, e.g. a procedural split and seed, or one split file), the sample index and
    the frame settings (`min_pixels`, `max_pixels`, `max_side`); a dataset without `cache_key` is
    keyed by the object itself, so only envs holding that very object share its frames.

    Thread-safe, and each frame is made once even when several envs reset the same sample at the
    same time in different threads (the others wait for it). Bounded by `max_entries` and
    `max_bytes` (least recently used first); an episode keeps its own reference, so eviction never
    changes a running episode. Frames are pure functions of their key, so sharing them changes no
    observation (docs/envs.md#determinism-and-state). `made` counts the frames made.
    """

    def __init__(self, max_entries: int = FRAME_CACHE_SIZE, max_bytes: int = FRAME_CACHE_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.made = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[Any, Image.Image, Frame, int]] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get_or(
        self, key: Hashable, owner: Any, make: Callable[[], tuple[Image.Image, Frame]]
    ) -> tuple[Image.Image, Frame]:
        """The frame under `key` (made by `make` on a miss). `owner` is the dataset object for
        identity keys (a hit needs the very same object) and None for `cache_key` keys."""
        while True:
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and entry[0] is owner:
                    self._entries.move_to_end(key)
                    return entry[1], entry[2]
                event = self._pending.get(key)
                if event is None:  # nobody is making it: this thread does
                    event = self._pending[key] = threading.Event()
                    break
            event.wait()  # made (or failed) by another thread: look again
        try:
            img, frame = make()
        except BaseException:
            with self._lock:
                del self._pending[key]
            event.set()  # the waiters try themselves (and fail with their own error)
            raise
        size = img.width * img.height * len(img.getbands())
        with self._lock:
            self.made += 1
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[3]
            self._entries[key] = (owner, img, frame, size)
            self._bytes += size
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_entries or self._bytes > self.max_bytes
            ):
                self._bytes -= self._entries.popitem(last=False)[1][3]
            del self._pending[key]
        event.set()
        return img, frame

    def clear(self) -> None:
        """Forget every frame (benchmarks start cold with it)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


FRAME_CACHE = FrameCache()
"""The process-wide model-frame cache of every `GroundedReasoningEnv`."""


def load_dataset(config: EnvConfig, data_root: Any = None, env_id: str | None = None) -> Dataset:
    """The dataset of a config: a procedural generator, or upstream files under DATA_ROOT."""
    spec = config.spec
    if spec.procedural:
        return spec.generator(
            split=config.split or "train",
            dataset_seed=config.dataset_seed,
            size=config.size,
            scene=config.scene,
        )
    from vigorl_env.data.upstream import load_benchmark

    return load_benchmark(
        spec.name,
        config.split,
        data_root=data_root,
        prompt_newlines=config.prompt_newlines,
        env_id=env_id or spec.env_id,
    )


def _check_dataset(dataset: Any, config: EnvConfig) -> None:
    """Refuse a `dataset=` that lacks the `Dataset` interface or contradicts `split=`."""
    if not isinstance(dataset, Dataset):
        raise TypeError(
            "dataset= needs the vigorl_env.data.base.Dataset interface (name, split, __len__, "
            f"__getitem__, index_of); got {type(dataset).__name__}"
        )
    if config.split is not None and config.split != dataset.split:
        raise ValueError(f"split={config.split!r} but the dataset's split is {dataset.split!r}")
    if len(dataset) < 1:
        raise ValueError(f"dataset {dataset.name!r} (split {dataset.split!r}) has no samples")


def _fingerprint(config: EnvConfig, dataset: Dataset | None) -> str:
    """The config fingerprint; with a passed-in dataset, also its class, name and split.

    The dataset itself is not a make kwarg that can be hashed (it is an object), but an EnvState or
    an evaluation result of a custom dataset must not match the registered dataset's, so its
    identity is mixed in.
    """
    fp = config.fingerprint()
    if dataset is None:
        return fp
    kind = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
    blob = json.dumps([fp, kind, str(dataset.name), str(dataset.split)], ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GroundedReasoningEnv(gym.Env[dict, str]):
    __doc__ = __doc__
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 1}

    def __init__(
        self,
        benchmark: str,
        *,
        data_root: Any = None,
        render_mode: str | None = None,
        dataset: Dataset | None = None,
        **kwargs,
    ):
        self.config = build_config(benchmark, **kwargs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self._data_root = data_root
        self.env_id = self.config.spec.env_id
        if dataset is None:
            self._dataset = load_dataset(self.config, data_root, self.env_id)
        else:
            _check_dataset(dataset, self.config)
            self._dataset = dataset
        self.split = self._dataset.split
        self.family = self.config.spec.family
        self.answer_kind = self.family.answer_kind
        self.system_prompt = (
            self.config.system_prompt
            if self.config.system_prompt is not None
            else self.family.system_prompt(
                self.config.mode, self.config.variant, self.config.prompt_newlines
            )
        )
        self.fingerprint = _fingerprint(self.config, dataset)
        self.observation_space = gym.spaces.Dict({"image": VarImage(), "text": AnyText()})
        self.action_space = AnyText(max_length=MAX_ACTION_CHARS)
        self._crops = _LRU(CROP_CACHE_SIZE)
        self._episode: _Episode | None = None

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_crops"]  # caches are rebuilt, not shipped
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._crops = _LRU(CROP_CACHE_SIZE)

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        if options.get("sample_id") is not None:
            index = self._dataset.index_of(str(options["sample_id"]))
        elif options.get("index") is not None:
            index = int(options["index"])
            if not 0 <= index < len(self._dataset):
                raise IndexError(
                    f"{self.env_id}[{self.split}]: index {index} outside [0, {len(self._dataset)})"
                )
        else:
            index = int(self.np_random.integers(0, len(self._dataset)))
        sample = self._dataset[index]
        frame_img, frame = self._frame_of(index, sample)
        ep = _Episode(
            sample=sample,
            index=index,
            frame_img=frame_img,
            frame=frame,
            gt=self._ground_truth(sample, frame),
        )
        self._episode = ep
        ep.last_image = np.array(frame_img)
        if self.config.mode == "multi_turn" and ep.num_images >= self.config.max_images:
            ep.pending_prefix = True
        info = {
            "system_prompt": self.system_prompt,
            "sample_id": sample.sample_id,
            "index": index,
            "split": self.split,
            "mode": self.config.mode,
            "frame": frame.to_info(),
            "max_turns": self.config.max_turns,
            "max_images": self.config.max_images,
            "crop": {
                "offset": self.config.offset,
                "crop_size": self.config.crop_size,
                "crop_size_effective": self.config.crop_size_effective,
                "draw_dot": self.config.draw_dot,
            },
        }
        if ep.pending_prefix:
            info["assistant_prefix"] = protocol.FORCED_PREFIX
        return {"image": ep.last_image.copy(), "text": sample.question}, info

    def _frame_of(self, index: int, sample: Sample) -> tuple[Image.Image, Frame]:
        """The model frame of `sample` (at `index`) through the process-wide `FRAME_CACHE`."""
        cfg = self.config
        settings = (cfg.min_pixels, cfg.max_pixels, cfg.max_side, index)
        source = getattr(self._dataset, "cache_key", None)
        if source is not None:
            key: Hashable = ("key", source, *settings)
            owner = None
        else:  # unknown provenance: share only with envs holding this very dataset object
            key = ("object", id(self._dataset), *settings)
            owner = self._dataset
        return FRAME_CACHE.get_or(key, owner, lambda: self._make_frame(sample))

    def _make_frame(self, sample: Sample) -> tuple[Image.Image, Frame]:
        return model_frame(
            sample.image(),
            min_pixels=self.config.min_pixels,
            max_pixels=self.config.max_pixels,
            max_side=self.config.max_side,
            sample_id=sample.sample_id,
        )

    def _ground_truth(self, sample: Sample, frame: Frame) -> rewards.GroundTruth:
        box = frame.box_to_model(sample.gt_box) if sample.gt_box is not None else None
        return rewards.GroundTruth(answer=sample.answer, kind=sample.answer_kind, box=box)

    # ------------------------------------------------------------------ step
    def step(self, action: str | bytes):
        ep = self._episode
        if ep is None or ep.done:
            raise ResetNeeded(
                "step() called on a finished episode (or before reset); call reset() first"
            )
        text = protocol.canonicalize_action(action)
        info: dict[str, Any] = {}
        if len(text) > MAX_ACTION_CHARS:
            # the declared action-space limit: longer text is cut to it for parsing, scoring and
            # the transcript (never an exception), and the cut is flagged; the cut is
            # canonicalized again, so the step equals one given the cut text itself
            text = protocol.canonicalize_action(text[:MAX_ACTION_CHARS])
            info["action_truncated"] = True
        if ep.pending_prefix and not text.startswith(protocol.FORCED_PREFIX):
            text = protocol.FORCED_PREFIX + text
            info["prefix_prepended"] = True
        ep.actions.append(text)
        turn = len(ep.actions)
        tool_call = protocol.find_tool_call(text)
        info["turn"] = turn
        info["tool_call"] = (
            {"coordinate": list(tool_call.coordinate)}
            if tool_call is not None and tool_call.valid
            else None
        )

        if self.config.mode == "single_turn":
            reason = "answer" if protocol.extract_answer(text) is not None else "no_answer"
            return self._finish(info, reason, truncated=False)

        if ep.pending_prefix:
            if protocol.contains_answer_close(text):
                return self._finish(info, "answer", truncated=False)
            return self._finish(info, "image_budget", truncated=True)
        if protocol.contains_answer_close(text):
            return self._finish(info, "answer", truncated=False)
        if tool_call is None:
            return self._finish(info, "no_action", truncated=False)
        if not tool_call.valid:
            info["tool_call_error"] = tool_call.error
            return self._finish(info, "invalid_tool_call", truncated=False)

        crop_img, crop = self._crop(ep, tool_call.coordinate)
        obs_text = protocol.observation_text(self.config.draw_dot)
        ep.observations.append(obs_text)
        ep.crops.append(crop)
        ep.num_images += 1
        ep.last_image = crop_img
        info["num_images"] = ep.num_images
        info["crop"] = crop.to_info()
        if ep.num_images >= self.config.max_images:
            ep.pending_prefix = True
            info["assistant_prefix"] = protocol.FORCED_PREFIX
        obs = {"image": crop_img.copy(), "text": obs_text}
        if turn >= self.config.max_turns:
            reward, end_info = self._end(ep, "turn_limit")
            info.update(end_info)
            return obs, reward, False, True, info
        return obs, 0.0, False, False, info

    def _crop(self, ep: _Episode, point: tuple[int, int]) -> tuple[np.ndarray, CropInfo]:
        w, h = ep.frame.model_size
        key = (ep.index, min(max(point[0], 0), w - 1), min(max(point[1], 0), h - 1))

        def make() -> tuple[np.ndarray, CropInfo]:
            img, crop = crop_zoom(
                ep.frame_img,
                point,
                offset=self.config.offset,
                crop_size=self.config.crop_size,
                draw_dot=self.config.draw_dot,
            )
            return np.asarray(img), crop

        arr, crop = self._crops.get_or(key, make)
        # the cache is keyed by the clamped point; the clamped flag belongs to this call's raw point
        clamped = crop.point != tuple(point)
        if crop.clamped != clamped:
            crop = CropInfo(point=crop.point, box=crop.box, clamped=clamped)
        return arr, crop

    def _finish(self, info: dict[str, Any], reason: str, *, truncated: bool):
        ep = self._episode
        assert ep is not None
        reward, end_info = self._end(ep, reason)
        info.update(end_info)
        info["num_images"] = ep.num_images
        return {"image": ep.last_image.copy(), "text": ""}, reward, not truncated, truncated, info

    def _end(self, ep: _Episode, reason: str) -> tuple[float, dict[str, Any]]:
        ep.done = True
        transcript = self.transcript()
        cfg = self.config
        if cfg.mode == "single_turn":
            comps = rewards.single_turn_reward(
                transcript,
                ep.gt,
                variant=cfg.variant,
                weights=cfg.reward_weights,
                accuracy_fn=cfg.accuracy_fn,
                answer_extraction=cfg.answer_extraction,
            )
        else:
            comps = rewards.multi_turn_reward(
                transcript,
                ep.gt,
                weights=cfg.reward_weights,
                diversity_bonus=cfg.diversity_bonus,
                diversity_min_dist=cfg.diversity_min_dist,
                accuracy_fn=cfg.accuracy_fn,
                answer_extraction=cfg.answer_extraction,
            )
        info: dict[str, Any] = {
            "end_reason": reason,
            "reward_components": comps,
            "transcript": transcript,
            "ground_truth": self._ground_truth_info(ep),
        }
        if ep.sample.objects:
            info["grounding"] = grounding_precision(
                transcript,
                [(o.id, ep.frame.box_to_model(o.box)) for o in ep.sample.objects],
                ep.sample.target_ids,
            )
        return float(comps["overall"]), info

    def _ground_truth_info(self, ep: _Episode) -> dict[str, Any]:
        gt: dict[str, Any] = {"answer": ep.sample.answer}
        if ep.gt.box is not None:
            gt["box"] = list(ep.gt.box)
        if ep.sample.objects is not None:
            gt["objects"] = [
                {**o.to_dict(), "box": list(ep.frame.box_to_model(o.box))}
                for o in ep.sample.objects
            ]
            gt["target_ids"] = list(ep.sample.target_ids)
        if ep.sample.options is not None:
            gt["options"] = list(ep.sample.options)
        return gt

    # ------------------------------------------------------------------ public helpers
    def transcript(self) -> str:
        """The scored text: actions joined with the observation texts between them (docs/envs.md#step).

        It ends with the last action: an observation made by the last action (turn limit, docs/envs.md#step,
        or an outside `finalize`) is not part of it.
        """
        ep = self._require_episode()
        return join_transcript(ep.actions, ep.observations)

    def finalize(self, reason: str = "overlong") -> tuple[float, dict[str, Any]]:
        """End a running episode from outside (e.g. token budget, docs/envs.md#step), truncated semantics."""
        ep = self._require_episode()
        if ep.done:
            raise ResetNeeded("finalize() on a finished episode")
        reward, info = self._end(ep, reason)
        info.update({"turn": len(ep.actions), "num_images": ep.num_images, "truncated": True})
        return reward, info

    def accuracy_of(self, answer_text: str | None) -> float:
        """Kind accuracy of a bare answer string against the hidden GT (for MCTS; reveals nothing else)."""
        ep = self._require_episode()
        return rewards.answer_accuracy(answer_text, ep.gt, self.config.accuracy_fn)

    def get_state(self) -> EnvState:
        ep = self._require_episode()
        return EnvState(self.env_id, self.fingerprint, self.split, ep.index, tuple(ep.actions))

    def set_state(self, state: EnvState):
        """Re-reset to `state.index` and replay its actions; returns the last `(obs, info)`."""
        if state.config_fingerprint != self.fingerprint:
            raise ValueError(
                f"EnvState from a different config (fingerprint {state.config_fingerprint[:12]}… "
                f"≠ {self.fingerprint[:12]}…, env {state.env_id})"
            )
        if state.split != self.split:
            raise ValueError(f"EnvState split {state.split!r} ≠ env split {self.split!r}")
        obs, info = self.reset(options={"index": state.index})
        for action in state.actions:
            obs, _, _, _, info = self.step(action)
        return obs, info

    # ------------------------------------------------------------------ GT-free views
    # The running episode (sample, ground truth) is private: a policy, a demo or a benchmark sees
    # the ground truth only in the final step's info["ground_truth"] and through accuracy_of.
    @property
    def num_samples(self) -> int:
        """Number of samples in the split (2**31 - 1 for an unlimited procedural split)."""
        return len(self._dataset)

    def sample_id_at(self, index: int) -> str:
        """The sample id at `index` of the split (what `reset(options={"index": index})` runs)."""
        if not 0 <= index < len(self._dataset):
            raise IndexError(
                f"{self.env_id}[{self.split}]: index {index} outside [0, {len(self._dataset)})"
            )
        return self._dataset[index].sample_id

    @property
    def frame_image(self) -> Image.Image:
        """The current episode's model-frame image (a copy; the reset observation as a PIL image).

        Raises `RuntimeError` before the first reset.
        """
        if self._episode is None:
            raise RuntimeError("no episode: call reset() first")
        return self._episode.frame_img.copy()

    def crop_at(self, point: tuple[int, int]) -> tuple[Image.Image, CropInfo]:
        """The crop/zoom the env would return for a model-frame `point` (crop settings of this env,
        dot included), with its `CropInfo`; see docs/geometry.md. Does not change the episode.

        Raises `RuntimeError` before the first reset.
        """
        if self._episode is None:
            raise RuntimeError("no episode: call reset() first")
        x, y = (int(point[0]), int(point[1]))
        arr, crop = self._crop(self._episode, (x, y))
        return Image.fromarray(np.array(arr)), crop

    def _require_episode(self) -> _Episode:
        if self._episode is None:
            raise ResetNeeded("no episode: call reset() first")
        return self._episode

    # ------------------------------------------------------------------ render
    def render(self):
        """rgb_array: the model-frame image with the episode's crop boxes and tool-call points drawn."""
        if self.render_mode != "rgb_array" or self._episode is None:
            return None
        ep = self._episode
        img = ep.frame_img.copy()
        draw = ImageDraw.Draw(img)
        for i, crop in enumerate(ep.crops):
            draw.rectangle(crop.box, outline=(255, 0, 0), width=3)
            x, y = crop.point
            draw.ellipse(
                (x - 6, y - 6, x + 6, y + 6), fill=(255, 0, 0), outline=(255, 255, 255), width=2
            )
            draw.text((crop.box[0] + 4, crop.box[1] + 2), str(i + 1), fill=(255, 0, 0))
        return np.array(img)


@dataclass(eq=False)
class _Episode:
    """Mutable state of the running episode (the public snapshot is `EnvState`)."""

    sample: Sample
    index: int
    frame_img: Image.Image
    frame: Frame
    gt: rewards.GroundTruth
    last_image: np.ndarray | None = None
    num_images: int = 1
    pending_prefix: bool = False
    done: bool = False

    def __post_init__(self) -> None:
        self.actions: list[str] = []
        self.observations: list[str] = []
        self.crops: list[CropInfo] = []

"""MiniWoBEnv: live, multi-step MiniWoB++ episodes in a real headless Chromium (docs/web.md#miniwob).

## Description
A MiniWoB++ task page (the HTML/JS pages shipped by the `miniwob` package) runs in Chromium. Each
turn the model sees the page as a screenshot with set-of-marks ids on its interactive elements and
a text with the task's instruction, its previous actions and the `[id] [role] [text]` listing of
the marked elements; it answers with one web action (`click [id]`, `type [id] [text]`,
`scroll [down|up]`, `go_back`, `stop [answer]`) inside `<answer>`, which the env executes in the
page. The task's own JavaScript decides success.

## Observation
`{"image": uint8 (588, 448, 3), "text": str}`: the task area (160×210 CSS px at device pixel ratio
2.8, so both sides are multiples of 28 and the screenshot is the model frame unchanged) with the
marks drawn, and `<image>OBJECTIVE: …` / `PREVIOUS ACTIONS:` / `INTERACTIVE ELEMENTS:` text. After
the end: the last screenshot and "".

## Action
Any `str`; no string makes `step` raise. Text that is not an action of the grammar, an id that is
not on the page, or an action the page refuses is a no-op flagged in `info` (the turn still counts).

## Reward
0 until the end; then `accuracy · w_acc + format · w_fmt` with accuracy 1 iff the task's raw
reward (`WOB_RAW_REWARD_GLOBAL`) is > 0, and format 1 iff every turn was `<think>…</think>`
`<answer>…</answer>` holding an action of the grammar (grounded variant: with at least one
`(x, y)` point in the think block). Components in `info["reward_components"]`. An episode cut by
a browser failure pays 0 (not the model's doing).

## Episode End
The page ends the task (success or failure, `end_reason="task_done"`), the model says `stop`
(`"stop"`), the browser fails (`"browser_error"`, truncated, flagged in `info["browser_error"]`)
or `max_turns` actions were taken (`"turn_limit"`, truncated). A page that does not load or
start at reset, even on a fresh page, raises `PageLoadError` (a `DataFormatError`: a fault of that
sample, which the evaluation records as an error line); the env stays usable. Wall-clock never ends an episode:
MiniWoB's 10 s timer is switched off.

## Arguments
`task` (a task name, a list of names, or None for `CURATED_TASKS`), `split` (train/test: disjoint
seeds), `size` (samples; None = unlimited), `max_turns` (10), `variant` (grounded/vanilla),
`reward_weights`, `answer_extraction`, `system_prompt`, `executable` (Chromium path; not part of
the fingerprint), `render_mode`.

## Ground truth
Nothing in Python knows the solution: it lives in the page's JavaScript, and only the outcome
(`info["ground_truth"]`: task, seed, raw reward, the page's reason) appears at the end.

## Version History
- v0: initial release.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded
from PIL import Image

from vigorl_env import protocol
from vigorl_env.env import MAX_ACTION_CHARS, EnvState, join_transcript
from vigorl_env.geometry import Frame
from vigorl_env.metrics import grounding_precision
from vigorl_env.rewards import ANSWER_EXTRACTIONS, DEFAULT_WEIGHTS, VARIANTS
from vigorl_env.spaces import AnyText, VarImage
from vigorl_env.tasks.base import load_prompt
from vigorl_env.web import som
from vigorl_env.web.actions import WebAction, parse_turn
from vigorl_env.web.browser import (
    BrowserUnavailableError,
    PageLoadError,
    acquire_host,
    release_host,
)

log = logging.getLogger(__name__)

ENV_ID = "ViGoRL/MiniWoB-v0"
CURATED_TASKS: tuple[str, ...] = (
    "click-test",
    "click-button",
    "click-link",
    "click-option",
    "click-checkboxes",
    "click-tab",
    "click-dialog",
    "choose-list",
    "focus-text",
    "enter-text",
    "enter-password",
    "login-user",
)
"""Tasks whose every step fits the action grammar (clicks and typing on marked elements), one of
each common interaction; the default `task=`."""
SPLITS = ("train", "test")
UNLIMITED = 2**31 - 1
CSS_W, CSS_H = 160, 210  # MiniWoB's task area (#wrap)
DPR = 2.8  # 160 × 2.8 = 448 = 16·28, 210 × 2.8 = 588 = 21·28
WIDTH, HEIGHT = round(CSS_W * DPR), round(CSS_H * DPR)
PAGE_TIMEOUT_MS = 10_000

# (seed) -> starts an episode: no wall-clock limit, MiniWoB's own seeding, and the finished page
# stays on screen (no "START" cover) so the last screenshot shows what the agent did.
_START_JS = """
(seed) => {
  core.EPISODE_MAX_TIME = 2e9;  // setTimeout overflows above 2^31 - 1 ms and fires at once
  Math.seedrandom(seed);
  core.startEpisodeReal();
  core.startEpisode = function () {};
  const d = document.getElementById('reward-display'); if (d) d.style.display = 'none';
  return WOB_TASK_READY;
}
"""
_STATE_JS = """
() => (typeof WOB_DONE_GLOBAL === 'undefined') ? {done: false, raw: 0, reason: null, query: ''} :
  {done: WOB_DONE_GLOBAL, raw: WOB_RAW_REWARD_GLOBAL, reason: WOB_REWARD_REASON,
   query: core.getUtterance()}
"""
_SETTLE_JS = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def miniwob_root() -> Path:
    """The folder of MiniWoB++ task pages inside the installed `miniwob` package."""
    try:
        import miniwob
    except ImportError as e:
        raise BrowserUnavailableError(
            "the MiniWoB env needs the miniwob package; install the web extra: "
            "`pip install 'vigorl[web]'` (playwright and miniwob)"
        ) from e
    return Path(miniwob.__file__).parent / "html" / "miniwob"


def all_tasks() -> tuple[str, ...]:
    """Every MiniWoB++ task name the installed package ships."""
    return tuple(sorted(p.stem for p in miniwob_root().glob("*.html")))


@dataclass(frozen=True)
class MiniWoBConfig:
    """The resolved make kwargs (what the fingerprint hashes)."""

    tasks: tuple[str, ...]
    split: str
    size: int | None
    max_turns: int
    variant: str
    reward_weights: dict[str, float]
    answer_extraction: str
    system_prompt: str | None
    mode: str = "multi_turn"
    accuracy_fn: str = "normalized"
    viewport: tuple[int, int] = (CSS_W, CSS_H)
    device_scale_factor: float = DPR

    def fingerprint(self) -> str:
        blob = json.dumps(
            {"env": ENV_ID, **asdict(self)},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def build_miniwob_config(
    *,
    task: str | list[str] | tuple[str, ...] | None = None,
    split: str | None = None,
    size: int | None = None,
    max_turns: int = 10,
    variant: str = "grounded",
    reward_weights: dict[str, float] | None = None,
    answer_extraction: str = "tags",
    system_prompt: str | None = None,
    mode: str | None = None,
) -> MiniWoBConfig:
    """Validate and resolve the make kwargs (`ValueError` on a bad one)."""
    if task is None:
        tasks = CURATED_TASKS
    elif isinstance(task, str):
        tasks = (task,)
    else:
        tasks = tuple(str(t) for t in task)
    if not tasks:
        raise ValueError("task= names no task")
    known = set(all_tasks())
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(
            f"unknown MiniWoB task(s) {unknown}; the package ships {len(known)} tasks, e.g. {sorted(known)[:8]}"
        )
    split = split or "train"
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if size is not None and int(size) < 1:
        raise ValueError(f"size must be >= 1 or None, got {size}")
    if int(max_turns) < 1:
        raise ValueError(f"max_turns must be >= 1, got {max_turns}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if mode not in (None, "multi_turn"):
        raise ValueError("the MiniWoB env is multi-turn only (one action per turn)")
    if answer_extraction not in ANSWER_EXTRACTIONS:
        raise ValueError(f"answer_extraction must be one of {ANSWER_EXTRACTIONS}")
    weights = dict(DEFAULT_WEIGHTS["multi_turn"] if reward_weights is None else reward_weights)
    if set(weights) != {"accuracy", "format"}:
        raise ValueError(
            f"reward_weights needs exactly the keys accuracy and format, got {sorted(weights)}"
        )
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ValueError("system_prompt must be a string")
    return MiniWoBConfig(
        tasks=tasks,
        split=split,
        size=None if size is None else int(size),
        max_turns=int(max_turns),
        variant=variant,
        reward_weights={k: float(v) for k, v in weights.items()},
        answer_extraction=answer_extraction,
        system_prompt=system_prompt,
    )


@dataclass
class _Episode:
    index: int
    task: str
    seed: str
    sample_id: str
    url: str
    utterance: str = ""
    image: np.ndarray | None = None
    marks: list[som.Mark] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    observations: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    well_formed: list[bool] = field(default_factory=list)
    points: int = 0
    on_object: int = 0
    done: bool = False


class MiniWoBEnv(gym.Env[dict, str]):
    __doc__ = __doc__
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 1}
    answer_kind = "web_action"

    def __init__(self, *, render_mode: str | None = None, executable: str | None = None, **kwargs):
        self.config = build_miniwob_config(**kwargs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.env_id = ENV_ID
        self.split = self.config.split
        self.tasks = self.config.tasks
        self.fingerprint = self.config.fingerprint()
        self.system_prompt = self.config.system_prompt or load_prompt(
            "web_action_vanilla" if self.config.variant == "vanilla" else "web_action_grounded"
        )
        self.observation_space = gym.spaces.Dict({"image": VarImage(), "text": AnyText()})
        self.action_space = AnyText(max_length=MAX_ACTION_CHARS)
        self._executable = executable
        self._root = miniwob_root()
        self._host: Any = None
        self._page: Any = None
        self._ctx: Any = None
        self._ctx_launch = -1
        self._css_marks: dict[int, dict[str, Any]] = {}
        self._state: dict[str, Any] = {}
        self._episode: _Episode | None = None

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_host=None, _page=None, _ctx=None, _ctx_launch=-1, _episode=None)
        return state

    # ------------------------------------------------------------------ samples
    @property
    def num_samples(self) -> int:
        """Samples in the split: `size`, or 2**31 - 1 (unlimited)."""
        return self.config.size if self.config.size is not None else UNLIMITED

    def _sample(self, index: int) -> tuple[str, str, str]:
        """(task, MiniWoB seed, sample id) of sample `index`: tasks in turn, then the next seed."""
        if not 0 <= index < self.num_samples:
            raise IndexError(
                f"{ENV_ID}[{self.split}]: index {index} outside [0, {self.num_samples})"
            )
        task = self.tasks[index % len(self.tasks)]
        k = index // len(self.tasks)
        return task, f"{self.split}-{k}", f"{task}/{self.split}/{k}"

    def sample_id_at(self, index: int) -> str:
        """The sample id at `index` (`<task>/<split>/<k>`)."""
        return self._sample(index)[2]

    def index_of(self, sample_id: str) -> int:
        m = re.fullmatch(r"([a-z0-9-]+)/(train|test)/(\d+)", str(sample_id))
        if m is None or m.group(1) not in self.tasks or m.group(2) != self.split:
            raise KeyError(f"{ENV_ID}[{self.split}]: no sample {sample_id!r}")
        index = int(m.group(3)) * len(self.tasks) + self.tasks.index(m.group(1))
        if index >= self.num_samples:
            raise KeyError(f"{ENV_ID}[{self.split}]: no sample {sample_id!r}")
        return index

    # ------------------------------------------------------------------ browser plumbing
    def _call(self, fn, *args):
        if self._host is None:
            self._host = acquire_host(self._executable)
        return self._host.call(fn, *args)

    def _page_of(self, browser: Any) -> Any:
        """The env's page in its own context (runs on the browser thread); new after a relaunch."""
        host = self._host
        if (
            self._page is not None
            and self._ctx_launch == host.launches
            and not self._page.is_closed()
        ):
            return self._page
        if self._ctx is not None:
            try:
                self._ctx.close()
            except Exception as e:  # the old browser is gone
                log.debug("closing an old context: %s", e)
        self._ctx = browser.new_context(
            viewport={"width": 400, "height": 300}, device_scale_factor=DPR
        )
        self._ctx.set_default_timeout(PAGE_TIMEOUT_MS)
        self._page = self._ctx.new_page()
        self._ctx_launch = host.launches
        return self._page

    def _observe(self, page: Any) -> dict[str, Any]:
        """Marks, screenshot and task state (browser thread)."""
        raw = page.evaluate(som.MARK_JS, [[0, 0, CSS_W, CSS_H], som.MAX_TEXT])
        png = page.screenshot(
            clip={"x": 0, "y": 0, "width": CSS_W, "height": CSS_H},
            animations="disabled",
            caret="hide",
        )
        return {"marks": raw, "png": png, "state": page.evaluate(_STATE_JS)}

    def _start(self, browser: Any, url: str, seed: str) -> dict[str, Any]:
        page = self._page_of(browser)
        page.goto(url)
        if page.evaluate(_START_JS, seed) is not True:  # a task that builds itself asynchronously
            page.wait_for_function("() => WOB_TASK_READY === true", timeout=PAGE_TIMEOUT_MS)
            page.evaluate(_SETTLE_JS)
        return self._observe(page)

    def _act(
        self, browser: Any, action: WebAction, target: dict[str, Any] | None, url: str
    ) -> dict[str, Any]:
        """Execute `action` in the page (browser thread); returns the new observation and flags."""
        page = self._page_of(browser)
        flags: dict[str, Any] = {}
        try:
            if action.verb in ("click", "type") and target is not None:
                x1, y1, x2, y2 = target["css_box"]
                cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                if action.verb == "click":
                    page.mouse.click(cx, cy)
                else:
                    loc = page.locator(f'[{som.SOM_ATTR}="{action.element}"]')
                    if target["tag"] in ("input", "textarea") and target["role"] == "textbox":
                        loc.fill(action.content or "", timeout=2000)
                    elif target["tag"] == "select":  # typing an option's text picks it
                        loc.select_option(label=action.content or "", timeout=2000)
                    else:
                        page.mouse.click(cx, cy)
                        page.keyboard.insert_text(action.content or "")
                    if action.press_enter:
                        page.keyboard.press("Enter")
            elif action.verb == "scroll":
                page.mouse.move(CSS_W / 2, CSS_H / 2)
                dy = CSS_H * 0.8 * (1 if action.direction == "down" else -1)
                page.mouse.wheel(0, dy)
            elif action.verb == "go_back":
                if page.url != url:
                    page.go_back()
                else:
                    flags["nothing_to_go_back"] = True
        except Exception as e:  # the page refused (a field that cannot be filled, …): a no-op
            if type(e).__name__ == "TargetClosedError":
                raise
            flags["action_failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        page.evaluate(_SETTLE_JS)
        return {**self._observe(page), "flags": flags}

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        if options.get("sample_id") is not None:
            index = self.index_of(str(options["sample_id"]))
        elif options.get("index") is not None:
            index = int(options["index"])
        else:
            index = int(self.np_random.integers(0, self.num_samples))
        task, task_seed, sample_id = self._sample(index)
        url = (self._root / f"{task}.html").as_uri()
        ep = _Episode(index=index, task=task, seed=task_seed, sample_id=sample_id, url=url)
        self._episode = None
        try:
            out = self._call(self._start, url, task_seed)
        except (BrowserUnavailableError, ResetNeeded):
            raise
        except Exception as e:  # a dead browser or a page that did not load: once more, fresh
            log.warning(
                "%s: reset failed (%s: %s); retrying with a new page", ENV_ID, type(e).__name__, e
            )
            self._page = None  # a new context and page; a dead browser is restarted on the call
            try:
                out = self._call(self._start, url, task_seed)
            except BrowserUnavailableError:
                raise
            except Exception as e2:
                first = str(e2).splitlines()[0][:300] if str(e2) else ""
                raise PageLoadError(
                    f"{ENV_ID}: {sample_id} ({url}) did not load: {type(e2).__name__}: {first}"
                ) from e2
        self._episode = ep
        self._update(ep, out)
        info = {
            "system_prompt": self.system_prompt,
            "sample_id": sample_id,
            "index": index,
            "split": self.split,
            "mode": self.config.mode,
            "task": task,
            "frame": Frame((WIDTH, HEIGHT), (WIDTH, HEIGHT)).to_info(),
            "max_turns": self.config.max_turns,
            "max_images": self.config.max_turns,
            "marks": [m.to_info() for m in ep.marks],
        }
        return {"image": ep.image.copy(), "text": self._text(ep)}, info

    def _update(self, ep: _Episode, out: dict[str, Any]) -> None:
        img = Image.open(io.BytesIO(out["png"])).convert("RGB")
        if img.size != (WIDTH, HEIGHT):  # never expected; keep the frame's size whatever happens
            img = img.resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        ep.marks = som.marks_from_js(out["marks"], DPR, (WIDTH, HEIGHT))
        self._css_marks = {
            int(m["id"]): {
                "css_box": m["box"],
                "tag": m.get("tag", ""),
                "role": m["role"],
                "text": m["text"],
            }
            for m in out["marks"]
        }
        ep.image = np.asarray(som.draw_marks(img, ep.marks, DPR))
        state = out["state"]
        ep.utterance = ep.utterance or str(state.get("query") or "")
        self._state = state

    def _text(self, ep: _Episode) -> str:
        prev = "\n".join(ep.previous) if ep.previous else "None"
        return (
            f"{protocol.IMAGE_MARKER}OBJECTIVE: {ep.utterance}\nPREVIOUS ACTIONS:\n{prev}\n"
            f"INTERACTIVE ELEMENTS:\n{som.listing(ep.marks)}"
        )

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
            text = protocol.canonicalize_action(text[:MAX_ACTION_CHARS])
            info["action_truncated"] = True
        ep.actions.append(text)
        turn = len(ep.actions)
        parsed = parse_turn(text, self.config.answer_extraction)
        # images the model has seen once this step's observation is shown: reset + one per turn
        info.update(turn=turn, num_images=turn + 1, tool_call=None, web_action=parsed.to_info())
        # grounding of this turn's think points against the marks the model was shown
        g = grounding_precision(text, [(str(m.id), m.box) for m in ep.marks])
        ep.points += int(g["points"] or 0)
        ep.on_object += round((g["on_object"] or 0.0) * (g["points"] or 0))
        well = parsed.verb is not None and protocol.matches_single_turn_format(text)
        if self.config.variant == "grounded":
            well = well and bool(protocol.think_points(text))
        ep.well_formed.append(well)

        target = None
        if parsed.error is not None:
            info["action_error"] = parsed.error
        elif parsed.element is not None:
            target = self._css_marks.get(parsed.element)
            if target is None:
                info["unknown_id"] = parsed.element
        ep.previous.append(self._describe(parsed, target))

        if parsed.verb == "stop":
            return self._finish(info, "stop", truncated=False)
        run = parsed.verb in ("scroll", "go_back") or target is not None
        if run:
            try:
                out = self._call(self._act, parsed, target, ep.url)
            except BrowserUnavailableError:
                raise
            except Exception as e:
                info["browser_error"] = (
                    f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
                )
                self._page = None
                return self._finish(info, "browser_error", truncated=True)
            info.update(out.pop("flags"))
            self._update(ep, out)
        if self._state.get("done"):
            return self._finish(info, "task_done", truncated=False)
        obs_text = self._text(ep)
        ep.observations.append(obs_text)
        info["marks"] = [m.to_info() for m in ep.marks]
        if turn >= self.config.max_turns:
            return self._finish(info, "turn_limit", truncated=True, obs_text=obs_text)
        return {"image": ep.image.copy(), "text": obs_text}, 0.0, False, False, info

    @staticmethod
    def _describe(parsed: WebAction, target: dict[str, Any] | None) -> str:
        """The action as PREVIOUS ACTIONS lists it: elements by their text, not their id."""
        if parsed.verb is None:
            return "(not an action)"
        name = None
        if parsed.element is not None:
            name = (target["text"] or target["role"]) if target else f"unknown id {parsed.element}"
        if parsed.verb == "click":
            return f"click [{name}]"
        if parsed.verb == "type":
            content = (parsed.content or "")[:80]
            return f"type [{name}] [{content}]"
        if parsed.verb == "scroll":
            return f"scroll [{parsed.direction}]"
        if parsed.verb == "go_back":
            return "go_back"
        return f"stop [{(parsed.content or '')[:80]}]"

    def _finish(
        self, info: dict[str, Any], reason: str, *, truncated: bool, obs_text: str | None = None
    ):
        ep = self._episode
        assert ep is not None
        reward, end = self._end(ep, reason)
        info.update(end)
        info["num_images"] = len(ep.actions)  # no observation follows the last action
        image = ep.image.copy()
        return {"image": image, "text": ""}, reward, not truncated, truncated, info

    def _end(self, ep: _Episode, reason: str) -> tuple[float, dict[str, Any]]:
        ep.done = True
        state = (
            self._state
            if reason != "browser_error"
            else {"done": False, "raw": 0.0, "reason": None}
        )
        raw = float(state.get("raw") or 0.0) if state.get("done") else 0.0
        accuracy = 1.0 if raw > 0 else 0.0
        fmt = 1.0 if ep.well_formed and all(ep.well_formed) else 0.0
        w = self.config.reward_weights
        overall = w["accuracy"] * accuracy + w["format"] * fmt
        if reason == "browser_error":  # not the model's doing: no reward either way
            overall = 0.0
        components = {
            "overall": overall,
            "accuracy": accuracy,
            "format": fmt,
            "raw_reward": raw,
            "steps": len(ep.actions),
        }
        info = {
            "end_reason": reason,
            "reward_components": components,
            "transcript": self.transcript(),
            "ground_truth": {
                "task": ep.task,
                "seed": ep.seed,
                "utterance": ep.utterance,
                "task_done": bool(state.get("done")),
                "raw_reward": raw,
                "reason": state.get("reason"),
            },
            "grounding": {
                "points": ep.points,
                "on_object": ep.on_object / ep.points if ep.points else None,
                "on_target": None,
            },
        }
        return float(overall), info

    # ------------------------------------------------------------------ public helpers
    def transcript(self) -> str:
        """Actions joined with the observation texts between them (as every env's transcript)."""
        ep = self._require_episode()
        return join_transcript(ep.actions, ep.observations)

    def finalize(self, reason: str = "overlong") -> tuple[float, dict[str, Any]]:
        """End a running episode from outside (e.g. a token budget), truncated semantics."""
        ep = self._require_episode()
        if ep.done:
            raise ResetNeeded("finalize() on a finished episode")
        reward, info = self._end(ep, reason)
        info.update({"turn": len(ep.actions), "num_images": len(ep.actions) + 1, "truncated": True})
        return reward, info

    def get_state(self) -> EnvState:
        ep = self._require_episode()
        return EnvState(self.env_id, self.fingerprint, self.split, ep.index, tuple(ep.actions))

    def set_state(self, state: EnvState):
        """Re-reset to `state.index` and replay its actions in the page; returns the last `(obs, info)`."""
        if state.config_fingerprint != self.fingerprint:
            raise ValueError("EnvState from a different config (fingerprint mismatch)")
        if state.split != self.split:
            raise ValueError(f"EnvState split {state.split!r} ≠ env split {self.split!r}")
        obs, info = self.reset(options={"index": state.index})
        for action in state.actions:
            obs, _, _, _, info = self.step(action)
        return obs, info

    def episode_frames(
        self, sample_id: str, actions: list[str]
    ) -> tuple[list[np.ndarray], dict[str, Any]]:
        """Rebuild a recorded episode's pictures: reset to `sample_id`, replay `actions` in the
        page, and return every screenshot (with its marks; the reset's first) and the last info.

        A live trajectory keeps only its sample id and actions (an evaluation record's
        `trajectory.turns`, prefix + text each); the page is deterministic given the seed, so this
        is all a picture of it needs. Replaces the env's running episode."""
        obs, info = self.reset(options={"sample_id": sample_id})
        frames = [obs["image"]]
        for action in actions:
            obs, _, term, trunc, info = self.step(action)
            frames.append(obs["image"])
            if term or trunc:
                break
        return frames, info

    @property
    def marks(self) -> list[dict[str, Any]]:
        """The marked elements of the current screenshot (id, role, text, box): what is drawn."""
        ep = self._require_episode()
        return [m.to_info() for m in ep.marks]

    @property
    def frame_image(self) -> Image.Image:
        """The current screenshot with its marks (a copy). Raises `RuntimeError` before reset."""
        if self._episode is None or self._episode.image is None:
            raise RuntimeError("no episode: call reset() first")
        return Image.fromarray(self._episode.image.copy())

    def _require_episode(self) -> _Episode:
        if self._episode is None:
            raise ResetNeeded("no episode: call reset() first")
        return self._episode

    def render(self):
        """rgb_array: the current screenshot with its marks."""
        if self.render_mode != "rgb_array" or self._episode is None or self._episode.image is None:
            return None
        return self._episode.image.copy()

    def close(self):
        """Close this env's page and context; the shared browser closes with its last env."""
        if self._host is not None:
            host, self._host = self._host, None
            ctx, self._ctx, self._page = self._ctx, None, None
            if ctx is not None:
                try:
                    host.call(lambda _b: ctx.close(), timeout=10)
                except Exception as e:
                    log.debug("closing the context: %s", e)
            release_host(host)
        super().close()

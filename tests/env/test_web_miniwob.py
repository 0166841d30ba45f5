"""ViGoRL/MiniWoB-v0 in a real headless Chromium (docs/web.md#miniwob).

One env (so one browser) serves the whole module; each test resets it to the episode it needs.
Without Playwright or a Chromium executable the tests skip and say exactly what is missing.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import vigorl_env
from vigorl_env.web.browser import BrowserUnavailableError, browser_unavailable_reason

REASON = browser_unavailable_reason()
try:
    import miniwob  # noqa: F401
except ImportError:
    REASON = (
        REASON or "the miniwob package is missing; install the web extra: pip install 'vigorl[web]'"
    )
needs_browser = pytest.mark.skipif(REASON is not None, reason=f"no browser: {REASON}")

ENV_ID = "ViGoRL/MiniWoB-v0"


def act(action: str, think: str = "I act on the page (10, 20).") -> str:
    return f"<think>\n{think}\n</think>\n<answer> {action} </answer>"


@pytest.fixture(scope="module")
def env():
    e = gym.make(ENV_ID, split="test")
    yield e
    e.close()


def _oracle_episode(env, sample_id: str):
    from vigorl_agents.web_oracle import decide, parse_observation

    obs, info = env.reset(options={"sample_id": sample_id})
    while True:
        reason, action = decide(*parse_observation(obs["text"]))
        obs, reward, term, trunc, info = env.step(act(action, reason))
        if term or trunc:
            return reward, info


def _find(text: str, role: str, label: str) -> int:
    for line in text.split("INTERACTIVE ELEMENTS:\n", 1)[1].splitlines():
        if line.startswith("[") and f"] [{role}] [{label}]" in line:
            return int(line[1 : line.index("]")])
    raise AssertionError(f"no {role} {label!r} in\n{text}")


def test_ids_are_registered_apart_from_the_data_envs():
    assert ENV_ID in gym.registry and "ViGoRL/RenderedGrounding-v0" in gym.registry
    assert ENV_ID in vigorl_env.registration.WEB_IDS
    assert ENV_ID not in vigorl_env.ENV_IDS  # the data suite needs no browser
    from vigorl_env.web.miniwob import MiniWoBEnv

    fresh = gym.make(ENV_ID).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        _ = fresh.frame_image  # GT-free views need an episode; making the env starts no browser
    assert fresh._host is None
    assert {
        ENV_ID: MiniWoBEnv.answer_kind,
        "ViGoRL/RenderedGrounding-v0": "point_in_box",
    } == vigorl_env.registration.WEB_ANSWER_KINDS


@needs_browser
def test_reset_observation_lists_the_marked_elements(env):
    obs, info = env.reset(options={"sample_id": "login-user/test/0"})
    assert obs["image"].shape == (588, 448, 3) and obs["image"].dtype == np.uint8
    assert env.observation_space.contains(obs)
    text = obs["text"]
    assert text.startswith("<image>OBJECTIVE: Enter the username ") and text.count("<image>") == 1
    assert "PREVIOUS ACTIONS:\nNone\nINTERACTIVE ELEMENTS:\n" in text
    # the two fields get their captions from the DOM, the button its text
    assert _find(text, "textbox", "Username") == 1
    assert _find(text, "textbox", "Password") == 2
    assert _find(text, "button", "Login") == 3
    assert [m["id"] for m in info["marks"]] == [1, 2, 3]
    for key in ("system_prompt", "sample_id", "index", "split", "mode", "frame", "max_turns"):
        assert key in info
    assert "ground_truth" not in info and info["frame"]["scale"] == [1.0, 1.0]
    assert info["sample_id"] == "login-user/test/0" and info["task"] == "login-user"


@pytest.mark.parametrize(
    "task",
    [
        "click-button",
        "click-checkboxes",
        "click-option",
        "click-tab",
        "choose-list",
        "login-user",
        "enter-password",
    ],
)
@needs_browser
def test_the_oracle_completes_each_task_type(env, task):
    """Clicks, checkbox states, tabs and typed text: the page's own reward says success."""
    for k in range(2):
        reward, info = _oracle_episode(env, f"{task}/test/{k}")
        assert info["end_reason"] == "task_done", info["transcript"]
        assert info["ground_truth"]["raw_reward"] > 0
        assert info["reward_components"]["accuracy"] == 1.0
        # the oracle names no point: no format credit under the grounded variant
        assert info["reward_components"]["format"] == 0.0
        assert reward == pytest.approx(0.6)


@needs_browser
def test_a_wrong_click_fails_the_task(env):
    obs, _ = env.reset(options={"sample_id": "click-button/test/0"})
    want = obs["text"].split('"')[1]
    wrong = next(
        line for line in obs["text"].splitlines() if "[button]" in line and f"[{want}]" not in line
    )
    wrong_id = int(wrong[1 : wrong.index("]")])
    _, reward, term, trunc, info = env.step(act(f"click [{wrong_id}]"))
    assert term and not trunc and info["end_reason"] == "task_done"
    assert info["ground_truth"]["raw_reward"] < 0
    assert info["reward_components"]["accuracy"] == 0.0
    # the well-formed, grounded action still earns the format part
    assert info["reward_components"]["format"] == 1.0 and reward == pytest.approx(0.4)


@needs_browser
def test_typing_changes_the_page_and_the_listing(env):
    obs, _ = env.reset(options={"sample_id": "enter-text/test/1"})
    box = _find(obs["text"], "textbox", "")
    obs, reward, term, trunc, info = env.step(
        act(f"type [{box}] [Hello World] [press_enter_after=0]")
    )
    assert not (term or trunc) and reward == 0.0
    assert not {"ground_truth", "reward_components", "end_reason"} & set(info)  # only at the end
    assert info["turn"] == 1 and info["num_images"] == 2  # the reset screenshot and this one
    assert f'[{box}] [textbox] [value: "Hello World"]' in obs["text"]
    assert "PREVIOUS ACTIONS:\ntype [textbox] [Hello World]" in obs["text"]
    submit = _find(obs["text"], "button", "Submit")
    _, _, term, _, info = env.step(act(f"click [{submit}]"))
    assert term and info["reward_components"]["accuracy"] == 0.0  # the wrong text was entered
    assert info["num_images"] == 2  # no observation follows the last action


@needs_browser
def test_typing_into_a_list_picks_the_option(env):
    obs, _ = env.reset(options={"sample_id": "choose-list/test/1"})
    want = obs["text"].split("OBJECTIVE: Select ", 1)[1].split(" from the list")[0]
    lst = next(
        int(line[1 : line.index("]")])
        for line in obs["text"].splitlines()
        if "] [combobox] [" in line
    )
    assert f'selected: "{want}"' not in obs["text"]  # the list starts elsewhere
    obs, _, _, _, info = env.step(act(f"type [{lst}] [No such option]"))
    assert "action_failed" in info  # the page refused: a flagged no-op
    obs, _, term, _, info = env.step(act(f"type [{lst}] [{want}] [press_enter_after=0]"))
    assert not term and "action_failed" not in info
    assert f'[{lst}] [combobox] [selected: "{want}"]' in obs["text"]


@needs_browser
def test_reset_gives_a_new_episode_and_the_same_seed_the_same_one(env):
    a, info_a = env.reset(options={"sample_id": "click-button/test/0"})
    b, _ = env.reset(options={"sample_id": "click-button/test/1"})
    assert a["text"] != b["text"] and not np.array_equal(a["image"], b["image"])
    a2, info_a2 = env.reset(options={"sample_id": "click-button/test/0"})
    assert a2["text"] == a["text"] and np.array_equal(a2["image"], a["image"])
    assert info_a2 == info_a
    # a step is undone by the reset: the page starts afresh
    env.step(act("click [1]"))
    a3, _ = env.reset(options={"sample_id": "click-button/test/0"})
    assert np.array_equal(a3["image"], a["image"])
    # splits use disjoint seeds
    train = gym.make(ENV_ID, split="train", task="click-button")
    try:
        t, _ = train.reset(options={"index": 0})
        assert not np.array_equal(t["image"], a["image"])
    finally:
        train.close()


@needs_browser
def test_hostile_actions_never_crash(env):
    obs, _ = env.reset(options={"sample_id": "enter-text/test/2"})
    # an id that is not on the page: a flagged no-op
    _, _, term, trunc, info = env.step(act("click [999]"))
    assert info["unknown_id"] == 999 and not (term or trunc)
    # not an action at all
    _, _, term, trunc, info = env.step("no answer here")
    assert info["action_error"] == "no <answer> block" and not (term or trunc)
    # huge text into a real field
    box = _find(obs["text"], "textbox", "")
    obs, _, term, trunc, info = env.step(act(f"type [{box}] [{'x' * 50_000}]"))
    assert not (term or trunc) and "action_failed" not in info
    assert 'value: "xxxx' in obs["text"]
    # an action naming a real id after a bracket soup still parses as one action
    _, _, term, trunc, info = env.step(act(f"type [{box}] [a] [b]"))
    assert info["web_action"]["content"] == "a] [b" and not (term or trunc)


@needs_browser
def test_a_thousand_actions_never_crash():
    """Random and hostile text for 1,000 turns: only flags, then the turn limit."""
    e = gym.make(ENV_ID, task="click-checkboxes", max_turns=1000)
    try:
        e.reset(seed=7)
        e.unwrapped.action_space.seed(7)
        rng = np.random.default_rng(0)
        hostile = [
            act("click [0]"),
            act("click [-3]"),
            act("type [1] []"),
            act("scroll [sideways]"),
            act("go_back"),
            act("scroll [up]"),
            "<answer>click [1]",
            "\x00\ud800" * 10,
            act("type [1] [a] [b] [c]"),
        ]
        end = None
        for i in range(1000):
            if i % 50 == 49:
                action = hostile[int(rng.integers(len(hostile)))]
            else:
                action = e.action_space.sample()
            obs, reward, term, trunc, info = e.step(action)
            assert e.observation_space.contains(obs)
            if term or trunc:
                end = (i, info["end_reason"])
                break
        assert end is not None
        assert end == (999, "turn_limit") or end[1] == "task_done"
    finally:
        e.close()


@needs_browser
def test_stop_ends_the_episode_unsolved(env):
    env.reset(options={"sample_id": "click-test/test/0"})
    _, reward, term, trunc, info = env.step(act("stop []"))
    assert term and info["end_reason"] == "stop"
    assert (
        info["reward_components"]["accuracy"] == 0.0 and info["ground_truth"]["task_done"] is False
    )


@needs_browser
def test_turn_limit_truncates_and_grounding_counts_points(env):
    e = gym.make(ENV_ID, task="click-checkboxes", max_turns=2)
    try:
        obs, info = e.reset(options={"index": 0})
        box = info["marks"][0]["box"]
        inside = (round((box[0] + box[2]) / 2), round((box[1] + box[3]) / 2))
        e.step(act("scroll [down]", f"The first box {inside} and far away (5, 5)."))
        _, _, term, trunc, info = e.step(act("scroll [up]", f"Again {inside}."))
        assert trunc and not term and info["end_reason"] == "turn_limit"
        assert info["grounding"]["points"] == 3
        assert info["grounding"]["on_object"] == pytest.approx(2 / 3)
    finally:
        e.close()


@needs_browser
def test_state_replays_the_episode(env):
    obs, _ = env.reset(options={"sample_id": "click-checkboxes/test/3"})
    env.step(act("click [1]"))
    obs, *_ = env.step(act("click [999]"))
    state = env.unwrapped.get_state()
    assert state.actions[0] == act("click [1]")
    other = gym.make(ENV_ID, split="test")
    try:
        obs2, _ = other.unwrapped.set_state(state)
        assert np.array_equal(obs2["image"], obs["image"]) and obs2["text"] == obs["text"]
    finally:
        other.close()
    with pytest.raises(ValueError, match="fingerprint"):
        gym.make(ENV_ID, split="test", max_turns=3).unwrapped.set_state(state)


@needs_browser
def test_a_dead_browser_ends_the_episode_with_a_flag_and_the_next_reset_works(env):
    uw = env.unwrapped
    env.reset(options={"sample_id": "click-button/test/0"})
    launches = uw._host.launches
    uw._host.kill()
    _, reward, term, trunc, info = env.step(act("click [1]"))
    assert trunc and info["end_reason"] == "browser_error" and "browser_error" in info
    assert reward == 0.0 and info["reward_components"]["accuracy"] == 0.0
    reward, info = _oracle_episode(env, "click-button/test/0")
    assert info["reward_components"]["accuracy"] == 1.0
    assert uw._host.launches == launches + 1


@needs_browser
def test_a_page_that_does_not_load_is_a_fault_of_that_sample(env, tmp_path):
    """Reset of a broken page raises PageLoadError (a DataFormatError, so the rollout loop and the
    evaluation record the sample as an error line); the env stays usable."""
    from vigorl_env.web.browser import PageLoadError

    uw = env.unwrapped
    root = uw._root
    (tmp_path / "click-button.html").write_text("<html><body>no MiniWoB core here</body></html>")
    uw._root = tmp_path  # fault injection: the task page without MiniWoB's core
    try:
        with pytest.raises(PageLoadError, match="click-button/test/0") as err:
            env.reset(options={"sample_id": "click-button/test/0"})
        assert isinstance(err.value, vigorl_env.DataFormatError)
    finally:
        uw._root = root
    reward, info = _oracle_episode(env, "click-button/test/0")
    assert info["reward_components"]["accuracy"] == 1.0


@needs_browser
def test_check_env_passes(env):
    e = gym.make(ENV_ID, task="click-checkboxes", split="test")
    try:
        check_env(e.unwrapped, skip_render_check=True)
    finally:
        e.close()


def test_a_missing_browser_names_the_install_command(monkeypatch):
    from vigorl_env.web import browser

    monkeypatch.setenv(browser.CHROMIUM_ENV, "/nonexistent/chromium")
    with pytest.raises(BrowserUnavailableError, match="apt-get install -y chromium"):
        browser.find_chromium()
    monkeypatch.delenv(browser.CHROMIUM_ENV)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrowserUnavailableError, match="no Chromium found on PATH"):
        browser.find_chromium()
    if REASON is None:  # a Chromium that does not start: its path and the install command
        host = browser.BrowserHost(executable="/bin/false")
        try:
            with pytest.raises(BrowserUnavailableError, match=r"/bin/false did not start.*apt-get"):
                host.call(lambda b: b.version)
        finally:
            host.close()
    monkeypatch.setitem(sys.modules, "playwright", None)  # as if the package were not installed
    with pytest.raises(BrowserUnavailableError, match=r"pip install 'vigorl\[web\]'"):
        browser.require_playwright()
    assert "apt-get install" in browser.browser_unavailable_reason() or "vigorl[web]" in (
        browser.browser_unavailable_reason()
    )


@needs_browser
def test_evaluation_runner_with_the_oracle_and_a_chance_baseline(tmp_path):
    """The existing evaluation runner drives the env end to end: the oracle solves every episode,
    the random-action baseline solves (almost) none."""
    from vigorl_agents.baselines import FullViewGuess
    from vigorl_agents.eval import EvalConfig, evaluate
    from vigorl_agents.web_oracle import MiniWoBOracle

    tasks = ["click-option", "enter-text"]
    cfg = EvalConfig(
        env_ids=(ENV_ID,), split="test", limit=4, env_kwargs={"task": tasks}, max_in_flight=2
    )
    summary = asyncio.run(evaluate(MiniWoBOracle(), cfg, tmp_path / "oracle", policy_name="oracle"))
    (row,) = summary["rows"]
    assert row["n"] == 4 and row["accuracy"]["mean"] == pytest.approx(100.0)
    records = [json.loads(line) for line in (tmp_path / "oracle" / "samples.jsonl").open()]
    assert sorted(r["sample_id"] for r in records) == [
        "click-option/test/0", "click-option/test/1", "enter-text/test/0", "enter-text/test/1",
    ]  # fmt: skip
    # a record holds what its pictures need: replaying its actions rebuilds the episode
    rec = next(r for r in records if r["sample_id"] == "enter-text/test/1")
    actions = [t["prefix"] + t["text"] for t in rec["trajectory"]["turns"]]
    replay = gym.make(ENV_ID, split="test", task=tasks)
    try:
        frames, info = replay.unwrapped.episode_frames(rec["sample_id"], actions)
    finally:
        replay.close()
    assert len(frames) == len(actions) + 1 == rec["turns"] + 1
    assert info["end_reason"] == rec["end_reason"] == "task_done"
    assert info["transcript"] == rec["transcript"]
    assert not np.array_equal(frames[0], frames[-1])  # the page changed under the actions
    # with the vanilla variant (no point needed) the oracle's reward is 1 as well
    vanilla = EvalConfig(
        env_ids=(ENV_ID,),
        split="test",
        limit=2,
        env_kwargs={"task": tasks, "variant": "vanilla"},
        max_in_flight=2,
    )
    summary = asyncio.run(evaluate(MiniWoBOracle(), vanilla, tmp_path / "v", policy_name="oracle"))
    assert summary["rows"][0]["reward"]["mean"] == pytest.approx(100.0)
    guess = FullViewGuess(answer_kind="web_action")
    summary = asyncio.run(evaluate(guess, cfg, tmp_path / "guess", policy_name="guess"))
    (row,) = summary["rows"]
    assert row["n"] == 4 and row["accuracy"]["mean"] <= 50.0


def test_web_modules_import_no_browser_and_no_heavy_module():
    """Importing the web envs (and making the grounding env) starts nothing: Playwright is
    imported at the first browser call only, and vigorl_env stays below the agents' line."""
    code = (
        "import sys, gymnasium as gym, vigorl_env\n"
        "import vigorl_env.web.miniwob, vigorl_env.web.grounding\n"
        "gym.make('ViGoRL/RenderedGrounding-v0', size=2)\n"
        "heavy = {'playwright', 'torch', 'transformers', 'vigorl_agents'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_command_lines_take_the_web_make_kwargs():
    """`--env-kwargs task=... cache_dir=...` parses (the evaluation and benchmark CLIs), and every
    such kwarg is one the browser envs accept."""
    import inspect

    from vigorl_agents.cli import parse_env_kwargs
    from vigorl_env.web.grounding import RenderedGroundingEnv
    from vigorl_env.web.miniwob import MiniWoBEnv, build_miniwob_config

    kw = parse_env_kwargs(['task=["click-button", "enter-text"]', "cache_dir=/tmp/x"])
    assert kw == {"task": ["click-button", "enter-text"], "cache_dir": "/tmp/x"}
    accepted = (
        set(inspect.signature(MiniWoBEnv).parameters)
        | set(inspect.signature(build_miniwob_config).parameters)
        | set(inspect.signature(RenderedGroundingEnv).parameters)
    )
    assert accepted >= vigorl_env.registration.WEB_MAKE_KWARGS
    with pytest.raises(ValueError, match="unknown MiniWoB task"):
        build_miniwob_config(task="click-buton")


@needs_browser
def test_async_vector_env_runs_a_browser_per_worker():
    """The env pickles without its browser; each worker process starts its own."""
    v = gym.make_vec(
        ENV_ID,
        num_envs=2,
        vectorization_mode="async",
        vector_kwargs={"shared_memory": False},
        task="click-test",
    )
    try:
        obs, _ = v.reset(seed=0)
        assert obs["image"][0].shape == (588, 448, 3)
        _, reward, term, _, info = v.step([act("click [1]")] * 2)
        assert term.tolist() == [True, True] and reward.tolist() == [1.0, 1.0]
    finally:
        v.close()


@needs_browser
def test_trajectory_images_replay_the_page(env):
    """What GRPO feeds the model again: the rollout loop's trajectory, its images rebuilt by
    replaying the actions in the page, equal to the observations the policy was shown."""
    from vigorl_agents.policy import SamplingParams
    from vigorl_agents.replay import trajectory_images
    from vigorl_agents.rollout import EpisodeSpec, run_episodes
    from vigorl_agents.web_oracle import MiniWoBOracle

    seen: list[np.ndarray] = []

    class Recording(MiniWoBOracle):
        def complete(self, conv, params):
            seen.append(np.asarray(conv.messages[-1].images[0]).copy())
            return super().complete(conv, params)

    policy = Recording()
    index = env.unwrapped.index_of("login-user/test/2")
    (traj,) = asyncio.run(
        run_episodes(
            lambda: gym.make(ENV_ID, split="test"), policy, [EpisodeSpec(index)], SamplingParams()
        )
    )
    assert traj.components["accuracy"] == 1.0 and len(traj.turns) == 3
    images = trajectory_images(env, traj)
    assert len(images) == len(traj.turns) + 1  # reset + one per action (the last one unseen)
    for shown, rebuilt in zip(seen, images, strict=False):
        assert np.array_equal(shown, np.asarray(rebuilt))
    assert len(seen) == 3

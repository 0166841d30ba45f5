"""The scripted teacher: its error rates match the configured ones over many requests, its replies
are a pure function of the request seed, and its steps point inside the annotated objects."""

from __future__ import annotations

import asyncio
import re

import pytest

from vigorl_agents.policy import SamplingParams
from vigorl_agents.search import teacher_conversation, teacher_system_prompt
from vigorl_agents.search.run import RunConfig, make_env
from vigorl_agents.search.teacher import ScriptedTeacher, TeacherErrors
from vigorl_env.tasks import FAMILIES

N = 3000
TOL = 0.035


@pytest.fixture(scope="module")
def episode():
    """A SynthSpatial left/right sample (index 0) announced to teachers, with its env."""
    env = make_env("ViGoRL/SynthSpatial-v0", RunConfig())
    obs, info = env.reset(options={"index": 0})
    image = env.unwrapped.frame_image
    return env, obs, info, image


def _teacher(env, info, image, **errors):
    t = ScriptedTeacher.for_envs([env], TeacherErrors(**errors))
    t.announce(image, env_id=env.unwrapped.env_id, sample_id=info["sample_id"], frame=info["frame"])
    return t


def _reply(t, image, question, thoughts, seed, k=7, forced=False):
    system = teacher_system_prompt(FAMILIES["spatial"].mcts_prompt(), k)
    conv = teacher_conversation(system, image, question, thoughts, forced)
    out = asyncio.run(t.generate([conv], SamplingParams(temperature=1.0, seed=seed)))
    return out[0][0].text


def test_step_error_rates_match_the_configuration(episode):
    env, obs, info, image = episode
    t = _teacher(env, info, image, p_distractor=0.3, p_misread=0.2, p_garbage=0.05,
                 p_answer_early=0.0)  # fmt: skip
    texts = [_reply(t, image, obs["text"], [], seed) for seed in range(N)]
    garbage = [x for x in texts if "<think>" not in x]
    steps = [x for x in texts if "<think>" in x]
    distractor = [x for x in steps if "looks like the object the question refers to" in x]
    target = [x for x in steps if "it is relevant to the question" in x]
    assert len(distractor) + len(target) == len(steps)  # first step: nothing visited yet
    assert abs(len(garbage) / N - 0.05) < TOL
    assert abs(len(distractor) / len(steps) - 0.3) < TOL
    # the annotations (through the env's ground truth at the end of an episode): the targets are
    # the purple cone and the red cube; a misread names another colour for them
    named = [re.search(r"the (\w+) (cone|cube) sits", x) for x in target]
    assert all(named)
    misread = [
        m for m in named if (m.group(1), m.group(2)) not in {("purple", "cone"), ("red", "cube")}
    ]
    assert abs(len(misread) / len(target) - 0.2) < TOL


def _clean_path(env, obs, info, image):
    """Thoughts of an error-free teacher that visit both targets (and make the comparison)."""
    clean = _teacher(env, info, image, p_distractor=0, p_misread=0, p_wrong_relation=0,
                     p_garbage=0, p_answer_early=0)  # fmt: skip
    thoughts: list[str] = []
    for seed in range(3):
        thoughts.append(_reply(clean, image, obs["text"], thoughts, 1000 + seed))
    assert "so the answer should be" in thoughts[-1]
    return thoughts


def test_answer_accuracy_matches_the_configuration(episode):
    env, obs, info, image = episode
    truth = "left"  # SynthSpatial train 0: the purple cone is left of the red cube
    thoughts = _clean_path(env, obs, info, image)
    t = _teacher(env, info, image, answer_accuracy=0.7, misled_accuracy=0.2, p_garbage=0)
    grounded = [_reply(t, image, obs["text"], thoughts, s, forced=True) for s in range(N)]
    assert all(x.startswith("<answer> ") for x in grounded)
    acc = sum(f"<answer> {truth} </answer>" == x for x in grounded) / N
    assert abs(acc - 0.7) < TOL
    # a path holding a mistake (the comparison flipped) → the misled accuracy
    wrong = [*thoughts[:-1], thoughts[-1].replace('"left"', '"right"')]
    misled = [_reply(t, image, obs["text"], wrong, s, forced=True) for s in range(N)]
    acc = sum(f"<answer> {truth} </answer>" == x for x in misled) / N
    assert abs(acc - 0.2) < TOL
    # no step visited the targets → misled too
    none = [_reply(t, image, obs["text"], [], s, forced=True) for s in range(N)]
    assert abs(sum(f"<answer> {truth} </answer>" == x for x in none) / N - 0.2) < TOL
    # the env agrees about which answer is right
    _, _, _, _, final = env.step("")
    assert final["ground_truth"]["answer"] == truth


def test_wrong_relation_rate(episode):
    env, obs, info, image = episode
    thoughts = _clean_path(env, obs, info, image)[:-1]
    t = _teacher(env, info, image, p_distractor=0, p_wrong_relation=0.4, p_garbage=0,
                 p_answer_early=0)  # fmt: skip
    texts = [_reply(t, image, obs["text"], thoughts, s) for s in range(N)]
    claims = [re.search(r'so the answer should be "(\w+)"', x).group(1) for x in texts]
    assert abs(claims.count("right") / N - 0.4) < TOL


def test_replies_are_a_function_of_the_seed_and_points_lie_on_objects(episode):
    env, obs, info, image = episode
    t = _teacher(env, info, image, p_garbage=0, p_answer_early=0)
    a = [_reply(t, image, obs["text"], [], s) for s in range(50)]
    assert a == [_reply(t, image, obs["text"], [], s) for s in range(50)]
    assert len(set(a)) > 5
    # every point lies on an annotated object (the env's ground-truth objects, model frame)
    other = make_env("ViGoRL/SynthSpatial-v0", RunConfig())
    other.reset(options={"index": 0})
    _, _, _, _, final = other.step("")
    boxes = [o["box"] for o in final["ground_truth"]["objects"]]
    for x in a:
        px, py = map(int, re.search(r"\((\d+), (\d+)\)", x).groups())
        assert any(b[0] - 1 <= px <= b[2] + 1 and b[1] - 1 <= py <= b[3] + 1 for b in boxes), x


def test_unannounced_conversation_is_refused(episode):
    env, obs, info, image = episode
    t = ScriptedTeacher.for_envs([env])
    with pytest.raises(KeyError, match="nobody announced"):
        _reply(t, image, obs["text"], [], 0)


def test_stated_mistakes_read_the_teachers_own_steps(episode):
    """A chain of the teacher's steps shows a distractor step and a flipped comparison in its
    text; the clean path shows neither."""
    from vigorl_agents.search.teacher import stated_mistakes

    env, obs, info, image = episode
    thoughts = _clean_path(env, obs, info, image)

    def chain(steps, answer="left"):
        return "<think>\n" + "\n".join(steps) + f"\n</think>\n<answer> {answer} </answer>"

    assert stated_mistakes(chain(thoughts)) == {
        "distractor": False,
        "relation_contradicts_answer": False,
    }
    flipped = [*thoughts[:-1], thoughts[-1].replace('"left"', '"right"')]
    assert stated_mistakes(chain(flipped))["relation_contradicts_answer"]
    assert not stated_mistakes(chain(flipped, "right"))["relation_contradicts_answer"]
    d = _teacher(env, info, image, p_distractor=1, p_garbage=0, p_answer_early=0)
    step = _reply(d, image, obs["text"], [], 7)
    assert stated_mistakes(chain([step, *thoughts]))["distractor"]

"""`ScriptedTeacher`: a stand-in for the 72B tree-search teacher on procedural samples.

A tiny random model writes only garbage, so it cannot show that the search keeps correct branches
and drops wrong ones. This Policy writes grounded thought steps in the teacher's style from the
generator's object annotations, with mistakes at configured rates, so the real search runs on a CPU
and builds trees with both correct and wrong branches. It is NOT a model and its trees say nothing
about a real teacher's quality; see docs/mcts.md#the-scripted-teacher.

How it knows the sample: the search runner announces each sample before searching it
(`announce(image, env_id=..., sample_id=..., frame=...)`, the env's reset info; no ground truth)
and the teacher recognizes the conversation by the identity of the model-frame image object it
carries. It then looks the sample up in its OWN copy of the procedural dataset (same generator,
split and seed as the env, built from the env's public config), never in the env's episode.

Error model (every draw from `random.Random(f"{request seed}:{sample id}")`, so a reply is a pure
function of the request):
- a reply is unparsable (no tags) with probability `p_garbage`;
- before K thoughts (K read from the system prompt's suffix) it answers with `p_answer_early`,
  from K on with `p_answer_after_k`; a forced final call always answers;
- a step is a *distractor step* (names a non-target object as the one the question asks about)
  with probability `p_distractor`; otherwise it visits an unvisited target object, naming its
  colour wrongly with probability `p_misread`; once every target is visited, a relation question
  (left/right, closer) gets one comparison step that states the wrong relation with probability
  `p_wrong_relation`; further steps dismiss unvisited non-target objects (correct exploration);
- the answer is correct with probability `answer_accuracy` when the previous thoughts visited every
  target object and contain no mistake, else with `misled_accuracy`. Mistakes in the previous
  thoughts are recognized by re-reading them against the annotations (the object under each point,
  the colour named, the relation claimed), so a branch that went wrong stays worse below.
Points are the object's box centre in the model frame plus a jitter of at most a quarter of the
box's half-size.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vigorl_agents.policy import Completion, Conversation, RulePolicy, SamplingParams

_PREV = re.compile(r"\n\nPrevious thought \d+: ")
_K = re.compile(r"at least (\d+) thoughts before providing the final answer")
_POINT = re.compile(r"\((\d+), (\d+)\)")
_COLOUR_NAMED = re.compile(r"\b(?:the|a|an) (\w+) (\w+) (?:sits|at)\b")
_DISTRACTOR = "looks like the object the question refers to"
_RELATION = re.compile(r"so the answer should be \"([^\"]*)\"")
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S)
RELATION_FAMILIES = ("left_right", "closer", "relative_position")


@dataclass(frozen=True)
class TeacherErrors:
    """The scripted teacher's error model (rates in [0, 1]; see the module docstring)."""

    p_distractor: float = 0.25
    p_misread: float = 0.15
    p_wrong_relation: float = 0.3
    answer_accuracy: float = 0.85
    misled_accuracy: float = 0.25
    p_answer_early: float = 0.05
    p_answer_after_k: float = 0.5
    p_garbage: float = 0.02

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")


def stated_mistakes(text: str) -> dict[str, bool]:
    """The teacher's mistakes a chain shows in its own text (no annotations needed): a step that
    names a distractor as the asked object, and a comparison whose stated answer is not the
    chain's final answer. A correct chain can carry both, since only its answer is judged."""
    answer = _ANSWER.search(text)
    stated = _RELATION.findall(text)
    return {
        "distractor": _DISTRACTOR in text,
        "relation_contradicts_answer": bool(answer and stated and stated[-1] != answer.group(1)),
    }


@dataclass
class _Episode:
    sample: Any
    boxes: dict[str, tuple[float, float, float, float]]  # model frame


def _where(x: float, y: float, size: tuple[int, int]) -> str:
    w, h = size
    v = "top" if y < h / 3 else "bottom" if y > 2 * h / 3 else "middle"
    hz = "left" if x < w / 3 else "right" if x > 2 * w / 3 else "centre"
    return "centre" if (v, hz) == ("middle", "centre") else f"{v}-{hz}"


class ScriptedTeacher(RulePolicy):
    """A Policy that writes teacher-style grounded steps from procedural annotations (module doc)."""

    def __init__(
        self,
        datasets: dict[str, Any],
        errors: TeacherErrors | None = None,
        colours: Sequence[str] = (),
    ):
        self.datasets = dict(datasets)
        self.errors = errors or TeacherErrors()
        self.colours = tuple(colours) or (
            "red", "green", "blue", "yellow", "purple", "orange", "white", "black",
        )  # fmt: skip
        self._episodes: dict[int, tuple[Any, _Episode, tuple[int, int]]] = {}

    @classmethod
    def for_envs(cls, envs: Sequence[Any], errors: TeacherErrors | None = None) -> ScriptedTeacher:
        """A teacher with its own dataset copy for each env (same generator, split and seed),
        built from the env's public config; never the env's dataset object or episode."""
        from vigorl_env.env import load_dataset

        datasets = {}
        for env in envs:
            u = env.unwrapped
            if not u.config.spec.procedural:
                raise ValueError(f"{u.env_id}: the scripted teacher needs a procedural env")
            datasets[u.env_id] = load_dataset(u.config)
        return cls(datasets, errors)

    # ------------------------------------------------------------------ sample announcement
    def announce(self, image: Any, *, env_id: str, sample_id: str, frame: dict[str, Any]) -> None:
        """Tell the teacher which sample the conversations carrying `image` are about."""
        from vigorl_env.geometry import Frame

        ds = self.datasets[env_id]
        sample = ds[ds.index_of(sample_id)]
        fr = Frame(tuple(frame["original_size"]), tuple(frame["model_size"]))
        boxes = {o.id: fr.box_to_model(o.box) for o in sample.objects or ()}
        if sample.gt_box is not None:
            boxes["__gt__"] = fr.box_to_model(sample.gt_box)
        # the image is kept referenced so that its id() cannot be reused while announced
        self._episodes[id(image)] = (image, _Episode(sample, boxes), tuple(frame["model_size"]))

    def forget(self, image: Any) -> None:
        self._episodes.pop(id(image), None)

    # ------------------------------------------------------------------ Policy
    def complete(self, conv: Conversation, params: SamplingParams) -> list[Completion]:
        return [Completion(self.reply(conv, params.seed), "stop") for _ in range(params.n)]

    # ------------------------------------------------------------------ one reply
    def reply(self, conv: Conversation, seed: int | None) -> str:
        user = next(m for m in conv.messages if m.role == "user")
        if not user.images or id(user.images[0]) not in self._episodes:
            raise KeyError("ScriptedTeacher: conversation about a sample nobody announced")
        _, ep, size = self._episodes[id(user.images[0])]
        sample = ep.sample
        rng = random.Random(f"{seed}:{sample.sample_id}")
        e = self.errors
        thoughts = _PREV.split(user.text)[1:]
        forced = sum(m.role == "user" for m in conv.messages) > 1
        m = _K.search(next((x.text for x in conv.messages if x.role == "system"), ""))
        k = int(m.group(1)) if m else 3
        if rng.random() < e.p_garbage:
            return "I need to look at the image more carefully."
        n = len(thoughts)
        answer_now = forced or rng.random() < (e.p_answer_after_k if n >= k else e.p_answer_early)
        state = self._read(ep, thoughts)
        if answer_now:
            return self._answer(ep, state, rng)
        return self._step(ep, state, rng, size)

    def _targets(self, ep: _Episode) -> list[str]:
        ids = [i for i in ep.sample.target_ids if i in ep.boxes]
        return ids or (["__gt__"] if "__gt__" in ep.boxes else [])

    def _object_at(self, ep: _Episode, x: int, y: int) -> str | None:
        """The object under a point (of overlapping boxes, the one whose centre is nearest)."""
        best, best_d = None, float("inf")
        for oid, (x1, y1, x2, y2) in ep.boxes.items():
            if oid != "__gt__" and x1 - 1 <= x <= x2 + 1 and y1 - 1 <= y <= y2 + 1:
                d = (x - (x1 + x2) / 2) ** 2 + (y - (y1 + y2) / 2) ** 2
                if d < best_d:
                    best, best_d = oid, d
        return best

    def _read(self, ep: _Episode, thoughts: list[str]) -> dict[str, Any]:
        """What the previous thoughts did: visited objects, mistakes, whether a relation was claimed."""
        objs = {o.id: o for o in ep.sample.objects or ()}
        targets = set(self._targets(ep))
        visited: set[str] = set()
        mistakes = 0
        relation = False
        for t in thoughts:
            rel = _RELATION.search(t)
            if rel is not None:
                relation = True
                mistakes += rel.group(1) != ep.sample.answer
                continue
            pm = _POINT.search(t)
            oid = self._object_at(ep, int(pm.group(1)), int(pm.group(2))) if pm else None
            if oid is None:
                continue
            visited.add(oid)
            if _DISTRACTOR in t and oid not in targets:
                mistakes += 1
            named = _COLOUR_NAMED.search(t)
            if named and oid in objs and named.group(1) != objs[oid].attributes.get("color"):
                mistakes += 1
        return {"visited": visited, "mistakes": mistakes, "relation": relation}

    def _point(self, ep: _Episode, oid: str, rng: random.Random) -> tuple[int, int]:
        x1, y1, x2, y2 = ep.boxes[oid]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        jx, jy = (x2 - x1) / 8, (y2 - y1) / 8
        return round(cx + rng.uniform(-jx, jx)), round(cy + rng.uniform(-jy, jy))

    def _name(self, oid: str, ep: _Episode, colour: str | None = None) -> str:
        obj = next(o for o in ep.sample.objects or () if o.id == oid)
        return f"{colour or obj.attributes.get('color', '')} {obj.category}".strip()

    def _step(
        self, ep: _Episode, state: dict[str, Any], rng: random.Random, size: tuple[int, int]
    ) -> str:
        e = self.errors
        targets = self._targets(ep)
        visited = state["visited"]
        others = [o.id for o in ep.sample.objects or () if o.id not in targets]
        fresh_others = [o for o in others if o not in visited]
        fresh_targets = [t for t in targets if t not in visited and t != "__gt__"]
        family = ep.sample.meta.get("family")
        if fresh_others and rng.random() < e.p_distractor:
            oid = rng.choice(fresh_others)
            x, y = self._point(ep, oid, rng)
            return (
                f"<think>\nIn the {_where(x, y, size)} region there is a {self._name(oid, ep)} "
                f"at ({x}, {y}), which {_DISTRACTOR}.\n</think>"
            )
        if fresh_targets:
            oid = rng.choice(fresh_targets)
            x, y = self._point(ep, oid, rng)
            obj = next(o for o in ep.sample.objects or () if o.id == oid)
            colour = obj.attributes.get("color")
            if colour and rng.random() < e.p_misread:
                colour = rng.choice([c for c in self.colours if c != colour])
            return (
                f"<think>\nIn the {_where(x, y, size)} region the {self._name(oid, ep, colour)} "
                f"sits at ({x}, {y}); it is relevant to the question, so I note its position.\n"
                "</think>"
            )
        if family in RELATION_FAMILIES and not state["relation"] and len(targets) >= 2:
            options = list(ep.sample.options or (ep.sample.answer,))
            claim = ep.sample.answer
            wrong = [o for o in options if o != claim]
            if wrong and rng.random() < e.p_wrong_relation:
                claim = rng.choice(wrong)
            (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = ep.boxes[targets[0]], ep.boxes[targets[1]]
            x = round((ax1 + ax2 + bx1 + bx2) / 4 + rng.uniform(-3, 3))
            y = round((ay1 + ay2 + by1 + by2) / 4 + rng.uniform(-3, 3))
            return (
                f"<think>\nComparing the {self._name(targets[0], ep)} and the "
                f"{self._name(targets[1], ep)} around ({x}, {y}), so the answer should be "
                f'"{claim}".\n</think>'
            )
        pool = fresh_others or others or targets
        oid = rng.choice(pool)
        x, y = self._point(ep, oid, rng)
        if oid == "__gt__":
            return f"<think>\nThe region around ({x}, {y}) matches the description.\n</think>"
        return (
            f"<think>\nThe {_where(x, y, size)} region shows a {self._name(oid, ep)} at ({x}, {y}); "
            "it does not change the answer, so I move on.\n</think>"
        )

    def _answer(self, ep: _Episode, state: dict[str, Any], rng: random.Random) -> str:
        e = self.errors
        sample = ep.sample
        targets = self._targets(ep)
        grounded = all(t in state["visited"] for t in targets if t != "__gt__")
        p = e.answer_accuracy if grounded and state["mistakes"] == 0 else e.misled_accuracy
        correct = rng.random() < p
        if sample.answer_kind == "point_in_box":
            pool = (
                targets if correct else [o.id for o in sample.objects or () if o.id not in targets]
            )
            oid = rng.choice(pool or targets)
            x1, y1, x2, y2 = ep.boxes[oid]
            text = f"({round((x1 + x2) / 2)}, {round((y1 + y2) / 2)})"
        else:
            wrong = [o for o in sample.options or () if o != sample.answer]
            if sample.answer_kind == "web_action" and not wrong:
                wrong = ["go_back"]
            text = sample.answer if correct or not wrong else rng.choice(wrong)
        return f"<answer> {text} </answer>"

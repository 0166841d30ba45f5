"""The internal sample record (docs/data.md#the-internal-sample) and the dataset protocol every adapter implements.

Loaders and procedural generators both yield `Sample`s; the env never looks at where a sample came
from. Images are loaded lazily through a picklable zero-argument callable so that datasets (and the
envs holding them) pickle cheaply and async vector envs can ship them to worker processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from PIL import Image

AnswerKind = Literal["option_text", "point_in_box", "web_action"]
ANSWER_KINDS: tuple[str, ...] = ("option_text", "point_in_box", "web_action")
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class SceneObject:
    """A ground-truth object of a procedural sample; `box` = (x1, y1, x2, y2), original frame, inclusive."""

    id: str
    category: str
    attributes: dict[str, Any]
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "attributes": dict(self.attributes),
            "box": list(self.box),
        }


@dataclass(frozen=True)
class Sample:
    """One question about one image (docs/data.md#the-internal-sample).

    `image` is a picklable zero-argument callable returning the image in the *original* frame
    (any PIL mode; the env converts it to the model frame). `gt_box` and object boxes are in the
    original frame too; the env rescales them once at reset (docs/geometry.md#the-resize-rule step 6).
    """

    sample_id: str
    question: str
    image: Callable[[], Image.Image]
    answer: str
    answer_kind: AnswerKind
    gt_box: tuple[float, float, float, float] | None = None
    options: tuple[str, ...] | None = None
    objects: tuple[SceneObject, ...] | None = None
    target_ids: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def point_hits(self, point: tuple[float, float]) -> list[str]:
        """Ids of objects whose (original-frame) box contains `point`, inclusive on all sides."""
        x, y = point
        return [
            o.id
            for o in self.objects or ()
            if o.box[0] <= x <= o.box[2] and o.box[1] <= y <= o.box[3]
        ]


@runtime_checkable
class Dataset(Protocol):
    """A split of a benchmark: random access by index and by sample id.

    Optional: a hashable `cache_key` attribute, equal for two dataset objects exactly when they
    yield the same samples (same images) at every index; envs then share model frames across
    dataset objects (`vigorl_env.env.FrameCache`). Without it, frames are shared only among envs
    holding the same dataset object.
    """

    name: str
    split: str

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Sample: ...

    def index_of(self, sample_id: str) -> int: ...


def fmt_options(options: Sequence[str]) -> str:
    """Options as listed after a question: `A. …`, `B. …`, one per line (docs/data.md#procedural-datasets)."""
    return "\n".join(f"{chr(ord('A') + i)}. {o}" for i, o in enumerate(options))

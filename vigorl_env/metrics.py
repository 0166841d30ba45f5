"""Grounding precision (SPEC §8.4): do the reasoning steps point at real objects?

Only procedural samples carry object boxes, so this is an optional metric beside the reward.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vigorl_env.protocol import all_think_points

Box = Sequence[float]


def grounding_precision(
    transcript: str, objects: Iterable[tuple[str, Box]], target_ids: Iterable[str] = ()
) -> dict[str, float | int | None]:
    """Fractions of the think-step points (all think blocks) inside any object box / a target box.

    `objects` are (id, box) pairs in the model frame, boxes inclusive on all sides. With no points
    the fractions are None (undefined, not 0: a response without points is scored by the format
    reward, not here).
    """
    points = all_think_points(transcript)
    objects = list(objects)
    targets = set(target_ids)

    def inside(p: tuple[int, int], box: Box) -> bool:
        return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]

    on_object = sum(any(inside(p, b) for _, b in objects) for p in points)
    on_target = sum(any(inside(p, b) for i, b in objects if i in targets) for p in points)
    n = len(points)
    return {
        "points": n,
        "on_object": on_object / n if n else None,
        "on_target": on_target / n if n and targets else None,
    }

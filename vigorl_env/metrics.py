"""Grounding precision (docs/rewards.md#grounding-precision): do the reasoning steps point at real
objects?

Only procedural samples carry object boxes, so this is an optional metric beside the reward.

A transcript is model text, so it can be hostile: a 100,000-character action can name ~12,000
points per turn, and testing every point against every object is quadratic in practice. Points are
counted once per distinct value, and when (distinct points × objects) is large the boxes go into a
uniform grid so that each point is tested only against the boxes that share its cell. Both paths
apply the same inclusive comparison to the same numbers, so the result is exact, not approximate.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from vigorl_env.protocol import all_think_points

Box = Sequence[float]
Box4 = tuple[float, float, float, float]

BRUTE_FORCE_MAX = 20_000
"""Above this many (distinct point, object) pairs the grid index is used."""

_GRID_CELLS = 32  # cells along the longer side of the boxes' extent


def _inside(x: float, y: float, box: Box4) -> bool:
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


class _BoxGrid:
    """Boxes bucketed by the grid cells they overlap; `hits(p)` = indices of boxes holding p.

    Exact: for x1 <= x <= x2, floor(x / c) lies between floor(x1 / c) and floor(x2 / c) (floor is
    monotone), so every box that holds a point is registered in the point's cell; the final test
    is the same inclusive comparison as the brute-force path. Boxes with a non-finite coordinate
    are tested for every point.
    """

    def __init__(self, boxes: list[Box4]):
        self.boxes = boxes
        self.cells: dict[tuple[int, int], list[int]] = {}
        finite = [i for i, b in enumerate(boxes) if all(math.isfinite(v) for v in b)]
        finite_set = set(finite)
        self.always = [i for i in range(len(boxes)) if i not in finite_set]
        if not finite:
            self.size = 1.0
            return
        x_lo = min(boxes[i][0] for i in finite)
        y_lo = min(boxes[i][1] for i in finite)
        x_hi = max(boxes[i][2] for i in finite)
        y_hi = max(boxes[i][3] for i in finite)
        self.size = max(1.0, max(x_hi - x_lo, y_hi - y_lo) / _GRID_CELLS)
        c = self.size
        for i in finite:
            x1, y1, x2, y2 = boxes[i]
            if x1 > x2 or y1 > y2:
                continue  # an empty box holds no point
            for gx in range(math.floor(x1 / c), math.floor(x2 / c) + 1):
                for gy in range(math.floor(y1 / c), math.floor(y2 / c) + 1):
                    self.cells.setdefault((gx, gy), []).append(i)

    def hits(self, x: float, y: float) -> list[int]:
        c = self.size
        cand = self.cells.get((math.floor(x / c), math.floor(y / c)), ())
        out = [i for i in cand if _inside(x, y, self.boxes[i])]
        out.extend(i for i in self.always if _inside(x, y, self.boxes[i]))
        return out


def grounding_precision(
    transcript: str, objects: Iterable[tuple[str, Box]], target_ids: Iterable[str] = ()
) -> dict[str, float | int | None]:
    """Fractions of the think-step points (all think blocks) inside any object box / a target box.

    `objects` are (id, box) pairs in the model frame, boxes inclusive on all sides. With no points
    the fractions are None (undefined, not 0: a response without points is scored by the format
    reward, not here). `points` counts every occurrence (a repeated point counts each time).
    """
    points = all_think_points(transcript)
    objs = [(oid, tuple(box)) for oid, box in objects]
    targets = set(target_ids)
    is_target = [oid in targets for oid, _ in objs]
    boxes = [b for _, b in objs]
    counts = Counter(points)
    on_object = on_target = 0
    if len(counts) * len(boxes) <= BRUTE_FORCE_MAX:

        def hits(x: float, y: float) -> list[int]:
            return [i for i, b in enumerate(boxes) if _inside(x, y, b)]
    else:
        hits = _BoxGrid(boxes).hits
    for (x, y), k in counts.items():
        h = hits(x, y)
        if h:
            on_object += k
            if any(is_target[i] for i in h):
                on_target += k
    n = len(points)
    return {
        "points": n,
        "on_object": on_object / n if n else None,
        "on_target": on_target / n if n and targets else None,
    }

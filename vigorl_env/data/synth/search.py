"""SynthSearch: a V*-like visual-search dataset (docs/data.md#procedural-datasets).

A large canvas (1600–2600 × 1100–1800) of soft colour fields, blobs, pebbles and twigs hides 25–60
small flat shapes. Targets are drawn at the small end of the size range (18–26 px) because the task
is meant to need the zoom: the model frame shrinks the canvas to ≤ 2.85 MP (a 20-px shape becomes
~15 px, under one 28-px patch), while a 364-px crop shown at 672 px enlarges it ~1.85×. Colour
clutter (other shapes in every option colour, twigs in the same saturated colours) keeps the answer
out of a global colour histogram.

Layout is drawn eagerly in `_generate` from the sample RNG; pixels are rendered lazily by
`render_search(scene)` from a frozen `SearchScene` of plain values, so a `Sample` pickles small and
renders bit-identically anywhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vigorl_env.data.base import Sample, SceneObject, fmt_options
from vigorl_env.data.synth.common import SynthDataset
from vigorl_env.data.synth.shapes import COLOR_NAMES, COLORS, SHAPE_KINDS, mix, paste_shape
from vigorl_env.protocol import IMAGE_MARKER

# The numbers of docs/data.md#procedural-datasets.
W_RANGE = (1600, 2600)
H_RANGE = (1100, 1800)
N_SHAPES = (25, 60)
SIDE = (18, 40)
TARGET_SIDE = (18, 26)  # targets stay small: legible only after a zoom
MIN_GAP = 8  # px of background between any two shape boxes
BORDER = 10  # px between a shape box and the canvas edge
MAX_AREA_FRAC = 0.001
N_BLOBS = (8, 15)
FAMILIES = ("attribute", "relative_position")

_LOW = 8  # background fields and blobs are built at 1/8 scale, then upsampled once
_CLUTTER_MARGIN = 4  # texture keeps this many px away from every shape box

# Mid-tone ground themes: every shape colour (white and black included) contrasts with them.
_THEMES: tuple[tuple[int, int, int], ...] = (
    (112, 140, 92),  # meadow
    (182, 164, 126),  # sand
    (112, 122, 136),  # slate
    (158, 118, 98),  # clay
    (92, 138, 138),  # teal
    (138, 128, 158),  # lavender
    (132, 130, 84),  # olive
    (124, 104, 120),  # dusk
)

Blob = tuple[int, int, int, int, int, int, int, int]  # cx, cy, rx, ry, r, g, b, alpha (full-res px)
Shape = tuple[str, str, int, int, int]  # kind, colour, x1, y1, side


@dataclass(frozen=True)
class SearchScene:
    """Everything needed to render one SynthSearch image; plain values only (picklable)."""

    width: int
    height: int
    grid: tuple[
        tuple[int, ...], ...
    ]  # rows of flattened RGB triples: the low-frequency colour field
    blobs: tuple[Blob, ...]
    shapes: tuple[Shape, ...]
    texture_seed: int  # pebbles and twigs (no GT meaning) are drawn from this at render time


def _clamp(v: int, lo: int = 0, hi: int = 255) -> int:
    return max(lo, min(hi, v))


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amp: int) -> tuple[int, int, int]:
    d = rng.integers(-amp, amp + 1, size=3)
    return (
        _clamp(rgb[0] + int(d[0]), 40, 215),
        _clamp(rgb[1] + int(d[1]), 40, 215),
        _clamp(rgb[2] + int(d[2]), 40, 215),
    )


def _background(
    rng: np.random.Generator, w: int, h: int, n_blobs: tuple[int, int] = N_BLOBS
) -> tuple[tuple[tuple[int, ...], ...], tuple[Blob, ...]]:
    theme = _THEMES[int(rng.integers(len(_THEMES)))]
    gw, gh = int(rng.integers(3, 7)), int(rng.integers(2, 6))
    grid = tuple(tuple(c for _ in range(gw) for c in _jitter(rng, theme, 38)) for _ in range(gh))
    blobs = []
    short = min(w, h)
    for _ in range(int(rng.integers(n_blobs[0], n_blobs[1] + 1))):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        rx = int(rng.integers(short * 8 // 100, short * 30 // 100))
        ry = int(rng.integers(short * 8 // 100, short * 30 // 100))
        if (
            rng.random() < 0.3
        ):  # a large washed-out patch of a shape colour: a colour-histogram decoy
            col = mix(COLORS[COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]], theme, 0.55)
        else:
            col = _jitter(rng, theme, 70)
        blobs.append((cx, cy, rx, ry, *col, int(rng.integers(120, 231))))
    return grid, tuple(blobs)


def _place(
    rng: np.random.Generator,
    w: int,
    h: int,
    sides: list[int],
    fixed: list[tuple[int, int, int, int]] | None = None,
) -> list[tuple[int, int]] | None:
    """Top-left corners for boxes of `sides`, ≥ MIN_GAP apart (also from `fixed`) and ≥ BORDER from
    the edges; None if some box finds no room (the caller redraws)."""
    boxes = np.array(fixed or [], dtype=np.int64).reshape(-1, 4)
    out = []
    for s in sides:
        xs = rng.integers(BORDER, w - BORDER - s + 1, size=48)
        ys = rng.integers(BORDER, h - BORDER - s + 1, size=48)
        if len(boxes):
            x2, y2 = xs + s - 1, ys + s - 1
            clash = (
                (xs[:, None] <= boxes[None, :, 2] + MIN_GAP)
                & (boxes[None, :, 0] <= x2[:, None] + MIN_GAP)
                & (ys[:, None] <= boxes[None, :, 3] + MIN_GAP)
                & (boxes[None, :, 1] <= y2[:, None] + MIN_GAP)
            )
            ok = np.flatnonzero(~clash.any(axis=1))
            if not len(ok):
                return None
            i = int(ok[0])
        else:
            i = 0
        x, y = int(xs[i]), int(ys[i])
        out.append((x, y))
        boxes = np.vstack([boxes, [[x, y, x + s - 1, y + s - 1]]])
    return out


def _sides(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    return [int(v) for v in rng.integers(lo, hi + 1, size=n)]


def _attribute(rng: np.random.Generator, n: int) -> tuple[list[tuple[str, str]], dict]:
    """Target kind appears once; the other three option colours and the target colour itself recur
    on other shapes, so neither the colour histogram nor a lone colour gives the answer away."""
    kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
    color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
    others = [c for c in COLOR_NAMES if c != color]
    distract = [others[i] for i in rng.choice(len(others), size=3, replace=False)]
    other_kinds = [k for k in SHAPE_KINDS if k != kind]
    forced = [*distract, color]
    specs = [(kind, color)]
    for i in range(n - 1):
        c = forced[i] if i < len(forced) else COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
        specs.append((other_kinds[int(rng.integers(len(other_kinds)))], c))
    options = [color, *distract]
    order = rng.permutation(4)
    options = [options[int(i)] for i in order]
    return specs, {"kind": kind, "color": color, "options": options}


def _relative(rng: np.random.Generator, n: int) -> tuple[list[tuple[str, str]], dict]:
    """Two (colour, shape) pairs unique in the scene; their shape in other colours and their colour
    on other shapes appear as near-miss distractors."""
    combos = [(k, c) for k in SHAPE_KINDS for c in COLOR_NAMES]
    i, j = rng.choice(len(combos), size=2, replace=False)
    t1, t2 = combos[int(i)], combos[int(j)]
    specs = [t1, t2]
    forced = []
    for k, c in (t1, t2):
        other_c = [x for x in COLOR_NAMES if x != c]
        other_k = [x for x in SHAPE_KINDS if x != k]
        forced.append((k, other_c[int(rng.integers(len(other_c)))]))
        forced.append((other_k[int(rng.integers(len(other_k)))], c))
    for m in range(n - 2):
        spec = (
            forced[m]
            if m < len(forced)
            else (
                SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))],
                COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
            )
        )
        while spec in (t1, t2):  # keep the targets unique
            spec = (
                SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))],
                COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
            )
        specs.append(spec)
    order = rng.permutation(2)
    options = [["left", "right"][int(o)] for o in order]
    return specs, {"t1": t1, "t2": t2, "options": options}


class SynthSearch(SynthDataset):
    """V*-like search for small shapes on a large cluttered canvas (option_text answers)."""

    name = "SynthSearch"
    SCENE: ClassVar[dict[str, tuple]] = {
        "width": W_RANGE,
        "height": H_RANGE,
        "n_shapes": N_SHAPES,
        "side": SIDE,
        "target_side": TARGET_SIDE,
        "n_blobs": N_BLOBS,
        "families": FAMILIES,
    }
    """Canvas size, shapes per canvas (targets included), distractor and target sides (px),
    background blobs, question families: a smaller canvas with fewer, relatively larger shapes is
    the nano scale of docs/nano.md."""
    SCENE_BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {
        "width": (200, 8000),
        "height": (200, 8000),
        "n_shapes": (2, 200),
        "side": (8, 200),
        "target_side": (8, 200),
        "n_blobs": (0, 40),
    }

    def _generate(self, rng: np.random.Generator, sample_id: str, index: int) -> Sample:
        sc = self.scene
        w = int(rng.integers(sc["width"][0], sc["width"][1] + 1))
        h = int(rng.integers(sc["height"][0], sc["height"][1] + 1))
        grid, blobs = _background(rng, w, h, sc["n_blobs"])
        family = sc["families"][int(rng.integers(len(sc["families"])))]
        n = int(rng.integers(sc["n_shapes"][0], sc["n_shapes"][1] + 1))
        if family == "attribute":
            specs, q = _attribute(rng, n)
            n_targets = 1
        else:
            specs, q = _relative(rng, n)
            n_targets = 2
        for _try in range(1000):  # fresh draws until everything fits (in practice: first try)
            sides = _sides(rng, n_targets, *sc["target_side"])
            sides += _sides(rng, n - n_targets, *sc["side"])
            pos = self._place_targets(rng, w, h, sides, family)
            if pos is None:
                continue
            fixed = [(x, y, x + s - 1, y + s - 1) for (x, y), s in zip(pos, sides, strict=False)]
            rest = _place(rng, w, h, sides[n_targets:], fixed)
            if rest is not None:
                pos = pos + rest
                break
        else:  # only a scene= that asks for more shapes than the canvas holds gets here
            raise ValueError(
                f"{sample_id}: {n} shapes of sides {sc['side']} do not fit a {w}×{h} canvas; "
                "lower scene n_shapes or side, or raise width/height"
            )
        shapes = tuple((k, c, x, y, s) for (k, c), (x, y), s in zip(specs, pos, sides, strict=True))
        scene = SearchScene(w, h, grid, blobs, shapes, int(rng.integers(0, 2**63 - 1)))
        objects = tuple(
            SceneObject(
                f"s{i}",
                k,
                {"color": c, "shape": k, "side": s},
                (float(x), float(y), float(x + s - 1), float(y + s - 1)),
            )
            for i, (k, c, x, y, s) in enumerate(shapes)
        )
        if family == "attribute":
            text = f"What is the color of the {q['kind']}?"
            answer, targets = q["color"], ("s0",)
        else:
            (k1, c1), (k2, c2) = q["t1"], q["t2"]
            text = f"Is the {c1} {k1} on the left or right side of the {c2} {k2}?"
            b1, b2 = objects[0].box, objects[1].box
            answer = "left" if b1[0] + b1[2] < b2[0] + b2[2] else "right"
            targets = ("s0", "s1")
        options = tuple(q["options"])
        return Sample(
            sample_id=sample_id,
            question=f"{IMAGE_MARKER}{text}\n{fmt_options(options)}",
            image=functools.partial(render_search, scene),
            answer=answer,
            answer_kind="option_text",
            options=options,
            objects=objects,
            target_ids=targets,
            meta={"generator": self.name, "family": family},
        )

    @staticmethod
    def _place_targets(
        rng: np.random.Generator, w: int, h: int, sides: list[int], family: str
    ) -> list[tuple[int, int]] | None:
        if family == "attribute":
            return _place(rng, w, h, sides[:1])
        for _ in range(64):
            pos = _place(rng, w, h, sides[:2])
            if pos is None:
                continue
            c1 = 2 * pos[0][0] + sides[0] - 1  # doubled centres: exact integers
            c2 = 2 * pos[1][0] + sides[1] - 1
            if abs(c1 - c2) >= 2 * 2 * max(sides[:2]):  # |Δcx| ≥ 2 × larger side
                return pos
        return None


def _clutter(scene: SearchScene, field: np.ndarray) -> tuple[list, list]:
    """Pebbles (local-colour ellipses) and twigs (short strokes, some in shape colours), kept
    `_CLUTTER_MARGIN` px clear of every shape box so a shape's outline is never touched."""
    rng = np.random.Generator(np.random.PCG64(scene.texture_seed))
    w, h = scene.width, scene.height
    boxes = np.array(
        [(x, y, x + s - 1, y + s - 1) for _, _, x, y, s in scene.shapes], dtype=np.int64
    )
    m = _CLUTTER_MARGIN

    def clear(x1, y1, x2, y2):
        hit = (
            (x1[:, None] <= boxes[None, :, 2] + m)
            & (boxes[None, :, 0] <= x2[:, None] + m)
            & (y1[:, None] <= boxes[None, :, 3] + m)
            & (boxes[None, :, 1] <= y2[:, None] + m)
        )
        return ~hit.any(axis=1)

    area = w * h
    n_peb = area // 2500
    px, py = rng.integers(0, w, n_peb), rng.integers(0, h, n_peb)
    prx, pry = rng.integers(2, 9, n_peb), rng.integers(2, 7, n_peb)
    tone = rng.integers(72, 131, n_peb)  # % of the local ground colour
    keep = clear(px - prx, py - pry, px + prx, py + pry)
    lh, lw = field.shape[:2]
    local = field[np.minimum(py // _LOW, lh - 1), np.minimum(px // _LOW, lw - 1)].astype(np.int64)
    cols = np.clip(local * tone[:, None] // 100, 0, 255)
    k = np.flatnonzero(keep)
    pbox = np.stack([px - prx, py - pry, px + prx, py + pry], axis=1)[k].tolist()
    pebbles = [(tuple(b), tuple(c)) for b, c in zip(pbox, cols[k].tolist(), strict=True)]

    n_twig = area // 9000
    tx, ty = rng.integers(0, w, n_twig), rng.integers(0, h, n_twig)
    dx, dy = rng.integers(-22, 23, n_twig), rng.integers(-22, 23, n_twig)
    width = rng.integers(1, 4, n_twig)
    keep = clear(
        np.minimum(tx, tx + dx) - 2,
        np.minimum(ty, ty + dy) - 2,
        np.maximum(tx, tx + dx) + 2,
        np.maximum(ty, ty + dy) + 2,
    )
    palette = np.array([COLORS[c] for c in COLOR_NAMES], dtype=np.int64)
    vivid = rng.random(n_twig) < 0.35  # twigs in the shape colours: colour clutter
    pick = rng.integers(0, len(COLOR_NAMES), n_twig)
    local = field[np.minimum(ty // _LOW, lh - 1), np.minimum(tx // _LOW, lw - 1)].astype(np.int64)
    dark = rng.integers(35, 70, n_twig)
    tcols = np.where(vivid[:, None], palette[pick], local * dark[:, None] // 100)
    k = np.flatnonzero(keep)
    tline = np.stack([tx, ty, tx + dx, ty + dy], axis=1)[k].tolist()
    twigs = [
        (tuple(ln), wd, tuple(c))
        for ln, wd, c in zip(tline, width[k].tolist(), tcols[k].tolist(), strict=True)
    ]
    return pebbles, twigs


def render_search(scene: SearchScene) -> Image.Image:
    """Render a `SearchScene` (RGB, scene.width × scene.height); a pure function of the scene."""
    w, h = scene.width, scene.height
    lw, lh = -(-w // _LOW), -(-h // _LOW)
    gh, gw = len(scene.grid), len(scene.grid[0]) // 3
    grid = Image.frombytes("RGB", (gw, gh), bytes(v for row in scene.grid for v in row))
    low = grid.resize((lw, lh), Image.Resampling.BICUBIC)
    for cx, cy, rx, ry, r, g, b, alpha in scene.blobs:
        sigma = max(2, min(rx, ry) // (3 * _LOW))
        pad = 4 * sigma + 2  # blur only the blob's neighbourhood (clipped to the canvas)
        x1, y1 = (cx - rx) // _LOW, (cy - ry) // _LOW
        x2, y2 = (cx + rx) // _LOW, (cy + ry) // _LOW
        ox, oy = max(0, x1 - pad), max(0, y1 - pad)
        ex, ey = min(lw, x2 + pad + 1), min(lh, y2 + pad + 1)
        if ex <= ox or ey <= oy:
            continue
        mask = Image.new("L", (ex - ox, ey - oy), 0)
        ImageDraw.Draw(mask).ellipse((x1 - ox, y1 - oy, x2 - ox, y2 - oy), fill=alpha)
        mask = mask.filter(ImageFilter.GaussianBlur(sigma))
        low.paste((r, g, b), (ox, oy, ex, ey), mask)
    field = np.asarray(low)
    img = low.resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    pebbles, twigs = _clutter(scene, field)
    for box, col in pebbles:
        draw.ellipse(box, fill=col)
    for line, width, col in twigs:
        draw.line(line, fill=col, width=width)
    for kind, color, x, y, side in scene.shapes:
        paste_shape(img, kind, x, y, side, color)
    return img

"""SynthSpatial: SAT/BLINK-like spatial questions about simple solids on a ground plane (docs/data.md#procedural-datasets).

Camera model (weak perspective per object, true perspective for the ground): an object at depth z
is drawn at scale F/z px per world unit, its ground-contact row is `horizon + G/z` (so it rises
toward the horizon as z grows) and its centre column is `W/2 + F·X/z`. Ground tiles use the same
projection, so the floor pattern and the objects agree on depth. Horizontal circles are squashed
more with depth (flatter ellipses far away), a cheap but effective 3-D cue.

Layout (all integers, eagerly in `_generate`) is a pure function of the sample RNG; pixels come
lazily from `render_spatial(scene)`. Each solid is drawn 3× supersampled in its own patch and
pasted in painter's order (far first).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vigorl_env.data.base import Sample, SceneObject, fmt_options
from vigorl_env.data.synth.common import SynthDataset
from vigorl_env.data.synth.shapes import COLOR_NAMES, COLORS, RGB, mix, shade
from vigorl_env.protocol import IMAGE_MARKER

# The numbers of docs/data.md#procedural-datasets.
WIDTH = (640, 1024)  # 4:3 canvas: W = 4k, H = 3k
HORIZON = (0.30, 0.45)  # horizon row as a fraction of H
N_OBJECTS = (3, 6)
Z_RANGE = (1.0, 4.0)
KINDS: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone")
PLURAL = {"cube": "cubes", "sphere": "spheres", "cylinder": "cylinders", "cone": "cones"}
MAX_OCCLUSION = 0.30
MIN_DCX = 40  # px between box centres for left/right questions
MIN_DZ = 0.5  # depth gap for closer-to-camera questions
FAMILIES = ("left_right", "closer", "count")

_MARGIN = 6  # px between any object box and the canvas edge
_SS = 3  # supersampling of object patches
_MIN_SEP = 0.95  # world units between footprint centres: solids never interpenetrate

_SKIES: tuple[tuple[RGB, RGB], ...] = (  # (zenith, horizon haze)
    ((92, 140, 206), (214, 228, 240)),
    ((120, 160, 210), (232, 236, 238)),
    ((150, 170, 196), (222, 222, 226)),
    ((104, 130, 180), (236, 214, 196)),
)
_GROUNDS: tuple[RGB, ...] = (
    (150, 146, 138),
    (170, 156, 124),
    (118, 140, 100),
    (140, 140, 150),
    (160, 134, 112),
)


@dataclass(frozen=True)
class Solid:
    """One object in integer image geometry; (left, top, right, bottom) is its inclusive box."""

    kind: str
    color: str
    z: float  # depth of the footprint centre, world units
    cx: int  # centre column of the footprint
    yb: int  # ground-contact row (continuous coordinate: the object ends just above it)
    w: int  # width: cube edge, sphere diameter, cylinder/cone base diameter
    ry: int  # vertical half-axis of horizontal ellipses (cube: top-face depth)
    h: int  # body height (cube: front face, cylinder: side, cone: base centre to apex)
    shear: int  # cube only: horizontal shift of the back face (toward the vanishing point)
    left: int
    top: int
    right: int
    bottom: int


@dataclass(frozen=True)
class SpatialScene:
    """Everything needed to render one SynthSpatial image; plain values only (picklable)."""

    width: int
    height: int
    horizon: int
    focal: float  # F: px per world unit at depth 1
    ground_gain: float  # G: ground row = horizon + G/z
    sky: tuple[RGB, RGB]
    ground: RGB
    tile: float  # world size of a floor tile
    tile_phase: float
    solids: tuple[Solid, ...]  # painter's order: far first


def _solid(kind: str, color: str, z: float, cx: int, yb: int, scale: float, center: int) -> Solid:
    """Integer geometry of a solid whose footprint centre projects to (cx, yb) at `scale` px/unit."""
    k = 0.50 - 0.06 * (z - 1.0)  # ellipse squash: 0.50 near → 0.32 far
    shear = 0
    if kind == "cube":
        w = max(4, round(0.85 * scale))
        ry = max(2, round(w * k * 0.8))
        h = w
        t = max(-1.0, min(1.0, (cx - center) / max(1.0, 3.0 * scale)))
        shear = -round(t * 0.35 * w)
        x0 = cx - w // 2
        left, right = x0 + min(0, shear), x0 + w + max(0, shear)
        top = yb - h - ry
    elif kind == "sphere":
        w = max(4, 2 * round(0.45 * scale))
        ry = max(1, round(w / 2 * k))
        h = w
        left, right, top = cx - w // 2, cx + w // 2, yb - w
    elif kind == "cylinder":
        w = max(4, 2 * round(0.40 * scale))
        ry = max(1, round(w / 2 * k))
        h = max(4, round(0.90 * scale))
        left, right, top = cx - w // 2, cx + w // 2, yb - h - 2 * ry
    elif kind == "cone":
        w = max(4, 2 * round(0.45 * scale))
        ry = max(1, round(w / 2 * k))
        h = max(4, round(1.10 * scale))
        left, right, top = cx - w // 2, cx + w // 2, yb - ry - h
    else:
        raise ValueError(f"unknown solid kind {kind!r}")
    return Solid(kind, color, z, cx, yb, w, ry, h, shear, left, top, right - 1, yb - 1)


def _arc(x: float, cx: float, rx: float, ry: float) -> float:
    u = (x - cx) / rx
    return ry * math.sqrt(max(0.0, 1.0 - u * u))


def _profile(u: float) -> float:
    """Brightness across a lit-from-the-left curved surface, u ∈ [−1, 1]."""
    v = (u + 0.35) / 1.35
    return 0.55 + 0.60 * max(0.0, 1.0 - v * v)


def _draw_solid(
    d: ImageDraw.ImageDraw, s: Solid, ox: int, oy: int, m: int, silhouette: bool
) -> None:
    """Draw `s` with its coordinates scaled by `m` and shifted by (−ox, −oy)·m.

    `silhouette` fills everything with 255 (an "L" mask) for occlusion tests; otherwise faces are
    shaded (top lit, light from the upper left) on an RGBA patch.
    """
    base = COLORS[s.color]

    def col(f: float) -> tuple[int, ...]:
        return 255 if silhouette else (*shade(base, f), 255)

    def P(x: float, y: float) -> tuple[int, int]:
        return (round((x - ox) * m), round((y - oy) * m))

    edge = None if silhouette else (*shade(base, 0.45), 255)
    lw = max(1, m // 2)
    if s.kind == "cube":
        x0 = s.cx - s.w // 2
        x1, yt, yb, dx, dy = x0 + s.w, s.yb - s.h, s.yb, s.shear, s.ry
        front = [P(x0, yt), P(x1, yt), P(x1, yb), P(x0, yb)]
        top = [P(x0, yt), P(x1, yt), P(x1 + dx, yt - dy), P(x0 + dx, yt - dy)]
        if dx < 0:
            side, f_side = [P(x0, yt), P(x0 + dx, yt - dy), P(x0 + dx, yb - dy), P(x0, yb)], 0.95
        else:
            side, f_side = [P(x1, yt), P(x1 + dx, yt - dy), P(x1 + dx, yb - dy), P(x1, yb)], 0.62
        for poly, f in ((top, 1.28), (side, f_side), (front, 0.80)):
            d.polygon(poly, fill=col(f), outline=edge, width=lw if edge else 0)
    elif s.kind == "sphere":
        r = s.w / 2
        cx, cy = s.cx, s.yb - r
        d.ellipse([P(cx - r, cy - r), P(cx + r, cy + r)], fill=col(0.50))
        if not silhouette:
            n = max(12, min(40, int(r // 2)))  # ≤ ~1 px per ring: no visible banding
            for i in range(1, n + 1):
                t = i / n
                rr, off = r * (1 - 0.88 * t), 0.38 * r * t
                f = 0.50 + 0.80 * t**0.75
                d.ellipse(
                    [P(cx - off - rr, cy - off - rr), P(cx - off + rr, cy - off + rr)], fill=col(f)
                )
    else:  # cylinder, cone: shaded vertical strips over the front arc, then the top (cylinder)
        rx, ry = s.w / 2, s.ry
        cx, ybc = s.cx, s.yb - ry  # bottom ellipse centre
        ytc = ybc - s.h  # top ellipse centre (cylinder) / apex row (cone)
        n = 1 if silhouette else max(12, min(40, s.w // 4))
        for i in range(n):
            xa, xb = cx - rx + 2 * rx * i / n, cx - rx + 2 * rx * (i + 1) / n
            f = _profile(((xa + xb) / 2 - cx) / rx)
            bottom = [P(xb, ybc + _arc(xb, cx, rx, ry)), P(xa, ybc + _arc(xa, cx, rx, ry))]
            if silhouette:  # one polygon along the whole front arc
                arc = [P(x, ybc + _arc(x, cx, rx, ry)) for x in np.linspace(cx + rx, cx - rx, 17)]
                top = [P(cx - rx, ytc), P(cx + rx, ytc)] if s.kind == "cylinder" else [P(cx, ytc)]
                d.polygon(top + arc, fill=255)
                if s.kind == "cylinder":
                    d.ellipse([P(cx - rx, ytc - ry), P(cx + rx, ytc + ry)], fill=255)
                else:
                    d.ellipse([P(cx - rx, ybc - ry), P(cx + rx, ybc + ry)], fill=255)
                break
            top = [P(xa, ytc), P(xb, ytc)] if s.kind == "cylinder" else [P(cx, ytc)]
            d.polygon(top + bottom, fill=col(f))
        if not silhouette and s.kind == "cylinder":
            d.ellipse(
                [P(cx - rx, ytc - ry), P(cx + rx, ytc + ry)], fill=col(1.22), outline=edge, width=lw
            )


def _mask(s: Solid, box: tuple[int, int, int, int], others: list[Solid]) -> tuple[int, int]:
    """(pixels of `s`, pixels of `s` covered by `others`) inside `box`, at 1×."""
    x1, y1, x2, y2 = box
    size = (x2 - x1 + 1, y2 - y1 + 1)
    own = Image.new("L", size, 0)
    _draw_solid(ImageDraw.Draw(own), s, x1, y1, 1, True)
    cover = Image.new("L", size, 0)
    dc = ImageDraw.Draw(cover)
    for o in others:
        _draw_solid(dc, o, x1, y1, 1, True)
    a, b = np.asarray(own) > 0, np.asarray(cover) > 0
    return int(a.sum()), int((a & b).sum())


def occlusion(solids: tuple[Solid, ...]) -> list[float]:
    """Fraction of each solid's silhouette hidden by solids drawn after it (painter's order)."""
    out = []
    for i, s in enumerate(solids):
        box = (s.left, s.top, s.right, s.bottom)
        later = [
            o
            for o in solids[i + 1 :]
            if o.left <= s.right and s.left <= o.right and o.top <= s.bottom and s.top <= o.bottom
        ]
        if not later:
            out.append(0.0)
            continue
        own, hidden = _mask(s, box, later)
        out.append(hidden / max(1, own))
    return out


def describe(s: Solid) -> str:
    return f"the {s.color} {s.kind}"


class SynthSpatial(SynthDataset):
    """SAT/BLINK-like spatial relations among solids on a ground plane (option_text answers)."""

    name = "SynthSpatial"
    SCENE: ClassVar[dict[str, tuple]] = {
        "n_objects": N_OBJECTS,
        "families": FAMILIES,
        "min_dcx": (MIN_DCX, MIN_DCX),
    }
    """`n_objects`: solids per scene; `families`: question families drawn from; `min_dcx`: px
    between the two box centres of a left/right question, drawn per sample from the range."""
    SCENE_BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {"n_objects": (2, 8), "min_dcx": (0, 400)}

    def _generate(self, rng: np.random.Generator, sample_id: str, index: int) -> Sample:
        sc = self.scene
        k = int(rng.integers(WIDTH[0] // 4, WIDTH[1] // 4 + 1))
        w, h = 4 * k, 3 * k
        horizon = int(rng.integers(math.ceil(h * HORIZON[0]), math.floor(h * HORIZON[1]) + 1))
        focal = w * float(rng.uniform(0.20, 0.25))
        gain = float(h - 1 - _MARGIN - horizon)  # z = 1 stands on the bottom margin
        families, (n_lo, n_hi) = sc["families"], sc["n_objects"]
        family = families[int(rng.integers(len(families)))]
        min_dcx = sc["min_dcx"][0]
        if sc["min_dcx"][1] != sc["min_dcx"][0]:  # drawn only when a range is asked for
            min_dcx = int(rng.integers(sc["min_dcx"][0], sc["min_dcx"][1] + 1))
        attempt = 0
        while True:  # redraw until a layout fits and can pose the family (a few tries at most)
            attempt += 1
            n = int(rng.integers(n_lo, n_hi + 1)) if attempt < 40 else n_lo
            solids = self._layout(rng, n, w, h, horizon, focal, gain)
            if solids is None:
                continue
            q = self._question(rng, family, solids, min_dcx)
            if q is not None:
                break
        text, options, answer, targets = q
        sky = _SKIES[int(rng.integers(len(_SKIES)))]
        ground = _GROUNDS[int(rng.integers(len(_GROUNDS)))]
        scene = SpatialScene(
            w,
            h,
            horizon,
            focal,
            gain,
            sky,
            ground,
            float(rng.uniform(0.6, 0.9)),
            float(rng.uniform(0.0, 1.0)),
            solids,
        )
        objects = tuple(
            SceneObject(
                f"o{i}",
                s.kind,
                {"color": s.color, "shape": s.kind, "depth": s.z},
                (float(s.left), float(s.top), float(s.right), float(s.bottom)),
            )
            for i, s in enumerate(solids)
        )
        return Sample(
            sample_id=sample_id,
            question=f"{IMAGE_MARKER}{text}\n{fmt_options(options)}",
            image=functools.partial(render_spatial, scene),
            answer=answer,
            answer_kind="option_text",
            options=options,
            objects=objects,
            target_ids=tuple(f"o{i}" for i in targets),
            meta={"generator": self.name, "family": family},
        )

    @staticmethod
    def _layout(
        rng: np.random.Generator, n: int, w: int, h: int, horizon: int, focal: float, gain: float
    ) -> tuple[Solid, ...] | None:
        """n solids inside the canvas, not interpenetrating, each ≤ 30 % occluded; None to redraw."""
        placed: list[Solid] = []
        for _ in range(n):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
            for _try in range(24):
                z = round(float(rng.uniform(*Z_RANGE)), 2)
                scale = focal / z
                yb = horizon + round(gain / z)
                half = int(0.5 * scale) + 1
                lo, hi = _MARGIN + half, w - 1 - _MARGIN - half
                cx = int(rng.integers(lo, hi + 1))
                s = _solid(kind, color, z, cx, yb, scale, w // 2)
                if s.left < _MARGIN or s.right > w - 1 - _MARGIN or s.top < _MARGIN:
                    continue
                x_world = (cx - w / 2) * z / focal
                if all(
                    math.hypot((o.cx - w / 2) * o.z / focal - x_world, o.z - z) >= _MIN_SEP
                    for o in placed
                ):
                    placed.append(s)
                    break
            else:
                return None
        solids = tuple(sorted(placed, key=lambda s: -s.z))  # painter's order: far first
        if max(occlusion(solids)) > MAX_OCCLUSION:
            return None
        return solids

    @staticmethod
    def _question(
        rng: np.random.Generator, family: str, solids: tuple[Solid, ...], min_dcx: int = MIN_DCX
    ):
        """(text, options, answer, target indices) or None when this layout can't pose `family`."""
        descs = [(s.color, s.kind) for s in solids]
        unique = [i for i, d in enumerate(descs) if descs.count(d) == 1]
        if family == "count":
            present = sorted({s.kind for s in solids}, key=KINDS.index)
            kind = present[int(rng.integers(len(present)))]
            targets = tuple(i for i, s in enumerate(solids) if s.kind == kind)
            c = len(targets)
            pool = [v for v in range(max(0, c - 3), c + 4) if v != c]
            picks = [pool[int(i)] for i in rng.choice(len(pool), size=3, replace=False)]
            options = [str(v) for v in [c, *picks]]
            options = tuple(options[int(i)] for i in rng.permutation(4))
            tmpl = ("How many {} are there in the image?", "How many {} are in the scene?")
            text = tmpl[int(rng.integers(2))].format(PLURAL[kind])
            return text, options, str(c), targets

        def cxd(s: Solid) -> int:  # doubled box centre: exact integer
            return s.left + s.right

        if family == "left_right":
            pairs = [
                (i, j)
                for i in unique
                for j in unique
                if i != j and abs(cxd(solids[i]) - cxd(solids[j])) >= 2 * min_dcx
            ]
        else:
            pairs = [
                (i, j)
                for i in unique
                for j in unique
                if i != j and abs(solids[i].z - solids[j].z) >= MIN_DZ
            ]
        if not pairs:
            return None
        i, j = pairs[int(rng.integers(len(pairs)))]
        a, b = solids[i], solids[j]
        if family == "left_right":
            tmpl = (
                "Is {a} to the left or to the right of {b}?",
                "From the camera's viewpoint, is {a} to the left or right of {b}?",
            )
            text = tmpl[int(rng.integers(2))].format(a=describe(a), b=describe(b))
            answer = "left" if cxd(a) < cxd(b) else "right"
            options = ("left", "right") if rng.integers(2) == 0 else ("right", "left")
        else:
            tmpl = (
                "Which object is closer to the camera, {a} or {b}?",
                "Which is closer to the camera taking this photo, {a} or {b}?",
            )
            text = tmpl[int(rng.integers(2))].format(a=describe(a), b=describe(b))
            answer = describe(a) if a.z < b.z else describe(b)
            options = (describe(a), describe(b))
            if rng.integers(2):
                options = options[::-1]
        return text[0].upper() + text[1:], options, answer, (i, j)


def _background(scene: SpatialScene) -> Image.Image:
    """Sky gradient over a perspective-tiled, hazy ground."""
    w, h, hy = scene.width, scene.height, scene.horizon
    zenith, haze = scene.sky
    ground_far = mix(scene.ground, haze, 0.55)
    col = []
    for y in range(h):
        if y < hy:
            col.append(mix(zenith, haze, (y / max(1, hy - 1)) ** 1.6))
        else:
            col.append(
                mix(ground_far, scene.ground, min(1.0, ((y - hy) / max(1, h - hy)) ** 0.5 * 1.3))
            )
    img = Image.frombytes("RGB", (1, h), bytes(v for c in col for v in c)).resize(
        (w, h), Image.Resampling.NEAREST
    )
    # Floor tiles: rows at uniform world depth, columns at uniform world X, darker squares only.
    mask = Image.new("L", (w, h), 0)
    dm = ImageDraw.Draw(mask)
    f, g, t = scene.focal, scene.ground_gain, scene.tile
    z_near = g / (h - hy)
    z = z_near - (z_near % t) + scene.tile_phase * t - t
    row = 0
    while z < 14.0:
        za, zb = max(z, 0.05), z + t
        if zb > z_near:
            ya, yb = hy + g / za, hy + g / zb
            alpha = round(46 * min(1.0, 1.6 / zb))
            x_max = (w / 2) * zb / f
            i0 = math.floor(-x_max / t) - 1
            for i in range(i0, -i0 + 1):
                if (i + row) % 2:
                    continue
                xa, xb = i * t, (i + 1) * t
                quad = [
                    (w / 2 + f * xa / za, ya),
                    (w / 2 + f * xb / za, ya),
                    (w / 2 + f * xb / zb, yb),
                    (w / 2 + f * xa / zb, yb),
                ]
                dm.polygon([(round(x), round(y)) for x, y in quad], fill=alpha)
        z += t
        row += 1
    img.paste(shade(scene.ground, 0.55), None, mask)
    return img


def _shadows(img: Image.Image, scene: SpatialScene) -> None:
    """Soft contact shadows (light from the upper left: shadows fall right and back)."""
    q = 4
    lw, lh = -(-scene.width // q), -(-scene.height // q)
    mask = Image.new("L", (lw, lh), 0)
    dm = ImageDraw.Draw(mask)
    for s in scene.solids:
        rx, ry = 0.62 * s.w, max(1.5, 1.25 * s.ry)
        cx, cy = s.cx + 0.28 * s.w, s.yb - 1.1 * s.ry
        dm.ellipse(
            [
                round((cx - rx) / q),
                round((cy - ry) / q),
                round((cx + rx) / q),
                round((cy + ry) / q),
            ],
            fill=120,
        )
    mask = mask.filter(ImageFilter.GaussianBlur(2)).resize(img.size, Image.Resampling.BILINEAR)
    img.paste((24, 24, 28), None, mask)


def render_spatial(scene: SpatialScene) -> Image.Image:
    """Render a `SpatialScene` (RGB, scene.width × scene.height); a pure function of the scene."""
    img = _background(scene)
    _shadows(img, scene)
    for s in scene.solids:
        pw, ph = s.right - s.left + 1, s.bottom - s.top + 1
        big = Image.new("RGBA", (pw * _SS, ph * _SS), (0, 0, 0, 0))
        _draw_solid(ImageDraw.Draw(big), s, s.left, s.top, _SS, False)
        patch = big.resize((pw, ph), Image.Resampling.BOX)
        img.paste(patch, (s.left, s.top), patch)
    return img

"""The one model frame and the one crop of the project (docs/geometry.md).

Every image a model sees is the *model frame*: the original, converted to RGB and resized once to a
size whose sides are multiples of 28 (Qwen2-VL's patch merge size) within a pixel budget. Because the
frame already obeys the processor's own rule, the serving stack never resizes it again, so the
coordinates a model writes are the coordinates of the pixels it saw. Ground truth is mapped into
this frame with float scales (never rounded), and crops are cut from this frame, never from a crop.

Pure numpy/PIL, deterministic: the same inputs give bit-identical pixels.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import ExifTags, Image, ImageDraw, ImageOps

from vigorl_env.errors import DataFormatError

__all__ = [
    "FACTOR",
    "MAX_ASPECT",
    "CropInfo",
    "Frame",
    "crop_box",
    "crop_zoom",
    "effective_crop_size",
    "model_frame",
    "smart_resize",
    "to_rgb",
]

FACTOR = 28
"""Side multiple of every image given to the model (14 px patches, 2×2 merge)."""

MAX_ASPECT = 200
"""Qwen2-VL's processor refuses images more elongated than this; we refuse them first, by name."""

_DOT_RADIUS = 7
_DOT_FILL = (255, 0, 0)
_DOT_OUTLINE = (255, 255, 255)
_DOT_WIDTH = 2
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})


def smart_resize(
    width: int,
    height: int,
    *,
    min_pixels: int,
    max_pixels: int,
    max_side: int | None = None,
    factor: int = FACTOR,
    sample_id: str | None = None,
) -> tuple[int, int]:
    """Model-frame size ``(w, h)`` of a ``width``×``height`` image (docs/geometry.md#the-resize-rule steps 1–4, docs/geometry.md#the-max_side-pre-scale).

    The arithmetic is the documented rule's (docs/geometry.md#the-resize-rule), operation by operation (integer pre-scale, then Python floats in
    the written order), because a different but "equivalent" formula can round one pixel row
    differently and silently move every ground-truth coordinate.
    """
    if width < 1 or height < 1:
        raise ValueError(
            f"image size must be positive, got {width}x{height} (sample {sample_id!r})"
        )
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
    f = factor
    # 1. Pre-scale in exact integers; never up-scales.
    longest = max(width, height)
    if max_side is not None and longest > max_side:
        w1 = (width * max_side) // longest
        h1 = (height * max_side) // longest
    else:
        w1, h1 = width, height
    # 2. Aspect guard (a side floored to 0 by the pre-scale is infinitely elongated).
    if min(w1, h1) == 0 or max(w1, h1) / min(w1, h1) > MAX_ASPECT:
        raise DataFormatError(
            f"sample {sample_id!r}: image {width}x{height} (pre-scaled {w1}x{h1}) has aspect ratio "
            f"above {MAX_ASPECT}; the model's processor cannot represent it"
        )
    # 3. Nearest multiples of f (round half to even, as Python's round).
    h = max(f, round(h1 / f) * f)
    w = max(f, round(w1 / f) * f)
    # 4. Fit the pixel budget, keeping the aspect ratio as closely as multiples of f allow.
    if h * w > max_pixels:
        beta = math.sqrt(h1 * w1 / max_pixels)
        h = max(f, math.floor(h1 / beta / f) * f)
        w = max(f, math.floor(w1 / beta / f) * f)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (h1 * w1))
        h = math.ceil(h1 * beta / f) * f
        w = math.ceil(w1 * beta / f) * f
    return w, h


_ROTATED = frozenset(range(2, 9))
"""EXIF orientations that `ImageOps.exif_transpose` turns upright (1 and any other value: none)."""


def to_rgb(img: Image.Image) -> Image.Image:
    """A new RGB image of ``img`` as a viewer shows it (docs/geometry.md#colour-transparency-and-exif); ``img`` is not modified.

    EXIF orientation is applied first, so that the model sees the photo upright and all sizes are
    the upright ones (docs/geometry.md#colour-transparency-and-exif). Transparent pixels become white rather than whatever colour PIL's
    plain ``convert("RGB")`` would leave under them (often black), which can hide content.
    """
    upright = ImageOps.exif_transpose(img)  # always a new image (a copy when there is no tag)
    mode = upright.mode
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in upright.info):
        rgba = upright.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return upright
    return upright.convert("RGB")


@dataclass(frozen=True)
class Frame:
    """Original (after EXIF transpose) and model-frame sizes, and the maps between them."""

    original_size: tuple[int, int]
    model_size: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy) = (w / W0, h / H0)``: the one float per axis all ground truth is scaled by."""
        return (
            self.model_size[0] / self.original_size[0],
            self.model_size[1] / self.original_size[1],
        )

    def point_to_model(self, point: Sequence[float]) -> tuple[float, float]:
        """Original-frame point to model frame, as floats (no rounding, docs/geometry.md#the-resize-rule step 6)."""
        sx, sy = self.scale
        return (point[0] * sx, point[1] * sy)

    def box_to_model(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """Original-frame ``(x1, y1, x2, y2)`` to model frame, as floats."""
        sx, sy = self.scale
        return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)

    def point_to_original(self, point: Sequence[float]) -> tuple[float, float]:
        """Model-frame point back to the original frame: ``(x / sx, y / sy)``."""
        sx, sy = self.scale
        return (point[0] / sx, point[1] / sy)

    def box_to_original(self, box: Sequence[float]) -> tuple[float, float, float, float]:
        """Model-frame ``(x1, y1, x2, y2)`` back to the original frame."""
        sx, sy = self.scale
        return (box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy)

    def to_info(self) -> dict[str, list[Any]]:
        """``info["frame"]`` (docs/geometry.md#the-resize-rule step 7), built fresh on every call (docs/envs.md#info-keys)."""
        return {
            "original_size": list(self.original_size),
            "model_size": list(self.model_size),
            "scale": list(self.scale),
        }


def model_frame(
    img: Image.Image,
    *,
    min_pixels: int,
    max_pixels: int,
    max_side: int | None = None,
    sample_id: str | None = None,
) -> tuple[Image.Image, Frame]:
    """The model-frame image of ``img`` and its :class:`Frame` (docs/geometry.md#the-resize-rule step 5).

    One bicubic resize straight from the upright original to ``(w, h)``: resizing through the
    pre-scaled size would resample twice and differ from the documented pixels. When the rule leaves
    the size unchanged (it is the identity on sides that are multiples of 28 within the budget),
    the RGB copy is returned as is; PIL's resize to the same size is a plain copy anyway.

    An RGB image without an EXIF rotation is resized straight from ``img`` (``to_rgb`` would only
    copy it first: about 20 % of a large frame's cost, for the same pixels); ``img`` is not
    modified and the frame is always a new image.
    """
    img.load()
    if img.mode == "RGB" and img.getexif().get(ExifTags.Base.Orientation, 1) not in _ROTATED:
        rgb = img
    else:
        rgb = to_rgb(img)
    original = rgb.size
    size = smart_resize(
        original[0],
        original[1],
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        max_side=max_side,
        sample_id=sample_id,
    )
    frame = Frame(original_size=original, model_size=size)
    if size == original:
        return (rgb.copy() if rgb is img else rgb), frame
    return rgb.resize(size, Image.Resampling.BICUBIC), frame


def effective_crop_size(crop_size: int) -> int:
    """Side of the zoomed crop the model sees: ``crop_size`` rounded to a multiple of 28."""
    return max(FACTOR, round(crop_size / FACTOR) * FACTOR)


@dataclass(frozen=True)
class CropInfo:
    """Where a crop was cut: the clamped centre, the pixel box ``[l, r) × [t, b)``, and whether
    the requested point lay outside the frame."""

    point: tuple[int, int]
    box: tuple[int, int, int, int]
    clamped: bool

    def to_info(self) -> dict[str, Any]:
        """``info["crop"]`` of a step (docs/envs.md#info-keys), built fresh on every call."""
        return {"point": list(self.point), "box": list(self.box), "clamped": self.clamped}


def crop_box(width: int, height: int, point: Sequence[int], offset: int) -> CropInfo:
    """Crop box around an integer ``point`` in a ``width``×``height`` frame (docs/geometry.md#crop steps 1–2).

    A point outside the frame is clamped to the nearest pixel rather than rejected: the model
    still gets a view, and ``clamped`` records that it asked for something off-image.
    """
    x, y = operator.index(point[0]), operator.index(point[1])
    if offset < 1:
        raise ValueError(f"offset must be >= 1, got {offset}")
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    cx = min(max(x, 0), width - 1)
    cy = min(max(y, 0), height - 1)
    left = max(0, cx - offset)
    top = max(0, cy - offset)
    right = min(width, cx + offset)
    bottom = min(height, cy + offset)
    if right <= left:
        right = left + 1
    if bottom <= top:
        bottom = top + 1
    return CropInfo(point=(cx, cy), box=(left, top, right, bottom), clamped=(cx, cy) != (x, y))


def crop_zoom(
    frame_img: Image.Image,
    point: Sequence[int],
    *,
    offset: int,
    crop_size: int,
    draw_dot: bool,
) -> tuple[Image.Image, CropInfo]:
    """Cut, mark and zoom one crop of the model frame (docs/geometry.md#crop steps 1–4).

    Hot path (every tool call): exactly one crop, an optional dot drawn on that fresh crop, and one
    bicubic resize. ``Image.resize(box=...)`` is deliberately not used: its filter support reaches
    pixels outside the box, so it does not equal the documented crop-then-resize.
    """
    info = crop_box(frame_img.width, frame_img.height, point, offset)
    region = frame_img.crop(info.box)  # a new image; the frame is never drawn on
    if draw_dot:
        dx = info.point[0] - info.box[0]
        dy = info.point[1] - info.box[1]
        r = _DOT_RADIUS
        ImageDraw.Draw(region).ellipse(
            (dx - r, dy - r, dx + r, dy + r),
            fill=_DOT_FILL,
            outline=_DOT_OUTLINE,
            width=_DOT_WIDTH,
        )
    side = effective_crop_size(crop_size)
    if region.size == (side, side):
        return region, info
    return region.resize((side, side), Image.Resampling.BICUBIC), info

"""Model frame and crop geometry against docs/geometry.md (its worked examples are normative)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vigorl_env.errors import DataFormatError
from vigorl_env.geometry import (
    FACTOR,
    CropInfo,
    Frame,
    crop_box,
    crop_zoom,
    effective_crop_size,
    model_frame,
    smart_resize,
    to_rgb,
)

M_BIG = 12_960_000
M_WEB = 4_194_304
M_SEARCH = 2_850_000
M_MIN = 3136


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr)


# --- the resize rule (docs/geometry.md#the-resize-rule) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "kwargs", "expected"),
    [
        # 1582/28 = 56.5 rounds half-even to 56.
        ((2246, 1582), {"max_pixels": M_BIG}, (2240, 1568)),
        # Round up: 1080/28 = 38.57 -> 39.
        ((1920, 1080), {"max_pixels": M_WEB}, (1932, 1092)),
        # beta = 1.40625.
        ((3840, 2160), {"max_pixels": M_WEB}, (2716, 1512)),
        # Pre-scale to 1260x945 first.
        ((1920, 1440), {"max_pixels": M_BIG, "max_side": 1260}, (1260, 952)),
        # Up-scale to reach min_pixels.
        ((50, 40), {"max_pixels": M_BIG}, (84, 56)),
    ],
)
def test_smart_resize_worked_examples(size, kwargs, expected):
    assert smart_resize(*size, min_pixels=M_MIN, **kwargs) == expected


def test_worked_example_tokens_and_scale():
    w, h = smart_resize(1920, 1080, min_pixels=M_MIN, max_pixels=M_WEB)
    assert (w // 28) * (h // 28) == 2691
    frame = Frame(original_size=(1920, 1440), model_size=(1260, 952))
    sx, sy = frame.scale
    assert sx == 0.65625
    assert sy == pytest.approx(0.66111, abs=1e-5)
    assert sy == 952 / 1440


def test_beta_of_the_3840_example():
    assert math.sqrt(2160 * 3840 / M_WEB) == 1.40625


@pytest.mark.parametrize(
    ("max_pixels", "tokens"), [(M_BIG, 16_530), (M_WEB, 5_349), (M_SEARCH, 3_635)]
)
def test_token_caps(max_pixels, tokens):
    # The largest frame a budget allows, in 28x28 tokens, is floor(M / 784); a square-ish huge
    # image reaches close to it and never exceeds it.
    assert max_pixels // (FACTOR * FACTOR) == tokens
    for size in [(10_000, 10_000), (16_000, 9_000), (9_000, 16_000), (5_000, 3_000)]:
        w, h = smart_resize(*size, min_pixels=M_MIN, max_pixels=max_pixels)
        assert (w // 28) * (h // 28) <= tokens


@pytest.mark.parametrize(("crop", "tokens"), [(672, 576), (504, 324), (392, 196)])
def test_crop_tokens(crop, tokens):
    assert (crop // 28) ** 2 == tokens


def test_prescale_is_integer_division():
    # integer pre-scale (docs/geometry.md#the-max_side-pre-scale): H1 = (303 * 1260) // 1818 = 210 exactly, so h = round(7.5) * 28 = 224. The float
    # reading floor(303 * (1260 / 1818)) = floor(209.99999999999997) = 209 would give 196.
    assert (303 * 1260) // 1818 == 210
    assert math.floor(303 * (1260 / 1818)) == 209
    assert smart_resize(1818, 303, min_pixels=M_MIN, max_pixels=M_BIG, max_side=1260) == (
        1260,
        224,
    )
    assert smart_resize(2060, 618, min_pixels=M_MIN, max_pixels=M_BIG, max_side=1260) == (
        1260,
        392,
    )
    # Same for the width of a portrait image.
    assert smart_resize(303, 1818, min_pixels=M_MIN, max_pixels=M_BIG, max_side=1260) == (
        224,
        1260,
    )
    # No pre-scale when the long side equals max_side, nor ever an up-scale.
    assert smart_resize(1260, 700, min_pixels=M_MIN, max_pixels=M_BIG, max_side=1260) == (
        1260,
        700,
    )
    assert smart_resize(500, 300, min_pixels=M_MIN, max_pixels=M_BIG, max_side=1260) == (
        504,
        308,
    )
    # max_side=None disables the pre-scale.
    assert smart_resize(1818, 303, min_pixels=M_MIN, max_pixels=M_BIG, max_side=None) == (
        1820,
        308,
    )


def test_identity_on_conforming_sizes():
    # The documented claim that lets the serving stack skip resizing: multiples of 28 within [m, M].
    for w, h in [(28 * 20, 28 * 30), (1260, 952), (2240, 1568), (56, 56)]:
        assert smart_resize(w, h, min_pixels=M_MIN, max_pixels=M_BIG) == (w, h)
    # ...but not with a max_side pre-scale below the long side.
    assert smart_resize(1400, 700, min_pixels=M_MIN, max_pixels=M_BIG, max_side=1260) != (
        1400,
        700,
    )


def test_aspect_over_200_names_the_sample():
    with pytest.raises(DataFormatError, match="sample-42"):
        smart_resize(201 * 5, 5, min_pixels=M_MIN, max_pixels=M_BIG, sample_id="sample-42")
    with pytest.raises(DataFormatError):
        smart_resize(3, 1000, min_pixels=M_MIN, max_pixels=M_BIG)
    # Exactly 200 is allowed.
    assert smart_resize(2800, 14, min_pixels=M_MIN, max_pixels=M_BIG) == (2800, 28)
    # A pre-scale that floors a side to 0 is also refused (not a ZeroDivisionError).
    with pytest.raises(DataFormatError):
        smart_resize(10, 1000, min_pixels=M_MIN, max_pixels=M_BIG, max_side=50)


def test_invalid_sizes():
    with pytest.raises(ValueError):
        smart_resize(0, 10, min_pixels=M_MIN, max_pixels=M_BIG)
    with pytest.raises(ValueError):
        smart_resize(10, 10, min_pixels=M_BIG + 1, max_pixels=M_BIG)


@settings(max_examples=400, deadline=None)
@given(
    w=st.integers(1, 20_000),
    aspect=st.floats(1.0, 200.0),
    portrait=st.booleans(),
    max_pixels=st.sampled_from([M_SEARCH, M_WEB, M_BIG]),
    max_side=st.one_of(st.none(), st.integers(1260, 4000)),
)
def test_smart_resize_properties(w, aspect, portrait, max_pixels, max_side):
    h = max(1, int(w / aspect))
    if portrait:
        w, h = h, w
    longest = max(w, h)
    if max_side is not None and longest > max_side:
        w1, h1 = (w * max_side) // longest, (h * max_side) // longest
    else:
        w1, h1 = w, h
    if min(w1, h1) == 0 or max(w1, h1) / min(w1, h1) > 200:
        with pytest.raises(DataFormatError):
            smart_resize(w, h, min_pixels=M_MIN, max_pixels=max_pixels, max_side=max_side)
        return
    mw, mh = smart_resize(w, h, min_pixels=M_MIN, max_pixels=max_pixels, max_side=max_side)
    assert mw % 28 == 0 and mh % 28 == 0
    assert M_MIN <= mw * mh <= max_pixels
    # Both sides are one common scale of (w1, h1), each off by less than one 28-px step, so the
    # aspect ratio is kept up to that (unless a side is clamped to the 28-px minimum).
    if min(mw, mh) > 56:
        a, b = 28 / (mw - 28), 28 / (mh - 28)
        ratio = (mw / mh) / (w1 / h1)
        assert (1 - a) / (1 + b) - 1e-12 <= ratio <= (1 + a) / (1 - b) + 1e-12


# --- conversion and EXIF (docs/geometry.md#colour-transparency-and-exif) --------------------------------------------------------------


def test_rgba_composited_on_white():
    img = Image.new("RGBA", (4, 2), (255, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 255))
    img.putpixel((2, 0), (0, 0, 255, 128))
    before = img.tobytes()
    out = to_rgb(img)
    assert out.mode == "RGB" and out is not img
    assert out.getpixel((0, 0)) == (255, 255, 255)  # fully transparent -> white, not red/black
    assert out.getpixel((1, 0)) == (255, 0, 0)
    r, g, b = out.getpixel((2, 0))
    assert b == 255 and 126 <= r <= 128 and 126 <= g <= 128  # half blue over white
    assert img.tobytes() == before and img.mode == "RGBA"  # input untouched


def test_la_and_pa_composited_on_white():
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    out = to_rgb(la)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 0, 0)
    pa = Image.new("RGBA", (2, 1), (0, 0, 0, 0)).convert("PA")
    assert pa.mode == "PA"
    assert to_rgb(pa).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_composited_on_white():
    p = Image.new("P", (3, 1), 0)
    p.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    p.putpixel((1, 0), 1)
    p.info["transparency"] = 0  # index 0 (black) is transparent
    out = to_rgb(p)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (0, 255, 0)
    # Round trip through PNG (tRNS chunk) behaves the same.
    buf = io.BytesIO()
    p.save(buf, format="PNG")
    loaded = Image.open(io.BytesIO(buf.getvalue()))
    assert loaded.mode == "P" and "transparency" in loaded.info
    assert to_rgb(loaded).getpixel((0, 0)) == (255, 255, 255)


def test_opaque_modes_plain_convert():
    p = Image.new("P", (1, 1), 0)
    p.putpalette([10, 20, 30] + [0] * 765)
    assert to_rgb(p).getpixel((0, 0)) == (10, 20, 30)  # no transparency: plain convert
    assert to_rgb(Image.new("L", (1, 1), 77)).getpixel((0, 0)) == (77, 77, 77)
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    out = to_rgb(rgb)
    assert out is not rgb and out.tobytes() == rgb.tobytes()
    out.putpixel((0, 0), (9, 9, 9))
    assert rgb.getpixel((0, 0)) == (1, 2, 3)  # a copy, never the caller's image


def _jpeg_with_orientation(w: int, h: int, orientation: int) -> Image.Image:
    img = Image.new("RGB", (w, h), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, w // 4, h // 4))  # red block top-left as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return Image.open(io.BytesIO(buf.getvalue()))


def test_exif_orientation_applied_before_sizing():
    stored = _jpeg_with_orientation(400, 200, 6)  # 6 = rotate 90° clockwise to display
    assert stored.size == (400, 200)
    frame_img, frame = model_frame(stored, min_pixels=M_MIN, max_pixels=M_BIG)
    # W0 x H0 is the upright size (docs/geometry.md#colour-transparency-and-exif); 200 and 400 round to 196 and 392.
    assert frame.original_size == (200, 400)
    assert frame.model_size == (196, 392) == frame_img.size
    assert frame.to_info()["scale"] == [196 / 200, 392 / 400]
    # Stored top-left red block ends up top-right after a clockwise rotation.
    arr = np.asarray(frame_img)
    assert tuple(arr[10, 185]) == pytest.approx((255, 0, 0), abs=40)
    assert tuple(arr[10, 10]) == pytest.approx((0, 0, 255), abs=40)
    assert stored.size == (400, 200)  # input not transposed in place


# --- model frame ----------------------------------------------------------------------------------


def test_model_frame_single_bicubic_resize():
    img = _noise(1920, 1440, seed=1)
    frame_img, frame = model_frame(img, min_pixels=M_MIN, max_pixels=M_BIG, max_side=1260)
    assert frame == Frame(original_size=(1920, 1440), model_size=(1260, 952))
    # One resize straight from the original (not through the 1260x945 pre-scaled size).
    expected = img.resize((1260, 952), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(frame_img), np.asarray(expected))
    twice = img.resize((1260, 945), Image.Resampling.BICUBIC).resize(
        (1260, 952), Image.Resampling.BICUBIC
    )
    assert not np.array_equal(np.asarray(frame_img), np.asarray(twice))
    assert frame.to_info() == {
        "original_size": [1920, 1440],
        "model_size": [1260, 952],
        "scale": [0.65625, 952 / 1440],
    }


def test_model_frame_identity_when_conforming():
    img = _noise(280, 168, seed=2)
    frame_img, frame = model_frame(img, min_pixels=M_MIN, max_pixels=M_BIG)
    assert frame.model_size == (280, 168) and frame.scale == (1.0, 1.0)
    assert frame_img is not img
    assert frame_img.tobytes() == img.tobytes()
    # Equal to what a same-size bicubic "resize" would give.
    assert frame_img.tobytes() == img.resize((280, 168), Image.Resampling.BICUBIC).tobytes()


def test_model_frame_deterministic():
    img = _noise(333, 211, seed=3)
    a, _ = model_frame(img, min_pixels=M_MIN, max_pixels=M_WEB)
    b, _ = model_frame(img, min_pixels=M_MIN, max_pixels=M_WEB)
    assert a.tobytes() == b.tobytes()


def test_to_info_fresh_lists():
    frame = Frame(original_size=(100, 50), model_size=(112, 56))
    a, b = frame.to_info(), frame.to_info()
    assert a == b and a is not b
    assert all(a[k] is not b[k] for k in a)


def test_point_and_box_maps():
    frame = Frame(original_size=(1920, 1440), model_size=(1260, 952))
    sx, sy = 1260 / 1920, 952 / 1440
    assert frame.point_to_model((100, 200)) == (100 * sx, 200 * sy)
    assert frame.box_to_model((10, 20, 30, 40)) == (10 * sx, 20 * sy, 30 * sx, 40 * sy)
    assert frame.point_to_original((126, 95.2)) == (126 / sx, 95.2 / sy)
    assert frame.box_to_original((0, 0, 1260, 952)) == (0.0, 0.0, 1920.0, 1440.0)


@given(
    w0=st.integers(1, 5000),
    h0=st.integers(1, 5000),
    w=st.integers(28, 5000),
    h=st.integers(28, 5000),
    x=st.floats(-1e4, 1e4),
    y=st.floats(-1e4, 1e4),
)
def test_point_round_trip(w0, h0, w, h, x, y):
    frame = Frame(original_size=(w0, h0), model_size=(w, h))
    mx, my = frame.point_to_model((x, y))
    ox, oy = frame.point_to_original((mx, my))
    assert ox == pytest.approx(x, rel=1e-12, abs=1e-9)
    assert oy == pytest.approx(y, rel=1e-12, abs=1e-9)
    bx = frame.box_to_original(frame.box_to_model((x, y, x + 1, y + 2)))
    assert bx == pytest.approx((x, y, x + 1, y + 2), rel=1e-12, abs=1e-9)


# --- crop geometry (docs/geometry.md#crop) -----------------------------------------------------------------------------


@pytest.mark.parametrize(("c", "eff"), [(512, 504), (384, 392), (672, 672), (28, 28), (1, 28)])
def test_effective_crop_size(c, eff):
    assert effective_crop_size(c) == eff


def test_crop_box_spec_examples():
    info = crop_box(1008, 756, (1000, 20), 182)
    assert info == CropInfo(point=(1000, 20), box=(818, 0, 1008, 202), clamped=False)
    info = crop_box(1008, 756, (-40, 300), 182)
    assert info == CropInfo(point=(0, 300), box=(0, 118, 182, 482), clamped=True)
    assert info.to_info() == {"point": [0, 300], "box": [0, 118, 182, 482], "clamped": True}
    # Interior point: a full 2o x 2o box.
    assert crop_box(1008, 756, (500, 400), 182).box == (318, 218, 682, 582)
    # Far outside on the other corner.
    assert crop_box(1008, 756, (5000, 9000), 50) == CropInfo(
        point=(1007, 755), box=(957, 705, 1008, 756), clamped=True
    )


def test_crop_box_rejects_float_points():
    with pytest.raises(TypeError):
        crop_box(100, 100, (1.5, 2), 10)
    assert crop_box(100, 100, (np.int64(5), np.int32(6)), 10).point == (5, 6)


def test_crop_info_to_info_fresh():
    info = crop_box(100, 100, (5, 5), 10)
    a, b = info.to_info(), info.to_info()
    assert a == b and a["box"] is not b["box"] and a["point"] is not b["point"]


@settings(max_examples=500, deadline=None)
@given(
    w=st.integers(1, 3000),
    h=st.integers(1, 3000),
    x=st.integers(-10_000, 10_000),
    y=st.integers(-10_000, 10_000),
    o=st.integers(1, 600),
)
def test_crop_box_properties(w, h, x, y, o):
    info = crop_box(w, h, (x, y), o)
    left, top, right, bottom = info.box
    assert 0 <= left < right <= w
    assert 0 <= top < bottom <= h
    assert right - left <= 2 * o and bottom - top <= 2 * o
    cx, cy = info.point
    assert left <= cx < right and top <= cy < bottom
    assert info.clamped == ((cx, cy) != (x, y))
    assert (0 <= x < w and 0 <= y < h) == (not info.clamped)


def test_crop_zoom_matches_numpy_slice_then_resize():
    arr = np.random.default_rng(4).integers(0, 256, size=(756, 1008, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    for point, box in [((1000, 20), (818, 0, 1008, 202)), ((-40, 300), (0, 118, 182, 482))]:
        out, info = crop_zoom(img, point, offset=182, crop_size=672, draw_dot=False)
        assert info.box == box
        left, top, right, bottom = box
        ref = Image.fromarray(arr[top:bottom, left:right]).resize(
            (672, 672), Image.Resampling.BICUBIC
        )
        assert out.size == (672, 672) and out.mode == "RGB"
        assert np.array_equal(np.asarray(out), np.asarray(ref))
        # resize(box=...) reads outside the box, so it is not the documented crop-then-resize.
        boxed = img.resize((672, 672), Image.Resampling.BICUBIC, box=box)
        assert not np.array_equal(np.asarray(out), np.asarray(boxed))
    assert np.array_equal(np.asarray(img), arr)  # the frame is never modified


def test_crop_zoom_rounds_crop_size():
    img = _noise(600, 500)
    out, _ = crop_zoom(img, (300, 250), offset=100, crop_size=512, draw_dot=False)
    assert out.size == (504, 504)
    out, _ = crop_zoom(img, (300, 250), offset=50, crop_size=384, draw_dot=True)
    assert out.size == (392, 392)


def test_crop_zoom_dot_pixels():
    # offset 196 and c' = 392: the interior crop is already 392x392, so the dot is seen unresampled.
    img = Image.new("RGB", (1000, 800), (0, 0, 255))
    before = img.tobytes()
    out, info = crop_zoom(img, (500, 400), offset=196, crop_size=392, draw_dot=True)
    assert info.box == (304, 204, 696, 596) and out.size == (392, 392)
    a = np.asarray(out)
    dx, dy = 196, 196
    assert tuple(a[dy, dx]) == (255, 0, 0)
    for d in range(-5, 6):  # red interior along both axes
        assert tuple(a[dy, dx + d]) == (255, 0, 0)
        assert tuple(a[dy + d, dx]) == (255, 0, 0)
    for d in (-7, -6, 6, 7):  # 2-px white outline at radius 6..7
        assert tuple(a[dy, dx + d]) == (255, 255, 255)
        assert tuple(a[dy + d, dx]) == (255, 255, 255)
    for d in (-9, -8, 8, 9):
        assert tuple(a[dy, dx + d]) == (0, 0, 255)
    assert tuple(a[0, 0]) == (0, 0, 255)
    assert img.tobytes() == before  # drawn on the crop, never on the frame
    # Without the dot the same crop is plain blue.
    plain, _ = crop_zoom(img, (500, 400), offset=196, crop_size=392, draw_dot=False)
    assert np.all(np.asarray(plain) == (0, 0, 255))


def test_crop_zoom_dot_after_resize_and_at_border():
    img = Image.new("RGB", (1008, 756), (0, 0, 255))
    # Clamped corner point: dot centred on pixel (0, 0) of the crop, then zoomed 190x202 -> 672.
    out, info = crop_zoom(img, (-40, -40), offset=100, crop_size=672, draw_dot=True)
    assert info.point == (0, 0) and info.box == (0, 0, 100, 100) and info.clamped
    a = np.asarray(out)
    assert tuple(a[3, 3]) == (255, 0, 0)  # the dot's centre lands at the top-left, red
    assert tuple(a[600, 600]) == (0, 0, 255)
    # Reference: the documented steps done by hand.
    ref = img.crop((0, 0, 100, 100))
    from PIL import ImageDraw

    ImageDraw.Draw(ref).ellipse((-7, -7, 7, 7), fill=(255, 0, 0), outline=(255, 255, 255), width=2)
    ref = ref.resize((672, 672), Image.Resampling.BICUBIC)
    assert out.tobytes() == ref.tobytes()


def test_crop_zoom_deterministic():
    img = _noise(500, 400, seed=9)
    a, ia = crop_zoom(img, (123, 321), offset=182, crop_size=672, draw_dot=True)
    b, ib = crop_zoom(img, (123, 321), offset=182, crop_size=672, draw_dot=True)
    assert ia == ib and a.tobytes() == b.tobytes()

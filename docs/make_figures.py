"""Draw the pictures of docs/geometry.md (and docs/envs.md) with the env's own frame and crop code.

    uv run python docs/make_figures.py            # writes docs/img/*.png, prints the resize table

Everything drawn here goes through `vigorl_env.geometry` (`smart_resize`, `model_frame`,
`crop_zoom`) or a real env (`render()`), on procedural images, so the pictures show what the code
does rather than what someone believed it does. The PNGs are palette-quantized to stay small.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import matplotlib
import numpy as np
from PIL import Image, ImageDraw

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

import vigorl_env  # noqa: F401  (registers the ids)
from vigorl_env.data.synth.grounding import SynthGrounding
from vigorl_env.data.synth.search import SynthSearch
from vigorl_env.geometry import crop_zoom, model_frame, smart_resize
from vigorl_env.protocol import format_tool_call

OUT = Path(__file__).resolve().parent / "img"
DPI = 80


def save(fig: plt.Figure, name: str, colors: int = 96) -> Path:
    """Save a figure as a palette PNG (a few tens of KB instead of a few hundred)."""
    path = OUT / name
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    img = Image.open(tmp).convert("RGB")
    img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    tmp.unlink()
    return path


# ----------------------------------------------------------------------------- a procedural photo
def photo(width: int = 4032, height: int = 3024) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A phone-photo-sized procedural scene (sky, floor, a table, a mug) and the mug's box.

    Drawn with integer PIL primitives only, so it is the same image on every machine."""
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    sky = np.array([120, 170, 225]) * (1 - y) + np.array([230, 235, 240]) * y
    img = Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8))
    d = ImageDraw.Draw(img)
    horizon = int(height * 0.55)
    d.rectangle((0, horizon, width, height), fill=(150, 120, 90))
    for i in range(0, width, width // 12):  # floor boards
        d.line((i, horizon, i - width // 6, height), fill=(120, 95, 70), width=max(2, width // 800))
    table = (int(width * 0.35), int(height * 0.52), int(width * 0.8), int(height * 0.62))
    d.rectangle(table, fill=(95, 60, 35))
    for x in (table[0] + width // 40, table[2] - width // 40):
        d.rectangle(
            (x - width // 120, table[3], x + width // 120, int(height * 0.92)), fill=(80, 50, 30)
        )
    mug = (int(width * 0.6), int(height * 0.40), int(width * 0.667), int(height * 0.52))
    d.rectangle(mug, fill=(200, 40, 40))
    hx = mug[2]
    d.ellipse((hx - width // 100, mug[1] + height // 50, hx + width // 60, mug[3] - height // 40),
              outline=(200, 40, 40), width=max(3, width // 300))  # fmt: skip
    d.ellipse((int(width * 0.1), int(height * 0.08), int(width * 0.17), int(height * 0.17)),
              fill=(250, 220, 90))  # fmt: skip
    return img, mug


# ----------------------------------------------------------------------------- figures
def fig_model_frame() -> Path:
    """Original photo vs its model frames with and without the max_side pre-scale, drawn to scale."""
    img, mug = photo()
    variants = [
        ("max_side=1260 (spatial default)", dict(min_pixels=3136, max_pixels=12_960_000, max_side=1260)),
        ("max_side=None", dict(min_pixels=3136, max_pixels=12_960_000, max_side=None)),
        ("max_pixels=2,850,000 (visual search)", dict(min_pixels=3136, max_pixels=2_850_000, max_side=None)),
    ]  # fmt: skip
    frames = [(label, *model_frame(img, **kw)) for label, kw in variants]
    big = max(img.width, *(f.model_size[0] for _, _, f in frames))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.6), gridspec_kw={"wspace": 0.2, "hspace": 0.45})
    panels = [("original", img, None), *frames]
    for ax, (label, im, frame) in zip(axes.flat, panels, strict=True):
        w, h = im.size
        thumb = im.resize((max(1, w // 8), max(1, h // 8)), Image.Resampling.BILINEAR)
        ax.imshow(thumb, extent=(0, w, h, 0))
        ax.set_xlim(0, big)
        ax.set_ylim(big * 0.75, 0)
        box = mug if frame is None else frame.box_to_model(mug)
        ax.add_patch(Rectangle((box[0], box[1]), box[2] - box[0], box[3] - box[1],
                               fill=False, ec="lime", lw=2.5))  # fmt: skip
        if frame is None:
            title = f"original {w}×{h}\n({w * h / 1e6:.1f} MP)"
            note = f"mug box {tuple(int(v) for v in box)}"
        else:
            sx, sy = frame.scale
            title = f"{label}\n→ {w}×{h}, {w * h // 784:,} image tokens"
            note = f"scale ({sx:.4f}, {sy:.4f}); mug box ({', '.join(f'{v:.1f}' for v in box)})"
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(note, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle(
        "One resize per sample: the model frame, drawn to scale (axes in pixels)", fontsize=11
    )
    return save(fig, "model_frame.png", colors=128)


def _search_frame() -> Image.Image:
    sample = SynthSearch(split="test", dataset_seed=0)[3]
    frame_img, _ = model_frame(sample.image(), min_pixels=3136, max_pixels=2_850_000)
    return frame_img


def fig_crop() -> Path:
    """Three tool-call points on a model frame: inside, near a corner, outside (clamped)."""
    frame_img = _search_frame()
    w, h = frame_img.size
    points = [(w // 2, h // 2), (w - 60, 40), (-40, h // 3)]
    names = ["inside", "near a corner", "outside: clamped"]
    colors = ["#1f77b4", "#ff7f0e", "#d62728"]
    crops = [crop_zoom(frame_img, p, offset=182, crop_size=672, draw_dot=False) for p in points]
    fig = plt.figure(figsize=(15, 4.8))
    grid = fig.add_gridspec(1, 4, width_ratios=[2.2, 1, 1, 1], wspace=0.25)
    ax = fig.add_subplot(grid[0])
    ax.imshow(frame_img.resize((w // 3, h // 3)), extent=(0, w, h, 0))
    ax.set_xlim(-120, w + 20)
    ax.set_ylim(h + 20, -20)
    for (px, py), (_, info), c in zip(points, crops, colors, strict=True):
        left, top, right, bottom = info.box
        ax.add_patch(Rectangle((left, top), right - left, bottom - top, fill=False, ec=c, lw=2))
        ax.plot([px], [py], "x", color=c, ms=9, mew=2.5)
        if info.clamped:
            ax.annotate("", xy=info.point, xytext=(px, py),
                        arrowprops=dict(arrowstyle="->", color=c, lw=2.5))  # fmt: skip
    ax.set_title(f"model frame {w}×{h}: crop boxes (offset 182)", fontsize=10)
    ax.tick_params(labelsize=7)
    for i, ((px, py), (img, info), c, n) in enumerate(
        zip(points, crops, colors, names, strict=True)
    ):
        a = fig.add_subplot(grid[i + 1])
        a.imshow(img)
        x0, y0, x1, y1 = info.box
        a.set_title(
            f"{n}\npoint ({px}, {py}) → {tuple(info.point)}\nbox [{x0}, {y0}, {x1}, {y1}]"
            f"\n{x1 - x0}×{y1 - y0} px → {img.width}×{img.height}",
            fontsize=9,
            color=c,
        )
        a.axis("off")
    return save(fig, "crop.png", colors=128)


def fig_crop_dot() -> Path:
    """Web grounding: a small crop (offset 50) with the red dot, zoomed to 392×392."""
    sample = SynthGrounding(split="test", dataset_seed=0)[2]
    frame_img, frame = model_frame(sample.image(), min_pixels=3136, max_pixels=4_194_304)
    box = frame.box_to_model(sample.gt_box)
    point = (round((box[0] + box[2]) / 2), round((box[1] + box[3]) / 2))
    img, info = crop_zoom(frame_img, point, offset=50, crop_size=384, draw_dot=True)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.9), gridspec_kw={"width_ratios": [1.9, 1]})
    w, h = frame_img.size
    a.imshow(frame_img.resize((w // 2, h // 2)), extent=(0, w, h, 0))
    x0, y0, x1, y1 = info.box
    a.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="red", lw=2))
    a.set_title(f"{w}×{h} screen; question: {sample.question.removeprefix('<image>')}", fontsize=9)
    a.tick_params(labelsize=7)
    b.imshow(img)
    b.set_title(
        f"point {point}, box [{x0}, {y0}, {x1}, {y1}]\n100×100 px → {img.width}×{img.height}, dot drawn before the zoom",
        fontsize=9,
    )
    b.axis("off")
    return save(fig, "crop_dot.png", colors=128)


def fig_episode() -> Path:
    """A multi-turn SynthSearch episode through the real env: `render()` after two zooms."""
    env = gym.make("ViGoRL/SynthSearch-v0", render_mode="rgb_array", split="test")
    obs, info = env.reset(options={"index": 3})
    w, h = info["frame"]["model_size"]
    crops = []
    for x, y in ((w // 4, h // 3), (3 * w // 4, 2 * h // 3)):
        action = f"<think>\nLook at this region ({x}, {y}).\n</think>\n{format_tool_call(x, y)}"
        obs, _, _, _, info = env.step(action)
        crops.append((obs["image"], info["crop"]))
    picture = env.render()
    env.close()
    fig = plt.figure(figsize=(12, 4.4))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.6, 1, 1], wspace=0.1)
    ax = fig.add_subplot(grid[0])
    ax.imshow(Image.fromarray(picture).resize((w // 3, h // 3)), extent=(0, w, h, 0))
    ax.set_title("env.render(): model frame, crop boxes, points", fontsize=9)
    ax.tick_params(labelsize=7)
    for i, (img, crop) in enumerate(crops):
        a = fig.add_subplot(grid[i + 1])
        a.imshow(img)
        a.set_title(f"observation {i + 1}: crop around {tuple(crop['point'])}", fontsize=9)
        a.axis("off")
    return save(fig, "episode.png", colors=128)


# ----------------------------------------------------------------------------- the resize table
RESIZE_EXAMPLES = [
    ("phone photo, spatial defaults", 4032, 3024, 3136, 12_960_000, 1260),
    ("same photo, max_side=None", 4032, 3024, 3136, 12_960_000, None),
    ("same photo, visual-search budget", 4032, 3024, 3136, 2_850_000, None),
    ("V*Bench-sized image (VStar)", 2246, 1582, 3136, 12_960_000, None),
    ("1080p screenshot (OSAtlas)", 1920, 1080, 3136, 4_194_304, None),
    ("4K screenshot, 4.19 MP budget", 3840, 2160, 3136, 4_194_304, None),
    ("1440p screenshot (ScreenSpotPro)", 2560, 1440, 3136, 12_960_000, None),
    ("same, resolution='lr'", 2560, 1440, 3136, 12_960_000, 1920),
    ("tiny icon", 50, 40, 3136, 12_960_000, None),
]


def resize_table() -> str:
    rows = [
        "| image | original | min_pixels | max_pixels | max_side | model frame | image tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, w0, h0, m, big, side in RESIZE_EXAMPLES:
        w, h = smart_resize(w0, h0, min_pixels=m, max_pixels=big, max_side=side)
        rows.append(
            f"| {name} | {w0}×{h0} | {m:,} | {big:,} | {side if side else '–'} | {w}×{h} | "
            f"{w * h // 784:,} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table-only", action="store_true", help="print the table, draw nothing")
    args = parser.parse_args()
    print(resize_table())
    if args.table_only:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for make in (fig_model_frame, fig_crop, fig_crop_dot, fig_episode):
        path = make()
        print(f"{path.relative_to(OUT.parent.parent)}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()

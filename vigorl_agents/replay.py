"""Rebuild the images of a trajectory, and draw an episode a person can read at a glance.

Why one home: trajectories keep images by reference (sample index + crop points and boxes, see
`vigorl_agents.rollout`), so everything that needs the pixels again — the demo's picture, the main
job's `episodes.png` (`benchmarks/picture.py`), SFT records built from rollouts — rebuilds them
here, through the env's public, ground-truth-free API (`frame_image`, `crop_at`; docs/envs.md)
rather than its private episode. The crops are cut exactly as the env cut them (docs/geometry.md),
and a replay that would give different crops (another env config) is refused.

    images = trajectory_images(env, traj)       # [model frame, crop 1, crop 2, ...]

`draw_episodes` lays one or more episodes out with matplotlib (imported only there): the model frame
with crop boxes, tool-call and think points, the answer (point, or clicked element) and the ground
truth (box or target objects, from the final step's `ground_truth`), the crops as the model saw them
(those clipped at the image edge and stretched say so), close-ups of the target at native pixels,
and the answer against the ground truth. Everything is drawn in model-frame coordinates.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from vigorl_env.protocol import IMAGE_MARKER, all_think_points, answer_point, extract_answer

if TYPE_CHECKING:
    import gymnasium as gym
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from vigorl_agents.rollout import Trajectory


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayedCrop:
    """One crop the model saw: the image (zoomed, dot included) and where it was cut."""

    turn: int
    """1-based turn whose tool call made it."""
    image: Image.Image
    point: tuple[int, int]
    """Model-frame centre after clamping into the frame."""
    box: tuple[int, int, int, int]
    """Pixel box [left, top, right, bottom) of the model frame that was zoomed."""
    clamped: bool
    """The requested point lay outside the frame."""
    offset: int

    @property
    def region_size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    @property
    def clipped(self) -> bool:
        """The box was cut short by the frame's edge, so the zoom stretched a smaller (and usually
        non-square) region to the crop size: its aspect is not the frame's."""
        return self.region_size != (2 * self.offset, 2 * self.offset)


@dataclass(frozen=True)
class Replay:
    """The model frame of a trajectory's sample and its crops, in turn order."""

    frame: Image.Image
    crops: list[ReplayedCrop] = field(default_factory=list)

    @property
    def images(self) -> list[Image.Image]:
        return [self.frame, *(c.image for c in self.crops)]


def replay(env: gym.Env, traj: Trajectory) -> Replay:
    """Reset `env` to `traj`'s sample and rebuild its model frame and crops.

    `env` must have the config the trajectory was recorded with (same fingerprint): another crop
    size or frame budget would give other pixels than the model saw. Resets the env.
    """
    uw = env.unwrapped
    if traj.config_fingerprint != uw.fingerprint:
        raise ValueError(
            f"trajectory of {traj.env_id} (sample {traj.sample_id}) was recorded with env config "
            f"{traj.config_fingerprint[:12]}…, this env has {uw.fingerprint[:12]}…: make the env "
            "with the same kwargs (and dataset) to rebuild its images"
        )
    _, info = env.reset(options={"index": traj.index})
    if info["sample_id"] != traj.sample_id:
        raise ValueError(
            f"index {traj.index} of {traj.env_id}[{info['split']}] is sample {info['sample_id']}, "
            f"the trajectory's is {traj.sample_id}"
        )
    crops = []
    for turn, rec in enumerate(traj.turns, start=1):
        if not rec.crop:
            continue
        image, info_crop = uw.crop_at(tuple(rec.crop["point"]))
        if list(info_crop.box) != list(rec.crop["box"]):
            raise ValueError(
                f"turn {turn}: the env crops box {list(info_crop.box)}, the trajectory recorded "
                f"{rec.crop['box']}"
            )
        crops.append(
            ReplayedCrop(
                turn=turn,
                image=image,
                point=tuple(info_crop.point),
                box=tuple(info_crop.box),
                clamped=bool(rec.crop.get("clamped", False)),
                offset=uw.config.offset,
            )
        )
    return Replay(uw.frame_image, crops)


def trajectory_images(env: gym.Env, traj: Trajectory) -> list[Image.Image]:
    """[model frame, crop 1, crop 2, ...]: the images of `traj` in the order the model saw them.

    A live browser env (docs/web.md) shows a new page screenshot after every action instead of a
    crop: its images are rebuilt by replaying the trajectory's actions in the page
    (`episode_frames`), reset screenshot first, one per turn after it."""
    uw = env.unwrapped
    frames_of = getattr(uw, "episode_frames", None)
    if frames_of is not None:
        if traj.config_fingerprint != uw.fingerprint:
            raise ValueError(
                f"trajectory of {traj.env_id} (sample {traj.sample_id}) was recorded with env "
                f"config {traj.config_fingerprint[:12]}…, this env has {uw.fingerprint[:12]}…"
            )
        frames, _ = frames_of(traj.sample_id, [t.prefix + t.text for t in traj.turns])
        return [Image.fromarray(f) for f in frames]
    return replay(env, traj).images


# ---------------------------------------------------------------------------------------------
# What to draw (pure: model-frame coordinates from the trajectory)
# ---------------------------------------------------------------------------------------------
Box = tuple[float, float, float, float]
_ELEMENT_ACTION = re.compile(r"^\s*(?:click|type)\s*\[\s*(\d+)\s*\]", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class Marks:
    """Everything `draw_episodes` overlays on the frame, in model-frame pixels."""

    think_points: list[tuple[int, int]]
    answer: str | None
    answer_point: tuple[int, int] | None
    """A point answer `(x, y)`."""
    answer_box: Box | None
    """The element a `click [id]` / `type [id] ...` answer acts on, when the episode's objects
    know it."""
    gt_answer: str
    """The ground truth as a reader compares it with the answer (a point answer's box in model-frame
    pixels, like the answer; the record's own string is in original pixels)."""
    gt_boxes: list[tuple[str, Box]]
    """Ground-truth regions with a label: the answer box (point answers) or the target objects."""


def _object_label(obj: dict[str, Any]) -> str:
    """A reader's name for a scene object: its text (with the set-of-marks id on web pages), or
    its colour and category."""
    a = obj.get("attributes") or {}
    name = a.get("text") or a.get("label")
    if name:
        return f"[{a['som_id']}] {name}" if a.get("som_id") is not None else str(name)
    return " ".join(str(s) for s in (a.get("color"), obj.get("category")) if s)


def episode_marks(traj: Trajectory, *, ground_truth: bool = True) -> Marks:
    """The overlays of `traj`: its think points, answer and (final-info) ground truth (left out
    with `ground_truth=False`, e.g. for the demo's image, which has none)."""
    answer = extract_answer(traj.transcript)
    answer = None if answer is None else answer.strip()
    gt = (traj.ground_truth or {}) if ground_truth else {}
    objects = {str(o.get("id")): o for o in gt.get("objects") or [] if isinstance(o, dict)}
    targets = [objects[str(i)] for i in gt.get("target_ids") or [] if str(i) in objects]
    gt_boxes: list[tuple[str, Box]] = []
    if gt.get("box"):
        label = _object_label(targets[0]) if len(targets) == 1 else "target"
        gt_boxes.append((label, tuple(map(float, gt["box"]))))
    else:
        gt_boxes.extend((_object_label(o), tuple(map(float, o["box"]))) for o in targets)
    answer_box = None
    m = _ELEMENT_ACTION.match(answer or "")
    if m:
        by_number = {int(k): o for k, o in objects.items() if k.isdigit()}
        hit = by_number.get(int(m.group(1)))
        answer_box = None if hit is None else tuple(map(float, hit["box"]))
    return Marks(
        think_points=all_think_points(traj.transcript),
        answer=answer,
        answer_point=answer_point(answer) if answer else None,
        answer_box=answer_box,
        gt_answer=(
            "a point inside [" + ", ".join(f"{v:.0f}" for v in gt["box"]) + "]"
            if gt.get("box")
            else str(gt.get("answer", ""))
        ),
        gt_boxes=gt_boxes,
    )


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------
DPI = 100
CROP_COLOR = "#e6194b"  # red: crop boxes, tool-call points
THINK_COLOR = "#1f77ff"  # blue: points named in the reasoning
ANSWER_COLOR = "#ff9f1c"  # orange: the answer (point or element)
GT_COLOR = "#2bd92b"  # green: ground truth
FRAME_BUDGET = 1.5e6
"""Displayed pixels of a model frame (scaled down to it, never up beyond 1:1 unless tiny): web
pages stay readable, a tall phone screenshot is as large as a wide photo."""
MIN_FRAME_SIDE = 420
CROP_PX = 250
DETAIL_PX = 250
GAP = 24
LINE = 17  # px per text line at 10 pt, 100 dpi
SMALL_LINE = 15  # 9 pt
LEGEND = (
    ("crop box / tool-call point (n = turn order)", CROP_COLOR),
    ("point in the reasoning", THINK_COLOR),
    ("answer (point or element)", ANSWER_COLOR),
    ("ground truth (box or target objects)", GT_COLOR),
)


@dataclass
class EpisodeView:
    """One episode to draw: its images, overlays and captions."""

    env_id: str
    question: str
    replay: Replay
    marks: Marks
    traj: Trajectory
    ground_truth: bool = True
    """Draw and caption the ground truth and the scores (False: the sample has none)."""


def episode_view(
    env_id: str, question: str, rep: Replay, traj: Trajectory, *, ground_truth: bool = True
) -> EpisodeView:
    """What `draw_episodes` needs of one episode: `question` as the model read it (`<image>`
    dropped), the replayed images and `traj`."""
    marks = episode_marks(traj, ground_truth=ground_truth)
    q = question.replace(IMAGE_MARKER, "").strip()
    return EpisodeView(env_id, q, rep, marks, traj, ground_truth)


def _frame_scale(w: int, h: int) -> float:
    s = min(1.0, math.sqrt(FRAME_BUDGET / (w * h)))
    return max(s, MIN_FRAME_SIDE / max(w, h))


def _detail_regions(view: EpisodeView) -> list[tuple[str, Box]]:
    """Close-up regions (model frame), drawn at about 1:1 or larger so small targets read: each
    ground-truth box (at most 2), and the answer (element or point) when no close-up holds it."""
    w, h = view.replay.frame.size
    m = view.marks

    def around(box: Box) -> Box:
        left, top, right, bottom = box
        side = min(max(right - left, bottom - top) * 1.6 + 40, max(w, h))
        side = max(side, min(160.0, w, h))
        x0 = min(max((left + right - side) / 2, 0), max(w - side, 0))
        y0 = min(max((top + bottom - side) / 2, 0), max(h - side, 0))
        return (x0, y0, min(x0 + side, w), min(y0 + side, h))

    regions = [(f"ground truth: {label}", around(box)) for label, box in m.gt_boxes[:2]]
    answer = m.answer_box or (
        None if m.answer_point is None else (*m.answer_point, *m.answer_point)
    )
    if answer is not None and not any(_inside(answer, reg) for _, reg in regions):
        regions.append((f"answer: {m.answer}", around(answer)))
    return regions


def _inside(box: Box, region: Box) -> bool:
    return (
        box[0] >= region[0] and box[1] >= region[1] and box[2] <= region[2] and box[3] <= region[3]
    )


def _overlay(ax: Axes, view: EpisodeView, *, labels: bool) -> None:
    """Marks in model-frame pixel coordinates (the image is shown with extent (0, w, h, 0), so a
    box [l, t, r, b) is the rectangle from (l, t) to (r, b)). Artists carry a gid (crop_box_<n>,
    tool_point_<n>, think_point_<n>, answer_point, answer_box, gt_box_<n>) that tests look up."""
    from matplotlib.patches import Rectangle

    def rect(box: Sequence[float], color: str, gid: str, **kw: Any) -> None:
        left, top, right, bottom = box
        ax.add_patch(
            Rectangle((left, top), right - left, bottom - top, fill=False, ec=color, gid=gid, **kw)
        )

    def tag(
        x: float, y: float, s: str, fc: str, dx: float, dy: float, color: str = "white"
    ) -> None:
        ax.annotate(s, (x, y), xytext=(dx, dy), textcoords="offset points", va="top", fontsize=9,
                    color=color, fontweight="bold", zorder=7,
                    bbox={"fc": fc, "ec": "none", "pad": 1.2})  # fmt: skip

    m = view.marks
    for i, (label, box) in enumerate(m.gt_boxes, start=1):
        rect(box, GT_COLOR, f"gt_box_{i}", lw=3, ls="--", zorder=2)
        if labels:
            tag(box[0], box[3], label, GT_COLOR, 0, -3, color="black")
    for c in view.replay.crops:
        rect(c.box, CROP_COLOR, f"crop_box_{c.turn}", lw=2.2, zorder=2)
        ax.plot(*c.point, "o", ms=7, mfc=CROP_COLOR, mec="white", mew=1.5, zorder=4,
                gid=f"tool_point_{c.turn}")  # fmt: skip
        if labels:
            tag(c.box[0], c.box[1], str(c.turn), CROP_COLOR, 3, -3)
    for i, (x, y) in enumerate(m.think_points, start=1):
        ax.plot(x, y, "o", ms=13, mfc="none", mec=THINK_COLOR, mew=2.5, zorder=3,
                gid=f"think_point_{i}")  # fmt: skip
        if labels:
            tag(x, y, str(i), THINK_COLOR, 7, 14)
    if m.answer_box is not None:
        rect(m.answer_box, ANSWER_COLOR, "answer_box", lw=3.5, zorder=5)
    if m.answer_point is not None:
        ax.plot(*m.answer_point, "X", ms=16, mfc=ANSWER_COLOR, mec="black", mew=1.2, zorder=6,
                gid="answer_point")  # fmt: skip


def _border(ax: Axes, color: str = "#b0b0b0", lw: float = 1.0, ls: str = "-") -> None:
    """A frame around an image panel, so a white crop or page edge does not melt into the page."""
    ax.set_axis_on()
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(color=color, lw=lw, ls=ls)


def _question_lines(view: EpisodeView, width_px: float) -> list[str]:
    chars = max(40, int(width_px / 7.2))
    lines = []
    for para in view.question.splitlines() or [""]:
        lines.extend(textwrap.wrap(para, chars) or [""])
    return lines[:8] + (["…"] if len(lines) > 8 else [])


def _crop_caption(c: ReplayedCrop) -> list[tuple[str, str]]:
    rw, rh = c.region_size
    side = c.image.width
    out = [(f"crop {c.turn} at ({c.point[0]}, {c.point[1]})", "black")]
    if c.clipped:
        out.append((f"clipped at the image edge: {rw}×{rh} px", CROP_COLOR))
        out.append((f"region stretched to {side}×{side}", CROP_COLOR))
    else:
        out.append((f"{rw}×{rh} px region zoomed to {side}×{side}", "dimgray"))
    if c.clamped:
        out.append(("point outside the image: clamped", CROP_COLOR))
    return out


def _footer(view: EpisodeView) -> list[tuple[str, str]]:
    m, t = view.marks, view.traj
    answer = "(none)" if m.answer is None else textwrap.shorten(m.answer, 80)
    if not view.ground_truth:
        return [(f"answer: {answer}    end: {t.end_reason}, {len(t.turns)} turn(s)", "black")]
    ok = t.score >= 1.0
    head = (
        f"answer: {answer}    ground truth: {textwrap.shorten(m.gt_answer, 80) or '(unknown)'}    "
        f"accuracy {t.score:.2f}   reward {t.reward:.2f}   end: {t.end_reason}, {len(t.turns)} turn(s)"
    )
    return [(head, "#137a13" if ok else "#b00020")]


class _Layout:
    """Pixel layout of one episode block (origin top-left); rendered by `draw_episodes`."""

    def __init__(self, view: EpisodeView):
        self.view = view
        w, h = view.replay.frame.size
        self.scale = _frame_scale(w, h)
        self.fw, self.fh = w * self.scale, h * self.scale
        crops = view.replay.crops
        cap = max((len(_crop_caption(c)) for c in crops), default=0) * SMALL_LINE + 4
        self.crop_slot = CROP_PX + cap + 14
        self.crop_rows = max(
            1, min(len(crops), int(max(self.fh, self.crop_slot) // self.crop_slot))
        )
        self.crop_cols = math.ceil(len(crops) / self.crop_rows) if crops else 0
        self.details = _detail_regions(view)
        self.detail_slot = DETAIL_PX + 2 * SMALL_LINE + 18
        self.detail_rows = max(
            1, min(len(self.details), int(max(self.fh, self.detail_slot) // self.detail_slot))
        )
        self.detail_cols = math.ceil(len(self.details) / self.detail_rows) if self.details else 0
        self.crops_x = self.fw + GAP
        self.details_x = self.crops_x + self.crop_cols * (CROP_PX + GAP)
        self.width = (
            self.details_x + self.detail_cols * (DETAIL_PX + GAP) - (GAP if self.details else 0)
        )
        self.width = max(self.width, 900)
        self.q_lines = _question_lines(view, self.width)
        self.header = LINE * (1 + len(self.q_lines)) + 8
        body = max(
            self.fh,
            self.crop_rows * self.crop_slot if crops else 0,
            self.detail_rows * self.detail_slot if self.details else 0,
        )
        self.body_y = self.header
        self.footer_y = self.body_y + body + SMALL_LINE + 8
        self.height = self.footer_y + LINE + 6


def draw_episodes(views: Sequence[EpisodeView], title: str | None = None) -> Figure:
    """One block per episode, stacked; returns the matplotlib figure (save it with dpi=DPI)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    layouts = [_Layout(v) for v in views]
    top = (2 * LINE + 16) if title else (LINE + 14)
    legend = [e for e in LEGEND if e[1] != GT_COLOR or any(v.ground_truth for v in views)]
    steps = [18 + 7.0 * len(label) + 28 for label, _ in legend]
    width = max(max(lay.width for lay in layouts), sum(steps)) + 2 * GAP
    height = top + sum(lay.height for lay in layouts) + GAP * (len(layouts) + 1)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")

    def axes(x: float, y: float, w: float, h: float, gid: str) -> Axes:
        ax = fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height), gid=gid)
        ax.set_axis_off()
        return ax

    def text(x: float, y: float, s: str, **kw: Any) -> None:
        fig.text(x / width, 1 - y / height, s, va="top", ha="left", **kw)

    y = 8.0
    if title:
        text(GAP, y, title, fontsize=13, fontweight="bold")
        y += LINE + 8
    x = GAP
    for (label, color), step in zip(legend, steps, strict=True):  # swatch, meaning in black
        text(x, y - 2, "■", fontsize=13, color=color)
        text(x + 18, y, label, fontsize=10)
        x += step
    y = top + GAP
    for k, (view, lay) in enumerate(zip(views, layouts, strict=True)):
        x0 = GAP
        text(x0, y, f"{view.env_id}   sample {view.traj.sample_id}", fontsize=11, fontweight="bold")
        for i, line in enumerate(lay.q_lines, start=1):
            text(x0, y + i * LINE, line, fontsize=10)
        by = y + lay.body_y
        frame = view.replay.frame
        w, h = frame.size
        ax = axes(x0, by, lay.fw, lay.fh, f"frame_{k}")
        ax.imshow(frame, extent=(0, w, h, 0), interpolation="antialiased")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        _overlay(ax, view, labels=True)
        _border(ax)
        text(x0, by + lay.fh + 3, f"model frame {w}×{h} (shown at {lay.scale:.0%})", fontsize=8,
             color="dimgray")  # fmt: skip
        for i, c in enumerate(view.replay.crops):
            col, row = divmod(i, lay.crop_rows)
            cx, cy = x0 + lay.crops_x + col * (CROP_PX + GAP), by + row * lay.crop_slot
            caption = _crop_caption(c)
            for j, (line, color) in enumerate(caption):
                text(cx, cy + j * SMALL_LINE, line, fontsize=9, color=color)
            cax = axes(
                cx, cy + len(caption) * SMALL_LINE + 4, CROP_PX, CROP_PX, f"crop_{k}_{c.turn}"
            )
            cax.imshow(c.image)
            if c.clipped:  # a stretched crop gets a dashed red border
                _border(cax, color=CROP_COLOR, lw=3, ls="--")
            else:
                _border(cax)
        for i, (label, (left, t, r, b)) in enumerate(lay.details):
            col, row = divmod(i, lay.detail_rows)
            dx, dy = x0 + lay.details_x + col * (DETAIL_PX + GAP), by + row * lay.detail_slot
            zoom = DETAIL_PX / max(r - left, b - t)
            text(dx, dy, textwrap.shorten(label, 40), fontsize=9)
            text(
                dx,
                dy + SMALL_LINE,
                f"close-up, {zoom:.1f}× the model frame",
                fontsize=8,
                color="dimgray",
            )
            dax = axes(dx, dy + 2 * SMALL_LINE + 4, DETAIL_PX, DETAIL_PX, f"detail_{k}_{i}")
            dax.imshow(
                frame, extent=(0, w, h, 0), interpolation="nearest" if zoom >= 1 else "antialiased"
            )
            dax.set_xlim(left, r)
            dax.set_ylim(b, t)
            dax.set_aspect("equal")
            _overlay(dax, view, labels=False)
            _border(dax)
        for j, (line, color) in enumerate(_footer(view)):
            text(x0, y + lay.footer_y + j * LINE, line, fontsize=10, color=color, fontweight="bold")
        y += lay.height + GAP
    return fig


def save_figure(fig: Figure, path: Any) -> Any:
    """Write `fig` as PNG at its native pixel size."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path

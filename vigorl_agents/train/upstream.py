"""Import upstream SFT chains into vigorl SFT JSONL, points moved into the model frame
(docs/data.md#importing-upstream-chains).

    python -m vigorl_agents.train.upstream \\
        $DATA_ROOT/web_grounding/MCTS_72b_reasoning_chains_train.json chains/wg_train.jsonl \\
        --domain web_grounding [--data-root PATH] [--frames-dir chains/frames]

Why it is needed: upstream's chains were written by a 72B teacher served by vLLM, which saw each
image in its own frame T (the resize rule of docs/geometry.md with m = 4096, M = 12,960,000 and no
max side), and upstream then trained on the same text at a different image size without rescaling a
single coordinate. Here every `(x, y)` of the assistant text is carried from T to the frame the
student will see, so that a chain's points land on the pixels they name.

What it does, per record of the LLaMA-Factory sharegpt array (docs/data.md#sft-record-formats):

* re-roots the authors' absolute image path under DATA_ROOT (`reroot_image_path`,
  docs/data.md#what-the-loaders-accept-and-refuse);
* reads the image's size from its header only (no pixel decode; sizes are cached per file, as many
  chains share one image) and computes T and the model frame (w, h) with `smart_resize`
  (docs/geometry.md#the-resize-rule);
* maps every point of every assistant message, `(x, y)` with the spacing of
  docs/protocol.md#think-steps-and-points and integer or decimal coordinates, to
  `floor(x·w/T_w + 1/2)`, `floor(y·h/T_h + 1/2)`. The arithmetic is exact (`fractions.Fraction`), so an exact .5 rounds up whatever the binary floats would make of it. Only
  the numbers change: the brackets, the spacing and all other text stay byte for byte. This also
  covers the answer point of point_in_box chains (`<answer>(x, y)</answer>`);
* writes one vigorl SFT record per chain, with `frame` as the env's `info["frame"]`.

Ground truth: `gt_answer` keeps the convention of docs/data.md#ground-truth-by-answer-kind. A box
`"(x1, y1, x2, y2)"` (point_in_box) is in the ORIGINAL frame and stays there untouched: everything
downstream (env, rewards, eval) maps GT boxes with the float scales of `frame`
(docs/geometry.md#ground-truth-in-the-model-frame), and rounding a box here would both lose
precision and disagree with them. A GT that is a single point `(x, y)` is not a ground-truth
format; it can only be a copy of a teacher answer, so it is moved like the assistant's points (the upstream string is kept in
`meta["upstream_gt_answer"]`). Option texts and actions are untouched.

Images: by default `images` holds the original files (relative to DATA_ROOT when under it) and
nothing is decoded. The SFT trainer only accepts images that already are model frames
(`vigorl_agents.train.data.image_grids`), so an original whose size is not its own model frame needs
`frames_dir`: each image is then decoded once, resized by `geometry.model_frame` (the env's one
bicubic resize) and saved there as PNG, and the record points to that file. The summary counts the
images that need it and a warning says so.

Records with more than one image are refused: their crops were cut in upstream's frames and cannot
be rescaled by text substitution; rebuild multi-turn dialogs from single-turn chains in the model
frame instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from vigorl_agents.train.data import (
    _check_messages,
    _data_root,
    _fail,
    _guess_kind,
    _resolve_images,
    read_json_array,
)
from vigorl_env import DataFormatError
from vigorl_env.data.images import open_image_file
from vigorl_env.geometry import Frame, model_frame, smart_resize
from vigorl_env.tasks import BENCHMARKS

__all__ = [
    "DOMAIN_BENCHMARK",
    "TEACHER_MAX_PIXELS",
    "TEACHER_MIN_PIXELS",
    "import_upstream_chains",
    "main",
    "rescale_points",
]

logger = logging.getLogger(__name__)

TEACHER_MIN_PIXELS = 4096
"""min_pixels of upstream's vLLM teacher server."""
TEACHER_MAX_PIXELS = 12_960_000
"""max_pixels of upstream's vLLM teacher server; it had no max side."""

DOMAIN_BENCHMARK: dict[str, str] = {
    "spatial": "SAT2",
    "web_grounding": "OSAtlas",
    "visual_search": "VisualSearchSA",
    "web_action": "VisualWebArena",
}
"""The env whose MCTS samples each domain's chains came from (docs/data.md#data_root-layout). The
CLI takes that env's frame defaults (docs/geometry.md#defaults-per-benchmark: min/max pixels and
max side), so a student trained on the imported chains sees exactly the frames the env shows it at
RL and evaluation time."""

_NUM = r"([+-]?[0-9]+(?:\.[0-9]+)?)"
_POINT_RE = re.compile(rf"\(\s*{_NUM}\s*,\s*{_NUM}\s*\)")
"""The think-step point (docs/protocol.md#think-steps-and-points),
`\\(\\s*(\\d+)\\s*,\\s*(\\d+)\\s*\\)`, widened to decimals and to the answer point's optional sign;
ASCII digits only. A 4-tuple box never matches (`)` must follow y)."""

_EXIF_ORIENTATION = 0x0112
_ROTATED = frozenset({5, 6, 7, 8})  # orientations that swap width and height
_PROGRESS_MIN = 200  # no bar for short files (tests, val splits)


# =========================================================================== points


def _half_up(v: Fraction) -> int:
    return math.floor(v + Fraction(1, 2))


def rescale_points(
    text: str, teacher_size: tuple[int, int], model_size: tuple[int, int]
) -> tuple[str, int]:
    """Map every `(x, y)` of `text` from the teacher frame to the model frame; return the new text
    and the number of points moved. Only the digits of each coordinate are replaced."""
    (tw, th), (w, h) = teacher_size, model_size
    out: list[str] = []
    last = 0
    n = 0
    for m in _POINT_RE.finditer(text):
        x = _half_up(Fraction(m.group(1)) * w / tw)
        y = _half_up(Fraction(m.group(2)) * h / th)
        out += [text[last : m.start(1)], str(x), text[m.end(1) : m.start(2)], str(y)]
        last = m.end(2)
        n += 1
    out.append(text[last:])
    return "".join(out), n


# =========================================================================== images


def _upright_size(path: Path, where: str, field_name: str) -> tuple[int, int]:
    """(W0, H0) after the EXIF transpose (docs/geometry.md#colour-transparency-and-exif), from the
    header only (no pixel decode)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError) as e:
        raise _fail(where, field_name, f"cannot read image {str(path)!r} ({e})") from e
    return (h, w) if orientation in _ROTATED else (w, h)


def _relative_to(path: Path, root: Path | None) -> str:
    """`path` relative to DATA_ROOT when it lies under it (portable files), else absolute."""
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return str(path.resolve())


def _write_frame(
    src: Path, frames_dir: Path, bounds: dict[str, Any], frame: Frame, where: str
) -> tuple[Path, bool]:
    """The model-frame PNG of `src` under `frames_dir` (written unless already there); the name
    hashes the source path and carries the frame size, so reruns and shared images reuse it."""
    digest = hashlib.sha1(str(src.resolve()).encode("utf-8")).hexdigest()[:16]
    w, h = frame.model_size
    out = frames_dir / f"{src.stem}_{digest}_{w}x{h}.png"
    if out.exists():
        return out, False
    img, got = model_frame(open_image_file(src, f"{where}: image {str(src)!r}"), **bounds)
    if got != frame:  # header size and decoded size disagree: a broken file
        raise _fail(where, "images[0]", f"decoded frame {got} differs from the header's {frame}")
    tmp = out.with_name(out.name + ".tmp")
    img.save(tmp, format="PNG")
    tmp.replace(out)
    return out, True


# =========================================================================== import


def _infer_split(path: Path) -> str:
    tokens = set(re.split(r"[_\-.]", path.stem.lower()))
    found = [s for s in ("train", "val") if s in tokens]
    if len(found) != 1:
        raise ValueError(
            f"{path}: cannot tell the split from the file name; pass split='train' or 'val'"
        )
    return found[0]


def _gt_string(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _fail(where, "gt_answer", f"must be a string, got {type(value).__name__}")
    return str(value)


def import_upstream_chains(
    src_json: str | os.PathLike[str],
    out_jsonl: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    min_pixels: int,
    max_pixels: int,
    max_side: int | None = None,
    env_id: str | None = None,
    split: str | None = None,
    teacher_min_pixels: int = TEACHER_MIN_PIXELS,
    teacher_max_pixels: int = TEACHER_MAX_PIXELS,
    frames_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Convert one upstream sharegpt chain file into vigorl SFT JSONL (docs/data.md#sft-record-formats).

    `min_pixels` / `max_pixels` / `max_side` define the student's model frame (docs/geometry.md); the teacher's
    frame uses `teacher_min_pixels` / `teacher_max_pixels` and no max side. `data_root` defaults to
    the `DATA_ROOT` environment variable. `split` defaults to the `train` / `val` token of the file
    name. `frames_dir`, when set, receives the model-frame PNGs the records then point to (see the
    module docstring). The output is written to a temporary file and renamed, so a bad record
    leaves no partial file.

    Raises `DataFormatError` naming `file[index]` and the field for a malformed record, and
    `DataNotFoundError` naming the upstream and the re-rooted path for a missing image. Returns a
    summary: records, kinds, points moved, GT points moved, images that are not model frames,
    frames written.
    """
    from tqdm.auto import tqdm

    src = Path(src_json)
    out_path = Path(out_jsonl)
    root_str = _data_root(data_root)
    root = Path(root_str).expanduser() if root_str is not None else None
    split = split or _infer_split(src)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    data = read_json_array(src)

    bounds = {"min_pixels": min_pixels, "max_pixels": max_pixels, "max_side": max_side}
    frames = Path(frames_dir) if frames_dir is not None else None
    if frames is not None:
        frames.mkdir(parents=True, exist_ok=True)
    sizes: dict[Path, tuple[int, int]] = {}
    kinds: Counter[str] = Counter()
    n_points = n_gt_points = frames_written = 0
    not_frames: set[Path] = set()

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            bar = tqdm(
                data, desc=f"import {src.name}", unit="chain", disable=len(data) < _PROGRESS_MIN
            )
            for i, obj in enumerate(bar):
                where = f"{src}[{i}]"
                if not isinstance(obj, dict):
                    raise DataFormatError(f"{where}: a record must be a JSON object")
                raw_images = obj.get("images", [])
                images = _resolve_images(raw_images, root_str, where)
                if len(images) != 1:
                    raise _fail(
                        where,
                        "images",
                        f"{len(images)} images; only single-image chains can be imported (crops "
                        "were cut in upstream's frame: rebuild multi-turn dialogs from model-frame chains)",
                    )
                messages = _check_messages(obj.get("messages"), len(images), where)
                if "gt_answer" not in obj:
                    raise _fail(where, "gt_answer", "missing")
                gt = _gt_string(obj["gt_answer"], where)
                meta_in = obj.get("metadata") or {}
                if not isinstance(meta_in, dict):
                    raise _fail(where, "metadata", "must be an object")

                img = images[0]
                if img not in sizes:
                    sizes[img] = _upright_size(img, where, "images[0]")
                size0 = sizes[img]
                try:
                    teacher = smart_resize(
                        *size0,
                        min_pixels=teacher_min_pixels,
                        max_pixels=teacher_max_pixels,
                        sample_id=where,
                    )
                    model = smart_resize(*size0, **bounds, sample_id=where)
                except DataFormatError as e:
                    raise _fail(where, "images[0]", str(e)) from e
                frame = Frame(original_size=size0, model_size=model)

                for m in messages:  # fresh dicts from _check_messages: edit in place
                    if m["role"] == "assistant":
                        m["content"], k = rescale_points(m["content"], teacher, model)
                        n_points += k
                gt_out = gt
                if _POINT_RE.fullmatch(gt.strip()):
                    gt_out, _ = rescale_points(gt, teacher, model)
                    n_gt_points += 1

                image_path = img
                if model != size0:
                    not_frames.add(img)
                    if frames is not None:
                        image_path, wrote = _write_frame(img, frames, bounds, frame, where)
                        frames_written += wrote

                kind = _guess_kind({"messages": messages}, "multi_turn")
                kinds[kind] += 1
                rid = str(obj.get("id", f"{src.stem}:{i}"))
                meta: dict[str, Any] = {
                    "source": str(src),
                    "index": i,
                    "upstream_images": list(raw_images),
                    "teacher_size": list(teacher),
                    "upstream_metadata": meta_in,
                }
                if gt_out != gt:
                    meta["upstream_gt_answer"] = gt
                record = {
                    "id": rid,
                    "sample_id": str(meta_in.get("sample_id", rid)),
                    "env_id": env_id,
                    "split": split,
                    "kind": kind,
                    "messages": messages,
                    "images": [_relative_to(image_path, root)],
                    "frame": frame.to_info(),
                    "gt_answer": gt_out,
                    "meta": meta,
                }
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(out_path)
    finally:
        tmp.unlink(missing_ok=True)

    pending = len(not_frames) if frames is None else 0
    if pending:
        logger.warning(
            "%s: %d of %d image(s) are not model frames at min_pixels=%d, max_pixels=%d, "
            "max_side=%s; the SFT trainer accepts only model frames (docs/sft.md#data): rerun with "
            "frames_dir / --frames-dir to write them",
            src,
            pending,
            len(sizes),
            min_pixels,
            max_pixels,
            max_side,
        )
    summary = {
        "source": str(src),
        "out": str(out_path),
        "records": sum(kinds.values()),
        "kinds": dict(kinds),
        "images": len(sizes),
        "points_rescaled": n_points,
        "gt_points_rescaled": n_gt_points,
        "images_not_model_frames": len(not_frames),
        "frames_written": frames_written,
    }
    logger.info("imported %s", summary)
    return summary


# =========================================================================== CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vigorl_agents.train.upstream",
        description="Import upstream MCTS_72b_reasoning_chains_*.json (LLaMA-Factory sharegpt) into "
        "vigorl SFT JSONL with every point moved from the teacher's frame to the model frame "
        "(docs/data.md#importing-upstream-chains).",
    )
    p.add_argument("src", type=Path, help="upstream sharegpt JSON file")
    p.add_argument("out", type=Path, help="vigorl SFT JSONL to write")
    p.add_argument(
        "--domain",
        required=True,
        choices=sorted(DOMAIN_BENCHMARK),
        help="frame defaults and env id of the domain's MCTS env (SAT2, OSAtlas, VisualSearchSA, "
        "VisualWebArena; docs/geometry.md#defaults-per-benchmark)",
    )
    p.add_argument(
        "--data-root", default=None, help="DATA_ROOT (default: the environment variable)"
    )
    p.add_argument(
        "--split", choices=("train", "val"), default=None, help="default: from file name"
    )
    p.add_argument("--env-id", default=None, help="default: the domain's env id")
    p.add_argument("--min-pixels", type=int, default=None, help="override the domain's min_pixels")
    p.add_argument("--max-pixels", type=int, default=None, help="override the domain's max_pixels")
    p.add_argument("--max-side", default=None, help="override the domain's max side ('none': off)")
    p.add_argument(
        "--frames-dir",
        type=Path,
        default=None,
        help="write model-frame PNGs here and point the records to them (default: "
        "OUT's folder / '<OUT stem>_frames'; the trainer needs model frames)",
    )
    p.add_argument(
        "--keep-originals",
        action="store_true",
        help="point the records to the original images (no frames written; for inspection only: "
        "the trainer refuses images that are not model frames)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    spec = BENCHMARKS[DOMAIN_BENCHMARK[args.domain]]
    max_side = spec.max_side
    if args.max_side is not None:
        if args.max_side.lower() == "none":
            max_side = None
        elif args.max_side.isdigit() and int(args.max_side) > 0:
            max_side = int(args.max_side)
        else:
            parser.error(
                f"--max-side: expected a positive integer or 'none', got {args.max_side!r}"
            )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = import_upstream_chains(
        args.src,
        args.out,
        data_root=args.data_root,
        min_pixels=spec.min_pixels if args.min_pixels is None else args.min_pixels,
        max_pixels=spec.max_pixels if args.max_pixels is None else args.max_pixels,
        max_side=max_side,
        env_id=args.env_id or spec.env_id,
        split=args.split,
        frames_dir=None
        if args.keep_originals
        else (args.frames_dir or Path(args.out).with_name(Path(args.out).stem + "_frames")),
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Convert single-turn chains into multi-turn crop/zoom dialogs (docs/mcts.md#multi-turn-conversion).

    python -m vigorl_agents.search.multiturn CHAINS.jsonl OUT_DIR --domain visual_search

A single-turn chain names points inline: `The red cube (412, 300) is left of ...`. The multi-turn
student instead *asks* for a crop at a point and reasons about what it sees. This module rewrites
a chain as that dialog: each new think-block point becomes a tool call whose observation is the
crop the env itself would return, so SFT teaches exactly the protocol that RL and evaluation run.

Per chain (the chain's points are in the model frame):

1. the answer is the chain's `<answer>` (no answer: the chain is dropped); the think text is its
   first think block;
2. the think text's points are walked in order; the chunk of a point runs from the cursor to the
   end of its sentence (the first `.`, `!` or `?` followed by whitespace or the end, searched from
   the point's end) and the cursor moves there; chunks accumulate, joined by a blank line;
3. a point that is not within 10 px of an emitted call, while fewer than `max_images` - 1 calls
   exist, is emitted: the assistant turn `<think> {accumulated} </think>` + the tool-call block
   (docs/protocol.md#tool-call), then the observation turn (docs/protocol.md#observation-text) with
   the env's crop (docs/geometry.md, the benchmark's crop settings, clamping included); the
   accumulator empties. Other points leave their chunk in the accumulator. A point inside text an
   earlier chunk already took (two points in one sentence) adds an empty chunk and makes no call:
   a turn with nothing to think about would teach empty reasoning;
4. the final assistant turn is the forced prefix (docs/protocol.md#forced-final-answer) +
   ` {answer} </answer>`; the reasoning left after the last call is dropped unless
   `keep_trailing_reasoning` (then it replaces the fixed sentence inside the think block);
5. with probability 0.2 (`random.Random(f"42:{id}")`) and at least 2 calls, call 1 with its
   observation moves to just before call j, j uniform in 2..k (j = 2 keeps the order), so the
   student does not learn that the first look is always the one the chain started with.

System prompt: the family's multi-turn prompt (P4 web grounding, P5 otherwise). Images
`[frame, crop 1, ...]` are saved as PNG `OUT_DIR/images/<sample>/<chain index>_<k>.png`, paths
relative to OUT_DIR (load with `data_root=OUT_DIR`).
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import random
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigorl_agents.records import (
    image_folder,
    sft_record,
    write_parquet,
    write_sft_jsonl,
    write_sharegpt_json,
)
from vigorl_env.protocol import (
    FORCED_PREFIX,
    MAX_INT_DIGITS,
    extract_answer,
    format_tool_call,
    observation_text,
    think_block,
)

logger = logging.getLogger(__name__)

__all__ = [
    "COORD_TOLERANCE",
    "REORDER_PROB",
    "Dialog",
    "ImageCrops",
    "chain_to_dialog",
    "convert_record",
    "convert_records",
    "main",
    "write_multi_turn",
]

COORD_TOLERANCE = 10.0
"""Two points closer than this (px, Euclidean) are the same look."""
REORDER_PROB = 0.2
"""Probability that the first call moves later (with >= 2 calls)."""
SEED = 42

_POINT = re.compile(r"\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(frozen=True)
class Dialog:
    """The turns after system and question: `messages` alternate assistant (think + tool call) and
    user (observation), then the final assistant turn; `points[i]` is the call point of the i-th
    observation (after reordering); `reordered` says whether call 1 moved."""

    messages: list[dict[str, str]]
    points: list[tuple[int, int]]
    answer: str
    reordered: bool


def _points(text: str) -> Iterable[tuple[int, int, int, int]]:
    """(x, y, start, end) of every think point (integers of at most 6 digits)."""
    for m in _POINT.finditer(text):
        a, b = m.group(1), m.group(2)
        if len(a) <= MAX_INT_DIGITS and len(b) <= MAX_INT_DIGITS:
            yield int(a), int(b), m.start(), m.end()


def chain_to_dialog(
    chain: str,
    *,
    record_id: str,
    draw_dot: bool,
    max_images: int = 5,
    coord_tolerance: float = COORD_TOLERANCE,
    keep_trailing_reasoning: bool = False,
) -> Dialog | None:
    """The multi-turn dialog of one single-turn chain (steps 1-5 of the module docstring), or
    None if the chain has no answer."""
    answer = extract_answer(chain)
    if answer is None or not answer.strip():
        return None
    answer = answer.strip()
    think = think_block(chain) or ""
    obs_text = observation_text(draw_dot)
    max_calls = max(0, max_images - 1)
    pairs: list[tuple[str, tuple[int, int]]] = []
    acc: list[str] = []
    cursor = 0
    for x, y, _start, end in _points(think):
        if end <= cursor:
            continue  # inside text an earlier chunk took: nothing new to say
        m = _SENTENCE_END.search(think, end)
        stop = m.end() if m else len(think)
        chunk = think[cursor:stop].strip()
        cursor = stop
        if chunk:
            acc.append(chunk)
        new = all(math.dist((x, y), p) >= coord_tolerance for _, p in pairs)
        if new and len(pairs) < max_calls and acc:
            text = "\n\n".join(acc)
            pairs.append((f"<think> {text} </think>\n{format_tool_call(x, y)}", (x, y)))
            acc = []
    reordered = False
    k = len(pairs)
    if k >= 2:
        rng = random.Random(f"{SEED}:{record_id}")
        if rng.random() < REORDER_PROB:
            j = rng.randint(2, k)
            pairs = [*pairs[1 : j - 1], pairs[0], *pairs[j - 1 :]]
            reordered = j > 2
    final = f"{FORCED_PREFIX} {answer} </answer>"
    if keep_trailing_reasoning:
        rest = [*acc, think[cursor:].strip()]
        leftover = "\n\n".join(s for s in rest if s)
        if leftover:
            final = f"<think> {leftover} </think>\n<answer> {answer} </answer>"
    messages: list[dict[str, str]] = []
    for text, _ in pairs:
        messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": obs_text})
    messages.append({"role": "assistant", "content": final})
    return Dialog(messages, [p for _, p in pairs], answer, reordered)


def convert_record(
    rec: dict[str, Any],
    *,
    system_prompt: str,
    out_dir: str | Path,
    reset: Callable[[dict[str, Any]], tuple[Any, dict[str, Any]]],
    keep_trailing_reasoning: bool = False,
    png_cache: dict[tuple[str, tuple[int, int] | None], bytes] | None = None,
) -> dict[str, Any] | None:
    """One single-turn vigorl SFT record → one multi-turn record (kind `multi_turn`, same id), or
    None if its chain has no answer. `reset(rec)` returns the env reset on the record's sample in
    multi-turn mode and its reset info; its `frame_image` and `crop_at` make the images.
    `png_cache` (keyed by sample id and crop point, None = the frame) shares encoded PNGs between
    the chains of a sample."""
    rid = str(rec["id"])
    sid = str(rec["sample_id"])
    chain = rec["messages"][-1]["content"]
    question = next(m["content"] for m in rec["messages"] if m["role"] == "user")
    env, info = reset(rec)
    dialog = chain_to_dialog(
        chain,
        record_id=rid,
        draw_dot=bool(info["crop"]["draw_dot"]),
        max_images=int(info["max_images"]),
        keep_trailing_reasoning=keep_trailing_reasoning,
    )
    if dialog is None:
        logger.warning("record %s: chain without an answer, not converted", rid)
        return None
    uw = env.unwrapped
    cache = png_cache if png_cache is not None else {}

    def png(key: tuple[int, int] | None) -> bytes:
        # the chains of one sample share a frame and often crops: encode each once
        if (sid, key) not in cache:
            img = uw.frame_image if key is None else uw.crop_at(key)[0]
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            cache[(sid, key)] = buf.getvalue()
        return cache[(sid, key)]

    out = Path(out_dir)
    folder = Path("images") / image_folder(sid)
    (out / folder).mkdir(parents=True, exist_ok=True)
    index = rid.rsplit(":", 1)[-1]
    paths = []
    for k, key in enumerate([None, *dialog.points]):
        rel = folder / f"{index}_{k}.png"
        tmp = out / folder / f"{index}_{k}.png.tmp"
        tmp.write_bytes(png(key))
        tmp.replace(out / rel)
        paths.append(rel.as_posix())
    return sft_record(
        record_id=rid,
        sample_id=sid,
        env_id=str(rec.get("env_id", "")),
        kind="multi_turn",
        messages=[
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": question},
            *dialog.messages,
        ],
        images=paths,
        frame=info["frame"],
        gt_answer=str(rec.get("gt_answer", "")),
        split=rec.get("split"),
        meta={
            **dict(rec.get("meta") or {}),
            "source": "mcts_multi_turn",
            "chain_kind": rec.get("kind"),
            "tool_calls": [list(p) for p in dialog.points],
            "reordered": dialog.reordered,
        },
    )


class ImageCrops:
    """The crops of a record's own model-frame image with an env's crop settings, for chains whose
    sample id is not a sample of the env (imported upstream chains): the same `crop_zoom` the env
    runs, with the settings `build_config` gives the env id and kwargs. Quacks like an env for
    `convert_record` (`unwrapped.frame_image`, `unwrapped.crop_at`)."""

    def __init__(self, image: Any, config: Any):
        self._image = image
        self.config = config

    @property
    def unwrapped(self) -> ImageCrops:
        return self

    @property
    def frame_image(self) -> Any:
        return self._image.copy()

    def crop_at(self, point: tuple[int, int]) -> tuple[Any, Any]:
        from vigorl_env.geometry import crop_zoom

        c = self.config
        return crop_zoom(
            self._image, point, offset=c.offset, crop_size=c.crop_size, draw_dot=c.draw_dot
        )


def _image_source(
    rec: dict[str, Any], data_root: Any, env_kwargs: dict[str, Any]
) -> tuple[ImageCrops, dict[str, Any]]:
    """`ImageCrops` of a record's single image, which must be the model frame of its `frame`."""
    import os

    from vigorl_env.config import build_config
    from vigorl_env.data.images import open_image_file, reroot_image_path
    from vigorl_env.geometry import to_rgb

    where = f"record {rec['id']}"
    if len(rec.get("images") or []) != 1:
        raise ValueError(f"{where}: a single-turn chain needs exactly one image")
    root = data_root if data_root is not None else os.environ.get("DATA_ROOT")
    img = to_rgb(open_image_file(reroot_image_path(rec["images"][0], root), where))
    frame = rec.get("frame") or {}
    want = list(frame.get("model_size") or [])
    if [img.width, img.height] != want or img.width % 28 or img.height % 28:
        raise ValueError(
            f"{where}: image {rec['images'][0]} is {img.width}x{img.height}, not the model frame "
            f"{want} of the record; import upstream chains with model frames first "
            "(python -m vigorl_agents.train.upstream, docs/data.md#importing-upstream-chains)"
        )
    name = str(rec["env_id"]).rsplit("/", 1)[-1].rsplit("-v", 1)[0]
    config = build_config(name, **{**env_kwargs, "mode": "multi_turn"})
    info = {
        "crop": {"draw_dot": config.draw_dot},
        "max_images": config.max_images,
        "frame": dict(frame),
    }
    return ImageCrops(img, config), info


def convert_records(
    records: Iterable[dict[str, Any]],
    *,
    domain: str,
    out_dir: str | Path,
    frames: Any = None,
    keep_trailing_reasoning: bool = False,
) -> list[dict[str, Any]]:
    """Multi-turn records of single-turn records (from `linearize` or a vigorl SFT JSONL file).

    Records of our linearization (`meta.env_split` set) are cropped by the env reset on their
    sample; other records (imported upstream chains) by `ImageCrops` on their own model-frame
    image with the env id's crop settings. Records that name no env (upstream trees not imported)
    cannot be cropped and are skipped with a warning."""
    from vigorl_agents.search.linearize import FrameSource, system_prompt_of

    system = system_prompt_of(domain, "multi_turn")
    frames = frames if frames is not None else FrameSource()

    def reset(rec: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        meta = rec.get("meta") or {}
        if "env_split" not in meta:
            kwargs = {**(meta.get("env_kwargs") or {}), **frames.env_kwargs}
            return _image_source(rec, frames.data_root, kwargs)
        src = {
            "env_id": rec["env_id"],
            "sample_id": rec["sample_id"],
            "env_split": meta.get("env_split"),
            "env_kwargs": meta.get("env_kwargs"),
            "frame": rec.get("frame"),
        }
        env, _, info = frames.reset(src, mode="multi_turn")
        return env, info

    out: list[dict[str, Any]] = []
    skipped = 0
    cache: dict[tuple[str, tuple[int, int] | None], bytes] = {}
    for rec in records:
        if not rec.get("env_id"):
            skipped += 1
            continue
        if cache and next(iter(cache))[0] != rec["sample_id"]:
            cache.clear()  # records come grouped by sample: keep one sample's images at a time
        conv = convert_record(
            rec,
            system_prompt=system,
            out_dir=out_dir,
            reset=reset,
            keep_trailing_reasoning=keep_trailing_reasoning,
            png_cache=cache,
        )
        if conv is not None:
            out.append(conv)
    if skipped:
        logger.warning("%d record(s) name no env and were not converted to multi-turn", skipped)
    logger.info("multi-turn: %d dialogs", len(out))
    return out


def write_multi_turn(records: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """`OUT_DIR/multi_turn.jsonl` (vigorl SFT JSONL), `multi_turn.json` (sharegpt, with
    `dataset_info.json`) and `multi_turn.parquet` (needs pyarrow; skipped with a warning
    without it)."""
    out = Path(out_dir)
    paths = [
        write_sft_jsonl(records, out / "multi_turn.jsonl"),
        write_sharegpt_json(records, out / "multi_turn.json"),
    ]
    try:
        paths.append(write_parquet(records, out / "multi_turn.parquet"))
    except ImportError as e:
        logger.warning("%s", e)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    from vigorl_agents.cli import parse_env_kwargs
    from vigorl_agents.jsonl import read_jsonl
    from vigorl_agents.search.linearize import FrameSource
    from vigorl_env.tasks import FAMILIES

    p = argparse.ArgumentParser(
        prog="python -m vigorl_agents.search.multiturn",
        description="Convert single-turn chains (vigorl SFT JSONL in the model frame) into "
        "multi-turn crop/zoom dialogs (see docs/mcts.md#multi-turn-conversion).",
    )
    p.add_argument("chains", help="vigorl SFT JSONL of single-turn chains")
    p.add_argument("out_dir", help="output folder (multi_turn.jsonl/.json/.parquet, images/)")
    p.add_argument("--domain", required=True, choices=sorted(FAMILIES))
    p.add_argument("--data-root", help="DATA_ROOT for real benchmarks (default: $DATA_ROOT)")
    p.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--keep-trailing-reasoning", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    frames = FrameSource(parse_env_kwargs(args.env_kwargs), args.data_root)
    try:
        recs = [r for _, r in read_jsonl(args.chains)]
        mt = convert_records(
            recs,
            domain=args.domain,
            out_dir=args.out_dir,
            frames=frames,
            keep_trailing_reasoning=args.keep_trailing_reasoning,
        )
        for path in write_multi_turn(mt, args.out_dir):
            print(path)
    finally:
        frames.close()
    print(f"{len(mt)} multi-turn dialogs from {len(recs)} chains")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the project-defined benchmark files (docs/data.md#data_root-layout): `python -m vigorl_env.data.prepare robospatial`.

RoboSpatial is not in the upstream tars. Its benchmark, RoboSpatial-Home (Hugging Face dataset
`chanhee-luke/RoboSpatial-Home`), has three splits — `context` (pointing into a mask), `configuration`
and `compatibility` (yes/no questions) — with columns `category`, `question`, `answer`, `img` (RGB),
`depth_image`, `mask`. ViGoRL evaluates on the two yes/no splits with the RGB image only (228
questions), so this command writes

    DATA_ROOT/spatial_reasoning/robospatial/robospatial_test.jsonl     (schema E, docs/data.md#record-schemas)
    DATA_ROOT/spatial_reasoning/robospatial/images/<id>.<ext>          (the RGB images, bytes as given)

Each record: `id` = `robospatial_<category>_<n>` (n = position within the category, source order),
`image` relative to DATA_ROOT, user turn = `<image>` + question + the options `A. yes` / `B. no`
(one per line, as the procedural datasets list them, so the option-text prompts of the spatial family apply), GT = `yes`/`no`.

Sources (`--source`):
* a Hugging Face dataset id (default `chanhee-luke/RoboSpatial-Home`): its parquet files are fetched
  with `huggingface_hub.snapshot_download` and read with pyarrow (install pyarrow for this path);
* a local directory holding parquet files (pyarrow), or `annotations.json` (the layout written by
  RoboSpatial-Eval's `download_benchmark.py`: a JSON list of {category, question, answer, img, ...}
  with `img` relative to that directory), or `*.jsonl` files of such objects (no pyarrow needed).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from vigorl_env.data.base import fmt_options
from vigorl_env.data.download import cli_data_root
from vigorl_env.data.images import decode_image_bytes
from vigorl_env.errors import DataFormatError, DataNotFoundError
from vigorl_env.protocol import IMAGE_MARKER

__all__ = [
    "ROBOSPATIAL_CATEGORIES",
    "ROBOSPATIAL_HUB_ID",
    "ROBOSPATIAL_REL",
    "convert_robospatial",
    "iter_robospatial_rows",
    "main",
    "prepare_robospatial",
]

logger = logging.getLogger(__name__)

ROBOSPATIAL_HUB_ID = "chanhee-luke/RoboSpatial-Home"
ROBOSPATIAL_CATEGORIES: tuple[str, ...] = ("configuration", "compatibility")
ROBOSPATIAL_DIR = "spatial_reasoning/robospatial"
ROBOSPATIAL_REL = f"{ROBOSPATIAL_DIR}/robospatial_test.jsonl"
ROBOSPATIAL_EXPECTED = 228
_OPTIONS = ("yes", "no")
_EXT = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif", "GIF": "gif"}


# ---------------------------------------------------------------------------------------------
# Reading sources: every row becomes {"category", "question", "answer", "img_bytes", "where"}
# ---------------------------------------------------------------------------------------------


def _image_bytes(value: Any, base: Path, where: str) -> bytes:
    """The encoded RGB image of a row: HF Image struct {bytes, path}, a path, or base64 text."""
    if isinstance(value, dict):
        b = value.get("bytes")
        if isinstance(b, bytes | bytearray) and b:
            return bytes(b)
        if isinstance(b, str) and b:
            return base64.b64decode(b)
        value = value.get("path")
    if isinstance(value, str) and value:
        p = Path(value)
        p = p if p.is_absolute() else base / p
        try:
            return p.read_bytes()
        except FileNotFoundError as e:
            raise DataNotFoundError(f"{where}: image file {str(p)!r} not found") from e
    raise DataFormatError(f"{where}: field 'img' holds no image (got {type(value).__name__})")


def _row(obj: Any, base: Path, where: str, category: str | None = None) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected an object, got {type(obj).__name__}")
    for key in ("question", "answer"):
        if not isinstance(obj.get(key), str):
            raise DataFormatError(f"{where}: field {key!r} must be a string")
    cat = category  # the split named by the file path wins over the column
    if cat is None:
        raw = obj.get("category")
        if not isinstance(raw, str):
            raise DataFormatError(f"{where}: field 'category' must be a string")
        cat = _category_of(raw) or raw.strip().lower()
    return {
        "category": cat,
        "question": obj["question"],
        "answer": obj["answer"],
        "img": obj.get("img", obj.get("image")),
        "base": base,
        "where": where,
    }


def _category_of(text: str) -> str | None:
    s = text.lower()
    return next((c for c in ("context", "configuration", "compatibility") if c in s), None)


def _split_of_path(path: Path) -> str | None:
    return _category_of(path.as_posix())


def _iter_parquet(files: Sequence[Path], root: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise RuntimeError(
            "reading RoboSpatial-Home parquet files needs pyarrow (`pip install 'vigorl[data]'`); or pass "
            "--source DIR with an annotations.json / *.jsonl export of the benchmark"
        ) from e
    for f in files:
        split = _split_of_path(f.relative_to(root))
        table = pq.read_table(f, columns=None)
        for i, obj in enumerate(table.to_pylist()):
            yield _row(obj, f.parent, f"{f.name}, row {i}", split)


def iter_robospatial_rows(source: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Rows of a local RoboSpatial-Home export (parquet dir, annotations.json or *.jsonl)."""
    root = Path(source)
    ann = root / "annotations.json"
    if ann.is_file():
        data = json.loads(ann.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise DataFormatError(f"{ann}: expected a JSON list of records")
        for i, obj in enumerate(data):
            yield _row(obj, root, f"{ann.name}, item {i}")
        return
    jsonls = sorted(root.rglob("*.jsonl"))
    if jsonls:
        for f in jsonls:
            split = _split_of_path(f.relative_to(root))
            with open(f, encoding="utf-8") as fh:
                for n, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DataFormatError(
                                f"{f.name}, line {n}: malformed JSON ({e.msg})"
                            ) from e
                        yield _row(obj, f.parent, f"{f.name}, line {n}", split)
        return
    parquets = sorted(root.rglob("*.parquet"))
    if parquets:
        yield from _iter_parquet(parquets, root)
        return
    raise DataNotFoundError(
        f"{root}: no annotations.json, *.jsonl or *.parquet files found (expected a RoboSpatial-Home export)"
    )


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------


def _yes_no(answer: str, where: str) -> str:
    a = answer.strip().strip(".").strip().lower()
    if a not in _OPTIONS:
        raise DataFormatError(f"{where}: field 'answer' must be yes or no, got {answer!r}")
    return a


def convert_robospatial(rows: Iterable[dict[str, Any]], data_root: str | os.PathLike[str]) -> Path:
    """Write the schema-E file and images under DATA_ROOT from rows of `iter_robospatial_rows`."""
    root = Path(data_root).expanduser().resolve()
    out_dir = root / ROBOSPATIAL_DIR
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(ROBOSPATIAL_CATEGORIES, 0)
    records: list[dict[str, Any]] = []
    skipped = 0
    for row in rows:
        cat = row["category"]
        if cat not in counts:
            skipped += 1
            continue
        where = row["where"]
        sid = f"robospatial_{cat}_{counts[cat]}"
        counts[cat] += 1
        data = _image_bytes(row["img"], row["base"], where)
        img = decode_image_bytes(data, f"{where}: field 'img'")
        ext = _EXT.get(img.format or "")
        if ext is None:  # unusual encoding: store a PNG instead
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            data, ext = buf.getvalue(), "png"
        img.close()
        rel = f"{ROBOSPATIAL_DIR}/images/{sid}.{ext}"
        (root / rel).write_bytes(data)
        question = (
            IMAGE_MARKER
            + row["question"].replace(IMAGE_MARKER, "").strip()
            + "\n"
            + fmt_options(_OPTIONS)
        )
        records.append(
            {
                "id": sid,
                "image": rel,
                "conversations": [
                    {"from": "human", "value": question},
                    {"from": "gpt", "value": _yes_no(row["answer"], where)},
                ],
                "category": cat,
            }
        )
    if not records:
        raise DataFormatError(f"no {' / '.join(ROBOSPATIAL_CATEGORIES)} rows found in the source")
    out = root / ROBOSPATIAL_REL
    tmp = out.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    logger.info(
        "wrote %s: %d questions (%s); %d rows of other categories skipped",
        out,
        len(records),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        skipped,
    )
    return out


def _hub_rows(repo_id: str, revision: str | None, cache_dir: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow  # noqa: F401  (fail before downloading anything)
    except ImportError as e:
        raise RuntimeError(
            f"preparing RoboSpatial from the hub ({repo_id}) reads parquet and needs pyarrow "
            "(`pip install pyarrow`); alternatively pass --source DIR with an annotations.json or "
            "*.jsonl export of RoboSpatial-Home"
        ) from e
    from huggingface_hub import snapshot_download

    local = snapshot_download(
        repo_id=repo_id,
        repo_type="dataset",
        revision=revision,
        allow_patterns=["*.parquet"],
        local_dir=str(cache_dir),
    )
    files = [
        f
        for f in sorted(Path(local).rglob("*.parquet"))
        if _split_of_path(f.relative_to(local)) in ROBOSPATIAL_CATEGORIES
    ]
    if not files:
        raise DataNotFoundError(f"{repo_id}: no configuration/compatibility parquet files found")
    yield from _iter_parquet(files, Path(local))


def prepare_robospatial(
    data_root: str | os.PathLike[str], source: str | None = None, *, revision: str | None = None
) -> Path:
    """Build `spatial_reasoning/robospatial/robospatial_test.jsonl` (+ images) under DATA_ROOT."""
    root = Path(data_root).expanduser().resolve()
    src = source or ROBOSPATIAL_HUB_ID
    if Path(src).expanduser().is_dir():
        rows = iter_robospatial_rows(Path(src).expanduser())
    else:
        rows = _hub_rows(src, revision, root / ".vigorl" / "robospatial_source")
    out = convert_robospatial(rows, root)
    with open(out, encoding="utf-8") as fh:
        n = sum(1 for line in fh if line.strip())
    if source is None and n != ROBOSPATIAL_EXPECTED:
        logger.warning("RoboSpatial: %d questions written, expected %d", n, ROBOSPATIAL_EXPECTED)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m vigorl_env.data.prepare",
        description="Build project-defined benchmark files under DATA_ROOT.",
    )
    p.add_argument("benchmark", choices=["robospatial"])
    p.add_argument("--data-root", default=None, help="target directory (default: $DATA_ROOT)")
    p.add_argument(
        "--source",
        default=None,
        help=f"local export directory or Hugging Face dataset id (default {ROBOSPATIAL_HUB_ID})",
    )
    p.add_argument("--revision", default=None, help="dataset revision when --source is a hub id")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_root = cli_data_root(args.data_root)
    if data_root is None:
        return 2
    try:
        out = prepare_robospatial(data_root, args.source, revision=args.revision)
    except (RuntimeError, DataFormatError, DataNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    logger.info("RoboSpatial ready: %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

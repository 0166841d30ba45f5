"""Append-only JSONL files that survive a killed writer.

Every long job of the project (evaluation samples, training metrics, MCTS trees) writes one JSON
object per line and resumes by reading the file back. A process killed mid-write leaves a *torn
tail*: the last line without its newline, often not valid JSON. Appending after it would glue the
next record onto the torn bytes and lose both. So every writer opens its file through
`JsonlAppender`, which first cuts the torn tail (see docs/data.md#append-only-jsonl-files), and every
reader goes through `read_jsonl`, which skips nothing silently: a torn last line is reported and
ignored, a bad line in the middle is an error naming the file and line.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

__all__ = ["JsonlAppender", "cut_torn_tail", "read_jsonl"]


def cut_torn_tail(path: str | os.PathLike[str]) -> int:
    """Truncate `path` after its last newline; return the number of bytes removed (0 if none).

    A complete file ends with a newline (or is empty); anything after the last newline is the
    remains of an interrupted write. A missing file is fine (nothing to cut)."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # Scan backwards in blocks for the last newline.
        block = 1 << 16
        pos = size
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        else:
            keep = 0
        removed = size - keep
        if removed:
            f.truncate(keep)
            logger.warning(
                "%s: cut a torn last line (%d bytes) left by an interrupted write", path, removed
            )
        return removed


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, record)` for every complete line of `path` (1-based line numbers).

    A torn last line (no trailing newline and not valid JSON) is skipped with a warning: it is what
    `cut_torn_tail` will remove before the next append. A malformed complete line raises
    `ValueError` naming the file and line."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""  # after the last newline: b"" for a complete file
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # bad UTF-8 or JSON, huge ints, deep nesting
            raise ValueError(f"{path}, line {i}: not a JSON object ({e})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}, line {i}: expected a JSON object, got {type(rec).__name__}")
        yield i, rec
    if torn.strip():
        logger.warning("%s: ignoring a torn last line (%d bytes)", path, len(torn))


class JsonlAppender:
    """One writer of an append-only JSONL file: cuts a torn tail on open, one flushed line per record.

    Use as a context manager: `with JsonlAppender(path) as out: out.write({...})`."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync
        self._f: IO[str] | None = None

    def __enter__(self) -> JsonlAppender:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        cut_torn_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self._f is None:
            raise RuntimeError(f"{self.path}: JsonlAppender used before open()")
        self._f.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

"""Read MCTS tree files: ours and upstream's (docs/mcts.md#reading-tree-files).

A tree file is append-only JSONL, one searched sample per line (`{"id", ..., "tree": {...}}`) or an
error line (`{"id", "error", "traceback"}`). Linearization reads many such files, some written by
upstream's search, so the reader is lenient where upstream differs and loud where data is broken:

* **Upstream form accepted.** Upstream wrote one sample per file without an `id`; a line without
  `id` gets `"{file stem}:{0-based line}"` (the default id of the RL files, docs/data.md). Any number
  of lines per file is read. Node fields upstream did not write (`answered`, `answer`, `depth`,
  `closed`, ...) are simply absent: readers of nodes use `.get`.
* **A corrupt line never hides the rest.** A line that is not a JSON object, or whose `tree` is not
  an object, is reported by file and 1-based line (logged and kept in `TreeFile.bad_lines`) and the
  other lines are still read. A torn last line (no newline, left by a killed writer) is skipped
  with a warning, as `vigorl_agents.jsonl.read_jsonl` does.
* **One tree per id.** A resumed run may hold error lines before the tree of the same id; the tree
  wins, and a second tree line of an id is ignored with a warning (the first one is kept).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["TreeFile", "iter_nodes", "read_tree_file", "read_tree_files"]


@dataclass
class TreeFile:
    """What a set of tree files holds: the trees (records with a resolved string `id`, in file
    order), the ids that only have error lines (id → last error text), and the lines that could
    not be read (each message names file and line)."""

    trees: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    bad_lines: list[str] = field(default_factory=list)


def _lines(path: Path) -> Iterator[tuple[int, bytes, bool]]:
    """(1-based line number, raw bytes, is_torn_tail) for every non-blank line."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop() if lines else b""
    for i, raw in enumerate(lines, 1):
        if raw.strip():
            yield i, raw, False
    if torn.strip():
        yield len(lines) + 1, torn, True


def read_tree_file(path: str | os.PathLike[str], into: TreeFile | None = None) -> TreeFile:
    """Read one tree file (ours or upstream's) into `into` (a fresh `TreeFile` by default)."""
    path = Path(path)
    out = into if into is not None else TreeFile()
    seen = {t["id"] for t in out.trees}
    for lineno, raw, torn in _lines(path):
        where = f"{path}, line {lineno}"
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            if torn:
                logger.warning("%s: ignoring a torn last line (%d bytes)", path, len(raw))
                continue
            msg = f"{where}: not a JSON object ({str(e)[:200]})"
            logger.error("%s; the other lines are still read", msg)
            out.bad_lines.append(msg)
            continue
        if not isinstance(rec, dict):
            msg = f"{where}: expected a JSON object, got {type(rec).__name__}"
            logger.error("%s; the other lines are still read", msg)
            out.bad_lines.append(msg)
            continue
        sid = str(rec["id"]) if rec.get("id") is not None else f"{path.stem}:{lineno - 1}"
        if "tree" not in rec:
            if rec.get("error"):
                if sid not in seen:
                    out.errors[sid] = str(rec["error"])
                continue
            msg = f"{where}: a record with neither 'tree' nor 'error'"
            logger.error("%s; the other lines are still read", msg)
            out.bad_lines.append(msg)
            continue
        if not isinstance(rec["tree"], dict):
            msg = f"{where}: 'tree' is a {type(rec['tree']).__name__}, not an object"
            logger.error("%s; the other lines are still read", msg)
            out.bad_lines.append(msg)
            continue
        if sid in seen:
            logger.warning("%s: a second tree for id %r is ignored (the first is kept)", where, sid)
            continue
        seen.add(sid)
        out.errors.pop(sid, None)
        out.trees.append({**rec, "id": sid, "_source": where})
    return out


def read_tree_files(paths: Sequence[str | os.PathLike[str]]) -> TreeFile:
    """Read several tree files (a folder stands for its `*.jsonl` files, sorted by name: upstream
    wrote one file per sample)."""
    out = TreeFile()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.glob("*.jsonl")):
                read_tree_file(f, out)
        elif p.exists():
            read_tree_file(p, out)
        else:
            raise FileNotFoundError(f"tree file {p} does not exist")
    return out


def iter_nodes(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a nested tree dict, root first, children in order (pre-order, iterative so
    a deep tree cannot hit the recursion limit)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        children = node.get("children") or []
        stack.extend(c for c in reversed(children) if isinstance(c, dict))

"""Record parsing of the upstream JSONL files: text normalization, options, boxes, E/R schemas.

Why it exists: turning one line of an E (MCTS/eval) or R (RL) file into a `Sample`, with errors
that name file, line and field, is the fiddly part of the loader and is tested on its own.
Split out of `upstream.py`, which re-exports the public names.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigorl_env.data.base import Sample
from vigorl_env.data.images import ImageRef, open_regular_file
from vigorl_env.data.upstream_specs import Schema, UpstreamSpec
from vigorl_env.errors import DataFormatError
from vigorl_env.protocol import IMAGE_MARKER

# the loader's logger name, kept from before the split (callers filter on it)
logger = logging.getLogger("vigorl_env.data.upstream")

# Text normalization, options, boxes
# ---------------------------------------------------------------------------------------------


def normalize_prompt_text(text: str) -> str:
    """Turn the literal two-character `\\n` and `\\"` of upstream RL files into newline and `"` (docs/protocol.md#system-prompts)."""
    if "\\" not in text:
        return text
    return text.replace("\\n", "\n").replace('\\"', '"')


def normalize_question(question: str) -> tuple[str, int]:
    """Exactly one `<image>` (docs/data.md#the-internal-sample): prepend it if absent; drop extras. Returns (text, markers removed)."""
    n = question.count(IMAGE_MARKER)
    if n == 0:
        return IMAGE_MARKER + question, 0
    if n == 1:
        return question, 0
    first = question.index(IMAGE_MARKER) + len(IMAGE_MARKER)
    return question[:first] + question[first:].replace(IMAGE_MARKER, ""), n - 1


_OPTION_LINE = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.)])\s+(\S.*?)\s*$")


def parse_options(question: str) -> tuple[str, ...] | None:
    """Options listed one per line as `A. text` (also `A) text`, `(A) text`), from A on; else None.

    The first run of consecutive letters A, B, C… wins; fewer than two options count as none.
    """
    best: list[str] = []
    run: list[str] = []
    for line in question.splitlines():
        m = _OPTION_LINE.match(line)
        letter = (m.group(1) or m.group(2)) if m else None
        if m and letter == chr(ord("A") + len(run)):
            run.append(m.group(3))
            continue
        if len(run) >= 2:
            best = run
            break
        run = [m.group(3)] if m and letter == "A" else []
    else:
        if len(run) >= 2:
            best = run
    return tuple(best) if best else None


_NUM = r"[-+]?\d+(?:\.\d+)?"
_BOX_RE = re.compile(
    rf"^\s*[(\[]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[)\]]\s*$"
)


def _short(value: Any, limit: int = 80) -> str:
    """`repr(value)`, cut to `limit` characters (error messages stay readable)."""
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def _as_float(v: float | int | str) -> float:
    try:
        return float(v)
    except OverflowError:  # an int too large for a float
        return math.inf


def parse_box(
    value: Any, where: str, field_name: str
) -> tuple[str, tuple[float, float, float, float]]:
    """GT of a point_in_box record: `"(x1, y1, x2, y2)"` (or a JSON list of 4 numbers).

    Returns the canonical answer string and the box as floats (original frame, inclusive).
    """
    nums: list[float] | None = None
    if isinstance(value, str):
        m = _BOX_RE.match(value)
        if m:
            nums = [_as_float(g) for g in m.groups()]
    elif (
        isinstance(value, list | tuple)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        nums = [_as_float(v) for v in value]
    if nums is None:
        raise DataFormatError(
            f"{where}: field {field_name!r} must be a box string '(x1, y1, x2, y2)' of four numbers, "
            f"got {_short(value)}"
        )
    if not all(math.isfinite(v) for v in nums):
        raise DataFormatError(
            f"{where}: field {field_name!r} box {_short(value)} has a non-finite number "
            "(NaN or infinity, or a literal too large for a float)"
        )
    x1, y1, x2, y2 = nums
    if x1 > x2 or y1 > y2:
        raise DataFormatError(
            f"{where}: field {field_name!r} box {_short(value)} has x1 > x2 or y1 > y2"
        )
    canon = "(" + ", ".join(str(int(v)) if v.is_integer() else str(v) for v in nums) + ")"
    return canon, (x1, y1, x2, y2)


# ---------------------------------------------------------------------------------------------
# Record parsing
# ---------------------------------------------------------------------------------------------


@dataclass
class _FileCtx:
    """What every line of one file shares."""

    bench: UpstreamSpec
    rel: str  # file path relative to DATA_ROOT (posix)
    stem: str
    root: str
    prompt_newlines: str
    extra_markers: list[str] = field(default_factory=list)

    def where(self, line: int) -> str:
        return f"{self.rel}, line {line}"


def _scalar_id(value: Any, ctx: _FileCtx, line: int) -> str:
    if value is None:
        return f"{ctx.stem}:{line - 1}"
    if isinstance(value, _HugeInt):
        raise DataFormatError(
            f"{ctx.where(line)}: field 'id' is an integer literal of {len(value.digits)} digits, "
            f"more than Python converts ({sys.get_int_max_str_digits()}); write long ids as strings"
        )
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise DataFormatError(
        f"{ctx.where(line)}: field 'id' must be a scalar, got {_type_name(value)}"
    )


def _str_field(
    obj: Mapping[str, Any], key: str, ctx: _FileCtx, line: int, label: str | None = None
) -> str:
    label = label or key
    if key not in obj:
        raise DataFormatError(f"{ctx.where(line)}: required field {label!r} is missing")
    v = obj[key]
    if not isinstance(v, str):
        raise DataFormatError(
            f"{ctx.where(line)}: field {label!r} must be a string, got {_type_name(v)}"
        )
    return v


def _image_ref(entry: Any, ctx: _FileCtx, line: int, sample_id: str, label: str) -> ImageRef:
    """A schema E `image` or schema R `images[0]`: str path, {"path": str} or {"bytes": base64}."""
    where = ctx.where(line)
    if isinstance(entry, str):
        if not entry:
            raise DataFormatError(f"{where}: field {label!r} is an empty path")
        return ImageRef(sample_id, ctx.rel, line, ctx.root, path=entry)
    if isinstance(entry, dict):
        b = entry.get("bytes")
        if b is not None:
            if not isinstance(b, str):
                raise DataFormatError(
                    f"{where}: field {label + '.bytes'!r} must be a base64 string"
                )
            return ImageRef(sample_id, ctx.rel, line, ctx.root, b64=b)
        p = entry.get("path")
        if isinstance(p, str) and p:
            return ImageRef(sample_id, ctx.rel, line, ctx.root, path=p)
        raise DataFormatError(f"{where}: field {label!r} must hold a non-empty 'path' or 'bytes'")
    raise DataFormatError(
        f"{where}: field {label!r} must be a path string, {{'path': ...}} or {{'bytes': ...}}, "
        f"got {_type_name(entry)}"
    )


def _finish(
    ctx: _FileCtx, line: int, sample_id: str, question: str, image: ImageRef, gt: Any, gt_label: str
) -> Sample:
    normalized = normalize_prompt_text(question)
    options = parse_options(normalized)
    text = normalized if ctx.prompt_newlines == "normalized" else question
    text, removed = normalize_question(text)
    if removed:
        ctx.extra_markers.append(sample_id)
    kind = ctx.bench.answer_kind
    gt_box = None
    if kind == "point_in_box":
        answer, gt_box = parse_box(gt, ctx.where(line), gt_label)
    else:
        if not isinstance(gt, str):
            raise DataFormatError(
                f"{ctx.where(line)}: field {gt_label!r} must be a string, got {_type_name(gt)}"
            )
        answer = gt.strip()
    return Sample(
        sample_id=sample_id,
        question=text,
        image=image,
        answer=answer,
        answer_kind=kind,
        gt_box=gt_box,
        options=options,
        meta={"source": ctx.rel, "line": line},
    )


def _parse_e(obj: dict[str, Any], ctx: _FileCtx, line: int) -> Sample:
    sample_id = _scalar_id(obj.get("id"), ctx, line)
    if "image" not in obj or obj["image"] is None:
        raise DataFormatError(f"{ctx.where(line)}: required field 'image' is missing")
    img = obj["image"]
    if isinstance(img, list):  # LLaVA-style one-element list
        if len(img) != 1:
            raise DataFormatError(
                f"{ctx.where(line)}: field 'image' lists {len(img)} images; envs take exactly one"
            )
        img = img[0]
    image = _image_ref(img, ctx, line, sample_id, "image")
    conv = obj.get("conversations")
    if not isinstance(conv, list) or len(conv) < 2:
        raise DataFormatError(
            f"{ctx.where(line)}: field 'conversations' must be a list of [query, ground truth] turns"
        )
    for i in (0, 1):
        if not isinstance(conv[i], dict):
            raise DataFormatError(
                f"{ctx.where(line)}: field 'conversations[{i}]' must be an object"
            )
    question = _str_field(conv[0], "value", ctx, line, "conversations[0].value")
    if "value" not in conv[1]:
        raise DataFormatError(
            f"{ctx.where(line)}: required field 'conversations[1].value' is missing"
        )
    return _finish(
        ctx, line, sample_id, question, image, conv[1]["value"], "conversations[1].value"
    )


def _parse_r(obj: dict[str, Any], ctx: _FileCtx, line: int) -> Sample:
    sample_id = _scalar_id(obj.get("id"), ctx, line)
    problem = _str_field(obj, "problem", ctx, line)
    images = obj.get("images")
    if images is None:
        raise DataFormatError(f"{ctx.where(line)}: required field 'images' is missing")
    if isinstance(images, str | dict):
        images = [images]
    if not isinstance(images, list):
        raise DataFormatError(
            f"{ctx.where(line)}: field 'images' must be a list, got {_type_name(images)}"
        )
    if len(images) != 1:
        raise DataFormatError(
            f"{ctx.where(line)}: field 'images' has {len(images)} entries; envs are single-image "
            "(len(images) must be 1)"
        )
    image = _image_ref(images[0], ctx, line, sample_id, "images[0]")
    if "answer" not in obj:
        raise DataFormatError(f"{ctx.where(line)}: required field 'answer' is missing")
    return _finish(ctx, line, sample_id, problem, image, obj["answer"], "answer")


class _HugeInt:
    """An integer literal with more digits than Python converts (`sys.get_int_max_str_digits`).

    Kept as its text, so a record is judged by the fields it uses: a huge `id` is refused by name,
    a huge number in a field the loader ignores is harmless.
    """

    __slots__ = ("digits",)

    def __init__(self, digits: str):
        self.digits = digits

    def __repr__(self) -> str:
        return f"<integer literal of {len(self.digits)} digits>"


def _parse_int(literal: str) -> int | _HugeInt:
    try:
        return int(literal)
    except ValueError:  # over the int-string conversion limit
        return _HugeInt(literal)


def _type_name(value: Any) -> str:
    return "int" if isinstance(value, _HugeInt) else type(value).__name__


def _deep_field(text: str) -> str:
    """The top-level key whose value nests deepest (for the "nested too deeply" error); a linear
    scan that skips string contents, run only on a line that already failed."""
    depth = 0
    key: str | None = None
    worst: tuple[int, str | None] = (0, None)
    i, n = 0, len(text)
    last_string: str | None = None
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            last_string = text[i + 1 : j]
            i = j + 1
            continue
        if c in "[{":
            depth += 1
            if depth > worst[0]:
                worst = (depth, key)
        elif c in "]}":
            depth -= 1
        elif c == ":" and depth == 1:
            key = last_string
        elif c == "," and depth == 1:
            key = None
        i += 1
    return "the record" if worst[1] is None else f"field {worst[1][:80]!r}"


def _decode_line(raw: bytes, ctx: _FileCtx, line_no: int) -> str | None:
    """One line as text, or None if blank; refuses bytes that are not UTF-8, naming where."""
    if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark is tolerated
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        hint = ""
        if line_no == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = " (the file starts with a UTF-16 byte-order mark: save it as UTF-8)"
        elif b"\x00" in raw:
            hint = " (NUL bytes: the file looks UTF-16 or binary; save it as UTF-8)"
        field = ""
        try:  # name the field whose text holds the bad bytes, if the line is JSON otherwise
            obj = json.loads(raw.decode("utf-8", "surrogateescape"))
            if isinstance(obj, dict):
                bad = [k for k, v in obj.items() if _has_surrogate(k) or _has_surrogate(v)]
                if bad:
                    field = f" in field {bad[0].encode('utf-8', 'replace').decode()[:80]!r}"
        except (ValueError, RecursionError):
            pass
        raise DataFormatError(
            f"{ctx.where(line_no)}: not UTF-8 text{field}: byte {e.start} of the line is "
            f"{raw[e.start : e.start + 1]!r}{hint}"
        ) from None
    return text if text.strip() else None


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\udc80" <= ch <= "\udcff" for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _load_line(text: str, ctx: _FileCtx, line_no: int) -> Any:
    """`json.loads` of one line, every failure a `DataFormatError` naming file and line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = (
            " (NUL bytes: the file looks UTF-16 or binary; save it as UTF-8)"
            if "\x00" in text
            else ""
        )
        raise DataFormatError(
            f"{ctx.where(line_no)}: malformed JSON ({e.msg} at column {e.colno}){hint}"
        ) from e
    except RecursionError:
        raise DataFormatError(
            f"{ctx.where(line_no)}: {_deep_field(text)} is nested too deeply to parse "
            "(brackets deeper than Python's recursion limit)"
        ) from None
    except ValueError:
        # an integer literal over Python's int-string limit: parse again keeping such literals
        # as text, so that only a field the loader uses is refused (by name)
        return json.loads(text, parse_int=_parse_int)


def parse_file(
    path: Path,
    bench: UpstreamSpec,
    schema: Schema,
    *,
    data_root: Path,
    prompt_newlines: str = "normalized",
) -> list[Sample]:
    """Parse one JSONL file of `schema` into samples (file order; blank lines skipped).

    Lines are split on `\\n` and must be UTF-8 (a leading UTF-8 byte-order mark is tolerated);
    the file must be a regular file. Every refusal is a `DataFormatError` naming file and line.
    """
    try:
        rel = path.relative_to(data_root).as_posix()
    except ValueError:
        rel = str(path)
    ctx = _FileCtx(bench, rel, path.stem, str(data_root.resolve()), prompt_newlines)
    parse = _parse_e if schema == "E" else _parse_r
    samples: list[Sample] = []
    with open_regular_file(path, f"data file {rel}") as fh:
        for line_no, raw in enumerate(fh, start=1):
            text = _decode_line(raw, ctx, line_no)
            if text is None:
                continue
            obj = _load_line(text, ctx, line_no)
            if not isinstance(obj, dict):
                raise DataFormatError(
                    f"{ctx.where(line_no)}: expected a JSON object, got {_type_name(obj)}"
                )
            samples.append(parse(obj, ctx, line_no))
    if ctx.extra_markers:
        logger.warning(
            "%s: %d record(s) had more than one <image> marker; extras removed (e.g. %s)",
            rel,
            len(ctx.extra_markers),
            ", ".join(repr(s) for s in ctx.extra_markers[:5]),
        )
    return samples

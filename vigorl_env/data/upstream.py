"""Loaders for the upstream data files under DATA_ROOT (SPEC §2.1–§2.3, §2.6, §5.8).

`BENCHMARKS` is the table of §2.1: for every real env id, which file under DATA_ROOT holds each split,
in which schema (E = MCTS/eval JSONL, R = RL JSONL), which tar ships it and which answer kind it
grades. `load_benchmark(name, split)` finds the file, parses every line eagerly (files hold at most
tens of thousands of lines, and failing at `make` beats failing mid-training) and returns an
`UpstreamDataset` of `Sample`s whose images load lazily through `ImageRef`.

Errors are for people: a missing file says which env and split wanted it, the absolute path expected,
where DATA_ROOT came from and the command that fetches it; a bad line names file, line and field.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vigorl_env.data.base import AnswerKind, Sample
from vigorl_env.data.images import ImageRef
from vigorl_env.data.splits import hash_split
from vigorl_env.errors import DataFormatError, DataNotFoundError

__all__ = [
    "BENCHMARKS",
    "DOMAINS",
    "PROMPT_NEWLINES",
    "SplitSpec",
    "UpstreamDataset",
    "UpstreamSpec",
    "load_benchmark",
    "normalize_prompt_text",
    "normalize_question",
    "parse_box",
    "parse_options",
    "resolve_data_root",
]

logger = logging.getLogger(__name__)

#: Tar stems of `gsarch/vigorl_datasets` (each extracted into DATA_ROOT).
DOMAINS: tuple[str, ...] = ("spatial_reasoning", "visual_search", "web_grounding", "web_action")
PROMPT_NEWLINES: tuple[str, ...] = ("normalized", "literal")
IMAGE_MARKER = "<image>"

Schema = Literal["E", "R"]


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives: candidate files (first existing wins), schema, optional id filter.

    `subset = ("hash", f, keep)` keeps the records whose `hash_split(id, f) == keep`.
    """

    candidates: tuple[str, ...]
    schema: Schema
    subset: tuple[str, float, bool] | None = None


@dataclass(frozen=True)
class UpstreamSpec:
    """One real benchmark env: its splits, the tar (domain) that ships them, its answer kind."""

    name: str
    domain: str
    answer_kind: AnswerKind
    default_split: str
    splits: Mapping[str, SplitSpec] = field(hash=False)
    project_defined: bool = False

    @property
    def env_id(self) -> str:
        return f"ViGoRL/{self.name}-v0"

    @property
    def fetch_command(self) -> str:
        """The command that puts this benchmark's files under DATA_ROOT (no `--data-root`)."""
        if self.project_defined:
            return f"python -m vigorl_env.data.prepare {self.name.lower()}"
        return f"python -m vigorl_env.data.download {self.domain}"


def _bench(
    name: str,
    domain: str,
    kind: AnswerKind,
    default: str,
    project_defined: bool = False,
    **splits: SplitSpec,
) -> UpstreamSpec:
    return UpstreamSpec(name, domain, kind, default, dict(splits), project_defined)


def _s(schema: Schema, *paths: str, subset: tuple[str, float, bool] | None = None) -> SplitSpec:
    return SplitSpec(tuple(paths), schema, subset)


_VWA = "web_action/vigorl_web_action_MCTS.jsonl"

#: SPEC §2.1 table, keyed by env name (the `X` of `ViGoRL/X-v0`).
BENCHMARKS: dict[str, UpstreamSpec] = {
    b.name: b
    for b in (
        _bench(
            "SAT2",
            "spatial_reasoning",
            "option_text",
            "train",
            mcts=_s("E", "spatial_reasoning/vigorl_sat2_MCTS.jsonl"),
            train=_s("R", "spatial_reasoning/vigorl_sat2_train_RL.jsonl"),
            val=_s("R", "spatial_reasoning/vigorl_sat2_val_RL.jsonl"),
            test=_s("E", "spatial_reasoning/sat2_test/sat2_test.jsonl"),
        ),
        _bench(
            "BLINK",
            "spatial_reasoning",
            "option_text",
            "val",
            val=_s("E", "spatial_reasoning/blink/blink_validation.jsonl"),
        ),
        _bench(
            "RoboSpatial",
            "spatial_reasoning",
            "option_text",
            "test",
            True,
            test=_s("E", "spatial_reasoning/robospatial/robospatial_test.jsonl"),
        ),
        _bench(
            "VStar",
            "visual_search",
            "option_text",
            "test",
            test=_s("E", "visual_search/vstar/vstarbench_test.jsonl"),
            test_rl=_s("R", "visual_search/vstar/vstarbench_test_RL.jsonl"),
        ),
        _bench(
            "VisualSearchSA",
            "visual_search",
            "option_text",
            "train",
            mcts=_s("E", "vstar/vigorl_SA_MCTS.jsonl", "visual_search/vigorl_SA_MCTS.jsonl"),
            train=_s("R", "visual_search/vigorl_SA_RL.jsonl"),
        ),
        _bench(
            "OSAtlas",
            "web_grounding",
            "point_in_box",
            "train",
            mcts=_s("E", "web_grounding/vigorl_osatlas_MCTS.jsonl"),
            train=_s("R", "web_grounding/vigorl_osatlas_train_RL.jsonl"),
            val=_s("R", "web_grounding/vigorl_osatlas_val_RL.jsonl"),
        ),
        _bench(
            "ScreenSpotV2",
            "web_grounding",
            "point_in_box",
            "test",
            test=_s("E", "web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl"),
        ),
        _bench(
            "ScreenSpotPro",
            "web_grounding",
            "point_in_box",
            "test",
            test=_s("E", "web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl"),
        ),
        _bench(
            "VisualWebArena",
            "web_action",
            "web_action",
            "train",
            mcts=_s("E", _VWA),
            train=_s("E", _VWA, subset=("hash", 0.95, True)),
            val=_s("E", _VWA, subset=("hash", 0.95, False)),
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# DATA_ROOT resolution and the missing-data message (§5.8, §15.11)
# ---------------------------------------------------------------------------------------------

ORIGIN_KWARG = "kwarg"
ORIGIN_ENV = "environment variable DATA_ROOT"
ORIGIN_UNSET = "unset"


def resolve_data_root(data_root: str | os.PathLike[str] | None) -> tuple[Path | None, str]:
    """(absolute DATA_ROOT or None, origin): the kwarg wins, then `$DATA_ROOT` (empty = unset)."""
    if data_root is not None and str(data_root) != "":
        return Path(data_root).expanduser().absolute(), ORIGIN_KWARG
    env = os.environ.get("DATA_ROOT", "")
    if env:
        return Path(env).expanduser().absolute(), ORIGIN_ENV
    return None, ORIGIN_UNSET


def _missing_file_message(
    spec: UpstreamSpec, split: str, env_id: str, root: Path | None, origin: str
) -> str:
    rels = spec.splits[split].candidates
    head = f"{env_id} (split {split!r}): "
    if root is None:
        rel_txt = " or ".join(repr(r) for r in rels)
        return (
            f"{head}needs the data file {rel_txt} (path relative to DATA_ROOT), but DATA_ROOT is not "
            "set. Set it either with the make kwarg `data_root=PATH` "
            "(gymnasium.make(..., data_root='/path/to/data')) or with the environment variable "
            "`export DATA_ROOT=/path/to/data`, then get the data with: "
            f"{spec.fetch_command} --data-root /path/to/data"
        )
    paths = [str(root / r) for r in rels]
    if len(paths) == 1:
        what = f"data file not found: {paths[0]}"
    else:
        what = "data file not found; none of these exist: " + ", ".join(paths)
    if spec.project_defined:
        how = (
            f"This file is project-defined (not in the upstream tars); build it with: "
            f"{spec.fetch_command} --data-root {root}"
        )
    else:
        how = (
            f"It ships in the upstream tar {spec.domain}.tar (Hugging Face dataset "
            f"gsarch/vigorl_datasets); fetch and extract it with: {spec.fetch_command} --data-root {root}"
        )
    exists = "" if root.is_dir() else " — that directory does not exist"
    src = "the make kwarg data_root" if origin == ORIGIN_KWARG else f"the {origin}"
    return f"{head}{what}. DATA_ROOT = {str(root)!r} (from {src}){exists}. {how}"


# ---------------------------------------------------------------------------------------------
# Text normalization, options, boxes
# ---------------------------------------------------------------------------------------------


def normalize_prompt_text(text: str) -> str:
    """Turn the literal two-character `\\n` and `\\"` of upstream RL files into newline and `"` (§4.6)."""
    if "\\" not in text:
        return text
    return text.replace("\\n", "\n").replace('\\"', '"')


def normalize_question(question: str) -> tuple[str, int]:
    """Exactly one `<image>` (§2.6): prepend it if absent; drop extras. Returns (text, markers removed)."""
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
            nums = [float(g) for g in m.groups()]
    elif (
        isinstance(value, list | tuple)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        nums = [float(v) for v in value]
    if nums is None:
        raise DataFormatError(
            f"{where}: field {field_name!r} must be a box string '(x1, y1, x2, y2)' of four numbers, "
            f"got {value!r}"
        )
    x1, y1, x2, y2 = nums
    if x1 > x2 or y1 > y2:
        raise DataFormatError(f"{where}: field {field_name!r} box {value!r} has x1 > x2 or y1 > y2")
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
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise DataFormatError(
        f"{ctx.where(line)}: field 'id' must be a scalar, got {type(value).__name__}"
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
            f"{ctx.where(line)}: field {label!r} must be a string, got {type(v).__name__}"
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
        f"got {type(entry).__name__}"
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
                f"{ctx.where(line)}: field {gt_label!r} must be a string, got {type(gt).__name__}"
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
            f"{ctx.where(line)}: field 'images' must be a list, got {type(images).__name__}"
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


def parse_file(
    path: Path,
    bench: UpstreamSpec,
    schema: Schema,
    *,
    data_root: Path,
    prompt_newlines: str = "normalized",
) -> list[Sample]:
    """Parse one JSONL file of `schema` into samples (file order; blank lines skipped)."""
    try:
        rel = path.relative_to(data_root).as_posix()
    except ValueError:
        rel = str(path)
    ctx = _FileCtx(bench, rel, path.stem, str(data_root.resolve()), prompt_newlines)
    parse = _parse_e if schema == "E" else _parse_r
    samples: list[Sample] = []
    with open(path, encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    f"{ctx.where(line_no)}: malformed JSON ({e.msg} at column {e.colno})"
                ) from e
            if not isinstance(obj, dict):
                raise DataFormatError(
                    f"{ctx.where(line_no)}: expected a JSON object, got {type(obj).__name__}"
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


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


class UpstreamDataset:
    """One split of a real benchmark, parsed eagerly; implements the `Dataset` protocol.

    Indices are positions in the file after split filtering (§15.4). Picklable (plain data + samples
    whose image loaders are frozen dataclasses).
    """

    def __init__(
        self,
        spec: UpstreamSpec,
        split: str,
        path: Path,
        data_root: Path,
        samples: list[Sample],
        prompt_newlines: str = "normalized",
    ):
        self.spec = spec
        self.name = spec.name
        self.split = split
        self.path = path
        self.data_root = data_root
        self.prompt_newlines = prompt_newlines
        self._samples = samples
        self._index: dict[str, int] = {}
        dups: list[str] = []
        for i, s in enumerate(samples):
            if s.sample_id in self._index:
                dups.append(s.sample_id)
            else:
                self._index[s.sample_id] = i
        if dups:
            logger.warning(
                "%s[%s]: %d duplicate sample id(s) in %s; index_of returns the first (e.g. %s)",
                self.name,
                split,
                len(dups),
                path,
                ", ".join(repr(d) for d in dups[:5]),
            )

    @property
    def answer_kind(self) -> AnswerKind:
        return self.spec.answer_kind

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Sample:
        i = int(index)
        if not 0 <= i < len(self._samples):
            raise IndexError(
                f"{self.name}[{self.split}]: index {index} outside [0, {len(self._samples)})"
            )
        return self._samples[i]

    def index_of(self, sample_id: str) -> int:
        try:
            return self._index[str(sample_id)]
        except KeyError:
            raise KeyError(f"{self.name}[{self.split}]: no sample with id {sample_id!r}") from None

    def ids(self) -> list[str]:
        return [s.sample_id for s in self._samples]

    def __repr__(self) -> str:
        return f"UpstreamDataset({self.name!r}, split={self.split!r}, n={len(self)}, path={str(self.path)!r})"


def load_benchmark(
    name: str,
    split: str | None = None,
    *,
    data_root: str | os.PathLike[str] | None = None,
    prompt_newlines: str = "normalized",
    env_id: str | None = None,
) -> UpstreamDataset:
    """Load one split of a real benchmark from DATA_ROOT (SPEC §2.1).

    Raises `ValueError` for an unknown benchmark, split or `prompt_newlines`; `DataNotFoundError`
    (§5.8, §15.11) when the file is missing or DATA_ROOT is unset; `DataFormatError` for bad lines.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    split = spec.default_split if split is None else split
    if split not in spec.splits:
        raise ValueError(
            f"{spec.env_id}: unknown split {split!r}; valid splits: {sorted(spec.splits)}"
        )
    if prompt_newlines not in PROMPT_NEWLINES:
        raise ValueError(
            f"prompt_newlines must be one of {PROMPT_NEWLINES}, got {prompt_newlines!r}"
        )
    env_id = env_id or spec.env_id
    root, origin = resolve_data_root(data_root)
    split_spec = spec.splits[split]
    if root is None:
        raise DataNotFoundError(_missing_file_message(spec, split, env_id, None, origin))
    path = next((root / c for c in split_spec.candidates if (root / c).is_file()), None)
    if path is None:
        raise DataNotFoundError(_missing_file_message(spec, split, env_id, root, origin))
    samples = parse_file(
        path, spec, split_spec.schema, data_root=root, prompt_newlines=prompt_newlines
    )
    if split_spec.subset is not None:
        rule, f, keep = split_spec.subset
        if rule != "hash":
            raise ValueError(f"unknown subset rule {rule!r}")
        samples = [s for s in samples if hash_split(s.sample_id, f) == keep]
    return UpstreamDataset(spec, split, path, root, samples, prompt_newlines)

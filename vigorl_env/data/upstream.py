"""Loaders for the upstream data files under DATA_ROOT (docs/data.md, docs/envs.md#errors).

`BENCHMARKS` is the layout table (docs/data.md#data_root-layout): for every real env id, which file under DATA_ROOT holds each split,
in which schema (E = MCTS/eval JSONL, R = RL JSONL), which tar ships it and which answer kind it
grades. `load_benchmark(name, split)` finds the file, parses every line eagerly (files hold at most
tens of thousands of lines, and failing at `make` beats failing mid-training) and returns an
`UpstreamDataset` of `Sample`s whose images load lazily through `ImageRef`.

Errors are for people: a missing file says which env and split wanted it, the absolute path expected,
where DATA_ROOT came from and the command that fetches it; a bad line names file, line and field.

Layout: `upstream_specs` (the benchmark table), `upstream_records` (text normalization and record
parsing); this module resolves DATA_ROOT, holds the dataset class and `load_benchmark`, and
re-exports the public names of both.

What the loaders accept and refuse (docs/data.md#what-the-loaders-accept-and-refuse)
---------------------------------------------------------------------------------------
Files. The first candidate path that exists is the split file; it must be a regular file (a FIFO,
device or directory is a `DataFormatError`, never a hang). Missing file or unset DATA_ROOT:
`DataNotFoundError`. Lines are split on `\n` (`\r\n` works; the last line needs no newline) and
must be UTF-8; a leading UTF-8 byte-order mark is skipped; UTF-16 or other bytes are refused with
the line, the byte and (when the rest of the line is JSON) the field. Blank lines are skipped. A
file with no records, or a split whose hash rule keeps none of them, is refused at `make`.

Records. Each line is one JSON object (arrays, strings, numbers: refused). JSON is Python's (NaN and
Infinity literals parse; duplicate keys: the last wins). Nesting deeper than Python's recursion
limit is refused, naming the top-level field. Integer literals over Python's int-string limit
(4,300 digits) are refused where the loader uses them (`id`) and ignored elsewhere. Unknown keys
are ignored. `id`: a string or number, cast to `str` (default `"{file stem}:{0-based line}"` in
schema R); duplicates are kept, `index_of` gives the first. Schema E needs `image` (a path, a
one-element list, `{"path"}` or `{"bytes": base64}`) and `conversations` with at least two turn
objects whose `value`s are the question (a string) and the ground truth; schema R needs `problem`
(a string), `images` with exactly one entry (same forms) and `answer`. Questions get exactly one
`<image>` (prepended if absent, extras dropped with a warning).

Ground truth by kind. option_text and web_action: a string (stripped). point_in_box: the string
`"(x1, y1, x2, y2)"` (or `[…]`) of four decimal numbers (sign and fraction allowed, no exponent) or
a JSON list of four numbers; every number must be finite (NaN, infinities and literals beyond the
float range are refused) with x1 <= x2 and y1 <= y2.

Images (read lazily, at `reset`). A relative path joins DATA_ROOT and must stay inside it after `..`
and symlinks resolve; an absolute path is taken as written; the file must be a regular file; it
must decode with Pillow, within `PIL.Image.MAX_IMAGE_PIXELS`, and not be truncated. Inline
`bytes` are base64 (a `data:` URL prefix is allowed). A missing image is a `DataNotFoundError`
naming the path and the sample; the rest are `DataFormatError`s naming file, line and sample.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from vigorl_env.data.base import AnswerKind, Sample
from vigorl_env.data.splits import hash_split
from vigorl_env.data.upstream_records import (
    normalize_prompt_text,
    normalize_question,
    parse_box,
    parse_file,
    parse_options,
)
from vigorl_env.data.upstream_specs import (
    BENCHMARKS,
    DOMAINS,
    PROMPT_NEWLINES,
    SplitSpec,
    UpstreamSpec,
)
from vigorl_env.data.upstream_specs import Schema as Schema
from vigorl_env.errors import DataFormatError, DataNotFoundError
from vigorl_env.protocol import IMAGE_MARKER as IMAGE_MARKER

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

# DATA_ROOT resolution and the missing-data message (docs/envs.md#errors)
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


# The dataset
# ---------------------------------------------------------------------------------------------


class UpstreamDataset:
    """One split of a real benchmark, parsed eagerly; implements the `Dataset` protocol.

    Indices are positions in the file after split filtering (docs/data.md#record-schemas). Picklable (plain data + samples
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

    @property
    def cache_key(self) -> tuple[str, str, str, str]:
        """Equal for two loads of the same split file (same records, same images at every index),
        so envs that each loaded it share model frames (`vigorl_env.env.FrameCache`)."""
        return ("upstream", self.name, self.split, str(self.path))

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
    """Load one split of a real benchmark from DATA_ROOT (docs/data.md#data_root-layout).

    Raises `ValueError` for an unknown benchmark, split or `prompt_newlines`; `DataNotFoundError`
    (docs/envs.md#errors) when the file is missing or DATA_ROOT is unset; `DataFormatError` for bad lines.
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
    # the first candidate that exists wins; one that exists but is not a regular file (a FIFO, a
    # directory) is refused by parse_file rather than skipped or left to hang
    path = next((root / c for c in split_spec.candidates if os.path.exists(root / c)), None)
    if path is None:
        raise DataNotFoundError(_missing_file_message(spec, split, env_id, root, origin))
    samples = parse_file(
        path, spec, split_spec.schema, data_root=root, prompt_newlines=prompt_newlines
    )
    where = f"{env_id} (split {split!r}): data file {str(path)!r}"
    if not samples:
        raise DataFormatError(f"{where} holds no records (it is empty or has only blank lines)")
    if split_spec.subset is not None:
        rule, f, keep = split_spec.subset
        if rule != "hash":
            raise ValueError(f"unknown subset rule {rule!r}")
        n = len(samples)
        samples = [s for s in samples if hash_split(s.sample_id, f) == keep]
        if not samples:
            raise DataFormatError(
                f"{where}: none of its {n} records falls in split {split!r} (val = the ids with "
                f"hash_split(id, {f}) true, train = the rest)"
            )
    return UpstreamDataset(spec, split, path, root, samples, prompt_newlines)

"""SFT data: records from our files, token streams whose loss mask is known by construction (docs/sft.md).

Why it looks like this:

* **Masks by construction** (docs/sft.md#token-streams-and-loss-masks). Upstream trainers render the whole
  conversation, tokenize it, then search the token stream for `<|im_start|>assistant\\n` patterns to
  find what to train on; BPE merges across piece boundaries made that search miss or over-match. Here
  the stream is the concatenation of pieces tokenized on their own — header, content, `<|im_end|>`,
  newline, vision tokens — each carrying its supervision flag, so the mask is a by-product of how the
  ids were made. Piece boundaries sit at special tokens and at the header newline, where the
  byte-level pre-tokenizer already splits; `tokenize_record` still re-renders every example with the
  processor's own chat template and asserts the two id sequences are equal (a mismatch is an error
  naming the example, never a silently shifted mask).
* **Images at their model-frame size** (docs/geometry.md#model-frame). Each image must already be a model frame:
  sides multiples of 28 (patch 14 × merge 2) and a pixel count inside the processor's bounds, so the
  image processor leaves it alone. Anything else is an error naming the example: a silent resize would
  move every coordinate in the chain.
* **Token counts without pixels.** The number of image tokens follows from the image size alone, so
  `SFTDataset` tokenizes every record up front (length filter, drop summary, preflight) reading only
  image headers, and runs the image processor lazily per item: 100k examples × 1008² frames never sit
  in memory as pixel tensors.
* **Preflight** (docs/sft.md#token-streams-and-loss-masks): image-pad count = Σ t·h·w / merge² and
  vision start/end counts = number of images, checked before the step; the mismatch is the most reported VLM-trainer crash
  and would otherwise surface as an opaque error deep inside the model (or, worse, a silent
  misalignment).

torch and transformers are imported lazily; the record loaders need neither.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vigorl_agents.chat import chat_messages, placeholder_image_part, text_turns
from vigorl_env import DataFormatError
from vigorl_env.data.images import reroot_image_path
from vigorl_env.protocol import FORCED_PREFIX, IMAGE_MARKER

logger = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
"""What the Qwen2-VL / Qwen2.5-VL chat templates insert when a conversation has no system message."""
IGNORE_INDEX = -100
KINDS = ("direct", "corrected", "multi_turn", "answer_only")

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "IGNORE_INDEX",
    "DropReason",
    "ImageSizeError",
    "PreflightError",
    "SFTDataset",
    "SFTRecord",
    "TemplateMismatchError",
    "TokenizedExample",
    "VisionTokenIds",
    "collate",
    "load_parquet",
    "load_sft_file",
    "load_sharegpt_json",
    "load_vigorl_jsonl",
    "preflight",
    "tokenize_record",
]


# =========================================================================== records


@dataclass
class SFTRecord:
    """One conversation to train on. `images` are paths (already resolved) or PIL images, in the
    order of the `<image>` markers of `messages`."""

    id: str
    messages: list[dict[str, str]]
    images: list[Any] = field(default_factory=list)
    kind: str = "direct"
    meta: dict[str, Any] = field(default_factory=dict)


def _fail(where: str, field_name: str, msg: str) -> DataFormatError:
    return DataFormatError(f"{where}: field {field_name!r}: {msg}")


def _check_messages(messages: Any, n_images: int, where: str) -> list[dict[str, str]]:
    """Validate the chat structure (docs/data.md#sft-record-formats); return clean {"role", "content"} dicts."""
    if not isinstance(messages, list) or not messages:
        raise _fail(where, "messages", "must be a non-empty list")
    out: list[dict[str, str]] = []
    n_markers = 0
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise _fail(where, f"messages[{i}]", "must be an object with 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise _fail(where, f"messages[{i}].role", f"{role!r} is not one of {ROLES}")
        if not isinstance(content, str):
            raise _fail(where, f"messages[{i}].content", "must be a string")
        if role == "system" and i != 0:
            raise _fail(where, f"messages[{i}].role", "a system message may only come first")
        k = content.count(IMAGE_MARKER)
        if k and role == "assistant":
            raise _fail(where, f"messages[{i}].content", "assistant turns cannot hold <image>")
        n_markers += k
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "assistant":
        raise _fail(where, "messages", "the last message must be the assistant's")
    if n_markers != n_images:
        raise _fail(
            where, "images", f"{n_markers} <image> marker(s) in messages but {n_images} image(s)"
        )
    return out


def _resolve_images(images: Any, data_root: Any, where: str) -> list[Path]:
    if not isinstance(images, list):
        raise _fail(where, "images", "must be a list of paths")
    out = []
    for j, p in enumerate(images):
        if not isinstance(p, str) or not p:
            raise _fail(where, f"images[{j}]", "must be a non-empty path string")
        try:  # relative paths must stay inside DATA_ROOT: the env loader's rule
            out.append(reroot_image_path(p, data_root))
        except (FileNotFoundError, DataFormatError) as e:
            raise type(e)(f"{where}: field 'images[{j}]': {e}") from e
    return out


def _data_root(data_root: Any) -> Any:
    return data_root if data_root is not None else os.environ.get("DATA_ROOT")


def _record(obj: Any, where: str, data_root: Any, default_id: str) -> SFTRecord:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: a record must be a JSON object")
    images = _resolve_images(obj.get("images", []), data_root, where)
    messages = _check_messages(obj.get("messages"), len(images), where)
    kind = obj.get("kind", "direct")
    if kind not in KINDS:
        raise _fail(where, "kind", f"{kind!r} is not one of {KINDS}")
    meta = dict(obj.get("meta") or obj.get("metadata") or {})
    for key in ("sample_id", "env_id", "split", "frame", "gt_answer"):
        if key in obj:
            meta.setdefault(key, obj[key])
    rid = obj.get("id", default_id)
    return SFTRecord(id=str(rid), messages=messages, images=list(images), kind=kind, meta=meta)


def load_vigorl_jsonl(path: str | os.PathLike[str], data_root: Any = None) -> list[SFTRecord]:
    """vigorl SFT JSONL (docs/data.md#sft-record-formats): one record per line; blank lines skipped.

    Errors name the file, the 1-based line and the field (`DataFormatError`); a missing image is a
    `DataNotFoundError` naming the same."""
    path = Path(path)
    root = _data_root(data_root)
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{where}: invalid JSON ({e.msg})") from e
            records.append(_record(obj, where, root, f"{path.stem}:{lineno - 1}"))
    return records


def read_json_array(path: Path) -> list[Any]:
    """A sharegpt file's JSON array; `DataFormatError` naming the file (and line) otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: invalid JSON at line {e.lineno} ({e.msg})") from e
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: a sharegpt file must hold a JSON array of records")
    return data


def load_sharegpt_json(path: str | os.PathLike[str], data_root: Any = None) -> list[SFTRecord]:
    """LLaMA-Factory sharegpt JSON array (single- or multi-turn, docs/data.md#sft-record-formats);
    upstream absolute image paths are re-rooted under DATA_ROOT. Errors name the file and the 0-based record index."""
    path = Path(path)
    data = read_json_array(path)
    root = _data_root(data_root)
    kind = "multi_turn"
    return [
        _record(
            {**obj, "kind": obj.get("kind", _guess_kind(obj, kind))}
            if isinstance(obj, dict)
            else obj,
            f"{path}[{i}]",
            root,
            f"{path.stem}:{i}",
        )
        for i, obj in enumerate(data)
    ]


def _guess_kind(obj: dict, multi: str) -> str:
    msgs = obj.get("messages")
    if (
        isinstance(msgs, list)
        and sum(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs) > 1
    ):
        return multi
    return "direct"


def load_parquet(path: str | os.PathLike[str], data_root: Any = None) -> list[SFTRecord]:
    """Multi-turn parquet (interop, docs/data.md#sft-record-formats): columns `messages`, `images`;
    optional `id`, `kind`. Needs pyarrow (ImportError with a clear message otherwise)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path} needs pyarrow, which is not installed") from e
    path = Path(path)
    rows = pq.read_table(path).to_pylist()
    root = _data_root(data_root)
    return [
        _record(
            {**r, "kind": r.get("kind") or _guess_kind(r, "multi_turn")},
            f"{path}[{i}]",
            root,
            f"{path.stem}:{i}",
        )
        for i, r in enumerate(rows)
    ]


def load_sft_file(path: str | os.PathLike[str], data_root: Any = None) -> list[SFTRecord]:
    """Dispatch on the suffix: .jsonl → vigorl JSONL, .json → sharegpt, .parquet → parquet."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return load_vigorl_jsonl(path, data_root)
    if suffix == ".json":
        return load_sharegpt_json(path, data_root)
    if suffix == ".parquet":
        return load_parquet(path, data_root)
    raise ValueError(
        f"{path}: unknown SFT file type {suffix!r} (expected .jsonl, .json or .parquet)"
    )


# =========================================================================== tokenization


class ImageSizeError(ValueError):
    """An image is not a model frame the processor would keep as is (docs/geometry.md#the-resize-rule)."""


class TemplateMismatchError(ValueError):
    """The piecewise token stream differs from the processor's own chat-template rendering."""


class PreflightError(ValueError):
    """Image tokens of an example do not match its image features (docs/sft.md#token-streams-and-loss-masks)."""


@dataclass(frozen=True)
class VisionTokenIds:
    image_pad: int
    vision_start: int
    vision_end: int
    merge_size: int


@dataclass(frozen=True)
class DropReason:
    """Why an example is not trained on; `n_tokens` is its full length (for `too_long`)."""

    reason: str
    n_tokens: int
    example_id: str = ""


@dataclass
class TokenizedExample:
    """One training sequence. `labels[i]` is `input_ids[i]` where position i is supervised, else
    -100 (unshifted, as transformers expects). `pixel_values` is None until images are loaded."""

    id: str
    input_ids: Any  # LongTensor [L]
    labels: Any  # LongTensor [L]
    mm_token_type_ids: Any  # LongTensor [L]: 1 on <|image_pad|>, else 0 (mRoPE needs it)
    image_grid_thw: Any  # LongTensor [n_images, 3] or None
    pixel_values: Any  # FloatTensor [Σ patches, C·T·P·P] or None
    num_image_tokens: int
    vision: VisionTokenIds

    @property
    def num_supervised(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def vision_token_ids(processor: Any) -> VisionTokenIds:
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids([IMAGE_PAD, VISION_START, VISION_END])
    return VisionTokenIds(
        *(int(i) for i in ids), merge_size=int(processor.image_processor.merge_size)
    )


def _open(src: Any):
    from PIL import Image

    if isinstance(src, Image.Image):
        return src
    return Image.open(src)


def _as_rgb(img):
    return img if img.mode == "RGB" else img.convert("RGB")


def image_grids(record: SFTRecord, processor: Any) -> list[tuple[int, int, int]]:
    """(t, h, w) patch grid of each image at its own size; `ImageSizeError` if the processor would
    resize it (sides not multiples of patch·merge, or pixel count outside its bounds)."""
    from vigorl_agents.models.load import processor_pixel_bounds

    ip = processor.image_processor
    patch, merge = int(ip.patch_size), int(ip.merge_size)
    factor = patch * merge
    lo, hi = processor_pixel_bounds(processor)
    grids = []
    for j, src in enumerate(record.images):
        img = _open(src)
        w, h = img.size
        if w % factor or h % factor or not lo <= w * h <= hi:
            raise ImageSizeError(
                f"example {record.id!r}: image {j} ({src if not hasattr(src, 'size') else 'PIL'}) "
                f"is {w}x{h}; the processor would resize it (needs sides multiple of {factor} and "
                f"{lo} <= w*h <= {hi}). Images must be model frames (docs/geometry.md#model-frame): widen the "
                f"processor's min/max_pixels or re-export the data"
            )
        grids.append((1, h // patch, w // patch))
    return grids


def load_pixels(record: SFTRecord, processor: Any, grids: Sequence[tuple[int, int, int]]):
    """Run the image processor on the record's images; assert it kept their grids."""
    import torch

    if not record.images:
        return None, None
    images = [_as_rgb(_open(src)) for src in record.images]
    out = processor.image_processor(images=images, return_tensors="pt")
    grid = out["image_grid_thw"].to(torch.long)
    expected = torch.tensor(grids, dtype=torch.long)
    if not torch.equal(grid, expected):
        raise ImageSizeError(
            f"example {record.id!r}: the image processor produced grids {grid.tolist()}, expected "
            f"{expected.tolist()} from the image sizes (it resized an image)"
        )
    return out["pixel_values"], grid


class _Builder:
    """Accumulates (ids, supervised) pieces."""

    def __init__(self, tokenizer: Any):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.sup: list[bool] = []

    def text(self, s: str, supervised: bool) -> None:
        if s:
            ids = self.tok(s, add_special_tokens=False)["input_ids"]
            self.ids.extend(ids)
            self.sup.extend([supervised] * len(ids))

    def raw(self, ids: list[int], supervised: bool) -> None:
        self.ids.extend(ids)
        self.sup.extend([supervised] * len(ids))


def _with_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if messages and messages[0]["role"] == "system":
        return messages
    return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, *messages]


def template_ids(record: SFTRecord, processor: Any, image_tokens: Sequence[int]) -> list[int]:
    """Reference ids: the processor's chat template over the conversation (images as content parts),
    each image's single `<|image_pad|>` expanded to its token count (what the processor's __call__
    does), tokenized as one string."""
    conv = chat_messages(text_turns(record.messages), placeholder_image_part)
    text = processor.apply_chat_template(conv, tokenize=False)
    chunks = text.split(IMAGE_PAD)
    if len(chunks) - 1 != len(image_tokens):
        raise TemplateMismatchError(
            f"example {record.id!r}: the chat template rendered {len(chunks) - 1} image(s), "
            f"expected {len(image_tokens)}"
        )
    expanded = chunks[0] + "".join(
        IMAGE_PAD * n + c for n, c in zip(image_tokens, chunks[1:], strict=True)
    )
    return list(processor.tokenizer(expanded, add_special_tokens=False)["input_ids"])


def tokenize_record(
    record: SFTRecord,
    processor: Any,
    *,
    cutoff_len: int = 8192,
    mask_prefix: str | None = FORCED_PREFIX,
    with_pixels: bool = True,
    verify_template: bool = True,
) -> TokenizedExample | DropReason:
    """Token stream and labels of one conversation, built piece by piece
    (docs/protocol.md#chat-rendering, docs/sft.md#token-streams-and-loss-masks).

    Pieces (supervised ones marked *):
      system/user turn: `<|im_start|>{role}\\n{text}` … with each `<image>` as `<|vision_start|>` +
      `<|image_pad|>`×(t·h·w/merge²) + `<|vision_end|>`, then `<|im_end|>` and `\\n`;
      assistant turn: `<|im_start|>assistant\\n`, [forced prefix `mask_prefix` if the content starts
      with it], *content, *`<|im_end|>`, `\\n`.
    Over `cutoff_len` tokens → `DropReason("too_long", n)` (never truncated); no supervised token →
    `DropReason("no_supervised_tokens", n)`. `verify_template` checks the ids against
    `template_ids` (TemplateMismatchError otherwise). `with_pixels=False` reads image headers only
    (pixel_values None; `load_pixels` later).
    """
    import torch

    vt = vision_token_ids(processor)
    grids = image_grids(record, processor)
    merge2 = vt.merge_size**2
    n_tokens = [t * h * w // merge2 for t, h, w in grids]
    b = _Builder(processor.tokenizer)
    img_iter = iter(n_tokens)
    for m in _with_system(record.messages):
        role, content = m["role"], m["content"]
        if role == "assistant":
            b.text(f"{IM_START}assistant\n", False)
            if mask_prefix and content.startswith(mask_prefix):
                b.text(mask_prefix, False)
                content = content[len(mask_prefix) :]
            b.text(content, True)
            b.text(IM_END, True)
            b.text("\n", False)
            continue
        parts = content.split(IMAGE_MARKER)
        b.text(f"{IM_START}{role}\n{parts[0]}", False)
        for p in parts[1:]:
            n = next(img_iter)
            b.raw([vt.vision_start] + [vt.image_pad] * n + [vt.vision_end], False)
            b.text(p, False)
        b.text(f"{IM_END}\n", False)
    n = len(b.ids)
    if n > cutoff_len:
        return DropReason("too_long", n, record.id)
    if not any(b.sup):
        return DropReason("no_supervised_tokens", n, record.id)
    if verify_template:
        ref = template_ids(record, processor, n_tokens)
        if ref != b.ids:
            k = next(
                (i for i, (x, y) in enumerate(zip(ref, b.ids, strict=False)) if x != y),
                min(len(ref), n),
            )
            tok = processor.tokenizer
            raise TemplateMismatchError(
                f"example {record.id!r}: piecewise tokens differ from the chat template at position "
                f"{k} (template {tok.decode(ref[max(0, k - 5) : k + 5])!r} vs pieces "
                f"{tok.decode(b.ids[max(0, k - 5) : k + 5])!r}); piece boundaries must fall where "
                f"the tokenizer splits anyway"
            )
    input_ids = torch.tensor(b.ids, dtype=torch.long)
    sup = torch.tensor(b.sup, dtype=torch.bool)
    labels = torch.where(sup, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    mm = (input_ids == vt.image_pad).to(torch.long)
    pixel_values = None
    grid = torch.tensor(grids, dtype=torch.long) if grids else None
    if with_pixels and record.images:
        pixel_values, grid = load_pixels(record, processor, grids)
    return TokenizedExample(
        id=record.id,
        input_ids=input_ids,
        labels=labels,
        mm_token_type_ids=mm,
        image_grid_thw=grid,
        pixel_values=pixel_values,
        num_image_tokens=sum(n_tokens),
        vision=vt,
    )


def vision_token_problems(ids: Any, grid: Any, vt: VisionTokenIds, trained: Any) -> list[str]:
    """What is wrong with the vision tokens of one sequence (empty: nothing), the check SFT and
    GRPO both run before a pass: `<|image_pad|>` count = Σ t·h·w / merge² of `grid` (rows of
    image_grid_thw, or None), vision start/end counts = number of images, and no vision token
    is trained (`trained`: bool per position, or None to skip that rule)."""
    n_pad = int((ids == vt.image_pad).sum())
    n_start = int((ids == vt.vision_start).sum())
    n_end = int((ids == vt.vision_end).sum())
    n_img = 0 if grid is None else int(grid.shape[0])
    expected = 0 if grid is None else int(grid.prod(-1).sum()) // vt.merge_size**2
    problems = []
    if n_pad != expected:
        problems.append(f"{n_pad} <|image_pad|> tokens, image grids give {expected} features")
    if not n_start == n_end == n_img:
        problems.append(f"{n_start} vision_start / {n_end} vision_end for {n_img} image(s)")
    if trained is not None:
        vision = (ids == vt.image_pad) | (ids == vt.vision_start) | (ids == vt.vision_end)
        if bool((trained & vision).any()):
            problems.append("a vision token is trained")
    return problems


def preflight(example: TokenizedExample, *, max_len: int | None = None) -> None:
    """Raise `PreflightError` (naming the example id and the counts) unless the example's vision
    tokens match its image features (`vision_token_problems`), mm_token_type_ids marks exactly
    the pads, labels align with input_ids, and the length is within `max_len`."""
    vt = example.vision
    ids = example.input_ids
    grid = example.image_grid_thw
    aligned = example.labels.shape == ids.shape and example.mm_token_type_ids.shape == ids.shape
    problems = vision_token_problems(
        ids, grid, vt, (example.labels != IGNORE_INDEX) if aligned else None
    )
    if not aligned:
        problems.append("labels / mm_token_type_ids length differs from input_ids")
    elif not bool(((ids == vt.image_pad).long() == example.mm_token_type_ids).all()):
        problems.append("mm_token_type_ids do not mark exactly the image pads")
    n_patches = None if grid is None else int(grid.prod(-1).sum())
    if example.pixel_values is not None and int(example.pixel_values.shape[0]) != n_patches:
        problems.append(
            f"{example.pixel_values.shape[0]} pixel patches for grids summing to {n_patches}"
        )
    if max_len is not None and len(example) > max_len:
        problems.append(f"length {len(example)} > {max_len}")
    if problems:
        raise PreflightError(f"example {example.id!r}: " + "; ".join(problems))


# =========================================================================== dataset


class SFTDataset:
    """Map-style dataset (torch `Dataset` protocol) over records.

    All records are tokenized at construction without pixels: too-long and unsupervised examples are
    dropped and counted (`drop_counts`, `dropped`), and each kept example passes `preflight`
    (`on_preflight="fatal"` raises, `"skip"` drops it as `preflight`). `__getitem__` loads the
    pixels of one example and preflights it again with them."""

    def __init__(
        self,
        records: Iterable[SFTRecord],
        processor: Any,
        *,
        cutoff_len: int = 8192,
        mask_prefix: str | None = FORCED_PREFIX,
        on_preflight: Literal["fatal", "skip"] = "fatal",
        verify_template: bool = True,
        name: str = "sft",
    ):
        self.processor = processor
        self.cutoff_len = cutoff_len
        self.records: list[SFTRecord] = []
        self.examples: list[TokenizedExample] = []
        self.dropped: list[DropReason] = []
        for rec in records:
            ex = tokenize_record(
                rec,
                processor,
                cutoff_len=cutoff_len,
                mask_prefix=mask_prefix,
                with_pixels=False,
                verify_template=verify_template,
            )
            if isinstance(ex, DropReason):
                self.dropped.append(ex)
                continue
            try:
                preflight(ex, max_len=cutoff_len)
            except PreflightError as e:
                if on_preflight == "fatal":
                    raise
                logger.warning("%s: dropping: %s", name, e)
                self.dropped.append(DropReason("preflight", len(ex), rec.id))
                continue
            self.records.append(rec)
            self.examples.append(ex)
        self.drop_counts = Counter(d.reason for d in self.dropped)
        kept = len(self.examples)
        total = kept + len(self.dropped)
        if self.dropped:
            logger.warning(
                "%s: kept %d of %d examples; dropped %s (cutoff_len %d)",
                name,
                kept,
                total,
                dict(self.drop_counts),
                cutoff_len,
            )
        else:
            logger.info("%s: kept all %d examples", name, kept)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> TokenizedExample:
        ex = self.examples[i]
        rec = self.records[i]
        if rec.images:
            grids = [tuple(int(v) for v in row) for row in ex.image_grid_thw.tolist()]
            pv, grid = load_pixels(rec, self.processor, grids)
            ex = TokenizedExample(
                ex.id,
                ex.input_ids,
                ex.labels,
                ex.mm_token_type_ids,
                grid,
                pv,
                ex.num_image_tokens,
                ex.vision,
            )
            preflight(ex, max_len=self.cutoff_len)
        return ex

    def summary(self) -> dict[str, Any]:
        lengths = [len(e) for e in self.examples]
        return {
            "kept": len(self.examples),
            "dropped": dict(self.drop_counts),
            "tokens": sum(lengths),
            "max_len": max(lengths, default=0),
            "supervised_tokens": sum(e.num_supervised for e in self.examples),
        }


def collate(batch: Sequence[TokenizedExample], pad_id: int) -> dict[str, Any]:
    """Right-pad a list of examples into model inputs: input_ids (pad_id), labels (-100),
    attention_mask (0 on padding), mm_token_type_ids (0), and the concatenated pixel_values /
    image_grid_thw of all images in batch order (absent when the batch has no image)."""
    import torch

    if not batch:
        raise ValueError("collate needs at least one example")
    L = max(len(e) for e in batch)
    B = len(batch)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    mm = torch.zeros((B, L), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e)
        input_ids[i, :n] = e.input_ids
        labels[i, :n] = e.labels
        attn[i, :n] = 1
        mm[i, :n] = e.mm_token_type_ids
    out: dict[str, Any] = {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attn,
        "mm_token_type_ids": mm,
    }
    with_images = [e for e in batch if e.image_grid_thw is not None]
    if with_images:
        if any(e.pixel_values is None for e in with_images):
            raise ValueError(
                "collate: an example with images has no pixel_values (load them first)"
            )
        out["pixel_values"] = torch.cat([e.pixel_values for e in with_images], dim=0)
        out["image_grid_thw"] = torch.cat([e.image_grid_thw for e in with_images], dim=0)
    return out

"""Lazy, safe image loading for upstream-format records.

A `Sample.image` must be a picklable zero-argument callable (datasets travel to vector-env workers),
so records keep an `ImageRef` — a small frozen dataclass holding the path or base64 text — and decode
only when the env asks. Decoding is where untrusted data meets PIL, so this module is strict:

* a relative path is joined to DATA_ROOT and must stay inside it after `..` and symlinks resolve
  (a record cannot make the env read `/etc/...`); absolute paths are taken as written (docs/data.md#record-schemas);
* a missing file is a `DataNotFoundError` naming the path and the sample; a path that is not a
  regular file (a FIFO, a device, a directory) is a `DataFormatError`, raised at once (a FIFO would
  otherwise block `open` forever);
* an image over `PIL.Image.MAX_IMAGE_PIXELS` is refused (decompression bombs), whether Pillow warns,
  raises, or the warning filter turned the warning into an error;
* the pixels are loaded fully and the file handle closed before returning, so no image keeps a file
  descriptor open across a long RL run.

`reroot_image_path` implements the re-rooting rule (docs/data.md#sft-record-formats) for the absolute paths of the authors' machine that the
upstream SFT files contain.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from vigorl_env.errors import DataFormatError, DataNotFoundError

__all__ = [
    "REROOT_COMPONENTS",
    "ImageRef",
    "decode_image_bytes",
    "open_image_file",
    "open_regular_file",
    "reroot_image_path",
    "resolve_inside_root",
]

#: First path components that mark where an upstream absolute path enters the DATA_ROOT layout (docs/data.md#sft-record-formats).
REROOT_COMPONENTS: frozenset[str] = frozenset(
    {"spatial_reasoning", "visual_search", "web_grounding", "web_action", "vstar"}
)

_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def _bomb_error(what: str, pixels: int | None) -> DataFormatError:
    n = f"{pixels:,}" if pixels is not None else "more than the allowed number of"
    return DataFormatError(
        f"{what}: image has {n} pixels, over the limit PIL.Image.MAX_IMAGE_PIXELS = "
        f"{Image.MAX_IMAGE_PIXELS:,} (decompression-bomb guard); raise PIL.Image.MAX_IMAGE_PIXELS "
        "if you trust it"
    )


def _decode(fp: io.IOBase, what: str) -> Image.Image:
    """Open, size-check and fully load one image from a binary file object."""
    try:
        img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        m = _PIXELS_RE.search(str(e))
        raise _bomb_error(what, int(m.group(1)) if m else None) from e
    except UnidentifiedImageError as e:
        raise DataFormatError(f"{what}: not a readable image ({e})") from e
    # Pillow only warns between 1x and 2x the limit; refuse there too, without touching the
    # process-wide warning filters (they are not thread-safe).
    limit = Image.MAX_IMAGE_PIXELS
    pixels = img.width * img.height
    if limit is not None and pixels > limit:
        img.close()
        raise _bomb_error(what, pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        img.close()
        raise DataFormatError(f"{what}: image data is corrupt or truncated ({e})") from e
    return img


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular_file(path: str | os.PathLike[str], what: str) -> BinaryIO:
    """Open `path` for binary reading only if it is a regular file (after symlinks).

    A FIFO would block `open` forever (no writer ever comes) and a device such as `/dev/zero`
    never ends, so a record pointing at one would hang `reset` or `make`. The file is opened
    non-blocking (a FIFO opens at once) and judged by `fstat` of the open descriptor, so a file
    swapped between a check and the open cannot slip through. Errors: `DataNotFoundError` if it
    does not exist, `DataFormatError` if it is not a regular file; both start with `what`.
    """
    p = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if not hasattr(os, "O_NONBLOCK"):  # no non-blocking open (Windows): check before opening
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError as e:
            raise DataNotFoundError(f"{what}: file not found: {p!r}") from e
        if not stat.S_ISREG(mode):
            raise DataFormatError(f"{what}: {p!r} is {_file_kind(mode)}, not a regular file")
    try:
        fd = os.open(p, flags)
    except FileNotFoundError as e:
        raise DataNotFoundError(f"{what}: file not found: {p!r}") from e
    except IsADirectoryError as e:
        raise DataFormatError(f"{what}: {p!r} is a directory, not a regular file") from e
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise DataFormatError(f"{what}: {p!r} is {_file_kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_image_file(path: str | os.PathLike[str], what: str | None = None) -> Image.Image:
    """Load the image at `path` fully (file closed on return); errors name `what` (default: the path).

    Only a regular file is read (`open_regular_file`): a FIFO or device path fails at once instead
    of hanging.
    """
    p = Path(path)
    what = what or f"image {str(p)!r}"
    with open_regular_file(p, what) as fp:
        return _decode(fp, what)


def decode_image_bytes(data: bytes, what: str) -> Image.Image:
    """Load an image from raw encoded bytes (PNG/JPEG/...)."""
    return _decode(io.BytesIO(data), what)


def _b64decode(text: str, what: str) -> bytes:
    s = text.strip()
    if s.startswith("data:") and "," in s:  # data URL: data:image/png;base64,....
        s = s.split(",", 1)[1]
    try:
        return base64.b64decode(s, validate=False)
    except (binascii.Error, ValueError) as e:
        raise DataFormatError(f"{what}: field 'bytes' is not valid base64 ({e})") from e


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def resolve_inside_root(
    path: str | os.PathLike[str], data_root: str | os.PathLike[str], what: str
) -> Path:
    """`data_root / path` with symlinks resolved, for a path relative to DATA_ROOT: refused
    (`DataFormatError` starting with `what`) unless it stays inside DATA_ROOT after `..` and
    symlinks resolve. The one confinement rule of every loader (env records and SFT files)."""
    root = Path(data_root).expanduser().resolve()
    p = Path(path).expanduser()
    # Lexical check first (`..` escapes), then the symlink-resolved one.
    lexical = Path(os.path.normpath(root / p))
    resolved = (root / p).resolve()
    if not _inside(lexical, root) or not _inside(resolved, root):
        raise DataFormatError(
            f"{what} path {str(path)!r} resolves to {str(resolved)!r}, outside "
            f"DATA_ROOT {str(root)!r}; refused (image paths must stay inside DATA_ROOT)"
        )
    return resolved


@dataclass(frozen=True)
class ImageRef:
    """Picklable lazy loader of one record's image; `Sample.image` is an instance.

    Exactly one of `path` / `b64` is set. `source` (file relative to DATA_ROOT) and `line` (1-based)
    locate the record for error messages; `data_root` is the absolute DATA_ROOT that relative paths
    are joined to.
    """

    sample_id: str
    source: str
    line: int
    data_root: str | None
    path: str | None = None
    b64: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}, line {self.line}, sample {self.sample_id!r}"

    def resolve(self) -> Path:
        """Absolute file path of the image (checks containment; does not check existence)."""
        if self.path is None:
            raise ValueError(f"{self.where}: image is inline base64, it has no path")
        p = Path(self.path).expanduser()
        if p.is_absolute():
            return p
        if self.data_root is None:
            raise DataNotFoundError(
                f"{self.where}: image path {self.path!r} is relative to DATA_ROOT, but DATA_ROOT is not set"
            )
        return resolve_inside_root(self.path, self.data_root, f"{self.where}: field 'image'")

    def __call__(self) -> Image.Image:
        if self.b64 is not None:
            what = f"{self.where}: inline image"
            return decode_image_bytes(_b64decode(self.b64, what), what)
        path = self.resolve()
        what = f"{self.where}: image {self.path!r}"
        try:
            return open_image_file(path, what)
        except DataNotFoundError as e:
            root = f"DATA_ROOT {self.data_root!r}" if self.data_root else "DATA_ROOT unset"
            raise DataNotFoundError(
                f"image not found: {str(path)!r} (record path {self.path!r}, sample_id {self.sample_id!r}, "
                f"{self.source} line {self.line}, {root}); the benchmark's tar may be only partly "
                "extracted — rerun `python -m vigorl_env.data.download <domain>`"
            ) from e


def reroot_image_path(
    path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None
) -> Path:
    """Map an image path of an upstream file onto this machine's DATA_ROOT (docs/data.md#sft-record-formats).

    Relative paths join DATA_ROOT and must stay inside it (`resolve_inside_root`, the env's rule).
    An absolute path that exists is kept. A non-existing absolute path (the authors' machine) is
    re-rooted: DATA_ROOT joined with its suffix starting at the first component in
    `REROOT_COMPONENTS`, under the same confinement. If that does not exist either,
    `DataNotFoundError` names both.
    """
    p = Path(path)
    root = Path(data_root).expanduser() if data_root is not None else None
    if not p.is_absolute():
        if root is None:
            raise DataNotFoundError(
                f"image path {str(p)!r} is relative to DATA_ROOT, but DATA_ROOT is not set"
            )
        return resolve_inside_root(p, root, "image")
    if p.exists():
        return p
    parts = p.parts
    idx = next((i for i, c in enumerate(parts) if c in REROOT_COMPONENTS), None)
    if idx is None:
        raise DataNotFoundError(
            f"image {str(p)!r} does not exist and has no component in {sorted(REROOT_COMPONENTS)} to "
            "re-root it under DATA_ROOT"
        )
    if root is None:
        raise DataNotFoundError(
            f"image {str(p)!r} does not exist; re-rooting it needs DATA_ROOT, which is not set"
        )
    candidate = resolve_inside_root(Path(*parts[idx:]), root, f"image {str(p)!r} re-rooted:")
    if not candidate.exists():
        raise DataNotFoundError(
            f"image {str(p)!r} does not exist, and neither does its re-rooted path {str(candidate)!r}"
        )
    return candidate

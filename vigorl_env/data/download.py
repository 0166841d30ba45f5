"""Fetch and extract the upstream tars into DATA_ROOT (docs/data.md#data_root-layout).

    python -m vigorl_env.data.download spatial_reasoning web_grounding [--data-root PATH]
        [--keep-tar] [--revision REV] [--force]

Only the named tars are fetched, one file each through `huggingface_hub.hf_hub_download` — never a
snapshot of the whole 125 GB repository. The two 44 GB `MCTS_VSTAR_*_images_*.tar` (images of the
visual-search SFT chains) are fetched only when named explicitly; `all` means the four domain tars.

Extraction is the security-relevant half and lives apart from the network half (`install_tar`), so it
is tested on local tars: every member is vetted *before* anything is written (only regular files and
directories pass: symbolic and hard links are refused outright, whatever the Python version, since
the published tars hold none; absolute names and `..` escapes are refused; then
`tarfile.data_filter`; a refused tar is left untouched), then members are extracted with
`filter="data"`. A marker file under
`DATA_ROOT/.vigorl/` records a finished extraction, so rerunning is a no-op.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DOMAIN_TARS",
    "EXTRA_TARS",
    "REPO_ID",
    "ExtractResult",
    "UnsafeArchiveError",
    "download_tar",
    "extract_tar",
    "install_tar",
    "main",
    "marker_path",
]

logger = logging.getLogger(__name__)

REPO_ID = "gsarch/vigorl_datasets"
#: The four domain tars (the `<domain>` names of the CLI and of `UpstreamSpec.domain`).
DOMAIN_TARS: dict[str, str] = {
    d: f"{d}.tar" for d in ("spatial_reasoning", "visual_search", "web_grounding", "web_action")
}
_VSTAR_STEM = "MCTS_VSTAR_20250514_134727_images"
#: Opt-in only (44 GB each): images of the visual-search MCTS chains. Upstream moves their contents
#: into `visual_search/MCTS_VSTAR_20250514_134727_images/`; so do we.
EXTRA_TARS: dict[str, str] = {f"{_VSTAR_STEM}_{i}": f"{_VSTAR_STEM}_{i}.tar" for i in (1, 2)}
_EXTRA_TARGET = Path("visual_search") / _VSTAR_STEM
MARKER_DIR = ".vigorl"


class UnsafeArchiveError(ValueError):
    """A tar member is a link, a special file or would land outside DATA_ROOT; nothing was extracted."""


@dataclass(frozen=True)
class ExtractResult:
    tar: str
    members: int
    bytes: int
    skipped: bool  # already extracted (marker present)


def marker_path(data_root: Path, tar_name: str) -> Path:
    return data_root / MARKER_DIR / f"{tar_name}.extracted.json"


def _vet_members(tar: tarfile.TarFile, dest: Path) -> list[tarfile.TarInfo]:
    """Vet every member before anything is written, so a bad tar writes nothing.

    Only regular files and directories pass. Symbolic and hard links are refused outright, on
    every Python version: chains of in-tree links have escaped `tarfile`'s `data` filter before
    (a link resolving to a directory, then `escape -> chain/..`, then `escape/file`), and the
    published archives hold no links, so refusing them costs nothing. The `data` filter then
    checks names and modes of what is left.
    """
    vetted: list[tarfile.TarInfo] = []
    for m in tar.getmembers():
        if m.issym() or m.islnk():
            kind = "symbolic link" if m.issym() else "hard link"
            raise UnsafeArchiveError(
                f"{tar.name}: member {m.name!r} is a {kind} (to {m.linkname!r}); links are refused "
                "(the published vigorl_datasets tars contain none); nothing was extracted"
            )
        if not (m.isreg() or m.isdir()):
            raise UnsafeArchiveError(
                f"{tar.name}: member {m.name!r} is not a regular file or directory (tar type "
                f"{m.type!r}); nothing was extracted"
            )
        if m.name.startswith(("/", os.sep)) or os.path.isabs(m.name):
            # the `data` filter would strip the slash and extract inside; an upstream tar never has
            # absolute names, so treat one as a sign of a wrong or hostile archive
            raise UnsafeArchiveError(
                f"{tar.name}: member {m.name!r} has an absolute path; nothing was extracted"
            )
        try:
            ok = tarfile.data_filter(m, str(dest))
        except tarfile.FilterError as e:
            raise UnsafeArchiveError(
                f"{tar.name}: member {m.name!r} refused ({e}); nothing was extracted"
            ) from e
        if ok is not None:
            vetted.append(m)
    return vetted


def extract_tar(
    tar_path: str | os.PathLike[str], data_root: str | os.PathLike[str], *, progress: bool = True
) -> ExtractResult:
    """Extract `tar_path` into `data_root` safely (vet all members, then `filter="data"`)."""
    from tqdm.auto import tqdm

    dest = Path(data_root).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    tar_path = Path(tar_path)
    with tarfile.open(tar_path, "r:*") as tar:
        members = _vet_members(tar, dest)
        total = sum(m.size for m in members if m.isfile())
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=f"extract {tar_path.name}",
            disable=not progress,
        ) as bar:
            for m in members:
                try:
                    tar.extract(m, dest, filter="data")
                except tarfile.FilterError as e:  # should have been caught by the vetting pass
                    raise UnsafeArchiveError(
                        f"{tar_path.name}: member {m.name!r} refused ({e})"
                    ) from e
                if m.isfile():
                    bar.update(m.size)
    return ExtractResult(tar_path.name, len(members), total, skipped=False)


def _merge_move(src: Path, dst: Path) -> None:
    """Move the contents of `src` into `dst` (merging directories), then remove `src`."""
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        target = dst / item.name
        if item.is_dir() and not item.is_symlink() and target.is_dir():
            _merge_move(item, target)
        else:
            if target.exists() or target.is_symlink():
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            shutil.move(str(item), str(target))
    src.rmdir()


def install_tar(
    tar_path: str | os.PathLike[str],
    data_root: str | os.PathLike[str],
    *,
    keep_tar: bool = True,
    force: bool = False,
    progress: bool = True,
    revision: str | None = None,
) -> ExtractResult:
    """Extract one upstream tar into DATA_ROOT once (marker file), with upstream's layout fix-ups."""
    root = Path(data_root).resolve()
    tar_path = Path(tar_path)
    marker = marker_path(root, tar_path.name)
    if marker.exists() and not force:
        logger.info(
            "%s already extracted into %s (marker %s); skipping", tar_path.name, root, marker
        )
        return ExtractResult(tar_path.name, 0, 0, skipped=True)
    result = extract_tar(tar_path, root, progress=progress)
    stem = tar_path.name.removesuffix(".tar")
    if stem in EXTRA_TARS and (root / stem).is_dir():
        _merge_move(root / stem, root / _EXTRA_TARGET)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        json.dumps(
            {
                "tar": tar_path.name,
                "members": result.members,
                "bytes": result.bytes,
                "revision": revision,
                "extracted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=1,
        )
    )
    if not keep_tar:
        tar_path.unlink(missing_ok=True)
    logger.info(
        "extracted %s: %d members, %.1f MB", tar_path.name, result.members, result.bytes / 1e6
    )
    return result


Downloader = Callable[..., str]


def download_tar(
    filename: str,
    data_root: Path,
    *,
    revision: str | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """Fetch one file of `gsarch/vigorl_datasets` into DATA_ROOT (no HF cache copy of 12 GB tars)."""
    if downloader is None:
        from huggingface_hub import hf_hub_download as downloader  # lazy: network stack only here
    local = downloader(
        repo_id=REPO_ID,
        filename=filename,
        repo_type="dataset",
        revision=revision,
        local_dir=str(data_root),
    )
    return Path(local)


def fetch(
    names: Sequence[str],
    data_root: str | os.PathLike[str],
    *,
    keep_tar: bool = False,
    revision: str | None = None,
    force: bool = False,
    progress: bool = True,
    downloader: Downloader | None = None,
) -> list[ExtractResult]:
    """Download (if needed) and install each named tar; already-extracted tars are skipped offline."""
    root = Path(data_root).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        filename = DOMAIN_TARS.get(name) or EXTRA_TARS.get(name)
        if filename is None:
            raise ValueError(f"unknown name {name!r}; expected one of {_choices()}")
        if marker_path(root, filename).exists() and not force:
            logger.info(
                "%s already extracted into %s; skipping (use --force to redo)", filename, root
            )
            results.append(ExtractResult(filename, 0, 0, skipped=True))
            continue
        tar_path = root / filename
        if not tar_path.is_file():  # hf_hub_download only renames complete downloads into place
            logger.info(
                "downloading %s from %s (revision %s)", filename, REPO_ID, revision or "main"
            )
            tar_path = download_tar(filename, root, revision=revision, downloader=downloader)
        results.append(
            install_tar(
                tar_path, root, keep_tar=keep_tar, force=force, progress=progress, revision=revision
            )
        )
    return results


def _choices() -> list[str]:
    return [*DOMAIN_TARS, "all", *EXTRA_TARS]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vigorl_env.data.download",
        description=(
            f"Download tars of the Hugging Face dataset {REPO_ID} and extract them into DATA_ROOT. "
            f"'all' = the four domain tars; the two {_VSTAR_STEM}_N tars (44 GB each, images of the "
            "visual-search SFT chains) are fetched only if named."
        ),
    )
    p.add_argument(
        "names",
        nargs="+",
        metavar="DOMAIN",
        choices=_choices(),
        help=f"one or more of: {', '.join(_choices())}",
    )
    p.add_argument("--data-root", default=None, help="target directory (default: $DATA_ROOT)")
    p.add_argument(
        "--keep-tar", action="store_true", help="keep the downloaded tar after extraction"
    )
    p.add_argument("--revision", default=None, help="dataset revision (branch, tag or commit)")
    p.add_argument("--force", action="store_true", help="extract again even if already extracted")
    return p


def cli_data_root(value: str | None) -> str | None:
    """DATA_ROOT for a command line: `--data-root`, else `$DATA_ROOT`; None (after saying so) if unset."""
    data_root = value or os.environ.get("DATA_ROOT")
    if not data_root:
        print(
            "error: DATA_ROOT is not set; pass --data-root PATH or export DATA_ROOT=PATH",
            file=sys.stderr,
        )
        return None
    return data_root


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data_root = cli_data_root(args.data_root)
    if data_root is None:
        return 2
    names: list[str] = []
    for n in args.names:
        for m in DOMAIN_TARS if n == "all" else [n]:
            if m not in names:
                names.append(m)
    try:
        results = fetch(
            names, data_root, keep_tar=args.keep_tar, revision=args.revision, force=args.force
        )
    except UnsafeArchiveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for r in results:
        logger.info(
            "%s: %s", r.tar, "already present" if r.skipped else f"{r.members} members extracted"
        )
    logger.info("DATA_ROOT ready: %s", Path(data_root).expanduser().resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())

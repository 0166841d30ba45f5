"""Data acquisition: safe tar extraction, the download CLI and the RoboSpatial prepare command
(docs/data.md#data_root-layout)."""

from __future__ import annotations

import base64
import inspect
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from vigorl_env import DataFormatError, DataNotFoundError
from vigorl_env.data import download, prepare
from vigorl_env.data.download import UnsafeArchiveError, fetch, install_tar, marker_path
from vigorl_env.data.upstream import load_benchmark

try:
    from .upstream_fixtures import EXPECTED_COUNTS
except ImportError:
    from upstream_fixtures import EXPECTED_COUNTS


def make_tar(
    path: Path, members: dict[str, bytes], links: dict[str, tuple[str, bytes]] | None = None
) -> Path:
    """A tar with regular files `members` (name -> data) and links (name -> (target, type))."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, (target, kind) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tar.addfile(info)
    return path


def tar_of_dir(path: Path, src_root: Path, top: str) -> Path:
    """Tar `src_root/top` with member names starting at `top/` (the upstream layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        tar.add(src_root / top, arcname=top)
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ------------------------------------------------------------------------------------------
# extraction
# ------------------------------------------------------------------------------------------


def test_extract_upstream_layout_then_load(tmp_path, fixture_data_root):
    tar = tar_of_dir(
        tmp_path / "dl" / "spatial_reasoning.tar", fixture_data_root, "spatial_reasoning"
    )
    root = tmp_path / "data"
    res = install_tar(tar, root, keep_tar=True, progress=False)
    assert not res.skipped and res.members > 10
    assert files_under(root / "spatial_reasoning") == files_under(
        fixture_data_root / "spatial_reasoning"
    )
    assert marker_path(root, "spatial_reasoning.tar").is_file()
    for (name, split), n in EXPECTED_COUNTS.items():
        if name in ("SAT2", "BLINK", "RoboSpatial"):
            ds = load_benchmark(name, split, data_root=root)
            assert len(ds) == n and ds[0].image().size[0] > 0
    with pytest.raises(
        DataNotFoundError, match=r"visual_search\.tar"
    ):  # other domains still missing
        load_benchmark("VStar", data_root=root)


def test_install_is_idempotent_and_removes_tar(tmp_path):
    tar = make_tar(
        tmp_path / "web_action.tar", {"web_action/a.jsonl": b"{}\n", "web_action/img/p.png": b"x"}
    )
    root = tmp_path / "data"
    first = install_tar(tar, root, keep_tar=False, progress=False)
    assert (first.members, first.bytes, first.skipped) == (2, 4, False)
    assert not tar.exists()
    (root / "web_action/a.jsonl").write_text("edited")
    make_tar(tar, {"web_action/a.jsonl": b"{}\n"})
    second = install_tar(tar, root, keep_tar=True, progress=False)
    assert second.skipped and (root / "web_action/a.jsonl").read_text() == "edited"
    third = install_tar(tar, root, keep_tar=True, force=True, progress=False)
    assert not third.skipped and (root / "web_action/a.jsonl").read_text() == "{}\n"
    meta = json.loads(marker_path(root, "web_action.tar").read_text())
    assert meta["tar"] == "web_action.tar" and meta["members"] == 1


@pytest.mark.parametrize(
    ("members", "links", "bad"),
    [
        ({"web_action/ok.txt": b"ok", "../evil.txt": b"x"}, None, "../evil.txt"),
        (
            {"web_action/ok.txt": b"ok", "web_action/../../evil.txt": b"x"},
            None,
            "web_action/../../evil.txt",
        ),
        (
            {"web_action/ok.txt": b"ok", "/tmp/vigorl_evil_abs.txt": b"x"},
            None,
            "/tmp/vigorl_evil_abs.txt",
        ),
        (
            {"web_action/ok.txt": b"ok"},
            {"web_action/etc": ("/etc", tarfile.SYMTYPE)},
            "web_action/etc",
        ),
        (
            {"web_action/ok.txt": b"ok"},
            {"web_action/up": ("../../..", tarfile.SYMTYPE)},
            "web_action/up",
        ),
        (
            {"web_action/ok.txt": b"ok"},
            {"web_action/hl": ("/etc/passwd", tarfile.LNKTYPE)},
            "web_action/hl",
        ),
    ],
)
def test_traversal_refused_before_writing(tmp_path, members, links, bad):
    tar = make_tar(tmp_path / "web_action.tar", members, links)
    root = tmp_path / "sandbox" / "data"
    with pytest.raises(UnsafeArchiveError) as ei:
        install_tar(tar, root, keep_tar=False, progress=False)
    assert repr(bad) in str(ei.value) and "nothing was extracted" in str(ei.value)
    assert files_under(tmp_path / "sandbox") == set()  # not even the good member, no marker
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/vigorl_evil_abs.txt").exists()
    assert tar.exists()  # a refused tar is kept for inspection


def ordered_tar(path: Path, entries: list[tuple[str, str, str | bytes]]) -> Path:
    """A tar of (name, kind, payload) in order: kind "file" (payload = data), "dir", "sym" or
    "hard" (payload = link target) or "fifo"."""
    kinds = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE}
    kinds["fifo"] = tarfile.FIFOTYPE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = kinds[kind]
            if kind in ("sym", "hard"):
                info.linkname = payload
            if kind == "dir":
                info.mode = 0o755
            tar.addfile(info)
    return path


LINK_TARS = {
    # a chain of in-tree links, a link through it and a file written through that link: the
    # shape that has slipped past tarfile's `data` filter on some Python versions
    "symlink_chain_escape": [
        ("web_action/ok.txt", "file", b"ok"),
        ("web_action/d1/d2/d3", "dir", ""),
        ("web_action/l1", "sym", "d1"),
        ("web_action/chain", "sym", "l1/d2/d3"),
        ("web_action/escape", "sym", "chain/../../../../.."),
        ("web_action/escape/pwned.txt", "file", b"x"),
    ],
    # links that stay inside DATA_ROOT (the `data` filter alone lets these through)
    "inner_symlink": [
        ("web_action/ok.txt", "file", b"ok"),
        ("web_action/alias.txt", "sym", "ok.txt"),
    ],
    "inner_hardlink": [
        ("web_action/ok.txt", "file", b"ok"),
        ("web_action/copy.txt", "hard", "web_action/ok.txt"),
    ],
    "dir_symlink_then_file": [
        ("web_action/real", "dir", ""),
        ("web_action/via", "sym", "real"),
        ("web_action/via/f.txt", "file", b"x"),
    ],
}


@pytest.mark.parametrize("case", sorted(LINK_TARS))
def test_links_refused_outright(tmp_path, case):
    tar = ordered_tar(tmp_path / "web_action.tar", LINK_TARS[case])
    root = tmp_path / "sandbox" / "deep" / "deeper" / "data"
    with pytest.raises(UnsafeArchiveError) as ei:
        install_tar(tar, root, keep_tar=False, progress=False)
    msg = str(ei.value)
    assert "link" in msg and "contain none" in msg and "nothing was extracted" in msg
    assert list(tmp_path.rglob("pwned.txt")) == []
    assert files_under(tmp_path / "sandbox") == set()  # the good members were not written either
    assert tar.exists()


def test_special_files_refused(tmp_path):
    tar = ordered_tar(
        tmp_path / "web_action.tar",
        [("web_action/ok.txt", "file", b"ok"), ("web_action/pipe", "fifo", "")],
    )
    with pytest.raises(UnsafeArchiveError, match=r"'web_action/pipe' is not a regular file"):
        install_tar(tar, tmp_path / "data", keep_tar=True, progress=False)
    assert files_under(tmp_path / "data") == set()


def test_vstar_extra_tar_moved_like_upstream(tmp_path):
    tar = make_tar(
        tmp_path / "MCTS_VSTAR_20250514_134727_images_1.tar",
        {"MCTS_VSTAR_20250514_134727_images_1/sa_1/img_0.jpg": b"jpg"},
    )
    root = tmp_path / "data"
    install_tar(tar, root, progress=False)
    assert files_under(root) == {
        "visual_search/MCTS_VSTAR_20250514_134727_images/sa_1/img_0.jpg",
        ".vigorl/MCTS_VSTAR_20250514_134727_images_1.tar.extracted.json",
    }


# ------------------------------------------------------------------------------------------
# download (network replaced by a fake downloader)
# ------------------------------------------------------------------------------------------


class FakeHub:
    """Stands in for hf_hub_download: writes a tiny tar of the requested name into local_dir."""

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, **kw):
        self.calls.append(kw)
        stem = kw["filename"].removesuffix(".tar")
        return str(make_tar(Path(kw["local_dir"]) / kw["filename"], {f"{stem}/README.txt": b"hi"}))


def test_fetch_calls_hub_once_per_named_tar(tmp_path):
    hub = FakeHub()
    root = tmp_path / "data"
    res = fetch(
        ["web_action", "web_grounding"], root, revision="abc123", downloader=hub, progress=False
    )
    assert [c["filename"] for c in hub.calls] == ["web_action.tar", "web_grounding.tar"]
    for c in hub.calls:
        assert (c["repo_id"], c["repo_type"], c["revision"]) == (
            "gsarch/vigorl_datasets",
            "dataset",
            "abc123",
        )
        assert Path(c["local_dir"]) == root.resolve()
    assert (root / "web_action/README.txt").read_text() == "hi"
    assert not (root / "web_action.tar").exists()  # removed after extraction by default
    assert [r.skipped for r in res] == [False, False]
    again = fetch(["web_action"], root, downloader=hub, progress=False)
    assert again[0].skipped and len(hub.calls) == 2  # marker: no second download
    with pytest.raises(ValueError, match="unknown name"):
        fetch(["everything"], root, downloader=hub)


def test_cli_all_never_fetches_vstar_image_tars(tmp_path, monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr(
        download,
        "download_tar",
        lambda filename, data_root, revision=None, downloader=None: Path(
            hub(
                repo_id=download.REPO_ID,
                filename=filename,
                repo_type="dataset",
                revision=revision,
                local_dir=str(data_root),
            )
        ),
    )
    assert download.main(["all", "--data-root", str(tmp_path), "--keep-tar"]) == 0
    assert sorted(c["filename"] for c in hub.calls) == [
        "spatial_reasoning.tar",
        "visual_search.tar",
        "web_action.tar",
        "web_grounding.tar",
    ]
    assert (tmp_path / "web_action.tar").exists()  # --keep-tar
    assert download.main(["MCTS_VSTAR_20250514_134727_images_2", "--data-root", str(tmp_path)]) == 0
    assert hub.calls[-1]["filename"] == "MCTS_VSTAR_20250514_134727_images_2.tar"
    assert (tmp_path / "visual_search/MCTS_VSTAR_20250514_134727_images/README.txt").is_file()


def test_cli_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATA_ROOT", raising=False)
    assert download.main(["web_action"]) == 2
    assert "DATA_ROOT is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        download.main(["web", "--data-root", str(tmp_path)])
    assert ei.value.code == 2


def test_hf_hub_download_signature_has_our_kwargs():
    from huggingface_hub import hf_hub_download

    params = inspect.signature(hf_hub_download).parameters
    assert {"repo_id", "filename", "repo_type", "revision", "local_dir"} <= set(params)


# ------------------------------------------------------------------------------------------
# prepare robospatial
# ------------------------------------------------------------------------------------------


def _png_bytes(size, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_robospatial_export(src: Path) -> Path:
    """RoboSpatial-Eval's download_benchmark.py layout: annotations.json + images/."""
    (src / "images").mkdir(parents=True)
    rows = []
    for split, answers in (
        ("context", ["[(0.1, 0.2)]"]),
        ("configuration", ["Yes", "no", "No."]),
        ("compatibility", ["yes", "NO"]),
    ):
        for i, a in enumerate(answers):
            img = f"images/img_{split}_{i}.png"
            (src / img).write_bytes(_png_bytes((120 + 10 * i, 90)))
            rows.append(
                {
                    "category": split,
                    "question": f"Is object {i} in {split} ok?",
                    "answer": a,
                    "img": img,
                    "depth_image": f"images/depth_{split}_{i}.png",
                    "mask": None,
                }
            )
    (src / "annotations.json").write_text(json.dumps(rows))
    return src


def test_prepare_robospatial_from_local_export(tmp_path):
    src = write_robospatial_export(tmp_path / "export")
    root = tmp_path / "data"
    assert prepare.main(["robospatial", "--data-root", str(root), "--source", str(src)]) == 0
    ds = load_benchmark("RoboSpatial", data_root=root)
    assert ds.split == "test" and ds.answer_kind == "option_text"
    assert ds.ids() == [
        "robospatial_configuration_0",
        "robospatial_configuration_1",
        "robospatial_configuration_2",
        "robospatial_compatibility_0",
        "robospatial_compatibility_1",
    ]  # context (pointing) dropped
    assert [s.answer for s in ds] == ["yes", "no", "no", "yes", "no"]
    s = ds[1]
    assert s.question == "<image>Is object 1 in configuration ok?\nA. yes\nB. no"
    assert s.options == ("yes", "no")
    assert s.image.path == "spatial_reasoning/robospatial/images/robospatial_configuration_1.png"
    assert s.image().size == (130, 90)
    assert (root / s.image.path).read_bytes() == (
        src / "images/img_configuration_1.png"
    ).read_bytes()
    # idempotent: a second run rewrites the same file
    before = (root / "spatial_reasoning/robospatial/robospatial_test.jsonl").read_bytes()
    prepare.prepare_robospatial(root, str(src))
    assert (root / "spatial_reasoning/robospatial/robospatial_test.jsonl").read_bytes() == before


def test_prepare_robospatial_jsonl_source_with_inline_bytes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    b64 = base64.b64encode(_png_bytes((50, 40))).decode()
    with open(src / "configuration.jsonl", "w") as fh:  # the split comes from the file name
        fh.write(
            json.dumps(
                {
                    "question": "Is the cup left of the plate?",
                    "answer": "Yes",
                    "img": {"bytes": b64, "path": None},
                }
            )
            + "\n"
        )
    out = prepare.prepare_robospatial(tmp_path / "data", str(src))
    rec = json.loads(out.read_text())
    assert rec["id"] == "robospatial_configuration_0" and rec["conversations"][1]["value"] == "yes"
    assert load_benchmark("RoboSpatial", data_root=tmp_path / "data")[0].image().size == (50, 40)


def test_prepare_robospatial_rejects_non_yes_no(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "compatibility.jsonl").write_text(
        json.dumps(
            {
                "question": "q",
                "answer": "maybe",
                "img": {"bytes": base64.b64encode(_png_bytes((8, 8))).decode()},
            }
        )
        + "\n"
    )
    with pytest.raises(DataFormatError, match=r"compatibility.jsonl, line 1.*'answer'.*maybe"):
        prepare.prepare_robospatial(tmp_path / "data", str(src))


def test_prepare_parquet_without_pyarrow_says_so(tmp_path, monkeypatch):
    # The test environment has pyarrow (the parquet paths are tested for real); hide it here.
    for name in [m for m in sys.modules if m == "pyarrow" or m.startswith("pyarrow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    src = tmp_path / "src" / "data"
    src.mkdir(parents=True)
    (src / "configuration-00000-of-00001.parquet").write_bytes(b"PAR1")
    with pytest.raises(RuntimeError, match="pyarrow"):
        prepare.prepare_robospatial(tmp_path / "out", str(tmp_path / "src"))
    with pytest.raises(RuntimeError, match="pyarrow"):  # hub path fails before any download
        prepare.prepare_robospatial(tmp_path / "out", "chanhee-luke/RoboSpatial-Home")

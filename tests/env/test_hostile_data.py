"""Hostile data files: every bad row fails at `make` with an error that names file, line and field
(docs/data.md#what-the-loaders-accept-and-refuse), and nothing hangs.

Each case is a file a test writes itself; before these fixes each one escaped the clear-error path
(a bare `ValueError`, `RecursionError` or `UnicodeDecodeError` at `make`, an error without file and
line at `reset`, or a `reset` that never returned).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import gymnasium as gym
import pytest
from PIL import Image

import vigorl_env  # noqa: F401  (registers the ids)
from vigorl_env import DataFormatError, DataNotFoundError
from vigorl_env.data.images import open_image_file

REL_E = "spatial_reasoning/sat2_test/sat2_test.jsonl"  # SAT2 test, schema E
REL_BOX = "web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl"  # ScreenSpotV2 test, boxes
IMG = "spatial_reasoning/images/a.png"


def _png(root: Path, rel: str = IMG) -> str:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (10, 200, 30)).save(p)
    return rel


def _rec(id_=1, image=IMG, gt="yes") -> dict:
    return {
        "id": id_,
        "image": image,
        "conversations": [
            {"from": "human", "value": "<image>Q?\nA. yes\nB. no"},
            {"from": "gpt", "value": gt},
        ],
    }


def _write(root: Path, rel: str, data: bytes) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _good_line() -> bytes:
    return json.dumps(_rec(1)).encode() + b"\n"


def _make(env_id: str, root: Path):
    """The env of the test file: SAT2's and ScreenSpotV2's split `test`, VisualWebArena's default."""
    split = None if env_id == "ViGoRL/VisualWebArena-v0" else "test"
    return gym.make(env_id, data_root=str(root), split=split)


def _assert_names(msg: str, *needles: str) -> None:
    for n in needles:
        assert n in msg, f"{n!r} not in {msg!r}"


# --------------------------------------------------------------------------- ids and nesting


def test_5000_digit_id_is_refused_by_name(tmp_path):
    _png(tmp_path)
    line = _good_line() + b'{"id": ' + b"7" * 5000 + json.dumps(_rec(0))[8:].encode() + b"\n"
    _write(tmp_path, REL_E, line)
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/SAT2-v0", tmp_path)
    _assert_names(str(ei.value), REL_E, "line 2", "field 'id'", "5000 digits")
    assert len(str(ei.value)) < 400  # the 5,000 digits are not pasted into the message


def test_huge_integer_in_an_ignored_field_is_harmless(tmp_path):
    _png(tmp_path)
    rec = json.dumps(_rec(5))[:-1] + ', "score": ' + "9" * 5000 + "}"
    _write(tmp_path, REL_E, _good_line() + rec.encode() + b"\n")
    env = _make("ViGoRL/SAT2-v0", tmp_path)
    _, info = env.reset(options={"index": 1})
    assert info["sample_id"] == "5"


@pytest.mark.parametrize("opener", ["[", '{"a": '])
def test_100k_nested_brackets_refused_with_field(tmp_path, opener):
    _png(tmp_path)
    deep = opener * 100_000
    rec = json.dumps(_rec(2))[:-1] + ', "meta": ' + deep + "}"
    _write(tmp_path, REL_E, _good_line() + rec.encode() + b"\n")
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/SAT2-v0", tmp_path)
    _assert_names(str(ei.value), REL_E, "line 2", "field 'meta'", "nested too deeply")


def test_nested_array_record_names_the_record(tmp_path):
    _write(tmp_path, REL_E, _good_line() + b"[" * 100_000 + b"\n")
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/SAT2-v0", tmp_path)
    _assert_names(str(ei.value), REL_E, "line 2", "the record", "nested too deeply")


# --------------------------------------------------------------------------- encodings


def test_invalid_utf8_names_line_and_field(tmp_path):
    _png(tmp_path)
    bad = json.dumps(_rec(3, gt="yes")).encode().replace(b'"yes"}', b'"y\xffs"}')
    assert b"\xff" in bad
    _write(tmp_path, REL_E, _good_line() + _good_line() + bad + b"\n")
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/SAT2-v0", tmp_path)
    _assert_names(str(ei.value), REL_E, "line 3", "not UTF-8", "field 'conversations'")


def test_utf16_file_says_so(tmp_path):
    text = json.dumps(_rec(1)) + "\n"
    _write(tmp_path, REL_E, text.encode("utf-16"))  # with its byte-order mark
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/SAT2-v0", tmp_path)
    _assert_names(str(ei.value), REL_E, "line 1", "not UTF-8", "UTF-16")


def test_utf16_without_bom(tmp_path):
    _write(tmp_path, REL_E, (json.dumps(_rec(1)) + "\n").encode("utf-16-le"))
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/SAT2-v0", tmp_path)
    _assert_names(str(ei.value), REL_E, "line 1", "NUL bytes")


def test_utf8_bom_and_crlf_are_accepted(tmp_path):
    _png(tmp_path)
    data = (
        b"\xef\xbb\xbf" + json.dumps(_rec("a")).encode() + b"\r\n" + json.dumps(_rec("b")).encode()
    )
    _write(tmp_path, REL_E, data)  # no final newline either
    env = _make("ViGoRL/SAT2-v0", tmp_path)
    assert [env.unwrapped.sample_id_at(i) for i in range(2)] == ["a", "b"]


# --------------------------------------------------------------------------- boxes


@pytest.mark.parametrize(
    "gt",
    [
        [1, 2, float("nan"), 4],  # json writes NaN
        [1, 2, float("inf"), 4],  # Infinity
        [float("-inf"), 2, 3, 4],
        "(1, 2, " + "9" * 400 + ", 4)",  # a literal too large for a float
        [1, 2, 10**400, 4],  # a JSON integer too large for a float
    ],
    ids=["nan", "inf", "-inf", "huge-string", "huge-int"],
)
def test_non_finite_boxes_refused_at_make(tmp_path, gt):
    _png(tmp_path)
    _write(
        tmp_path,
        REL_BOX,
        _good_line().replace(b'"yes"', b'"(1, 2, 3, 4)"')
        + json.dumps(_rec(9, gt=gt)).encode()
        + b"\n",
    )
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/ScreenSpotV2-v0", tmp_path)
    msg = str(ei.value)
    _assert_names(msg, REL_BOX, "line 2", "'conversations[1].value'", "non-finite")
    assert len(msg) < 400


# --------------------------------------------------------------------------- empty splits


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_split_file_refused_at_make(tmp_path, content):
    _write(tmp_path, REL_E, content)
    with pytest.raises(DataFormatError) as ei:
        _make("ViGoRL/SAT2-v0", tmp_path)
    _assert_names(str(ei.value), "ViGoRL/SAT2-v0", "'test'", REL_E, "no records")


def test_split_rule_leaving_nothing_refused_at_make(tmp_path):
    from vigorl_env.data.splits import hash_split

    ids = [f"only_train_{k}" for k in range(40)]
    ids = [i for i in ids if not hash_split(i, 0.05)][:3]  # all of them train
    rel = "web_action/vigorl_web_action_MCTS.jsonl"
    _write(tmp_path, rel, b"".join(json.dumps(_rec(i, gt="go_back")).encode() + b"\n" for i in ids))
    assert len(_make("ViGoRL/VisualWebArena-v0", tmp_path).unwrapped.split) > 0
    with pytest.raises(DataFormatError) as ei:
        gym.make("ViGoRL/VisualWebArena-v0", data_root=str(tmp_path), split="val")
    _assert_names(str(ei.value), rel, "none of its 3 records", "'val'")


def test_empty_passed_in_dataset_refused(tmp_path):
    from vigorl_env.data.synth.search import SynthSearch

    class Empty(SynthSearch):
        def __len__(self) -> int:
            return 0

    with pytest.raises(ValueError, match="no samples"):
        gym.make("ViGoRL/SynthSearch-v0", dataset=Empty(split="train", size=1))


# --------------------------------------------------------------------------- special files


def _in_thread(fn, timeout: float):
    """Run `fn` in a daemon thread; (finished, result or exception)."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed back to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return t, box


def _unblock(fifo: Path) -> None:
    """Give a reader blocked on `fifo` its end of file (so a failing test leaves no stuck thread)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_image_fails_at_reset_instead_of_hanging(tmp_path):
    fifo = tmp_path / IMG
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    _write(tmp_path, REL_E, _good_line())
    env = _make("ViGoRL/SAT2-v0", tmp_path)
    t, box = _in_thread(lambda: env.reset(options={"index": 0}), timeout=20)
    if t.is_alive():
        _unblock(fifo)
        t.join(5)
        pytest.fail("reset() blocked on a FIFO image")
    err = box.get("error")
    assert isinstance(err, DataFormatError), box
    _assert_names(str(err), str(fifo), "FIFO", "not a regular file", "sample '1'")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_split_file_fails_at_make_instead_of_hanging(tmp_path):
    fifo = tmp_path / REL_E
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    t, box = _in_thread(lambda: _make("ViGoRL/SAT2-v0", tmp_path), timeout=20)
    if t.is_alive():
        _unblock(fifo)
        t.join(5)
        pytest.fail("make() blocked on a FIFO data file")
    err = box.get("error")
    assert isinstance(err, DataFormatError), box
    _assert_names(str(err), REL_E, "FIFO", "not a regular file")


def test_device_and_directory_images_refused(tmp_path):
    for path, kind in (("/dev/zero", "a device"), (str(tmp_path), "a directory")):
        if not os.path.exists(path):
            continue
        t, box = _in_thread(lambda p=path: open_image_file(p, "img"), timeout=20)
        assert not t.is_alive(), path
        assert isinstance(box.get("error"), DataFormatError) and kind in str(box["error"])
    with pytest.raises(DataNotFoundError):
        open_image_file(tmp_path / "missing.png")

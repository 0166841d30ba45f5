"""The append-only JSONL rule: a torn tail is cut before the next append, never glued to it."""

import json

import pytest

from vigorl_agents.jsonl import JsonlAppender, cut_torn_tail, read_jsonl


def test_torn_tail_is_cut_before_append(tmp_path):
    path = tmp_path / "samples.jsonl"
    with JsonlAppender(path) as out:
        out.write({"id": 1})
        out.write({"id": 2})
    # A killed writer leaves half a record without its newline.
    with path.open("a", encoding="utf-8") as f:
        f.write('{"id": 3, "transcr')
    assert [r["id"] for _, r in read_jsonl(path)] == [1, 2]
    with JsonlAppender(path) as out:
        out.write({"id": 3})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["id"] for x in lines] == [1, 2, 3]


def test_cut_torn_tail_counts_bytes_and_keeps_complete_files(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n')
    assert cut_torn_tail(path) == 0
    path.write_bytes(b'{"a": 1}\n{"b"')
    assert cut_torn_tail(path) == 4
    assert path.read_bytes() == b'{"a": 1}\n'
    path.write_bytes(b"no newline at all")
    assert cut_torn_tail(path) == 17
    assert path.read_bytes() == b""
    assert cut_torn_tail(tmp_path / "missing.jsonl") == 0


def test_bad_complete_line_names_file_and_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n[[[[\n{"b": 2}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl, line 2"):
        list(read_jsonl(path))
    path.write_bytes(b'{"a": 1}\n' + b"1" * 5000 + b"\n")
    with pytest.raises(ValueError, match="line 2"):
        list(read_jsonl(path))

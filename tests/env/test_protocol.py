"""The text grammar (docs/protocol.md, docs/rewards.md#primitives): exact strings, parsing, hostile input.

Differential tests compare the linear parsers against the documented regexes (quadratic on hostile
input, fine on short text) over text built from a grammar of protocol fragments.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigorl_env.protocol import (
    BACKTRACK,
    FORCED_PREFIX,
    OBSERVATION_TEXT_DOT,
    OBSERVATION_TEXT_NO_DOT,
    STOP_STRINGS,
    TOOL_NAME,
    ToolCall,
    Turn,
    all_think_points,
    answer_point,
    canonicalize_action,
    contains_answer_close,
    ends_with_answer_close,
    extract_answer,
    find_all_tool_calls,
    find_tool_call,
    format_tool_call,
    matches_single_turn_format,
    multi_turn_tag_walk_ok,
    observation_text,
    parse_turn,
    think_points,
)

KELVIN = "\u212a"  # 'K'.lower() == 'k' in Unicode: must never make a think tag
LONG_S = "\u017f"  # 'ſ' case-folds to 's': must never make an answer tag
DOTTED_I = "\u0130"  # 'İ' matches 'i' under Unicode IGNORECASE
DOTLESS_I = "\u0131"

# --------------------------------------------------------------------------- constants


def test_exact_interface_strings():
    assert FORCED_PREFIX == (
        "<think> Based on all the information I've gathered, I'll now provide my final answer. "
        "</think>\n<answer>"
    )
    assert BACKTRACK == "Wait, this seems off. Let's try something else."
    assert TOOL_NAME == "search_coordinate"
    assert STOP_STRINGS == ("</tool_call>", "</answer>", "<|im_end|>")


def test_observation_text_exact():
    no_dot = "<observation>\nHere is the crop of the image centered on the coordinate:\n<image></observation>"
    dot = (
        "<observation>\nHere is the crop of the image centered on the coordinate, with a red dot at"
        " the coordinate location:\n<image></observation>"
    )
    assert no_dot == OBSERVATION_TEXT_NO_DOT
    assert dot == OBSERVATION_TEXT_DOT
    assert observation_text(False) == no_dot
    assert observation_text(True) == dot
    assert no_dot.count("<image>") == 1 and not no_dot.endswith("\n</observation>")


def test_format_tool_call_exact_and_round_trip():
    s = format_tool_call(300, 200)
    assert s == (
        '<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [300, 200]}}\n'
        "</tool_call>"
    )
    assert find_tool_call(s) == ToolCall(valid=True, coordinate=(300, 200), error=None)
    assert find_tool_call(format_tool_call(-5, 999999)).coordinate == (-5, 999999)
    assert find_tool_call(format_tool_call(np.int64(7), np.int32(8))).coordinate == (7, 8)


@pytest.mark.parametrize("bad", [True, 1.0, 1.5, "3", None])
def test_format_tool_call_rejects_non_integers(bad):
    with pytest.raises(TypeError):
        format_tool_call(bad, 1)


def test_format_tool_call_rejects_unparseable_width():
    with pytest.raises(ValueError):
        format_tool_call(1234567, 1)


# --------------------------------------------------------------------------- canonicalize


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("abc  \n", "abc"),
        ("x<|im_end|>", "x"),
        ("x<|im_end|>\n ", "x"),
        ("x<|im_end|><|im_end|>", "x<|im_end|>"),  # one token only
        ("x\n<|endoftext|>", "x\n"),  # nothing stripped after removing the token
        ("x<|endoftext|><|im_end|>", "x<|endoftext|>"),
        ("<|IM_END|>", "<|IM_END|>"),  # special tokens are exact
        ("  lead", "  lead"),
        ("", ""),
        (b"<answer>caf\xc3\xa9</answer><|im_end|>", "<answer>café</answer>"),
        (b"\xff<answer>", "\ufffd<answer>"),
    ],
)
def test_canonicalize_action(action, expected):
    assert canonicalize_action(action) == expected


@pytest.mark.parametrize("bad", [5, None, 1.5, bytearray(b"x"), ["x"]])
def test_canonicalize_action_type_error(bad):
    with pytest.raises(TypeError):
        canonicalize_action(bad)


# --------------------------------------------------------------------------- tool calls


def _tc(body: str) -> str:
    return f"<tool_call>{body}</tool_call>"


@pytest.mark.parametrize(
    ("body", "coord"),
    [
        ('{"name": "search_coordinate", "arguments": {"coordinate": [100, 200]}}', (100, 200)),
        ('\n  {"arguments": {"coordinate": [0, -3]}, "name": "crop", "x": 1}  \n', (0, -3)),
        ('{"name": "crop", "arguments": {"coordinate": [123456, -123456]}}', (123456, -123456)),
        # duplicate keys: the last one wins (json's default)
        (
            '{"name": "crop", "arguments": {"coordinate": [1.5, 2]}, "arguments": {"coordinate": [3, 4]}}',
            (3, 4),
        ),
        ('{"name": "crop", "arguments": {"coordinate": [1, 2], "coordinate": [5, 6]}}', (5, 6)),
        # a huge literal elsewhere is ignored (and does not trip int()'s digit limit)
        (
            '{"name": "crop", "big": ' + "9" * 5000 + ', "arguments": {"coordinate": [1, 2]}}',
            (1, 2),
        ),
        ('{"name": "crop", "f": 1e999, "arguments": {"coordinate": [1, 2]}}', (1, 2)),
        # stripped with Unicode whitespace (NBSP) before JSON decoding
        ('\u00a0{"name": "crop", "arguments": {"coordinate": [1, 2]}}\u2003', (1, 2)),
    ],
)
def test_valid_tool_calls(body, coord):
    tc = find_tool_call("<think>t</think>\n" + _tc(body))
    assert tc == ToolCall(valid=True, coordinate=coord, error=None)


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "crop", "arguments": {"coordinate": [100.5, 100]}}',  # float
        '{"name": "crop", "arguments": {"coordinate": [100.0, 100]}}',  # integral float is still a float
        '{"name": "crop", "arguments": {"coordinate": [1e2, 3]}}',
        '{"name": "crop", "arguments": {"coordinate": [true, 1]}}',  # bool
        '{"name": "crop", "arguments": {"coordinate": [1, false]}}',
        '{"name": "crop", "arguments": {"coordinate": ["1", "2"]}}',  # strings
        '{"name": "crop", "arguments": {"coordinate": [null, 2]}}',
        '{"name": "crop", "arguments": {"coordinate": [[1], 2]}}',
        '{"name": "crop", "arguments": {"coordinate": [1, 2, 3]}}',  # 3 coords
        '{"name": "crop", "arguments": {"coordinate": [1]}}',
        '{"name": "crop", "arguments": {"coordinate": []}}',
        '{"name": "crop", "arguments": {"coordinate": [1234567, 1]}}',  # 7 digits
        '{"name": "crop", "arguments": {"coordinate": [1, -1234567]}}',
        '{"name": "crop", "arguments": {"coordinate": [' + "1" * 5000 + ", 1]}}",
        '{"name": "crop", "arguments": {"coordinate": [0001, 2]}}',  # leading zeros are not JSON
        '{"name": "crop", "arguments": {"coordinate": {"x": 1, "y": 2}}}',
        '{"name": "crop", "arguments": {"coordinate": "1, 2"}}',
        '{"name": "crop", "arguments": {"coordinate": null}}',
        '{"name": "crop", "arguments": {}}',
        '{"name": "crop", "arguments": [1, 2]}',
        '{"name": "crop", "coordinate": [1, 2]}',
        '{"name": "crop", "arguments": {"coordinate": [1.5, 2]}, "arguments": {"coordinate": [3, 4]}, "arguments": 1}',
        "[1, 2]",  # non-object JSON
        '"{\\"arguments\\": {\\"coordinate\\": [1, 2]}}"',
        "42",
        "null",
        "",
        "   ",
        '{"name": "crop", "arguments": {"coordinate": [1, 2]}',  # bad JSON
        '{"name": "crop", "arguments": {"coordinate": [1, 2]}} {}',  # extra data
        "{'arguments': {'coordinate': [1, 2]}}",  # Python, not JSON
        "[" * 5000,  # nested too deeply for the decoder
        "{" * 5000,
        "(100, 200)",
        # a body needs a string "name" (its value is free)
        '{"arguments": {"coordinate": [1, 2]}}',
        '{"name": null, "arguments": {"coordinate": [1, 2]}}',
        '{"name": 7, "arguments": {"coordinate": [1, 2]}}',
        '{"name": ["crop"], "arguments": {"coordinate": [1, 2]}}',
        '{"name": "crop", "arguments": {"coordinate": [1, 2]}, "name": false}',  # last key wins
    ],
)
def test_invalid_tool_calls(body):
    tc = find_tool_call(_tc(body))
    assert tc is not None
    assert tc.valid is False and tc.coordinate is None
    assert isinstance(tc.error, str) and tc.error


def test_tool_call_error_messages_say_why():
    assert (
        "digits"
        in find_tool_call(_tc('{"name": "crop", "arguments": {"coordinate": [1234567, 1]}}')).error
    )
    assert (
        "integer"
        in find_tool_call(_tc('{"name": "crop", "arguments": {"coordinate": [1.5, 1]}}')).error
    )
    assert (
        "2" in find_tool_call(_tc('{"name": "crop", "arguments": {"coordinate": [1, 2, 3]}}')).error
    )
    assert "JSON" in find_tool_call(_tc("nope")).error


@pytest.mark.parametrize(
    "text",
    [
        "no call here",
        '<tool_call>{"name": "crop", "arguments": {"coordinate": [1, 2]}}',  # no close tag
        '</tool_call>{"name": "crop", "arguments": {"coordinate": [1, 2]}}<tool_call>',  # close before open
        "<tool_call >{}</tool_call>",
        "<tool-call>{}</tool-call>",
    ],
)
def test_no_tool_call_span(text):
    assert find_tool_call(text) is None
    assert find_all_tool_calls(text) == []


def test_tool_call_first_span_and_case_insensitive_tags():
    good = '{"name": "crop", "arguments": {"coordinate": [1, 2]}}'
    bad = '{"name": "crop", "arguments": {"coordinate": [1.5, 2]}}'
    assert find_tool_call(f"<TOOL_CALL>{good}</Tool_Call>").coordinate == (1, 2)
    # only the FIRST span counts
    assert find_tool_call(_tc(bad) + _tc(good)).valid is False
    assert find_tool_call(_tc(good) + _tc(bad)).coordinate == (1, 2)
    # the first span ends at the first close tag
    assert find_tool_call(f"<tool_call>{good}<tool_call>{good}</tool_call>").valid is False
    calls = find_all_tool_calls(
        _tc(good) + "x" + _tc(bad) + _tc('{"name": "crop", "arguments": {"coordinate": [5, 6]}}')
    )
    assert [c.coordinate for c in calls] == [(1, 2), None, (5, 6)]


# --------------------------------------------------------------------------- answer / think


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<answer> left </answer>", " left "),
        ("x<answer>\nbehind\nthe car</answer>y", "\nbehind\nthe car"),  # DOTALL
        ("<ANSWER>x</Answer>", "x"),
        ("<answer>a</answer><answer>b</answer>", "a"),  # first block
        ("<answer>a<answer>b</answer>", "a<answer>b"),  # lazy: first close after the first open
        ("<answer>a", None),
        ("</answer><answer>x", None),
        ("<answer></answer>", ""),
        (f"<an{LONG_S}wer>x</answer>", None),
        (f"<answer>x</an{LONG_S}wer>", None),
        ("<answer >x</answer>", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_contains_and_ends_with_answer_close():
    assert contains_answer_close("foo </ANSWER> bar")
    assert not contains_answer_close(f"</an{LONG_S}wer>")
    assert not contains_answer_close("</answer")
    assert ends_with_answer_close("x</Answer>\n\t ")
    assert not ends_with_answer_close("x</answer>.")
    assert not ends_with_answer_close("</answer"[:5])


@pytest.mark.parametrize(
    ("text", "points"),
    [
        ("<think>The chair (120, 340). The table (400,310).</think>", [(120, 340), (400, 310)]),
        ("<think>The mug ( 12, 34 ) is near.</think>", [(12, 34)]),  # inner spaces
        (
            "<think>(\u00a012,\u200334\n)</think>",
            [(12, 34)],
        ),  # Unicode whitespace (docs/protocol.md#parsing-rules-that-hold-everywhere)
        ("<think>(123456, 2) (1234567, 2) (0000001, 2) (2, 0000001)</think>", [(123456, 2)]),
        ("<think>(-1, 2) (1.5, 2) (+1, 2) (1, 2, 3) (1 2)</think>", []),
        ("<think>(\u0661\u0662, 3) (\uff11, 2)</think>", []),  # non-ASCII digits
        ("<think>(007, 8)</think>", [(7, 8)]),
        ("(1, 2)<think>no point</think>(3, 4)", []),  # only inside the block
        ("<think>first (1, 2)</think><think>second (3, 4)</think>", [(1, 2)]),  # first block
        ("<THINK>(5, 6)</Think>", [(5, 6)]),
        (f"<thin{KELVIN}>(5, 6)</think>", []),
        (f"<th{DOTTED_I}nk>(5, 6)</think>", []),
        (f"<th{DOTLESS_I}nk>(5, 6)</think>", []),
        ("<think>(5, 6)", []),  # no closed block
        ("<think>((1, 2)(3,4))</think>", [(1, 2), (3, 4)]),
    ],
)
def test_think_points(text, points):
    assert think_points(text) == points


def test_all_think_points():
    t = "<think>a (1, 2)</think>x (9, 9)<think>b (3, 4) (5, 6)</think><think>c (7, 8)"
    assert all_think_points(t) == [(1, 2), (3, 4), (5, 6)]
    assert all_think_points("nothing") == []


@pytest.mark.parametrize(
    ("answer", "point"),
    [
        ("(150, 240)", (150, 240)),
        (" \n( -5 , +7 )\t", (-5, 7)),
        ("(0,0)", (0, 0)),
        ("(999999, -999999)", (999999, -999999)),
        ("(1234567, 1)", None),
        ("(120.5, 220)", None),
        ("(1, 2) extra", None),
        ("the button at 120, 220", None),
        ("120, 220", None),
        ("(\uff11, 2)", None),
        ("(+-1, 2)", None),
        ("", None),
    ],
)
def test_answer_point(answer, point):
    assert answer_point(answer) == point


# --------------------------------------------------------------------------- format grammars


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<think>\nx (1, 2)\n</think>\n<answer> left </answer>", True),
        ("<think>x</think><answer>y</answer>\n \t", True),  # trailing whitespace
        (
            "<THINK>x</Think>\n<ANSWER>y</answer>",
            True,
        ),  # ASCII case-insensitive (docs/protocol.md#parsing-rules-that-hold-everywhere)
        (
            "<think>a</think><think>b</think>\n<answer>y</answer>",
            True,
        ),  # several blocks (docs/rewards.md#primitives)
        ("<think>x</think>\u2003\n<answer></answer>", True),  # F1 only; the kind check is apart
        ("<think>a</think> junk </think> <answer>y</answer>", True),  # a later </think> works
        ("<think>x</think><answer>a</answer><answer>b</answer>", True),  # `.*?` can span
        (" <think>x</think><answer>y</answer>", False),  # nothing before <think>
        ("hi<think>x</think><answer>y</answer>", False),
        ("<think>x</think>junk<answer>y</answer>", False),
        ("<think>x</think><answer>y</answer>junk", False),
        ("<think>x</think><answer>y", False),
        ("<think>x<answer>y</answer>", False),
        ("<think></think><answer></answer>", True),
        ("<think><answer></answer>", False),
        (f"<thin{KELVIN}>x</think><answer>y</answer>", False),
        (f"<think>x</think><an{LONG_S}wer>y</answer>", False),
        (f"<think>x</think><answer>y</an{LONG_S}wer>", False),
        ("", False),
    ],
)
def test_single_turn_format(text, ok):
    assert matches_single_turn_format(text) is ok


OBS = OBSERVATION_TEXT_NO_DOT


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<think>a</think><answer>b</answer>", True),
        (
            f"<think>a</think>{format_tool_call(1, 2)}\n{OBS}\n<think>b</think><answer>c</answer>",
            True,
        ),
        (
            "<Think>a</THINK><Tool_Call>x</TOOL_CALL><OBSERVATION><image></Observation>"
            "<think>b</think><answer>c</answer>",
            True,
        ),
        (f"{FORCED_PREFIX} blue </answer>", True),
        ("<think>a</think><tool_call>x</tool_call><think>b</think><answer>c</answer>", False),
        (f"<think>a</think><tool_call>x</tool_call>{OBS}<answer>c</answer>", False),
        ("<think>a</think><answer>b</answer><think>", False),  # tag after end
        ("<think>a</think><answer>b</answer>text after is fine", True),
        ("<think>a</think><answer>b", False),
        ("<answer>b</answer>", False),
        ("<think>a<think></think><answer>b</answer>", False),
        ("<foo><think>a</think><bar/><answer>b</answer>", True),  # other tags ignored
        (f"<think>a</think><an{LONG_S}wer>b</answer>", False),
        ("", False),
    ],
)
def test_multi_turn_tag_walk(text, ok):
    assert multi_turn_tag_walk_ok(text) is ok


# --------------------------------------------------------------------------- parse_turn


def test_parse_turn():
    text = "<think>zoom at (300, 200) and (1, 1)</think>\n" + format_tool_call(300, 200)
    turn = parse_turn(text)
    assert turn == Turn(
        think="zoom at (300, 200) and (1, 1)",
        points=((300, 200), (1, 1)),
        tool_call=ToolCall(True, (300, 200), None),
        answer=None,
    )
    turn = parse_turn(FORCED_PREFIX + " blue </answer>")
    assert (
        turn.think
        == " Based on all the information I've gathered, I'll now provide my final answer. "
    )
    assert turn.points == () and turn.tool_call is None and turn.answer == " blue "
    assert parse_turn("") == Turn(None, (), None, None)


# --------------------------------------------------------------------------- differential fuzzing

_ANS_RE = re.compile(r"(?ai:<answer>)(.*?)(?ai:</answer>)", re.S)
_THINK_RE = re.compile(r"(?ai:<think>)(.*?)(?ai:</think>)", re.S)
_TOOL_RE = re.compile(r"(?ai:<tool_call>)(.*?)(?ai:</tool_call>)", re.S)
_F1_RE = re.compile(r"(?ai:<think>).*?(?ai:</think>)\s*(?ai:<answer>).*?(?ai:</answer>)", re.S)
_POINT_RE = re.compile(r"\(\s*([0-9]+)\s*,\s*([0-9]+)\s*\)")
_WALK_TAGS = re.compile(r"<(/?)(tool_call|observation|think|answer)>", re.I | re.A)
_WALK_SEQ = re.compile(
    r"(<think></think><tool_call></tool_call><observation></observation>)*"
    r"<think></think><answer></answer>"
)

FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "<tool_call>",
    "</tool_call>",
    "<observation>",
    "</observation>",
    "<THINK>",
    "</Answer>",
    "<Tool_Call>",
    "<image>",
    f"<thin{KELVIN}>",
    f"</an{LONG_S}wer>",
    "<answer ",
    "</",
    "<",
    ">",
    "(",
    ")",
    ",",
    ", ",
    " ",
    "\n",
    "\u2003",
    "\t",
    "[",
    "]",
    "{",
    "}",
    ":",
    '"',
    "`",
    "0",
    "7",
    "12",
    "007",
    "123456",
    "1234567",
    "-3",
    "+4",
    "1.5",
    "\u0661",
    '"arguments"',
    '"coordinate"',
    '"name"',
    "true",
    "null",
    '{"name": "crop", "arguments": {"coordinate": [',
    "]}}",
    "click",
    "type",
    "scroll",
    "go_back",
    "stop",
    "up",
    "down",
    "A.",
    "B)",
    "left",
    "Red",
    "(120, 340)",
    "( 5,6 )",
    FORCED_PREFIX,
    OBS,
    "<|im_end|>",
]


def _variants(tag: str) -> list[str]:
    return [tag, tag, tag.upper(), tag.capitalize()]


_NOISE = st.one_of(
    st.sampled_from(FRAGMENTS), st.text(max_size=3), st.sampled_from(["", " ", "\n"])
)
_POINT_TEXT = st.builds(
    lambda a, b, sp: f"({sp}{a},{sp}{b}{sp})",
    st.sampled_from(["0", "12", "007", "123456", "1234567", "-3", "1.5", "\u0661"]),
    st.sampled_from(["5", "340", "0000001", "+4"]),
    st.sampled_from(["", " ", "\u2003"]),
)
_ANSWER_TEXT = st.one_of(
    _NOISE,
    _POINT_TEXT,
    st.sampled_from([" left ", "B. right", "click [12]", "`type [3] [x]`", "   "]),
)


def _wrap(open_tag: str, close_tag: str, inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda o, c, xs: o + "".join(xs) + c,
        st.sampled_from([*_variants(open_tag), ""]),
        st.sampled_from([*_variants(close_tag), ""]),
        st.lists(inner, max_size=4),
    )


_BLOCK = st.one_of(
    _wrap("<think>", "</think>", st.one_of(_NOISE, _POINT_TEXT)),
    _wrap("<answer>", "</answer>", _ANSWER_TEXT),
    _wrap("<tool_call>", "</tool_call>", _NOISE),
    st.builds(format_tool_call, st.integers(-999, 3000), st.integers(-999, 3000)),
    st.sampled_from([OBS, FORCED_PREFIX, "\n", " "]),
    _NOISE,
)


def grammar_text(max_size: int = 12) -> st.SearchStrategy[str]:
    """Text from a grammar of protocol blocks (often well formed, often slightly broken)."""
    return st.lists(_BLOCK, max_size=max_size).map("".join)


_LEAD = st.sampled_from(["", "", "", " ", "x", "<think>"])
_WS_RUN = st.sampled_from(["", "\n", " \n\t", "\u2003", "x"])


def _tagged(open_tag: str, close_tag: str, inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A block with (mostly) correct tags in varied ASCII case."""
    return st.builds(
        lambda o, c, xs: o + "".join(xs) + c,
        st.sampled_from(_variants(open_tag)),
        st.sampled_from(_variants(close_tag)),
        st.lists(st.one_of(_NOISE, _POINT_TEXT), max_size=3),
    )


_THINK = _tagged("<think>", "</think>", st.one_of(_NOISE, _POINT_TEXT))
_ANSWER = _tagged("<answer>", "</answer>", _ANSWER_TEXT)
_TC = st.one_of(
    st.builds(format_tool_call, st.integers(-999, 3000), st.integers(-999, 3000)),
    _wrap("<tool_call>", "</tool_call>", _NOISE),
)

single_turn_like = st.builds(
    lambda *parts: "".join(parts), _LEAD, _THINK, _WS_RUN, _ANSWER, _WS_RUN
)
multi_turn_like = st.builds(
    lambda turns, last, ans, tail: "".join(turns) + last + ans + tail,
    st.lists(
        st.builds(
            lambda t, ws, c, o: t + ws + c + "\n" + o + "\n",
            _THINK,
            _WS_RUN,
            _TC,
            st.sampled_from([OBS, OBSERVATION_TEXT_DOT, "", "<observation>"]),
        ),
        max_size=5,
    ),
    st.one_of(_THINK, st.just(FORCED_PREFIX[: -len("<answer>")]), st.just("")),
    _ANSWER,
    _WS_RUN,
)
ANY_TEXT = st.one_of(
    st.text(max_size=200), grammar_text(), grammar_text(), single_turn_like, multi_turn_like
)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(ANY_TEXT)
def test_parsers_match_documented_regexes(text):
    m = _ANS_RE.search(text)
    assert extract_answer(text) == (m.group(1) if m else None)
    m = _THINK_RE.search(text)
    ref_points = []
    if m:
        ref_points = [
            (int(a), int(b))
            for a, b in _POINT_RE.findall(m.group(1))
            if len(a) <= 6 and len(b) <= 6
        ]
    assert think_points(text) == ref_points
    all_ref = [
        (int(a), int(b))
        for blk in _THINK_RE.findall(text)
        for a, b in _POINT_RE.findall(blk)
        if len(a) <= 6 and len(b) <= 6
    ]
    assert all_think_points(text) == all_ref
    assert matches_single_turn_format(text) == (_F1_RE.fullmatch(text.rstrip()) is not None)
    bodies = _TOOL_RE.findall(text)
    calls = find_all_tool_calls(text)
    assert len(calls) == len(bodies)
    first = find_tool_call(text)
    assert (first is None) == (not bodies)
    if bodies:
        assert first == calls[0]
    seq = "".join(f"<{a}{b.lower()}>" for a, b in _WALK_TAGS.findall(text))
    assert multi_turn_tag_walk_ok(text) == (_WALK_SEQ.fullmatch(seq) is not None)
    assert contains_answer_close(text) == bool(re.search(r"(?ai:</answer>)", text))
    turn = parse_turn(text)
    assert turn.answer == extract_answer(text) and list(turn.points) == think_points(text)


@FUZZ
@given(ANY_TEXT)
def test_tool_call_invariants(text):
    for tc in find_all_tool_calls(text):
        assert tc.valid == (tc.coordinate is not None) == (tc.error is None)
        if tc.valid:
            x, y = tc.coordinate
            assert type(x) is int and type(y) is int
            assert len(str(abs(x))) <= 6 and len(str(abs(y))) <= 6


@FUZZ
@given(st.integers(-999999, 999999), st.integers(-999999, 999999), grammar_text(8))
def test_tool_call_round_trip(x, y, prefix):
    # a prefix without tool-call tags cannot change the first span
    prefix = re.sub(r"(?ai:</?tool_call>)", "", prefix)
    assert find_tool_call(prefix + format_tool_call(x, y)) == ToolCall(True, (x, y), None)
    assert answer_point(f" ({x},{y}) ") == (x, y)


# --------------------------------------------------------------------------- linear time (docs/protocol.md#parsing-rules-that-hold-everywhere)

_HOSTILE = {
    "answer_opens": lambda n: "<answer>" * (n // 8),
    "answer_opens_mixed_case": lambda n: "<AnSwEr>é" * (n // 9),
    "think_opens": lambda n: "<think>" * (n // 7),
    "think_then_point_starts": lambda n: "<think>" + "(1, " * (n // 4),
    "point_prefixes": lambda n: "<think>" + "(1," * (n // 3) + "</think>",
    "paren_spaces": lambda n: "<think>(" + " " * n + "</think>",
    "digits": lambda n: "<think>(" + "1" * n + "</think><answer>(" + "1" * n + ",1)</answer>",
    "tool_call_braces": lambda n: "<tool_call>{" * (n // 12),
    "tool_call_spans": lambda n: "<tool_call>{</tool_call>" * (n // 24),
    "deep_json": lambda n: "<tool_call>" + "[" * n + "</tool_call>",
    "think_closes_ws": lambda n: "<think>" + "</think> \n" * (n // 10) + "</answer>",
    "walk_tags": lambda n: "<think></think><tool_call>" * (n // 26),
    "brackets": lambda n: "<answer>type " + "[" * n + "</answer>",
}


def _parse_all(text: str) -> None:
    parse_turn(text)
    all_think_points(text)
    find_all_tool_calls(text)
    matches_single_turn_format(text)
    multi_turn_tag_walk_ok(text)
    ends_with_answer_close(text)
    canonicalize_action(text)
    a = extract_answer(text)
    if a is not None:
        answer_point(a)


def _best_time(fn, text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("name", sorted(_HOSTILE))
def test_hostile_input_is_parsed_in_linear_time(name):
    make = _HOSTILE[name]
    big = make(100_000)
    assert len(big) >= 90_000
    t100 = _best_time(_parse_all, big)
    assert t100 < 0.5, f"{name}: {t100:.3f} s for {len(big)} chars"
    # doubling twice must not multiply the time by ~16 (quadratic); only judged when measurable
    t50, t200 = _best_time(_parse_all, make(50_000)), _best_time(_parse_all, make(200_000))
    if t200 > 0.02:
        assert t200 / max(t50, 1e-4) < 8, f"{name}: 50k {t50:.4f} s, 200k {t200:.4f} s"


def test_hostile_results_are_still_right():
    assert extract_answer("<answer>" * 12500) is None
    assert extract_answer("<answer>" * 3 + "</answer>") == "<answer>" * 2
    assert think_points("<think>" + "(1," * 1000 + "(2, 3)</think>") == [(2, 3)]
    assert find_tool_call("<tool_call>" + "[" * 100_000 + "</tool_call>").valid is False
    assert answer_point("(" + "1" * 100_000 + ", 1)") is None

"""Rewards and accuracy (docs/rewards.md): its worked examples are normative test vectors."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# test_protocol's text strategies (pytest puts this folder on sys.path: no package needed)
from test_protocol import ANY_TEXT, multi_turn_like, single_turn_like

from vigorl_env.protocol import FORCED_PREFIX, OBSERVATION_TEXT_NO_DOT, format_tool_call
from vigorl_env.rewards import (
    LENIENT_POINT_MAX_CHARS,
    REWARD_RANGES,
    GroundTruth,
    accuracy,
    answer_accuracy,
    count_unique_coords,
    format_multi_turn,
    format_single_turn,
    lenient_answer_point,
    multi_turn_reward,
    norm,
    reward_range,
    single_turn_reward,
    strip_letter,
)

OBS = OBSERVATION_TEXT_NO_DOT
PFX = FORCED_PREFIX


def T(x: str) -> str:
    return f"<think>{x}</think>"


def TC(x: int, y: int) -> str:
    return format_tool_call(x, y)


def join(*parts: str) -> str:
    """A multi-turn transcript: actions and observations joined with newlines (docs/envs.md#step)."""
    return "\n".join(parts)


def opt(answer: str) -> GroundTruth:
    return GroundTruth(answer, "option_text")


def web(answer: str) -> GroundTruth:
    return GroundTruth(answer, "web_action")


BOX = GroundTruth("(100, 200, 150, 240)", "point_in_box", box=(100, 200, 150, 240))

# Row 12: 3840×2160 screenshot, GT (1000, 500, 1040, 530) original frame, M = 4,194,304 → 2716×1512.
SX, SY = 2716 / 3840, 1512 / 2160
BOX_12 = GroundTruth(
    "(1000, 500, 1040, 530)",
    "point_in_box",
    box=(1000 * SX, 500 * SY, 1040 * SX, 530 * SY),
)

# --------------------------------------------------------------------------- worked examples (docs/rewards.md#worked-examples)

# (row, gt, response, variant, acc, fmt, overall); fmt is the reported "format" component.
SINGLE_TURN_ROWS = [
    (
        1,
        opt("left"),
        "<think>\nThe chair is at (120, 340). The table is at (400, 310).\n</think>\n<answer> left </answer>",
        "grounded",
        1,
        1,
        1.0,
    ),
    (
        2,
        opt("LEFT "),
        T("The lamp (88, 40) is above the sofa (90, 300).") + "\n<answer>  Left\n</answer>\n",
        "grounded",
        1,
        1,
        1.0,
    ),
    (
        3,
        opt("right"),
        T("The cup (210, 95) is right of the plate.") + "<answer>B. right</answer>",
        "grounded",
        1,
        1,
        1.0,
    ),
    (
        4,
        opt("left"),
        T("The mug is left of the plate.") + "<answer>left</answer>",
        "grounded",
        1,
        0,
        0.5,
    ),
    (
        5,
        opt("left"),
        T("The mug ( 12, 34 ) is near the plate.") + "<answer>right</answer>",
        "grounded",
        0,
        1,
        0.5,
    ),
    (
        6,
        opt("behind the car"),
        T("The car (5, 5).") + "<answer>\nbehind\nthe car</answer>",
        "grounded",
        1,
        1,
        1.0,
    ),
    (7, opt("left"), T("The car (5, 5).") + " left", "grounded", 0, 0, 0.0),
    (8, opt("left"), T("(1, 2)") + "<answer>   </answer>", "grounded", 0, 0, 0.0),
    (9, opt("left"), T("reason") + "<answer>left</answer>", "vanilla", 1, 1, 1.0),
    (
        10,
        BOX,
        T("Button at (120, 220).") + "\n<answer> (150, 240) </answer>",
        "grounded",
        1,
        1,
        1.0,
    ),
    (
        11,
        BOX,
        T("Button at (120, 220).") + "\n<answer>(120.5, 220)</answer>",
        "grounded",
        0,
        0,
        0.0,
    ),
    (
        "12a",
        BOX_12,
        T("Button at (720, 360).") + "\n<answer>(735, 371)</answer>",
        "grounded",
        1,
        1,
        1.0,
    ),
    (
        "12b",
        BOX_12,
        T("Button at (720, 360).") + "\n<answer>(736, 360)</answer>",
        "grounded",
        0,
        1,
        0.5,
    ),
    (
        13,
        web("click [1234]"),
        T("The search box (640, 88) takes text.") + "<answer>type [1234] [shoes]</answer>",
        "grounded",
        0.5,
        1,
        0.75,
    ),
    (
        14,
        web("click [12]"),
        T("The play button (300, 500).") + "<answer>click [12] to stop the video</answer>",
        "grounded",
        1,
        1,
        1.0,
    ),
    (
        15,
        web("scroll [down]"),
        T("More below (640, 900).") + "<answer>scroll [up]</answer>",
        "grounded",
        0,
        1,
        0.5,
    ),
    (
        16,
        web("stop [$13.49]"),
        T("Done (640, 900).") + "<answer>stop [$12.99]</answer>",
        "grounded",
        1,
        1,
        1.0,
    ),
]


@pytest.mark.parametrize(
    ("row", "gt", "text", "variant", "acc", "fmt", "overall"),
    SINGLE_TURN_ROWS,
    ids=[str(r[0]) for r in SINGLE_TURN_ROWS],
)
def test_single_turn_worked_examples(row, gt, text, variant, acc, fmt, overall):
    rc = single_turn_reward(text, gt, variant=variant)
    assert rc["accuracy"] == acc
    assert rc["format"] == fmt
    assert rc["overall"] == pytest.approx(overall, abs=1e-12)
    assert all(isinstance(v, float) for v in rc.values())
    if variant == "grounded":
        assert set(rc) == {"overall", "accuracy", "format", "format_raw", "has_point"}
        assert rc["format"] == rc["format_raw"] * rc["has_point"]
    else:
        assert set(rc) == {"overall", "accuracy", "format"}


def test_row_4_is_format_without_point_and_row_9_vanilla_needs_no_point():
    rc = single_turn_reward(
        T("The mug is left of the plate.") + "<answer>left</answer>", opt("left")
    )
    assert (rc["format_raw"], rc["has_point"]) == (1.0, 0.0)
    rc = single_turn_reward(T("reason") + "<answer>left</answer>", opt("left"), variant="grounded")
    assert rc["overall"] == 0.5


def test_row_12_box_is_in_the_model_frame():
    assert BOX_12.box == pytest.approx((707.29, 350.0, 735.58, 371.0), abs=0.005)
    assert BOX_12.box[3] == 371.0  # the corner (735, 371) is inside: containment inclusive


def _mt_rows():
    row17 = join(
        T("…(300, 200).") + "\n" + TC(300, 200),
        OBS,
        T("…") + "\n" + TC(305, 206),
        OBS,
        T("…") + "\n" + TC(900, 640),
        OBS,
        T("The bag is red.") + "\n<answer> Red </answer>",
    )
    turns18 = [
        x
        for p in [(100, 100), (400, 100), (100, 400), (400, 400)]
        for x in (T("…") + "\n" + TC(*p), OBS)
    ]
    row18 = join(*turns18, PFX + " blue </answer>")
    row19 = join(T("…") + "\n" + TC(100, 100), OBS, "<answer>red</answer>")
    row20 = T("Region.") + (
        '\n<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [100.5, 100]}}\n</tool_call>'
    )
    row21 = T("Button.") + "\n<answer>(120, 220)</answer>"
    row22 = T("Button.") + "\n<answer>the button at 120, 220</answer>"
    # (row, gt, transcript, acc, format_mt, overall, U, num_tool_calls)
    return [
        (17, opt("red"), row17, 1, 1.2, 1.08, 2, 3),
        (18, opt("red"), row18, 0, 1.6, 0.64, 4, 4),
        (19, opt("red"), row19, 1, 0, 0.6, 1, 1),
        (20, opt("red"), row20, 0, 0, 0.0, 0, 0),
        (21, BOX, row21, 1, 1, 1.0, 0, 0),
        (22, BOX, row22, 0, 0, 0.0, 0, 0),
    ]


MT_ROWS = _mt_rows()


@pytest.mark.parametrize(
    ("row", "gt", "transcript", "acc", "fmt", "overall", "unique", "n_calls"),
    MT_ROWS,
    ids=[str(r[0]) for r in MT_ROWS],
)
def test_multi_turn_worked_examples(row, gt, transcript, acc, fmt, overall, unique, n_calls):
    rc = multi_turn_reward(transcript, gt)
    assert set(rc) == {"overall", "accuracy", "format", "unique_coords", "num_tool_calls"}
    assert rc["accuracy"] == acc
    assert rc["format"] == pytest.approx(fmt, abs=1e-12)
    assert rc["overall"] == pytest.approx(overall, abs=1e-12)
    assert (rc["unique_coords"], rc["num_tool_calls"]) == (unique, n_calls)
    assert format_multi_turn(transcript, gt.kind) == (rc["format"], unique, n_calls)


def test_row_17_distance_is_below_threshold():
    assert math.dist((300, 200), (305, 206)) == pytest.approx(7.81, abs=0.01)
    assert count_unique_coords([(300, 200), (305, 206), (900, 640)], 10.0) == 2


def test_multi_turn_reward_maximum_is_1_24():
    pts = [(100, 100), (400, 100), (100, 400), (400, 400)]
    t = join(
        *[x for p in pts for x in (T("look") + TC(*p), OBS)],
        T("red it is") + "<answer>red</answer>",
    )
    rc = multi_turn_reward(t, opt("red"))
    assert rc["overall"] == pytest.approx(1.24) == pytest.approx(REWARD_RANGES["multi_turn"][1])


# --------------------------------------------------------------------------- primitives


def test_norm_and_strip_letter():
    assert norm("  Behind\u2003\n the\tCAR  ") == "behind the car"
    assert norm("") == ""
    assert strip_letter(" B. right ") == "right"
    assert strip_letter("C)  the car") == "the car"
    assert strip_letter("B.\nright\nside") == "right\nside"
    assert strip_letter("left") == "left"
    assert strip_letter("AB. x") == "AB. x"
    assert strip_letter("\u00c9. x") == "\u00c9. x"  # ASCII letters only


@pytest.mark.parametrize(
    ("answer", "gt", "acc"),
    [
        ("left", "left", 1.0),
        ("B. left", "left", 1.0),
        (
            "A. left",
            "A. left",
            1.0,
        ),  # a GT starting with a letter still matches (candidate, not replacement)
        ("(B) left", "left", 0.0),
        ("left side", "left", 0.0),
        ("", "", 0.0),  # empty answer is 0 for every kind
        ("  \n", "left", 0.0),
        (None, "left", 0.0),
        ("\u0130", "i\u0307", 1.0),  # full str.lower on both sides (only tags are ASCII-only)
    ],
)
def test_option_text_accuracy(answer, gt, acc):
    assert answer_accuracy(answer, opt(gt)) == acc


def test_point_in_box_accuracy_inclusive_corners_and_floats():
    gt = GroundTruth("", "point_in_box", box=(10.5, 20.0, 30.25, 40.0))
    assert answer_accuracy("(11, 20)", gt) == 1.0
    assert answer_accuracy("(10, 20)", gt) == 0.0  # 10 < 10.5
    assert answer_accuracy("(30, 40)", gt) == 1.0
    assert answer_accuracy("(31, 40)", gt) == 0.0
    assert answer_accuracy("(20, 41)", gt) == 0.0
    assert answer_accuracy("20, 30", gt) == 0.0
    assert (
        answer_accuracy("(1234567, 30)", GroundTruth("", "point_in_box", box=(0, 0, 1e7, 1e7)))
        == 0.0
    )


@pytest.mark.parametrize(
    ("answer", "gt", "acc"),
    [
        (
            "`click [1234]`",
            "click [1234]",
            1.0,
        ),  # backticks stripped (docs/rewards.md#accuracy-by-answer-kind)
        (" `` click [1234] `` ", "`click [1234]`", 1.0),
        ("click [01234]", "click [1234]", 1.0),  # ids compare as integers
        ("click [0]", "click [000]", 1.0),
        ("click [12]", "click [13]", 0.5),
        ("click [12]", "type [12] [shoes]", 0.5),  # wrong type, right element
        ("click on 12", "click [12]", 0.0),
        ("click [12]", "go_back", 0.0),
        ("Click [12]", "CLICK [12]", 1.0),
        ("type [12] [shoes]", "type [12] [shoes]", 1.0),
        (
            "type [ 12 ] [shoes]",
            "type [12] [boots]",
            1.0,
        ),  # first bracket, stripped (docs/rewards.md#accuracy-by-answer-kind)
        ("type [012] [shoes]", "type [12] [shoes]", 0.5),  # type compares strings, not integers
        ("type [12] [shoes]", "click [12]", 0.5),
        ("type 12 shoes", "type [12] [shoes]", 0.0),
        ("scroll [down]", "scroll [down]", 1.0),
        ("scroll [ Down ]", "scroll [down]", 1.0),
        ("scroll [up]", "scroll [down]", 0.0),
        ("scroll [left]", "scroll [left]", 0.0),
        ("scroll down", "scroll [down]", 0.0),
        ("go_back", "go_back", 1.0),
        ("go_back [now]", "go_back", 1.0),
        ("go back", "go_back", 0.0),
        ("stop", "stop [$13.49]", 1.0),
        ("stop [$12.99]", "stop [$13.49]", 1.0),
        ("stopping [x]", "stop [x]", 0.0),
        (
            "I will stop and click [12]",
            "stop [x]",
            0.0,
        ),  # leading verb, not substring (docs/rewards.md#differences-from-upstream)
        ("hover [12]", "hover [12]", 0.0),
        ("", "go_back", 0.0),
    ],
)
def test_web_action_accuracy(answer, gt, acc):
    assert answer_accuracy(answer, web(gt)) == acc


def test_web_action_format_needs_non_empty_answer():
    assert format_single_turn(T("(1, 1)") + "<answer></answer>", "web_action") == 0
    assert format_single_turn(T("(1, 1)") + "<answer> go_back </answer>", "web_action") == 1
    assert format_single_turn(T("(1, 1)") + "<answer>whatever</answer>", "web_action") == 1


def test_format_single_turn_kind_checks():
    ok = T("(1, 2)") + "<answer> (3, 4) </answer>"
    assert format_single_turn(ok, "point_in_box") == 1
    assert format_single_turn(ok, "option_text") == 1
    assert format_single_turn(T("(1, 2)") + "<answer>three</answer>", "point_in_box") == 0
    assert format_single_turn("junk" + ok, "option_text") == 0
    with pytest.raises(ValueError):
        format_single_turn(ok, "bogus")


# --------------------------------------------------------------------------- lenient judge (docs/rewards.md#lenient-judge)


@pytest.mark.parametrize(
    ("text", "gt", "acc"),
    [
        ("<answer>not sure</answer>", "no", 1.0),  # substring: the reason it is not the default
        ("<answer>anything</answer>", "", 1.0),  # empty normalized GT always matches
        ("<answer></answer>", "", 1.0),
        ("<answer>(A) Left.</answer>", "left", 1.0),
        ("<answer>the answer is left</answer>", "Left", 1.0),
        ("The answer is left", "left", 1.0),  # no tags: whole output
        ("<answer>right</answer> left", "left", 0.0),  # tags win over the whole output
        ("<answer>behind\nthe car</answer>", "behind the car", 0.0),  # only spaces are deleted
    ],
)
def test_lenient_option_text(text, gt, acc):
    assert accuracy(text, opt(gt), accuracy_fn="lenient_upstream") == acc


def test_lenient_differs_from_normalized_where_documented():
    assert accuracy("<answer>not sure</answer>", opt("no")) == 0.0
    assert accuracy("The answer is left", opt("left")) == 0.0
    assert answer_accuracy("", opt(""), "lenient_upstream") == 1.0
    assert answer_accuracy("", opt(""), "normalized") == 0.0
    assert answer_accuracy(None, opt(""), "lenient_upstream") == 0.0


@pytest.mark.parametrize(
    ("answer", "gt", "acc"),
    [
        ("click [12]", "click [12]", 1.0),
        ("click [12] to stop the video", "click [12]", 0.0),  # "stop" wins by substring
        ("Click [12]", "click [12]", 1.0),
        ("click  [12]", "click [12]", 0.0),  # split on single spaces: 3 tokens
        ("click 12", "click [12]", 1.0),  # second token is a substring of the GT
        ("type [5] [shoes]", "type [5] [boots]", 1.0),
        ("type [5] [red shoes]", "type [5] [red shoes]", 0.0),  # 4 tokens
        ("type [12] [shoes]", "click [12]", 0.0),
        ("scroll [up]", "scroll [down]", 1.0),  # only the word
        ("go_back", "go_back", 1.0),
        ("stop [1]", "stop [2]", 1.0),
        ("hover [1]", "hover [1]", 0.0),
        (" click [12] ", "click [12]", 1.0),  # answers are stripped first
    ],
)
def test_lenient_web_action(answer, gt, acc):
    assert answer_accuracy(answer, web(gt), "lenient_upstream") == acc


# Box (100, 200, 150, 240), inclusive. Upstream's evaluation parsed the answer with
# ast.literal_eval: any tuple/list of two int/float numbers was the point.
@pytest.mark.parametrize(
    ("text", "lenient", "strict"),
    [
        ("<answer>(120, 220)</answer>", 1.0, 1.0),
        ("<answer> (150, 240) </answer>", 1.0, 1.0),  # corner: inclusive
        ("<answer>[120, 220]</answer>", 1.0, 0.0),  # a list
        ("<answer>120, 220</answer>", 1.0, 0.0),  # a bare tuple
        ("<answer>(120, 220,)</answer>", 1.0, 0.0),  # trailing comma
        ("<answer>(120.5, 220.25)</answer>", 1.0, 0.0),  # floats
        ("<answer>(100.0, 240.0)</answer>", 1.0, 0.0),  # float corner: inclusive
        ("<answer>(99.99, 220)</answer>", 0.0, 0.0),  # just outside
        ("<answer>(150.01, 220)</answer>", 0.0, 0.0),
        ("<answer>(-120, 220)</answer>", 0.0, 0.0),  # unary minus parses; outside
        ("<answer>(+120, 220)</answer>", 1.0, 1.0),
        ("<answer>(0x78, 220)</answer>", 1.0, 0.0),  # 0x78 = 120: a Python int literal
        ("<answer>(1_2_0, 220)</answer>", 1.0, 0.0),  # 120 with underscores
        ("<answer>(1.2e2, 2.2e2)</answer>", 1.0, 0.0),  # 120.0, 220.0
        ("<answer>(True, 220)</answer>", 0.0, 0.0),  # bool excluded
        ("<answer>(120, 220, 5)</answer>", 0.0, 0.0),  # three numbers
        ("<answer>((120, 220),)</answer>", 0.0, 0.0),  # nested
        ("<answer>('120', '220')</answer>", 0.0, 0.0),  # strings
        ("<answer>(120+0j, 220)</answer>", 0.0, 0.0),  # complex
        ("<answer>{120, 220}</answer>", 0.0, 0.0),  # a set
        ("<answer>{'x': 120, 'y': 220}</answer>", 0.0, 0.0),
        ("<answer>(1e999, 220)</answer>", 0.0, 0.0),  # inf is outside every finite box
        ("<answer>the button at (120, 220)</answer>", 0.0, 0.0),  # not a literal
        ("<answer>__import__('os').getcwd()</answer>", 0.0, 0.0),  # never evaluated
        ("<answer>(120, 220) </answer> trailing", 1.0, 1.0),
        ("[120, 220]", 1.0, 0.0),  # no answer block: the whole output
        ("<answer></answer>", 0.0, 0.0),
        ("<answer>(120, " + " " * 191 + "220)</answer>", 0.0, 1.0),  # 201 chars: not parsed
        ("<answer> (120, " + " " * 190 + "220) </answer>", 1.0, 1.0),  # 200 after strip
        ("<answer>" + "(" * 100_000 + "</answer>", 0.0, 0.0),  # capped before the parser
    ],
)
def test_lenient_point_in_box_reads_like_upstream(text, lenient, strict):
    assert accuracy(text, BOX, accuracy_fn="lenient_upstream") == lenient
    assert accuracy(text, BOX) == strict


def test_lenient_answer_point_values_and_cap():
    assert lenient_answer_point("[120, 220]") == (120.0, 220.0)
    assert lenient_answer_point(" 7.5, -3 ") == (7.5, -3.0)
    assert lenient_answer_point("(1, 2)".ljust(LENIENT_POINT_MAX_CHARS)) == (1.0, 2.0)
    # the cap applies to the stripped answer: 200 characters parse, 201 do not
    exact = "(1, " + " " * (LENIENT_POINT_MAX_CHARS - 6) + "2)"
    assert len(exact) == LENIENT_POINT_MAX_CHARS and lenient_answer_point(exact) == (1.0, 2.0)
    assert lenient_answer_point("(1, " + " " * (LENIENT_POINT_MAX_CHARS - 5) + "2)") is None
    assert lenient_answer_point("(1, 2)\\n") is None  # a literal backslash-n is not whitespace
    assert lenient_answer_point("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[") is None
    # the RL reward keeps the strict (x, y) form for format and accuracy
    t = "<think>(120, 220)</think><answer>[120, 220]</answer>"
    assert single_turn_reward(t, BOX, accuracy_fn="lenient_upstream")["format"] == 0.0
    assert single_turn_reward(t, BOX, accuracy_fn="lenient_upstream")["accuracy"] == 1.0
    assert single_turn_reward(t, BOX)["overall"] == 0.0


# --------------------------------------------------------------------------- extraction / config


def test_whole_output_extraction():
    assert accuracy("  Left \n", opt("left"), answer_extraction="whole_output") == 1.0
    assert accuracy("<answer>left</answer>", opt("left"), answer_extraction="whole_output") == 0.0
    assert accuracy(" (120, 220) ", BOX, answer_extraction="whole_output") == 1.0
    rc = single_turn_reward("left", opt("left"), answer_extraction="whole_output")
    assert rc == {
        "overall": 0.5,
        "accuracy": 1.0,
        "format": 0.0,
        "format_raw": 0.0,
        "has_point": 0.0,
    }


def test_weights():
    text = T("(1, 2)") + "<answer>wrong</answer>"
    rc = single_turn_reward(text, opt("left"), weights={"accuracy": 0.9, "format": 0.1})
    assert rc["overall"] == pytest.approx(0.1)
    rc = multi_turn_reward(
        T("x") + "<answer>left</answer>", opt("left"), weights={"accuracy": 1.0, "format": 0.0}
    )
    assert rc["overall"] == 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: single_turn_reward("x", opt("a"), variant="bogus"),
        lambda: single_turn_reward("x", opt("a"), weights={"accuracy": 1.0}),
        lambda: single_turn_reward("x", opt("a"), weights={"accuracy": 1.0, "format": 0, "x": 1}),
        lambda: accuracy("x", opt("a"), accuracy_fn="exact"),
        lambda: answer_accuracy("x", opt("a"), accuracy_fn="exact"),
        lambda: accuracy("x", opt("a"), answer_extraction="last"),
        lambda: multi_turn_reward("x", opt("a"), diversity_bonus=-0.1),
        lambda: multi_turn_reward("x", opt("a"), diversity_min_dist=float("nan")),
        lambda: reward_range("both"),
        lambda: GroundTruth("a", "bogus"),
        lambda: GroundTruth("(1, 2, 3, 4)", "point_in_box"),  # needs a box
        lambda: GroundTruth("", "point_in_box", box=(5, 0, 1, 1)),
        lambda: GroundTruth("", "point_in_box", box=(0, 0, 1)),
        lambda: GroundTruth("", "point_in_box", box=(0, 0, float("nan"), 1)),
    ],
)
def test_bad_configuration_raises_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_ground_truth_box_is_float_tuple():
    gt = GroundTruth("", "point_in_box", box=[1, 2, 3, 4])
    assert gt.box == (1.0, 2.0, 3.0, 4.0) and all(type(v) is float for v in gt.box)


def test_reward_ranges():
    assert REWARD_RANGES["single_turn"] == (0.0, 1.0)
    assert REWARD_RANGES["multi_turn"] == (0.0, pytest.approx(1.24))
    assert reward_range("multi_turn", 0.2, 1)[1] == pytest.approx(1.0)
    assert reward_range("multi_turn", 0.0, 4)[1] == pytest.approx(1.0)
    assert reward_range("multi_turn", 0.5, 3)[1] == pytest.approx(0.6 + 0.4 * 2.0)


# --------------------------------------------------------------------------- multi-turn details


def test_multi_turn_format_rules():
    good = join(T("a (1, 2)") + TC(1, 2), OBS, T("b") + "<answer>red</answer>")
    assert format_multi_turn(good, "option_text") == (1.0, 1, 1)
    assert format_multi_turn(good + "\n  ", "option_text")[0] == 1.0  # check 1 strips
    assert format_multi_turn(good + " done", "option_text")[0] == 0.0  # must end with </answer>
    assert format_multi_turn(good.replace("</answer>", "</ANSWER>"), "option_text")[0] == 1.0
    assert format_multi_turn(good, "point_in_box")[0] == 0.0  # answer must be a point
    empty = join(T("a") + TC(1, 2), OBS, T("b") + "<answer> \n </answer>")
    assert format_multi_turn(empty, "web_action") == (0.0, 1, 1)
    # an invalid tool call anywhere voids the format; counts cover only the valid ones (docs/rewards.md#multi-turn-score)
    bad = join(
        T("a") + TC(1, 2),
        OBS,
        T("b") + "<tool_call>[1, 2]</tool_call>",
        OBS,
        T("c") + "<answer>x</answer>",
    )
    assert format_multi_turn(bad, "option_text") == (0.0, 1, 1)
    # counts are computed whatever the format score
    loose = join(TC(0, 0), TC(50, 0), TC(0, 50), "<answer>x</answer>")
    assert format_multi_turn(loose, "option_text") == (0.0, 3, 3)


def test_diversity_parameters():
    pts = [(0, 0), (5, 0), (20, 0), (26, 0)]
    t = join(*[x for p in pts for x in (T("a") + TC(*p), OBS)], T("b") + "<answer>x</answer>")
    assert format_multi_turn(t, "option_text") == (pytest.approx(1.2), 2, 4)
    assert format_multi_turn(t, "option_text", diversity_min_dist=5.0) == (pytest.approx(1.6), 4, 4)
    assert format_multi_turn(t, "option_text", diversity_min_dist=6.0) == (pytest.approx(1.4), 3, 4)
    assert format_multi_turn(t, "option_text", diversity_bonus=0.5) == (pytest.approx(1.5), 2, 4)
    assert format_multi_turn(t, "option_text", diversity_min_dist=0.0)[1] == 4
    assert format_multi_turn(t, "option_text", diversity_min_dist=math.inf)[1] == 1


def _unique_brute(points, d):
    kept = []
    for p in points:
        if all(math.dist(p, k) >= d for k in kept):
            kept.append(p)
    return len(kept)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-60, 60), st.integers(-60, 60)), max_size=40),
    st.sampled_from([0.0, 0.5, 1.0, 3.0, math.sqrt(2), 5.0, 10.0, 12.5, 1e-9, 1e6]),
)
def test_unique_coords_matches_brute_force(points, d):
    assert count_unique_coords(points, d) == _unique_brute(points, d)


def test_unique_coords_exact_boundary():
    assert count_unique_coords([(0, 0), (6, 8)], 10.0) == 2  # distance exactly 10 is kept
    assert count_unique_coords([(0, 0), (6, 7)], 10.0) == 1
    assert count_unique_coords([(999999, -999999), (-999999, 999999)], 10.0) == 2


# --------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GTS = [
    opt("left"),
    opt("Red"),
    opt(""),
    opt("B. right"),
    BOX,
    BOX_12,
    web("click [12]"),
    web("type [3] [x]"),
    web("scroll [down]"),
    web("go_back"),
]
REWARD_TEXT = st.one_of(ANY_TEXT, single_turn_like, multi_turn_like)


@FUZZ
@given(
    REWARD_TEXT,
    st.sampled_from(GTS),
    st.sampled_from(["grounded", "vanilla"]),
    st.sampled_from(["normalized", "lenient_upstream"]),
    st.sampled_from(["tags", "whole_output"]),
)
def test_single_turn_reward_never_raises_and_is_bounded(text, gt, variant, fn, extraction):
    rc = single_turn_reward(text, gt, variant=variant, accuracy_fn=fn, answer_extraction=extraction)
    lo, hi = REWARD_RANGES["single_turn"]
    assert lo <= rc["overall"] <= hi + 1e-12
    assert rc["accuracy"] in (0.0, 0.5, 1.0) and rc["format"] in (0.0, 1.0)
    if fn == "lenient_upstream" or gt.kind != "web_action":
        assert rc["accuracy"] in (0.0, 1.0)
    assert rc["overall"] == pytest.approx(0.5 * rc["accuracy"] + 0.5 * rc["format"])


@FUZZ
@given(REWARD_TEXT, st.sampled_from(GTS), st.sampled_from(["normalized", "lenient_upstream"]))
def test_multi_turn_reward_never_raises_and_is_bounded(text, gt, fn):
    rc = multi_turn_reward(text, gt, accuracy_fn=fn)
    lo, hi = reward_range("multi_turn", 0.2, rc["num_tool_calls"])
    assert lo <= rc["overall"] <= hi + 1e-12
    assert 0 <= rc["unique_coords"] <= rc["num_tool_calls"]
    assert rc["format"] == 0.0 or rc["format"] == pytest.approx(
        1 + 0.2 * max(rc["unique_coords"] - 1, 0)
    )
    assert rc["overall"] == pytest.approx(0.6 * rc["accuracy"] + 0.4 * rc["format"])


@FUZZ
@given(st.text(max_size=300) | REWARD_TEXT, st.sampled_from(GTS))
def test_answer_accuracy_of_arbitrary_strings(answer, gt):
    for fn in ("normalized", "lenient_upstream"):
        assert 0.0 <= answer_accuracy(answer, gt, fn) <= 1.0


@FUZZ
@given(single_turn_like)
def test_format_components_consistent(text):
    for kind in ("option_text", "point_in_box", "web_action"):
        f = format_single_turn(text, kind)
        assert f in (0, 1)
    # F1 plus a non-empty answer is exactly the option_text format
    from vigorl_env.protocol import extract_answer, matches_single_turn_format

    a = extract_answer(text)
    assert format_single_turn(text, "option_text") == int(
        matches_single_turn_format(text) and a is not None and bool(a.strip())
    )


# --------------------------------------------------------------------------- linear time (docs/protocol.md#parsing-rules-that-hold-everywhere)


def _score_all(text: str) -> None:
    for gt in (opt("left"), BOX, web("type [3] [x]"), web("click [12]")):
        single_turn_reward(text, gt)
        multi_turn_reward(text, gt)
        accuracy(text, gt, accuracy_fn="lenient_upstream")
        accuracy(text, gt, answer_extraction="whole_output")


def _many_valid_calls(n: int) -> str:
    parts, i = [], 0
    while sum(map(len, parts)) < n:
        x, y = (i % 50) * 20, (i // 50) * 20
        parts.append(T(f"({x}, {y})") + TC(x, y) + "\n" + OBS + "\n")
        i += 1
    return "".join(parts) + T("done") + "<answer>(1, 1)</answer>"


HOSTILE = {
    "answer_opens": lambda n: "<answer>" * (n // 8),
    "answer_opens_closed": lambda n: "<think>(1, 1)</think>" + "<answer>" * (n // 8) + "</answer>",
    "think_opens": lambda n: "<think>" * (n // 7),
    "points": lambda n: "<think>" + "(1," * (n // 3),
    "brackets": lambda n: "<answer>type " + "[" * n + "</answer>",
    "click_ids": lambda n: "<answer>click " + "[1" * (n // 2) + "</answer>",
    "letters": lambda n: "<answer>A." + " " * n + "x</answer>",
    "unicode_ws": lambda n: "<answer>" + "\u2003a" * (n // 2) + "</answer>",
    "tool_calls": lambda n: "<tool_call>{" * (n // 12),
    "many_valid_calls": _many_valid_calls,
    "answer_digits": lambda n: "<answer>(" + "1" * n + ", 1)</answer>",
    "non_ascii_tags": lambda n: "<AnSwEr>é" * (n // 9) + "</ANSWER>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_scoring_is_linear(name):
    make = HOSTILE[name]

    def best(text: str) -> float:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            _score_all(text)
            times.append(time.perf_counter() - t0)
        return min(times)

    big = make(100_000)
    assert len(big) >= 90_000
    t100 = best(big)
    # 16 scorings (4 GTs × 4 functions) of the same 100k text; each is well under 100 ms
    assert t100 / 16 < 0.1, f"{name}: {t100 / 16 * 1000:.1f} ms per scoring"
    t50, t200 = best(make(50_000)), best(make(200_000))
    if t200 > 0.05:
        assert t200 / max(t50, 1e-4) < 8, f"{name}: 50k {t50:.4f} s, 200k {t200:.4f} s"


def test_many_valid_calls_are_all_counted():
    t = _many_valid_calls(100_000)
    rc = multi_turn_reward(t, BOX)
    n = rc["num_tool_calls"]
    assert n > 400 and rc["unique_coords"] == n  # a 20 px lattice: every coordinate is kept
    assert rc["format"] == pytest.approx(1 + 0.2 * (n - 1)) and rc["accuracy"] == 0.0
    # duplicates collapse
    dup = (
        "".join(T("a") + TC(7, 7) + "\n" + OBS + "\n" for _ in range(1000))
        + T("b")
        + "<answer>x</answer>"
    )
    assert format_multi_turn(dup, "option_text") == (1.0, 1, 1000)


def test_itertools_lattice_reference():
    pts = list(itertools.product(range(0, 100, 7), repeat=2))
    assert count_unique_coords(pts, 10.0) == _unique_brute(pts, 10.0)

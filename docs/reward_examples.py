"""Print the worked reward examples of docs/rewards.md, computed by the project's own functions.

    uv run python docs/reward_examples.py

Every number in the tables of docs/rewards.md comes from this script: the responses below are
scored with `vigorl_env.rewards` (the functions the env, evaluation and training call), so the
page cannot drift from the code without this script showing it.
"""

from __future__ import annotations

from vigorl_env.metrics import grounding_precision
from vigorl_env.protocol import FORCED_PREFIX, format_tool_call, observation_text
from vigorl_env.rewards import GroundTruth, multi_turn_reward, single_turn_reward


def cell(text: str) -> str:
    """A response as one Markdown table cell: newlines shown as \\n, pipes escaped."""
    return "`" + text.replace("\n", "\\n").replace("|", "\\|") + "`"


def num(x: float) -> str:
    return f"{x:g}"


def single_turn_table() -> str:
    opt = lambda a: GroundTruth(a, "option_text")  # noqa: E731
    box = GroundTruth("(100, 200, 150, 240)", "point_in_box", (100, 200, 150, 240))
    web = lambda a: GroundTruth(a, "web_action")  # noqa: E731
    rows = [
        (
            "S1",
            opt("left"),
            "grounded",
            "<think>\nThe mug is on the left counter (212, 388). The plate is at (540, 402).\n</think>\n<answer> left </answer>",
        ),
        (
            "S2",
            opt("Left"),
            "grounded",
            "<think>The lamp (88, 40) is above the sofa.</think>\n<answer>  LEFT\n</answer>\n",
        ),
        (
            "S3",
            opt("right"),
            "grounded",
            "<think>The cup (210, 95) is right of the plate.</think><answer>B. right</answer>",
        ),
        (
            "S4",
            opt("left"),
            "grounded",
            "<think>The mug is left of the plate.</think><answer>left</answer>",
        ),
        (
            "S5",
            opt("left"),
            "grounded",
            "<think>The mug ( 12, 34 ) is near the plate.</think><answer>right</answer>",
        ),
        (
            "S6",
            opt("left"),
            "grounded",
            "Sure! <think>The mug (12, 34).</think><answer>left</answer>",
        ),
        ("S7", opt("left"), "grounded", "<think>The car (5, 5).</think> left"),
        ("S8", opt("left"), "grounded", "<think>The car (5, 5).</think><answer>   </answer>"),
        (
            "S9",
            opt("left"),
            "vanilla",
            "<think>The mug is left of the plate.</think><answer>left</answer>",
        ),
        (
            "G1",
            box,
            "grounded",
            "<think>The button (120, 220).</think>\n<answer> (150, 240) </answer>",
        ),
        (
            "G2",
            box,
            "grounded",
            "<think>The button (120, 220).</think>\n<answer>(120.5, 220)</answer>",
        ),
        (
            "G3",
            box,
            "grounded",
            "<think>The button (120, 220).</think>\n<answer>(151, 220)</answer>",
        ),
        (
            "W1",
            web("click [1234]"),
            "grounded",
            "<think>The search box (640, 88) takes text.</think><answer>type [1234] [shoes]</answer>",
        ),
        (
            "W2",
            web("click [12]"),
            "grounded",
            "<think>The play button (300, 500).</think><answer>click [12] to stop the video</answer>",
        ),
        (
            "W3",
            web("click [1234]"),
            "grounded",
            "<think>Cart (40, 90).</think><answer>click [01234]</answer>",
        ),
        (
            "W4",
            web("scroll [down]"),
            "grounded",
            "<think>More below (640, 900).</think><answer>scroll [up]</answer>",
        ),
        (
            "W5",
            web("stop [$13.49]"),
            "grounded",
            "<think>Price (640, 300).</think><answer>stop [$12.99]</answer>",
        ),
    ]
    out = [
        "| # | ground truth | variant | response | accuracy | format | overall |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, gt, variant, text in rows:
        c = single_turn_reward(text, gt, variant=variant)
        g = gt.answer if gt.kind != "point_in_box" else f"box {gt.answer}"
        out.append(
            f"| {name} | `{g}` | {variant} | {cell(text)} | {num(c['accuracy'])} | "
            f"{num(c['format'])} | {num(c['overall'])} |"
        )
    return "\n".join(out)


def m1_transcript() -> str:
    """Example M1 in full (printed as-is in docs/rewards.md)."""
    obs = observation_text(draw_dot=False)
    return "\n".join(
        [
            "<think>The bag may be on the bench (300, 200).</think>\n" + format_tool_call(300, 200),
            obs,
            "<think>Closer to the strap (305, 206).</think>\n" + format_tool_call(305, 206),
            obs,
            "<think>Or by the door (900, 640).</think>\n" + format_tool_call(900, 640),
            obs,
            "<think>The bag is red.</think>\n<answer> Red </answer>",
        ]
    )


def multi_turn_table() -> str:
    obs = observation_text(draw_dot=False)

    def turn(think: str, x: int, y: int) -> str:
        return f"<think>{think}</think>\n{format_tool_call(x, y)}"

    red = GroundTruth("red", "option_text")
    box = GroundTruth("(100, 200, 150, 240)", "point_in_box", (100, 200, 150, 240))
    rows = [
        (
            "M1",
            red,
            "three zooms, the second 7.8 px from the first, then the right answer",
            m1_transcript(),
        ),
        (
            "M2",
            red,
            "four distant zooms, the image budget is spent, forced answer (wrong)",
            "\n".join(
                [
                    turn("Top left (100, 100).", 100, 100),
                    obs,
                    turn("Top right (400, 100).", 400, 100),
                    obs,
                    turn("Bottom left (100, 400).", 100, 400),
                    obs,
                    turn("Bottom right (400, 400).", 400, 400),
                    obs,
                    FORCED_PREFIX + " blue </answer>",
                ]
            ),
        ),
        (
            "M3",
            red,
            "answer right after an observation, without a new think block",
            "\n".join([turn("The bench (100, 100).", 100, 100), obs, "<answer>red</answer>"]),
        ),
        (
            "M4",
            box,
            "point answer in the first turn, no zoom",
            "<think>The button.</think>\n<answer>(120, 220)</answer>",
        ),
        (
            "M5",
            box,
            "a tool call with a float coordinate (the env ends the episode there)",
            '<think>Region.</think>\n<tool_call>\n{"name": "search_coordinate", "arguments": '
            '{"coordinate": [100.5, 100]}}\n</tool_call>',
        ),
    ]
    out = [
        "| # | ground truth | transcript | accuracy | format | unique | calls | overall |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, gt, what, text in rows:
        c = multi_turn_reward(text, gt)
        g = gt.answer if gt.kind != "point_in_box" else f"box {gt.answer}"
        out.append(
            f"| {name} | `{g}` | {what} | {num(c['accuracy'])} | {num(c['format'])} | "
            f"{c['unique_coords']} | {c['num_tool_calls']} | {num(round(c['overall'], 10))} |"
        )
    return "\n".join(out)


def lenient_table() -> str:
    box = GroundTruth("(100, 200, 150, 240)", "point_in_box", (100, 200, 150, 240))
    cases = [
        ("L1", GroundTruth("no", "option_text"), "<think>(1, 1)</think><answer>not sure</answer>"),
        ("L2", GroundTruth("left", "option_text"), "The answer is left, clearly."),
        (
            "L3",
            GroundTruth("Left", "option_text"),
            "<think>(1, 1)</think><answer>left side</answer>",
        ),
        (
            "L4",
            GroundTruth("click [12]", "web_action"),
            "<think>(1, 1)</think><answer>click [12] to stop the video</answer>",
        ),
        (
            "L5",
            GroundTruth("click [1234]", "web_action"),
            "<think>(1, 1)</think><answer>type [1234] [shoes]</answer>",
        ),
        ("L6", box, "<think>(1, 1)</think><answer>[120, 220]</answer>"),
        ("L7", box, "<think>(1, 1)</think><answer>(120.5, 220)</answer>"),
        ("L8", box, "<think>(1, 1)</think><answer>120, 220</answer>"),
    ]
    out = [
        "| # | ground truth | response | accuracy, normalized | accuracy, lenient_upstream |",
        "|---|---|---|---|---|",
    ]
    for name, gt, text in cases:
        a = single_turn_reward(text, gt)["accuracy"]
        b = single_turn_reward(text, gt, accuracy_fn="lenient_upstream")["accuracy"]
        g = gt.answer if gt.kind != "point_in_box" else f"box {gt.answer}"
        out.append(f"| {name} | `{g}` | {cell(text)} | {num(a)} | {num(b)} |")
    return "\n".join(out)


def grounding_example() -> str:
    transcript = (
        "<think>The star may be by the rock (410, 300). Or near the tree (900, 120).</think>\n"
        + format_tool_call(410, 300)
        + "\n"
        + observation_text(False)
        + "\n<think>Yes, the star (412, 303) is blue.</think>\n<answer>blue</answer>"
    )
    objects = [("s0", (400.0, 290.0, 420.0, 310.0)), ("s1", (880.0, 100.0, 905.0, 118.0))]
    return f"{cell(transcript)}\n\n{grounding_precision(transcript, objects, ['s0'])}"


if __name__ == "__main__":
    print("## single turn\n")
    print(single_turn_table())
    print("\n## multi turn\n")
    print(multi_turn_table())
    print("\n## lenient\n")
    print(lenient_table())
    print("\n## grounding precision\n")
    print(grounding_example())
    print("\n## transcript of M1\n")
    print(m1_transcript())

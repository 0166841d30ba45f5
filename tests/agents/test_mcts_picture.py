"""The tree picture: every node's point is drawn on the frame in its value's colour."""

from __future__ import annotations

from PIL import Image

from vigorl_agents.search.picture import _colour, best_path, tree_picture


def test_points_drawn_in_value_colours_and_best_path_by_visits():
    a = {"thought_text": "<think> a (100, 100) </think>", "value": 1.0, "visit_count": 3,
         "children": []}  # fmt: skip
    b = {"thought_text": "<think> b (300, 300) </think>", "value": 0.0, "visit_count": 5,
         "children": []}  # fmt: skip
    rec = {"id": "s", "question": "<image>Q?", "tree": {"thought_text": "Q", "value": 0.4,
           "visit_count": 8, "children": [a, b]}, "n_llm_calls": 9}  # fmt: skip
    assert best_path(rec["tree"]) == [rec["tree"], b]
    frame = Image.new("RGB", (720, 360), (128, 128, 128))  # scale 1: points stay where they are
    pic = tree_picture(rec, frame)
    assert pic.width == 720 + 760 and pic.height >= 360
    assert pic.getpixel((100, 100)) == _colour(1.0) == (0, 190, 40)
    assert pic.getpixel((300, 300)) == _colour(0.0) == (220, 0, 40)

"""A picture of one searched tree: the model frame with every node's point (colour = node value,
red 0 → green 1; the best path drawn as a line), next to the tree as text (docs/mcts.md).

    python -m vigorl_agents.search.picture TREES.jsonl OUT.png [--id SAMPLE_ID] [--max-nodes 14]

The frame is rendered by the env that the search ran, reset by sample id (tree lines of our
search carry `env_id`, `split` and `env_kwargs`).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from vigorl_agents.search.tree import points_of, step_text

_PANEL_W = 760


def _colour(v: float) -> tuple[int, int, int]:
    v = min(max(v, 0.0), 1.0)
    return (round(220 * (1 - v)), round(190 * v), 40)


def _nodes(node: dict[str, Any], depth: int = 0):
    yield node, depth
    for c in node.get("children") or []:
        yield from _nodes(c, depth + 1)


def best_path(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """Root → leaf, each time the most visited child (ties: higher value, then lower index)."""
    path = [tree]
    node = tree
    while node.get("children"):
        node = max(node["children"], key=lambda c: (c.get("visit_count", 0), c.get("value", 0.0)))
        path.append(node)
    return path


def tree_picture(record: dict[str, Any], frame: Image.Image, max_nodes: int = 14) -> Image.Image:
    """The picture of one tree line over its model frame."""
    tree = record["tree"]
    img = frame.convert("RGB").copy()
    scale = 720 / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    r = 6
    for node, _ in _nodes(tree):
        if node is tree or node.get("is_terminal"):
            continue
        for x, y in points_of(node.get("thought_text", ""))[:1]:
            cx, cy = x * scale, y * scale
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_colour(node.get("value", 0.0)))
    path = best_path(tree)
    pts = [
        (p[0] * scale, p[1] * scale)
        for n in path[1:]
        for p in points_of(n.get("thought_text", ""))[:1]
    ]
    if len(pts) > 1:
        draw.line(pts, fill=(30, 90, 255), width=3)
    for i, (cx, cy) in enumerate(pts, 1):
        draw.ellipse(
            (cx - r - 2, cy - r - 2, cx + r + 2, cy + r + 2), outline=(30, 90, 255), width=3
        )
        draw.text((cx + r + 3, cy - r - 3), str(i), fill=(255, 255, 255), font=font)
    # the text panel
    lines = [
        f"{record.get('id')}  ({record.get('env_id', '')})",
        *textwrap.wrap(record.get("question", "").replace("<image>", "").replace("\n", " | "), 100),
        f"true answer: {record.get('true_answer')}   root value {tree.get('value', 0):.2f}, "
        f"visits {tree.get('visit_count', 0)}, teacher calls {record.get('n_llm_calls')}",
        "",
    ]
    shown = 0
    for node, depth in _nodes(tree):
        if node is tree:
            continue
        if shown >= max_nodes:
            lines.append("  ...")
            break
        mark = "*" if any(node is p for p in path) else " "
        text = step_text(node.get("thought_text", "")).replace("\n", " ")
        head = f"{mark}{'  ' * (depth - 1)}d{depth} v={node.get('value', 0):.2f} n={node.get('visit_count', 0)}: "
        wrapped = textwrap.wrap(head + text, 118)
        lines += wrapped[:2]
        shown += 1
    panel_h = max(img.height, 14 * len(lines) + 20)
    out = Image.new("RGB", (img.width + _PANEL_W, panel_h), (255, 255, 255))
    out.paste(img, (0, 0))
    d = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        d.text((img.width + 10, 10 + 14 * i), line, fill=(0, 0, 0), font=font)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import json

    from vigorl_agents.search.run import RunConfig, make_env, read_trees

    p = argparse.ArgumentParser(prog="python -m vigorl_agents.search.picture")
    p.add_argument("trees")
    p.add_argument("out")
    p.add_argument("--id", help="sample id (default: the first tree)")
    p.add_argument("--max-nodes", type=int, default=14)
    args = p.parse_args(argv)
    trees, _ = read_trees(args.trees)
    rec = trees[args.id] if args.id else next(iter(trees.values()))
    cfg = RunConfig(split=rec.get("split"), env_kwargs=dict(rec.get("env_kwargs") or {}))
    env = make_env(rec["env_id"], cfg)
    env.reset(options={"sample_id": rec["id"]})
    tree_picture(rec, env.unwrapped.frame_image, args.max_nodes).save(args.out)
    print(json.dumps({"id": rec["id"], "out": args.out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

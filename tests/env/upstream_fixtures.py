"""A miniature DATA_ROOT in the real upstream formats (docs/data.md), written by the tests themselves.

`write_fixture_root(root)` lays out every (benchmark, split) file of the layout table (docs/data.md#data_root-layout) at its real path
with 3–5 records (VisualWebArena's MCTS file: >= 20 ids, so both hash splits are non-empty), plus
small real images of varied sizes and modes (RGB PNG, RGBA PNG, plain JPEG, a portrait phone screen)
referenced relative to the root. Point-in-box ground truths are boxes drawn inside their image.
Schema R problems carry upstream's literal two-character `\\n` (and one `\\"`); one schema R image
is inline `{"bytes": base64}`, one is `{"path": ...}`; RoboSpatial is in the layout that
`python -m vigorl_env.data.prepare robospatial` writes. The VisualSearchSA MCTS file sits at the
second candidate path (`visual_search/…`), exercising the first-existing rule.

`EXPECTED_COUNTS[(name, split)]` is the number of samples each split must load;
`IMAGE_SIZES[rel_path]` the (width, height) of each image written.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vigorl_env.data.splits import hash_split

# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------

#: rel path -> (size, mode, boxes drawn as filled rectangles (x1, y1, x2, y2))
_IMAGES: dict[str, tuple[tuple[int, int], str, list[tuple[int, int, int, int]]]] = {
    "spatial_reasoning/images/sat2/kitchen_0.png": (
        (640, 480),
        "RGB",
        [(60, 200, 180, 330), (400, 180, 560, 360)],
    ),
    "spatial_reasoning/images/sat2/living_1.jpg": (
        (512, 384),
        "RGB",
        [(30, 150, 200, 300), (300, 100, 480, 280)],
    ),
    "spatial_reasoning/blink/images/val_Spatial_Relation_1.jpg": (
        (900, 400),
        "RGB",
        [(100, 100, 300, 300), (550, 80, 800, 320)],
    ),
    "spatial_reasoning/robospatial/images/robospatial_configuration_0.png": (
        (400, 300),
        "RGB",
        [(40, 120, 160, 260)],
    ),
    "visual_search/vstar/direct_attributes/sa_4690.jpg": (
        (900, 700),
        "RGB",
        [(700, 80, 740, 120), (100, 600, 130, 640)],
    ),
    "visual_search/sa_images/sa_10052.png": ((800, 600), "RGBA", [(600, 40, 640, 90)]),
    "web_grounding/osatlas/web_0.png": (
        (900, 560),
        "RGB",
        [(780, 20, 860, 52), (40, 120, 300, 150)],
    ),
    "web_grounding/ScreenSpot-V2/images/mobile_1.png": (
        (360, 640),
        "RGB",
        [(20, 580, 100, 620), (280, 20, 340, 60)],
    ),
    "web_grounding/ScreenSpot-Pro/images/pro_1.png": (
        (880, 495),
        "RGB",
        [(10, 10, 42, 42), (600, 300, 700, 330)],
    ),
    "web_action/images/page_0.png": ((480, 540), "RGB", [(20, 20, 300, 60), (20, 100, 200, 300)]),
    "web_action/images/page_1.png": ((300, 200), "RGB", [(10, 150, 90, 190)]),
}
IMAGE_SIZES: dict[str, tuple[int, int]] = {k: v[0] for k, v in _IMAGES.items()}

_PALETTE = [(200, 40, 40), (40, 90, 200), (40, 160, 70), (230, 180, 30), (140, 60, 170)]


def _render(
    size: tuple[int, int], mode: str, boxes: list[tuple[int, int, int, int]], seed: int
) -> Image.Image:
    w, h = size
    bg = (235 - 7 * seed % 40, 230, 220 + seed % 30)
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    for y in range(0, h, 40):  # some structure so JPEG/PNG differ from a flat fill
        d.line([(0, y), (w, y)], fill=(bg[0] - 30, bg[1] - 30, bg[2] - 30))
    for i, b in enumerate(boxes):
        d.rectangle(b, fill=_PALETTE[(i + seed) % len(_PALETTE)], outline=(0, 0, 0))
    if mode == "RGBA":
        img = img.convert("RGBA")
        alpha = Image.new("L", size, 255)
        ImageDraw.Draw(alpha).rectangle((0, 0, w // 4, h // 4), fill=0)  # a transparent corner
        img.putalpha(alpha)
    return img


def _write_images(root: Path) -> None:
    for seed, (rel, (size, mode, boxes)) in enumerate(_IMAGES.items()):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        img = _render(size, mode, boxes, seed)
        if rel.endswith(".jpg"):
            img.save(p, format="JPEG", quality=85)  # no EXIF block
        else:
            img.save(p, format="PNG")


def _png_b64(size: tuple[int, int]) -> str:
    buf = io.BytesIO()
    _render(size, "RGB", [(10, 10, 60, 50)], 7).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _box(rel: str, i: int) -> str:
    x1, y1, x2, y2 = _IMAGES[rel][2][i]
    return f"({x1}, {y1}, {x2}, {y2})"


# --------------------------------------------------------------------------------------------
# record builders (the upstream schemas)
# --------------------------------------------------------------------------------------------


def _e(id_: Any, image: str, question: str, gt: str, **extra: Any) -> dict[str, Any]:
    """Schema E (docs/data.md#record-schemas)."""
    return {
        "id": id_,
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": gt}],
        **extra,
    }


def _r(problem: str, image: Any, answer: str, id_: Any = None) -> dict[str, Any]:
    """Schema R (docs/data.md#record-schemas); `problem` should use literal two-char `\\n` like upstream's RL files."""
    rec: dict[str, Any] = {"problem": problem, "images": [image], "answer": answer}
    if id_ is not None:
        rec["id"] = id_
    return rec


def _lit(*lines: str) -> str:
    """Join with the literal two characters backslash-n (upstream RL files)."""
    return "\\n".join(lines)


def _write_jsonl(root: Path, rel: str, records: list[dict[str, Any]]) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


K0 = "spatial_reasoning/images/sat2/kitchen_0.png"
L1 = "spatial_reasoning/images/sat2/living_1.jpg"
BL = "spatial_reasoning/blink/images/val_Spatial_Relation_1.jpg"
RS = "spatial_reasoning/robospatial/images/robospatial_configuration_0.png"
VS = "visual_search/vstar/direct_attributes/sa_4690.jpg"
SA = "visual_search/sa_images/sa_10052.png"
OS = "web_grounding/osatlas/web_0.png"
V2 = "web_grounding/ScreenSpot-V2/images/mobile_1.png"
PR = "web_grounding/ScreenSpot-Pro/images/pro_1.png"
P0 = "web_action/images/page_0.png"
P1 = "web_action/images/page_1.png"


def _vwa_ids() -> list[str]:
    """>= 24 ids with at least two in val (`hash_split(id, 0.05)`), and at least two that the
    mirrored rule (`val` = not `hash_split(id, 0.95)`) would have put in val but are train."""
    ids: list[str] = []
    k = 0
    while (
        len(ids) < 24
        or sum(hash_split(i, 0.05) for i in ids) < 2
        or sum(not hash_split(i, 0.95) for i in ids) < 2
    ):
        ids.append(f"shopping_{k}")
        k += 1
    return ids


VWA_IDS: list[str] = _vwa_ids()
_VWA_ACTIONS = [
    "click [1234]",
    "type [12] [blue running shoes]",
    "scroll [down]",
    "go_back",
    "stop [$24.99]",
    "click [87]",
]


def _records() -> dict[str, list[dict[str, Any]]]:
    sat_q = "<image>\nIs the mug to the left or to the right of the kettle?\nA. left\nB. right"
    vwa = [
        _e(
            i,
            P0 if n % 2 == 0 else P1,
            "<image>\nOBJECTIVE: Find the cheapest pair of blue running shoes and tell me its price.\n"
            "PREVIOUS ACTIONS:\n"
            + ("None" if n % 3 == 0 else "type [search] [blue running shoes]"),
            _VWA_ACTIONS[n % len(_VWA_ACTIONS)],
        )
        for n, i in enumerate(VWA_IDS)
    ]
    return {
        # --- spatial_reasoning ---
        "spatial_reasoning/vigorl_sat2_MCTS.jsonl": [
            _e(f"sat2_mcts_{n}", K0 if n % 2 == 0 else L1, sat_q, "left" if n % 2 == 0 else "right")
            for n in range(4)
        ],
        "spatial_reasoning/vigorl_sat2_train_RL.jsonl": [  # no ids: default "{stem}:{line}"
            _r(
                _lit(
                    "<image>Which object is closer to the camera?", "A. the chair", "B. the table"
                ),
                K0,
                "the chair",
            ),
            _r(
                _lit("<image>If I turn left, will the sofa be in front of me?", "A. yes", "B. no"),
                L1,
                "no",
            ),
            _r(
                _lit('<image>Is the \\"red\\" box above the blue one?', "A. yes", "B. no"),
                K0,
                "yes",
            ),
            _r(_lit("<image>How many chairs are there?", "A. 1", "B. 2", "C. 3", "D. 4"), L1, "2"),
        ],
        "spatial_reasoning/vigorl_sat2_val_RL.jsonl": [
            _r(
                _lit(
                    "<image>Which object is farther from the camera?", "A. the lamp", "B. the plant"
                ),
                {"bytes": _png_b64((320, 240))},
                "the lamp",
                "sat2_val_0",
            ),
            _r(
                _lit("<image>Is the door open?", "A. yes", "B. no"),
                {"path": L1},
                "yes",
                "sat2_val_1",
            ),
            _r(_lit("<image>Is the cup on the table?", "A. yes", "B. no"), K0, "no", "sat2_val_2"),
        ],
        "spatial_reasoning/sat2_test/sat2_test.jsonl": [
            _e(
                n,
                K0 if n % 2 else L1,
                f"<image>\nConsidering the relative positions, where is object {n} located?\nA. left\nB. right",
                "right" if n % 2 else "left",
            )
            for n in range(4)
        ],
        "spatial_reasoning/blink/blink_validation.jsonl": [
            _e(
                f"val_Spatial_Relation_{n}",
                BL,
                "<image>\nIs the car beneath the cat?\nSelect from the following choices.\n(A) yes\n(B) no",
                "no" if n % 2 else "yes",
            )
            for n in range(1, 5)
        ],
        "spatial_reasoning/robospatial/robospatial_test.jsonl": [
            _e(
                f"robospatial_configuration_{n}",
                RS,
                "<image>Is the mug in front of the laptop?\nA. yes\nB. no",
                "yes" if n % 2 else "no",
                category="configuration",
            )
            for n in range(3)
        ],
        # --- visual_search ---
        "visual_search/vstar/vstarbench_test.jsonl": [
            _e(
                f"direct_attributes/sa_4690_{n}",
                VS,
                "<image>\nWhat is the color of the umbrella?\nA. red\nB. blue\nC. green\nD. black",
                ["red", "blue", "green", "black"][n],
            )
            for n in range(4)
        ],
        "visual_search/vstar/vstarbench_test_RL.jsonl": [
            _r(
                _lit("<image>What is the material of the glove?", "A. rubber", "B. cotton"),
                VS,
                "rubber",
                f"vstar_rl_{n}",
            )
            for n in range(3)
        ],
        "visual_search/vigorl_SA_MCTS.jsonl": [
            _e(
                f"sa_{10052 + n}",
                SA,
                "<image>\nIs the kite on the left or right side of the tree?\nA. left\nB. right",
                "right",
            )
            for n in range(3)
        ],
        "visual_search/vigorl_SA_RL.jsonl": [
            _r(
                _lit(
                    "<image>What is the color of the kite?",
                    "A. red",
                    "B. yellow",
                    "C. blue",
                    "D. white",
                ),
                SA,
                "yellow",
                f"sa_rl_{n}",
            )
            for n in range(4)
        ],
        # --- web_grounding ---
        "web_grounding/vigorl_osatlas_MCTS.jsonl": [
            _e(
                f"osatlas_{n}",
                OS,
                "<image>\nsign in button" if n % 2 == 0 else "<image>\nsearch field",
                _box(OS, n % 2),
            )
            for n in range(4)
        ],
        "web_grounding/vigorl_osatlas_train_RL.jsonl": [
            _r(_lit("<image>", "sign in button"), OS, _box(OS, 0), f"osatlas_train_{n}")
            for n in range(4)
        ],
        "web_grounding/vigorl_osatlas_val_RL.jsonl": [
            _r(_lit("<image>", "search field"), OS, _box(OS, 1), f"osatlas_val_{n}")
            for n in range(3)
        ],
        "web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl": [
            _e(
                f"mobile_{n}",
                V2,
                "<image>\nopen the settings" if n % 2 else "<image>\ngo back",
                _box(V2, n % 2),
            )
            for n in range(4)
        ],
        "web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl": [  # no <image> marker: prepended
            _e(
                f"pro_{n}",
                PR,
                "close the dialog" if n % 2 == 0 else "the Export button",
                _box(PR, n % 2),
            )
            for n in range(4)
        ],
        # --- web_action ---
        "web_action/vigorl_web_action_MCTS.jsonl": vwa,
    }


def _counts() -> dict[tuple[str, str], int]:
    recs = _records()

    def n(rel: str) -> int:
        return len(recs[rel])

    vwa_val = sum(hash_split(i, 0.05) for i in VWA_IDS)
    return {
        ("SAT2", "mcts"): n("spatial_reasoning/vigorl_sat2_MCTS.jsonl"),
        ("SAT2", "train"): n("spatial_reasoning/vigorl_sat2_train_RL.jsonl"),
        ("SAT2", "val"): n("spatial_reasoning/vigorl_sat2_val_RL.jsonl"),
        ("SAT2", "test"): n("spatial_reasoning/sat2_test/sat2_test.jsonl"),
        ("BLINK", "val"): n("spatial_reasoning/blink/blink_validation.jsonl"),
        ("RoboSpatial", "test"): n("spatial_reasoning/robospatial/robospatial_test.jsonl"),
        ("VStar", "test"): n("visual_search/vstar/vstarbench_test.jsonl"),
        ("VStar", "test_rl"): n("visual_search/vstar/vstarbench_test_RL.jsonl"),
        ("VisualSearchSA", "mcts"): n("visual_search/vigorl_SA_MCTS.jsonl"),
        ("VisualSearchSA", "train"): n("visual_search/vigorl_SA_RL.jsonl"),
        ("OSAtlas", "mcts"): n("web_grounding/vigorl_osatlas_MCTS.jsonl"),
        ("OSAtlas", "train"): n("web_grounding/vigorl_osatlas_train_RL.jsonl"),
        ("OSAtlas", "val"): n("web_grounding/vigorl_osatlas_val_RL.jsonl"),
        ("ScreenSpotV2", "test"): n("web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl"),
        ("ScreenSpotPro", "test"): n("web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl"),
        ("VisualWebArena", "mcts"): len(VWA_IDS),
        ("VisualWebArena", "train"): len(VWA_IDS) - vwa_val,
        ("VisualWebArena", "val"): vwa_val,
    }


EXPECTED_COUNTS: dict[tuple[str, str], int] = _counts()


def write_fixture_root(root: Path) -> Path:
    """Write the miniature DATA_ROOT under `root` (created if needed) and return `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _write_images(root)
    for rel, records in _records().items():
        _write_jsonl(root, rel, records)
    return root

"""The nano pipeline's base model (docs/nano.md#the-base-model): grounded captions of procedural
scenes that no other stage uses, so that every condition starts from a student that can already
name and point at objects — the miniature of the paper's pretrained Qwen2.5-VL, which points
before any task training.

A caption lists every object of a SynthSpatial scene from left to right with its box centre in
the model frame, in the words and point format of the chains (`the red cube at (41, 57).`). The
scenes are train-split indices after the ones the search uses, rendered through the env at the
same make kwargs (frame budget, nano scene) as every other stage; the test split is never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PROMPT_CAPTION = "Name every object in the image from left to right with its (x, y) point."
QUESTION_CAPTION = "List the objects."
PROMPT_POINT = "Name the object you are asked about with its (x, y) point."


def point_query(name: str) -> str:
    """The user text of a referring query: `Point at the red cube.`"""
    return f"Point at {name}."


Box = tuple[float, float, float, float]


def ordered(objects: list[tuple[str, Box]]) -> list[tuple[int, int, str, Box]]:
    """(x, y, name, box) of (name, model-frame box) pairs: the rounded box centre, ordered by
    x, then y: the order a caption names them in."""
    centred = [
        (round((b[0] + b[2]) / 2), round((b[1] + b[3]) / 2), name, tuple(b)) for name, b in objects
    ]
    return sorted(centred, key=lambda c: (c[0], c[1], c[2]))


def caption(objects: list[tuple[str, Box]]) -> str:
    """`the red cube at (41, 57). the blue cone at (88, 60).`: every object, left to right, with
    its box centre."""
    return " ".join(f"{name} at ({x}, {y})." for x, y, name, _ in ordered(objects))


def score_points(texts: list[str], truths: list[list[tuple[int, Box]]]) -> dict[str, float]:
    """How well written points hit: the k-th `(x, y)` of each text against the k-th (centre x,
    box) of its truth. `on_target`: share of truth objects whose point lies in their box (a
    missing point is a miss); `x_error`: mean |x| error of the points written;
    `x_error_of_the_mean`: the same for always writing the mean x (what a model that does not
    look scores)."""
    import re

    hits, errors, xs = 0, [], []
    for text, truth in zip(texts, truths, strict=True):
        xs += [x for x, _ in truth]
        written = re.findall(r"\((\d+), (\d+)\)", text)
        for (x, b), (px, py) in zip(truth, written, strict=False):
            px, py = int(px), int(py)
            errors.append(abs(px - x))
            hits += b[0] <= px <= b[2] and b[1] <= py <= b[3]
    mean_x = sum(xs) / max(1, len(xs))
    return {
        "on_target": hits / max(1, len(xs)),
        "x_error": sum(errors) / max(1, len(errors)),
        "x_error_of_the_mean": sum(abs(x - mean_x) for x in xs) / max(1, len(xs)),
        "objects": len(xs),
    }


def score_captions(texts: list[str], objects: list[list[tuple[str, Box]]]) -> dict[str, float]:
    """`score_points` of captions: each scene's objects left to right, the order a caption names
    them in."""
    return score_points(texts, [[(x, b) for x, _, _, b in ordered(objs)] for objs in objects])


def caption_texts(model_dir: str, records: list[dict[str, Any]], device: str) -> list[str]:
    """Greedy captions of the records' frames by the model at `model_dir` (transformers)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(model_dir)
    proc.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir).to(device).eval()
    messages = [
        {"role": "system", "content": PROMPT_CAPTION},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": QUESTION_CAPTION}],
        },
    ]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    out: list[str] = []
    for i in range(0, len(records), 64):
        chunk = records[i : i + 64]
        images = [Image.open(r["images"][0]).convert("RGB") for r in chunk]
        enc = proc(text=[prompt] * len(chunk), images=images, return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc.to(device), max_new_tokens=96, do_sample=False)
        out += proc.tokenizer.batch_decode(
            ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
    return out


def caption_shard(
    env_id: str,
    env_kwargs: dict[str, Any],
    indices: list[int],
    out: Path,
    referring: float = 0.0,
) -> list[dict[str, Any]]:
    """Caption records (the SFT file format, docs/sft.md#data-format) of the train-split samples
    at `indices`, frames written as PNG under `out/images/`. Runs in a worker process.

    With `referring` > 0, that share of the scenes (drawn per index, so the same for any sharding)
    gets a referring query instead: `Point at the red cube.` → `the red cube at (41, 57).`, one
    object whose colour and shape no other object of the scene shares (as the questions name
    them); a scene without such an object keeps its caption."""
    import random

    import gymnasium as gym

    import vigorl_env  # noqa: F401
    from vigorl_env.env import load_dataset
    from vigorl_env.geometry import Frame

    env = gym.make(env_id, split="train", **env_kwargs)
    u = env.unwrapped
    dataset = load_dataset(u.config)
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in indices:
        _, info = env.reset(options={"index": i})
        sample = dataset[i]
        fr = Frame(tuple(info["frame"]["original_size"]), tuple(info["frame"]["model_size"]))
        objects = [
            (f"the {o.attributes['color']} {o.attributes['shape']}", fr.box_to_model(o.box))
            for o in sample.objects or ()
        ]
        if not objects:
            raise ValueError(f"{sample.sample_id}: no objects to caption")
        rel = f"images/{sample.sample_id}.png"
        u.frame_image.save(out / rel, format="PNG")
        rng = random.Random(f"referring:{i}")
        names = [name for name, _ in objects]
        unique = [(n, b) for n, b in objects if names.count(n) == 1]
        system, user, target = PROMPT_CAPTION, QUESTION_CAPTION, caption(objects)
        if unique and rng.random() < referring:
            name, box = unique[rng.randrange(len(unique))]
            system, user, target = PROMPT_POINT, point_query(name), caption([(name, box)])
        records.append(
            {
                "id": f"{sample.sample_id}:caption",
                "sample_id": sample.sample_id,
                "env_id": env_id,
                "split": "train",
                "kind": "direct",  # the SFT format's kind of a plain single-turn target
                "frame": info["frame"],
                "objects": [[name, list(box)] for name, box in objects],
                "images": [str((out / rel).resolve())],
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"<image>{user}"},
                    {"role": "assistant", "content": target},
                ],
            }
        )
    env.close()
    return records

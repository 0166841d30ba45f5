"""Learnability probes for the nano student (docs/nano.md#probes): can a Qwen2-VL with random
weights learn a visual fact from pixels in a given number of steps? A plain training loop over
the same student `experiments.nano.build_student` makes, outside the pipeline, so that one fact
is measured at a time:

    # the colour of a lone square (content): starts to be learned after ~700-800 steps of 16
    uv run python -m experiments.nano_probe --task colour --steps 1000
    # its side of the frame (position): not learned in 3,100 steps of 16
    uv run python -m experiments.nano_probe --task side --steps 3100
    # (two probes side by side on 2 cores: prefix OMP_NUM_THREADS=1, or each runs ~5x slower)
    # its centre as "(x, y)" (what a pointing model is pretrained on)
    uv run python -m experiments.nano_probe --task locate --steps 3000
    # the base model's objective on nano SynthSpatial scenes (docs/nano.md#the-base-model): every
    # object left to right with its point. The cpu-long student, 3,250 steps of 16 (~17 min on one
    # core): x off by 3.0 px (24.4 for the mean x), 79 % of the points inside their object
    L="--student.hidden 128 --student.layers 6 --student.heads 8 --student.kv-heads 2
       --student.intermediate 384 --student.vision-depth 2 --student.vision-dim 128
       --student.init-std 0.06"
    uv run python -m experiments.nano_probe --task caption --steps 3250 --n-train 3000 \
        --n-test 300 $L --save base.pt
    # ... then the chain or answer-only task from that base (the same student flags)
    uv run python -m experiments.nano_probe --task spatial-chain --load base.pt $L
    # nano SynthSpatial, answer only vs "the red cube at (x, y). …" chains, the gpu student
    G="--device cuda --batch 64 --steps 800 --n-train 12000 --tokens 64 --student.hidden 256
       --student.layers 6 --student.heads 8 --student.intermediate 768
       --student.vision-depth 4 --student.vision-dim 128"
    python -m experiments.nano_probe --task spatial-direct $G
    python -m experiments.nano_probe --task spatial-chain $G

Prints the training loss every 100 steps and, at the end, greedy held-out accuracy (and for the
chains the mean |x| error of the written points against always writing the mean x), as one JSON
line starting with RESULT.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import tyro

from experiments import nano, nano_pretrain

SQUARE_FRAME = (112, 84)
CORPUS_SCENES = 300
"""SynthSpatial scenes (both views: caption, question + chain) the shared tokenizer is built on."""


@dataclass(frozen=True)
class ProbeArgs:
    task: Literal["colour", "side", "locate", "caption", "spatial-direct", "spatial-chain"] = (
        "colour"
    )
    steps: int = 1000
    batch: int = 16
    lr: float = 1e-3
    n_train: int = 3000
    n_test: int = 200
    tokens: int = 16
    """Frame budget in merged visual tokens (SynthSpatial tasks; the squares use 112 × 84)."""
    student: nano.Student = field(default_factory=nano.Student)
    device: str = "cpu"
    seed: int = 0
    save: Path | None = None
    """Write the trained weights here (a state dict) for a later probe's `--load`."""
    load: Path | None = None
    """Start from these weights instead of random ones: the `--save` of a SynthSpatial probe
    with the same student flags (every SynthSpatial task builds the same tokenizer), e.g. the
    caption probe as a base model for `spatial-chain` / `spatial-direct`."""


def _square(rng: random.Random, task: str):
    from PIL import Image, ImageDraw

    from vigorl_env.data.synth.shapes import COLORS

    img = Image.new("RGB", SQUARE_FRAME, (150, 146, 138))
    colour = rng.choice(list(COLORS))
    x, y = rng.randint(4, SQUARE_FRAME[0] - 16), rng.randint(4, SQUARE_FRAME[1] - 16)
    ImageDraw.Draw(img).rectangle((x, y, x + 11, y + 11), fill=COLORS[colour])
    if task == "colour":
        return img, "What colour is the square?", colour, None, []
    if task == "locate":  # the answer is its centre: the pretraining objective of a pointing model
        cx, cy = x + 6, y + 6
        box = (x, y, x + 11, y + 11)
        return img, "Where is the square?", f"({cx}, {cy})", None, [("square", cx, cy, box)]
    side = "left" if x + 6 < SQUARE_FRAME[0] / 2 else "right"
    return img, "Is the square on the left or right?", side, None, []


def _centre(obj: tuple[str, nano_pretrain.Box]) -> tuple[int, int, str, nano_pretrain.Box]:
    """(x, y, name, box) of one (name, box): its rounded box centre, as a caption writes it."""
    return nano_pretrain.ordered([obj])[0]


def _spatial(split: str, n: int, tokens: int, scene: dict, caption: bool = False) -> list:
    """(frame, question, answer, chain, [(name, x, y, box)]) of nano SynthSpatial samples; with
    `caption`, the base model's target instead (`nano_pretrain.caption`: every object, left to
    right, with its point) and all objects as the named ones."""
    from vigorl_env.data.synth.spatial import SynthSpatial
    from vigorl_env.geometry import model_frame

    ds, out = SynthSpatial(split, scene=scene), []
    for i in range(n):
        s = ds[i]
        img, frame = model_frame(s.image(), min_pixels=nano.MIN_PIXELS, max_pixels=tokens * 784)
        objects = {
            o.id: (
                f"the {o.attributes['color']} {o.attributes['shape']}",
                frame.box_to_model(o.box),
            )
            for o in s.objects
        }
        chosen = list(objects.values()) if caption else [objects[t] for t in s.target_ids]
        # (x, y, name, box): a caption's objects left to right, a chain's targets in its order
        if caption:
            named = [(name, x, y, box) for x, y, name, box in nano_pretrain.ordered(chosen)]
            text = nano_pretrain.caption(chosen)
            out.append((img, nano_pretrain.QUESTION_CAPTION, text, None, named))
            continue
        named = [(name, x, y, box) for x, y, name, box in map(_centre, chosen)]
        chain = " ".join(f"{name} at ({x}, {y})." for name, x, y, _ in named)
        out.append((img, s.question.replace("<image>", ""), s.answer, chain, named))
    return out


def run(a: ProbeArgs) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(a.seed)
    if a.task in ("colour", "side", "locate"):
        rng_train, rng_test = random.Random(a.seed), random.Random(a.seed + 1)
        train = [_square(rng_train, a.task) for _ in range(a.n_train)]
        test = [_square(rng_test, a.task) for _ in range(a.n_test)]
        max_pixels = SQUARE_FRAME[0] * SQUARE_FRAME[1]
    else:
        scene = nano.Tasks().scene(nano.SPATIAL)
        caption = a.task == "caption"
        train = _spatial("train", a.n_train, a.tokens, scene, caption)
        test = _spatial("test", a.n_test, a.tokens, scene, caption)
        max_pixels = a.tokens * 784
    chain = a.task == "spatial-chain"
    points = chain or a.task in ("locate", "caption")  # points written: score their x

    def target(e) -> str:
        if a.task == "caption":  # the base model's plain caption (no tags)
            return e[2]
        think = f"<think> {e[3]} </think> " if chain else ""
        return f"{think}<answer> {e[2]} </answer>"

    if a.task in ("colour", "side", "locate"):
        corpus = [f"{e[1]} {target(e)}" for e in train[:2000]]
    else:  # one tokenizer for every SynthSpatial task, so that weights carry over (--load)
        n = CORPUS_SCENES
        corpus = [f"{e[1]} {e[2]}" for e in _spatial("train", n, a.tokens, scene, True)]
        for e in _spatial("train", n, a.tokens, scene):
            corpus += [f"{e[1]} <answer> {e[2]} </answer>", f"<think> {e[3]} </think>"]
    corpus = ["Answer.", *corpus, *(str(i) for i in range(1000))]
    folder = Path(tempfile.mkdtemp(prefix="nano_probe_"))
    nano.build_student(folder, a.student, max(max_pixels, nano.MIN_PIXELS), corpus)
    model = AutoModelForImageTextToText.from_pretrained(folder).to(a.device)
    if a.load is not None:
        model.load_state_dict(torch.load(a.load, map_location=a.device, weights_only=True))
    proc = AutoProcessor.from_pretrained(folder)

    def messages(e) -> list:
        return [
            {"role": "system", "content": "Answer."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": e[1]}]},
        ]

    def prompt(e) -> str:
        return proc.apply_chat_template(messages(e), add_generation_prompt=True, tokenize=False)

    def batch(examples) -> dict:
        prompts = [prompt(e) for e in examples]
        full = [p + target(e) + "<|im_end|>" for p, e in zip(prompts, examples, strict=True)]
        imgs = [e[0] for e in examples]
        enc = proc(text=full, images=imgs, return_tensors="pt", padding=True)
        labels = enc["input_ids"].clone()
        for i, p in enumerate(prompts):  # supervise the answer (and chain) only
            labels[i, : len(proc(text=[p], images=[imgs[i]])["input_ids"][0])] = -100
        labels[enc["attention_mask"] == 0] = -100
        enc["labels"] = labels
        return {k: v.to(a.device) for k, v in enc.items()}

    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    rng, curve, t0 = random.Random(a.seed), [], time.monotonic()
    model.train()
    for step in range(1, a.steps + 1):
        loss = model(**batch(rng.sample(train, a.batch))).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:  # linear warm-up over 30 steps, then constant
            g["lr"] = a.lr * min(1.0, step / 30)
        opt.step()
        opt.zero_grad()
        if step % 100 == 0 or step in (1, a.steps):
            curve.append([step, round(loss.item(), 4)])
            print(f"step {step} loss {loss.item():.4f} {time.monotonic() - t0:.0f} s", flush=True)

    if a.save is not None:
        torch.save(model.state_dict(), a.save)
    model.eval()
    proc.tokenizer.padding_side = "left"
    correct, written = 0, []
    for i in range(0, len(test), 50):
        chunk = test[i : i + 50]
        enc = proc(
            text=[prompt(e) for e in chunk],
            images=[e[0] for e in chunk],
            return_tensors="pt",
            padding=True,
        ).to(a.device)
        with torch.no_grad():
            n_new = 72 if chain or a.task == "caption" else 16
            out = model.generate(**enc, max_new_tokens=n_new, do_sample=False)
        texts = proc.tokenizer.batch_decode(
            out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
        )
        for e, text in zip(chunk, texts, strict=True):
            m = re.search(r"<answer>\s*(.+?)\s*</answer>", text)
            correct += bool(m and m.group(1) == e[2]) or text.strip() == e[2]
        written += texts
    result = {"task": a.task, "steps": a.steps, "batch": a.batch, "lr": a.lr, "curve": curve}
    result["accuracy"] = correct / len(test)
    if points:  # the k-th written point against the k-th named object
        truths = [[(o[1], o[3]) for o in e[4]] for e in test]
        score = nano_pretrain.score_points(written, truths)
        result |= {k: score[k] for k in ("x_error", "x_error_of_the_mean", "on_target")}
    print("RESULT " + json.dumps(result), flush=True)
    return result


def main() -> None:
    run(tyro.cli(ProbeArgs))


if __name__ == "__main__":
    main()

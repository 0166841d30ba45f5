"""SFT data pipeline (docs/sft.md#data): loaders, masks by construction, template equality, preflight, collate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.train.data import (  # noqa: E402
    IGNORE_INDEX,
    DropReason,
    ImageSizeError,
    PreflightError,
    SFTDataset,
    SFTRecord,
    TokenizedExample,
    collate,
    load_sft_file,
    load_sharegpt_json,
    load_vigorl_jsonl,
    preflight,
    tokenize_record,
)
from vigorl_env import DataFormatError  # noqa: E402
from vigorl_env.protocol import (  # noqa: E402
    FORCED_PREFIX,
    OBSERVATION_TEXT_DOT,
    OBSERVATION_TEXT_NO_DOT,
    format_tool_call,
)

SYSTEM = "You answer with grounded reasoning."


@pytest.fixture(scope="module")
def processor(tiny_qwen25_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_qwen25_dir)


@pytest.fixture(scope="module")
def processor_q2(tiny_qwen2_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_qwen2_dir)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("img")
    out = []
    for k, (w, h) in enumerate([(112, 84), (56, 56), (84, 112)]):
        img = Image.new("RGB", (w, h), (40 * k, 100, 200 - 40 * k))
        img.paste((255, 0, 0), (0, 0, w // 2, h // 2))
        p = d / f"im{k}.png"
        img.save(p)
        out.append(p)
    return out


def single_turn(images: list[Path]) -> SFTRecord:
    return SFTRecord(
        "single",
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "<image>Where is the red square?"},
            {
                "role": "assistant",
                "content": "<think>\nThe red square is at (20, 30).\n</think>\n<answer> (20, 30) </answer>",
            },
        ],
        [images[0]],
    )


def multi_turn(images: list[Path]) -> SFTRecord:
    return SFTRecord(
        "multi",
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "<image>\nWhat is the color of the star?"},
            {
                "role": "assistant",
                "content": "<think> Look left (10, 20). </think>\n" + format_tool_call(10, 20),
            },
            {"role": "user", "content": OBSERVATION_TEXT_NO_DOT},
            {
                "role": "assistant",
                "content": "<think> Now right (50, 60). </think>\n" + format_tool_call(50, 60),
            },
            {"role": "user", "content": OBSERVATION_TEXT_DOT},
            {"role": "assistant", "content": FORCED_PREFIX + " red </answer>"},
        ],
        list(images),
        kind="multi_turn",
    )


def expected_supervised(record: SFTRecord) -> list[str]:
    """What must be trained on: each assistant content (minus a leading forced prefix) + <|im_end|>."""
    out = []
    for m in record.messages:
        if m["role"] == "assistant":
            c = m["content"]
            if c.startswith(FORCED_PREFIX):
                c = c[len(FORCED_PREFIX) :]
            out.append(c + "<|im_end|>")
    return out


def supervised_spans(ex: TokenizedExample) -> list[list[int]]:
    """Maximal runs of supervised positions."""
    spans, cur = [], []
    for i, lab in enumerate(ex.labels.tolist()):
        if lab != IGNORE_INDEX:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return spans


def processor_reference(record: SFTRecord, processor):
    """The processor's own path: chat template over content parts, then processor(text, images)."""
    from PIL import Image

    from vigorl_agents.chat import chat_messages, placeholder_image_part, text_turns

    conv = chat_messages(text_turns(record.messages), placeholder_image_part)
    text = processor.apply_chat_template(conv, tokenize=False)
    imgs = [Image.open(p).convert("RGB") for p in record.images] or None
    return processor(text=[text], images=imgs, return_tensors="pt")


# --------------------------------------------------------------------------- masks


@pytest.mark.parametrize("which", ["single", "multi"])
def test_mask_is_exactly_assistant_content_and_im_end(processor, images, which):
    rec = single_turn(images) if which == "single" else multi_turn(images)
    ex = tokenize_record(rec, processor)
    assert isinstance(ex, TokenizedExample)
    tok = processor.tokenizer
    spans = supervised_spans(ex)
    # one contiguous span per assistant turn, decoding to exactly its content + <|im_end|>
    assert [tok.decode(ex.input_ids[s]) for s in spans] == expected_supervised(rec)
    for s in spans:
        assert ex.labels[s].tolist() == ex.input_ids[s].tolist()
        assert tok.decode(ex.input_ids[s[-1]]) == "<|im_end|>"
        # the token before the span is the newline of the assistant header (or the forced prefix)
        assert tok.decode(ex.input_ids[: s[0]]).endswith(("<|im_start|>assistant\n", FORCED_PREFIX))
    # no vision, header, system, user/observation or forced-prefix token is supervised
    sup = ex.labels != IGNORE_INDEX
    vt = ex.vision
    for tid in (
        vt.image_pad,
        vt.vision_start,
        vt.vision_end,
        tok.convert_tokens_to_ids("<|im_start|>"),
    ):
        assert not bool(sup[ex.input_ids == tid].any())
    assert ex.num_supervised == sum(len(s) for s in spans)
    unsup_text = tok.decode(ex.input_ids[~sup])
    assert SYSTEM in unsup_text and "<observation>" not in tok.decode(ex.input_ids[sup])
    if which == "multi":
        assert FORCED_PREFIX in unsup_text
        assert tok.decode(ex.input_ids[sup]).count("</answer>") == 1
        assert ex.num_image_tokens == (6 * 8 + 4 * 4 + 8 * 6) // 4
        assert ex.image_grid_thw.tolist() == [[1, 6, 8], [1, 4, 4], [1, 8, 6]]


def test_forced_prefix_unmasked_when_disabled(processor, images):
    rec = multi_turn(images)
    ex = tokenize_record(rec, processor, mask_prefix=None)
    tok = processor.tokenizer
    last = supervised_spans(ex)[-1]
    assert tok.decode(ex.input_ids[last]) == FORCED_PREFIX + " red </answer><|im_end|>"


def conversations(images: list[Path]) -> list[SFTRecord]:
    base = [single_turn(images), multi_turn(images)]
    no_system = SFTRecord(
        "nosys",
        [
            {"role": "user", "content": "Pick one.\n<image>"},
            {"role": "assistant", "content": "<answer> B </answer>"},
        ],
        [images[1]],
    )
    text_only = SFTRecord(
        "text",
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "Say  two spaces\n\nand lines  "},
            {"role": "assistant", "content": "<think>\nok.\n</think>\n<answer> 12 </answer>\n"},
        ],
    )
    two_images_one_turn = SFTRecord(
        "pair",
        [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "<image><image> Which is left? (1) a (2) b"},
            {"role": "assistant", "content": "<answer> a </answer>"},
        ],
        [images[0], images[2]],
    )
    return [*base, no_system, text_only, two_images_one_turn]


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen2_vl"])
def test_tokens_equal_processor_rendering(processor, processor_q2, images, arch):
    proc = processor if arch == "qwen2_5_vl" else processor_q2
    for rec in conversations(images):
        ex = tokenize_record(rec, proc)
        ref = processor_reference(rec, proc)
        assert ex.input_ids.tolist() == ref["input_ids"][0].tolist(), rec.id
        assert ex.mm_token_type_ids.tolist() == ref["mm_token_type_ids"][0].tolist(), rec.id
        if rec.images:
            assert torch.equal(ex.pixel_values, ref["pixel_values"])
            assert torch.equal(ex.image_grid_thw, ref["image_grid_thw"])
        else:
            assert ex.pixel_values is None and ex.image_grid_thw is None
        preflight(ex)


def test_default_system_is_the_templates(processor, images):
    rec = conversations(images)[2]
    ex = tokenize_record(rec, processor)
    assert processor.tokenizer.decode(ex.input_ids).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nPick one."
    )


# --------------------------------------------------------------------------- drops, sizes, preflight


def test_too_long_dropped_and_counted(processor, images):
    recs = [single_turn(images), multi_turn(images)]
    n_multi = len(tokenize_record(recs[1], processor))
    n_single = len(tokenize_record(recs[0], processor))
    assert n_single < n_multi
    drop = tokenize_record(recs[1], processor, cutoff_len=n_multi - 1)
    assert drop == DropReason("too_long", n_multi, "multi")
    assert isinstance(tokenize_record(recs[1], processor, cutoff_len=n_multi), TokenizedExample)
    ds = SFTDataset(recs, processor, cutoff_len=n_multi - 1)
    assert len(ds) == 1 and ds.examples[0].id == "single"
    assert ds.drop_counts == {"too_long": 1}
    assert ds.summary()["dropped"] == {"too_long": 1}
    item = ds[0]
    assert item.pixel_values is not None and item.pixel_values.shape[0] == 48


def test_image_not_a_model_frame_is_an_error(processor, tmp_path):
    from PIL import Image

    for size in [(100, 84), (280, 280)]:  # not a multiple of 28; over max_pixels (64·28·28)
        p = tmp_path / f"bad{size[0]}.png"
        Image.new("RGB", size).save(p)
        rec = SFTRecord(
            "badimg",
            [{"role": "user", "content": "<image>q"}, {"role": "assistant", "content": "a"}],
            [p],
        )
        with pytest.raises(ImageSizeError, match="badimg"):
            tokenize_record(rec, processor)


def test_preflight_catches_missing_image_pad(processor, images):
    ex = tokenize_record(single_turn(images), processor)
    preflight(ex)
    vt = ex.vision
    pos = int((ex.input_ids == vt.image_pad).nonzero()[0])
    keep = torch.ones(len(ex), dtype=torch.bool)
    keep[pos] = False
    doctored = TokenizedExample(
        ex.id,
        ex.input_ids[keep],
        ex.labels[keep],
        ex.mm_token_type_ids[keep],
        ex.image_grid_thw,
        ex.pixel_values,
        ex.num_image_tokens,
        vt,
    )
    with pytest.raises(PreflightError, match=r"'single'.*11 <\|image_pad\|> tokens.*12 features"):
        preflight(doctored)


def test_preflight_skip_mode_in_dataset(processor, images, monkeypatch):
    import vigorl_agents.train.data as data

    real = data.tokenize_record

    def doctor(rec, *a, **k):
        ex = real(rec, *a, **k)
        if rec.id == "multi":
            ex.input_ids = ex.input_ids.clone()
            ex.input_ids[ex.input_ids == ex.vision.vision_end] = ex.vision.image_pad
        return ex

    monkeypatch.setattr(data, "tokenize_record", doctor)
    recs = [single_turn(images), multi_turn(images)]
    with pytest.raises(PreflightError, match="multi"):
        SFTDataset(recs, processor)
    ds = SFTDataset(recs, processor, on_preflight="skip")
    assert len(ds) == 1 and ds.drop_counts == {"preflight": 1}


# --------------------------------------------------------------------------- collate


def test_collate_right_pads(processor, images):
    a = tokenize_record(single_turn(images), processor)
    b = tokenize_record(multi_turn(images), processor)
    t = tokenize_record(conversations(images)[3], processor)
    batch = collate([a, t, b], pad_id=0)
    L = max(len(a), len(b), len(t))
    assert batch["input_ids"].shape == (3, L)
    for i, e in enumerate([a, t, b]):
        n = len(e)
        assert batch["input_ids"][i, :n].tolist() == e.input_ids.tolist()
        assert (batch["input_ids"][i, n:] == 0).all() and (
            batch["labels"][i, n:] == IGNORE_INDEX
        ).all()
        assert batch["attention_mask"][i].sum() == n and batch["attention_mask"][i, :n].all()
        assert batch["labels"][i, :n].tolist() == e.labels.tolist()
    assert torch.equal(batch["pixel_values"], torch.cat([a.pixel_values, b.pixel_values]))
    assert batch["image_grid_thw"].tolist() == [[1, 6, 8], [1, 6, 8], [1, 4, 4], [1, 8, 6]]


# --------------------------------------------------------------------------- loaders


def _row(images: list[Path], **over) -> dict:
    row = {
        "id": "r0",
        "sample_id": "s0",
        "env_id": "ViGoRL/SynthGrounding-v0",
        "split": "train",
        "kind": "direct",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "<image>find it"},
            {"role": "assistant", "content": "<answer> (1, 2) </answer>"},
        ],
        "images": [str(images[0])],
        "frame": {"model_size": [112, 84]},
        "gt_answer": "(0, 0, 5, 5)",
        "meta": {},
    }
    row.update(over)
    return row


def test_jsonl_loader_and_errors(images, tmp_path):
    good = _row(images)
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "id": "r1"}) + "\n")
    recs = load_sft_file(p)
    assert [r.id for r in recs] == ["r0", "r1"]
    assert recs[0].images == [images[0]] and recs[0].meta["gt_answer"] == "(0, 0, 5, 5)"

    p.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"train\.jsonl:2: invalid JSON"):
        load_vigorl_jsonl(p)
    p.write_text(json.dumps(good) + "\n" + json.dumps({**good, "images": []}) + "\n")
    with pytest.raises(
        DataFormatError, match=r"train\.jsonl:2: field 'images'.*1 <image> marker.*0 image"
    ):
        load_vigorl_jsonl(p)
    bad_role = {**good, "messages": [{"role": "tool", "content": "x"}, *good["messages"][1:]]}
    p.write_text(json.dumps(bad_role) + "\n")
    with pytest.raises(DataFormatError, match=r"train\.jsonl:1: field 'messages\[0\]\.role'"):
        load_vigorl_jsonl(p)
    p.write_text(json.dumps({**good, "messages": good["messages"][:2]}) + "\n")
    with pytest.raises(DataFormatError, match="last message must be the assistant"):
        load_vigorl_jsonl(p)


def test_sharegpt_loader_reroots_upstream_paths(images, tmp_path):
    root = tmp_path / "root"
    (root / "web_grounding" / "imgs").mkdir(parents=True)
    target = root / "web_grounding" / "imgs" / "a.png"
    target.write_bytes(images[0].read_bytes())
    rows = [
        {
            "id": "u0",
            "metadata": {},
            "messages": _row(images)["messages"],
            "images": ["/home/author/data/web_grounding/imgs/a.png"],
            "gt_answer": "(1, 2, 3, 4)",
        },
        {
            "id": "mt",
            "messages": [
                *multi_turn(images).messages[:4],
                {"role": "assistant", "content": "<answer> x </answer>"},
            ],
            "images": [str(p) for p in images[:2]],
        },
    ]
    p = tmp_path / "chains.json"
    p.write_text(json.dumps(rows))
    recs = load_sharegpt_json(p, data_root=root)
    assert recs[0].images == [target] and recs[0].kind == "direct"
    assert recs[1].kind == "multi_turn" and len(recs[1].images) == 2
    rows[0]["messages"][1] = {"role": "user", "content": "no marker"}
    p.write_text(json.dumps(rows))
    with pytest.raises(DataFormatError, match=r"chains\.json\[0\]: field 'images'"):
        load_sharegpt_json(p, data_root=root)


def test_relative_image_paths_stay_inside_data_root(images, tmp_path):
    """The SFT loader confines relative (and re-rooted) image paths to DATA_ROOT with the env
    loader's own rule (`resolve_inside_root`): `..` and symlinks out of the root are refused,
    although the file they name exists and would load."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "ok.png").write_bytes(images[0].read_bytes())
    outside = tmp_path / "outside.png"
    outside.write_bytes(images[0].read_bytes())
    (root / "link.png").symlink_to(outside)
    p = tmp_path / "train.jsonl"

    def load(path: str):
        p.write_text(json.dumps({**_row(images), "images": [path]}) + "\n")
        return load_sft_file(p, data_root=root)

    assert load("sub/../ok.png")[0].images == [(root / "ok.png").resolve()]
    for bad in ("../outside.png", "sub/../../outside.png", "link.png"):
        with pytest.raises(
            DataFormatError, match=r"train\.jsonl:1: field 'images\[0\]'.*outside DATA_ROOT"
        ):
            load(bad)
    # an upstream absolute path whose re-rooted suffix climbs out of DATA_ROOT
    with pytest.raises(DataFormatError, match="outside DATA_ROOT"):
        load("/home/author/web_grounding/../../outside.png")
    # the env's records obey the very same function
    from vigorl_env.data.images import ImageRef

    ref = ImageRef("s0", "rl.jsonl", 1, str(root), path="../outside.png")
    with pytest.raises(DataFormatError, match="outside DATA_ROOT"):
        ref.resolve()


def test_parquet_loader(images, tmp_path):
    import pyarrow as pa  # in the dev group: the test runs, never skips
    import pyarrow.parquet as pq

    row = _row(images)
    p = tmp_path / "mt.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"messages": row["messages"], "images": row["images"]}]), p
    )
    recs = load_sft_file(p)
    assert len(recs) == 1 and recs[0].images == [images[0]]

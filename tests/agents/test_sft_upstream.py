"""Import of upstream SFT chains into the model frame (docs/data.md#importing-upstream-chains).

Every expected number below is worked out by hand from the resize rule (docs/geometry.md); the importer must agree to the
integer.

Image A, 3000×2000 (web grounding):
  teacher T (m 4096, M 12,960,000): 2000/28 = 71.43 → 71·28 = 1988; 3000/28 = 107.14 → 107·28 = 2996;
    2996·1988 = 5,956,048 ≤ M, so T = (2996, 1988).
  model, M = 4,194,304: 2996·1988 > M → β = sqrt(3000·2000 / 4,194,304) = 1.19604;
    h = floor(2000/β/28) = floor(59.72) = 59 → 1652; w = floor(3000/β/28) = floor(89.58) = 89 → 2492.
    x scale 2492/2996 = 623/749 = 89/107; y scale 1652/1988 = 59/71.
  model, spatial (M 12,960,000, max side 1260): pre-scale 1260×840 (both multiples of 28) → (1260, 840).
Image B, 1000×750:
  teacher: 750/28 = 26.79 → 27·28 = 756; 1000/28 = 35.71 → 36·28 = 1008; T = (1008, 756).
  model, M = 200,000: β = sqrt(750,000 / 200,000) = 1.93649; h = floor(13.83) = 13 → 364;
    w = floor(18.44) = 18 → 504. x scale 504/1008 = 1/2 exactly; y scale 364/756 = 13/27.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from vigorl_agents.train.data import load_vigorl_jsonl
from vigorl_agents.train.upstream import import_upstream_chains, main, rescale_points
from vigorl_env import DataFormatError, DataNotFoundError

WG = {"min_pixels": 3136, "max_pixels": 4_194_304}
SMALL = {"min_pixels": 3136, "max_pixels": 200_000}
AUTHORS = "/home/someone/data"  # the authors' machine: never exists here
SYSTEM = "System prompt with a point (7, 7) that is not the assistant's."
USER = "<image>\nClick the button at (5, 5)."


@pytest.fixture()
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "web_grounding" / "shots").mkdir(parents=True)
    (root / "spatial_reasoning").mkdir(parents=True)
    Image.new("RGB", (3000, 2000), (200, 30, 30)).save(root / "web_grounding/shots/a.png")
    Image.new("RGB", (1000, 750), (30, 200, 30)).save(root / "spatial_reasoning/b.png")
    return root


def _chain(i: int, image: str, assistant: str, gt: object = "(400, 300, 600, 450)") -> dict:
    return {
        "id": f"chain-{i}",
        "metadata": {"sample_id": f"s{i}"},
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": USER},
            {"role": "assistant", "content": assistant},
        ],
        "images": [f"{AUTHORS}/{image}"],
        "gt_answer": gt,
    }


def _write(path: Path, rows: list) -> Path:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_points_move_to_model_frame_exactly(data_root: Path, tmp_path: Path) -> None:
    text = (
        "<think>\nThe button is at (503, 377); the menu at ( 12 , 40 ), half way at (53.5, 994.0)."
        "\nThe box (10, 20, 30, 40) and the word (a, b) are not points.\n</think>\n"
        "<answer>(503,377)</answer>"
    )
    src = _write(
        tmp_path / "MCTS_72b_reasoning_chains_train.json",
        [_chain(0, "web_grounding/shots/a.png", text)],
    )
    out = tmp_path / "out" / "train.jsonl"
    summary = import_upstream_chains(
        src, out, data_root=data_root, env_id="ViGoRL/OSAtlas-v0", **WG
    )
    # (503, 377): 503·89/107 = 418.38 → 418; 377·59/71 = 313.28 → 313.
    # ( 12 , 40 ): 12·89/107 = 9.98 → 10; 40·59/71 = 33.24 → 33 (spacing kept).
    # (53.5, 994.0): 53.5·89/107 = 44.5 exactly → 45 (half up; round() would give 44);
    #   994·59/71 = 826 exactly.
    expected = (
        "<think>\nThe button is at (418, 313); the menu at ( 10 , 33 ), half way at (45, 826)."
        "\nThe box (10, 20, 30, 40) and the word (a, b) are not points.\n</think>\n"
        "<answer>(418,313)</answer>"
    )
    (rec,) = _read(out)
    assert rec["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
        {"role": "assistant", "content": expected},
    ]
    assert rec["images"] == ["web_grounding/shots/a.png"]  # re-rooted, relative to DATA_ROOT
    assert rec["frame"] == {
        "original_size": [3000, 2000],
        "model_size": [2492, 1652],
        "scale": [2492 / 3000, 1652 / 2000],
    }
    assert rec["gt_answer"] == "(400, 300, 600, 450)"  # GT box stays in the original frame
    assert rec["id"] == "chain-0" and rec["sample_id"] == "s0"
    assert (rec["env_id"], rec["split"], rec["kind"]) == ("ViGoRL/OSAtlas-v0", "train", "direct")
    assert rec["meta"]["index"] == 0 and rec["meta"]["source"] == str(src)
    assert rec["meta"]["teacher_size"] == [2996, 1988]
    assert rec["meta"]["upstream_images"] == [f"{AUTHORS}/web_grounding/shots/a.png"]
    assert summary["points_rescaled"] == 4
    assert summary["gt_points_rescaled"] == 0
    assert summary["images_not_model_frames"] == 1

    (loaded,) = load_vigorl_jsonl(out, data_root)
    assert loaded.images == [data_root / "web_grounding/shots/a.png"]
    assert loaded.messages[2]["content"] == expected
    assert loaded.meta["frame"]["model_size"] == [2492, 1652]


def test_half_up_decimals_gt_point_and_multi_turn(data_root: Path, tmp_path: Path) -> None:
    first = "<think> Look near (501, 377). </think>"
    last = "<think> Also (12.25, 100.5). </think>\n<answer> (501, 377) </answer>"
    row = _chain(0, "spatial_reasoning/b.png", first, gt="(501, 377)")
    row["messages"] += [
        {"role": "user", "content": "Go on."},
        {"role": "assistant", "content": last},
    ]
    src = _write(tmp_path / "chains_val.json", [row])
    out = tmp_path / "val.jsonl"
    summary = import_upstream_chains(src, out, data_root=data_root, **SMALL)
    (rec,) = _read(out)
    # (501, 377): 501/2 = 250.5 → 251 (half up, not half-even 250); 377·13/27 = 181.52 → 182.
    # (12.25, 100.5): 6.125 → 6; 100.5·13/27 = 48.39 → 48.
    assert rec["messages"][2]["content"] == "<think> Look near (251, 182). </think>"
    assert rec["messages"][3] == {"role": "user", "content": "Go on."}
    assert rec["messages"][4]["content"] == (
        "<think> Also (6, 48). </think>\n<answer> (251, 182) </answer>"
    )
    assert rec["gt_answer"] == "(251, 182)"  # a GT point is a teacher answer: moved likewise
    assert rec["meta"]["upstream_gt_answer"] == "(501, 377)"
    assert rec["frame"]["model_size"] == [504, 364]
    assert (rec["split"], rec["kind"]) == ("val", "multi_turn")
    assert summary["points_rescaled"] == 3 and summary["gt_points_rescaled"] == 1


def test_rescale_points_keeps_everything_but_the_numbers() -> None:
    text = "a(1,2)b( +3 ,\t-4 )c(1, 2, 3)d(1.5)e(١, 2)"  # Arabic-Indic digit: not ASCII, no point
    out, n = rescale_points(text, (10, 10), (20, 30))
    assert (out, n) == ("a(2,6)b( 6 ,\t-12 )c(1, 2, 3)d(1.5)e(١, 2)", 2)
    assert rescale_points("(-1, 1)", (4, 4), (2, 2)) == ("(0, 1)", 1)  # -0.5 → 0, 0.5 → 1


def test_frames_dir_writes_model_frames(data_root: Path, tmp_path: Path) -> None:
    rows = [_chain(k, "spatial_reasoning/b.png", "<answer> A </answer>", gt="A") for k in range(2)]
    src = _write(tmp_path / "x_train.json", rows)
    frames = tmp_path / "frames"
    out = tmp_path / "t.jsonl"
    summary = import_upstream_chains(src, out, data_root=data_root, frames_dir=frames, **SMALL)
    recs = _read(out)
    assert summary["frames_written"] == 1  # both chains share one image
    assert recs[0]["images"] == recs[1]["images"]
    path = Path(recs[0]["images"][0])
    assert path.parent == frames.resolve()
    with Image.open(path) as im:
        assert im.size == (504, 364)
    assert recs[0]["frame"]["original_size"] == [1000, 750]


def test_exif_rotated_image_uses_upright_size(data_root: Path, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: the upright image is 750×1000
    Image.new("RGB", (1000, 750)).save(data_root / "spatial_reasoning/r.jpg", exif=exif)
    src = _write(tmp_path / "r_train.json", [_chain(0, "spatial_reasoning/r.jpg", "(1, 1)")])
    import_upstream_chains(src, tmp_path / "r.jsonl", data_root=data_root, **SMALL)
    (rec,) = _read(tmp_path / "r.jsonl")
    assert rec["frame"]["original_size"] == [750, 1000]


def _bad(rows_1: dict) -> list:
    return [_chain(0, "spatial_reasoning/b.png", "(1, 1)"), rows_1]


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("messages"), "messages"),
        (lambda r: r["messages"][2].update(content=["x"]), "messages[2].content"),
        (lambda r: r["messages"][2].update(role="bot"), "messages[2].role"),
        (lambda r: r.update(images=r["images"] * 2), "images"),
        (lambda r: r.update(images=[3]), "images[0]"),
        (lambda r: r.update(gt_answer=["A"]), "gt_answer"),
        (lambda r: r.pop("gt_answer"), "gt_answer"),
        (lambda r: r.update(metadata=[1]), "metadata"),
    ],
)
def test_bad_rows_name_file_index_field(data_root: Path, tmp_path: Path, mutate, field) -> None:
    row = _chain(1, "spatial_reasoning/b.png", "(1, 1)")
    mutate(row)
    src = _write(tmp_path / "bad_train.json", _bad(row))
    out = tmp_path / "bad.jsonl"
    with pytest.raises(DataFormatError, match=re.escape(f"{src}[1]: field {field!r}")):
        import_upstream_chains(src, out, data_root=data_root, **SMALL)
    assert not out.exists() and not out.with_name("bad.jsonl.tmp").exists()


def test_missing_image_names_both_paths(data_root: Path, tmp_path: Path) -> None:
    src = _write(tmp_path / "m_train.json", [_chain(0, "spatial_reasoning/gone.png", "(1, 1)")])
    with pytest.raises(DataNotFoundError) as e:
        import_upstream_chains(src, tmp_path / "m.jsonl", data_root=data_root, **SMALL)
    msg = str(e.value)
    assert f"{src}[0]" in msg
    assert f"{AUTHORS}/spatial_reasoning/gone.png" in msg
    assert str(data_root / "spatial_reasoning/gone.png") in msg


def test_split_must_be_known(data_root: Path, tmp_path: Path) -> None:
    src = _write(tmp_path / "chains.json", [_chain(0, "spatial_reasoning/b.png", "(1, 1)")])
    with pytest.raises(ValueError, match="split"):
        import_upstream_chains(src, tmp_path / "o.jsonl", data_root=data_root, **SMALL)
    import_upstream_chains(src, tmp_path / "o.jsonl", data_root=data_root, split="val", **SMALL)
    assert _read(tmp_path / "o.jsonl")[0]["split"] == "val"


def test_cli_spatial_domain(data_root: Path, tmp_path: Path, capsys) -> None:
    text = "<think> (503, 377) </think>\n<answer> left </answer>"
    src = _write(tmp_path / "sp_val.json", [_chain(0, "web_grounding/shots/a.png", text, "left")])
    out = tmp_path / "sp.jsonl"
    assert main([str(src), str(out), "--domain", "spatial", "--data-root", str(data_root)]) == 0
    (rec,) = _read(out)
    # spatial = SAT2's frame (docs/geometry.md#defaults-per-benchmark): model (1260, 840) from T (2996, 1988):
    # 503·1260/2996 = 211.54 → 212; 377·840/1988 = 159.30 → 159.
    assert rec["messages"][2]["content"] == "<think> (212, 159) </think>\n<answer> left </answer>"
    assert (rec["env_id"], rec["split"]) == ("ViGoRL/SAT2-v0", "val")
    assert json.loads(capsys.readouterr().out)["records"] == 1
    # --max-side none turns the pre-scale off: M 12,960,000 keeps 3000×2000's rounding (2996, 1988).
    main(
        [
            str(src),
            str(out),
            "--domain",
            "spatial",
            "--data-root",
            str(data_root),
            "--max-side",
            "none",
        ]
    )
    assert _read(out)[0]["messages"][2]["content"].startswith("<think> (503, 377) </think>")


def test_cli_writes_frames_that_the_trainer_accepts(data_root: Path, tmp_path: Path) -> None:
    """Import → model-frame PNGs by default → SFTDataset tokenizes them (a processor whose pixel
    bounds bracket the frames keeps them as they are: docs/geometry.md, docs/sft.md#data)."""
    pytest.importorskip("transformers")
    from PIL import Image

    from vigorl_agents.models.load import load_hf
    from vigorl_agents.train.data import SFTDataset, load_sft_file

    text = "<think> (503, 377) </think>\n<answer> (503, 377) </answer>"
    src = _write(tmp_path / "wg_train.json", [_chain(0, "web_grounding/shots/a.png", text)])
    out = tmp_path / "wg.jsonl"
    argv = [str(src), str(out), "--domain", "web_grounding", "--data-root", str(data_root)]
    assert main([*argv, "--max-pixels", "200000"]) == 0
    (rec,) = _read(out)
    frame = Path(rec["images"][0])
    assert frame.parent == tmp_path / "wg_frames" and frame.suffix == ".png"
    assert list(Image.open(frame).size) == rec["frame"]["model_size"]
    _, processor = load_hf("tiny-qwen2.5-vl", device="cpu", min_pixels=3136, max_pixels=200_000)
    ds = SFTDataset(load_sft_file(out, data_root=data_root), processor)
    assert len(ds) == 1 and ds[0].num_supervised > 0
    # --keep-originals points to the 3000×2000 original, which the trainer refuses
    assert main([*argv, "--max-pixels", "200000", "--keep-originals"]) == 0
    assert _read(out)[0]["images"] == ["web_grounding/shots/a.png"]

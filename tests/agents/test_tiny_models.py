"""The tiny offline Qwen2.5-VL / Qwen2-VL factory and the model loading path (vigorl_agents.models).

Random weights give garbage text: these tests check structure (folder, config sizes, chat
rendering per docs/protocol.md#chat-rendering, image token counts per docs/geometry.md), determinism and that vLLM serves the
same model transformers runs (greedy tokens agree).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from PIL import Image  # noqa: E402

from vigorl_agents.models import (  # noqa: E402
    build_tiny_model,
    check_processor_keeps_frames,
    load_hf,
    processor_pixel_bounds,
    resolve_model,
    set_processor_pixel_bounds,
)
from vigorl_agents.models.tiny import MARKER_FILE  # noqa: E402
from vigorl_env.protocol import FORCED_PREFIX  # noqa: E402

ARCH_FIXTURES = {"qwen2_5_vl": "tiny_qwen25_dir", "qwen2_vl": "tiny_qwen2_dir"}
CLASSES = {
    "qwen2_5_vl": ("Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"),
    "qwen2_vl": ("Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"),
}
W, H = 56, 84  # (56/28)·(84/28) = 6 image tokens
SYSTEM = "You answer with <think> and <answer>."
QUESTION_A, QUESTION_B = "Which object is closer?\n", "\nOptions: (A) lamp (B) chair"
ANSWER = "<think>\nThe lamp is in front (12, 40).\n</think>\n<answer> lamp </answer>"
VS, PAD, VE = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"


def _image(seed: int = 0, size: tuple[int, int] = (W, H)) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


def _messages(image, *, assistant: str | None = ANSWER) -> list[dict]:
    msgs = [
        {"role": "system", "content": SYSTEM},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": QUESTION_A},
                {"type": "image", "image": image},
                {"type": "text", "text": QUESTION_B},
            ],
        },
    ]
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return msgs


def _spec_render(n_pads: int, assistant: str = ANSWER) -> str:
    """The documented chatml (docs/protocol.md#chat-rendering), written out by hand."""
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{QUESTION_A}{VS}{PAD * n_pads}{VE}{QUESTION_B}<|im_end|>\n"
        f"<|im_start|>assistant\n{assistant}<|im_end|>\n"
    )


@pytest.fixture(scope="module", params=list(ARCH_FIXTURES))
def loaded(request):
    """(arch, folder, model, processor) for each tiny arch, loaded through `load_hf`."""
    folder = request.getfixturevalue(ARCH_FIXTURES[request.param])
    model, processor = load_hf(folder)
    return request.param, folder, model, processor


# --------------------------------------------------------------------------- build


@pytest.mark.parametrize("arch", list(ARCH_FIXTURES))
def test_build_writes_a_plain_hf_folder_with_the_recipe_sizes(arch, request):
    folder = request.getfixturevalue(ARCH_FIXTURES[arch])
    names = {p.name for p in folder.iterdir()}
    for required in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
        MARKER_FILE,
    ):
        assert required in names, required
    assert (folder / "model.safetensors").stat().st_size < 2_000_000
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == arch
    assert cfg["architectures"] == [CLASSES[arch][0]]
    text = cfg["text_config"]
    assert (text["hidden_size"], text["num_attention_heads"], text["num_key_value_heads"]) == (
        64,
        2,
        1,
    )
    assert text["hidden_size"] // text["num_attention_heads"] == 32  # vLLM CPU needs head_dim >= 32
    assert text["num_hidden_layers"] == 2
    assert text["rope_parameters"]["mrope_section"] == [4, 6, 6]
    assert cfg["vision_config"]["depth"] == 2
    tok = json.loads((folder / "tokenizer.json").read_text())
    special = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert cfg["image_token_id"] == special["<|image_pad|>"]
    assert cfg["video_token_id"] == special["<|video_pad|>"]
    assert cfg["vision_start_token_id"] == special["<|vision_start|>"]
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == special["<|im_end|>"]
    assert gen["pad_token_id"] == special["<|endoftext|>"]


def test_reload_in_transformers(loaded):
    arch, _, model, processor = loaded
    assert type(model).__name__ == CLASSES[arch][0]
    assert type(processor).__name__ == CLASSES[arch][1]
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    assert not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert model.config.text_config.vocab_size == len(processor.tokenizer)
    assert processor.tokenizer.eos_token == "<|im_end|>"
    assert processor.tokenizer.pad_token == "<|endoftext|>"
    assert processor_pixel_bounds(processor) == (3136, 64 * 28 * 28)
    assert 0.3e6 < sum(p.numel() for p in model.parameters()) < 0.5e6


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    def digest(seed: int, name: str) -> str:
        folder = build_tiny_model(tmp_path / name, seed=seed)
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    state = torch.random.get_rng_state()
    assert digest(0, "a") == digest(0, "b")
    assert digest(0, "a2") != digest(1, "c")
    assert torch.equal(torch.random.get_rng_state(), state)  # the build leaves the global RNG alone
    tok = [(tmp_path / n / "tokenizer.json").read_bytes() for n in ("a", "c")]
    assert tok[0] == tok[1]  # the tokenizer does not depend on the seed


def test_build_refuses_to_clobber_and_checks_arguments(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        build_tiny_model(tmp_path / "x")
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    build_tiny_model(tmp_path / "x", arch="qwen2_vl", overwrite=True)
    assert not (tmp_path / "x" / "keep.txt").exists()
    with pytest.raises(ValueError, match="arch"):
        build_tiny_model(tmp_path / "y", arch="llava")
    with pytest.raises(ValueError, match="min_pixels"):
        build_tiny_model(tmp_path / "z", min_pixels=10_000, max_pixels=5_000)


# --------------------------------------------------------------------------- chat rendering


def test_chat_template_renders_spec_chatml_and_image_pads(loaded):
    _, _, _, processor = loaded
    img = _image()
    text = processor.apply_chat_template(_messages(img), tokenize=False)
    assert text == _spec_render(1)  # one pad per image before the processor expands it
    enc = processor(text=[text], images=[img], return_tensors="pt")
    ids = enc["input_ids"][0]
    n_pads = (W // 28) * (H // 28)
    assert int((ids == processor.image_token_id).sum()) == n_pads == 6
    assert enc["image_grid_thw"].tolist() == [[1, H // 14, W // 14]]
    # the token ids decode to exactly the documented string with (w/28)(h/28) pads
    assert processor.tokenizer.decode(ids) == _spec_render(n_pads)


def test_chat_template_string_and_openai_content_and_prompts(loaded):
    _, _, _, processor = loaded
    tok = processor.tokenizer
    openai_user = {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "text", "text": "Q"},
        ],
    }
    got = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, openai_user],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert (
        got
        == f"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n{VS}{PAD}{VE}Q<|im_end|>\n<|im_start|>assistant\n"
    )
    # no system message: Qwen's default one, as the released templates do
    got = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert got == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    )
    # the processor saved the same template the tokenizer carries
    assert processor.chat_template == tok.chat_template


def test_continue_final_message_ends_with_the_prefix(loaded):
    _, _, _, processor = loaded
    img = _image()
    msgs = _messages(img, assistant=FORCED_PREFIX)
    text = processor.apply_chat_template(msgs, tokenize=False, continue_final_message=True)
    assert text == _spec_render(1, FORCED_PREFIX).removesuffix("<|im_end|>\n")
    assert text.endswith("</think>\n<answer>")
    prefix_ids = processor(text=[text], images=[img])["input_ids"][0]
    assert prefix_ids[-1] != processor.tokenizer.convert_tokens_to_ids("<|im_end|>")


# --------------------------------------------------------------------------- generation


def _greedy(model, processor, img, n: int = 8, **kw) -> list[int]:
    text = processor.apply_chat_template(
        _messages(img, assistant=None), tokenize=False, add_generation_prompt=True
    )
    enc = processor(text=[text], images=[img], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n, min_new_tokens=n, **kw)
    return out[0, enc["input_ids"].shape[1] :].tolist()


def test_generate_is_deterministic_and_sees_the_image(loaded):
    _, _, model, processor = loaded
    a = _greedy(model, processor, _image(0), do_sample=False)
    assert a == _greedy(model, processor, _image(0), do_sample=False)
    assert len(a) == 8
    assert a != _greedy(model, processor, _image(1), do_sample=False)  # the image reaches the LM
    torch.manual_seed(3)
    s1 = _greedy(model, processor, _image(0), do_sample=True, temperature=1.0)
    torch.manual_seed(3)
    assert s1 == _greedy(model, processor, _image(0), do_sample=True, temperature=1.0)


# --------------------------------------------------------------------------- resolve / bounds


def test_resolve_model(tmp_path, tiny_qwen25_dir):
    assert resolve_model(str(tiny_qwen25_dir)) == str(tiny_qwen25_dir)
    assert resolve_model(tiny_qwen25_dir) == str(tiny_qwen25_dir)
    for hub in ("gsarch/ViGoRL-3b-Spatial", "Qwen/Qwen2.5-VL-3B-Instruct"):
        assert resolve_model(hub) == hub  # returned as is, never downloaded here
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        resolve_model(str(tmp_path / "run"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model("./no/such/checkpoint")
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        resolve_model(str(tmp_path / "f.bin"))
    with pytest.raises(ValueError, match=r"tiny-qwen2\.5-vl"):
        resolve_model("tiny-qwen3")


def test_resolve_tiny_name_builds_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIGORL_CACHE", str(tmp_path / "cache"))
    folder = Path(resolve_model("tiny-qwen2-vl"))
    assert folder == tmp_path / "cache" / "tiny" / f"qwen2_vl-seed0-{64 * 28 * 28}"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "qwen2_vl"
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny-qwen2-vl") == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime  # cached, not rebuilt
    (folder / MARKER_FILE).unlink()  # an interrupted or stale build is rebuilt
    assert resolve_model("tiny-qwen2-vl") == str(folder)
    assert (folder / MARKER_FILE).exists()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folders left


def test_pixel_bounds_set_and_checked(tiny_qwen25_dir):
    _, processor = load_hf(tiny_qwen25_dir, min_pixels=784, max_pixels=4 * 784)
    assert processor_pixel_bounds(processor) == (784, 4 * 784)
    # the new bound is what the processor actually resizes to: 56×84 (6 tokens) → at most 4
    grid = processor.image_processor(images=[_image()], return_tensors="pt")["image_grid_thw"]
    assert int(grid.prod()) // 4 <= 4
    with pytest.raises(ValueError, match=r"docs/geometry\.md#serving-the-frame-unchanged"):
        check_processor_keeps_frames(processor, min_pixels=3136, max_pixels=12_960_000)
    set_processor_pixel_bounds(processor, max_pixels=12_960_000)
    assert processor_pixel_bounds(processor) == (784, 12_960_000)
    check_processor_keeps_frames(processor, min_pixels=3136, max_pixels=12_960_000)
    with pytest.raises(ValueError):
        set_processor_pixel_bounds(processor, min_pixels=10**8)


# --------------------------------------------------------------------------- vLLM

_VLLM_SCRIPT = r"""
import json, os, sys
try:
    import vllm
except Exception as e:  # noqa: BLE001
    print("VLLM_IMPORT_ERROR " + repr(e)); sys.exit(3)
cases = json.loads(sys.argv[1])
results = []
for case in cases:
    llm = vllm.LLM(model=case["dir"], dtype="float32", enforce_eager=True, max_model_len=4096,
                   limit_mm_per_prompt={"image": 5}, seed=0)
    msgs = json.loads(case["messages"])
    params = vllm.SamplingParams(max_tokens=8, min_tokens=8, temperature=0)
    out = llm.chat(msgs, params)[0]
    results.append({"prompt": out.prompt, "prompt_token_ids": list(out.prompt_token_ids),
                    "token_ids": list(out.outputs[0].token_ids),
                    "finish_reason": out.outputs[0].finish_reason})
    del llm
print("RESULTS " + json.dumps(results))
"""


@pytest.mark.vllm
@pytest.mark.timeout(400)
def test_vllm_serves_the_tiny_models_like_transformers(tiny_qwen25_dir, tiny_qwen2_dir):
    """vLLM 0.32 CPU loads both folders, renders OpenAI image_url messages with our template, gives
    (w/28)(h/28) image tokens and the same greedy tokens as transformers. In a subprocess: the
    in-process engine would change this process's torch threads and global seed."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed")
    img = _image(0)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    openai_msgs = _messages(img, assistant=None)
    openai_msgs[1]["content"][1] = {"type": "image_url", "image_url": {"url": url}}
    dirs = [tiny_qwen25_dir, tiny_qwen2_dir]
    cases = [{"dir": str(d), "messages": json.dumps(openai_msgs)} for d in dirs]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _VLLM_SCRIPT, json.dumps(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=360,
    )
    if proc.returncode == 3 and "VLLM_IMPORT_ERROR" in proc.stdout:
        pytest.skip(f"vllm import failed: {proc.stdout.strip()}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS "))
    results = json.loads(line.removeprefix("RESULTS "))
    for folder, res in zip(dirs, results, strict=True):
        model, processor = load_hf(folder)
        expected_prompt = _spec_render(1).rsplit("<|im_start|>assistant\n", 1)[0]
        assert res["prompt"] == expected_prompt + "<|im_start|>assistant\n"
        image_id = processor.image_token_id
        assert res["prompt_token_ids"].count(image_id) == (W // 28) * (H // 28)
        assert res["finish_reason"] == "length"
        assert res["token_ids"] == _greedy(model, processor, img, do_sample=False)

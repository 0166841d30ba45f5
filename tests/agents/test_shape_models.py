"""Architecture-only models (`shape-qwen2.5-vl-3b`): the folder, and seeded random loading."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.models.load import load_hf, load_weights, resolve_model  # noqa: E402
from vigorl_agents.models.shapes import is_random_init  # noqa: E402


def test_shape_folder_has_the_3b_architecture_and_no_weights():
    from transformers import AutoConfig

    folder = resolve_model("shape-qwen2.5-vl-3b")
    cfg = AutoConfig.from_pretrained(folder)
    assert is_random_init(folder)
    assert (cfg.text_config.num_hidden_layers, cfg.text_config.hidden_size) == (36, 2048)
    assert cfg.text_config.vocab_size == 151936 and cfg.tie_word_embeddings
    assert (cfg.vision_config.depth, cfg.vision_config.out_hidden_size) == (32, 2048)
    names = {p.name for p in __import__("pathlib").Path(folder).iterdir()}
    assert not any(n.startswith("model") and n.endswith((".safetensors", ".bin")) for n in names)
    # the tokenizer / processor are the tiny model's: the chat template must be there
    assert "chat_template.jinja" in names or "tokenizer_config.json" in names


def _small_shape(tmp_path):
    """The 3B shape folder with the text/vision stacks shrunk (same code path, CPU-sized)."""
    folder = tmp_path / "shape"
    shutil.copytree(resolve_model("shape-qwen2.5-vl-3b"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"].update(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=2048,
    )
    cfg["text_config"]["rope_parameters"]["mrope_section"] = [4, 6, 6]
    cfg["text_config"].pop("layer_types", None)
    cfg["text_config"].pop("max_window_layers", None)
    cfg["vision_config"].update(
        depth=1,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        fullatt_block_indexes=[0],
    )
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_random_init_is_seeded(tmp_path):
    folder = _small_shape(tmp_path)
    a = load_weights(folder, dtype=torch.float32, device="cpu", seed=3)
    b = load_weights(folder, dtype=torch.float32, device="cpu", seed=3)
    c = load_weights(folder, dtype=torch.float32, device="cpu", seed=4)
    wa, wb, wc = (m.model.language_model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)
    assert wa.std() > 0


def test_load_hf_builds_a_working_model_from_a_shape_folder(tmp_path):
    model, processor = load_hf(_small_shape(tmp_path), device="cpu")
    ids = processor.tokenizer("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 2048)
    assert torch.isfinite(logits).all()

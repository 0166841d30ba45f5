"""Trainer parameter names → the checkpoint names the vLLM engine loads (docs/grpo.md#weight-sync)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.backends.vllm_engine import checkpoint_tensor_names  # noqa: E402
from vigorl_agents.train.weight_sync import hf_name, hf_names  # noqa: E402


@pytest.mark.parametrize(
    "trainer, checkpoint",
    [
        ("model.language_model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("model.visual.blocks.1.attn.qkv.bias", "visual.blocks.1.attn.qkv.bias"),
        ("lm_head.weight", "lm_head.weight"),
        # DeepSpeed's loss-module wrapper, and its own `module.`
        ("inner.model.language_model.norm.weight", "model.norm.weight"),
        ("module.inner.model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
        # peft: wrapper + base layer of a LoRA-injected projection
        ("base_model.model.model.language_model.layers.1.mlp.up_proj.base_layer.weight",
         "model.layers.1.mlp.up_proj.weight"),
    ],
)  # fmt: skip
def test_hf_name(trainer, checkpoint):
    assert hf_name(trainer) == checkpoint


def _model(tiny_dir):
    from vigorl_agents.models.load import load_weights

    return load_weights(str(tiny_dir), dtype=torch.float32, device="cpu")


@pytest.mark.parametrize("arch", ["qwen25", "qwen2"])
def test_every_trainer_tensor_maps_onto_the_checkpoint(arch, request):
    tiny_dir = request.getfixturevalue(f"tiny_{arch}_dir")
    model = _model(tiny_dir)
    known = checkpoint_tensor_names(tiny_dir)
    named = hf_names(model, model.state_dict(), known)
    assert {n for n, _ in named} == known  # all of them, nothing else (tied head dropped)
    # wrapped as DeepSpeed wraps it: the same names
    wrapped = {f"inner.{k}": v for k, v in model.state_dict().items()}
    assert {n for n, _ in hf_names(model, wrapped, known)} == known


def test_unknown_names_and_adapter_tensors_are_refused(tiny_qwen25_dir):
    model = _model(tiny_qwen25_dir)
    known = checkpoint_tensor_names(tiny_qwen25_dir)
    sd = dict(model.state_dict())
    sd["model.language_model.layers.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"no counterpart.*extra"):
        hf_names(model, sd, known)
    sd = dict(model.state_dict())
    sd["model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="LoRA adapter tensor"):
        hf_names(model, sd, known)


def test_lora_merged_state_dict_maps_onto_the_checkpoint(tiny_qwen25_dir):
    pytest.importorskip("peft")
    from vigorl_agents.train.lora import add_lora, merged_state_dict

    model = _model(tiny_qwen25_dir)
    add_lora(model, rank=4, alpha=8.0, dropout=0.0)
    known = checkpoint_tensor_names(tiny_qwen25_dir)
    named = dict(hf_names(model, merged_state_dict(model), known))
    assert set(named) == known

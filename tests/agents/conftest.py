"""Shared fixtures of the agents tests: the tiny real Qwen2.5-VL / Qwen2-VL, built once per session.

Each is a plain Hugging Face folder (vigorl_agents.models.build_tiny_model, seed 0, max_pixels
64·28·28) that loads in transformers and in vLLM; treat it as read-only.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _build(tmp_path_factory: pytest.TempPathFactory, arch: str) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from vigorl_agents.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp(f"tiny_{arch}"), arch=arch, seed=0)


@pytest.fixture(scope="session")
def tiny_qwen25_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration)."""
    return _build(tmp_path_factory, "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny Qwen2-VL (Qwen2VLForConditionalGeneration)."""
    return _build(tmp_path_factory, "qwen2_vl")


from vllm_fixtures import *  # noqa: E402, F403

"""Each task family selects its tree-search teacher prompt, shipped verbatim (after newline
normalization) from upstream's run_mcts_qwen72b.sh branches: sat2 → spatial, vstar → visual search,
web_grounding, web_action. The digests were taken from the documented prompt texts."""

from __future__ import annotations

import hashlib

import pytest

from vigorl_agents.search import k_thoughts, teacher_system_prompt
from vigorl_env.tasks import BENCHMARKS, FAMILIES

DIGESTS = {
    "spatial": ("d77c04fa66ef760d4ca621e2ed988119e064c6621367eb2babb3031c922c2e75", 1557),
    "web_grounding": ("a81cd5231555f1dd4c92a2d0c8dd6cdaa46344074f11c04e9f3dfd1c4335bcce", 1493),
    "visual_search": ("fb6d26ae1e81e9ba0b9c2e216e98784de2a96186349b245c5cea1ed6675a85a5", 1537),
    "web_action": ("726259ad1af2f453ce89f4a3aa911e3d044e113753409a4e38532d1094a26672", 2947),
}


@pytest.mark.parametrize("family", sorted(DIGESTS))
def test_family_mcts_prompt_is_the_documented_text(family):
    text = FAMILIES[family].mcts_prompt()
    digest, length = DIGESTS[family]
    assert len(text) == length
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == digest
    assert "\\n" not in text and text.endswith(
        "(x, y)" if family != "web_action" else "before issuing the final action."
    )


def test_benchmarks_pick_their_family_prompt():
    assert (
        BENCHMARKS["SynthSpatial"]
        .family.mcts_prompt()
        .startswith("You are a helpful assistant tasked with answering a question about an image.")
    )
    assert "<answer> {final answer} </answer>" in BENCHMARKS["SynthSearch"].family.mcts_prompt()
    assert "<answer> (xf, yf) </answer>" in BENCHMARKS["OSAtlas"].family.mcts_prompt()


def test_system_prompt_suffix():
    k = k_thoughts(42, "SynthSpatial-train-0-3")
    prompt = teacher_system_prompt(FAMILIES["spatial"].mcts_prompt(), k)
    assert prompt.endswith(
        f"- Format points as (x, y)\n- There should be at least {k} thoughts before providing "
        "the final answer."
    )

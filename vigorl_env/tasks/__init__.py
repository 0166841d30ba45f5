"""Task families: what a benchmark asks (answer kind), how it is shown (frame and crop defaults) and
which system prompt the model gets. One module per family; `BENCHMARKS` maps each env name to its family
and per-benchmark defaults (docs/geometry.md#defaults-per-benchmark, docs/protocol.md#system-prompts)."""

from __future__ import annotations

from vigorl_env.tasks.base import BenchmarkSpec, TaskFamily, load_prompt
from vigorl_env.tasks.spatial import SPATIAL
from vigorl_env.tasks.visual_search import VISUAL_SEARCH
from vigorl_env.tasks.web_action import WEB_ACTION
from vigorl_env.tasks.web_grounding import WEB_GROUNDING

FAMILIES: dict[str, TaskFamily] = {
    f.name: f for f in (SPATIAL, VISUAL_SEARCH, WEB_GROUNDING, WEB_ACTION)
}

_M = 12_960_000
BENCHMARKS: dict[str, BenchmarkSpec] = {
    b.name: b
    for b in (
        BenchmarkSpec("SAT2", SPATIAL, "single_turn", 3136, _M, 1260, "upstream"),
        BenchmarkSpec("BLINK", SPATIAL, "single_turn", 3136, _M, 1260, "upstream"),
        BenchmarkSpec("RoboSpatial", SPATIAL, "single_turn", 3136, _M, 1260, "upstream"),
        BenchmarkSpec(
            "SynthSpatial",
            SPATIAL,
            "single_turn",
            3136,
            _M,
            1260,
            "vigorl_env.data.synth.spatial:SynthSpatial",
        ),
        BenchmarkSpec("VStar", VISUAL_SEARCH, "multi_turn", 3136, _M, None, "upstream"),
        BenchmarkSpec(
            "VisualSearchSA", VISUAL_SEARCH, "multi_turn", 3136, 2_850_000, None, "upstream"
        ),
        BenchmarkSpec(
            "SynthSearch",
            VISUAL_SEARCH,
            "multi_turn",
            3136,
            2_850_000,
            None,
            "vigorl_env.data.synth.search:SynthSearch",
        ),
        BenchmarkSpec("OSAtlas", WEB_GROUNDING, "single_turn", 3136, 4_194_304, None, "upstream"),
        BenchmarkSpec(
            "SynthGrounding",
            WEB_GROUNDING,
            "single_turn",
            3136,
            4_194_304,
            None,
            "vigorl_env.data.synth.grounding:SynthGrounding",
        ),
        BenchmarkSpec("ScreenSpotV2", WEB_GROUNDING, "single_turn", 3136, _M, None, "upstream"),
        BenchmarkSpec("ScreenSpotPro", WEB_GROUNDING, "single_turn", 3136, _M, None, "upstream"),
        BenchmarkSpec(
            "VisualWebArena", WEB_ACTION, "single_turn", 3136, 4_194_304, None, "upstream"
        ),
        BenchmarkSpec(
            "SynthWebAction",
            WEB_ACTION,
            "single_turn",
            3136,
            4_194_304,
            None,
            "vigorl_env.data.synth.webaction:SynthWebAction",
        ),
    )
}

__all__ = ["BENCHMARKS", "FAMILIES", "BenchmarkSpec", "TaskFamily", "load_prompt"]

"""The benchmark table (docs/data.md#data_root-layout): which file under DATA_ROOT holds each split of each real env.

Why it exists: `BENCHMARKS` is data (env name, domain tar, answer kind, split files and schemas)
that the loader, the download helper and the docs all read; keeping it apart from parsing keeps
the table reviewable against the spec. Split out of `upstream.py`, which re-exports it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from vigorl_env.data.base import AnswerKind
from vigorl_env.data.splits import VAL_FRACTION

#: Tar stems of `gsarch/vigorl_datasets` (each extracted into DATA_ROOT).
DOMAINS: tuple[str, ...] = ("spatial_reasoning", "visual_search", "web_grounding", "web_action")
PROMPT_NEWLINES: tuple[str, ...] = ("normalized", "literal")

Schema = Literal["E", "R"]


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives: candidate files (first existing wins), schema, optional id filter.

    `subset = ("hash", f, keep)` keeps the records whose `hash_split(id, f) == keep`; the train/val
    pair uses the one split rule (`val` = `hash_split(id, VAL_FRACTION)`, `train` = the rest).
    """

    candidates: tuple[str, ...]
    schema: Schema
    subset: tuple[str, float, bool] | None = None


@dataclass(frozen=True)
class UpstreamSpec:
    """One real benchmark env: its splits, the tar (domain) that ships them, its answer kind."""

    name: str
    domain: str
    answer_kind: AnswerKind
    default_split: str
    splits: Mapping[str, SplitSpec] = field(hash=False)
    project_defined: bool = False

    @property
    def env_id(self) -> str:
        """The registered id (spelled once, by the task table)."""
        from vigorl_env.tasks import BENCHMARKS as TASK_BENCHMARKS

        return TASK_BENCHMARKS[self.name].env_id

    @property
    def fetch_command(self) -> str:
        """The command that puts this benchmark's files under DATA_ROOT (no `--data-root`)."""
        if self.project_defined:
            return f"python -m vigorl_env.data.prepare {self.name.lower()}"
        return f"python -m vigorl_env.data.download {self.domain}"


def _bench(
    name: str,
    domain: str,
    kind: AnswerKind,
    default: str,
    project_defined: bool = False,
    **splits: SplitSpec,
) -> UpstreamSpec:
    return UpstreamSpec(name, domain, kind, default, dict(splits), project_defined)


def _s(schema: Schema, *paths: str, subset: tuple[str, float, bool] | None = None) -> SplitSpec:
    return SplitSpec(tuple(paths), schema, subset)


_VWA = "web_action/vigorl_web_action_MCTS.jsonl"

#: The layout table (docs/data.md#data_root-layout), keyed by env name (the `X` of `ViGoRL/X-v0`).
BENCHMARKS: dict[str, UpstreamSpec] = {
    b.name: b
    for b in (
        _bench(
            "SAT2",
            "spatial_reasoning",
            "option_text",
            "train",
            mcts=_s("E", "spatial_reasoning/vigorl_sat2_MCTS.jsonl"),
            train=_s("R", "spatial_reasoning/vigorl_sat2_train_RL.jsonl"),
            val=_s("R", "spatial_reasoning/vigorl_sat2_val_RL.jsonl"),
            test=_s("E", "spatial_reasoning/sat2_test/sat2_test.jsonl"),
        ),
        _bench(
            "BLINK",
            "spatial_reasoning",
            "option_text",
            "val",
            val=_s("E", "spatial_reasoning/blink/blink_validation.jsonl"),
        ),
        _bench(
            "RoboSpatial",
            "spatial_reasoning",
            "option_text",
            "test",
            True,
            test=_s("E", "spatial_reasoning/robospatial/robospatial_test.jsonl"),
        ),
        _bench(
            "VStar",
            "visual_search",
            "option_text",
            "test",
            test=_s("E", "visual_search/vstar/vstarbench_test.jsonl"),
            test_rl=_s("R", "visual_search/vstar/vstarbench_test_RL.jsonl"),
        ),
        _bench(
            "VisualSearchSA",
            "visual_search",
            "option_text",
            "train",
            mcts=_s("E", "vstar/vigorl_SA_MCTS.jsonl", "visual_search/vigorl_SA_MCTS.jsonl"),
            train=_s("R", "visual_search/vigorl_SA_RL.jsonl"),
        ),
        _bench(
            "OSAtlas",
            "web_grounding",
            "point_in_box",
            "train",
            mcts=_s("E", "web_grounding/vigorl_osatlas_MCTS.jsonl"),
            train=_s("R", "web_grounding/vigorl_osatlas_train_RL.jsonl"),
            val=_s("R", "web_grounding/vigorl_osatlas_val_RL.jsonl"),
        ),
        _bench(
            "ScreenSpotV2",
            "web_grounding",
            "point_in_box",
            "test",
            test=_s("E", "web_grounding/ScreenSpot-V2/screenspot_v2_test.jsonl"),
        ),
        _bench(
            "ScreenSpotPro",
            "web_grounding",
            "point_in_box",
            "test",
            test=_s("E", "web_grounding/ScreenSpot-Pro/screenspot_pro_test.jsonl"),
        ),
        _bench(
            "VisualWebArena",
            "web_action",
            "web_action",
            "train",
            mcts=_s("E", _VWA),
            train=_s("E", _VWA, subset=("hash", VAL_FRACTION, False)),
            val=_s("E", _VWA, subset=("hash", VAL_FRACTION, True)),
        ),
    )
}

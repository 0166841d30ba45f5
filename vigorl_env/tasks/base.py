"""The two records a task is made of: the family (answer kind, crop defaults, prompts) and the
benchmark (frame defaults and where its samples come from)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


@cache
def load_prompt(name: str, newlines: str = "normalized") -> str:
    """A shipped prompt text (docs/protocol.md#system-prompts) by file stem.

    `newlines="literal"` re-creates upstream's un-normalized RL prompt-file form, in which newlines
    were the two characters backslash-n and double quotes were escaped (`\\"`).
    """
    text = (resources.files("vigorl_env") / "assets" / "prompts" / f"{name}.txt").read_text("utf-8")
    text = text.strip()
    if newlines == "normalized":
        return text
    if newlines == "literal":
        return text.replace('"', '\\"').replace("\n", "\\n")
    raise ValueError(f"prompt_newlines must be 'normalized' or 'literal', got {newlines!r}")


@dataclass(frozen=True)
class TaskFamily:
    """A task family (docs/geometry.md#defaults-per-benchmark, docs/protocol.md#system-prompts): answer kind, crop setting and prompt names by variant."""

    name: str
    answer_kind: str
    offset: int
    crop_size: int
    draw_dot: bool
    prompt_grounded: str
    prompt_vanilla: str
    prompt_multi_turn: str
    prompt_mcts: str

    def system_prompt(self, mode: str, variant: str, newlines: str = "normalized") -> str:
        if mode == "multi_turn":
            return load_prompt(self.prompt_multi_turn, newlines)
        name = self.prompt_vanilla if variant == "vanilla" else self.prompt_grounded
        return load_prompt(name, newlines)

    def mcts_prompt(self) -> str:
        """The family's tree-search teacher prompt (one step per call; docs/mcts.md#teacher-prompt),
        without the at-least-K-thoughts suffix the search appends per sample."""
        return load_prompt(self.prompt_mcts)


@dataclass(frozen=True)
class BenchmarkSpec:
    """One env id's defaults (docs/geometry.md#defaults-per-benchmark) and its sample source.

    `source` is "upstream" (files under DATA_ROOT, `vigorl_env.data.upstream`) or a
    "module:Class" path of a procedural dataset, imported only at `make` time.
    """

    name: str
    family: TaskFamily
    default_mode: str
    min_pixels: int
    max_pixels: int
    max_side: int | None
    source: str

    @property
    def env_id(self) -> str:
        return f"ViGoRL/{self.name}-v0"

    @property
    def procedural(self) -> bool:
        return self.source != "upstream"

    @property
    def generator(self) -> type:
        """The procedural dataset class named by `source` (imported on first use)."""
        if not self.procedural:
            raise ValueError(f"{self.name} has no generator: its samples come from upstream files")
        import importlib

        module, cls = self.source.split(":")
        return getattr(importlib.import_module(module), cls)

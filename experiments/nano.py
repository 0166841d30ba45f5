"""The whole pipeline in miniature: search → SFT → GRPO → evaluation, on procedural tasks with a
small Qwen2-VL-architecture student trained from random weights (docs/nano.md).

    # the README's main job: every stage real, on 2 CPU cores in minutes
    uv run python -m experiments.nano cpu

    # one GPU, bigger (≤ 20 minutes); resumable: rerun the same command to go on where it stopped
    python -m experiments.nano gpu

    # one stage again (its outputs are deleted first), or a subset of stages
    uv run python -m experiments.nano cpu --redo sft_grounded
    uv run python -m experiments.nano cpu --stages data search chains

Stages (each writes runs/nano/<preset>/<stage>/ and a `done.json` with its config fingerprint; a
stage whose marker matches is skipped, one whose config or inputs changed runs again from scratch):

1. `data`: the train / test sample ids of SynthSpatial and SynthSearch at the preset's nano scale
   (small model frames, real zooms); the test ids come from the envs' test split, which no training
   stage touches (docs/data.md#the-split-rule).
2. `search`: the real tree search (`experiments.mcts`) with the scripted teacher on train samples,
   linearized into single-turn chains and converted into multi-turn dialogs with real crops.
3. `chains`: the SFT files of each condition: grounded chains, the same chains with every point
   removed (ungrounded), answer-only targets (direct); SynthSearch multi-turn dialogs and
   single-turn chains on a frame of the same image budget.
4. `student`: a Qwen2-VL-architecture model with random weights and a tokenizer built here.
   `pretrain`: the base model every condition starts from, SFT on grounded captions of scenes no
   other stage uses (docs/nano.md#the-base-model; `--pretrain.samples 0`: the random student).
5. `sft_*`: the real SFT trainer (`vigorl_agents.train.sft.train`) per condition.
6. `eval_*`: the real evaluation (`vigorl_agents.eval.evaluate`) on held-out test samples, the
   SFT conditions first.
7. `grpo_*`: the real GRPO trainer (`vigorl_agents.train.grpo.train_grpo`) from the SFT
   checkpoints (docs/nano.md#grpo-stages), then their evaluations.
8. `report`: report.md, summary.json, plots (accuracy and grounding per condition with 95 % CIs,
   SFT loss and GRPO reward/accuracy curves, drawn test trajectories).

A stage that fails leaves `failed.json` in its folder; the stages that do not need it still run
and the report lists it (`--no-keep-going` stops at the first failure instead).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import math
import random
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tyro

from vigorl_agents.search.teacher import TeacherErrors

log = logging.getLogger("experiments.nano")

SPATIAL = "ViGoRL/SynthSpatial-v0"
SEARCH = "ViGoRL/SynthSearch-v0"
PATCH_AREA = 28 * 28
"""Pixels per merged visual token of Qwen2-VL (14-px patches, 2×2 merge)."""
MIN_PIXELS = 3136

# Short system prompts: the student reads them in every sequence, so they are a few dozen tokens
# instead of the paper's hundreds (docs/nano.md#tasks-at-the-nano-scale). Each condition is trained
# and evaluated with the same one.
PROMPT_GROUNDED = (
    "Think in <think> </think>: name each object you look at with its (x, y) point. "
    "Then give the answer option in <answer> </answer>."
)
PROMPT_UNGROUNDED = (
    "Think in <think> </think> about the objects you look at. "
    "Then give the answer option in <answer> </answer>."
)
PROMPT_DIRECT = "Give the answer option in <answer> </answer>."
PROMPT_MULTI_TURN = (
    "Each turn: think in <think> </think> with an (x, y) point, then zoom there with a "
    "<tool_call> or give the answer option in <answer> </answer>."
)

_POINT_PHRASE = re.compile(r"\s*(?:\b(?:at|around)\s+)?\(\s*-?\d+\s*,\s*-?\d+\s*\)")


# =============================================================================================
# Configuration
# =============================================================================================
@dataclass(frozen=True)
class Tasks:
    """The nano scale of the two tasks (docs/nano.md#tasks-at-the-nano-scale)."""

    dataset_seed: int = 0
    spatial_objects: tuple[int, int] = (2, 3)
    """SynthSpatial solids per scene (the envs' default is 3–6): few distractors."""
    spatial_families: tuple[str, ...] = ("left_right", "closer")
    """SynthSpatial question families (two-option questions: chance is 50 %)."""
    spatial_min_dcx: int = 60
    """Canvas px between the two box centres of a left/right question (default 40)."""
    search_width: tuple[int, int] = (560, 700)
    """SynthSearch canvas width range (default 1600–2600): a smaller canvas, so that a frame of
    a few dozen visual tokens shrinks it ~2.5× (a target becomes ~5 px) and a crop enlarges it."""
    search_height: tuple[int, int] = (420, 520)
    search_shapes: tuple[int, int] = (4, 8)
    """Shapes per canvas, targets included (default 25–60)."""
    search_side: tuple[int, int] = (12, 20)
    search_target_side: tuple[int, int] = (10, 14)
    search_blobs: tuple[int, int] = (2, 5)
    spatial_pixels: int = 16 * PATCH_AREA
    """SynthSpatial model frame budget (max_pixels)."""
    search_pixels: int = 48 * PATCH_AREA
    """SynthSearch model frame budget in multi-turn mode."""
    search_offset: int = 12
    """Half side of the zoom window in model-frame px (the region is 2·offset square)."""
    search_crop_size: int = 56
    """Side of the zoomed crop: crop_size / (2·offset) > 1, so a crop shows its region larger."""
    max_images: int = 3
    """Multi-turn image budget (frame + crops); single-turn gets a frame of the same pixel total."""
    n_train_spatial: int = 256
    """Train samples searched per env (indices 0..n-1 of the env's train split)."""
    n_train_search: int = 96
    n_test: int = 80
    """Test samples per env (indices 0..n_test-1 of the env's test split)."""

    def scene(self, env_id: str) -> dict[str, list]:
        """The `scene=` make kwarg of the nano scale (docs/envs.md#scene-parameters)."""
        if env_id == SPATIAL:
            return {
                "n_objects": list(self.spatial_objects),
                "families": list(self.spatial_families),
                "min_dcx": [self.spatial_min_dcx, self.spatial_min_dcx],
            }
        return {
            "width": list(self.search_width),
            "height": list(self.search_height),
            "n_shapes": list(self.search_shapes),
            "side": list(self.search_side),
            "target_side": list(self.search_target_side),
            "n_blobs": list(self.search_blobs),
        }

    @property
    def single_turn_search_pixels(self) -> int:
        """The same image budget for single-turn SynthSearch: frame + (max_images−1) crops."""
        crop = _crop_side(self.search_crop_size)
        return self.search_pixels + (self.max_images - 1) * crop * crop

    @property
    def processor_max_pixels(self) -> int:
        crop = _crop_side(self.search_crop_size)
        need = max(self.spatial_pixels, self.single_turn_search_pixels, crop * crop)
        return math.ceil(need / PATCH_AREA) * PATCH_AREA


@dataclass(frozen=True)
class Student:
    """The student: Qwen2-VL architecture, random weights, tokenizer built locally."""

    hidden: int = 128
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 384
    vision_depth: int = 2
    vision_dim: int = 64
    init_std: float = 0.02
    vocab_size: int = 1024
    """BPE vocabulary of the tokenizer trained on the training chains (special tokens included)."""
    seed: int = 0


FEW_MISTAKES = TeacherErrors(p_distractor=0.05, p_misread=0.05, p_wrong_relation=0.1)
"""The nano search's teacher mistake rates (docs/nano.md#the-teachers-mistakes): with the MCTS
defaults a fifth of the correct SynthSpatial chains name a distractor as the asked object and a
twelfth conclude the opposite of their answer (measured, cpu-long); with these, 3.5 % and 1.9 %.
The answer rates stay, so the search still has wrong branches to prune."""


@dataclass(frozen=True)
class Search:
    """Tree search with the scripted teacher (docs/mcts.md#the-scripted-teacher)."""

    n_simulations: int = 8
    k_min: int = 1
    k_max: int = 2
    """Thoughts before the answer: short chains keep the student's sequences short."""
    chain_kinds: tuple[str, ...] = ("direct",)
    """Chain kinds kept (direct; corrected = wrong attempt, backtrack, correct attempt)."""
    chains_per_sample: int = 2
    seed: int = 42
    workers: int = 2
    """Processes the search is sharded over (each runs its shard's trees asynchronously)."""
    errors: TeacherErrors = field(default_factory=lambda: FEW_MISTAKES)
    """The scripted teacher's mistake rates (docs/mcts.md#the-scripted-teacher). A correct
    chain keeps the mistakes of its steps (a distractor named as the asked object, a wrong
    relation before the right answer), so the nano search uses fewer than the MCTS defaults
    (`FEW_MISTAKES`; docs/nano.md#the-teachers-mistakes)."""


@dataclass(frozen=True)
class SFT:
    epochs: int = 2
    lr: float = 3e-3
    warmup_ratio: float = 0.05
    batch: int = 4
    """Sequences per optimizer step (small: more updates for the same compute on a CPU)."""
    weight_decay: float = 0.01


@dataclass(frozen=True)
class Pretrain:
    """The shared base model (docs/nano.md#the-base-model): SFT on grounded captions of
    SynthSpatial scenes that no other stage uses, before any condition's training."""

    samples: int = 0
    """Captioned scenes: train-split indices after the searched ones (0: no base stage; every
    condition starts from the random student)."""
    epochs: int = 1
    lr: float = 1e-3
    batch: int = 32
    referring: float = 0.0
    """Share of the scenes whose record is a referring query instead of a caption (`Point at the
    red cube.` → `the red cube at (41, 57).`): finding the object a text names, which the chains
    need and captions do not teach (docs/nano.md#the-base-model)."""
    eval_samples: int = 100
    """Held-out scenes (the indices after the captioned ones) the base model captions at the end
    of the stage: how well it points before any condition's training."""


@dataclass(frozen=True)
class GRPO:
    """GRPO after SFT (docs/nano.md#grpo-stages): the same budget for every GRPO condition."""

    steps: int = 8
    prompts_per_step: int = 6
    group_size: int = 4
    """Rollouts per prompt; one optimizer step per RL step (mini_batch = prompts × group)."""
    micro_batch: int = 8
    lr: float = 1e-4
    kl_coef: float = 0.01
    temperature: float = 1.0
    max_response_tokens: int = 320
    """Single-turn response budget: the longest training chains must fit
    (docs/nano.md#token-budgets)."""
    per_turn_tokens: int = 96
    """Multi-turn: per-turn cap; the response budget is max_images turns of it."""
    rollout_batch: int = 16
    """Sequences per generate call of the rollouts."""


@dataclass(frozen=True)
class Evaluation:
    max_tokens: int = 320
    """Per-turn cap on new tokens: the longest training chains must fit (the grounded chains of
    the default search reach about 260 tokens; docs/nano.md#token-budgets)."""
    greedy: bool = True
    max_batch_size: int = 16
    image_dependence_samples: int = 24
    """Test samples of the image-dependence check (single-turn conditions; 0: off)."""


@dataclass(frozen=True)
class Args:
    """One nano pipeline run."""

    tasks: Tasks = field(default_factory=Tasks)
    student: Student = field(default_factory=Student)
    search: Search = field(default_factory=Search)
    pretrain: Pretrain = field(default_factory=Pretrain)
    sft: SFT = field(default_factory=SFT)
    grpo: GRPO = field(default_factory=GRPO)
    eval: Evaluation = field(default_factory=Evaluation)
    device: str = "cpu"
    preset: str = "cpu"
    """Outputs go to out_root/<preset>/."""
    out_root: Path = Path("runs/nano")
    stages: tuple[str, ...] = ()
    """Stages to run (empty: the default list; docs/nano.md#stages)."""
    with_grpo: bool = True
    """Include the GRPO stages and their evaluations in the default list."""
    publish: Path | None = None
    """Also copy report.md, summary.json and the plots here (the gpu preset: the committed
    results folder, benchmarks/results/nano/)."""
    keep_going: bool = True
    """A failed stage is recorded (failed.json) and the stages that do not need it still run."""
    redo: tuple[str, ...] = ()
    """Stages to run again even when done (their outputs are deleted first)."""
    n_trajectories: int = 4
    """Test trajectories drawn in the report (half correct, half wrong where possible)."""
    machine: str | None = None
    """The machine named in the report and summary.json (default: the one the evaluations
    recorded: CPU model and cores, plus the GPU when they ran on CUDA). For a report redrawn from
    copied-back results of a run whose evaluations predate the GPU label."""
    lanes: int = 1
    """Processes that run the conditions side by side after the shared stages (data, search,
    chains, student): each lane is one condition's SFT → evaluation → GRPO → evaluation
    (docs/nano.md#lanes). A GPU holds several nano students at once and each lane prepares its
    own batches, so 6 lanes finish the per-condition stages in about the time of the slowest."""


def _crop_side(crop_size: int) -> int:
    """The crop's effective side (docs/geometry.md#crop: rounded to a multiple of 28)."""
    return max(28, round(crop_size / 28) * 28)


PRESETS: dict[str, tuple[str, Args]] = {
    "cpu": (
        "The README's main job: every stage real on 2 CPU cores in under 10 minutes; small effects.",
        Args(
            student=Student(init_std=0.06),
            pretrain=Pretrain(samples=1500, epochs=3, lr=1e-3, batch=8, eval_samples=40),
            # 8 steps of 6 prompts with the 320-token caps: 10.0 min in all; 6 of 6: 9.6 min
            grpo=GRPO(steps=6, prompts_per_step=4),
        ),
    ),
    "gpu": (
        "One GPU (H100), ≤ 20 minutes, resumable stage by stage: larger frames, more samples, "
        "a larger student and longer SFT, the conditions in 6 lanes side by side.",
        Args(
            tasks=Tasks(
                search_pixels=64 * PATCH_AREA,
                search_offset=16,
                search_crop_size=84,
                max_images=3,
                n_train_spatial=4000,
                n_train_search=600,
                n_test=400,
            ),
            student=Student(
                hidden=256,
                layers=6,
                heads=8,
                kv_heads=2,
                intermediate=768,
                vision_depth=4,
                vision_dim=128,
                init_std=0.06,
            ),
            search=Search(chain_kinds=("direct", "corrected"), chains_per_sample=4, workers=12),
            pretrain=Pretrain(samples=12000, epochs=5, lr=1e-3, batch=32, eval_samples=200),
            sft=SFT(epochs=2, lr=1e-3, batch=32),
            grpo=GRPO(
                steps=6,
                prompts_per_step=16,
                group_size=8,
                micro_batch=64,
                lr=1e-4,
                max_response_tokens=512,  # corrected chains reach ~510 tokens
                per_turn_tokens=128,
                rollout_batch=128,
            ),
            eval=Evaluation(max_tokens=512, max_batch_size=128),
            device="cuda",
            preset="gpu",
            publish=Path("benchmarks/results/nano"),
            lanes=6,
        ),
    ),
    "cpu-long": (
        "2 CPU cores, about an hour: the cpu preset's tasks with a base model (pretrain stage) "
        "and budgets at which the student learns to point and answer.",
        Args(
            tasks=Tasks(n_train_spatial=1500, n_train_search=200, n_test=200),
            student=Student(
                hidden=128,
                layers=6,
                heads=8,
                kv_heads=2,
                intermediate=384,
                vision_depth=2,
                vision_dim=128,
                init_std=0.06,
            ),
            pretrain=Pretrain(samples=3000, epochs=16, lr=1e-3, batch=16, eval_samples=100),
            sft=SFT(epochs=6, lr=1e-3, batch=16),
            preset="cpu-long",
        ),
    ),
    "smoke": (
        "Seconds: the tests' structural run (tiny sizes; numbers mean nothing).",
        Args(
            tasks=Tasks(n_train_spatial=8, n_train_search=8, n_test=4),
            student=Student(
                hidden=64,
                layers=1,
                heads=2,
                kv_heads=1,
                intermediate=128,
                vision_depth=1,
                vision_dim=32,
            ),
            search=Search(n_simulations=3, chains_per_sample=2),
            pretrain=Pretrain(samples=8, epochs=2, lr=3e-3, batch=4, eval_samples=4),
            sft=SFT(epochs=3, lr=3e-3, batch=4),
            grpo=GRPO(
                steps=2,
                prompts_per_step=4,
                group_size=2,
                max_response_tokens=24,
                per_turn_tokens=16,
            ),
            eval=Evaluation(max_tokens=24),
            preset="smoke",
            n_trajectories=2,
        ),
    ),
}


# =============================================================================================
# Conditions
# =============================================================================================
@dataclass(frozen=True)
class Condition:
    """One evaluated model: which env, which weights (a stage), how it is prompted."""

    name: str
    env_id: str
    model_stage: str | None
    """The training stage whose checkpoint is evaluated (None: the untrained student)."""
    system_prompt: str
    mode: str = "single_turn"
    variant: str = "grounded"
    frame: str = "spatial"
    """Which frame budget: spatial, search (multi-turn frame) or search_single (same budget)."""


SFT_CONDITIONS: tuple[Condition, ...] = (
    Condition("untrained", SPATIAL, None, PROMPT_GROUNDED),
    Condition("sft_direct", SPATIAL, "sft_direct", PROMPT_DIRECT),
    Condition("sft_grounded", SPATIAL, "sft_grounded", PROMPT_GROUNDED),
    Condition("sft_ungrounded", SPATIAL, "sft_ungrounded", PROMPT_UNGROUNDED),
    Condition(
        "sft_multi_turn", SEARCH, "sft_multi_turn", PROMPT_MULTI_TURN, "multi_turn", frame="search"
    ),
    Condition("sft_single_turn", SEARCH, "sft_single_turn", PROMPT_GROUNDED, frame="search_single"),
)
GRPO_CONDITIONS: tuple[Condition, ...] = (
    Condition("sft_grounded_grpo", SPATIAL, "grpo_grounded", PROMPT_GROUNDED),
    Condition("sft_ungrounded_grpo", SPATIAL, "grpo_ungrounded", PROMPT_UNGROUNDED),
    Condition("vanilla_grpo", SPATIAL, "grpo_vanilla", PROMPT_UNGROUNDED, variant="vanilla"),
    Condition(
        "multi_turn", SEARCH, "grpo_multi_turn", PROMPT_MULTI_TURN, "multi_turn", frame="search"
    ),
    Condition("single_turn", SEARCH, "grpo_single_turn", PROMPT_GROUNDED, frame="search_single"),
)
CONDITIONS = {c.name: c for c in SFT_CONDITIONS + GRPO_CONDITIONS}


def env_kwargs(tasks: Tasks, cond: Condition | None = None, frame: str | None = None) -> dict:
    """Make kwargs of the nano envs (docs/envs.md#make-kwargs)."""
    frame = frame or (cond.frame if cond else "spatial")
    kw: dict[str, Any] = {"dataset_seed": tasks.dataset_seed}
    if frame == "spatial":
        kw["max_pixels"] = tasks.spatial_pixels
        kw["scene"] = tasks.scene(SPATIAL)
    else:
        kw["scene"] = tasks.scene(SEARCH)
        kw.update(
            max_pixels=tasks.search_pixels
            if frame == "search"
            else tasks.single_turn_search_pixels,
            offset=tasks.search_offset,
            crop_size=tasks.search_crop_size,
            max_images=tasks.max_images,
        )
    if cond is not None:
        kw.update(mode=cond.mode, system_prompt=cond.system_prompt)
        if cond.variant != "grounded":
            kw["variant"] = cond.variant
    return kw


# =============================================================================================
# Stage machinery: done markers, fingerprints, progress
# =============================================================================================
def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(_jsonable(obj), sort_keys=True).encode()).hexdigest()


@dataclass
class Stage:
    name: str
    deps: tuple[str, ...]
    config: Callable[[Args], Any]
    """The part of the run's config this stage's outputs depend on."""
    run: Callable[[Args, Path, Pipeline], dict[str, Any]]
    resumable: bool = False
    """The stage's run picks up its own partial outputs (training stages: the trainer resumes
    from the latest checkpoint in the folder; evaluations: the episodes already written), so an
    interrupted run of the same fingerprint keeps its folder instead of starting from scratch
    (docs/nano.md#stages)."""


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


STARTED = "started.json"
"""Written when a stage starts: the fingerprint its partial outputs belong to."""


class Pipeline:
    """Runs stages in order; a stage is skipped when its `done.json` holds the fingerprint of its
    config and of its inputs' markers, so an interrupted run resumes at the first unfinished stage."""

    def __init__(self, args: Args, stages: dict[str, Stage]):
        self.args = args
        self.stages = stages
        self.root = args.out_root / args.preset
        self.failed: dict[str, str] = {}
        """Stages that failed or were skipped for a failed input, over every `run` of this
        pipeline (a later `run` skips what needs them)."""

    def dir(self, name: str) -> Path:
        return self.root / name

    def marker(self, name: str) -> dict[str, Any] | None:
        p = self.dir(name) / "done.json"
        return _read_json(p) if p.is_file() else None

    def fingerprint_of(self, name: str) -> str:
        st = self.stages[name]
        deps = {}
        for d in st.deps:
            m = self.marker(d)
            if m is None:
                raise RuntimeError(f"stage {name} needs stage {d}, which has not run")
            deps[d] = m["fingerprint"]
        return fingerprint({"stage": name, "config": st.config(self.args), "deps": deps})

    def result(self, name: str) -> dict[str, Any]:
        m = self.marker(name)
        if m is None:
            raise RuntimeError(f"stage {name} has not run")
        return m["result"]

    def current(self, name: str) -> bool:
        """The stage's outputs exist and were made from the current config and inputs."""
        m = self.marker(name)
        try:
            return m is not None and m["fingerprint"] == self.fingerprint_of(name)
        except RuntimeError:
            return False

    def failure(self, name: str) -> dict[str, Any] | None:
        p = self.dir(name) / "failed.json"
        return _read_json(p) if p.is_file() else None

    def _resumes(self, name: str, fp: str) -> bool:
        """A resumable stage whose folder was started with the same fingerprint (and was not asked
        to be redone) keeps its partial outputs."""
        started = self.dir(name) / STARTED
        return (
            self.stages[name].resumable
            and name not in self.args.redo
            and started.is_file()
            and _read_json(started).get("fingerprint") == fp
        )

    def run(self, names: list[str]) -> dict[str, float]:
        """Run `names` in order. A stage that raises leaves `failed.json` (error and traceback) in
        its folder; with `keep_going` the stages that need it are skipped and the others run, so
        the report still shows every condition that could be measured."""
        import traceback

        from tqdm.auto import tqdm

        times: dict[str, float] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        overall = tqdm(names, desc=f"nano {self.args.preset}", unit="stage", position=0)
        for name in overall:
            overall.set_postfix_str(name)
            blocked = [d for d in self.stages[name].deps if d in self.failed]
            if blocked:
                self.failed[name] = f"needs {', '.join(blocked)}, which failed"
                log.error("stage %s: skipped, %s", name, self.failed[name])
                continue
            fp = self.fingerprint_of(name)
            m = self.marker(name)
            if m is not None and m["fingerprint"] == fp and name not in self.args.redo:
                log.info("stage %s: done (%.1f s earlier), skipped", name, m["seconds"])
                times[name] = m["seconds"]
                continue
            out = self.dir(name)
            if self._resumes(name, fp):
                log.info("stage %s: resuming the unfinished run in %s", name, out)
                (out / "failed.json").unlink(missing_ok=True)
            elif out.exists():
                shutil.rmtree(out)  # a stage restarts from scratch: no half-written outputs
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / STARTED, {"stage": name, "fingerprint": fp})
            t0 = time.monotonic()
            log.info("stage %s: running", name)
            try:
                result = self.stages[name].run(self.args, out, self)
            except Exception as e:
                if not self.args.keep_going or name == "report":
                    raise
                self.failed[name] = f"{type(e).__name__}: {e}"
                _write_json(
                    out / "failed.json",
                    {
                        "stage": name,
                        "error": self.failed[name],
                        "traceback": traceback.format_exc(),
                    },
                )
                log.error("stage %s failed (%s); going on without it", name, self.failed[name])
                continue
            seconds = time.monotonic() - t0
            _write_json(
                out / "done.json",
                {"stage": name, "fingerprint": fp, "seconds": seconds, "result": result},
            )
            times[name] = seconds
            log.info("stage %s: done in %.1f s", name, seconds)
        overall.close()
        return times


class _StepBar:
    """A progress bar over optimizer steps that follows a trainer's metrics.jsonl (the trainer has
    no callback; it appends one line per logged step)."""

    def __init__(self, path: Path, total: int, desc: str):
        from tqdm.auto import tqdm

        self.path, self.bar = path, tqdm(total=total, desc=desc, unit="step", position=1)
        self.started = False
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def _follow(self) -> None:
        while not self.stop.wait(0.5):
            self._update()

    def _update(self) -> None:
        if not self.path.is_file():
            return
        last = None
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                last = json.loads(line)
            except json.JSONDecodeError:
                continue
        if last and "step" in last:
            step = int(last["step"])
            if not self.started or step < self.bar.n:
                # a resumed run: steps before the checkpoint are not this call's work (the
                # trainer cuts their records past the checkpoint when it starts)
                self.bar.initial, self.bar.start_t = step, time.time()
            self.started = True
            self.bar.n = step
            if "loss" in last:
                self.bar.set_postfix(loss=f"{last['loss']:.3f}", refresh=False)
            self.bar.refresh()

    def __enter__(self) -> _StepBar:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self._update()
        self.bar.close()


# =============================================================================================
# Stage: data
# =============================================================================================
def stage_data(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
    """Sample ids of every split used, the frame sizes and the zoom factor of a crop."""
    import gymnasium as gym

    import vigorl_env  # noqa: F401

    t = args.tasks
    result: dict[str, Any] = {"envs": {}}
    plans = {
        "spatial": (SPATIAL, t.n_train_spatial, "spatial"),
        "search": (SEARCH, t.n_train_search, "search"),
        "search_single": (SEARCH, t.n_train_search, "search_single"),
    }
    for key, (env_id, n_train, frame) in plans.items():
        kw = env_kwargs(t, frame=frame)
        ids = {}
        sizes = set()
        for split, n in (("train", n_train), ("test", t.n_test)):
            env = gym.make(env_id, split=split, **kw)
            u = env.unwrapped
            ids[split] = [u.sample_id_at(i) for i in range(n)]
            _, info = env.reset(options={"index": 0})
            sizes.add(tuple(info["frame"]["model_size"]))
            if key == "search" and split == "test":
                w, h = info["frame"]["model_size"]
                crop, cinfo = u.crop_at((w // 2, h // 2))
                region = (cinfo.box[2] - cinfo.box[0], cinfo.box[3] - cinfo.box[1])
                result["zoom"] = {
                    "region": list(region),
                    "crop": list(crop.size),
                    "factor": crop.size[0] / region[0],
                }
            env.close()
        overlap = set(ids["train"]) & set(ids["test"])
        if overlap:  # procedural splits are separate random streams; this must never happen
            raise AssertionError(f"{env_id}: test ids also in train: {sorted(overlap)[:3]}")
        result["envs"][key] = {
            "env_id": env_id,
            "env_kwargs": kw,
            **ids,
            "frame_sizes": sorted(sizes),
        }
    if result["zoom"]["factor"] <= 1.0:
        raise ValueError(
            f"a crop must show its region larger than the frame does; got zoom "
            f"{result['zoom']['factor']:.2f} (raise search_crop_size or lower search_offset)"
        )
    _write_json(out / "splits.json", result)
    return {
        "zoom": result["zoom"],
        "n": {k: {s: len(v[s]) for s in ("train", "test")} for k, v in result["envs"].items()},
    }


# =============================================================================================
# Stage: search (teacher → trees → chains)
# =============================================================================================
SEARCH_JOBS = {
    # job: (env id, frame setting, relative cost per sample, measured on 2 CPU cores)
    "spatial": (SPATIAL, "spatial", 1.0),
    "search": (SEARCH, "search", 4.0),
    "search_single": (SEARCH, "search_single", 4.0),
}


def _search_shard(
    key: str, n: int, tasks: Tasks, search: Search, shards: int, shard: int, out: Path
) -> dict[str, Any]:
    """One shard of one search job, in a worker process: the real MCTS with the scripted teacher
    (`experiments.mcts`), its trees in out/<key>/shard<i>/trees/."""
    from experiments import mcts
    from vigorl_agents.search.run import RunConfig
    from vigorl_agents.search.tree import MCTSConfig

    logging.getLogger("vigorl_agents.search.run").setLevel(logging.WARNING)
    env_id, frame, _ = SEARCH_JOBS[key]
    kw = env_kwargs(tasks, frame=frame)
    kw.pop("max_images", None)  # the search is single-turn
    margs = mcts.Args(
        run=RunConfig(
            env_ids=(env_id,),
            split="train",
            n_samples=n,
            seed=search.seed,
            env_kwargs=kw,
            max_in_flight=16,
            shards=shards,
            shard=shard,
            mcts=MCTSConfig(
                n_simulations=search.n_simulations, k_min=search.k_min, k_max=search.k_max
            ),
        ),
        errors=search.errors,
        name=f"{key}/shard{shard}",
        out_root=out,
        linearize=False,  # the linearization reads every shard's trees at once
    )
    summary = mcts.run(margs)["trees"][env_id]
    return summary


def _linearize_job(key: str, tasks: Tasks, tree_files: list[str], sft: Path) -> int:
    """Single-turn chains of one shard's trees into `sft/`, and (SynthSearch multi-turn frames)
    the multi-turn dialogs with real crops, in a worker process."""
    from vigorl_agents.cli import format_env_kwargs
    from vigorl_agents.search import linearize

    env_id, frame, _ = SEARCH_JOBS[key]
    kw = env_kwargs(tasks, frame=frame)
    kw.pop("max_images", None)
    sft.mkdir(parents=True, exist_ok=True)
    argv = [*tree_files, str(sft / "single_turn.jsonl")]
    argv += ["--domain", "visual_search" if env_id == SEARCH else "spatial"]
    argv += ["--env-kwargs", *format_env_kwargs(kw)]
    if key == "search":
        argv += ["--multi-turn", str(sft / "multi_turn")]
    return linearize.main(argv)


def stage_search(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
    """The real tree search on the train samples of each frame setting, sharded over
    `search.workers` processes (`RunConfig.shards`: disjoint ids by a stable hash), then
    linearization into single-turn chains and, for the multi-turn frames, the conversion into
    multi-turn dialogs with real crops."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    t, s = args.tasks, args.search
    n = {
        "spatial": t.n_train_spatial,
        "search": t.n_train_search,
        "search_single": t.n_train_search,
    }
    cost = {k: n[k] * SEARCH_JOBS[k][2] for k in SEARCH_JOBS}
    shards = {k: max(1, round(s.workers * c / sum(cost.values()))) for k, c in cost.items()}
    tasks = [(k, i) for k in SEARCH_JOBS for i in range(shards[k])]
    summaries: dict[str, list[dict[str, Any]]] = {k: [] for k in SEARCH_JOBS}
    ctx = mp.get_context("spawn")  # no forked copies of threads or of an imported torch
    with ProcessPoolExecutor(max_workers=max(1, s.workers), mp_context=ctx) as pool:
        futs = {pool.submit(_search_shard, k, n[k], t, s, shards[k], i, out): k for k, i in tasks}
        bar = tqdm(total=len(futs), desc="search shards", unit="shard", position=1)
        for fut in as_completed(futs):
            summaries[futs[fut]].append(fut.result())
            bar.update(1)
        bar.close()
        # one linearization per shard, in parallel (each renders its samples' frames and crops)
        lin = {
            pool.submit(_linearize_job, k, t, [x["file"]], Path(x["file"]).parents[1] / "sft"): k
            for k in SEARCH_JOBS
            for x in summaries[k]
        }
        bar = tqdm(total=len(lin), desc="linearize", unit="shard", position=1)
        for fut in as_completed(lin):
            if fut.result() != 0:
                raise RuntimeError(f"linearization of the {lin[fut]} trees failed")
            bar.update(1)
        bar.close()
    result = {}
    for k, parts in summaries.items():
        trees = sum(p["trees"] for p in parts)
        result[k] = {
            "trees": trees,
            "errors": sum(p["errors"] for p in parts),
            "root_correct_ratio": sum(p["root_correct_ratio"] * p["trees"] for p in parts)
            / max(1, trees),
            "teacher_calls": sum(p["n_llm_calls"] for p in parts),
            "shards": len(parts),
        }
    return result


# =============================================================================================
# Stage: chains (SFT files per condition)
# =============================================================================================
def remove_points(text: str) -> str:
    """The same chain with every (x, y) point removed, with the 'at'/'around' that introduced it."""
    return _POINT_PHRASE.sub("", text)


def _cap(
    records: list[dict[str, Any]],
    kinds: tuple[str, ...],
    per_sample: int,
    kind_of: Callable[[dict], str],
) -> list[dict[str, Any]]:
    """Keep train-side chains of `kinds` (the split rule's val side is left out), at most
    `per_sample` per sample (a seeded choice)."""
    by_sample: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if kind_of(r) in kinds and r.get("split", "train") == "train":
            by_sample.setdefault(r["sample_id"], []).append(r)
    out = []
    for sid in sorted(by_sample):
        rs = by_sample[sid]
        if len(rs) > per_sample:
            rs = random.Random(f"nano:{sid}").sample(rs, per_sample)
        out.extend(rs)
    return out


def _with_system(rec: dict[str, Any], prompt: str) -> dict[str, Any]:
    msgs = [dict(m) for m in rec["messages"]]
    if msgs[0]["role"] == "system":
        msgs[0]["content"] = prompt
    else:
        msgs.insert(0, {"role": "system", "content": prompt})
    return {**rec, "messages": msgs}


def _map_assistant(rec: dict[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    msgs = [dict(m) for m in rec["messages"]]
    for m in msgs:
        if m["role"] == "assistant":
            m["content"] = fn(m["content"])
    return {**rec, "messages": msgs}


def _write_records(records: list[dict[str, Any]], path: Path) -> None:
    """Write records (image paths absolute: the images stay in the search stage's folders)."""
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def points_inside_frame(rec: dict[str, Any]) -> tuple[int, int]:
    """(points inside the record's model frame, all points) over its assistant turns."""
    from vigorl_env.protocol import all_think_points

    w, h = rec["frame"]["model_size"]
    pts = [
        p
        for m in rec["messages"]
        if m["role"] == "assistant"
        for p in all_think_points(m["content"])
    ]
    return sum(0 <= x < w and 0 <= y < h for x, y in pts), len(pts)


def _mistake_shares(records: list[dict[str, Any]]) -> dict[str, float]:
    """Share of the chains that show each of the teacher's mistakes in their text
    (`stated_mistakes`): what the grounded and ungrounded students are taught to write."""
    from vigorl_agents.search.teacher import stated_mistakes

    found = [stated_mistakes(r["messages"][-1]["content"]) for r in records]
    return {k: sum(f[k] for f in found) / max(1, len(found)) for k in found[0]} if found else {}


def stage_chains(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
    from vigorl_agents.jsonl import read_jsonl
    from vigorl_env.protocol import all_think_points

    s = args.search
    src = pipe.dir("search")
    stats: dict[str, Any] = {}

    def load(job: str, rel: str) -> list[dict[str, Any]]:
        """Records of every shard of a search job, image paths made absolute (they are relative
        to each shard's own output folder)."""
        out_recs = []
        for path in sorted((src / job).glob(f"shard*/sft/{rel}")):
            for _, r in read_jsonl(path):
                r["images"] = [str((path.parent / p).resolve()) for p in r["images"]]
                out_recs.append(r)
        return out_recs

    spatial = _cap(
        load("spatial", "single_turn.jsonl"),
        s.chain_kinds,
        s.chains_per_sample,
        lambda r: r["kind"],
    )
    if not spatial:
        raise RuntimeError("the search gave no SynthSpatial chains")
    inside, total = map(sum, zip(*(points_inside_frame(r) for r in spatial), strict=True))
    if inside != total:
        raise AssertionError(f"{total - inside} of {total} chain points lie outside the frame")
    grounded = [_with_system(r, PROMPT_GROUNDED) for r in spatial]
    ungrounded = [
        _map_assistant(_with_system(r, PROMPT_UNGROUNDED), remove_points) for r in spatial
    ]
    if any(all_think_points(m["content"]) for r in ungrounded for m in r["messages"]):
        raise AssertionError("a point survived in an ungrounded chain")
    direct = [
        {
            **_with_system(r, PROMPT_DIRECT),
            "kind": "direct",
            "messages": [
                *_with_system(r, PROMPT_DIRECT)["messages"][:-1],
                {"role": "assistant", "content": f"<answer> {r['gt_answer']} </answer>"},
            ],
        }
        for r in spatial
    ]
    files = {
        "sft_grounded": grounded,
        "sft_ungrounded": ungrounded,
        "sft_direct": direct,
    }
    for name, recs in files.items():
        _write_records(recs, out / f"{name}.jsonl")
    stats["spatial"] = {
        "records": len(spatial),
        "samples": len({r["sample_id"] for r in spatial}),
        "points": total,
        "teacher_mistakes": _mistake_shares(spatial),
    }

    multi = [  # at least one zoom (a frame-only dialog teaches no tool call), within the budget
        r
        for r in load("search", "multi_turn/multi_turn.jsonl")
        if 2 <= len(r["images"]) <= args.tasks.max_images
    ]
    multi = _cap(
        multi, s.chain_kinds, s.chains_per_sample, lambda r: r["meta"].get("chain_kind", "direct")
    )
    multi = [_with_system(r, PROMPT_MULTI_TURN) for r in multi]
    single = _cap(
        load("search_single", "single_turn.jsonl"),
        s.chain_kinds,
        s.chains_per_sample,
        lambda r: r["kind"],
    )
    single = [_with_system(r, PROMPT_GROUNDED) for r in single]
    if not multi or not single:
        raise RuntimeError(
            f"SynthSearch chains: {len(multi)} multi-turn, {len(single)} single-turn"
        )
    _write_records(multi, out / "sft_multi_turn.jsonl")
    _write_records(single, out / "sft_single_turn.jsonl")
    stats["search"] = {
        "multi_turn_records": len(multi),
        "multi_turn_crops": sum(len(r["images"]) - 1 for r in multi),
        "single_turn_records": len(single),
    }
    return stats


# =============================================================================================
# Stage: student
# =============================================================================================
def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE trained here on the nano corpus (the training chains, prompts and protocol
    strings), with Qwen's special tokens and chat template: the student's sequences get short (a
    template phrase is a few tokens), and digits are split one per token so that every coordinate
    is spelled the same way (docs/nano.md#the-student)."""
    from vigorl_agents.models.tiny import build_tokenizer as bpe_tokenizer

    return bpe_tokenizer(texts, vocab_size, split_digits=True)


def tokenizer_corpus(chain_files: list[Path]) -> list[str]:
    """Texts the tokenizer is trained on: every message of the training chains (train split only)
    and the protocol's fixed strings."""
    from experiments.nano_pretrain import PROMPT_CAPTION, PROMPT_POINT, QUESTION_CAPTION
    from vigorl_agents.jsonl import read_jsonl
    from vigorl_env import protocol

    texts = [PROMPT_GROUNDED, PROMPT_UNGROUNDED, PROMPT_DIRECT, PROMPT_MULTI_TURN]
    texts += [PROMPT_CAPTION, QUESTION_CAPTION, PROMPT_POINT, "Point at"]
    texts += [protocol.FORCED_PREFIX, protocol.BACKTRACK, protocol.format_tool_call(12, 345)]
    texts += [protocol.OBSERVATION_TEXT_DOT, protocol.OBSERVATION_TEXT_NO_DOT]
    for path in chain_files:
        for _, rec in read_jsonl(path):
            texts += [m["content"] for m in rec["messages"]]
    return texts


def build_student(out: Path, st: Student, max_pixels: int, corpus: list[str]) -> tuple[Path, int]:
    """A Qwen2-VL with random weights (init std `st.init_std`) and a tokenizer trained here
    (`build_tokenizer`), processor bounds [MIN_PIXELS, max_pixels] so that the envs' frames pass
    unchanged (docs/geometry.md)."""
    import torch
    from transformers import (
        AutoModelForImageTextToText,
        GenerationConfig,
        Qwen2VLConfig,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from vigorl_agents.models.tiny import CHAT_TEMPLATE, EOS_TOKEN, PAD_TOKEN, SPECIAL_TOKENS

    tok = build_tokenizer(corpus, st.vocab_size)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = st.hidden // st.heads
    if head_dim % 16:
        raise ValueError(f"head_dim {head_dim} must be a multiple of 16 (M-RoPE sections)")
    q = head_dim // 16  # M-RoPE sections (t, h, w) sum to head_dim / 2
    text = {
        "vocab_size": len(tok),
        "hidden_size": st.hidden,
        "intermediate_size": st.intermediate,
        "num_hidden_layers": st.layers,
        "num_attention_heads": st.heads,
        "num_key_value_heads": st.kv_heads,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "initializer_range": st.init_std,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10_000.0,
            "mrope_section": [2 * q, 3 * q, 3 * q],
        },
        "bos_token_id": ids[PAD_TOKEN],
        "eos_token_id": ids[EOS_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
        "dtype": "float32",
    }
    vision = {
        "depth": st.vision_depth,
        "embed_dim": st.vision_dim,
        "hidden_size": st.hidden,
        "mlp_ratio": 2,
        "num_heads": max(1, st.vision_dim // 32),
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": st.init_std,
    }
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=True,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(st.seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    eos = [ids[EOS_TOKEN], ids[PAD_TOKEN]]
    model.generation_config = GenerationConfig(
        bos_token_id=eos[1], eos_token_id=eos, pad_token_id=eos[1]
    )
    model.save_pretrained(out)
    Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=max_pixels),
        video_processor=Qwen2VLVideoProcessor(min_pixels=MIN_PIXELS, max_pixels=max_pixels),
        tokenizer=tok,
        chat_template=CHAT_TEMPLATE,
    ).save_pretrained(out)
    return out, sum(p.numel() for p in model.parameters())


def stage_student(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
    chains = sorted(pipe.dir("chains").glob("sft_*.jsonl"))
    corpus = tokenizer_corpus(chains)
    model, n = build_student(out / "model", args.student, args.tasks.processor_max_pixels, corpus)
    return {"model": str(model), "parameters": n, "chain_tokens": chain_tokens(args, model, chains)}


def chain_tokens(args: Args, model: Path, chains: list[Path]) -> dict[str, dict[str, float]]:
    """Tokens per assistant turn of each condition's training chains, against the caps the
    evaluation and GRPO give a turn: a chain longer than the cap cannot be written to its
    answer, so a condition whose chains often exceed it is scored as unanswered for its budget,
    not its skill (docs/nano.md#token-budgets). Logs a warning above 1 %."""
    from transformers import AutoTokenizer

    from vigorl_agents.jsonl import read_jsonl

    tok = AutoTokenizer.from_pretrained(model)
    out = {}
    for path in chains:
        name = path.stem
        multi = name == "sft_multi_turn"
        cap = min(
            args.eval.max_tokens,
            args.grpo.per_turn_tokens if multi else args.grpo.max_response_tokens,
        )
        lengths = sorted(
            len(tok(m["content"], add_special_tokens=False)["input_ids"])
            for _, r in read_jsonl(path)
            for m in r["messages"]
            if m["role"] == "assistant"
        )
        if not lengths:
            continue
        over = sum(n > cap for n in lengths) / len(lengths)
        out[name] = {
            "median": lengths[len(lengths) // 2],
            "p99": lengths[min(len(lengths) - 1, int(0.99 * len(lengths)))],
            "max": lengths[-1],
            "cap": cap,
            "over_cap": over,
        }
        if over > 0.01:
            log.warning(
                "%s: %.1f %% of the training turns are longer than the %d-token cap of the "
                "evaluation/GRPO (longest %d): raise --eval.max-tokens / --grpo.*-tokens",
                name, 100 * over, cap, lengths[-1],
            )  # fmt: skip
    return out


# =============================================================================================
# Stage: SFT
# =============================================================================================
SFT_SAVES = 8
"""Checkpoints (with optimizer state) a training stage writes on its way: an interrupted stage
resumes from the latest (docs/nano.md#stages); the intermediate ones are deleted at the end."""


def _keep_only(out: Path, final: str) -> None:
    """Delete a finished training stage's intermediate checkpoints (they were for resuming)."""
    for ckpt in out.glob("checkpoint-*"):
        if ckpt.resolve() != Path(final).resolve():
            shutil.rmtree(ckpt)


def _train_records(out: Path) -> list[dict[str, Any]]:
    """The trainer's per-step train records of the whole run, also where this call resumed
    (its returned history starts at the checkpoint; metrics.jsonl was cut back to it)."""
    from vigorl_agents.jsonl import read_jsonl
    from vigorl_agents.train.checkpoint import METRICS_FILE

    return [r for _, r in read_jsonl(out / METRICS_FILE) if r.get("split", "train") == "train"]


def run_sft(args: Args, out: Path, data: Path, model: str, sft: SFT, label: str) -> dict[str, Any]:
    """The real SFT trainer on `data` from `model` with `sft`'s schedule, a progress bar named
    `label`; returns the checkpoint and the loss curve. Resumes from a checkpoint in `out`."""
    from vigorl_agents.train.sft import SFTConfig, train

    n = sum(1 for _ in data.open(encoding="utf-8"))
    steps = sft.epochs * math.ceil(n / sft.batch)
    cfg = SFTConfig(
        model=model,
        train_file=str(data),
        output_dir=str(out),
        epochs=sft.epochs,
        lr=sft.lr,
        warmup_ratio=sft.warmup_ratio,
        weight_decay=sft.weight_decay,
        per_device_batch=sft.batch,
        grad_accum=1,
        cutoff_len=4096,
        freeze_vision=False,  # random weights: the vision tower must learn too
        seed=args.student.seed,
        log_every=1,
        save_every=max(1, math.ceil(steps / SFT_SAVES)),
        eval_every=10**9,
        save_optimizer=True,  # resumable
        device=args.device,
        min_pixels=MIN_PIXELS,
        max_pixels=args.tasks.processor_max_pixels,
    )
    with _StepBar(out / "metrics.jsonl", steps, label):
        res = train(cfg)
    _keep_only(out, res["checkpoint"])
    losses = [r["loss"] for r in _train_records(out) if "loss" in r]
    return {
        "checkpoint": res["checkpoint"],
        "steps": res["step"],
        "records": n,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "loss_curve": losses,
    }


def stage_pretrain(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
    """The base model every condition starts from: with `pretrain.samples` > 0, the real SFT
    trainer on grounded captions (`experiments.nano_pretrain`) of SynthSpatial train scenes after
    the searched ones, from the random student; with 0, the random student itself."""
    p = args.pretrain
    student = pipe.result("student")["model"]
    if p.samples <= 0:
        return {"checkpoint": student, "records": 0}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from experiments.nano_pretrain import caption_shard, caption_texts, score_captions

    first = args.tasks.n_train_spatial  # the searched samples are indices 0..n_train_spatial-1
    held_out = range(first + p.samples, first + p.samples + p.eval_samples)
    jobs = [(list(range(first, first + p.samples)), out), (list(held_out), out / "held_out")]
    workers = max(1, min(args.search.workers, p.samples))
    kw = env_kwargs(args.tasks, frame="spatial")
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futs = [
            [
                pool.submit(caption_shard, SPATIAL, kw, idx[i::workers], where, share)
                for i in range(workers)
            ]
            for (idx, where), share in zip(jobs, (p.referring, 0.0), strict=True)
        ]
        records, held = (
            sorted((r for f in fs for r in f.result()), key=lambda r: r["sample_id"]) for fs in futs
        )
    searched = set(_read_json(pipe.dir("data") / "splits.json")["envs"]["spatial"]["train"])
    if searched & {r["sample_id"] for r in records + held}:
        raise AssertionError("a caption scene is also a searched training sample")
    data = out / "captions.jsonl"
    _write_records(records, data)
    sft = SFT(epochs=p.epochs, lr=p.lr, batch=p.batch)
    res = run_sft(args, out, data, student, sft, "pretrain")
    scores = {}
    if held:  # how well the base points on scenes it never saw, against the random student
        objects = [[(n, tuple(b)) for n, b in r["objects"]] for r in held]
        for key, model in (("random_student", student), ("base", res["checkpoint"])):
            texts = caption_texts(model, held, args.device)
            scores[key] = score_captions(texts, objects)
            examples = [
                {"sample_id": r["sample_id"], "caption": t}
                for r, t in zip(held, texts, strict=True)
            ]
            _write_records(examples, out / f"held_out_{key}.jsonl")
    return {**res, "first_index": first, "held_out": scores}


def stage_sft(name: str) -> Callable[[Args, Path, Pipeline], dict[str, Any]]:
    def run(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
        data = pipe.dir("chains") / f"{name}.jsonl"
        return run_sft(args, out, data, pipe.result("pretrain")["checkpoint"], args.sft, name)

    return run


# =============================================================================================
# Stage: GRPO (wired when vigorl_agents.train.grpo exists: docs/nano.md#grpo-stages)
# =============================================================================================
SFT_STAGES = ("sft_direct", "sft_grounded", "sft_ungrounded", "sft_multi_turn", "sft_single_turn")
GRPO_STAGES = {
    # stage: (condition it trains, the stage whose checkpoint it starts from)
    "grpo_grounded": ("sft_grounded_grpo", "sft_grounded"),
    "grpo_ungrounded": ("sft_ungrounded_grpo", "sft_ungrounded"),
    "grpo_vanilla": ("vanilla_grpo", "sft_direct"),
    "grpo_multi_turn": ("multi_turn", "sft_multi_turn"),
    "grpo_single_turn": ("single_turn", "sft_single_turn"),
}


def grpo_available() -> bool:
    try:
        from vigorl_agents.train import grpo
    except ImportError:
        return False
    return hasattr(grpo, "train_grpo") and hasattr(grpo, "GRPOConfig")


HISTORY_KEYS = ("step", "reward", "accuracy", "format_rate", "grounding_on_target", "kl", "loss")


def stage_grpo(name: str) -> Callable[[Args, Path, Pipeline], dict[str, Any]]:
    """GRPO with the real trainer from the condition's starting checkpoint, rewards from the env
    (the same make kwargs, prompt and frames as the condition's evaluation), on train samples."""

    def run(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
        from vigorl_agents.train.grpo import GRPOConfig, train_grpo

        cond_name, start = GRPO_STAGES[name]
        cond = CONDITIONS[cond_name]
        g = args.grpo
        multi = cond.mode == "multi_turn"
        start_model = pipe.result(start)["checkpoint"]
        cfg = GRPOConfig(
            model=start_model,
            output_dir=str(out),
            lr=g.lr,
            warmup_ratio=0.0,
            device=args.device,
            seed=args.student.seed,
            freeze_vision=False,
            min_pixels=MIN_PIXELS,
            max_pixels=args.tasks.processor_max_pixels,
            save_optimizer=True,  # resumable: a checkpoint every step
            env_id=cond.env_id,
            env_kwargs=env_kwargs(args.tasks, cond),
            split="train",
            val_split=None,
            steps=g.steps,
            prompts_per_step=g.prompts_per_step,
            group_size=g.group_size,
            mini_batch=g.prompts_per_step * g.group_size,
            micro_batch=g.micro_batch,
            max_prompt_tokens=2048,
            max_response_tokens=(
                g.per_turn_tokens * args.tasks.max_images if multi else g.max_response_tokens
            ),
            per_turn_tokens=g.per_turn_tokens if multi else None,
            temperature=g.temperature,
            kl_coef=g.kl_coef,
            rollout_backend="hf",
            rollout_batch=g.rollout_batch,
            save_every=1,
            save_final=True,
        )
        res = train_grpo(cfg, progress=True)
        _keep_only(out, res["checkpoint"])
        history = [{k: h.get(k) for k in HISTORY_KEYS} for h in _train_records(out)]
        return {
            "checkpoint": res["checkpoint"],
            "steps": res["step"],
            "start": start,
            "history": history,
        }

    return run


# =============================================================================================
# Stage: evaluation
# =============================================================================================
def model_of(pipe: Pipeline, cond: Condition) -> str:
    if cond.model_stage is None:  # the base: the random student, or after the pretrain stage
        return pipe.result("pretrain")["checkpoint"]
    return pipe.result(cond.model_stage)["checkpoint"]


def stage_eval(cond: Condition) -> Callable[[Args, Path, Pipeline], dict[str, Any]]:
    def run(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
        from vigorl_agents.eval import EvalConfig, evaluate, load_records
        from vigorl_agents.factory import PolicyConfig, open_policy

        policy_cfg = PolicyConfig(
            backend="hf",
            model=model_of(pipe, cond),
            device=args.device,
            max_batch_size=args.eval.max_batch_size,
            min_pixels=MIN_PIXELS,
            max_pixels=args.tasks.processor_max_pixels,
        )
        cfg = EvalConfig(
            env_ids=(cond.env_id,),
            split="test",
            limit=args.tasks.n_test,
            max_tokens=args.eval.max_tokens,
            greedy=args.eval.greedy,
            env_kwargs=env_kwargs(args.tasks, cond),
            max_in_flight=max(32, args.eval.max_batch_size),
            max_batch=args.eval.max_batch_size,
            progress_every_s=30.0,
        )

        async def go() -> dict[str, Any]:
            async with open_policy(policy_cfg) as policy:
                return await evaluate(
                    policy, cfg, out, policy_name=cond.name, policy_config=policy_cfg
                )

        summary = asyncio.run(go())
        row = summary["rows"][0]
        recs = [r for r in load_records(out / "samples.jsonl") if "error" not in r]
        result = {
            "condition": cond.name,
            "checkpoint": policy_cfg.model,
            **condition_metrics(row, recs),
            "machine": _machine(args),
        }
        if cond.mode == "single_turn":
            result["image_dependence"] = image_dependence(
                policy_cfg.model, cond, args, recs, n=args.eval.image_dependence_samples
            )
        return result

    return run


def _machine(args: Args) -> str:
    """CPU model and cores, and the GPU when the stage ran on CUDA."""
    from benchmarks.machine import machine_name

    name = machine_name()
    if args.device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            name = f"{torch.cuda.get_device_name()} + {name}"
    return name


def image_dependence(
    model: str, cond: Condition, args: Args, recs: list[dict[str, Any]], n: int
) -> float | None:
    """Does the model look at the image? The mean total-variation distance (%) between its
    next-token distributions along its own greedy test responses, read once with the sample's
    frame and once with the frame of another test sample of the same size. 0 means the image
    changes nothing the model says; a model that reads the image moves its distributions."""
    import gymnasium as gym
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import vigorl_env  # noqa: F401
    from vigorl_env.protocol import IMAGE_MARKER

    if n <= 0:
        return None
    by_index = {r["index"]: r for r in recs}
    env = gym.make(cond.env_id, split="test", **env_kwargs(args.tasks, cond))
    frames, questions = {}, {}
    try:
        for i in sorted(by_index)[: 2 * n]:
            obs, _ = env.reset(options={"index": i})
            frames[i] = env.unwrapped.frame_image
            questions[i] = obs["text"].replace(IMAGE_MARKER, "", 1)
    finally:
        env.close()
    device = torch.device(args.device if args.device != "auto" else "cpu")
    net = AutoModelForImageTextToText.from_pretrained(model).to(device).eval()
    proc = AutoProcessor.from_pretrained(model)
    system = env_kwargs(args.tasks, cond)["system_prompt"]

    def dists(rec: dict[str, Any], image: Any) -> Any:
        question = questions[rec["index"]]
        msgs = [
            {"role": "system", "content": system},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        ]
        prompt = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        response = rec["trajectory"]["turns"][0]["text"]
        n_prompt = proc(text=[prompt], images=[image], return_tensors="pt")["input_ids"].shape[1]
        inputs = proc(text=[prompt + response], images=[image], return_tensors="pt").to(device)
        with torch.no_grad():
            logits = net(**inputs).logits[0, n_prompt - 1 : -1].float()
        return logits.softmax(-1)

    tvs = []
    keys = sorted(frames)
    for k, i in enumerate(keys[:n]):
        other = next(
            (j for j in keys[k + 1 :] + keys[:k] if frames[j].size == frames[i].size and j != i),
            None,
        )
        if other is None or not by_index[i]["trajectory"]["turns"][0]["text"]:
            continue
        p, q = dists(by_index[i], frames[i]), dists(by_index[i], frames[other])
        tvs.append(float(0.5 * (p - q).abs().sum(-1).mean()))
    return 100 * sum(tvs) / len(tvs) if tvs else None


def condition_metrics(row: dict[str, Any], recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (mean ± 95 % CI half-width, %) and grounding precision of one evaluation."""
    acc = row["accuracy"]
    on_target = [
        r["grounding"]["on_target"]
        for r in recs
        if r.get("grounding") and r["grounding"].get("on_target") is not None
    ]
    from vigorl_agents.stats import wald

    with_points = sum(bool(r.get("grounding") and r["grounding"].get("points")) for r in recs)
    g = wald(on_target).to_dict() if on_target else None  # percent, over episodes with points
    return {
        "accuracy": acc["mean"],  # percent already (vigorl_agents.stats)
        "ci95": (acc["high"] - acc["low"]) / 2,
        "n": row["n"],
        "grounding_on_target": g["mean"] if g else None,
        "grounding_ci95": (g["high"] - g["low"]) / 2 if g else None,
        "grounding_n": len(on_target),
        "with_points": 100 * with_points / max(1, len(recs)),
        "answered": 100 * sum(r.get("answer") is not None for r in recs) / max(1, len(recs)),
        "end_reasons": row.get("end_reasons", {}),
    }


# =============================================================================================
# Stage: report
# =============================================================================================
CLAIMS = (
    ("a", "SFT on grounded chains > SFT direct (SynthSpatial)", "sft_grounded", "sft_direct"),
    ("b", "GRPO after SFT > SFT alone (SynthSpatial)", "sft_grounded_grpo", "sft_grounded"),
    (
        "c",
        "multi-turn zoom > single-turn at the same image budget (SynthSearch)",
        "multi_turn",
        "single_turn",
    ),
    (
        "d",
        "grounded > ungrounded chains, after GRPO (SynthSpatial)",
        "sft_grounded_grpo",
        "sft_ungrounded_grpo",
    ),
)


def claim_status(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    """holds: intervals do not overlap and a > b; else what the numbers say."""
    if a is None or b is None:
        return "not measured (a stage did not run)"
    lo_a, hi_b = a["accuracy"] - a["ci95"], b["accuracy"] + b["ci95"]
    if lo_a > hi_b:
        return "holds (95 % CIs do not overlap)"
    if a["accuracy"] > b["accuracy"]:
        return "same direction, 95 % CIs overlap: not shown"
    return "does not hold"


def grounding_claim(after: dict[str, Any] | None, before: dict[str, Any] | None) -> str:
    """Claim (e) on the share of think points inside a target box (95 % CIs over the episodes
    that named points)."""

    def g(m: dict[str, Any] | None) -> dict[str, Any] | None:
        if m is None or m.get("grounding_on_target") is None:
            return None
        return {"accuracy": m["grounding_on_target"], "ci95": m.get("grounding_ci95") or 0.0}

    a, b = g(after), g(before)
    if a is None or b is None:
        return "not measured (no points, or a stage did not run)"
    return (
        f"{claim_status(a, b)} — sft_grounded {b['accuracy']:.1f} ± {b['ci95']:.1f} → "
        f"sft_grounded_grpo {a['accuracy']:.1f} ± {a['ci95']:.1f}"
    )


def chance_level(samples: Path) -> float | None:
    """Accuracy (%) of picking an option uniformly at random, over the evaluated test samples."""
    from vigorl_agents.eval import load_records

    inv = [
        1 / len(opts)
        for r in load_records(samples)
        if "error" not in r and (opts := r["trajectory"]["ground_truth"].get("options"))
    ]
    return 100 * sum(inv) / len(inv) if inv else None


def _fmt_small(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _fmt(m: dict[str, Any] | None, key: str = "accuracy") -> str:
    if m is None:
        return "—"
    if key == "accuracy":
        return f"{m['accuracy']:.1f} ± {m['ci95']:.1f}"
    v = m.get(key)
    return "—" if v is None else f"{v:.1f}"


def stage_report(args: Args, out: Path, pipe: Pipeline) -> dict[str, Any]:
    from benchmarks.machine import machine_name

    metrics: dict[str, dict[str, Any]] = {}
    for cond in CONDITIONS.values():
        if pipe.current(f"eval_{cond.name}"):  # not an evaluation of an older model
            metrics[cond.name] = pipe.result(f"eval_{cond.name}")
    # summary.json's names (docs/nano.md#the-conditions): single_turn / multi_turn are after GRPO;
    # without GRPO the SFT models stand in and say so ("model": "sft")
    summary_conditions: dict[str, Any] = {}
    for name, m in metrics.items():
        key = {"sft_multi_turn": "multi_turn", "sft_single_turn": "single_turn"}.get(name, name)
        if key != name and key in metrics:
            key = name  # the GRPO model holds that name; the SFT one keeps its own
        summary_conditions[key] = {
            "accuracy": round(m["accuracy"], 2),
            "ci95": round(m["ci95"], 2),
            "n": m["n"],
            "grounding_on_target": None
            if m["grounding_on_target"] is None
            else round(m["grounding_on_target"], 2),
            "grounding_ci95": None
            if m.get("grounding_ci95") is None
            else round(m["grounding_ci95"], 2),
            "model": "sft+grpo"
            if CONDITIONS[name].model_stage in GRPO_STAGES
            else "sft"
            if CONDITIONS[name].model_stage is not None
            else ("base" if args.pretrain.samples > 0 else "untrained"),
        }
    # the machine the evaluations ran on (the report may be redrawn elsewhere, e.g. from a GPU
    # run's results copied back to a laptop)
    ran_on = sorted({m["machine"] for m in metrics.values() if m.get("machine")})
    machine = args.machine or (" / ".join(ran_on) if ran_on else machine_name())
    summary = {
        "preset": args.preset,
        "machine": machine,
        "conditions": summary_conditions,
    }
    # report, summary and plots go to the run's root folder (runs/nano/<preset>/)
    _write_json(pipe.root / "summary.json", summary)
    times = {n: pipe.marker(n)["seconds"] for n in pipe.stages if pipe.current(n)}
    failed = {n: f["error"] for n in pipe.stages if (f := pipe.failure(n)) and not pipe.current(n)}
    failed.update(pipe.failed)
    plots = _plots(args, pipe.root, pipe, metrics)
    text = _report_text(args, pipe, metrics, summary_conditions, times, plots, machine, failed)
    (pipe.root / "report.md").write_text(text, encoding="utf-8")
    if args.publish is not None:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in ["report.md", "summary.json", *plots]:
            shutil.copy(pipe.root / name, args.publish / name)
    return {"conditions": summary_conditions, "plots": plots}


def _plots(args: Args, out: Path, pipe: Pipeline, metrics: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    names = list(metrics)
    if names:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        colors = ["#4c72b0" if CONDITIONS[n].env_id == SPATIAL else "#dd8452" for n in names]
        acc = [metrics[n]["accuracy"] for n in names]
        err = [metrics[n]["ci95"] for n in names]
        axes[0].bar(names, acc, yerr=err, capsize=4, color=colors)
        axes[0].set_ylabel("test accuracy, % (95 % CI)")
        axes[0].set_ylim(0, 100)
        axes[0].set_title("accuracy per condition (blue: SynthSpatial, orange: SynthSearch)")
        g = [metrics[n]["grounding_on_target"] or 0.0 for n in names]
        gerr = [metrics[n].get("grounding_ci95") or 0.0 for n in names]
        axes[1].bar(names, g, yerr=gerr, capsize=4, color=colors)
        axes[1].set_ylabel("think points on a target object, %")
        axes[1].set_ylim(0, 100)
        axes[1].set_title("grounding precision: think points on a target (95 % CI)")
        for ax in axes:
            ax.tick_params(axis="x", rotation=35)
            for lab in ax.get_xticklabels():
                lab.set_ha("right")
        fig.tight_layout()
        fig.savefig(out / "accuracy.png", dpi=110)
        plt.close(fig)
        made.append("accuracy.png")
    curves = {
        n: pipe.result(n)["loss_curve"]
        for n in pipe.stages
        if n.startswith("sft_") and pipe.marker(n)
    }
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for n, c in curves.items():
            ax.plot(range(1, len(c) + 1), c, label=n)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("SFT loss (per token)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "sft_loss.png", dpi=110)
        plt.close(fig)
        made.append("sft_loss.png")
    grpo = {n: pipe.result(n).get("history") for n in GRPO_STAGES if pipe.marker(n)}
    if any(grpo.values()):
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
        for n, hist in grpo.items():
            if not hist:
                continue
            steps = [h.get("step", i + 1) for i, h in enumerate(hist)]
            axes[0].plot(steps, [h.get("reward") for h in hist], label=n)
            axes[1].plot(steps, [h.get("accuracy") for h in hist], label=n)
        axes[0].set_ylabel("mean rollout reward")
        axes[1].set_ylabel("mean rollout accuracy")
        for ax in axes:
            ax.set_xlabel("GRPO step")
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "grpo_curves.png", dpi=110)
        plt.close(fig)
        made.append("grpo_curves.png")
    for cname in ("sft_grounded", "sft_multi_turn", "multi_turn"):
        path = _draw_trajectories(args, pipe, cname, out / f"trajectories_{cname}.png")
        if path is not None:
            made.append(path.name)
    return made


def _draw_trajectories(args: Args, pipe: Pipeline, cname: str, path: Path) -> Path | None:
    """A few test episodes of condition `cname`, correct and wrong ones, with points and crops."""
    import gymnasium as gym

    import vigorl_env  # noqa: F401
    from vigorl_agents.eval import load_records
    from vigorl_agents.replay import draw_episodes, episode_view, replay, save_figure
    from vigorl_agents.rollout import Trajectory, TurnRecord

    cond = CONDITIONS[cname]
    samples = pipe.dir(f"eval_{cname}") / "samples.jsonl"
    if not pipe.marker(f"eval_{cname}") or not samples.is_file():
        return None
    recs = [r for r in load_records(samples) if "error" not in r]
    right = [r for r in recs if r["score"] >= 1.0]
    wrong = [r for r in recs if r["score"] < 1.0]
    k = args.n_trajectories
    picked = right[: k // 2] + wrong[: k - min(k // 2, len(right))]
    picked = picked[:k]
    if not picked:
        return None
    env = gym.make(cond.env_id, split="test", **env_kwargs(args.tasks, cond))
    views = []
    try:
        for r in picked:
            d = dict(r["trajectory"])
            d["turns"] = [TurnRecord(**t) for t in d["turns"]]
            traj = Trajectory(**d)
            rep = replay(env, traj)
            obs, _ = env.reset(options={"index": traj.index})
            views.append(episode_view(cond.env_id, obs["text"], rep, traj))
    finally:
        env.close()
    fig = draw_episodes(views, title=f"{cname}: test episodes (correct first, then wrong)")
    return save_figure(fig, path)


def answer_breakdown(
    args: Args, pipe: Pipeline, names: list[str]
) -> dict[str, dict[str, dict[str, int]]]:
    """Per condition and question family: how many test answers were correct, another option, or
    no option at all (`{"correct", "other", "none"}` counts). Tells a student that picks the
    wrong option from one that cannot even copy an option from the question."""
    import gymnasium as gym

    import vigorl_env  # noqa: F401
    from vigorl_agents.eval import load_records
    from vigorl_env.rewards import norm, strip_letter

    samples: dict[tuple[str, str], Any] = {}  # (env id, frame) → dataset
    out: dict[str, dict[str, dict[str, int]]] = {}
    for name in names:
        cond = CONDITIONS[name]
        key = (cond.env_id, cond.frame)
        if key not in samples:
            env = gym.make(cond.env_id, split="test", **env_kwargs(args.tasks, frame=cond.frame))
            samples[key] = env.unwrapped._dataset
            env.close()
        ds = samples[key]
        fams: dict[str, dict[str, int]] = {}
        for r in load_records(pipe.dir(f"eval_{name}") / "samples.jsonl"):
            if "error" in r:
                continue
            sample = ds[int(r["index"])]
            answer = norm(strip_letter(r.get("answer") or ""))
            options = {norm(o) for o in sample.options or ()}
            kind = (
                "correct"
                if float(r.get("exact") or 0) > 0
                else ("other" if answer in options else "none")
            )
            c = fams.setdefault(sample.meta.get("family", "all"), dict.fromkeys(
                ("correct", "other", "none"), 0
            ))  # fmt: skip
            c[kind] += 1
        out[name] = fams
    return out


def _report_text(
    args: Args,
    pipe: Pipeline,
    metrics: dict[str, Any],
    summary: dict[str, Any],
    times: dict[str, float],
    plots: list[str],
    machine: Any,
    failed: dict[str, str],
) -> str:
    chance = {}
    for name in metrics:
        env = CONDITIONS[name].env_id
        if env not in chance:
            chance[env] = chance_level(pipe.dir(f"eval_{name}") / "samples.jsonl")
    lines = [
        f"# Nano pipeline: `{args.preset}` preset",
        "",
        "Search (scripted teacher, real MCTS) → chains → SFT → evaluation on held-out test "
        "samples, with a Qwen2-VL-architecture student trained from random weights "
        + (
            f"(first pretrained on grounded captions of {args.pretrain.samples} other scenes: "
            "the base model every condition starts from and `untrained` evaluates) "
            if args.pretrain.samples > 0
            else ""
        )
        + "(docs/nano.md). Accuracy is mean ± 95 % CI half-width (Wald) over the test samples, "
        "greedy decoding."
        if args.eval.greedy
        else "",
        "",
        f"Machine: {machine}",
        "",
        f"Command: `python -m experiments.nano {args.preset}` (the preset's settings: "
        "docs/nano.md; every stage resumable, rerun the same command to go on).",
        "",
        "## Results",
        "",
        "| condition | env | model | accuracy % | n | answered % | with points % | "
        "points on target % | image dependence % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    levels = [f"{env.split('/')[-1]} {c:.1f} %" for env, c in chance.items() if c is not None]
    footer = (
        [
            "Chance (an option picked uniformly at random) on these test samples: "
            + ", ".join(levels)
            + "."
        ]
        if levels
        else []
    )
    for name, m in metrics.items():
        c = CONDITIONS[name]
        model = c.model_stage or ("pretrain" if args.pretrain.samples > 0 else "untrained")
        lines.append(
            f"| {name} | {c.env_id.split('/')[-1]} | {model} | {_fmt(m)} | {m['n']} | "
            f"{m['answered']:.0f} | {m['with_points']:.0f} | {_fmt(m, 'grounding_on_target')} | "
            f"{_fmt_small(m.get('image_dependence'))} |"
        )
    footer.append(
        "Image dependence: the mean total-variation distance between the model's next-token "
        "distributions along its own test responses, read with the sample's frame and with "
        "another sample's frame (single-turn conditions); near 0, the image changes nothing the "
        "model says."
    )
    for note in footer:
        lines += ["", note]
    breakdown = answer_breakdown(args, pipe, list(metrics))
    if breakdown:
        lines += [
            "",
            "## Answers by question family",
            "",
            "Share of test answers (%) that are correct, another of the options, or no option at "
            "all (an answer naming an object the question does not offer), per family.",
            "",
            "| condition | family | n | correct | another option | not an option |",
            "|---|---|---|---|---|---|",
        ]
        for name, fams in breakdown.items():
            for fam, c in sorted(fams.items()):
                n = sum(c.values())
                lines.append(
                    f"| {name} | {fam} | {n} | {100 * c['correct'] / n:.0f} | "
                    f"{100 * c['other'] / n:.0f} | {100 * c['none'] / n:.0f} |"
                )
    lines += ["", "## Claims", ""]

    def above_chance(name: str) -> str:
        m, c = metrics.get(name), chance.get(CONDITIONS[name].env_id)
        if m is None or c is None or m["accuracy"] - m["ci95"] > c:
            return ""
        return f"; {name} is not above chance ({c:.1f} %)"

    for key, text, a, b in CLAIMS:
        status = claim_status(metrics.get(a), metrics.get(b))
        note = above_chance(a) if status.startswith(("holds", "same direction")) else ""
        lines.append(
            f"- ({key}) {text}: {status}{note} — {a} {_fmt(metrics.get(a))} vs {b} "
            f"{_fmt(metrics.get(b))}"
        )
    lines.append(
        "- (e) grounding precision (points on a target, %) rises with GRPO: "
        + grounding_claim(metrics.get("sft_grounded_grpo"), metrics.get("sft_grounded"))
    )
    if not any(n in metrics for n in ("multi_turn", "single_turn")) and (
        "sft_multi_turn" in metrics
    ):
        lines += [
            "",
            "Without the GRPO stages, the SynthSearch comparison is after SFT only: "
            f"multi-turn {_fmt(metrics.get('sft_multi_turn'))} vs single-turn "
            f"{_fmt(metrics.get('sft_single_turn'))} (summary.json names them multi_turn / "
            "single_turn with `model: sft`).",
        ]
    if not grpo_available():
        lines += [
            "",
            "GRPO stages did not run: `vigorl_agents.train.grpo` is not available in this "
            "checkout (docs/nano.md#grpo-stages).",
        ]
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {n} | {s:.1f} |" for n, s in times.items()]
    if failed:
        lines += ["", "Stages that did not finish (their conditions are missing above):", ""]
        lines += [f"- `{n}`: {why}" for n, why in failed.items()]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


# =============================================================================================
# Wiring
# =============================================================================================
def _stages() -> dict[str, Stage]:
    def cfg(*parts: str) -> Callable[[Args], Any]:
        return lambda a: {p: getattr(a, p) for p in parts}

    def sft_cfg(a: Args) -> Any:
        return {"sft": a.sft, "device": a.device, "seed": a.student.seed}

    def grpo_cfg(a: Args) -> Any:
        return {"grpo": a.grpo, "tasks": a.tasks, "device": a.device, "seed": a.student.seed}

    def pretrain_cfg(a: Args) -> Any:
        return {
            "pretrain": a.pretrain,
            "tasks": a.tasks,
            "device": a.device,
            "seed": a.student.seed,
        }

    def student_cfg(a: Args) -> Any:
        return {"student": a.student, "max_pixels": a.tasks.processor_max_pixels}

    st = [
        Stage("data", (), cfg("tasks"), stage_data),
        Stage("search", ("data",), cfg("tasks", "search"), stage_search),
        Stage("chains", ("search",), cfg("search"), stage_chains),
        Stage("student", ("chains",), student_cfg, stage_student),
    ]
    st.append(Stage("pretrain", ("data", "student"), pretrain_cfg, stage_pretrain, True))
    st += [Stage(n, ("chains", "pretrain"), sft_cfg, stage_sft(n), True) for n in SFT_STAGES]
    st += [
        Stage(n, (start,), grpo_cfg, stage_grpo(n), True) for n, (_, start) in GRPO_STAGES.items()
    ]
    st += [
        Stage(
            f"eval_{c.name}",
            ("data", c.model_stage or "pretrain"),
            cfg("tasks", "eval", "device"),
            stage_eval(c),
            True,  # the evaluation skips the episodes already in samples.jsonl
        )
        for c in CONDITIONS.values()
    ]
    # the report reads whatever evaluations exist: it always runs again (seconds)
    st.append(Stage("report", (), lambda a: {"run_at": time.time()}, stage_report))
    return {s.name: s for s in st}


def default_stages(with_grpo: bool) -> list[str]:
    """The SFT conditions are evaluated before GRPO starts, so their numbers come early."""
    names = ["data", "search", "chains", "student", "pretrain", *SFT_STAGES]
    names += [f"eval_{c.name}" for c in SFT_CONDITIONS]
    if with_grpo:
        names += list(GRPO_STAGES)
        names += [f"eval_{c.name}" for c in GRPO_CONDITIONS]
    return [*names, "report"]


SHARED_STAGES = ("data", "search", "chains", "student", "pretrain")


def lanes_of(names: list[str]) -> list[list[str]]:
    """The per-condition stages of `names` grouped into independent lanes, in order: one lane per
    SFT condition (its SFT, its evaluation, the GRPO run that starts from it, that run's
    evaluation) and one for the untrained student's evaluation."""
    sft_cond = {c.model_stage: c.name for c in SFT_CONDITIONS}
    lanes = []
    for sft in SFT_STAGES:
        lane = [sft, f"eval_{sft_cond[sft]}"]
        for grpo, (cond, start) in GRPO_STAGES.items():
            if start == sft:
                lane += [grpo, f"eval_{cond}"]
        lanes.append([n for n in lane if n in names])
    lanes.append([n for n in names if n == "eval_untrained"])
    return [lane for lane in lanes if lane]


def _run_lane(args: Args, names: list[str], threads: int) -> dict[str, Any]:
    """One lane in a worker process (spawned: no forked torch or threads)."""
    import torch

    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s [{names[0]}] %(name)s: %(message)s"
    )
    for noisy in ("httpx", "transformers", "vigorl_agents.search.run"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(threads)
    pipe = Pipeline(args, _stages())
    times = pipe.run(names)
    return {"times": times, "failed": dict(pipe.failed)}


def run(args: Args) -> dict[str, Any]:
    stages = _stages()
    pipe = Pipeline(args, stages)
    with_grpo = args.with_grpo and grpo_available()
    if args.with_grpo and not with_grpo:
        log.warning("vigorl_agents.train.grpo is not available: the GRPO stages are left out")
    names = list(args.stages) or default_stages(with_grpo=with_grpo)
    unknown = [n for n in names if n not in stages]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; known: {list(stages)}")
    if args.lanes <= 1:
        times = pipe.run(names)
        return {"times": times, "root": str(pipe.root), "failed": dict(pipe.failed)}
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    lanes = lanes_of(names)
    laned = {n for lane in lanes for n in lane}
    times = pipe.run([n for n in names if n in SHARED_STAGES])
    if pipe.failed:  # a shared stage failed: here, every lane stage is skipped as blocked
        times.update(pipe.run([n for n in names if n in laned]))
    else:
        threads = max(1, (os.cpu_count() or 2) // min(args.lanes, len(lanes) or 1))
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.lanes, mp_context=ctx) as pool:
            for res in pool.map(_run_lane, [args] * len(lanes), lanes, [threads] * len(lanes)):
                times.update(res["times"])
                pipe.failed.update(res["failed"])
    times.update(pipe.run([n for n in names if n not in SHARED_STAGES and n not in laned]))
    return {"times": times, "root": str(pipe.root), "failed": dict(pipe.failed)}


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "transformers", "vigorl_agents.search.run"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = tyro.extras.overridable_config_cli(PRESETS)
    res = run(args)
    root = Path(res["root"])
    print(f"report: {root / 'report.md'}  summary: {root / 'summary.json'}")
    if res["failed"]:
        for name, why in res["failed"].items():
            print(f"stage {name} did not finish: {why}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()

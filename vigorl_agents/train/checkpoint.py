"""Checkpoint folders of the training engine: safe to resume from, atomic to write (docs/sft.md#checkpoints-and-resume).

A checkpoint `output_dir/checkpoint-{step}/` is a plain Hugging Face folder (model + processor;
`from_pretrained` and vLLM load it as is) plus `trainer_state.json` (step, data position, RNG
states, config, and the sha256 of every other file of the folder) and either `optimizer.pt`
(optimizer, scheduler, fp32 master weights: tensors only) or `deepspeed/` (DeepSpeed's own
partitioned state + one RNG file per rank). Nothing a resume reads is unpickled with code
execution: the state is JSON, `optimizer.pt` is read with torch's restricted unpickler
(`weights_only=True`), and DeepSpeed's files are pre-read with it before DeepSpeed unpickles them.
A checkpoint is written into a hidden temporary folder and renamed into place, so a crash while
saving never leaves a half folder under the final name.

Every trainer (SFT, GRPO) writes and validates its checkpoints with these functions; what differs
is only the trainer-specific part of the JSON state (its data position), which each trainer
checks itself (`read_checkpoint_state(..., required=...)`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vigorl_agents.jsonl import cut_torn_tail, read_jsonl

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
"""Step, data position, RNG states, config and the sha256 of every other file (JSON)."""
OPTIM_FILE = "optimizer.pt"
"""Optimizer, scheduler and fp32 master weights (tensors; loaded with `weights_only=True`)."""
LEGACY_STATE_FILE = "trainer_state.pt"
"""The pickled state of checkpoints written before format version 2: refused, never loaded."""
STATE_VERSION = 2
DS_DIR = "deepspeed"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class CheckpointError(RuntimeError):
    """A checkpoint folder cannot be resumed from; nothing was written."""


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-N` folder, ascending (temporary folders ignored)."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for d in out.iterdir():
        m = CHECKPOINT_RE.match(d.name)
        if m and d.is_dir():
            found.append((int(m.group(1)), d))
    return sorted(found)


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    """Hex sha256 of a file, read in chunks (hashlib releases the GIL: files hash in parallel)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checkpoint_files(folder: Path) -> list[str]:
    """Every file of a checkpoint folder (POSIX paths relative to it), the state file excluded."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() != STATE_FILE
    )


def hash_files(folder: Path, names: Sequence[str]) -> dict[str, str]:
    """{name: sha256} of `folder/name` for each name, several files at a time."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        digests = pool.map(lambda n: sha256_file(folder / n), names)
        return dict(zip(names, digests, strict=True))


def checksum_problems(
    folder: Path, files: dict[str, str], shard: tuple[int, int] = (0, 1)
) -> list[str]:
    """What differs between the files of `folder` and their recorded sha256 (`files`), one line
    per file, for the files of this shard (`(rank, world)`: file i belongs to rank i mod world)."""
    rank, world = shard
    names = [n for i, n in enumerate(sorted(files)) if i % world == rank]
    problems, present = [], []
    for n in names:
        if not _safe_relative(n):
            problems.append(f"{n!r} is not a path inside the checkpoint folder")
        elif not (folder / n).is_file():
            problems.append(f"{n} is missing")
        else:
            present.append(n)
    for n, digest in hash_files(folder, present).items():
        if digest != files[n]:
            problems.append(
                f"{n} does not match its recorded sha256 (damaged or changed since it was saved)"
            )
    return problems


def _safe_relative(name: str) -> bool:
    p = Path(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts


def load_tensors(path: Path) -> Any:
    """`torch.load` that never runs code: the restricted unpickler (`weights_only=True`) accepts
    tensors and plain containers and refuses any other global before creating it."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors and plain "
            f"containers, which could run code when unpickled ({str(e).splitlines()[0]})"
        ) from e
    except Exception as e:  # truncated zip, not a torch file, ...
        raise CheckpointError(f"cannot load {path}: {e}") from e


_DEEPSPEED_GLOBALS = (
    # What DeepSpeed's own ZeRO-2/3 checkpoint files hold besides tensors and plain containers
    # (read with torch.serialization.get_unsafe_globals_in_checkpoint from deepspeed 0.19.8
    # checkpoints, ZeRO-2 and ZeRO-3, bf16 and fp32): only the optimizer files have any.
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def _deepspeed_safe_globals() -> list[Any]:
    import importlib

    out = []
    for name in _DEEPSPEED_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            out.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):  # another DeepSpeed version: not allowed then
            continue
    return out


def check_deepspeed_pickles(tag_dir: Path) -> None:
    """Refuse DeepSpeed checkpoint files that could run code, before DeepSpeed reads them.

    `engine.load_checkpoint` unpickles its `.pt` files with `weights_only=False` (DeepSpeed's
    `TorchCheckpointEngine`), which runs whatever a crafted file asks for; it cannot be told
    otherwise. So each file is first read here with torch's restricted unpickler (tensors
    memory-mapped, not read), allowing only the few DeepSpeed classes its checkpoints hold
    (`_DEEPSPEED_GLOBALS`); a file with any other global is refused and DeepSpeed never sees it."""
    import pickle

    import torch

    files = sorted(tag_dir.rglob("*.pt"))
    if not files:
        raise CheckpointError(f"cannot resume: {tag_dir} holds no DeepSpeed checkpoint file")
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        for f in files:
            try:
                torch.load(f, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as e:
                raise CheckpointError(
                    f"refusing to resume from {f}: it holds Python objects outside the tensors, "
                    f"plain containers and DeepSpeed classes a checkpoint needs, and DeepSpeed "
                    f"would unpickle them unrestricted ({str(e).splitlines()[0]})"
                ) from e
            except Exception as e:
                raise CheckpointError(f"cannot resume from {f}: {e}") from e


def read_checkpoint_state(
    folder: Path,
    deepspeed: bool = False,
    *,
    verify: bool = True,
    required: Sequence[str] = ("steps_per_epoch", "num_examples"),
) -> dict[str, Any]:
    """Validate a checkpoint folder for resume and return its trainer state.

    Nothing in the folder is unpickled: the state is JSON, the optimizer file is read with
    `weights_only=True` (see docs/sft.md#checkpoints-and-resume). Order: required files,
    the JSON state, then the sha256 of every recorded file (`verify`; a DeepSpeed run checks its
    shard itself, `SFTTrainer`), then the optimizer file. `deepspeed`: the resuming run uses
    DeepSpeed (its optimizer state is in `folder/deepspeed/`); `required`: the keys the trainer's
    own part of the state must have (its data position). Raises `CheckpointError` naming the
    folder and what is wrong; reads only."""
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json is missing")
    if not any((folder / f).is_file() for f in _WEIGHT_FILES):
        problems.append(f"no model weights ({' / '.join(_WEIGHT_FILES)})")
    state_path = folder / STATE_FILE
    if not state_path.is_file():
        if (folder / LEGACY_STATE_FILE).is_file():
            problems.append(
                f"it holds {LEGACY_STATE_FILE}, a pickle written by an older vigorl; it is not "
                f"loaded because unpickling a file can run code (resume needs {STATE_FILE} + "
                f"{OPTIM_FILE}: restart from the weights or retrain)"
            )
        else:
            problems.append(f"{STATE_FILE} is missing (not a resumable checkpoint)")
    if problems:
        raise CheckpointError(f"cannot resume from {folder}: " + "; ".join(problems))
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(
            f"cannot resume from {folder}: {STATE_FILE} is not valid JSON ({e})"
        ) from e
    need = ("version", "step", "deepspeed", "files", *required)
    missing = [k for k in need if k not in state] if isinstance(state, dict) else list(need)
    if missing:
        raise CheckpointError(f"cannot resume from {folder}: {STATE_FILE} lacks {missing}")
    if state["version"] != STATE_VERSION:
        raise CheckpointError(
            f"cannot resume from {folder}: {STATE_FILE} has format version {state['version']!r}, "
            f"this vigorl reads version {STATE_VERSION}"
        )
    files = state["files"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise CheckpointError(f"cannot resume from {folder}: {STATE_FILE}: 'files' is malformed")
    written_by_ds = bool(state["deepspeed"])
    if written_by_ds != deepspeed:
        raise CheckpointError(
            f"cannot resume from {folder}: written by a "
            f"{'DeepSpeed' if written_by_ds else 'single-process'} run, this run is "
            f"{'DeepSpeed' if deepspeed else 'single-process'}"
        )
    m = CHECKPOINT_RE.match(folder.name)
    if m and int(m.group(1)) != state["step"]:
        raise CheckpointError(
            f"cannot resume from {folder}: its {STATE_FILE} says step {state['step']}"
        )
    if not state.get("optimizer_saved", True):
        raise CheckpointError(
            f"cannot resume from {folder}: written with save_optimizer=False (model only: no "
            f"optimizer state to resume exactly from)"
        )
    if deepspeed:
        if not (folder / DS_DIR / f"global_step{state['step']}").is_dir():
            raise CheckpointError(
                f"cannot resume from {folder}: {DS_DIR}/global_step{state['step']} is missing"
            )
    elif OPTIM_FILE not in files or "rng" not in state:
        raise CheckpointError(
            f"cannot resume from {folder}: {STATE_FILE} records no {OPTIM_FILE} / RNG state"
        )
    unlisted = sorted(set(checkpoint_files(folder)) - set(files))
    if unlisted:
        logger.warning("%s: files not written by the trainer (ignored): %s", folder, unlisted)
    if verify:
        bad = checksum_problems(folder, files)
        if bad:
            raise CheckpointError(f"cannot resume from {folder}: " + "; ".join(bad))
    if not deepspeed:
        try:
            saved = load_tensors(folder / OPTIM_FILE)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume from {folder}: {e}") from e
        if not isinstance(saved, dict) or not {"optimizer", "scheduler"} <= saved.keys():
            raise CheckpointError(
                f"cannot resume from {folder}: {OPTIM_FILE} lacks the optimizer / scheduler state"
            )
        state = {**state, **saved}
    return state


def _b64(t: Any) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> Any:
    import torch

    return torch.frombuffer(bytearray(base64.b64decode(s, validate=True)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as JSON values (exact: ints, repr floats, base64 bytes)."""
    import numpy as np
    import torch

    version, words, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {
        "python": [version, list(words), gauss],
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        st["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, words, gauss = st["python"]
    random.setstate((int(version), tuple(int(w) for w in words), gauss))
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(st["torch"]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in st["cuda"]])


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the records of steps <= `step` in the metrics file (a torn last line goes too);
    return how many were dropped. A resumed run re-runs the steps after its checkpoint, so their
    records from the interrupted run would otherwise appear twice."""
    cut_torn_tail(path)
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for _, rec in read_jsonl(path):
        if isinstance(rec.get("step"), int) and rec["step"] > step:
            dropped += 1
        else:
            keep.append(rec)
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in keep), encoding="utf-8")
        tmp.replace(path)
        logger.info(
            "%s: dropped %d record(s) after step %d (re-run from there)", path, dropped, step
        )
    return dropped


def tensorboard_writer(path: Path, purge_step: int | None = None) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("tensorboard is not installed: metrics go to metrics.jsonl only")
        return None
    # purge_step: events of re-run steps (>= purge_step) from an interrupted run are hidden
    return SummaryWriter(str(path), purge_step=purge_step)

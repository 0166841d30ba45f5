"""Trajectories and chains → vigorl SFT records, and the files that hold them
(docs/data.md#sft-record-formats).

One converter for every producer of SFT data: the debug chains of `experiments/sft.py`, rejection
sampling over rollouts, MCTS chains. A record is a plain dict (the vigorl SFT JSONL line):

    {"id", "sample_id", "env_id", "split", "kind", "messages": [{"role", "content"}, ...],
     "images": [paths], "frame", "gt_answer", "meta"}

with one `<image>` marker per entry of `images`, in the same order (docs/data.md).

Why it looks like this:

* **Images as the model saw them, rebuilt, not stored.** Trajectories keep images by reference
  (sample index + crop points, `vigorl_agents.rollout`); `trajectory_record` rebuilds them through
  `vigorl_agents.replay.trajectory_images` (the env's public `frame_image` / `crop_at`, never its
  private episode) and writes them as PNG: `[model frame, crop 1, crop 2, ...]`.
* **Portable folders.** Image paths are written relative to the data folder (`data_dir`) in POSIX
  form, so the folder can be moved or copied to another machine; load it with that folder as the
  data root (`load_sft_file(path, data_root=data_dir)`; the loader confines relative paths to it).
* **The split rule is the project's one rule** (`vigorl_env.data.splits.split_of`): a sample's
  chains fall on the same side as in every other stage.
* **No torch here.** MCTS and rejection sampling import this module in processes that never load a
  model; only the parquet writer needs pyarrow (imported there).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vigorl_env.data.splits import split_of
from vigorl_env.protocol import IMAGE_MARKER, observation_text

if TYPE_CHECKING:
    import gymnasium as gym
    from PIL import Image

    from vigorl_agents.rollout import Trajectory

__all__ = [
    "KINDS",
    "SHAREGPT_COLUMNS",
    "image_folder",
    "sft_record",
    "trajectory_messages",
    "trajectory_record",
    "write_parquet",
    "write_sft_jsonl",
    "write_sharegpt_json",
]

KINDS = ("direct", "corrected", "multi_turn", "answer_only")
"""Record kinds (docs/data.md#sft-record-formats)."""

SHAREGPT_COLUMNS = {
    "formatting": "sharegpt",
    "columns": {"messages": "messages", "images": "images"},
    "tags": {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    },
}
"""The LLaMA-Factory `dataset_info.json` entry of a sharegpt file (its `file_name` added)."""


def sft_record(
    *,
    record_id: str,
    sample_id: str,
    env_id: str,
    kind: str,
    messages: Sequence[dict[str, str]],
    images: Sequence[str],
    frame: dict[str, Any],
    gt_answer: str,
    split: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One vigorl SFT record, checked: known kind, system/user first, assistant last, and as many
    `<image>` markers (all in non-assistant turns) as `images`. `split` defaults to the one split
    rule on `sample_id` ("train" / "val")."""
    if kind not in KINDS:
        raise ValueError(f"record {record_id!r}: kind {kind!r} is not one of {KINDS}")
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if not msgs or msgs[-1]["role"] != "assistant":
        raise ValueError(f"record {record_id!r}: the last message must be the assistant's")
    markers = 0
    for i, m in enumerate(msgs):
        n = m["content"].count(IMAGE_MARKER)
        if n and m["role"] == "assistant":
            raise ValueError(f"record {record_id!r}: assistant message {i} holds <image>")
        markers += n
    if markers != len(images):
        raise ValueError(
            f"record {record_id!r}: {markers} <image> marker(s) for {len(images)} image(s)"
        )
    split = split or split_of(sample_id)
    if split not in ("train", "val"):
        raise ValueError(f"record {record_id!r}: split must be 'train' or 'val', got {split!r}")
    return {
        "id": record_id,
        "sample_id": sample_id,
        "env_id": env_id,
        "split": split,
        "kind": kind,
        "messages": msgs,
        "images": list(images),
        "frame": frame,
        "gt_answer": gt_answer,
        "meta": dict(meta or {}),
    }


def trajectory_messages(
    traj: Trajectory, *, system_prompt: str, question: str, observation: str
) -> tuple[list[dict[str, str]], int]:
    """The chat of a trajectory and how many of its crops it shows.

    system, user (the question with its `<image>`), then each assistant turn (forced prefix +
    generated text); a turn whose tool call made a crop is followed by the observation turn
    (`observation`, holding one `<image>`) unless it is the last turn: a record ends with the
    assistant (a turn-limit crop nobody answered is dropped)."""
    if IMAGE_MARKER not in question:
        raise ValueError(f"sample {traj.sample_id}: the question has no {IMAGE_MARKER} marker")
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question},
    ]
    crops = 0
    for k, turn in enumerate(traj.turns):
        messages.append({"role": "assistant", "content": turn.prefix + turn.text})
        if turn.crop and k < len(traj.turns) - 1:
            messages.append({"role": "user", "content": observation})
            crops += 1
    return messages, crops


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def image_folder(sample_id: str) -> str:
    """A file-system-safe folder name for a sample's images: the id itself when it is made of
    letters, digits, `.`, `_` and `-` (and is not `.` / `..`), else a cleaned id + a short hash, so
    that no id can climb out of the images folder or collide with another."""
    clean = _UNSAFE.sub("_", sample_id)
    if clean == sample_id and clean not in (".", ".."):
        return clean
    digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:10]
    return f"{clean.strip('.')[:80]}-{digest}"


def trajectory_record(
    env: gym.Env,
    traj: Trajectory,
    data_dir: str | os.PathLike[str],
    *,
    kind: str | None = None,
    record_id: str | None = None,
    split: str | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert one finished trajectory into an SFT record; its images are written as PNG.

    `env` must be made with the kwargs the trajectory was recorded with (same fingerprint; it is
    reset). Images `[model frame, crop 1, ...]` go to
    `data_dir/images/<sample>/<episode>_<k>.png` and the record holds those paths relative to
    `data_dir`. Defaults: `kind` "multi_turn" for more than one assistant turn, else "direct";
    `record_id` "<sample_id>:<episode>"; `split` by the one split rule. The trajectory is not
    judged here: keep only the ones you want to train on (e.g. `traj.score == 1`)."""
    from vigorl_agents.replay import trajectory_images

    uw = env.unwrapped
    obs, info = env.reset(options={"index": traj.index})
    if info["sample_id"] != traj.sample_id:
        raise ValueError(
            f"index {traj.index} of {uw.env_id} is sample {info['sample_id']}, the trajectory's "
            f"is {traj.sample_id}"
        )
    messages, n_crops = trajectory_messages(
        traj,
        system_prompt=info["system_prompt"],
        question=obs["text"],
        observation=observation_text(uw.config.draw_dot),
    )
    images = trajectory_images(env, traj)[: 1 + n_crops]
    root = Path(data_dir)
    rel_dir = Path("images") / image_folder(traj.sample_id)
    (root / rel_dir).mkdir(parents=True, exist_ok=True)
    paths = []
    for k, img in enumerate(images):
        rel = rel_dir / f"{traj.episode}_{k}.png"
        _save_png(img, root / rel)
        paths.append(rel.as_posix())
    n_turns = sum(m["role"] == "assistant" for m in messages)
    return sft_record(
        record_id=record_id or f"{traj.sample_id}:{traj.episode}",
        sample_id=traj.sample_id,
        env_id=traj.env_id,
        kind=kind or ("multi_turn" if n_turns > 1 else "direct"),
        messages=messages,
        images=paths,
        frame=traj.frame,
        gt_answer=str(traj.ground_truth.get("answer", "")),
        split=split,
        meta={
            "source": "trajectory",
            "reward": traj.reward,
            "accuracy": traj.score,
            **(meta or {}),
        },
    )


def _save_png(img: Image.Image, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    tmp.replace(path)


# =========================================================================== files


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_sft_jsonl(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """vigorl SFT JSONL, one record per line (written to a temporary file, then renamed)."""
    path = Path(path)
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def write_sharegpt_json(
    records: Iterable[dict[str, Any]], path: str | os.PathLike[str], *, name: str | None = None
) -> Path:
    """LLaMA-Factory sharegpt JSON array (`id`, `metadata`, `messages`, `images`, `gt_answer`),
    and its entry `name` (default: the file stem) in `dataset_info.json` beside it (other
    entries kept). Relative image paths stay relative: LLaMA-Factory reads them against that
    folder."""
    path = Path(path)
    rows = [
        {
            "id": r["id"],
            "metadata": {k: r[k] for k in ("sample_id", "env_id", "split", "kind", "frame")}
            | dict(r.get("meta") or {}),
            "messages": r["messages"],
            "images": r["images"],
            "gt_answer": r["gt_answer"],
        }
        for r in records
    ]
    _atomic_write(path, json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
    info_path = path.with_name("dataset_info.json")
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    info[name or path.stem] = {"file_name": path.name, **SHAREGPT_COLUMNS}
    _atomic_write(info_path, json.dumps(info, indent=1) + "\n")
    return path


def write_parquet(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Multi-turn parquet for interop (columns `id`, `kind`, `messages`, `images`); needs
    pyarrow (`pip install 'vigorl[data]'`)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"writing {path} needs pyarrow (pip install 'vigorl[data]')") from e
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": r["id"], "kind": r["kind"], "messages": r["messages"], "images": r["images"]}
        for r in records
    ]
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)
    return path

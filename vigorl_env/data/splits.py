"""The one split rule of vigorl (docs/data.md#the-split-rule): a stable hash of the sample id.

Splitting by a hash of the id (instead of file order or `os.listdir` order, as upstream did) makes a
sample's split independent of how files are ordered, sharded or grown: adding samples never moves an
existing one to the other side. `val` is the ids with `hash_split(id, VAL_FRACTION)` true and `train`
the rest, everywhere: VisualWebArena's train/val, MCTS chain linearization and any future split,
so a sample falls on the same side in every stage (no leakage between SFT, GRPO and evaluation).
"""

from __future__ import annotations

import hashlib

__all__ = ["VAL_FRACTION", "hash_split", "is_val", "split_of"]

VAL_FRACTION = 0.05
"""Share of ids that fall in `val` (the "95/5" split)."""


def hash_split(sample_id: str, f: float) -> bool:
    """True iff `int(sha256(id)[:8 hex], 16) / 2**32 < f` (the sample falls in the first fraction f)."""
    digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 2**32 < f


def is_val(sample_id: str) -> bool:
    """True iff the id belongs to `val`: `hash_split(id, VAL_FRACTION)`."""
    return hash_split(sample_id, VAL_FRACTION)


def split_of(sample_id: str) -> str:
    """`"val"` or `"train"` by the one split rule."""
    return "val" if is_val(sample_id) else "train"

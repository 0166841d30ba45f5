"""The one split rule of vigorl (SPEC §2.1): a stable hash of the sample id.

Splitting by a hash of the id (instead of file order or `os.listdir` order, as upstream did) makes a
sample's split independent of how files are ordered, sharded or grown: adding samples never moves an
existing one to the other side. The same rule splits VisualWebArena train/val and MCTS chains (§9.6).
"""

from __future__ import annotations

import hashlib

__all__ = ["hash_split"]


def hash_split(sample_id: str, f: float) -> bool:
    """True iff `int(sha256(id)[:8 hex], 16) / 2**32 < f` (the sample falls in the first fraction f)."""
    digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()
    return int(digest[:8], 16) / 2**32 < f

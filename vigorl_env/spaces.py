"""Spaces that tell the truth about text actions and variable-size images (docs/envs.md#spaces).

Actions are free text and observations are RGB images whose size depends on the sample, so no
``Box`` or ``Text`` describes them honestly (``Text`` needs a closed character set and would reject
ordinary model output). These two small ``Space`` subclasses say exactly what the env accepts and
returns, so ``gymnasium.utils.env_checker.check_env`` passes without pretending.

Vector envs: batching a space that has no fixed shape yields a ``Tuple`` of copies, batched samples
are tuples, and the placeholder "empty" batch is a tuple of valid members; these are registered
below with gymnasium's single-dispatch helpers. Shared memory cannot hold a 65536×65536 image per
env, so ``AsyncVectorEnv`` needs ``shared_memory=False`` (with the default ``True`` gymnasium
raises a ``ValueError`` saying so). ``iterate`` is intentionally *not* registered: for a ``Tuple``
of unregistered subspaces gymnasium iterates the batch itself (one action per env), whereas a
registration would make it iterate inside each string.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
from gymnasium.spaces import Space, Tuple
from gymnasium.vector.utils import (
    batch_differing_spaces,
    batch_space,
    concatenate,
    create_empty_array,
)

__all__ = ["SAMPLE_CHARACTERS", "AnyText", "VarImage"]

SAMPLE_CHARACTERS = "".join(chr(c) for c in range(0x20, 0x7F)) + "\n"
"""Alphabet of :meth:`AnyText.sample` (printable ASCII and newline); ``contains`` accepts any str."""

_SAMPLE_MAX_TEXT = 64
_SAMPLE_MAX_SIDE = 64


def _no_masks(space: Space[Any], mask: Any, probability: Any) -> None:
    if mask is not None or probability is not None:
        raise ValueError(f"{space!r}.sample() supports neither mask nor probability")


class AnyText(Space[str]):
    """Any Python ``str`` of at most ``max_length`` characters (an action is model output)."""

    def __init__(self, max_length: int = 100_000, *, seed: int | np.random.Generator | None = None):
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, got {max_length}")
        self.max_length = int(max_length)
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        """Free text has no fixed-size numeric form."""
        return False

    def sample(self, mask: Any | None = None, probability: Any | None = None) -> str:
        """Printable ASCII/newline text of length 0–64 (capped by ``max_length``) from ``np_random``."""
        _no_masks(self, mask, probability)
        length = int(self.np_random.integers(0, min(_SAMPLE_MAX_TEXT, self.max_length) + 1))
        idx = self.np_random.integers(0, len(SAMPLE_CHARACTERS), size=length)
        return "".join(SAMPLE_CHARACTERS[i] for i in idx)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnyText) and other.max_length == self.max_length

    def __repr__(self) -> str:
        return f"AnyText(max_length={self.max_length})"


class VarImage(Space[np.ndarray]):
    """A ``uint8`` RGB array of shape ``(H, W, 3)`` with ``1 <= H <= max_height``,
    ``1 <= W <= max_width`` (the model frame and the crops differ in size per sample)."""

    def __init__(
        self,
        max_height: int = 65536,
        max_width: int = 65536,
        *,
        seed: int | np.random.Generator | None = None,
    ):
        if max_height < 1 or max_width < 1:
            raise ValueError(
                f"bounds must be >= 1, got max_height={max_height}, max_width={max_width}"
            )
        self.max_height = int(max_height)
        self.max_width = int(max_width)
        super().__init__(shape=None, dtype=np.uint8, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        """No fixed shape, so no fixed-size flat form."""
        return False

    def sample(self, mask: Any | None = None, probability: Any | None = None) -> np.ndarray:
        """Uniform random pixels in a random size, each side in 1–64 (capped by the bounds)."""
        _no_masks(self, mask, probability)
        h = int(self.np_random.integers(1, min(_SAMPLE_MAX_SIDE, self.max_height) + 1))
        w = int(self.np_random.integers(1, min(_SAMPLE_MAX_SIDE, self.max_width) + 1))
        return self.np_random.integers(0, 256, size=(h, w, 3), dtype=np.uint8)

    def contains(self, x: Any) -> bool:
        return (
            isinstance(x, np.ndarray)
            and x.dtype == np.uint8
            and x.ndim == 3
            and x.shape[2] == 3
            and 1 <= x.shape[0] <= self.max_height
            and 1 <= x.shape[1] <= self.max_width
        )

    def to_jsonable(self, sample_n: Iterable[np.ndarray]) -> list[Any]:
        return [np.asarray(x).tolist() for x in sample_n]

    def from_jsonable(self, sample_n: list[Any]) -> list[np.ndarray]:
        return [np.asarray(x, dtype=np.uint8) for x in sample_n]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VarImage)
            and other.max_height == self.max_height
            and other.max_width == self.max_width
        )

    def __repr__(self) -> str:
        return f"VarImage(max_height={self.max_height}, max_width={self.max_width})"


# --- gymnasium.vector support: a batch is a tuple of members --------------------------------------


@batch_space.register(AnyText)
@batch_space.register(VarImage)
def _batch_space(space: AnyText | VarImage, n: int = 1) -> Tuple:
    """``n`` independent copies; each copy gets its own seed drawn from a copy of the space RNG,
    so sampling the batch does not consume (or mirror) the single space's stream."""
    batched = Tuple(tuple(deepcopy(space) for _ in range(n)), seed=deepcopy(space.np_random))
    seeds = [int(s) for s in deepcopy(space.np_random).integers(0, 10**8, n)]
    batched.seed(seeds)
    return batched


@batch_differing_spaces.register(AnyText)
@batch_differing_spaces.register(VarImage)
def _batch_differing_spaces(spaces: Sequence[AnyText | VarImage]) -> Tuple:
    return Tuple([deepcopy(s) for s in spaces], seed=deepcopy(spaces[0].np_random))


@concatenate.register(AnyText)
@concatenate.register(VarImage)
def _concatenate(space: AnyText | VarImage, items: Iterable[Any], out: Any) -> tuple[Any, ...]:
    """Batched members are a tuple (sizes differ, so there is nothing to stack into ``out``)."""
    return tuple(items)


@create_empty_array.register(AnyText)
def _empty_text(space: AnyText, n: int = 1, fn: Callable[..., Any] = np.zeros) -> tuple[str, ...]:
    return tuple("" for _ in range(n))


@create_empty_array.register(VarImage)
def _empty_image(
    space: VarImage, n: int = 1, fn: Callable[..., Any] = np.zeros
) -> tuple[np.ndarray, ...]:
    return tuple(fn((1, 1, 3), dtype=np.uint8) for _ in range(n))

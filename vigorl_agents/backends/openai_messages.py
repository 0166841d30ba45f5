"""Conversation → OpenAI chat messages (the wire format of vLLM's server and of `vllm.LLM.chat`).

Images travel as lossless data URLs so the server sees exactly the model-frame pixels the env made
(the serving stack must not change them: docs/geometry.md#serving-the-frame-unchanged). Encoding a 13-megapixel frame as PNG costs tens
of milliseconds, and a multi-turn episode resends its full image every turn, so encoded URLs are
cached per image object (`ImageURLCache`): an episode's history keeps the same objects alive, so
each image is encoded once per episode, not once per turn.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
from PIL import Image

from vigorl_agents.policy import Conversation, ImageLike

log = logging.getLogger(__name__)

_FORMATS = {
    "png": ("PNG", "image/png", {"compress_level": 1}),
    "jpeg": ("JPEG", "image/jpeg", {"quality": 95}),
}


def encode_image(image: ImageLike, image_format: str = "png") -> str:
    """A `data:` URL holding `image` unchanged: PNG is lossless (fast compress level 1).

    "jpeg" exists for bandwidth experiments only; it is lossy, so it breaks the rule of
    "send the model-frame image as-is".
    """
    try:
        pil_format, mime, kwargs = _FORMATS[image_format]
    except KeyError:
        raise ValueError(
            f"image_format must be one of {sorted(_FORMATS)}, got {image_format!r}"
        ) from None
    img = Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image
    if pil_format == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=pil_format, **kwargs)
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class ImageURLCache:
    """Encoded data URLs keyed by image object identity, dropped when the image dies.

    PIL images and numpy arrays are not hashable by value (and hashing pixels would cost as much as
    encoding), so entries are keyed by `id()` and guarded by a weak reference: when the image is
    garbage-collected its entry goes away, so an id reused by a new object never hits a stale URL.
    A byte budget (LRU) bounds memory when many long-lived images pass through. Images are treated
    as immutable: mutating an array in place after it was sent is not detected.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, tuple[weakref.ref, str, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, image: ImageLike, image_format: str = "png") -> str:
        key = id(image)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is image and entry[1] == image_format:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[2]
        url = encode_image(image, image_format)
        with self._lock:
            self.misses += 1
            self._drop(key)
            try:
                ref = weakref.ref(image, lambda _r, k=key: self._on_dead(k, _r))
            except TypeError:  # not weak-referenceable: do not cache
                return url
            self._entries[key] = (ref, image_format, url)
            self._bytes += len(url)
            while self._bytes > self.max_bytes and len(self._entries) > 1:
                self._drop(next(iter(self._entries)))
        return url

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _drop(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry[2])

    def _on_dead(self, key: int, ref: weakref.ref) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is ref:
                self._drop(key)


def _image_url_part(image: Any, image_format: str, cache: ImageURLCache | None) -> dict[str, Any]:
    url = cache.get(image, image_format) if cache is not None else encode_image(image, image_format)
    return {"type": "image_url", "image_url": {"url": url}}


def to_openai_messages(
    conv: Conversation, *, image_format: str = "png", cache: ImageURLCache | None = None
) -> list[dict[str, Any]]:
    """OpenAI chat messages for `conv`; a final assistant message holds `conv.assistant_prefix`.

    With a prefix, the request must ask the server to continue that message in the same turn
    (`continue_final_message=True, add_generation_prompt=False`, see `chat_template_flags`), so the
    prompt ends with `<|im_start|>assistant\\n{prefix}` and the model writes what follows it
    (docs/protocol.md#forced-final-answer). Text-only messages are sent as plain strings (what the chat template renders
    identically) and messages with images as lists of text and `image_url` parts.
    """
    return conv.chat_messages(lambda img: _image_url_part(img, image_format, cache))


def chat_template_flags(conv: Conversation) -> dict[str, bool]:
    """vLLM's request flags: continue the prefix in the same turn, or open a new assistant turn."""
    if conv.assistant_prefix:
        return {"continue_final_message": True, "add_generation_prompt": False}
    return {"continue_final_message": False, "add_generation_prompt": True}

"""Conversation → OpenAI chat messages (the wire format of vLLM's server and of `vllm.LLM.chat`).

Images travel as lossless data URLs so the server sees exactly the model-frame pixels the env made
(the serving stack must not change them: docs/geometry.md#serving-the-frame-unchanged).

Each image also carries a content id (`image_uuid`: a hash of its mode, size and pixels) as vLLM's
`uuid` (vLLM ≥ 0.11; checked on 0.32). The id lets a request refer to an image the server has
already processed — `{"type": "image_url", "image_url": null, "uuid": …}` — instead of sending it
again, so a multi-turn episode sends each image once, and the n episodes of one sample (equal
frames, different objects) share one encoding and one server-side processing. Equal ids mean equal
pixels by construction, so a reference can never pick up another image. A server that no longer
holds the image answers 400 "Cache miss …"; `vllm_server` then resends it (docs/backends.md).

Encoding a 13-megapixel frame as PNG costs tens of milliseconds, so `ImageURLCache` keeps encoded
URLs by content id (LRU, byte budget) and content ids by image object (an episode's history keeps
the same objects alive, so each image is hashed once per episode and encoded once per process).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from vigorl_agents.policy import Conversation, ImageLike

log = logging.getLogger(__name__)

_FORMATS = {
    "png": ("PNG", "image/png", {"compress_level": 1}),
    "jpeg": ("JPEG", "image/jpeg", {"quality": 95}),
}


def _as_pil(image: ImageLike) -> Image.Image:
    return Image.fromarray(np.asarray(image)) if isinstance(image, np.ndarray) else image


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
    img = _as_pil(image)
    if pil_format == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=pil_format, **kwargs)
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def image_uuid(image: ImageLike) -> str:
    """Content id of `image`: blake2b-128 of its mode, size and pixels (hex).

    An ndarray and the PIL image made from it get the same id. About 1 ms per megapixel.
    """
    img = _as_pil(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{img.mode}:{img.width}x{img.height}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()


class ImageURLCache:
    """Content ids by image object, and encoded data URLs by content id.

    PIL images and numpy arrays are not hashable by value, so ids are memoized by `id()` and
    guarded by a weak reference: when the image is garbage-collected its entry goes away, so an id
    reused by a new object never hits a stale entry. URLs are keyed by content id, so equal images
    held by different objects (the same frame in the n episodes of one sample) are encoded once; a
    byte budget (LRU) bounds their memory. Images are treated as immutable: mutating an array in
    place after it was sent is not detected. Thread-safe.
    """

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._ids: dict[int, tuple[weakref.ref, str]] = {}
        self._urls: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._urls)

    def uuid(self, image: ImageLike) -> str:
        """`image_uuid(image)`, computed once per live image object."""
        key = id(image)
        with self._lock:
            entry = self._ids.get(key)
            if entry is not None and entry[0]() is image:
                return entry[1]
        uid = image_uuid(image)
        try:
            ref = weakref.ref(image, lambda r, k=key: self._forget_id(k, r))
        except TypeError:  # not weak-referenceable: not memoized
            return uid
        with self._lock:
            self._ids[key] = (ref, uid)
        return uid

    def knows(self, image: ImageLike) -> bool:
        """Whether the content id of this very object is memoized (`uuid` costs nothing)."""
        with self._lock:
            entry = self._ids.get(id(image))
            return entry is not None and entry[0]() is image

    def has_url(self, uid: str, image_format: str = "png") -> bool:
        with self._lock:
            return (uid, image_format) in self._urls

    def get(self, image: ImageLike, image_format: str = "png") -> str:
        """The data URL of `image` (encoded on the first request for its content)."""
        key = (self.uuid(image), image_format)
        with self._lock:
            url = self._urls.get(key)
            if url is not None:
                self._urls.move_to_end(key)
                self.hits += 1
                return url
        url = encode_image(image, image_format)
        with self._lock:
            self.misses += 1
            if key not in self._urls:
                self._urls[key] = url
                self._bytes += len(url)
            while self._bytes > self.max_bytes and len(self._urls) > 1:
                self._bytes -= len(self._urls.popitem(last=False)[1])
        return url

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()
            self._urls.clear()
            self._bytes = 0

    def _forget_id(self, key: int, ref: weakref.ref) -> None:
        with self._lock:
            entry = self._ids.get(key)
            if entry is not None and entry[0] is ref:
                del self._ids[key]


def to_openai_messages(
    conv: Conversation,
    *,
    image_format: str = "png",
    cache: ImageURLCache | None = None,
    held: Callable[[str], bool] | None = None,
) -> list[dict[str, Any]]:
    """OpenAI chat messages for `conv`; a final assistant message holds `conv.assistant_prefix`.

    With a prefix, the request must ask the server to continue that message in the same turn
    (`continue_final_message=True, add_generation_prompt=False`, see `chat_template_flags`), so the
    prompt ends with `<|im_start|>assistant\\n{prefix}` and the model writes what follows it
    (docs/protocol.md#forced-final-answer). Text-only messages are sent as plain strings (what the
    chat template renders identically) and messages with images as lists of text and `image_url`
    parts.

    With a `cache`, every image part carries its content id (`uuid`), and an image for which
    `held(uuid)` is true is sent as a reference (`"image_url": None`) instead of its data.
    """
    if cache is None:
        return conv.chat_messages(
            lambda img: {"type": "image_url", "image_url": {"url": encode_image(img, image_format)}}
        )

    def part(img: ImageLike) -> dict[str, Any]:
        uid = cache.uuid(img)
        if held is not None and held(uid):
            return {"type": "image_url", "image_url": None, "uuid": uid}
        return {
            "type": "image_url",
            "image_url": {"url": cache.get(img, image_format)},
            "uuid": uid,
        }

    return conv.chat_messages(part)


def chat_template_flags(conv: Conversation) -> dict[str, bool]:
    """vLLM's request flags: continue the prefix in the same turn, or open a new assistant turn."""
    if conv.assistant_prefix:
        return {"continue_final_message": True, "add_generation_prompt": False}
    return {"continue_final_message": False, "add_generation_prompt": True}

"""One builder of chat-template messages, shared by every backend and by SFT tokenization.

A conversation is a list of (role, text, images) turns whose text holds one `<image>` marker per
image. Every consumer needs the same message structure — role + content, where content is the
plain text of a text-only turn, or text and image parts in marker order (see
docs/protocol.md#chat-rendering) — and differs only in how an image travels: a data URL for a vLLM
server, a PIL object for the in-process engine, a bare `{"type": "image"}` placeholder for a
transformers processor's chat template. So the structure is built here once and each caller passes
`image_part`, the function that turns one image into its own content part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from vigorl_env.protocol import IMAGE_MARKER as IMAGE_TOKEN  # one image inside a turn's text

T = TypeVar("T")

ImagePart = Callable[[Any], dict[str, Any]]


def placeholder_image_part(_image: Any) -> dict[str, Any]:
    """The part a processor's chat template expects: `{"type": "image"}` (the pixels go elsewhere)."""
    return {"type": "image"}


def chat_content(
    text: str, images: Sequence[T], image_part: Callable[[T], dict[str, Any]]
) -> str | list[dict[str, Any]]:
    """Content of one turn: `text` itself when it has no image, else text and image parts
    interleaved in `<image>` order (empty text pieces dropped). `images` must match the markers."""
    chunks = text.split(IMAGE_TOKEN)
    if len(chunks) - 1 != len(images):
        raise ValueError(f"{len(chunks) - 1} <image> markers but {len(images)} images")
    if not images:
        return text
    parts: list[dict[str, Any]] = []
    for i, chunk in enumerate(chunks):
        if chunk:
            parts.append({"type": "text", "text": chunk})
        if i < len(images):
            parts.append(image_part(images[i]))
    return parts


def chat_messages(
    turns: Iterable[tuple[str, str, Sequence[T]]],
    image_part: Callable[[T], dict[str, Any]],
    *,
    assistant_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """`[{"role", "content"}, ...]` for `turns` = (role, text, images) triples.

    A non-empty `assistant_prefix` (the forced final answer, docs/protocol.md#forced-final-answer)
    becomes a last assistant message; the caller renders it so that the model continues that message
    in the same turn (vLLM: `continue_final_message=True`), or appends the prefix to the rendered
    prompt itself (transformers)."""
    out = [
        {"role": role, "content": chat_content(text, images, image_part)}
        for role, text, images in turns
    ]
    if assistant_prefix:
        out.append({"role": "assistant", "content": assistant_prefix})
    return out


def text_turns(messages: Iterable[dict[str, str]]) -> list[tuple[str, str, list[None]]]:
    """(role, text, images) turns of `{"role", "content"}` dicts whose images are known only by their
    `<image>` markers (SFT records: the pixels are loaded elsewhere); each image is `None`."""
    return [(m["role"], m["content"], [None] * m["content"].count(IMAGE_TOKEN)) for m in messages]

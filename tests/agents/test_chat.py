"""One chat-message builder: the vLLM server, the vLLM engine, the transformers backend and SFT
tokenization all get the same message structure and differ only in their image parts."""

from __future__ import annotations

import pytest
from PIL import Image

from vigorl_agents.backends.openai_messages import to_openai_messages
from vigorl_agents.backends.vllm_engine import engine_messages
from vigorl_agents.chat import chat_messages, placeholder_image_part, text_turns
from vigorl_agents.policy import Conversation, Message


def _conv(prefix: str | None) -> tuple[Conversation, list[Image.Image]]:
    full, crop = Image.new("RGB", (56, 28), "red"), Image.new("RGB", (28, 28), "blue")
    conv = Conversation(
        [
            Message("system", "sys"),
            Message("user", "<image>What is it?", [full]),
            Message("assistant", "<think>a</think><tool_call>{}</tool_call>"),
            Message("user", "<observation>\nHere:\n<image></observation>", [crop]),
        ],
        assistant_prefix=prefix,
    )
    return conv, [full, crop]


def _expected(image_a: object, image_b: object) -> list[dict]:
    return [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [image_a, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": "<think>a</think><tool_call>{}</tool_call>"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<observation>\nHere:\n"},
                image_b,
                {"type": "text", "text": "</observation>"},
            ],
        },
    ]


def test_builder_structure_text_only_turns_are_strings_and_images_keep_marker_order():
    conv, (full, crop) = _conv(None)
    tagged = conv.chat_messages(lambda img: {"type": "img", "which": img.getpixel((0, 0))})
    assert tagged == _expected(
        {"type": "img", "which": (255, 0, 0)}, {"type": "img", "which": (0, 0, 255)}
    )
    # two images in one turn, text between and none at the ends
    two = chat_messages([("user", "<image>x<image>", [1, 2])], lambda i: {"i": i})
    assert two == [{"role": "user", "content": [{"i": 1}, {"type": "text", "text": "x"}, {"i": 2}]}]
    with pytest.raises(ValueError, match="1 <image> markers but 2 images"):
        chat_messages([("user", "<image>", [1, 2])], lambda i: {"i": i})


def test_backends_differ_only_in_their_image_parts():
    conv, (full, crop) = _conv("<think> final </think>\n<answer>")
    prefix_msg = {"role": "assistant", "content": "<think> final </think>\n<answer>"}
    openai = to_openai_messages(conv)
    url_a, url_b = openai[1]["content"][0], openai[3]["content"][1]
    assert url_a["type"] == "image_url" and url_a["image_url"]["url"].startswith("data:image/png")
    assert openai == [*_expected(url_a, url_b), prefix_msg]
    engine = engine_messages(conv)
    assert engine == [
        *_expected(
            {"type": "image_pil", "image_pil": full}, {"type": "image_pil", "image_pil": crop}
        ),
        prefix_msg,
    ]
    # transformers: placeholders, and the prefix is appended to the rendered prompt instead
    hf = conv.chat_messages(placeholder_image_part, with_prefix=False)
    assert hf == _expected({"type": "image"}, {"type": "image"})


def test_sft_records_build_the_same_messages_as_a_conversation():
    conv, _ = _conv(None)
    record_messages = [{"role": m.role, "content": m.text} for m in conv.messages]
    assert chat_messages(text_turns(record_messages), placeholder_image_part) == conv.chat_messages(
        placeholder_image_part
    )

"""Training token streams (vigorl_agents.tokens) on a hand-built two-crop trajectory with a forced
prefix, checked segment by segment and mask value by mask value against the tiny models' own
processor (chat template + image processor), for the tiny Qwen2.5-VL and Qwen2-VL; and token-in
on the transformers backend.

The reference for every segment is the processor's rendering of the same conversation as text
(what a text-in backend feeds): the stream built piece by piece from ids must equal it wherever
decoding a generated turn and tokenizing it again gives the same ids (true for these turns).
"""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from PIL import Image

from vigorl_agents.policy import Conversation, Message, SamplingParams
from vigorl_agents.rollout import Trajectory, TurnRecord
from vigorl_agents.tokens import TokenBuilder, TokenStream, tokenize_trajectory
from vigorl_env.protocol import FORCED_PREFIX, OBSERVATION_TEXT_DOT

SYSTEM = "You are a helpful assistant."
QUESTION = "<image>\nWhat colour is the mug? Options: red, blue."
FRAME, CROP1, CROP2 = (196, 224), (112, 112), (84, 84)  # (w, h), multiples of 28
TURN0 = (
    '<think> The mug may be left (40, 60). </think>\n<tool_call>\n{"name": "search_coordinate", '
    '"arguments": {"coordinate": [40, 60]}}\n</tool_call>'
)
TURN1 = (
    '<think> Closer (50, 70). </think>\n<tool_call>\n{"name": "search_coordinate", '
    '"arguments": {"coordinate": [50, 70]}}\n</tool_call>'
)
ANSWER = " red </answer>"


def _img(size: tuple[int, int], seed: int) -> Image.Image:
    w, h = size
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def model_dir(request):
    """Each tiny model family (the same chatml, different vision towers)."""
    return request.getfixturevalue(
        {"qwen2_5_vl": "tiny_qwen25_dir", "qwen2_vl": "tiny_qwen2_dir"}[request.param]
    )


@pytest.fixture(scope="module")
def processor(model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def builder(processor) -> TokenBuilder:
    return TokenBuilder.from_processor(processor)


def _conversation(n_turns: int, prefix: str | None = None) -> Conversation:
    """The episode's history as text after `n_turns` assistant turns (1 or 2)."""
    msgs = [Message("system", SYSTEM), Message("user", QUESTION, [_img(FRAME, 0)])]
    for k, (turn, crop) in enumerate([(TURN0, CROP1), (TURN1, CROP2)][:n_turns]):
        msgs.append(Message("assistant", turn))
        msgs.append(Message("user", OBSERVATION_TEXT_DOT, [_img(crop, k + 1)]))
    return Conversation(msgs, assistant_prefix=prefix)


def _text_in_ids(processor, conv: Conversation) -> list[int]:
    """What the transformers backend feeds for `conv` rendered as text (chat template + image
    processor, the forced prefix appended after the generation prompt)."""
    from vigorl_agents.backends.hf import render_prompt

    out = processor(text=[render_prompt(processor, conv)], images=conv.images, return_tensors="pt")
    return out["input_ids"][0].tolist()


def _ids(processor, text: str) -> list[int]:
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def _trajectory(processor, *, last: str = "eos", overlong: bool = False) -> Trajectory:
    """Two crops, then the forced final answer (the image budget is 3): turns 0 and 1 stop on
    `</tool_call>`, turn 2 (after the forced prefix) ends by the model's own `<|im_end|>` (`last`
    = "eos"), on `</answer>` ("stop") or at its token cap ("length")."""
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    g = [_ids(processor, TURN0), _ids(processor, TURN1), _ids(processor, ANSWER)]
    if last == "eos":
        g[2] = g[2] + [im_end]
    if last == "length":
        g[2] = g[2][:-2]
    obs = [
        {"text": OBSERVATION_TEXT_DOT, "image_sizes": [list(CROP1)]},
        {"text": OBSERVATION_TEXT_DOT, "image_sizes": [list(CROP2)]},
        None,
    ]
    prompts = [
        _text_in_ids(processor, _conversation(0)),
        _text_in_ids(processor, _conversation(1)),
        _text_in_ids(processor, _conversation(2, FORCED_PREFIX)),
    ]
    turns = [
        TurnRecord(
            prefix=FORCED_PREFIX if t == 2 else "",
            text=tok.decode(g[t], skip_special_tokens=True),
            finish_reason="length" if (t == 2 and last == "length") else "stop",
            stop_reason={0: "</tool_call>", 1: "</tool_call>", 2: "</answer>"}[t]
            if not (t == 2 and last != "stop")
            else None,
            token_ids=g[t],
            logprobs=[-0.01 * (100 * t + i + 1) for i in range(len(g[t]))],
            prompt_token_ids=prompts[t],
            observation=obs[t],
        )
        for t in range(3)
    ]
    return Trajectory(
        env_id="ViGoRL/SynthSearch-v0",
        sample_id="s0",
        index=0,
        split="test",
        episode=1,
        config_fingerprint="f",
        frame={},
        turns=turns,
        overlong=overlong,
    )


def _segment(stream: TokenStream, kind_index: int) -> list[int]:
    _, a, b = stream.segments[kind_index]
    return stream.response_ids[a:b]


def test_two_crop_trajectory_with_forced_prefix_every_segment_and_mask(processor, builder):
    tok = processor.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.convert_tokens_to_ids("<|image_pad|>")
    vs, ve = tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>"])
    traj = _trajectory(processor)
    s = tokenize_trajectory(traj, builder)

    # prompt = exactly what the backend fed on turn 0 (system, question, frame pads expanded,
    # ending with the assistant header)
    assert s.prompt_ids == traj.turns[0].prompt_token_ids
    assert tok.decode(s.prompt_ids[-10:]).endswith("<|im_start|>assistant\n")
    assert s.uid == "ViGoRL/SynthSearch-v0/test/s0#1"

    # segment order: G E O | G E O F | G (the model's own <|im_end|> ends turn 2: no E)
    assert [k for k, _, _ in s.segments] == ["G", "E", "O", "G", "E", "O", "F", "G"]
    bounds = [(a, b) for _, a, b in s.segments]
    assert bounds[0][0] == 0 and bounds[-1][1] == len(s.response_ids)
    assert all(b0[1] == b1[0] for b0, b1 in itertools.pairwise(bounds))  # contiguous
    g0, e0, o0, g1, e1, o1, f, g2 = (_segment(s, i) for i in range(8))

    # G: the sampled ids exactly as recorded, stop-string tokens (and the final EOS) included
    assert (g0, g1, g2) == tuple(t.token_ids for t in traj.turns)
    assert g2[-1] == im_end
    # E: one <|im_end|> after each turn that stopped on a stop string
    assert e0 == e1 == [im_end]
    # O: byte-exact observation turn, crop pads = the image processor's count for that crop
    for o, crop, seed in ((o0, CROP1, 1), (o1, CROP2, 2)):
        grid = processor.image_processor(images=[_img(crop, seed)], return_tensors="pt")
        k = int(grid["image_grid_thw"].prod()) // 4
        assert k == crop[0] * crop[1] // 784
        before, after = OBSERVATION_TEXT_DOT.split("<image>")
        assert o == (
            _ids(processor, f"\n<|im_start|>user\n{before}")
            + [vs] + [pad] * k + [ve]
            + _ids(processor, f"{after}<|im_end|>\n<|im_start|>assistant\n")
        )  # fmt: skip
        assert o.count(pad) == k and o.count(vs) == o.count(ve) == 1
    # F: the forced prefix, on its own, right after the O that spent the image budget
    assert f == _ids(processor, FORCED_PREFIX)

    # masks: 1 on G, 0 on everything inserted
    expected_mask = []
    for kind, a, b in s.segments:
        expected_mask += [1 if kind == "G" else 0] * (b - a)
    assert s.response_mask == expected_mask
    assert sum(s.response_mask) == len(g0) + len(g1) + len(g2)
    ids = np.array(s.response_ids)
    mask = np.array(s.response_mask)
    assert not mask[(ids == pad) | (ids == vs) | (ids == ve)].any()
    # logprobs: the rollout's at G positions, 0.0 elsewhere
    lps = [lp for t in traj.turns for lp in t.logprobs]
    assert [lp for lp, m in zip(s.response_logprobs, s.response_mask, strict=True) if m] == lps
    assert all(
        lp == 0.0 for lp, m in zip(s.response_logprobs, s.response_mask, strict=True) if not m
    )

    # images: [frame, crop1, crop2], and the pads of the whole sequence match their grids
    assert s.num_images == 3
    images = [_img(FRAME, 0), _img(CROP1, 1), _img(CROP2, 2)]
    grids = processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
    assert s.ids.count(pad) == int(grids.prod(-1).sum()) // 4
    assert s.ids.count(vs) == s.ids.count(ve) == 3

    # the same conversation rendered as text by the chat template = the stream up to each turn
    # (the recorded prompt ids are that rendering: no turn mismatches)
    assert s.prompt_mismatch == 0
    assert traj.turns[2].prompt_token_ids == s.ids[: len(s.prompt_ids) + s.segments[7][1]]
    assert traj.turns[1].prompt_token_ids == s.ids[: len(s.prompt_ids) + s.segments[3][1]]
    assert not s.overlong and s.has_logprobs


def test_end_of_turn_only_after_a_stop_string(processor, builder):
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    stop = tokenize_trajectory(_trajectory(processor, last="stop"), builder)
    assert [k for k, _, _ in stop.segments][-2:] == ["G", "E"]
    assert stop.response_ids[-1] == im_end and stop.response_mask[-1] == 0
    cut = tokenize_trajectory(_trajectory(processor, last="length"), builder)
    assert [k for k, _, _ in cut.segments][-2:] == ["F", "G"]  # nothing after the token cap
    assert cut.response_ids[-1] != im_end


def test_overlong_trajectory_is_masked_whole(processor, builder):
    s = tokenize_trajectory(_trajectory(processor, overlong=True), builder)
    assert s.overlong and len(s.response_mask) == len(s.response_ids) > 0
    assert set(s.response_mask) == {0}


def test_a_prompt_that_differs_from_the_stream_is_counted(processor, builder):
    traj = _trajectory(processor)
    traj.turns[1].prompt_token_ids = traj.turns[1].prompt_token_ids[:-1]  # e.g. re-tokenized
    assert tokenize_trajectory(traj, builder).prompt_mismatch == 1
    traj.turns[1].prompt_token_ids = None  # a backend that reports nothing: not counted
    assert tokenize_trajectory(traj, builder).prompt_mismatch == 0


def test_missing_ids_are_refused_with_the_trajectory_named(processor, builder):
    traj = _trajectory(processor)
    traj.turns[0].prompt_token_ids = None
    with pytest.raises(ValueError, match="s0#1: turn 0 has no prompt token ids"):
        tokenize_trajectory(traj, builder)
    traj = _trajectory(processor)
    traj.turns[0].observation = None
    with pytest.raises(ValueError, match="turn 0 went on but recorded no observation"):
        tokenize_trajectory(traj, builder)


def test_image_token_count_follows_the_processor_resize_rule(processor, builder):
    for w, h in [(196, 224), (28, 28), (224, 224), (100, 50), (448, 448)]:
        grid = processor.image_processor(images=[_img((w, h), 3)], return_tensors="pt")
        assert builder.image_tokens(w, h) == int(grid["image_grid_thw"].prod()) // 4, (w, h)


def test_transformers_token_in_feeds_the_ids_and_matches_text_in(model_dir, processor):
    """Token-in on the transformers backend: the stream's ids (two crops, forced prefix) give
    the same prompt ids, tokens and logprobs as the same conversation rendered as text."""
    from vigorl_agents.backends.hf import HFPolicy

    policy = HFPolicy(model_dir, device="cpu")
    assert policy.supports_token_input
    text_in = _conversation(2, FORCED_PREFIX)
    ids = _text_in_ids(processor, text_in)
    token_in = Conversation(
        [Message("user", "<image>" * 3, text_in.images)],  # the messages are not rendered
        prompt_token_ids=ids,
    )
    params = SamplingParams(temperature=0, max_tokens=6, stop=(), seed=None, logprobs=True)
    (a,), (b,) = asyncio.run(policy.generate([text_in, token_in], params))
    assert list(a.prompt_token_ids) == ids == list(b.prompt_token_ids)
    assert a.token_ids == b.token_ids
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    # a pad count that does not match the images is refused
    first_pad = ids.index(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    bad = Conversation(token_in.messages, prompt_token_ids=ids[:first_pad] + ids[first_pad + 1 :])
    with pytest.raises(ValueError, match="image_pad"):
        asyncio.run(policy.generate([bad], params))


def test_the_text_in_server_refuses_token_input():
    """Rendering the messages instead would silently feed other ids than the caller's."""
    from vigorl_agents.backends.vllm_server import VLLMServerPolicy

    policy = VLLMServerPolicy("http://127.0.0.1:9/v1", "tiny", max_retries=0)
    assert not getattr(policy, "supports_token_input", False)
    conv = Conversation([Message("user", "hi")], prompt_token_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="text-in"):
        asyncio.run(policy.generate([conv], SamplingParams()))

"""The transformers backend (`HFPolicy`) on tiny random Qwen2.5-VL / Qwen2-VL models, on CPU.

Random weights give garbage text, so these tests check structure: left padding (a batch gives the
same greedy tokens and logprobs as each conversation alone), per-request seeds, stops, lengths,
the forced prefix, image token counts and the never-truncate rule.

The tiny models are re-initialised with unit-scale weights (`_sharpen`): at the builder's 0.02
scale the output hardly depends on the prompt (every prompt gives the same greedy tokens), which
would let a padding bug pass unnoticed.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vigorl_agents.backends.hf import HFPolicy, render_prompt  # noqa: E402
from vigorl_agents.policy import Conversation, Message, Policy, SamplingParams  # noqa: E402
from vigorl_env.protocol import FORCED_PREFIX, format_tool_call  # noqa: E402

GREEDY = SamplingParams(temperature=0, max_tokens=10, stop=(), seed=None, logprobs=True)
SIZES = [(56, 84), (112, 112), (84, 56)]
TEXTS = [
    "<image>Where is the red mug?",
    "<image>a",
    "<image>Which object is closer to the camera, the lamp or the chair on the left of the table?",
]


def _sharpen(model) -> None:
    """Unit-scale random weights, so the output depends on the whole prompt (see module doc)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.normal_(0, param.shape[-1] ** -0.5, generator=g)
                if "embed_tokens" in name:
                    param.mul_(3.0)


def _image(size: tuple[int, int], seed: int) -> np.ndarray:
    w, h = size
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _conversations() -> list[Conversation]:
    return [
        Conversation([Message("system", "Answer."), Message("user", t, [_image(s, i)])])
        for i, (t, s) in enumerate(zip(TEXTS, SIZES, strict=True))
    ]


def _run(policy: HFPolicy, convs, params):
    return asyncio.run(policy.generate(convs, params))


@pytest.fixture(scope="module", params=["qwen25", "qwen2"])
def policy(request) -> HFPolicy:
    path = request.getfixturevalue(f"tiny_{request.param}_dir")
    pol = HFPolicy.from_pretrained(path, device="cpu", dtype=torch.float32, max_batch_size=8)
    _sharpen(pol.model)
    return pol


@pytest.fixture(scope="module")
def policy25(tiny_qwen25_dir) -> HFPolicy:
    pol = HFPolicy.from_pretrained(tiny_qwen25_dir, device="cpu", dtype=torch.float32)
    _sharpen(pol.model)
    return pol


def test_is_a_policy(policy25):
    assert isinstance(policy25, Policy)
    assert _run(policy25, [], GREEDY) == []


def test_greedy_batch_equals_single_and_is_deterministic(policy):
    convs = _conversations()
    batch = _run(policy, convs, GREEDY)
    again = _run(policy, convs, GREEDY)
    singles = [_run(policy, [c], GREEDY)[0] for c in convs]
    assert [len(b) for b in batch] == [1, 1, 1]
    # the prompts differ in length (left padding in the batch) and lead to different outputs
    assert len({b[0].prompt_tokens for b in batch}) > 1
    assert len({b[0].token_ids for b in batch}) > 1
    for b, a, s in zip(batch, again, singles, strict=True):
        assert b[0].token_ids == a[0].token_ids == s[0].token_ids
        assert b[0].prompt_tokens == s[0].prompt_tokens
        assert len(b[0].token_ids) == len(b[0].logprobs) == 10
        np.testing.assert_allclose(b[0].logprobs, s[0].logprobs, atol=1e-4)
        assert all(lp <= 0 for lp in b[0].logprobs)
        assert b[0].finish_reason == "length" and b[0].stop_reason is None
        decoded = policy.tokenizer.decode(list(b[0].token_ids), skip_special_tokens=True)
        assert b[0].text == decoded


def test_batched_logprobs_match_a_plain_forward(policy):
    """Generated tokens scored by one unpadded forward pass (M-RoPE from the processor's
    `mm_token_type_ids`) give the logprobs of the left-padded batched `generate`."""
    convs = _conversations()
    out = _run(policy, convs, GREEDY)
    for conv, o in zip(convs, out, strict=True):
        inputs = policy.prompt_inputs(conv)
        gen = torch.tensor([o[0].token_ids])
        n_prompt, n_gen = inputs["input_ids"].shape[1], gen.shape[1]
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], gen], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        full["mm_token_type_ids"] = torch.cat(
            [inputs["mm_token_type_ids"], torch.zeros_like(gen)], dim=1
        )
        with torch.no_grad():
            logits = policy.model(**full).logits[0, n_prompt - 1 : n_prompt - 1 + n_gen]
        ref = logits.float().log_softmax(-1).gather(1, gen[0][:, None])[:, 0]
        np.testing.assert_allclose(o[0].logprobs, ref.numpy(), atol=1e-4)
        assert o[0].token_ids[0] == int(logits[0].argmax())


def test_text_only_row_in_an_image_batch(policy25):
    text_only = Conversation([Message("user", "Which is left, the cup or the lamp?")])
    convs = [_conversations()[0], text_only]
    batch = _run(policy25, convs, GREEDY)
    alone = _run(policy25, [text_only], GREEDY)
    assert batch[1][0].token_ids == alone[0][0].token_ids
    assert batch[0][0].token_ids == _run(policy25, convs[:1], GREEDY)[0][0].token_ids


def test_small_batches_give_the_same_results(policy25):
    convs = _conversations()
    big = _run(policy25, convs, GREEDY)
    policy25.max_batch_size = 2
    try:
        small = _run(policy25, convs, GREEDY)
    finally:
        policy25.max_batch_size = 8
    assert [c[0].token_ids for c in small] == [c[0].token_ids for c in big]


def test_sampling_n2_per_request_seeds(policy):
    convs = _conversations()
    params = SamplingParams(n=2, temperature=1.0, max_tokens=8, stop=(), seed=7)
    out = _run(policy, convs, params)
    assert [len(o) for o in out] == [2, 2, 2]
    for o in out:
        assert all(len(c.token_ids) == 8 and c.finish_reason == "length" for c in o)
        assert o[0].token_ids != o[1].token_ids  # the two samples differ
    # same seed → same samples, whatever else is in the batch
    alone = _run(policy, [convs[1]], params)[0]
    assert [c.token_ids for c in alone] == [c.token_ids for c in out[1]]
    # per-conversation params: another seed changes that conversation only
    mixed = _run(policy, convs, [params, params.with_(seed=8), params])
    assert [c.token_ids for c in mixed[0]] == [c.token_ids for c in out[0]]
    assert [c.token_ids for c in mixed[1]] != [c.token_ids for c in out[1]]


def test_top_k_one_is_greedy(policy25):
    convs = _conversations()
    greedy = _run(policy25, convs, GREEDY.with_(logprobs=False))
    topk1 = _run(policy25, convs, SamplingParams(temperature=1.0, top_k=1, max_tokens=10, stop=()))
    assert [c[0].token_ids for c in topk1] == [c[0].token_ids for c in greedy]


def test_concurrent_calls_from_a_new_event_loop_each_time(policy25):
    """GRPO drives the policy with one `asyncio.run` per RL step and multi-turn episodes contend
    for it: the second loop must not meet a lock bound to the first (it raised RuntimeError)."""
    convs = _conversations()

    async def contended():
        params = GREEDY.with_(max_tokens=2)
        return await asyncio.gather(*(policy25.generate([c], params) for c in convs))

    first = asyncio.run(contended())
    second = asyncio.run(contended())
    assert [r[0][0].token_ids for r in first] == [r[0][0].token_ids for r in second]


def test_logit_bias_bans_a_token_and_logprobs_stay_the_models(policy25):
    """−100 on the greedy first token: it is never chosen (greedy or sampled), and the reported
    logprob of what was chosen is the unbiased model's (what the trainer recomputes)."""
    convs = _conversations()
    greedy = _run(policy25, convs, GREEDY.with_(max_tokens=4))
    first = greedy[0][0].token_ids[0]
    banned = GREEDY.with_(max_tokens=4, logit_bias=((first, -100.0),))
    out = _run(policy25, convs, banned)
    assert out[0][0].token_ids[0] != first
    sampled = _run(
        policy25,
        convs[:1],
        SamplingParams(n=8, temperature=1.0, max_tokens=1, stop=(), seed=3, logprobs=True,
                       logit_bias=((first, -100.0),)),
    )  # fmt: skip
    assert all(c.token_ids[0] != first for c in sampled[0])
    unbiased = _run(policy25, convs[:1], GREEDY.with_(max_tokens=1))
    # the second-best token under the bias: its logprob is the unbiased model's own
    second = out[0][0]
    assert second.logprobs[0] < unbiased[0][0].logprobs[0]  # lower than the banned best token
    assert second.logprobs[0] > -50  # not shifted by the −100 bias


def test_checkpoint_generation_config_is_ignored_and_model_state_restored(policy25):
    """Qwen checkpoints ship repetition_penalty / top_k defaults that SamplingParams can't
    express; they must not leak into decoding. A shared (training) model keeps its mode."""
    convs = _conversations()[:1]
    reference = _run(policy25, convs, GREEDY)[0][0].token_ids
    model = policy25.model
    config = model.generation_config
    config.repetition_penalty, config.no_repeat_ngram_size = 10.0, 2
    model.train()
    try:
        assert _run(policy25, convs, GREEDY)[0][0].token_ids == reference
        assert model.training and model.generation_config is config
    finally:
        config.repetition_penalty, config.no_repeat_ngram_size = None, None
        model.eval()


def test_max_tokens_gives_length(policy25):
    out = _run(policy25, _conversations()[:2], GREEDY.with_(max_tokens=4))
    for o in out:
        assert o[0].finish_reason == "length"
        assert len(o[0].token_ids) == 4 and len(o[0].logprobs) == 4


def test_stop_string_cuts_at_first_occurrence(policy25):
    convs = _conversations()
    free = _run(policy25, convs, GREEDY.with_(max_tokens=12))
    text = free[0][0].text
    assert len(text) >= 6 and text.isascii()
    stop = text[2:5]
    first = text.find(stop)
    params = [GREEDY.with_(max_tokens=12, stop=("</never>", stop)), GREEDY.with_(max_tokens=12)]
    out = _run(policy25, convs[:2], params)
    stopped = out[0][0]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == stop
    assert stopped.text == text[: first + len(stop)]
    # token ids run up to the token that completed the stop, a prefix of the free run
    ids = stopped.token_ids
    assert ids == free[0][0].token_ids[: len(ids)] and len(ids) < 12
    assert stop in policy25.tokenizer.decode(list(ids))
    assert stop not in policy25.tokenizer.decode(list(ids[:-1]))
    assert len(stopped.logprobs) == len(ids)
    # the other row of the batch ignores that stop and runs to its own limit
    assert out[1][0].token_ids == free[1][0].token_ids
    assert out[1][0].finish_reason == "length"


def test_eos_ends_the_turn(policy25):
    """A hook makes the model emit EOS as its 3rd token: finish "stop", no stop string."""
    eos = policy25.eos_ids[0]
    calls = {"n": 0}

    def boost_eos(module, args, output):
        calls["n"] += 1
        if calls["n"] == 3:
            output[..., eos] += 1e4
        return output

    handle = policy25.model.lm_head.register_forward_hook(boost_eos)
    try:
        out = _run(policy25, _conversations()[:2], GREEDY.with_(stop=("</answer>",)))
    finally:
        handle.remove()
    for o in out:
        c = o[0]
        assert c.finish_reason == "stop" and c.stop_reason is None
        assert len(c.token_ids) == 3 and c.token_ids[-1] == eos
        assert policy25.tokenizer.decode([eos]) not in c.text  # special tokens are not text


def test_forced_prefix_continues_the_assistant_turn(policy25):
    conv = _conversations()[0]
    plain = render_prompt(policy25.processor, conv)
    assert plain.endswith("<|im_start|>assistant\n")
    conv.assistant_prefix = FORCED_PREFIX
    prompt = render_prompt(policy25.processor, conv)
    assert prompt == plain + FORCED_PREFIX
    assert prompt.endswith("<|im_start|>assistant\n" + FORCED_PREFIX)
    with_prefix = _run(policy25, [conv], GREEDY)[0][0]
    conv.assistant_prefix = None
    without = _run(policy25, [conv], GREEDY)[0][0]
    assert with_prefix.prompt_tokens > without.prompt_tokens
    assert not with_prefix.text.startswith(FORCED_PREFIX)


def test_multi_image_observation_turn(policy):
    """Full frame + a crop in an observation turn: image tokens = Σ (w/28)(h/28)."""
    frame, crop = _image((112, 84), 1), _image((56, 56), 2)
    conv = Conversation(
        [
            Message("system", "Find it."),
            Message("user", "<image>Where is the button?", [frame]),
            Message("assistant", "<think> left (10, 20). </think>\n" + format_tool_call(10, 20)),
            Message("user", "Here is the crop:\n<image>", [crop]),
        ]
    )
    inputs = policy.prompt_inputs(conv)
    pad_id = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == pad_id).sum()) == (112 // 28) * (84 // 28) + 2 * 2
    assert inputs["image_grid_thw"].tolist() == [[1, 6, 8], [1, 4, 4]]
    out = _run(policy, [conv, _conversations()[0]], GREEDY.with_(max_tokens=4))
    assert out[0][0].prompt_tokens == inputs["input_ids"].shape[1]
    assert out[0][0].token_ids == _run(policy, [conv], GREEDY.with_(max_tokens=4))[0][0].token_ids


def test_prompt_too_long_is_an_error(policy25):
    convs = _conversations()[:2]
    limit = policy25.max_positions
    params = [GREEDY.with_(max_tokens=8), GREEDY.with_(max_tokens=limit)]
    with pytest.raises(ValueError, match=rf"conversation 1: prompt of \d+ tokens.*{limit}"):
        _run(policy25, convs, params)


def test_image_the_processor_would_resize_is_an_error(policy25):
    big = Conversation([Message("user", "<image>hi", [_image((280, 280), 0)])])
    with pytest.raises(ValueError, match=r"conversation 0: image 0 is 280x280.*min_pixels"):
        _run(policy25, [big], GREEDY)


def test_generate_does_not_block_the_event_loop(policy25):
    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        convs = _conversations()
        # two concurrent calls are serialized by the backend and both come back right
        a, b = await asyncio.gather(
            policy25.generate(convs[:1], GREEDY), policy25.generate(convs[1:], GREEDY)
        )
        done = True
        await task
        return ticks, a + b

    ticks, out = asyncio.run(main())
    assert ticks > 1
    assert [o[0].token_ids for o in out] == [
        o[0].token_ids for o in _run(policy25, _conversations(), GREEDY)
    ]

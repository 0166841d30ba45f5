"""The in-process vLLM engine backend (`VLLMEnginePolicy`) on the tiny random Qwen2.5-VL.

The engine runs in a child process (this file is also the probe script): an in-process vLLM engine
pins the process's OpenMP threads to one core, lowers torch's thread count and reseeds the global
RNGs, which would leak into every later test of the session. The child runs every scenario once
on one engine (start-up ~10-25 s on 2 cores) and reports JSON; the tests assert on it.

Random weights give garbage text, so the checks are structural: sample counts, stop behaviour,
token ids and logprobs, seeds, the forced prefix, image token counts, refusals, and that
`load_weights` changes the running model (text and vision tower) and restores it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from vllm_fixtures import run_vllm_child

STOPS = (" ", "e", "a", "o")


# --------------------------------------------------------------------------- the probe (child)


def _image(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _episode(full_size=(196, 224), prefix=None, seed=0):
    from PIL import Image

    from vigorl_agents.policy import Conversation, Message
    from vigorl_env.protocol import OBSERVATION_TEXT_NO_DOT as OBS

    return Conversation(
        [
            Message("system", "You are a helpful assistant."),
            Message(
                "user",
                "<image>\nWhich object is left of the mug?",
                [Image.fromarray(_image(*full_size, seed))],
            ),
            Message("assistant", "<think> The mug (98, 120). </think>\n<tool_call>x</tool_call>"),
            Message("user", OBS, [_image(112, 112, 1)]),
            Message("assistant", "<think> Closer (60, 40). </think>\n<tool_call>y</tool_call>"),
            Message("user", OBS, [Image.fromarray(_image(84, 84, 2))]),
        ],
        assistant_prefix=prefix,
    )


def _as_dict(c) -> dict:
    return {
        "text": c.text,
        "finish_reason": c.finish_reason,
        "stop_reason": c.stop_reason,
        "token_ids": list(c.token_ids) if c.token_ids is not None else None,
        "logprobs": list(c.logprobs) if c.logprobs is not None else None,
        "prompt_tokens": c.prompt_tokens,
    }


REGEX = r"<think>[a-z]{2,5} \([1-9][0-9], [1-9][0-9]\)\.</think>"


def _changed_fields(policy) -> list[str]:
    """Fields of `SamplingParams` whose change does not change vLLM's sampling params."""
    from vigorl_agents.policy import SamplingParams

    base = SamplingParams()
    changed = {
        "n": 3, "temperature": 0.9, "top_p": 0.5, "top_k": 7, "max_tokens": 9, "stop": ("x",),
        "seed": 11, "logprobs": True, "regex": "a+", "logit_bias": ((5, -100.0),),
    }  # fmt: skip
    assert set(changed) == {f.name for f in dataclasses.fields(SamplingParams)}

    def shown(params):  # vLLM's repr leaves out logit_bias
        sp = policy.sampling_params(params)
        return repr(sp), sp.logit_bias

    ref = shown(base)
    return [k for k, v in changed.items() if shown(base.with_(**{k: v})) == ref]


def _probe(model_dir: str) -> dict:
    """Every engine scenario on one engine; JSON-able results."""
    import safetensors.torch

    from vigorl_agents.backends.vllm_engine import VLLMEnginePolicy
    from vigorl_agents.backends.vllm_server import PolicyRequestError
    from vigorl_agents.policy import Conversation, Message, Policy, SamplingParams
    from vigorl_env.protocol import FORCED_PREFIX

    out: dict = {}
    t0 = time.monotonic()
    policy = VLLMEnginePolicy(model_dir, multiprocessing=False, limit_images=5)
    out["start_s"] = time.monotonic() - t0
    out["is_policy"] = isinstance(policy, Policy)

    def gen(convs, params):
        res = asyncio.run(policy.generate(convs, params))
        return [[_as_dict(c) for c in r] for r in res]

    sample = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=7, stop=(), logprobs=True)
    greedy = SamplingParams(temperature=0, max_tokens=6, stop=(), seed=None, logprobs=True)
    t0 = time.monotonic()
    # one call mixing a sampled, a forced-prefix and a plain greedy conversation
    out["mixed"] = gen(
        [_episode(), _episode(prefix=FORCED_PREFIX), _episode()], [sample, greedy, greedy]
    )
    out["first_generate_s"] = time.monotonic() - t0
    out["mixed_again"] = gen([_episode()], [sample])
    out["other_seed"] = gen([_episode()], [sample.with_(seed=8)])
    out["stops"] = gen(
        [_episode()], SamplingParams(n=4, temperature=1.0, max_tokens=64, seed=3, stop=STOPS)
    )
    out["length"] = gen(
        [_episode()], SamplingParams(n=2, temperature=1.0, max_tokens=5, seed=4, stop=())
    )
    out["image_tokens"] = gen(
        [_episode((196, 224)), _episode((224, 224))], SamplingParams(temperature=0, max_tokens=1)
    )
    # structured output: every sample matches the regex (without it, random text does not)
    regex = SamplingParams(n=3, temperature=1.0, max_tokens=40, seed=5, stop=(), regex=REGEX)
    out["regex"] = gen([_episode()], regex)
    out["no_regex"] = gen([_episode()], regex.with_(regex=None))
    out["changed_fields"] = _changed_fields(policy)

    # continuous batching: a short request asked while a long one runs is answered first
    long = SamplingParams(temperature=1.0, max_tokens=1500, seed=1, stop=())  # seconds
    short = SamplingParams(temperature=1.0, max_tokens=2, seed=2, stop=())

    async def race():
        t0 = time.monotonic()
        done = {}
        first = asyncio.ensure_future(policy.generate([_episode()], long))
        first.add_done_callback(lambda _: done.setdefault("long", time.monotonic() - t0))
        await asyncio.sleep(0.5)
        done["long_running_at_submit"] = not first.done()
        await policy.generate([_episode()], short)
        done["short"] = time.monotonic() - t0
        await first
        # a cancelled request is aborted in the engine, which then goes idle
        doomed = asyncio.ensure_future(policy.generate([_episode()], long))
        await asyncio.sleep(0.3)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        await policy.generate([_episode()], short)
        done["idle_after_cancel"] = not policy._by_id and not policy._active
        return done

    out["race"] = asyncio.run(race())

    # many seeded multimodal prompts at once (regression: chunked prefill of seeded requests
    # killed the CPU engine, "CPU Generator does not use offset")
    many = [_episode((224, 224), seed=100 + i) for i in range(24)]
    out["many"] = gen(
        many, [SamplingParams(temperature=1.0, max_tokens=6, seed=1000 + i) for i in range(24)]
    )
    try:
        gen([Conversation([Message("user", "<image>" * 6, [_image(28, 28, 5)] * 6)])], greedy)
        out["six_images"] = None
    except PolicyRequestError as exc:
        out["six_images"] = {"message": str(exc), "is_value_error": isinstance(exc, ValueError)}

    # weights: zero the final norm (every logit 0), then the vision merger's output layer
    weights = safetensors.torch.load_file(str(Path(model_dir) / "model.safetensors"))
    zero_norm = {**weights, "model.norm.weight": weights["model.norm.weight"] * 0}
    blind = {k: (v * 0 if k.startswith("visual.merger.mlp.2.") else v) for k, v in weights.items()}
    conv = _episode()
    steps = {
        "base": None,
        "zero_norm": zero_norm,
        "restored": weights,
        "blind": blind,
        "restored2": weights,
    }
    out["weights"] = {}
    t0 = time.monotonic()
    for name, tensors in steps.items():
        if tensors is not None:
            policy.load_weights(tensors.items())
        out["weights"][name] = gen([conv], greedy)[0][0]
    out["weights_s"] = time.monotonic() - t0
    try:  # part of a fused q/k/v module: refused before the engine is touched
        policy.load_weights(
            [
                (
                    "model.layers.0.self_attn.q_proj.weight",
                    weights["model.layers.0.self_attn.q_proj.weight"],
                )
            ]
        )
        out["partial_error"] = None
    except ValueError as exc:
        out["partial_error"] = str(exc)
    out["weights"]["after_partial"] = gen([conv], greedy)[0][0]
    out["weight_version"] = policy.weight_version

    # load_weights waits for the requests in flight: a long greedy request running when a weight
    # update is asked for finishes on the old weights (a mid-generation swap would turn its tail
    # into token 0 under the zeroed norm), and the update lands only after it
    long_greedy = SamplingParams(temperature=0, max_tokens=80, stop=(), seed=None)
    (before,) = gen([conv], long_greedy)

    async def update_while_generating():
        t0 = time.monotonic()
        marks: dict = {}
        task = asyncio.ensure_future(policy.generate([conv], long_greedy))
        task.add_done_callback(lambda _: marks.setdefault("generated", time.monotonic() - t0))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(policy.load_weights, zero_norm.items())
        marks["loaded"] = time.monotonic() - t0
        ((c,),) = await task
        marks["same"] = list(c.token_ids) == before[0]["token_ids"]
        return marks

    out["update_while_generating"] = asyncio.run(update_while_generating())
    out["after_update"] = gen([conv], greedy)[0][0]
    policy.load_weights(weights.items())
    asyncio.run(policy.aclose())
    return out


# --------------------------------------------------------------------------- the tests (parent)


@pytest.fixture(scope="module")
def engine_results(tiny_qwen25_dir, tmp_path_factory) -> dict:
    result_file = tmp_path_factory.mktemp("engine") / "results.json"
    run_vllm_child([__file__, str(tiny_qwen25_dir), str(result_file)])
    return json.loads(result_file.read_text())


def _check_completion(c: dict, max_tokens: int) -> None:
    assert c["finish_reason"] in ("stop", "length")
    assert 1 <= len(c["token_ids"]) <= max_tokens
    if c["finish_reason"] == "length":
        assert len(c["token_ids"]) == max_tokens
    if c["logprobs"] is not None:
        assert len(c["logprobs"]) == len(c["token_ids"]) and all(lp <= 0 for lp in c["logprobs"])


@pytest.mark.vllm
def test_generate_with_images_n_samples_and_seeds(engine_results):
    r = engine_results
    assert r["is_policy"]
    sampled, forced, plain = r["mixed"]
    assert [len(x) for x in r["mixed"]] == [3, 1, 1]  # one list per conversation, in order
    for c in sampled:
        _check_completion(c, 12)
        assert c["logprobs"] is not None
    assert len({tuple(c["token_ids"]) for c in sampled}) == 3  # n samples differ
    again = r["mixed_again"][0]
    assert [c["token_ids"] for c in again] == [c["token_ids"] for c in sampled]  # same seed
    assert [c["text"] for c in again] == [c["text"] for c in sampled]
    assert [c["token_ids"] for c in r["other_seed"][0]] != [c["token_ids"] for c in sampled]
    # a conversation's prompt is the same whatever else shares the batch
    assert len({c["prompt_tokens"] for c in sampled} | {plain[0]["prompt_tokens"]}) == 1


@pytest.mark.vllm
def test_every_sampling_field_is_honoured_regex_included(engine_results):
    """Regression: the engine dropped `regex` silently (structured output ignored)."""
    import re

    assert engine_results["changed_fields"] == []  # each field reaches vLLM's sampling params
    (samples,) = engine_results["regex"]
    assert len(samples) == 3
    for c in samples:
        assert re.fullmatch(REGEX, c["text"]), c["text"]
    (free,) = engine_results["no_regex"]
    assert not any(re.fullmatch(REGEX, c["text"]) for c in free)


@pytest.mark.vllm
def test_a_weight_update_waits_for_the_requests_in_flight(engine_results):
    marks = engine_results["update_while_generating"]
    assert marks["generated"] < marks["loaded"], marks
    assert marks["same"]  # the running request finished on the old weights, untouched
    assert engine_results["after_update"]["token_ids"] == [0]  # the next one sees the new ones


@pytest.mark.vllm
def test_many_concurrent_seeded_multimodal_requests_keep_the_engine_alive(engine_results):
    many = engine_results["many"]
    assert len(many) == 24 and all(len(o) == 1 and o[0]["token_ids"] for o in many)


@pytest.mark.vllm
def test_requests_are_answered_as_they_finish_not_batch_by_batch(engine_results):
    race = engine_results["race"]
    assert race["long_running_at_submit"], race
    assert race["short"] < race["long"], race  # the short one did not wait for the long one
    assert race["idle_after_cancel"]


@pytest.mark.vllm
def test_forced_prefix_continues_the_assistant_turn(engine_results):
    _, (forced,), (plain,) = engine_results["mixed"]
    _check_completion(forced, 6)
    assert forced["prompt_tokens"] > plain["prompt_tokens"]
    assert not forced["text"].startswith("<think>")  # the prefix is prompt, not output


@pytest.mark.vllm
def test_stop_strings_are_kept_and_lengths_capped(engine_results):
    (samples,) = engine_results["stops"]
    stopped = [c for c in samples if c["stop_reason"] is not None]
    assert stopped
    for c in stopped:
        assert c["finish_reason"] == "stop" and c["stop_reason"] in STOPS
        assert c["text"].endswith(c["stop_reason"])
        first = min(c["text"].find(s) for s in STOPS if s in c["text"])
        assert first == len(c["text"]) - len(c["stop_reason"])  # ends at the first stop
    for c in engine_results["length"][0]:
        assert c["finish_reason"] == "length" and len(c["token_ids"]) == 5
        assert c["logprobs"] is None  # not asked for


@pytest.mark.vllm
def test_images_are_not_resized_and_the_image_limit_refuses(engine_results):
    (small,), (big,) = engine_results["image_tokens"]
    assert big["prompt_tokens"] - small["prompt_tokens"] == 64 - 56  # (224/28)² − (196/28)(224/28)
    six = engine_results["six_images"]
    assert six is not None and six["is_value_error"]
    assert "image" in six["message"] and "vllm.LLM" in six["message"]


@pytest.mark.vllm
def test_load_weights_changes_the_running_model_and_restores_it(engine_results):
    w = engine_results["weights"]
    base = w["base"]
    # zero final norm: every logit is 0, greedy picks token 0 (<|endoftext|>, an EOS)
    assert w["zero_norm"]["token_ids"] != base["token_ids"]
    assert w["zero_norm"]["token_ids"] == [0] and w["zero_norm"]["finish_reason"] == "stop"
    for name in ("restored", "restored2"):
        assert w[name]["token_ids"] == base["token_ids"]
        np.testing.assert_allclose(w[name]["logprobs"], base["logprobs"], atol=1e-5)
    # a blind vision tower changes the output: cached image embeddings were not reused
    diff = np.abs(np.array(w["blind"]["logprobs"]) - np.array(base["logprobs"]))
    assert w["blind"]["token_ids"] != base["token_ids"] or diff.max() > 1e-4
    assert engine_results["weight_version"] == 4
    assert "k_proj.weight" in engine_results["partial_error"]
    assert w["after_partial"]["logprobs"] == w["restored2"]["logprobs"]


def test_partial_module_updates_are_refused():
    from vigorl_agents.backends.vllm_engine import check_complete_modules

    attn = "model.layers.0.self_attn"
    known = {f"{attn}.{p}_proj.{k}" for p in "qkv" for k in ("weight", "bias")}
    known |= {
        f"{attn}.o_proj.weight",
        "model.norm.weight",
        "visual.merger.mlp.2.weight",
        "visual.merger.mlp.2.bias",
    }
    check_complete_modules(known, known)  # everything
    check_complete_modules({f"{attn}.o_proj.weight", "model.norm.weight"}, known)  # whole modules
    check_complete_modules({f"{attn}.{p}_proj.weight" for p in "qkv"}, None)  # unknown checkpoint
    bad = [
        {f"{attn}.q_proj.weight", f"{attn}.q_proj.bias"},  # q without k, v (one fused module)
        {f"{attn}.{p}_proj.weight" for p in "qkv"},  # weights without their biases
        {"visual.merger.mlp.2.bias"},  # a bias without its weight
    ]
    for names in bad:
        with pytest.raises(ValueError, match="missing"):
            check_complete_modules(names, known)
    with pytest.raises(ValueError, match=r"up_proj\.weight"):
        check_complete_modules({"model.layers.1.mlp.gate_proj.weight"}, None)


if __name__ == "__main__":  # the probe: python test_vllm_engine.py MODEL_DIR RESULT_JSON
    try:
        import vllm  # noqa: F401
    except Exception as exc:
        print(f"VLLM_IMPORT_ERROR {exc!r}")
        sys.exit(3)
    results = _probe(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps(results))
    print(
        f"engine start {results['start_s']:.1f} s, first generate {results['first_generate_s']:.1f} s"
    )

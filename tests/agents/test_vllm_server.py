"""The vLLM server backend: message building, the launcher and `VLLMServerPolicy` on live servers.

The live tests talk to real vLLM CPU servers of the tiny random Qwen2.5-VL (vllm_fixtures.py).
Random weights give garbage text, so they check structure: sample counts, finish and stop reasons,
token counts, image token accounting, determinism under a seed, the forced prefix, refusals
(HTTP 400) and failover when a server dies mid-batch. Message building, retries against a dead
port and the launcher's process handling need no vLLM and always run.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import io
import logging
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from vigorl_agents.backends.launcher import VLLMServer, free_port, group_members
from vigorl_agents.backends.openai_messages import (
    ImageURLCache,
    chat_template_flags,
    encode_image,
    image_uuid,
    to_openai_messages,
)
from vigorl_agents.policy import Conversation, Message, Policy, SamplingParams
from vigorl_env.protocol import FORCED_PREFIX, OBSERVATION_TEXT_NO_DOT, STOP_STRINGS

openai = pytest.importorskip("openai")

from vigorl_agents.backends.vllm_server import (  # noqa: E402
    PolicyRequestError,
    PolicyUnavailableError,
    VLLMServerPolicy,
)

try:
    from vllm_fixtures import TINY_SERVED_NAME
except ImportError:  # tests/agents imported as a package
    from .vllm_fixtures import TINY_SERVED_NAME


def _image(w: int, h: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# Sides are multiples of 28 and areas within the tiny processor's [3136, 64·784] pixels, so the
# server must not resize them (docs/geometry.md): an image costs exactly (w/28)·(h/28) tokens.
FULL = Image.fromarray(_image(196, 224, 0))  # 7·8 = 56 image tokens
CROP1 = _image(112, 112, 1)  # 16 tokens (an ndarray, as the env returns crops)
CROP2 = Image.fromarray(_image(84, 84, 2))  # 9 tokens


def _episode(full: Image.Image = FULL, prefix: str | None = None) -> Conversation:
    """A multi-turn crop episode: full image, then two crops as separate user turns."""
    obs = OBSERVATION_TEXT_NO_DOT
    tool = '<tool_call>\n{"name": "search_coordinate", "arguments": {"coordinate": [%d, %d]}}\n</tool_call>'
    return Conversation(
        [
            Message("system", "You are a helpful assistant."),
            Message("user", "<image>\nWhich object is left of the mug?", [full]),
            Message("assistant", "<think> The mug (98, 120). </think>\n" + tool % (98, 120)),
            Message("user", obs, [CROP1]),
            Message("assistant", "<think> Closer look (60, 40). </think>\n" + tool % (60, 40)),
            Message("user", obs, [CROP2]),
        ],
        assistant_prefix=prefix,
    )


# --------------------------------------------------------------------------- messages (no vLLM)


def test_messages_keep_image_order_and_append_the_prefix():
    conv = Conversation(
        [
            Message("system", "sys"),
            Message("user", "a<image>b<image>", [FULL, CROP1]),
            Message("assistant", "act"),
        ],
        assistant_prefix=FORCED_PREFIX,
    )
    msgs = to_openai_messages(conv)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "assistant"]
    assert msgs[0]["content"] == "sys"
    parts = msgs[1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url"]
    assert [p.get("text") for p in parts] == ["a", None, "b", None]
    assert parts[1]["image_url"]["url"] == encode_image(FULL)
    assert parts[3]["image_url"]["url"] == encode_image(CROP1)
    assert msgs[3] == {"role": "assistant", "content": FORCED_PREFIX}
    assert chat_template_flags(conv) == {
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    conv.assistant_prefix = None
    assert len(to_openai_messages(conv)) == 3
    assert chat_template_flags(conv) == {
        "continue_final_message": False,
        "add_generation_prompt": True,
    }


def test_data_urls_are_lossless_png():
    for image in (FULL, CROP1, Image.fromarray(_image(30, 20, 3)[..., 0])):
        url = encode_image(image)
        assert url.startswith("data:image/png;base64,")
        decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(image))
    with pytest.raises(ValueError, match="image_format"):
        encode_image(FULL, "gif")


def test_image_cache_encodes_each_content_once_and_forgets_dead_images():
    cache = ImageURLCache()
    img = Image.fromarray(_image(56, 56, 4))
    arr = _image(56, 56, 5)
    conv = Conversation([Message("user", "<image><image>", [img, arr])])
    first = to_openai_messages(conv, cache=cache)
    for _ in range(3):  # later turns resend the same objects
        again = to_openai_messages(conv, cache=cache)
        assert (
            again[0]["content"][0]["image_url"]["url"] is first[0]["content"][0]["image_url"]["url"]
        )
    assert (cache.misses, cache.hits, len(cache)) == (2, 6, 2)
    # every part names its image by content: equal pixels, equal id, whatever the object
    ids = [p["uuid"] for p in first[0]["content"]]
    assert ids == [image_uuid(img), image_uuid(arr)] and ids[0] != ids[1]
    assert image_uuid(Image.fromarray(arr)) == ids[1] == cache.uuid(arr.copy())
    assert cache.get(arr.copy()) is first[0]["content"][1]["image_url"]["url"]  # no new encoding
    # a different image is never a stale hit
    other = arr.copy()
    other[0, 0] = 255 - other[0, 0]
    assert cache.uuid(other) != ids[1] and cache.get(other) == encode_image(other)
    # an image the endpoint holds travels as a reference only
    held = to_openai_messages(conv, cache=cache, held={ids[0]}.__contains__)[0]["content"]
    assert held[0] == {"type": "image_url", "image_url": None, "uuid": ids[0]}
    assert held[1]["image_url"]["url"] == encode_image(arr)
    n_ids = len(cache._ids)
    del img, conv, first, again, other, held
    gc.collect()
    assert len(cache._ids) < n_ids  # ids of dead objects are forgotten
    small = ImageURLCache(max_bytes=1)  # the byte budget evicts least recently used entries
    a, b = _image(28, 28, 6), _image(28, 28, 7)
    small.get(a)
    small.get(b)
    assert len(small) == 1


def test_every_sampling_field_changes_the_request():
    """A setting is sent or refused, never dropped (regex included): changing any field of
    `SamplingParams` from its default changes the request body."""
    policy = VLLMServerPolicy(["http://127.0.0.1:9/v1"], "m")
    base = SamplingParams()
    changed = {
        "n": 3, "temperature": 0.9, "top_p": 0.5, "top_k": 7, "max_tokens": 9, "stop": ("x",),
        "seed": 11, "logprobs": True, "regex": "a+", "logit_bias": ((5, -100.0),),
    }  # fmt: skip
    assert set(changed) == {f.name for f in dataclasses.fields(SamplingParams)}
    body0 = policy.request_body(_episode(), base)
    for name, value in changed.items():
        body = policy.request_body(_episode(), base.with_(**{name: value}))
        assert body != body0, name
    regex = policy.request_body(_episode(), base.with_(regex="a+"))
    assert regex["structured_outputs"] == {"regex": "a+"}
    asyncio.run(policy.aclose())


def test_request_body_asks_vllm_for_what_spec_needs():
    policy = VLLMServerPolicy(["http://127.0.0.1:9/v1"], "m")
    params = SamplingParams(
        n=2, temperature=0.7, top_p=0.9, top_k=20, max_tokens=33, seed=5, logprobs=True
    )
    body = policy.request_body(_episode(prefix=FORCED_PREFIX), params)
    assert body["model"] == "m"
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (
        2, 0.7, 0.9, 33, 5
    )  # fmt: skip
    assert body["stop"] == list(STOP_STRINGS) and len(body["stop"]) <= 4  # vLLM refuses > 4
    assert body["logprobs"] is True
    extra = body  # vLLM's extensions travel inline in the JSON body
    assert extra["top_k"] == 20
    assert extra["include_stop_str_in_output"] is True  # stop strings kept (docs/protocol.md)
    assert extra["skip_special_tokens"] is True
    assert extra["return_token_ids"] is True
    assert extra["continue_final_message"] is True and extra["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": FORCED_PREFIX}
    assert "seed" not in policy.request_body(_episode(), params.with_(seed=None))
    asyncio.run(policy.aclose())


def test_dead_endpoint_gives_up_after_bounded_retries_naming_it():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    policy = VLLMServerPolicy([url], "m", max_retries=2, backoff=(0.01, 0.05), timeout=5)
    assert isinstance(policy, Policy)
    t0 = time.monotonic()
    with pytest.raises(PolicyUnavailableError) as info:
        asyncio.run(policy.generate([_episode()], SamplingParams(max_tokens=4)))
    assert time.monotonic() - t0 < 5
    assert info.value.attempts == 3
    assert info.value.endpoints == [url]
    assert url in str(info.value) and "3 attempts" in str(info.value)
    asyncio.run(policy.aclose())


# --------------------------------------------------------------------------- launcher (no vLLM)

_FAKE_SERVER = textwrap.dedent(
    """
    import http.server, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print("CHILD", child.pid, flush=True)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404); self.end_headers()
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


class _FakeServer(VLLMServer):
    """The launcher's process handling around a stand-in server that also spawns a child (as vLLM
    spawns its engine core), so the test needs no vLLM."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", _FAKE_SERVER, str(self.port)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too
        return f.read().split(") ", 1)[1][0] != "Z"


def test_launcher_stops_exactly_its_own_process_group(tmp_path):
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        server = _FakeServer(tmp_path, log_file=tmp_path / "fake.log", startup_timeout=30)
        with server:
            assert server.healthy() and server.base_url == f"http://127.0.0.1:{server.port}/v1"
            pid = server.pid
            assert os.getpgid(pid) == pid != os.getpgid(os.getpid())  # its own group
            deadline = time.monotonic() + 10
            while (
                "CHILD" not in (tmp_path / "fake.log").read_text() and time.monotonic() < deadline
            ):
                time.sleep(0.05)
            child = int((tmp_path / "fake.log").read_text().split("CHILD ")[1].split()[0])
            assert _alive(child)
        assert not _alive(pid) and not _alive(child) and group_members(pid) == []
        assert server.process is None and not server.healthy()
        assert bystander.poll() is None  # another process is untouched
    finally:
        bystander.terminate()
        bystander.wait()


def test_launcher_fails_fast_with_the_log_tail(tmp_path):
    class Crashing(VLLMServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(2)"]

    t0 = time.monotonic()
    with pytest.raises(Exception, match="boom: bad flag") as info:
        Crashing(tmp_path, log_file=tmp_path / "c.log", port=free_port()).start()
    assert "exited with code 2" in str(info.value)
    assert time.monotonic() - t0 < 10


def test_launcher_command_line(tmp_path):
    server = VLLMServer(
        tmp_path, served_model_name="x", port=1234, limit_images=5, min_pixels=3136,
        max_pixels=12_960_000, max_num_seqs=4, extra_args=["--seed", "3"],
    )  # fmt: skip
    cmd = server.command()
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert flags["--host"] == "127.0.0.1" and flags["--port"] == "1234"
    assert flags["--served-model-name"] == "x" and flags["--max-num-seqs"] == "4"
    assert flags["--limit-mm-per-prompt"] == '{"image": 5, "video": 0}'
    assert flags["--mm-processor-kwargs"] == '{"min_pixels": 3136, "max_pixels": 12960000}'
    assert cmd[-2:] == ["--seed", "3"]
    assert server.base_url == "http://127.0.0.1:1234/v1"


# --------------------------------------------------------------------------- live server


@pytest.fixture(scope="module")
def loop():
    """One event loop for the module, so one client's connections outlive a test."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def policy(vllm_server, loop) -> VLLMServerPolicy:
    pol = VLLMServerPolicy([vllm_server.base_url], TINY_SERVED_NAME, max_retries=2)
    yield pol
    loop.run_until_complete(pol.aclose())


def _gen(loop, policy, convs, params):
    return loop.run_until_complete(policy.generate(convs, params))


SAMPLE = SamplingParams(temperature=1.0, max_tokens=12, seed=7, stop=())


@pytest.mark.vllm
def test_multi_image_episode_and_image_token_accounting(policy, loop):
    (out,) = _gen(loop, policy, [_episode()], SAMPLE.with_(logprobs=True))
    (c,) = out
    assert c.finish_reason in ("stop", "length")
    assert 1 <= len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
    assert all(lp <= 0 for lp in c.logprobs)
    # The full image is sent as-is and never resized: 224×224 costs 64 tokens, 196×224 56.
    bigger = Image.fromarray(_image(224, 224, 9))
    (o1,), (o2,) = _gen(loop, policy, [_episode(), _episode(bigger)], SAMPLE.with_(max_tokens=1))
    assert o2.prompt_tokens - o1.prompt_tokens == 64 - 56
    assert o1.prompt_tokens == c.prompt_tokens  # FULL, CROP1, CROP2 referred to by id this time
    assert policy.stats["images_referenced"] >= 3


@pytest.mark.vllm
def test_n_samples_are_distinct_and_seeds_reproduce(policy, loop):
    params = SAMPLE.with_(n=3, max_tokens=16)
    (a,), (b,) = [_gen(loop, policy, [_episode()], params) for _ in range(2)]
    assert len(a) == 3 and len({c.token_ids for c in a}) == 3
    assert [c.text for c in a] == [c.text for c in b]  # same seed, temperature 1
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    (other,) = _gen(loop, policy, [_episode()], params.with_(seed=8))
    assert [c.token_ids for c in other] != [c.token_ids for c in a]
    # a batch returns one list per conversation, in order, with per-conversation params
    res = _gen(loop, policy, [_episode(), _episode()], [params, params.with_(n=1, seed=8)])
    assert [len(r) for r in res] == [3, 1]
    assert res[0][0].token_ids == a[0].token_ids and res[1][0].token_ids == other[0].token_ids


@pytest.mark.vllm
def test_stop_strings_end_the_turn_and_stay_in_the_text(policy, loop):
    stops = (" ", "e", "a", "o")  # garbage text hits one of these within 64 tokens
    (out,) = _gen(loop, policy, [_episode()], SAMPLE.with_(n=4, max_tokens=64, stop=stops))
    stopped = [c for c in out if c.stop_reason is not None]
    assert stopped, [c.text for c in out]
    for c in stopped:
        assert c.finish_reason == "stop" and c.stop_reason in stops
        assert c.text.endswith(c.stop_reason)
        # the text ends at the first stop string (nothing generated after it is kept)
        assert min((c.text.find(s) for s in stops if s in c.text), default=-1) == len(c.text) - len(
            c.stop_reason
        )


@pytest.mark.vllm
def test_max_tokens_ends_with_length(policy, loop):
    (out,) = _gen(loop, policy, [_episode()], SAMPLE.with_(n=2, max_tokens=5, logprobs=True))
    for c in out:
        assert c.finish_reason == "length" and c.stop_reason is None
        assert len(c.token_ids) == 5 and len(c.logprobs) == 5


@pytest.mark.vllm
def test_forced_prefix_is_continued_in_the_same_assistant_turn(policy, loop):
    greedy = SamplingParams(temperature=0, max_tokens=6, stop=())
    (plain,), (forced,) = _gen(loop, policy, [_episode(), _episode(prefix=FORCED_PREFIX)], greedy)
    assert forced.prompt_tokens > plain.prompt_tokens
    assert not forced.text.startswith("<think>")  # the prefix itself is not returned
    # what the server rendered: the prompt ends inside the assistant turn, right after the prefix
    body = policy.request_body(_episode(prefix=FORCED_PREFIX), greedy)
    body["return_prompt_text"] = True
    raw = loop.run_until_complete(policy._create(policy._endpoints[0], body))
    prompt = raw["prompt_text"]
    assert prompt.endswith("<|im_start|>assistant\n" + FORCED_PREFIX)
    assert prompt.count("<|im_start|>assistant") == 3  # two past actions + the forced turn
    assert raw["choices"][0]["message"]["content"] == forced.text


@pytest.mark.vllm
def test_one_policy_serves_several_event_loops_and_survives_aclose(vllm_server):
    policy = VLLMServerPolicy(vllm_server.base_url, TINY_SERVED_NAME)
    params = SamplingParams(temperature=0, max_tokens=3, stop=())
    first = asyncio.run(policy.generate([_episode()], params))  # each run has its own loop
    assert asyncio.run(policy.generate([_episode()], params)) == first
    asyncio.run(policy.aclose())
    assert asyncio.run(policy.generate([_episode()], params)) == first
    asyncio.run(policy.aclose())


@pytest.mark.vllm
def test_refusals_raise_at_once_naming_the_endpoint(policy, loop, vllm_server):
    t0 = time.monotonic()
    with pytest.raises(PolicyRequestError) as info:  # vLLM accepts at most 4 stop strings
        _gen(loop, policy, [_episode()], SAMPLE.with_(stop=("a", "b", "c", "d", "e")))
    assert info.value.status_code == 400 and vllm_server.base_url in str(info.value)
    assert isinstance(info.value, ValueError)
    six = Conversation([Message("user", "<image>" * 6, [CROP1] * 6)])  # limit is 5 images
    with pytest.raises(PolicyRequestError, match="image") as info:
        _gen(loop, policy, [six], SAMPLE)
    assert info.value.status_code == 400
    assert time.monotonic() - t0 < 10  # no retries on 4xx


def _grow(conv: Conversation, text: str, seed: int) -> None:
    """Append an assistant turn and an observation with a new crop (an episode's next turn)."""
    conv.messages.append(Message("assistant", text))
    conv.messages.append(Message("user", OBSERVATION_TEXT_NO_DOT, [_image(112, 112, seed)]))


def _fresh_episode(seed: int) -> Conversation:
    return Conversation(
        [
            Message("system", "You are a helpful assistant."),
            Message(
                "user", "<image>\nWhere is the mug?", [Image.fromarray(_image(196, 224, seed))]
            ),
        ]
    )


GREEDY = SamplingParams(temperature=0, max_tokens=4, stop=(), seed=None)


@pytest.mark.vllm
def test_each_image_is_sent_once_and_then_referred_to_by_id(vllm_server, loop):
    policy = VLLMServerPolicy(vllm_server.base_url, TINY_SERVED_NAME)
    control = VLLMServerPolicy(vllm_server.base_url, TINY_SERVED_NAME, refer_images=False)
    conv = _fresh_episode(9001)
    for turn in range(3):
        (ours,) = _gen(loop, policy, [conv], GREEDY)
        # after turn t, t + 1 images were sent once each and t(t + 1)/2 were referred to
        assert policy.stats["images_sent"] == turn + 1
        assert policy.stats["images_referenced"] == turn * (turn + 1) // 2
        # the server resolved every reference to the very image: same prompt, same greedy answer
        (full,) = _gen(loop, control, [conv], GREEDY)
        assert ours[0].prompt_tokens == full[0].prompt_tokens
        assert ours[0].token_ids == full[0].token_ids
        _grow(conv, "<think> Closer (60, 40). </think>", 9100 + turn)
    assert control.stats["images_referenced"] == 0 and policy.stats["cache_miss_resends"] == 0
    loop.run_until_complete(policy.aclose())
    loop.run_until_complete(control.aclose())


@pytest.mark.vllm
def test_an_image_the_server_evicted_is_sent_again(vllm_server, loop):
    """The server forgets images (its cache is bounded, it may restart): a reference it cannot
    resolve is answered 400 "Cache miss", and the request goes again with the image data."""
    import httpx

    policy = VLLMServerPolicy(vllm_server.base_url, TINY_SERVED_NAME)
    control = VLLMServerPolicy(vllm_server.base_url, TINY_SERVED_NAME, refer_images=False)
    conv = _fresh_episode(9201)
    _gen(loop, policy, [conv], GREEDY)
    _grow(conv, "<think> Closer (60, 40). </think>", 9202)
    r = httpx.post(vllm_server.root_url + "/reset_mm_cache", timeout=60)
    if r.status_code == 404:
        pytest.skip("the server was started without VLLM_SERVER_DEV_MODE=1 (no cache reset)")
    r.raise_for_status()
    # what the fallback must recover from: the reference alone is refused
    held = policy._endpoints[0].held
    body = policy.request_body(conv, GREEDY, held)
    (frame,) = [p for p in body["messages"][1]["content"] if p["type"] == "image_url"]
    assert frame["image_url"] is None
    with pytest.raises(openai.BadRequestError, match=r"(?i)cache miss"):
        loop.run_until_complete(policy._create(policy._endpoints[0], body))
    (ours,) = _gen(loop, policy, [conv], GREEDY)
    (full,) = _gen(loop, control, [conv], GREEDY)
    assert ours[0].token_ids == full[0].token_ids
    assert policy.stats["cache_miss_resends"] == 1
    assert policy.stats["requests"] == 2  # the resend is part of the same request
    # the resend put the images back: the next turn refers to them again
    _grow(conv, "<think> Closer (50, 30). </think>", 9203)
    _gen(loop, policy, [conv], GREEDY)
    assert policy.stats["cache_miss_resends"] == 1 and policy.stats["images_referenced"] == 2
    loop.run_until_complete(policy.aclose())
    loop.run_until_complete(control.aclose())


class _Routed(VLLMServerPolicy):
    """Records which endpoint each conversation's requests went to."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.routes: list[tuple[str, str]] = []

    async def _create(self, ep, body):
        (frame,) = [p for p in body["messages"][1]["content"] if p["type"] == "image_url"]
        self.routes.append((frame["uuid"], ep.url))
        return await super()._create(ep, body)


@pytest.mark.vllm
def test_episodes_stay_on_the_endpoint_that_holds_their_images(
    vllm_server, spare_vllm_server, loop
):
    if not spare_vllm_server.healthy():  # the failover test kills it
        pytest.skip("the spare server is gone")
    policy = _Routed([vllm_server.base_url, spare_vllm_server.base_url], TINY_SERVED_NAME)
    convs = [_fresh_episode(9300 + i) for i in range(6)]

    async def episode(i: int, conv: Conversation) -> None:
        for turn in range(3):
            await policy.generate([conv], GREEDY)
            _grow(conv, "<think> Closer (60, 40). </think>", 9400 + 10 * i + turn)

    async def run():
        await asyncio.gather(*(episode(i, c) for i, c in enumerate(convs)))

    loop.run_until_complete(run())
    loop.run_until_complete(policy.aclose())
    by_episode: dict[str, set[str]] = {}
    for frame, url in policy.routes:
        by_episode.setdefault(frame, set()).add(url)
    assert len(by_episode) == 6 and all(len(urls) == 1 for urls in by_episode.values())
    assert len({url for urls in by_episode.values() for url in urls}) == 2  # both share the load
    assert policy.stats["cache_miss_resends"] == 0
    assert policy.stats["images_sent"] == 6 * 3  # each frame and crop once


@pytest.mark.vllm
def test_failover_when_a_server_dies_mid_batch(vllm_server, spare_vllm_server, loop, caplog):
    urls = [spare_vllm_server.base_url, vllm_server.base_url]
    policy = VLLMServerPolicy(urls, TINY_SERVED_NAME, max_retries=3, backoff=(0.2, 1.0))
    params = [SamplingParams(temperature=1.0, max_tokens=200, stop=(), seed=i) for i in range(16)]
    spare_pgid = spare_vllm_server.pid

    async def run():
        task = asyncio.ensure_future(policy.generate([_episode()] * 16, params))
        spare = policy._endpoints[0]
        while spare.in_flight < 4:  # wait until the spare holds part of the batch
            await asyncio.sleep(0.01)
        # kill at once: a pause here let a fast server finish its share first on a busy machine,
        # and then nothing was left to fail over (a flaky test, not a client bug)
        assert not task.done()
        await asyncio.to_thread(spare_vllm_server.kill)  # SIGKILL its process group: a crash
        return await task

    with caplog.at_level(logging.WARNING, logger="vigorl_agents.backends.vllm_server"):
        results = loop.run_until_complete(run())
    loop.run_until_complete(policy.aclose())
    assert len(results) == 16 and all(len(r) == 1 for r in results)
    assert all(r[0].finish_reason in ("stop", "length") and r[0].token_ids for r in results)
    retried = [r for r in caplog.records if spare_vllm_server.base_url in r.getMessage()]
    assert retried, "no request was in flight on the killed server"
    assert group_members(spare_pgid) == []  # its whole process group is gone ...
    assert vllm_server.healthy()  # ... and the other server is untouched


@pytest.mark.vllm
def test_many_concurrent_seeded_multimodal_requests_keep_the_engine_alive(policy, loop):
    """Regression: on vLLM 0.32 CPU, seeded requests whose prefill got chunked killed the engine
    ("CPU Generator does not use offset"); the launcher turns chunked prefill off there."""
    convs = [_episode(Image.fromarray(_image(224, 224, i))) for i in range(24)]
    params = [SAMPLE.with_(max_tokens=6, seed=1000 + i) for i in range(24)]
    out = _gen(loop, policy, convs, params)
    assert len(out) == 24 and all(len(o[0].token_ids) >= 1 for o in out)


@pytest.mark.vllm
def test_factory_opens_a_server_policy_and_an_eval_runs_through_it(vllm_server, tmp_path):
    """experiments/eval.py's path with the vllm-server backend: factory → rollout → report."""
    from vigorl_agents.eval import EvalConfig, evaluate
    from vigorl_agents.factory import PolicyConfig, open_policy

    cfg = PolicyConfig(
        backend="vllm-server",
        endpoints=(vllm_server.base_url,),
        served_model_name=vllm_server.served_model_name,
    )
    ecfg = EvalConfig(
        env_ids=("ViGoRL/SynthSearch-v0",),
        limit=2,
        max_tokens=8,
        env_kwargs={"max_pixels": 64 * 28 * 28, "crop_size": 224},
    )

    async def go():
        async with open_policy(cfg) as policy:
            return await evaluate(policy, ecfg, tmp_path, policy_name="tiny (vllm-server)")

    summary = asyncio.run(go())
    assert summary["rows"][0]["n"] == 2
    assert (tmp_path / "report.md").exists()

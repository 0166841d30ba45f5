"""A stalled vLLM server (accepts connections, never answers) must stop a run quickly and loudly:
per-request timeout and retry count come from PolicyConfig (defaults 120 s, 3 retries, backoff
1, 2, 4 s), each retry is logged with its endpoint, and the evaluation ends with
PolicyUnavailableError naming the endpoint and what was kept. Regression: 600 s × 6 attempts,
silent, not configurable. Real sockets, no vLLM."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import pytest

pytest.importorskip("openai")

from vigorl_agents.backends.launcher import free_port
from vigorl_agents.backends.vllm_server import VLLMServerPolicy
from vigorl_agents.baselines import FullViewGuess
from vigorl_agents.eval import EvalConfig, evaluate
from vigorl_agents.factory import PolicyConfig, open_policy
from vigorl_agents.policy import (
    Conversation,
    Message,
    PolicyUnavailableError,
    SamplingParams,
)


class StalledServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)  # held open, never answered

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def stalled():
    server = StalledServer()
    yield server
    server.close()


def _conv() -> Conversation:
    return Conversation([Message("system", "s"), Message("user", "hello")])


def test_a_stalled_server_times_out_retries_with_logs_and_names_the_endpoint(stalled, caplog):
    policy = VLLMServerPolicy([stalled.url], "m", timeout=0.4, max_retries=2, backoff=(0.05, 0.2))
    t0 = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="vigorl_agents.backends.vllm_server"),
        pytest.raises(PolicyUnavailableError) as info,
    ):
        asyncio.run(policy.generate([_conv()], SamplingParams(max_tokens=4)))
    elapsed = time.monotonic() - t0
    assert 3 * 0.4 <= elapsed < 10  # three attempts, each cut at the timeout
    assert len(stalled.accepted) >= 1  # the requests really reached the stalled socket
    err = info.value
    assert err.endpoints == [stalled.url] and err.attempts == 3
    assert stalled.url in str(err) and "3 attempts (0.4 s each)" in str(err)
    retries = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 2 and all(stalled.url in m for m in retries)
    assert "attempt 1/3" in retries[0] and "attempt 2/3" in retries[1]
    assert any(r.levelno == logging.ERROR and stalled.url in r.getMessage() for r in caplog.records)


def test_defaults_are_120_s_3_retries_and_backoff_1_2_4(caplog):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: each attempt fails at once
    policy = VLLMServerPolicy([url], "m")
    assert policy.timeout == 120 and policy.max_retries == 3 and policy.backoff == (1.0, 4.0)
    t0 = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="vigorl_agents.backends.vllm_server"),
        pytest.raises(PolicyUnavailableError, match="after 4 attempts"),
    ):
        asyncio.run(policy.generate([_conv()], SamplingParams(max_tokens=4)))
    assert 7 <= time.monotonic() - t0 < 30  # waited 1 + 2 + 4 s between the 4 attempts
    backoffs = [r.getMessage().rsplit("backs off ", 1)[1] for r in caplog.records
                if "backs off" in r.getMessage()]  # fmt: skip
    assert backoffs == ["1.0 s", "2.0 s", "4.0 s"]


def test_policy_config_sets_timeout_and_retries_and_eval_says_what_was_kept(stalled, tmp_path):
    # two samples already finished (an earlier run of the same policy name) ...
    asyncio.run(
        evaluate(
            FullViewGuess("option_text"),
            EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=2),
            tmp_path,
            policy_name="p",
        )
    )
    cfg = PolicyConfig(
        backend="vllm-server",
        endpoints=(stalled.url,),
        served_model_name="m",
        request_timeout_s=0.3,
        max_retries=1,
        retry_backoff_s=0.05,
        max_concurrency=3,
    )

    async def go():
        async with open_policy(cfg) as policy:
            assert isinstance(policy, VLLMServerPolicy)
            assert (policy.timeout, policy.max_retries, policy.backoff) == (0.3, 1, (0.05, 0.2))
            assert policy.max_concurrency == 3
            return await evaluate(
                policy,
                EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=4),
                tmp_path,
                policy_name="p",
            )

    t0 = time.monotonic()
    with pytest.raises(PolicyUnavailableError) as info:
        asyncio.run(go())
    assert time.monotonic() - t0 < 20
    msg = str(info.value)
    samples = tmp_path / "samples.jsonl"
    assert stalled.url in msg and "2 attempts (0.3 s each)" in msg
    assert "0 episode(s) finished in this run; 2 result(s) in all are kept in" in msg
    assert str(samples) in msg and "resumes from there" in msg
    assert "the 2 episode(s) in flight are recorded there as error lines" in msg
    # what it says was kept is on disk, intact; the two episodes cut off are error lines
    lines = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(lines) == 4
    assert [r.get("error_type") for r in lines] == [None, None, *["PolicyUnavailableError"] * 2]
    assert sorted(r["index"] for r in lines[2:]) == [2, 3]
    # a rerun retries exactly those two and the summary counts 4 results, no errors
    summary = asyncio.run(
        evaluate(
            FullViewGuess("option_text"),
            EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=4),
            tmp_path,
            policy_name="p",
        )
    )
    lines = [json.loads(x) for x in samples.read_text().splitlines()]
    assert len(lines) == 6 and sorted(r["index"] for r in lines[4:]) == [2, 3]
    (row,) = summary["rows"]
    assert row["n"] == 4 and row["errors"] == 0

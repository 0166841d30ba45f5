"""One headless Chromium per process, driven by Playwright from a thread of its own (docs/web.md#the-browser).

Why a thread: Playwright's sync API refuses to run in a thread that has a running asyncio loop,
and the rollout loop steps envs from inside one. So every browser call is shipped to one worker
thread that owns Playwright (its objects are bound to the thread that made them) and the caller
waits for the result. Why one browser per process: the evaluation runner keeps up to
`max_in_flight` envs alive at once; one Chromium each would be dozens of browser processes on a
small machine. Each env gets its own browser *context* (its own cookies, storage and page) in the
shared browser, so episodes stay isolated. The browser starts on the first call, restarts when it
has died, and closes when the last env that uses it is closed.

Playwright is imported here only, lazily: nothing outside the web envs depends on it (the `web`
extra). The Chromium binary is Debian's `chromium` (or any Chrome found on PATH, or the path in
`$VIGORL_CHROMIUM`); Playwright's own browser download is never needed.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from vigorl_env.errors import DataFormatError

log = logging.getLogger(__name__)

T = TypeVar("T")

CHROMIUM_ENV = "VIGORL_CHROMIUM"
"""Environment variable naming the Chromium/Chrome executable to use (overrides the PATH search)."""
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = (
    "install Debian's Chromium with `apt-get install -y chromium` (as root), or point "
    f"${CHROMIUM_ENV} at a Chromium/Chrome executable"
)
EXTRA_HINT = "install the web extra: `pip install 'vigorl[web]'` (playwright and miniwob)"
LAUNCH_ARGS = (
    "--no-sandbox",  # root in containers/CI has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--font-render-hinting=none",  # same glyph positions run to run
    "--hide-scrollbars",
    "--mute-audio",
)
CALL_TIMEOUT_S = 60.0
"""Longest wait for one browser call before it is treated as a dead browser."""


class BrowserUnavailableError(RuntimeError):
    """No browser can be started: a missing package or executable; the message says how to fix it."""


class BrowserCallError(RuntimeError):
    """A browser call failed (a page that did not load, a browser that died, a timeout)."""


class PageLoadError(BrowserCallError, DataFormatError):
    """A page did not load or start, even on a fresh page: a fault of that sample. It is a
    `vigorl_env.DataFormatError`, so the rollout loop hands it on as an unreadable sample and the
    evaluation records an error line and goes on (docs/evaluation.md)."""


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium executable: `explicit`, else `$VIGORL_CHROMIUM`, else the first of
    `CHROMIUM_NAMES` on PATH. Raises `BrowserUnavailableError` naming the install command."""
    for candidate in (explicit, os.environ.get(CHROMIUM_ENV)):
        if candidate:
            path = shutil.which(candidate) or candidate
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
            raise BrowserUnavailableError(
                f"Chromium executable {candidate!r} not found; {INSTALL_HINT}"
            )
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserUnavailableError(
        f"no Chromium found on PATH (looked for {', '.join(CHROMIUM_NAMES)}); {INSTALL_HINT}"
    )


def require_playwright() -> Any:
    """`playwright.sync_api`, or `BrowserUnavailableError` with the install command."""
    try:
        from playwright import sync_api
    except ImportError as e:
        raise BrowserUnavailableError(
            f"the web envs need the playwright package; {EXTRA_HINT}"
        ) from e
    return sync_api


def browser_unavailable_reason() -> str | None:
    """Why no browser can start here (None if one can): what tests print when they skip."""
    try:
        require_playwright()
        find_chromium()
    except BrowserUnavailableError as e:
        return str(e)
    return None


class BrowserHost:
    """A Chromium started lazily in a dedicated thread; `call(fn, ...)` runs `fn(browser, ...)` there.

    Thread-safe (calls are serialized by the one worker thread). A call finding the browser
    disconnected (crashed, killed) launches a new one first. After a fork (async vector envs with
    the fork start method) the child must not use the parent's thread: `shared_host` hands the child
    a fresh host.
    """

    def __init__(self, executable: str | None = None, headless: bool = True):
        self.executable = executable
        self.headless = headless
        self.pid = os.getpid()
        self.launches = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="vigorl-browser")
        self._pw: Any = None
        self._browser: Any = None

    # all of these run on the worker thread ---------------------------------------------------
    def _ensure(self) -> Any:
        if self._browser is not None and self._browser.is_connected():
            return self._browser
        if self._browser is not None:
            log.warning("the browser died; starting a new one")
            self._browser = None
        sync_api = require_playwright()
        exe = find_chromium(self.executable)
        if self._pw is None:
            self._pw = sync_api.sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=exe, headless=self.headless, args=list(LAUNCH_ARGS)
            )
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.debug("Chromium launch failed: %s", e)  # the full call log
            raise BrowserUnavailableError(
                f"Chromium at {exe} did not start ({first}); {INSTALL_HINT}"
            ) from e
        self.launches += 1
        log.info("started Chromium %s (%s)", self._browser.version, exe)
        return self._browser

    def _shutdown(self) -> None:
        for closer in (
            lambda: self._browser is not None and self._browser.close(),
            lambda: self._pw is not None and self._pw.stop(),
        ):
            try:
                closer()
            except Exception as e:  # a dead browser cannot be closed cleanly
                log.debug("browser shutdown: %s", e)
        self._browser = self._pw = None

    # caller side ---------------------------------------------------------------------------------
    def call(self, fn: Callable[..., T], *args: Any, timeout: float = CALL_TIMEOUT_S) -> T:
        """Run `fn(browser, *args)` on the browser thread and return its result.

        Exceptions of `fn` propagate unchanged (`BrowserUnavailableError` included); a call that
        takes longer than `timeout` raises `BrowserCallError` (the browser is then presumed hung
        and is killed, so the next call starts a new one)."""
        future = self._pool.submit(lambda: fn(self._ensure(), *args))
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            log.error("browser call timed out after %.0f s; killing the browser", timeout)
            self.kill()
            raise BrowserCallError(f"browser call timed out after {timeout:g} s") from None

    def kill(self) -> None:
        """Kill the Chromium process (from any thread): the next call starts a new one. Also what
        tests use to simulate a browser crash."""
        browser = self._browser
        proc = getattr(getattr(browser, "_impl_obj", None), "_browser_process", None)
        pid = getattr(proc, "pid", None) if proc is not None else None
        if pid is None:
            pid = self._browser_pid()
        if pid is not None:
            try:
                os.kill(pid, 9)
            except (ProcessLookupError, PermissionError) as e:
                log.debug("kill %s: %s", pid, e)

    def _browser_pid(self) -> int | None:
        """The pid of this process's Chromium child (the launched browser), from /proc."""
        me = os.getpid()
        try:
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmd = f.read().split(b"\0")
                except OSError:
                    continue
                ppid = int(fields[1])
                if any(b"--remote-debugging-pipe" in c for c in cmd) and self._descends(ppid, me):
                    return int(entry)
        except OSError:
            return None
        return None

    @staticmethod
    def _descends(pid: int, ancestor: int) -> bool:
        for _ in range(4):  # chromium <- playwright driver (node) <- python
            if pid == ancestor:
                return True
            try:
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                return False
        return pid == ancestor

    def close(self) -> None:
        """Close the browser and stop the thread (idempotent)."""
        if os.getpid() != self.pid:
            return  # a forked child: the thread and the browser belong to the parent
        try:
            self._pool.submit(self._shutdown).result(timeout=CALL_TIMEOUT_S)
        except Exception as e:
            log.debug("browser close: %s", e)
        self._pool.shutdown(wait=False)


_LOCK = threading.Lock()
_HOSTS: dict[tuple[str | None, bool], tuple[BrowserHost, int]] = {}


def acquire_host(executable: str | None = None, headless: bool = True) -> BrowserHost:
    """The process's shared host for this executable (created on first use); pair with
    `release_host`. The browser itself starts on the host's first call, not here."""
    key = (executable, headless)
    with _LOCK:
        host, refs = _HOSTS.get(key, (None, 0))
        if host is None or host.pid != os.getpid():
            host, refs = BrowserHost(executable, headless), 0
        _HOSTS[key] = (host, refs + 1)
        return host


def release_host(host: BrowserHost) -> None:
    """Drop one reference; the last one closes the browser."""
    with _LOCK:
        for key, (h, refs) in list(_HOSTS.items()):
            if h is host:
                if refs <= 1:
                    del _HOSTS[key]
                    break
                _HOSTS[key] = (h, refs - 1)
                return
        else:
            return
    host.close()

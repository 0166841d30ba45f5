"""Soak: ~1,000 concurrent multi-turn episodes against one vLLM server that is killed mid-run.

Why: a long evaluation must survive its server dying. What counts is what is on disk afterwards:
no finished episode lost or written twice, no unreadable line, the episodes that were in flight
re-run by a plain resume, and a client whose memory stays bounded with a thousand episodes alive.

How (only the project's own pieces: `VLLMServer`, `factory.open_policy` with the `vllm-server`
backend, `eval.evaluate` over `ViGoRL/SynthSearch-v0` in multi-turn mode):

1. start a vLLM server of the tiny random Qwen2.5-VL on a free local port;
2. run the evaluation in a child process (so its peak RSS is the client's alone) with every
   episode in flight (`max_in_flight` = episodes) and short per-request timeouts and retries;
3. watch `samples.jsonl`; once `kill_at` of the episodes have finished, record which ones are on
   disk and SIGKILL the server's whole process group;
4. watch what the client does (expected: each request is retried, then `PolicyUnavailableError`
   naming the endpoint and what was kept; the evaluation stops and the child exits);
5. start a new server on the same port and rerun the same evaluation (a resume);
6. audit the file: every line parses, every sample has exactly one result, every episode that was
   on disk before the kill (and when the client stopped) is still there unchanged.

The random model cannot follow the protocol by itself, so its text is constrained by a regular
expression (vLLM structured outputs, as in benchmarks/perf/rollout.py) to a think step and a tool
call, and the forced final turn to a short answer: each episode really plays 4 zooms and the forced
answer (5 dependent requests). Short turns (`max_tokens` 64) keep 1,000 episodes to minutes on a
small CPU machine. See docs/benchmarks.md and docs/backends.md#timeouts-and-retries.

    uv run python -m benchmarks.perf.soak [--episodes 1000] [--out benchmarks/results/soak.md]
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tyro

from benchmarks.machine import machine_name
from benchmarks.report import write_results
from vigorl_agents.backends.launcher import ServerStartError, VLLMServer, free_port
from vigorl_agents.policy import Completion, Conversation, SamplingParams, params_per_conversation

log = logging.getLogger("benchmarks.perf.soak")

ENV_ID = "ViGoRL/SynthSearch-v0"
SERVED_NAME = "tiny"
SAMPLES = "samples.jsonl"

TOOL_RE = (
    r"<think>zoom \([1-9][0-9], [1-9][0-9]\)\.</think>\n<tool_call>\n"
    r'\{"name": "search_coordinate", "arguments": \{"coordinate": \[[1-9][0-9], [1-9][0-9]\]\}\}\n</tool_call>'
)
ANSWER_RE = r" [a-z]{3,6} </answer>"


@dataclass(frozen=True)
class Args:
    episodes: int = 1000
    """Samples of the test split, one episode each."""
    in_flight: int | None = None
    """Episodes in flight at once (EvalConfig.max_in_flight); None: all of them."""
    max_batch: int = 64
    """Largest batch the rollout loop hands the policy (EvalConfig.max_batch)."""
    max_tokens: int = 96
    """Per-turn token cap. A tool-call turn is about 115 characters; held to the regex, the random
    model spells it in 60-70 tokens (often one character per token)."""
    kill_at: float = 0.4
    """Kill the server once this fraction of the episodes is on disk."""
    request_timeout_s: float = 15.0
    """PolicyConfig.request_timeout_s of the soak (the default is 120)."""
    max_retries: int = 3
    retry_backoff_s: float = 1.0
    max_num_seqs: int = 64
    """vLLM --max-num-seqs."""
    model: str = "tiny-qwen2.5-vl"
    abort_wait_s: float = 300.0
    """After the kill, how long the client may take to stop before it counts as hung (and is
    terminated)."""
    tracemalloc: bool = False
    """Also trace Python allocations in the client (slows it down a lot at 1,000 episodes)."""
    run_dir: Path | None = None
    """Where the evaluation and the logs go (default: a temporary folder, deleted at the end)."""
    out: Path | None = None
    """Write the Markdown result table here (and a .json beside it)."""


# ---------------------------------------------------------------------------------------------
# The client (a child process)
# ---------------------------------------------------------------------------------------------
class ProtocolFormat:
    """The factory-built policy with its text held to the tool-call protocol by a regex.

    Every normal turn gets `TOOL_RE` (a think step and a zoom), the forced final turn (the
    conversation carries the forced `<answer>` prefix) `ANSWER_RE`; nothing else changes."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy

    async def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[list[Completion]]:
        ps = params_per_conversation(params, len(conversations))
        ps = [
            p.with_(regex=ANSWER_RE if c.assistant_prefix else TOOL_RE)
            for c, p in zip(conversations, ps, strict=True)
        ]
        return await self.policy.generate(conversations, ps)

    async def aclose(self) -> None:
        await self.policy.aclose()


def _status_mib(field: str, pid: int | str = "self") -> float | None:
    """A memory field of /proc/<pid>/status (VmRSS: now, VmHWM: peak) in MiB; None without /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak resident memory, in MiB.

    VmHWM (the peak of this process image) where /proc exists: `ru_maxrss` of a process started by
    fork + exec also counts the parent's memory at the fork (Linux keeps the larger of the two
    across exec), which would charge this orchestrator's model imports to the client."""
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def client_main(phase: str, spec: dict[str, Any], result_path: str) -> None:
    """One evaluation run (phase `run` or `resume`): writes what happened to `result_path`.

    Its stdout/stderr and logs go to `<run_dir>/client-<phase>.log`."""
    run_dir = Path(spec["run_dir"])
    log_path = run_dir / f"client-{phase}.log"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for noisy in ("httpx", "httpx2", "openai", "httpcore"):  # one INFO line per request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if spec["tracemalloc"]:
        import tracemalloc

        tracemalloc.start()

    from vigorl_agents.eval import EvalConfig, evaluate
    from vigorl_agents.factory import PolicyConfig, open_policy
    from vigorl_agents.policy import PolicyUnavailableError

    policy_cfg = PolicyConfig(
        backend="vllm-server",
        model=spec["model"],
        endpoints=(spec["endpoint"],),
        served_model_name=SERVED_NAME,
        request_timeout_s=spec["request_timeout_s"],
        max_retries=spec["max_retries"],
        retry_backoff_s=spec["retry_backoff_s"],
    )
    cfg = EvalConfig(
        env_ids=(ENV_ID,),
        limit=spec["episodes"],
        k=1,
        max_tokens=spec["max_tokens"],
        env_kwargs=spec["env_kwargs"],
        max_in_flight=spec["in_flight"],
        max_batch=spec["max_batch"],
        overwrite=phase == "run",
        progress_every_s=10.0,
    )
    rss = _status_mib("VmRSS")
    result: dict[str, Any] = {
        "phase": phase,
        "rss_start_mib": None if rss is None else round(rss, 1),
    }

    async def go() -> dict[str, Any]:
        async with open_policy(policy_cfg) as policy:
            return await evaluate(
                ProtocolFormat(policy),
                cfg,
                run_dir / "eval",
                policy_name=f"{spec['model']} (vllm-server)",
                policy_config=policy_cfg,
            )

    t0 = time.monotonic()
    try:
        summary = asyncio.run(go())
        result["outcome"] = "finished"
        result["summary_n"] = summary["rows"][0]["n"] if summary["rows"] else 0
    except PolicyUnavailableError as e:
        result["outcome"] = "PolicyUnavailableError"
        result["message"] = str(e)
        result["kept"] = e.kept
        result["endpoints_named"] = e.endpoints
    except BaseException as e:  # a soak reports whatever stopped the client
        result["outcome"] = type(e).__name__
        result["message"] = str(e)
        result["traceback"] = traceback.format_exc()
    result["wall_s"] = round(time.monotonic() - t0, 1)
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    if spec["tracemalloc"]:
        import tracemalloc

        result["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    Path(result_path).write_text(json.dumps(result, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# The orchestrator (this process): server, kill, restart, audit
# ---------------------------------------------------------------------------------------------
Key = tuple[int, int]  # (index, episode): one env id


class Tail:
    """Reads the complete lines appended to a JSONL file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.results: dict[Key, dict[str, Any]] = {}  # first result per key
        self.errors = 0
        self.unparsable = 0

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for raw in data[: end + 1].splitlines():
            try:
                rec = json.loads(raw)
            except ValueError:
                self.unparsable += 1
                continue
            if "error" in rec:
                self.errors += 1
            else:
                self.results.setdefault((int(rec["index"]), int(rec["episode"])), rec)


def start_server(model_dir: str, port: int, log_file: Path, max_num_seqs: int) -> VLLMServer:
    """A started server; a start that fails on an import error is tried again (twice).

    (On a shared checkout another `uv run` may be re-installing a package while the server
    imports it.)"""
    for attempt in range(3):
        server = VLLMServer(
            model_dir,
            served_model_name=SERVED_NAME,
            port=port,
            max_model_len=4096,
            limit_images=5,
            max_num_seqs=max_num_seqs,
            log_file=log_file,
        )
        try:
            return server.start()
        except ServerStartError as e:
            text = str(e)
            if attempt == 2 or not ("ImportError" in text or "ModuleNotFoundError" in text):
                raise
            log.warning("server start failed on an import error; again in 15 s:\n%s", text[-500:])
            time.sleep(15)
    raise AssertionError("unreachable")


@dataclass
class Phase:
    result: dict[str, Any]
    rss_sampled_peak_mib: float
    killed_at_s: float | None = None  # since the child started
    stopped_after_kill_s: float | None = None
    before_kill: dict[Key, dict[str, Any]] | None = None
    hung: bool = False


def run_client(
    phase: str,
    spec: dict[str, Any],
    tail: Tail,
    *,
    kill: tuple[VLLMServer, int] | None = None,
    abort_wait_s: float = 300.0,
) -> Phase:
    """Run the client child; with `kill=(server, n)`, SIGKILL the server once n results are on disk."""
    result_path = Path(spec["run_dir"]) / f"client-{phase}.json"
    result_path.unlink(missing_ok=True)
    child = mp.get_context("spawn").Process(
        target=client_main, args=(phase, spec, str(result_path)), name=f"soak-client-{phase}"
    )
    t0 = time.monotonic()
    child.start()
    out = Phase(result={}, rss_sampled_peak_mib=0.0)
    t_kill = None
    while child.is_alive():
        child.join(0.2)
        tail.poll()
        out.rss_sampled_peak_mib = max(
            out.rss_sampled_peak_mib, _status_mib("VmRSS", child.pid) or 0.0
        )
        if kill is not None and t_kill is None and len(tail.results) >= kill[1]:
            out.before_kill = dict(tail.results)
            kill[0].kill()
            t_kill = time.monotonic()
            out.killed_at_s = t_kill - t0
            log.warning(
                "%d episode(s) on disk: killed the server (SIGKILL to its process group) %.0f s "
                "into the run", len(out.before_kill), out.killed_at_s,
            )  # fmt: skip
        if t_kill is not None and time.monotonic() - t_kill > abort_wait_s:
            log.error(
                "the client did not stop within %.0f s of the kill; terminating", abort_wait_s
            )
            out.hung = True
            child.terminate()
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join()
    tail.poll()
    if t_kill is not None:
        out.stopped_after_kill_s = time.monotonic() - t_kill
    out.result = (
        json.loads(result_path.read_text())
        if result_path.exists()
        else {"outcome": f"child exited with code {child.exitcode} without a result"}
    )
    return out


def audit(
    path: Path,
    episodes: int,
    before_kill: dict[Key, dict[str, Any]],
    at_stop: dict[Key, dict[str, Any]],
) -> dict[str, Any]:
    """What the final file says: parse failures, duplicates, missing samples, lost episodes."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines.pop()
    records, unparsable = [], 0
    for raw in lines:
        try:
            records.append(json.loads(raw))
        except ValueError:
            unparsable += 1
    results: dict[Key, list[dict[str, Any]]] = {}
    errors = []
    for rec in records:
        key = (int(rec["index"]), int(rec["episode"]))
        (errors.append(rec) if "error" in rec else results.setdefault(key, []).append(rec))
    wanted = {(i, 0) for i in range(episodes)}
    first = {k: v[0] for k, v in results.items()}

    def lost(snapshot: dict[Key, dict[str, Any]]) -> int:
        return sum(1 for k, rec in snapshot.items() if first.get(k) != rec)

    turns = Counter(len(v[0]["trajectory"]["turns"]) for v in results.values())
    return {
        "lines": len(lines),
        "unparsable_lines": unparsable,
        "torn_tail_bytes": len(torn),
        "result_lines": sum(len(v) for v in results.values()),
        "samples_with_one_result": sum(1 for k in wanted if len(results.get(k, ())) == 1),
        "samples_missing": len(wanted - results.keys()),
        "samples_with_duplicates": sum(1 for v in results.values() if len(v) > 1),
        "error_lines": len(errors),
        "lost_of_finished_before_kill": lost(before_kill),
        "lost_of_finished_when_client_stopped": lost(at_stop),
        "turns_per_episode": dict(sorted(turns.items())),
        "end_reasons": dict(Counter(v[0]["end_reason"] for v in results.values())),
    }


def _count(pattern: str, path: Path) -> int:
    try:
        return len(re.findall(pattern, path.read_text(errors="replace")))
    except OSError:
        return 0


def main(args: Args) -> dict[str, Any]:
    from vigorl_agents.factory import PolicyConfig
    from vigorl_agents.frame_bounds import fit_env_kwargs, policy_pixel_bounds
    from vigorl_agents.models.load import resolve_model

    t_start = time.monotonic()
    model_dir = resolve_model(args.model)
    bounds = policy_pixel_bounds(PolicyConfig(backend="vllm-server", model=args.model))
    env_kwargs = {"mode": "multi_turn"}
    if bounds is not None:  # frames and crops the tiny processor takes unchanged
        env_kwargs = fit_env_kwargs(ENV_ID, bounds, env_kwargs)
    keep = args.run_dir is not None
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="vigorl-soak-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    spec = {
        "run_dir": str(run_dir),
        "model": args.model,
        "endpoint": f"http://127.0.0.1:{port}/v1",
        "episodes": args.episodes,
        "in_flight": args.in_flight or args.episodes,
        "max_batch": args.max_batch,
        "max_tokens": args.max_tokens,
        "request_timeout_s": args.request_timeout_s,
        "max_retries": args.max_retries,
        "retry_backoff_s": args.retry_backoff_s,
        "env_kwargs": env_kwargs,
        "tracemalloc": args.tracemalloc,
    }
    samples = run_dir / "eval" / SAMPLES
    kill_after = max(1, round(args.kill_at * args.episodes))
    servers: list[VLLMServer] = []
    try:
        t = time.monotonic()
        servers.append(start_server(model_dir, port, run_dir / "server-1.log", args.max_num_seqs))
        start_1 = time.monotonic() - t
        tail = Tail(samples)
        first = run_client(
            "run", spec, tail, kill=(servers[0], kill_after), abort_wait_s=args.abort_wait_s
        )
        at_stop = dict(tail.results)
        errors_at_stop = tail.errors
        t = time.monotonic()
        servers.append(start_server(model_dir, port, run_dir / "server-2.log", args.max_num_seqs))
        start_2 = time.monotonic() - t
        second = run_client("resume", spec, tail)
        servers[1].stop()
        checks = audit(samples, args.episodes, first.before_kill or {}, at_stop)
    finally:
        for s in servers:
            s.stop()
    wall = time.monotonic() - t_start
    run_log, resume_log = run_dir / "client-run.log", run_dir / "client-resume.log"
    retry_pat = r"vLLM request to \S+ failed .*attempt \d+/\d+, that endpoint backs off"
    warn_pat = r"Task was destroyed|never retrieved|Unclosed|ResourceWarning|Traceback"
    warnings = _count(warn_pat, run_log) + _count(warn_pat, resume_log)
    killed_mid_run = (
        first.before_kill is not None
        and len(first.before_kill) < args.episodes
        and first.result.get("outcome") != "finished"
    )
    result = {
        "episodes": args.episodes,
        "episodes in flight (max_in_flight)": spec["in_flight"],
        "turns per episode (episodes)": checks["turns_per_episode"],
        "end reasons": checks["end_reasons"],
        "killed mid-run": killed_mid_run,
        "server killed when on disk": len(first.before_kill or {}),
        "server killed at (s into the run)": _r(first.killed_at_s),
        "client outcome after the kill": first.result.get("outcome"),
        "client stopped (s after the kill)": _r(first.stopped_after_kill_s),
        "client hung": first.hung,
        "retries logged after the kill": _count(retry_pat, run_log),
        "'giving up' lines": _count(r"giving up", run_log),
        "asyncio / resource warnings in client logs": warnings,
        "on disk when the client stopped": len(at_stop),
        "error lines when the client stopped": errors_at_stop,
        "not finished at the kill (in flight or queued)": args.episodes
        - len(first.before_kill or {}),
        "re-run by the resume": args.episodes - len(at_stop),
        "resume outcome": second.result.get("outcome"),
        "finished episodes lost": checks["lost_of_finished_before_kill"],
        "lost of those on disk when the client stopped": checks[
            "lost_of_finished_when_client_stopped"
        ],
        "samples with exactly one result": checks["samples_with_one_result"],
        "samples missing": checks["samples_missing"],
        "samples with duplicate results": checks["samples_with_duplicates"],
        "lines in samples.jsonl": checks["lines"],
        "unparsable lines": checks["unparsable_lines"],
        "torn tail bytes": checks["torn_tail_bytes"],
        "error lines (final file)": checks["error_lines"],
        "client peak RSS, run (MiB)": first.result.get("peak_rss_mib"),
        "client peak RSS, resume (MiB)": second.result.get("peak_rss_mib"),
        "client RSS after imports (MiB)": first.result.get("rss_start_mib"),
        "tracemalloc peak, run (MiB)": first.result.get("tracemalloc_peak_mib", "not traced"),
        "run wall (s)": first.result.get("wall_s"),
        "resume wall (s)": second.result.get("wall_s"),
        "server starts (s)": f"{start_1:.0f} + {start_2:.0f}",
        "total wall (s)": round(wall, 1),
        "request timeout / retries / backoff": (
            f"{args.request_timeout_s:g} s / {args.max_retries} / {args.retry_backoff_s:g} s"
        ),
        "server": f"vLLM (CPU build) tiny Qwen2.5-VL, max_num_seqs {args.max_num_seqs}",
        "max_tokens per turn": args.max_tokens,
        "machine": machine_name(),
        "python": platform.python_version(),
    }
    details = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(args).items()},
        "env_kwargs": env_kwargs,
        "client_run": first.result,
        "client_resume": second.result,
        "client_rss_sampled_peak_mib": [
            round(first.rss_sampled_peak_mib, 1),
            round(second.rss_sampled_peak_mib, 1),
        ],
        "audit": checks,
    }
    table = "\n".join(
        ["| measure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in result.items())]
    )
    text = table + "\n\n" + reading(result, first.result.get("message"))
    print(text)
    write_results(
        args.out,
        title=f"soak: {args.episodes} multi-turn episodes, server killed mid-run, resumed",
        module="benchmarks.perf.soak",
        table=text,
        result={"result": result, "details": details},
        runner="uv run python",
    )
    if keep:
        print(f"run folder: {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"result": result, "details": details}


def reading(r: dict[str, Any], message: str | None) -> str:
    """How to read the table, from its own numbers."""
    if not r["killed mid-run"]:
        return (
            "Reading: the server was NOT killed mid-run (every episode was already on disk, or "
            "the client stopped on its own): this run says nothing about recovery. Lower "
            "--kill-at or --in-flight."
        )
    lost = r["finished episodes lost"]
    parts = [
        f"Reading: the server was SIGKILLed with {r['server killed when on disk']} of "
        f"{r['episodes']} episodes on disk. The client logged {r['retries logged after the kill']} "
        f"retries and stopped {r['client stopped (s after the kill)']} s later with "
        f"{r['client outcome after the kill']}, keeping {r['on disk when the client stopped']} "
        f"finished episodes.",
        f"The {r['re-run by the resume']} episodes that had not finished left "
        + (
            "no line in samples.jsonl (no error record: an episode cut off by the policy is "
            "dropped, not recorded),"
            if r["error lines when the client stopped"] == 0
            else f"{r['error lines when the client stopped']} error line(s),"
        )
        + f" and the resume against a restarted server re-ran them ({r['resume outcome']}).",
        f"Finished episodes lost: {lost} (target 0); samples with exactly one result: "
        f"{r['samples with exactly one result']}/{r['episodes']}, unparsable lines: "
        f"{r['unparsable lines']}. The client's peak RSS with {r['episodes in flight (max_in_flight)']} "
        f"episodes in flight was {r['client peak RSS, run (MiB)']} MiB (VmHWM of the client process).",
    ]
    if message:
        parts.append(f"\nClient message after the kill:\n\n> {message}")
    return " ".join(parts[:3]) + ("\n" + parts[3] if message else "") + "\n"


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    main(tyro.cli(Args))

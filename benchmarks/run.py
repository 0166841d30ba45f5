"""Benchmark runner: policies × envs through the evaluation library → tables with 95 % CIs + a picture.

Until a model is plugged in (`experiments/eval.py`), the policies are the chance-level baselines of
`vigorl_agents.baselines` — the floors every model must beat. Runs are resumable: per-sample
results are appended to `<out>/<policy>/samples.jsonl` and finished samples are skipped.

    uv run python -m benchmarks.run                       # procedural suite, 100 samples per env
    uv run python -m benchmarks.run --episodes 20 --envs ViGoRL/SynthSearch-v0
    uv run python -m benchmarks.run --envs ViGoRL/VStar-v0 --env-kwargs data_root=/data max_side=null
    uv run python -m benchmarks.run --results benchmarks/results/baselines_synth.md   # committed table

Env kwargs are `KEY=VALUE` tokens read by the same parser as experiments/eval.py's
`--eval.env-kwargs` (`vigorl_agents.cli.parse_env_kwargs`). How to read the tables:
docs/benchmarks.md and docs/evaluation.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import gymnasium as gym
import tyro

import vigorl_env
from benchmarks.machine import machine_name
from benchmarks.report import write_results
from vigorl_agents.baselines import BASELINES
from vigorl_agents.cli import EnvKwargs, setup_logging
from vigorl_agents.eval import EvalConfig, ResumeConfigError, evaluate, markdown_tables

log = logging.getLogger("benchmarks.run")


@dataclass(frozen=True)
class Args:
    """Run baselines over envs and report mean ± 95 % CI (docs/evaluation.md)."""

    envs: tuple[str, ...] = vigorl_env.PROCEDURAL_IDS
    """Env ids to run (procedural ones need no data)."""
    baselines: tuple[str, ...] = tuple(BASELINES)
    """Policies: full_view_guess, random_zoom."""
    episodes: int = 100
    """Samples per env (indices 0 … episodes−1 of the split, in order)."""
    split: str = "test"
    """Split of the procedural datasets (held out from training)."""
    seed: int = 0
    """Policy seed."""
    out: Path = Path("runs/baselines")
    """Output folder: one subfolder per policy (samples.jsonl, summary.json, report.md, accuracy.png),
    plus table.md and episodes.png."""
    picture: bool = True
    """Write episodes.png: one random-zoom episode per env with its points and crops."""
    env_kwargs: EnvKwargs = field(default_factory=dict)
    """Extra make kwargs for every env, as KEY=VALUE (e.g. data_root=/data for real ids); see
    docs/envs.md#make-kwargs."""
    data_errors: Literal["score_zero", "exclude"] = "score_zero"
    """A sample whose image cannot be read is an error line: scored 0 (N = the split's size) or
    excluded from N."""
    overwrite: bool = False
    """Delete earlier results in `out` first (needed to change settings under one folder)."""
    results: Path | None = None
    """Also write the tables with their title and command line here (and the numbers as JSON
    beside it), as committed under benchmarks/results/."""
    verbose: Annotated[bool, tyro.conf.arg(aliases=("-v",))] = False
    """Debug logging and the libraries' own messages (quiet by default)."""


def main(args: Args) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summaries = {}
    for name in args.baselines:
        cls = BASELINES[name]
        mode = cls.__dataclass_fields__["mode"].default
        cfg = EvalConfig(
            env_ids=args.envs,
            split=args.split,
            limit=args.episodes,
            seed=args.seed,
            env_kwargs={**args.env_kwargs, **({"mode": mode} if mode else {})},
            data_errors=args.data_errors,
            overwrite=args.overwrite,
        )

        def factory(env_id: str, _cls=cls) -> Any:
            bench = gym.spec(env_id).kwargs.get("benchmark")
            if bench is None:  # a browser env (docs/web.md)
                return _cls(answer_kind=vigorl_env.registration.WEB_ANSWER_KINDS[env_id])
            return _cls(answer_kind=vigorl_env.tasks.BENCHMARKS[bench].family.answer_kind)

        summaries[name] = asyncio.run(evaluate(factory, cfg, args.out / name, policy_name=name))
    table = "\n".join(markdown_tables(s) for s in summaries.values())
    table += f"\nmachine: {machine_name()}; {round(time.perf_counter() - started, 1)} s\n"
    (args.out / "table.md").write_text(table)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=2))
    write_results(
        args.results,
        title=f"Chance-level baselines, {args.episodes} samples per env",
        module="benchmarks.run",
        table=table,
        result=summaries,
        runner="uv run python",
    )
    print(table)
    if args.picture:
        from benchmarks.picture import episodes_picture

        print(f"picture: {episodes_picture(args, args.out / 'episodes.png')}")
    print(f"results: {args.out}/")
    return summaries


def cli() -> None:
    args = tyro.cli(Args)
    setup_logging(args.verbose)
    try:
        main(args)
    except ResumeConfigError as e:  # its message says what to do: no traceback
        log.error("%s", e)
        raise SystemExit(1) from None


if __name__ == "__main__":
    cli()

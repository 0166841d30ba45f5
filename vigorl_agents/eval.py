"""Evaluation: any policy over any env ids, resumable, mean ± 95 % CI, tables and a plot.

The protocol, the outputs and the resume rules are in docs/evaluation.md. In short:

* Per-sample score = the episode's `reward_components["accuracy"]` (web-action partial credit 0.5
  counts as 0.5; the exact-match rate is reported beside it); avg@k averages a sample's k episodes.
* Results are appended to `samples.jsonl` (through `vigorl_agents.jsonl`, so a killed run leaves
  no torn line behind) as each episode ends; a rerun skips the (env, sample, episode) triples there.
* A rerun must ask for the same thing: the settings that can change answers (decoding, env kwargs,
  split, policy) are kept in `eval_config.json` and each record carries its env's config
  fingerprint; a rerun with other settings is refused with the differing fields named, unless
  `overwrite` (start afresh) — or give the run another name.
* A sample whose data cannot be read (a corrupt image) becomes an error line in `samples.jsonl`
  instead of stopping the run; `data_errors` says whether it scores 0 (default) or leaves N.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import vigorl_env
from vigorl_agents.cli import EnvKwargs
from vigorl_agents.factory import RESUME_FREE_POLICY_FIELDS, PolicyConfig
from vigorl_agents.jsonl import JsonlAppender, read_jsonl
from vigorl_agents.policy import Policy, PolicyUnavailableError, SamplingParams
from vigorl_agents.rollout import (
    EpisodeDataError,
    EpisodeSpec,
    Trajectory,
    make_env_factory,
    run_episodes,
)
from vigorl_agents.stats import bootstrap, wald, wilson

log = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
CONFIG = "eval_config.json"
OUTPUTS = (SAMPLES, CONFIG, "summary.json", "report.md", "accuracy.png")
"""The files of a run folder (what `overwrite` deletes)."""


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how to decode (defaults: the paper's, docs/evaluation.md)."""

    env_ids: tuple[str, ...] = vigorl_env.PROCEDURAL_IDS
    """Env ids to evaluate."""
    split: str | None = None
    """Split (None: each benchmark's default; procedural envs: test)."""
    limit: int | None = 100
    """First N samples in index order (None: the whole split; required for unlimited procedural data)."""
    k: int = 1
    """Episodes per sample (avg@k: per-sample score = mean over the k)."""
    temperature: float = 0.5
    top_p: float | None = None
    """None: 1.0 single-turn, 0.99 multi-turn (the paper's decoding)."""
    top_k: int = -1
    max_tokens: int = 2048
    """Per-turn cap on new tokens."""
    seed: int = 42
    greedy: bool = False
    """Temperature 0 (then k must be 1)."""
    env_kwargs: EnvKwargs = field(default_factory=dict)
    """Extra make kwargs for every env, as KEY=VALUE (e.g. mode=multi_turn
    accuracy_fn=lenient_upstream data_root=/data max_side=null); see docs/envs.md#make-kwargs."""
    max_in_flight: int = 32
    """Episodes in flight at once."""
    max_batch: int = 64
    """Largest batch handed to the policy."""
    data_errors: Literal["score_zero", "exclude"] = "score_zero"
    """A sample whose data cannot be read (corrupt or missing image) is recorded as an error line and
    the run goes on. score_zero: it counts as a wrong answer (N stays the split's size, comparable
    with the paper); exclude: it is left out of N. Errored samples are retried on the next run."""
    overwrite: bool = False
    """Delete this run folder's earlier results first (needed to change settings under one run name)."""
    progress_every_s: float = 10.0
    """When stderr is not a terminal (a log file, CI), log a progress line this often, in seconds."""

    def sampling(self, mode: str) -> SamplingParams:
        top_p = self.top_p if self.top_p is not None else (0.99 if mode == "multi_turn" else 1.0)
        temperature = 0.0 if self.greedy else self.temperature
        return SamplingParams(
            n=1,
            temperature=temperature,
            top_p=top_p,
            top_k=self.top_k,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )


RESUME_FREE_EVAL_FIELDS = frozenset(
    {"env_ids", "limit", "k", "max_in_flight", "max_batch", "data_errors", "overwrite",
     "progress_every_s"}
)  # fmt: skip
"""EvalConfig fields a resumed run may change: which samples and episodes are wanted (the summary
counts only those), scheduling, and how errors are aggregated. Everything else can change answers."""


class ResumeConfigError(ValueError):
    """A run folder holds results made with other settings than the ones asked for now."""


# ---------------------------------------------------------------------------------------------
# Run folder: records, settings, resume check
# ---------------------------------------------------------------------------------------------
Key = tuple[str, str, int]


def _key(rec: Mapping[str, Any]) -> Key:
    return rec["env_id"], rec["sample_id"], int(rec["episode"])


def load_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a run's samples.jsonl (results and error lines), in file order.

    A torn last line (a killed writer) is skipped with a warning and cut before the next append;
    a malformed line elsewhere, or a record without its keys, is an error naming the line."""
    records = []
    for line_no, rec in read_jsonl(path):
        try:
            _key(rec)
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{path}, line {line_no}: not an evaluation record (needs env_id, sample_id, episode)"
            ) from None
        records.append(rec)
    return records


def _latest(records: Iterable[Mapping[str, Any]]) -> dict[Key, Mapping[str, Any]]:
    """One record per (env, sample, episode): a result wins over error lines, else the last error."""
    out: dict[Key, Mapping[str, Any]] = {}
    for rec in records:
        key = _key(rec)
        if "error" in rec and key in out and "error" not in out[key]:
            continue
        out[key] = rec
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def run_settings(
    cfg: EvalConfig, policy_name: str, policy_config: PolicyConfig | None
) -> dict[str, Any]:
    """What `eval_config.json` stores: the policy's name, its config (if known) and the EvalConfig."""
    return _jsonable(
        {
            "policy": policy_name,
            "policy_config": asdict(policy_config) if policy_config is not None else None,
            "eval": asdict(cfg),
        }
    )


def _significant(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The part of `run_settings` that can change answers (compared on resume)."""
    if "eval" not in settings:  # eval_config.json of an older version: {"policy", **EvalConfig}
        settings = {
            "policy": settings.get("policy"),
            "policy_config": None,
            "eval": {k: v for k, v in settings.items() if k != "policy"},
        }
    out: dict[str, Any] = {
        "policy": settings.get("policy"),
        "eval": {k: v for k, v in settings["eval"].items() if k not in RESUME_FREE_EVAL_FIELDS},
    }
    if settings.get("policy_config") is not None:
        out["policy_config"] = {
            k: v for k, v in settings["policy_config"].items() if k not in RESUME_FREE_POLICY_FIELDS
        }
    return out


_UNSET = object()


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out  # an empty mapping adds nothing: {} and unset compare equal
    return {prefix: d}


def settings_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """`field: old → new` for every answer-changing setting that differs (dotted field names)."""
    a, b = _flat(_significant(old)), _flat(_significant(new))
    if "policy_config" not in _significant(old) or "policy_config" not in _significant(new):
        # the policy's config is unknown on one side: compare what both sides know
        a = {k: v for k, v in a.items() if not k.startswith("policy_config")}
        b = {k: v for k, v in b.items() if not k.startswith("policy_config")}
    lines = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, _UNSET), b.get(k, _UNSET)
        if va != vb:
            show = [("(unset)" if v is _UNSET else json.dumps(v)) for v in (va, vb)]
            lines.append(f"{k}: {show[0]} → {show[1]}")
    return lines


def _refuse(out: Path, n_records: int, what: list[str]) -> ResumeConfigError:
    listed = "\n  ".join(what)
    return ResumeConfigError(
        f"{out} already holds {n_records} evaluation record(s) made with other settings:\n  "
        f"{listed}\nResuming would mix both in one summary. Pass --eval.overwrite (benchmarks.run: "
        "--overwrite) to delete them and start afresh, or choose another run name / output folder "
        "(see docs/evaluation.md#resume-and-config-fingerprints)."
    )


def check_resume(
    out: Path, cfg: EvalConfig, policy_name: str, policy_config: PolicyConfig | None = None
) -> list[dict[str, Any]]:
    """Refuse (`ResumeConfigError`) to resume `out` with settings that can change answers; return
    its records. Cheap: call it before loading a model, so a mistake costs no model load
    (`evaluate` calls it again, and also checks each env's config fingerprint).

    With `cfg.overwrite` there is nothing to check (the folder will be emptied)."""
    if cfg.overwrite:
        return []
    records = load_records(out / SAMPLES)
    if not records:
        return records
    config_path = out / CONFIG
    if config_path.exists():
        stored = json.loads(config_path.read_text())
        diff = settings_diff(stored, run_settings(cfg, policy_name, policy_config))
        if diff:
            raise _refuse(out, len(records), diff)
    else:
        log.warning("%s has no %s: only env fingerprints and policy names are checked", out, CONFIG)
    others = sorted({str(r.get("policy")) for r in records} - {policy_name})
    if others:
        shown = ", ".join(map(json.dumps, others))
        raise _refuse(out, len(records), [f"policy: {shown} → {json.dumps(policy_name)}"])
    return records


def _start_fresh(out: Path) -> None:
    removed = [name for name in OUTPUTS if (out / name).exists()]
    for name in removed:
        (out / name).unlink()
    if removed:
        log.warning("overwrite: deleted %s in %s", ", ".join(removed), out)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------
def sample_record(traj: Trajectory, policy_name: str) -> dict[str, Any]:
    """The per-sample JSONL record (docs/evaluation.md#outputs). `answer` is the one the accuracy
    scored (`vigorl_agents.rollout.scored_answer`)."""
    return {
        "env_id": traj.env_id,
        "policy": policy_name,
        "sample_id": traj.sample_id,
        "index": traj.index,
        "episode": traj.episode,
        "split": traj.split,
        "score": traj.score,
        "exact": float(traj.score == 1.0),
        "reward": traj.reward,
        "components": traj.components,
        "end_reason": traj.end_reason,
        "turns": len(traj.turns),
        "answer": traj.answer,
        "transcript": traj.transcript,
        "frame": traj.frame,
        "grounding": traj.grounding,
        "config_fingerprint": traj.config_fingerprint,
        "trajectory": traj.to_dict(),
    }


def error_record(
    env_id: str,
    split: str,
    spec: EpisodeSpec,
    sample_id: str,
    policy_name: str,
    fingerprint: str,
    cause: BaseException,
) -> dict[str, Any]:
    """The error line of an episode that has no result (docs/evaluation.md#outputs): its sample
    could not be read, or the run stopped while it was in flight. A rerun retries it."""
    return {
        "env_id": env_id,
        "policy": policy_name,
        "sample_id": sample_id,
        "index": spec.index,
        "episode": spec.episode,
        "split": split,
        "config_fingerprint": fingerprint,
        "error": f"{type(cause).__name__}: {cause}",
        "error_type": type(cause).__name__,
    }


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar on a terminal; elsewhere (a log file, CI) a logged line every `every_s` seconds,
    so a long run is never silent."""

    def __init__(self, total: int, desc: str, every_s: float = 10.0) -> None:
        self.total, self.desc, self.every_s = total, desc, every_s
        self.done = 0
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False)
        else:
            log.info("%s: %d episode(s) to run", desc, total)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            elapsed = now - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            log.info(
                "%s: %d/%d episodes (%.0f s, %.2f/s, about %.0f s left)",
                self.desc, self.done, self.total, elapsed, rate, left,
            )  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.total:
            log.info(
                "%s: %d/%d episodes done in %.1f s",
                self.desc, self.done, self.total, time.monotonic() - self.start,
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def _make_kwargs(env_id: str, cfg: EvalConfig, extra: dict[str, Any]) -> dict[str, Any]:
    kw = {**cfg.env_kwargs, **extra}
    if env_id in vigorl_env.PROCEDURAL_IDS:
        # no size=limit: it would enter the config fingerprint, and a rerun with a larger limit
        # would no longer match the samples it extends (sample i does not depend on the size)
        kw.setdefault("split", cfg.split or "test")
    elif cfg.split is not None:
        kw.setdefault("split", cfg.split)
    return kw


@dataclass
class _EnvPlan:
    env_id: str
    make: Callable[[], Any]
    n: int
    ids: list[str]
    mode: str
    fingerprint: str
    info: dict[str, Any]
    split: str


def _plan(env_id: str, cfg: EvalConfig, extra: dict[str, Any]) -> _EnvPlan:
    make = make_env_factory(env_id, **_make_kwargs(env_id, cfg, extra))
    probe = make()
    try:
        uw = probe.unwrapped
        n = uw.num_samples
        if cfg.limit is None and n >= 2**31 - 1:
            raise ValueError(f"{env_id}: the procedural split is unlimited; set limit")
        n = n if cfg.limit is None else min(n, cfg.limit)
        info = {
            "mode": uw.config.mode,
            "answer_kind": uw.answer_kind,
            "reward_weights": dict(uw.config.reward_weights),
        }
        return _EnvPlan(
            env_id, make, n, [uw.sample_id_at(i) for i in range(n)], uw.config.mode,
            uw.fingerprint, info, uw.split,
        )  # fmt: skip
    finally:
        probe.close()


async def evaluate(
    policy: Policy | Callable[[str], Policy],
    cfg: EvalConfig,
    out: Path,
    *,
    policy_name: str = "policy",
    policy_config: PolicyConfig | None = None,
    env_kwargs_for: Callable[[str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Evaluate `policy` (or a per-env-id policy factory) on every env of `cfg`; write `out/`.

    `policy_config`, when the policy was built from one, is stored with the run so that a resume
    with another model or processor setting is refused. `env_kwargs_for(env_id)` adds per-env make
    kwargs (e.g. frame bounds fitted to the policy's processor). Raises `ResumeConfigError` when
    `out` holds results of other settings (unless `cfg.overwrite`), and `PolicyUnavailableError`
    (saying what was kept) when the policy's servers stop answering.
    """
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / SAMPLES
    if cfg.overwrite:
        _start_fresh(out)
    records = check_resume(out, cfg, policy_name, policy_config)
    config_path = out / CONFIG
    settings = run_settings(cfg, policy_name, policy_config)

    plans = [
        _plan(env_id, cfg, env_kwargs_for(env_id) if env_kwargs_for else {})
        for env_id in cfg.env_ids
    ]
    for plan in plans:
        old = Counter(
            str(r.get("config_fingerprint"))[:12] for r in records
            if r["env_id"] == plan.env_id and r.get("config_fingerprint") != plan.fingerprint
        )  # fmt: skip
        if old:
            raise _refuse(
                out,
                len(records),
                [
                    f"env config of {plan.env_id}: fingerprint {', '.join(old)}… → "
                    f"{plan.fingerprint[:12]}… (its make kwargs, the frame bounds fitted to the "
                    "policy, or the env's defaults changed)"
                ],
            )
    _write_json(config_path, settings)

    latest = _latest(records)
    finished = 0
    with JsonlAppender(samples_path) as sink:
        for plan in plans:
            env_id = plan.env_id
            wanted = [(i, e) for i in range(plan.n) for e in range(cfg.k)]
            done = {
                (i, e)
                for i, e in wanted
                if (env_id, plan.ids[i], e) in latest
                and "error" not in latest[(env_id, plan.ids[i], e)]
            }  # error lines are not done: they are retried
            todo = [EpisodeSpec(i, e) for i, e in wanted if (i, e) not in done]
            if done:
                log.info(
                    "%s: resuming, skipped %d of %d episode(s) already in %s",
                    env_id, len(done), len(wanted), samples_path,
                )  # fmt: skip
            if not todo:
                continue
            pol = policy(env_id) if callable(policy) and not hasattr(policy, "generate") else policy
            progress = Progress(len(todo), f"{env_id} · {policy_name}", cfg.progress_every_s)

            def on_done(traj: Trajectory, _progress: Progress = progress) -> None:
                nonlocal finished
                rec = sample_record(traj, policy_name)
                sink.write(rec)
                latest[_key(rec)] = rec
                finished += 1
                _progress.update()

            def on_error(err: EpisodeDataError, _plan: _EnvPlan = plan,
                         _progress: Progress = progress) -> None:  # fmt: skip
                rec = error_record(
                    err.env_id, err.split, err.spec, _plan.ids[err.spec.index], policy_name,
                    _plan.fingerprint, err.cause,
                )  # fmt: skip
                sink.write(rec)
                latest[_key(rec)] = rec
                log.warning(
                    "%s; recorded as an error line in %s (data_errors=%s), going on",
                    err,
                    samples_path,
                    cfg.data_errors,
                )
                _progress.update()

            aborted: list[EpisodeSpec] = []

            def on_abort(spec: EpisodeSpec, exc: BaseException, _plan: _EnvPlan = plan,
                         _aborted: list[EpisodeSpec] = aborted) -> None:  # fmt: skip
                # In flight when the run stopped: an error line, so the file says what was cut
                # off; a rerun retries it like every error line.
                rec = error_record(
                    _plan.env_id, _plan.split, spec, _plan.ids[spec.index], policy_name,
                    _plan.fingerprint, exc,
                )  # fmt: skip
                sink.write(rec)
                latest[_key(rec)] = rec
                _aborted.append(spec)

            try:
                await run_episodes(
                    plan.make,
                    pol,
                    todo,
                    cfg.sampling(plan.mode),
                    max_in_flight=cfg.max_in_flight,
                    max_batch=cfg.max_batch,
                    on_done=on_done,
                    on_error=on_error,
                    on_abort=on_abort,
                )
            except Exception as e:
                kept = (
                    f"{finished} episode(s) finished in this run; {_count_results(latest)} "
                    f"result(s) in all are kept in {samples_path}, the {len(aborted)} episode(s) "
                    "in flight are recorded there as error lines, and a rerun of the same command "
                    "resumes from there (retrying them)"
                )
                if isinstance(e, PolicyUnavailableError):
                    raise e.with_kept(kept) from e
                log.error("evaluation stopped (%s: %s); %s", type(e).__name__, e, kept)
                raise
            finally:
                progress.close()
    summary = summarize(latest.values(), cfg, policy_name, {p.env_id: p.info for p in plans})
    write_reports(summary, out)
    return summary


def _count_results(latest: Mapping[Key, Mapping[str, Any]]) -> int:
    return sum("error" not in r for r in latest.values())


# ---------------------------------------------------------------------------------------------
# Aggregation and reports
# ---------------------------------------------------------------------------------------------
def summarize(
    records: Iterable[Mapping[str, Any]],
    cfg: EvalConfig,
    policy_name: str,
    env_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Aggregate per env: avg@k per sample, then mean ± CI over samples
    (docs/evaluation.md#aggregation-and-intervals).

    Only this policy's records of `cfg.env_ids`, the first `cfg.limit` indices and episodes
    `< cfg.k` count. Error lines (unreadable samples) score 0 or leave N per `cfg.data_errors`.
    `env_info[env_id]` (mode, answer_kind, reward_weights) is copied into the env's row."""
    wanted = [
        r
        for r in records
        if r["env_id"] in cfg.env_ids
        and r.get("policy", policy_name) == policy_name
        and int(r["episode"]) < cfg.k
        and (cfg.limit is None or r["index"] < cfg.limit)
    ]
    by_env: dict[str, dict[str, list[Mapping[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in _latest(wanted).values():
        by_env[r["env_id"]][r["sample_id"]].append(r)
    rows = []
    for env_id in cfg.env_ids:
        samples = by_env.get(env_id)
        if not samples:
            continue
        per_sample, exact, reward = [], [], []
        ends: Counter[str] = Counter()
        errors = []
        excluded = 0
        for recs in samples.values():
            errs = [r for r in recs if "error" in r]
            errors.extend(errs)
            ends.update("error" if "error" in r else r["end_reason"] for r in recs)
            counted = (
                [r for r in recs if "error" not in r] if cfg.data_errors == "exclude" else recs
            )
            if not counted:
                excluded += 1
                continue
            per_sample.append(sum(r.get("score", 0.0) for r in counted) / len(counted))
            exact.append(sum(r.get("exact", 0.0) for r in counted) / len(counted))
            reward.append(sum(r.get("reward", 0.0) for r in counted) / len(counted))
        first = next(iter(samples.values()))[0]
        row: dict[str, Any] = {
            "env_id": env_id,
            "split": first["split"],
            "n": len(per_sample),
            "k": cfg.k,
            **dict((env_info or {}).get(env_id, {})),
            "accuracy": wald(per_sample).to_dict() if per_sample else None,
            "accuracy_wilson": wilson(per_sample).to_dict() if per_sample else None,
            "accuracy_bootstrap": bootstrap(per_sample).to_dict() if per_sample else None,
            "exact": wald(exact).to_dict() if exact else None,
            "reward": wald(reward).to_dict() if reward else None,
            "end_reasons": dict(ends),
            "errors": len(errors),
            "excluded_samples": excluded,
            "error_examples": [
                {"sample_id": r["sample_id"], "episode": r["episode"], "error": r["error"]}
                for r in errors[:5]
            ],
            "config_fingerprint": first["config_fingerprint"],
        }
        rows.append(row)
    return {
        "policy": policy_name,
        "ci": "95% Wald, population sigma (the paper's); Wilson and percentile bootstrap beside it",
        "decoding": {
            k: v
            for k, v in asdict(cfg).items()
            if k in ("temperature", "top_p", "top_k", "max_tokens", "seed", "greedy", "k")
        },
        "data_errors": cfg.data_errors,
        "rows": rows,
    }


def _pct(est: Mapping[str, Any] | None, spec: str = "{mean:.1f}") -> str:
    return "—" if est is None else spec.format(**est)


def _weights(w: Mapping[str, float] | None) -> str:
    return "—" if not w else " · ".join(f"{k} {v:g}" for k, v in w.items())


def markdown_tables(summary: dict[str, Any]) -> str:
    """One table per split, then notes on how to read it (intervals, accuracy vs exact, errors)."""
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in summary["rows"]:
        by_split[r["split"]].append(r)
    parts = []
    for split, rows in by_split.items():
        parts.append(f"### {summary['policy']} · split {split}\n")
        parts.append(
            "| env | mode | N | accuracy % ± 95 % CI (Wald) | Wilson 95 % CI | exact % "
            "| mean reward ×100 | reward weights | errors | end reasons |"
        )
        parts.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            ends = ", ".join(f"{k} {v}" for k, v in sorted(r["end_reasons"].items()))
            parts.append(
                f"| {r['env_id']} | {r.get('mode', '—')} | {r['n']} "
                f"| {_pct(r['accuracy'], '{mean:.1f} ± {half_width:.1f}')} "
                f"| {_pct(r['accuracy_wilson'], '[{low:.1f}, {high:.1f}]')} "
                f"| {_pct(r['exact'])} "
                f"| {_pct(r['reward'], '{mean:.1f} ± {half_width:.1f}')} "
                f"| {_weights(r.get('reward_weights'))} | {r.get('errors', 0)} | {ends} |"
            )
        parts.append("")
    parts.append(
        "Accuracy ± is the paper's Wald half-width 1.96·σ/√N; it is 0 when every sample scored the "
        "same (0 % or 100 %), which says nothing about N, so the Wilson interval stands beside it "
        "(docs/evaluation.md#aggregation-and-intervals). Mean reward is each env's overall reward "
        "with the weights shown (accuracy and format, docs/rewards.md)."
    )
    if any(r.get("answer_kind") == "web_action" for r in summary["rows"]):
        parts.append(
            "\nWeb action: *accuracy* gives partial credit — a click or type with the right action "
            "but the wrong element id or text scores 0.5 — while *exact* is the share of samples "
            "whose action was entirely right (score 1). For the other tasks the two are equal."
        )
    errored = [r for r in summary["rows"] if r.get("errors")]
    if errored:
        how = (
            "scored 0 and counted in N"
            if summary.get("data_errors", "score_zero") == "score_zero"
            else "left out of N"
        )
        parts.append(
            f"\nErrors: episodes whose sample could not be read ({how}; data_errors="
            f"{summary.get('data_errors', 'score_zero')}); they are retried on the next run."
        )
        for r in errored:
            for ex in r["error_examples"]:
                parts.append(f"- {r['env_id']} {ex['sample_id']}: {ex['error']}")
            if r["errors"] > len(r["error_examples"]):
                parts.append(f"- {r['env_id']}: {r['errors'] - len(r['error_examples'])} more")
    parts.append("")
    return "\n".join(parts)


def write_reports(summary: dict[str, Any], out: Path) -> None:
    _write_json(out / "summary.json", summary)
    (out / "report.md").write_text(markdown_tables(summary))
    plot_summary(summary, out / "accuracy.png")


def summary_figure(summary: dict[str, Any]):
    """Bar chart of accuracy, one bar per env, with Wilson 95 % intervals (never of zero width)
    and each bar's value written on it; an env at 0 % is labelled "all 0" so its slot is not
    mistaken for a missing result. Returns the matplotlib Figure (None without rows)."""
    rows = summary["rows"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.6))
    names = [r["env_id"].removeprefix("ViGoRL/").removesuffix("-v0") for r in rows]
    means = [r["accuracy"]["mean"] if r["accuracy"] else 0.0 for r in rows]
    lows = [max(0.0, m - r["accuracy_wilson"]["low"]) if r["accuracy_wilson"] else 0.0
            for m, r in zip(means, rows, strict=True)]  # fmt: skip
    highs = [max(0.0, r["accuracy_wilson"]["high"] - m) if r["accuracy_wilson"] else 0.0
             for m, r in zip(means, rows, strict=True)]  # fmt: skip
    x = list(range(len(rows)))
    ax.bar(x, means, yerr=[lows, highs], capsize=4, color="#4C72B0")
    for i, (m, r) in enumerate(zip(means, rows, strict=True)):
        if r["accuracy"] is None:
            label = "no scored samples"
        elif m == 0:
            label = f"all 0 (N={r['n']})"
        else:
            label = f"{m:.1f}"
        ax.text(i, max(m, 0) + 1.5, label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_ylabel("accuracy % (Wilson 95 % CI)")
    ax.set_ylim(0, 100)
    ax.set_title(summary["policy"])
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def plot_summary(summary: dict[str, Any], path: Path) -> Path | None:
    """Save `summary_figure` to `path` (nothing without rows)."""
    fig = summary_figure(summary)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

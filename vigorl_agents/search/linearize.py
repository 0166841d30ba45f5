"""Linearize MCTS trees into single-turn SFT chains (docs/mcts.md#linearization).

    python -m vigorl_agents.search.linearize TREES.jsonl OUT.jsonl --domain spatial \\
        [--sharegpt OUT.json] [--multi-turn OUT_DIR] [--env-kwargs KEY=VALUE ...]

What a chain is: the search stored, on every node, rollouts that end in a judged answer. A rollout
with reward >= 1.0 is correct, any other is wrong. Each correct rollout gives a *direct* chain; each
(wrong, correct) pair of rollouts of the same node gives a *corrected* chain that shows the wrong
attempt, the backtrack sentence and the correct attempt, so the student sees exploration and
recovery (docs/protocol.md#think-steps-and-points):

    <think>\\n{wrong steps}\\nWait, this seems off. Let's try something else.\\n{correct steps}\\n</think>
    <answer> {correct answer} </answer>

Why it looks like this:

* **Upstream trees read too** (`vigorl_agents.search.trees`): terminal nodes that hold only the
  answer text and rollouts without an `answered` flag are handled by the step rules of
  `rollout_steps`.
* **Deterministic output.** Chains keep tree order (root first, children in order; per node the
  direct chains, then the corrected ones wrong-major), exact duplicates are dropped keeping the
  first, and a sample with more than `max_chains` chains is cut by
  `random.Random(f"42:{sample_id}").sample`: the same trees always give the same records.
* **One split rule** (`vigorl_env.data.splits.split_of`): a sample's chains land on the same side
  as the sample in every other stage.
* **Images are model frames.** The SFT trainer only accepts images that already are model frames,
  so for trees of our search (which carry `env_id` and `split`) the frame is rendered by the env
  for that sample id and saved as PNG next to the output; records hold paths relative to the
  output folder (load with `data_root` = that folder). Upstream trees name an original image and
  their points are in the teacher's frame: their records keep the image path as written; bring them
  into the model frame with `python -m vigorl_agents.train.upstream` on the `--sharegpt` exports.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigorl_agents.records import image_folder, sft_record, write_sft_jsonl, write_sharegpt_json
from vigorl_agents.search.trees import read_tree_files
from vigorl_env.data.splits import split_of
from vigorl_env.protocol import BACKTRACK, IMAGE_MARKER
from vigorl_env.tasks import BENCHMARKS, FAMILIES

logger = logging.getLogger(__name__)

__all__ = [
    "CORRECT_REWARD",
    "MAX_CHAINS",
    "Chain",
    "LinearizeStats",
    "corrected_chain",
    "direct_chain",
    "linearize_sample",
    "linearize_trees",
    "main",
    "node_chains",
    "rollout_steps",
    "system_prompt_of",
    "write_sharegpt_splits",
]

CORRECT_REWARD = 1.0
"""A rollout with reward >= this is correct."""
MAX_CHAINS = 10_000
"""Most chains kept per sample."""
SEED = 42
"""Seed of the per-sample cap (`random.Random(f"{SEED}:{sample_id}")`)."""

_TAGS = re.compile(r"</?(?:think|answer|image)>", re.IGNORECASE | re.ASCII)
_ANSWER_TAGS = re.compile(r"</?answer>", re.IGNORECASE | re.ASCII)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE | re.ASCII)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE | re.ASCII)
_LETTER = re.compile(r"^[A-Z]\. ")


def system_prompt_of(domain: str, mode: str = "single_turn") -> str:
    """The family's system prompt: single-turn grounded (spatial P1, web grounding P2, web action
    P3, visual search the single-turn builder's QA prompt) or multi-turn (P4 / P5); see
    docs/protocol.md#system-prompts."""
    if domain not in FAMILIES:
        raise ValueError(f"unknown domain {domain!r}; one of {sorted(FAMILIES)}")
    return FAMILIES[domain].system_prompt(mode, "grounded")


def _answer_of(text: str) -> str:
    """The answer of a generation holding `<answer>`: up to the next `</answer>` (or the end),
    stripped, minus a leading `A. ` option letter (the search's terminal-answer rule)."""
    m = _ANSWER_OPEN.search(text)
    assert m is not None
    rest = text[m.end() :]
    close = _ANSWER_CLOSE.search(rest)
    return _LETTER.sub("", (rest[: close.start()] if close else rest).strip(), count=1)


def _clean(step: str) -> str:
    return _TAGS.sub("", step).strip()


def rollout_steps(rollout: dict[str, Any]) -> tuple[list[str], str | None]:
    """The reasoning steps and the answer of one rollout (docs/mcts.md#linearization).

    `ephemeral_texts` minus its first element (the question): if the last element holds
    `<answer>`, its answer is extracted and the text before `<answer>` is one more step; otherwise
    an answered rollout (or one without an `answered` flag: upstream's form, whose terminal nodes
    hold only the answer text) takes the last element without answer tags as its answer; an
    unanswered rollout has no answer and every element is a step. Steps lose their think, answer
    and image tags, are stripped, and empty ones are dropped."""
    texts = [str(t) for t in (rollout.get("ephemeral_texts") or [])[1:]]
    answer: str | None = None
    if texts:
        last = texts[-1]
        m = _ANSWER_OPEN.search(last)
        if m is not None:
            answer = _answer_of(last)
            texts[-1] = last[: m.start()]
        elif rollout.get("answered", True):
            answer = _ANSWER_TAGS.sub("", last).strip()
            texts = texts[:-1]
    steps = [s for s in (_clean(t) for t in texts) if s]
    return steps, answer


def direct_chain(steps: Sequence[str], answer: str) -> str:
    return f"<think>\n{' '.join(steps)}\n</think>\n<answer> {answer} </answer>"


def corrected_chain(wrong: Sequence[str], correct: Sequence[str], answer: str) -> str:
    return (
        f"<think>\n{' '.join(wrong)}\n{BACKTRACK}\n{' '.join(correct)}\n</think>\n"
        f"<answer> {answer} </answer>"
    )


@dataclass(frozen=True)
class Chain:
    """One linearized chain: its text, kind (`direct` / `corrected`) and the depth of the node
    whose rollouts made it."""

    text: str
    kind: str
    depth: int


def node_chains(node: dict[str, Any], depth: int = 0) -> list[Chain]:
    """The chains of one node's rollouts: direct chains (rollout order), then corrected chains
    (for each wrong rollout, for each correct one). Wrong rollouts with no correct sibling are
    unused; a "correct" rollout without an answer cannot be written and is skipped."""
    correct: list[tuple[list[str], str]] = []
    wrong: list[list[str]] = []
    for r in node.get("rollouts") or []:
        if not isinstance(r, dict):
            continue
        steps, answer = rollout_steps(r)
        reward = r.get("reward")
        if isinstance(reward, (int, float)) and reward >= CORRECT_REWARD:
            if answer:
                correct.append((steps, answer))
            else:
                logger.warning("a rollout with reward %s but no answer is skipped", reward)
        else:
            wrong.append(steps)
    out = [Chain(direct_chain(s, a), "direct", depth) for s, a in correct]
    out += [Chain(corrected_chain(w, s, a), "corrected", depth) for w in wrong for s, a in correct]
    return out


def _depths(tree: dict[str, Any]) -> Iterable[tuple[dict[str, Any], int]]:
    stack = [(tree, 0)]
    while stack:
        node, d = stack.pop()
        yield node, d
        kids = [c for c in node.get("children") or [] if isinstance(c, dict)]
        stack.extend((c, d + 1) for c in reversed(kids))


def linearize_sample(
    sample_id: str, tree: dict[str, Any], *, max_chains: int = MAX_CHAINS
) -> list[Chain]:
    """All chains of one tree (every node, all depths, pre-order), exact duplicates dropped
    (first kept), then at most `max_chains` by `random.Random(f"42:{sample_id}").sample`."""
    seen: set[str] = set()
    chains: list[Chain] = []
    for node, depth in _depths(tree):
        for c in node_chains(node, depth):
            if c.text not in seen:
                seen.add(c.text)
                chains.append(c)
    if len(chains) > max_chains:
        chains = random.Random(f"{SEED}:{sample_id}").sample(chains, max_chains)
    return chains


@dataclass
class LinearizeStats:
    """Counts of one linearization run (logged, printed by the CLI)."""

    samples: int = 0
    root_correct: int = 0
    error_samples: int = 0
    bad_lines: list[str] = field(default_factory=list)
    samples_without_chains: int = 0
    other_domain: int = 0
    chains: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)

    @property
    def root_correct_ratio(self) -> float:
        """Share of searched samples whose root value is > 0 (the search found a correct
        answer somewhere)."""
        return self.root_correct / self.samples if self.samples else 0.0

    def summary(self) -> str:
        return (
            f"{self.samples} trees, root-correct ratio {self.root_correct_ratio:.3f} "
            f"({self.root_correct}/{self.samples}); chains: {dict(self.chains)} "
            f"(train {self.splits['train']}, val {self.splits['val']}); "
            f"{self.samples_without_chains} trees without chains; {self.other_domain} trees of "
            f"other domains skipped; {self.error_samples} error-only ids; "
            f"{len(self.bad_lines)} unreadable lines"
        )


def _question(rec: dict[str, Any]) -> str:
    q = str(rec.get("question", ""))
    n = q.count(IMAGE_MARKER)
    if n == 1:
        return q
    if n > 1:
        logger.warning("sample %s: extra %s markers in the question removed", rec["id"], n - 1)
        head, _, tail = q.partition(IMAGE_MARKER)
        return head + IMAGE_MARKER + tail.replace(IMAGE_MARKER, "")
    return IMAGE_MARKER + q


def _family_of(env_id: Any) -> str | None:
    """The task family of an env id (`ViGoRL/SynthSearch-v0` → visual_search); None if unknown."""
    if not env_id:
        return None
    name = str(env_id).rsplit("/", 1)[-1].rsplit("-v", 1)[0]
    spec = BENCHMARKS.get(name)
    return spec.family.name if spec is not None else None


def _env_kwargs_of(rec: dict[str, Any]) -> dict[str, Any]:
    """The env make kwargs a tree (or chain) was made with: `env_kwargs`, else `config.env_kwargs`."""
    config = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    return dict(rec.get("env_kwargs") or config.get("env_kwargs") or {})


class FrameSource:
    """Model frames of searched samples, rendered by the env that the search ran (one env per
    (env id, env split, kwargs), reset by sample id), checked against the tree's `frame`."""

    def __init__(self, env_kwargs: dict[str, Any] | None = None, data_root: Any = None):
        self.env_kwargs = dict(env_kwargs or {})
        self.data_root = data_root
        self._envs: dict[tuple[str, str, str], Any] = {}

    def env(self, env_id: str, split: str | None, mode: str, extra: dict[str, Any]) -> Any:
        import json

        import gymnasium as gym

        import vigorl_env  # noqa: F401  (registers the ids)

        kwargs = {**extra, **self.env_kwargs, "mode": mode}
        if split:
            kwargs["split"] = split
        if self.data_root is not None:
            kwargs["data_root"] = self.data_root
        key = (env_id, mode, json.dumps(kwargs, sort_keys=True, default=str))
        if key not in self._envs:
            self._envs[key] = gym.make(env_id, **kwargs)
        return self._envs[key]

    def reset(
        self, rec: dict[str, Any], mode: str = "single_turn"
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """The env reset on the record's sample: (env, obs, info); a frame that differs from the
        tree's is an error (the points of the chains would not land where they were written)."""
        meta_kwargs = _env_kwargs_of(rec)
        env = self.env(
            str(rec["env_id"]), rec.get("env_split", rec.get("split")), mode, meta_kwargs
        )
        obs, info = env.reset(options={"sample_id": rec["sample_id"]})
        want = rec.get("frame")
        if (
            want
            and want.get("model_size")
            and list(want["model_size"]) != info["frame"]["model_size"]
        ):
            raise ValueError(
                f"sample {rec['sample_id']}: the env's model frame {info['frame']['model_size']} "
                f"is not the tree's {want['model_size']} (pass the search's env kwargs)"
            )
        return env, obs, info

    def close(self) -> None:
        for env in self._envs.values():
            env.close()
        self._envs.clear()


def linearize_trees(
    trees: Iterable[dict[str, Any]],
    *,
    domain: str,
    out_dir: str | Path,
    frames: FrameSource | None = None,
    max_chains: int = MAX_CHAINS,
    env_id: str | None = None,
    stats: LinearizeStats | None = None,
) -> tuple[list[dict[str, Any]], LinearizeStats]:
    """vigorl SFT records (single turn) of all chains of `trees` (records as read by
    `read_tree_files`). Frames of our trees are saved under `out_dir/images/<sample>/frame.png`."""
    system = system_prompt_of(domain)
    stats = stats or LinearizeStats()
    out = Path(out_dir)
    records: list[dict[str, Any]] = []
    for rec in trees:
        sid = str(rec["id"])
        tree = rec["tree"]
        family = _family_of(rec.get("env_id"))
        if family is not None and family != domain:
            stats.other_domain += 1
            continue
        stats.samples += 1
        value = tree.get("value", 0.0)
        if isinstance(value, (int, float)) and value > 0:
            stats.root_correct += 1
        chains = linearize_sample(sid, tree, max_chains=max_chains)
        if not chains:
            stats.samples_without_chains += 1
            continue
        rec_env = rec.get("env_id") or env_id
        image = str(rec.get("image") or "")
        frame = dict(rec.get("frame") or {})
        from_env = bool(rec.get("env_id")) and frames is not None
        if from_env:
            src = {**rec, "sample_id": sid, "env_split": rec.get("split")}
            env, _, info = frames.reset(src)
            rel = Path("images") / image_folder(sid) / "frame.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            env.unwrapped.frame_image.save(out / rel, format="PNG")
            image = rel.as_posix()
            frame = info["frame"]
        elif not image or image == "procedural":
            raise ValueError(f"{rec.get('_source', sid)}: no image for sample {sid}")
        env_kwargs = {**_env_kwargs_of(rec), **(frames.env_kwargs if frames else {})}
        question = _question(rec)
        split = split_of(sid)
        for k, c in enumerate(chains):
            records.append(
                sft_record(
                    record_id=f"{sid}:{k}",
                    sample_id=sid,
                    env_id=str(rec_env or ""),
                    kind=c.kind,
                    messages=[
                        {"role": "system", "content": system},
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": c.text},
                    ],
                    images=[image],
                    frame=frame,
                    gt_answer=str(rec.get("true_answer", "")),
                    split=split,
                    meta={
                        "source": "mcts",
                        "node_depth": c.depth,
                        "root_value": value,
                        **({"env_split": rec.get("split")} if from_env else {}),
                        **({"env_kwargs": env_kwargs} if env_kwargs else {}),
                    },
                )
            )
            stats.chains[c.kind] += 1
            stats.splits[split] += 1
    logger.info("linearized: %s", stats.summary())
    return records, stats


def write_sharegpt_splits(records: Sequence[dict[str, Any]], path: str | Path) -> list[Path]:
    """`{stem}_train.json` and `{stem}_val.json` beside `path` (LLaMA-Factory sharegpt, both
    registered in `dataset_info.json`), split by each record's `split`. Split files, as upstream's
    `MCTS_72b_reasoning_chains_{train,val}.json`: LLaMA-Factory takes a train and an eval dataset,
    and `python -m vigorl_agents.train.upstream` reads the split from the file name."""
    path = Path(path)
    out = []
    for split in ("train", "val"):
        target = path.with_name(f"{path.stem}_{split}.json")
        write_sharegpt_json([r for r in records if r["split"] == split], target)
        out.append(target)
    return out


# =========================================================================== CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m vigorl_agents.search.linearize",
        description="Linearize MCTS tree files (ours or upstream's) into vigorl SFT JSONL "
        "(direct and corrected chains; see docs/mcts.md#linearization).",
    )
    p.add_argument("trees", nargs="+", help="tree JSONL file(s) or folders of them, then OUT.jsonl")
    p.add_argument("--domain", required=True, choices=sorted(FAMILIES))
    p.add_argument(
        "--sharegpt",
        metavar="OUT.json",
        help="also write LLaMA-Factory sharegpt files OUT_train.json and OUT_val.json "
        "(+ dataset_info.json)",
    )
    p.add_argument(
        "--multi-turn",
        dest="multi_turn",
        help="also convert the chains into multi-turn dialogs in this folder (docs/mcts.md#multi-turn-conversion)",
    )
    p.add_argument("--max-chains", type=int, default=MAX_CHAINS, help="chains kept per sample")
    p.add_argument("--env-id", help="env id for trees that do not name one (upstream trees)")
    p.add_argument("--data-root", help="DATA_ROOT for real benchmarks (default: $DATA_ROOT)")
    p.add_argument(
        "--env-kwargs",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="env make kwargs the search ran with (e.g. dataset_seed=3)",
    )
    p.add_argument(
        "--keep-trailing-reasoning",
        action="store_true",
        help="multi-turn: keep the reasoning after the last tool call in the final turn",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from vigorl_agents.cli import parse_env_kwargs

    args = _parser().parse_args(argv)
    if len(args.trees) < 2:
        _parser().error("give TREES.jsonl ... OUT.jsonl")
    *inputs, out_path = args.trees
    out_path = Path(out_path)
    if out_path.suffix != ".jsonl":
        _parser().error(f"the output {out_path} must be a .jsonl file")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    read = read_tree_files(inputs)
    frames = FrameSource(parse_env_kwargs(args.env_kwargs), args.data_root)
    stats = LinearizeStats(error_samples=len(read.errors), bad_lines=list(read.bad_lines))
    try:
        records, stats = linearize_trees(
            read.trees,
            domain=args.domain,
            out_dir=out_path.parent,
            frames=frames,
            max_chains=args.max_chains,
            env_id=args.env_id,
            stats=stats,
        )
        write_sft_jsonl(records, out_path)
        if args.sharegpt:
            write_sharegpt_splits(records, args.sharegpt)
        if args.multi_turn:
            from vigorl_agents.search.multiturn import convert_records, write_multi_turn

            mt = convert_records(
                records,
                domain=args.domain,
                out_dir=args.multi_turn,
                frames=frames,
                keep_trailing_reasoning=args.keep_trailing_reasoning,
            )
            write_multi_turn(mt, args.multi_turn)
    finally:
        frames.close()
    print(stats.summary())
    for msg in stats.bad_lines:
        print(f"unreadable: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

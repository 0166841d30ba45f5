"""Rollout loop and evaluation with scripted policies (no model): batching, seeds, forced prefix,
resume after a failure, avg@k aggregation."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from vigorl_agents.baselines import FullViewGuess, RandomZoom
from vigorl_agents.eval import EvalConfig, evaluate
from vigorl_agents.policy import Completion, SamplingParams, params_per_conversation
from vigorl_agents.rollout import EpisodeSpec, make_env_factory, run_episodes
from vigorl_env import protocol


class Recording(FullViewGuess):
    """A baseline that records batch sizes and params; optionally fails after `fail_after` calls."""

    def __init__(self, answer_kind, fail_after=None):
        super().__init__(answer_kind)
        self.batches, self.params, self.calls, self.fail_after = [], [], 0, fail_after

    async def generate(self, conversations, params):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("server went away")
        self.batches.append(len(conversations))
        self.params.extend(params_per_conversation(params, len(conversations)))
        await asyncio.sleep(0.001)
        return await super().generate(conversations, params)


class ZoomFourTimes(FullViewGuess):
    """Zooms until the env forces the final answer, then answers 'red'."""

    async def generate(self, conversations, params):
        out = []
        for conv, p in zip(
            conversations, params_per_conversation(params, len(conversations)), strict=True
        ):
            turns = sum(m.role == "assistant" for m in conv.messages)
            if conv.assistant_prefix:
                out.append([Completion(" red </answer>", "stop", "</answer>")])
                self.forced_params = p
            else:
                x, y = 100 + 150 * turns, 120
                out.append(
                    [
                        Completion(
                            f"<think>Look ({x}, {y}).</think>\n" + protocol.format_tool_call(x, y),
                            "stop",
                        )
                    ]
                )
        return out


def _run(policy, env_id, specs, params, **kw):
    return asyncio.run(run_episodes(make_env_factory(env_id, size=20), policy, specs, params, **kw))


def test_batches_form_and_results_do_not_depend_on_scheduling():
    specs = [EpisodeSpec(i) for i in range(12)]
    params = SamplingParams(seed=7)
    wide = Recording("option_text")
    a = _run(wide, "ViGoRL/SynthSpatial-v0", specs, params, max_in_flight=12)
    narrow = Recording("option_text")
    b = _run(narrow, "ViGoRL/SynthSpatial-v0", specs, params, max_in_flight=1)
    assert max(wide.batches) > 1 and max(narrow.batches) == 1
    assert [t.transcript for t in a] == [t.transcript for t in b]
    assert [t.sample_id for t in a] == [f"SynthSpatial-train-0-{i}" for i in range(12)]
    # every request has its own seed, none is the base seed reused
    seeds = [p.seed for p in wide.params]
    assert len(set(seeds)) == len(seeds) and 7 not in seeds


def test_forced_prefix_is_continued_greedily_and_recorded():
    policy = ZoomFourTimes("option_text")
    (traj,) = _run(
        policy, "ViGoRL/SynthSearch-v0", [EpisodeSpec(3)], SamplingParams(temperature=1.0, seed=1)
    )
    assert len(traj.turns) == 5 and [t.crop is not None for t in traj.turns] == [True] * 4 + [False]
    assert (
        traj.turns[-1].prefix == protocol.FORCED_PREFIX and traj.turns[-1].text == " red </answer>"
    )
    assert policy.forced_params.temperature == 0.0
    assert traj.end_reason == "answer"
    assert traj.components["format"] == pytest.approx(1.6)
    assert traj.transcript.endswith(protocol.FORCED_PREFIX + " red </answer>")
    # images by reference: crops are boxes, no pixels in the record
    assert "crop" in json.dumps(traj.to_dict()) and "array" not in json.dumps(traj.to_dict())


def test_eval_resumes_after_a_failure_and_keeps_results(tmp_path):
    cfg = EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=10, max_in_flight=2, max_batch=2)
    flaky = Recording("option_text", fail_after=3)
    with pytest.raises(RuntimeError, match="server went away"):
        asyncio.run(evaluate(flaky, cfg, tmp_path, policy_name="p"))
    first = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    kept = [r for r in first if "error" not in r]
    cut = [r for r in first if "error" in r]  # in flight when it failed: error lines to retry
    assert 1 <= len(kept) < 10 and cut
    assert all(r["error"] == "RuntimeError: server went away" for r in cut)
    assert not {r["index"] for r in cut} & {r["index"] for r in kept}
    good = Recording("option_text")
    summary = asyncio.run(evaluate(good, cfg, tmp_path, policy_name="p"))
    assert sum(good.batches) == 10 - len(kept)  # only the missing samples ran
    (row,) = summary["rows"]
    assert row["n"] == 10 and row["split"] == "test"
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    scores = [r["score"] for r in lines if "error" not in r]
    assert len(scores) == 10 and row["errors"] == 0
    assert row["accuracy"]["mean"] == pytest.approx(100 * sum(scores) / 10)
    assert (tmp_path / "report.md").read_text().count("ViGoRL/SynthSpatial-v0") == 1
    assert (tmp_path / "accuracy.png").exists()


def test_avg_at_k_and_multi_turn_defaults(tmp_path):
    cfg = EvalConfig(env_ids=("ViGoRL/SynthSearch-v0",), limit=4, k=3, env_kwargs={"max_images": 3})
    policy = RandomZoom("option_text")
    summary = asyncio.run(evaluate(policy, cfg, tmp_path, policy_name="rz"))
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 12 and {r["episode"] for r in lines} == {0, 1, 2}
    per_sample = {}
    for r in lines:
        per_sample.setdefault(r["sample_id"], []).append(r["score"])
    expected = 100 * sum(sum(v) / 3 for v in per_sample.values()) / 4
    assert summary["rows"][0]["accuracy"]["mean"] == pytest.approx(expected)
    assert cfg.sampling("multi_turn").top_p == 0.99 and cfg.sampling("single_turn").top_p == 1.0


# --------------------------------------------------------------------------- recorded answer


class CaseAnswers(FullViewGuess):
    """Answers with upper-case tags and a second, different answer block after the first."""

    def act(self, conv, rng):
        from vigorl_agents.baselines import options_in

        question, _, _ = self._context(conv)
        first = options_in(question)[0]
        text = f"<think>Here (10, 10).</think>\n<Answer> {first} </Answer>\n<answer>zzz</answer>"
        return Completion(text, "stop", "</answer>")


def test_recorded_answer_is_the_one_the_reward_scored(tmp_path):
    """Regression: the record took the last, case-sensitive `<answer>` ('zzz', or None for
    `<Answer>`) while the reward scores the first block, tags case-insensitive."""
    from vigorl_env.rewards import GroundTruth, answer_accuracy

    cfg = EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=6)
    asyncio.run(evaluate(CaseAnswers("option_text"), cfg, tmp_path, policy_name="p"))
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 6
    for r in recs:
        assert r["answer"] is not None and r["answer"] != "zzz"
        assert r["answer"].strip() in r["transcript"]
        gt = r["trajectory"]["ground_truth"]
        assert answer_accuracy(r["answer"], GroundTruth(gt["answer"], "option_text")) == r["score"]
    assert any(r["score"] == 1.0 for r in recs)  # an answer the reward counted right is recorded


def test_scored_answer_follows_the_envs_extraction_rule():
    from vigorl_agents.rollout import scored_answer

    assert scored_answer("<think>x</think><ANSWER> red </Answer>") == " red "
    assert scored_answer("<answer>a</answer> <answer>b</answer>") == "a"
    assert scored_answer("no tags here") is None
    assert scored_answer("  blue \n", answer_extraction="whole_output") == "blue"
    assert scored_answer("no tags", accuracy_fn="lenient_upstream") == "no tags"


# --------------------------------------------------------------------------- append-only file


def test_torn_last_line_is_cut_before_appending_and_never_eats_a_record(tmp_path):
    """Regression: a killed writer's half line got the next record glued onto it (both lost)."""
    cfg = EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=4)
    asyncio.run(evaluate(FullViewGuess("option_text"), cfg, tmp_path, policy_name="p"))
    path = tmp_path / "samples.jsonl"
    with path.open("a", encoding="utf-8") as f:
        f.write('{"env_id": "ViGoRL/SynthSpatial-v0", "sample_id": "SynthSp')  # killed mid-write
    cfg6 = EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=6)
    summary = asyncio.run(evaluate(FullViewGuess("option_text"), cfg6, tmp_path, policy_name="p"))
    lines = path.read_text().splitlines()
    recs = [json.loads(x) for x in lines]  # every line on disk parses
    assert len(recs) == 6 and len({r["sample_id"] for r in recs}) == 6
    assert summary["rows"][0]["n"] == len(lines)


# --------------------------------------------------------------------------- resume rules


def test_resume_with_other_settings_is_refused_naming_the_fields(tmp_path):
    """Regression: a rerun with other decoding or env kwargs reused the old samples and wrote a
    summary claiming the new settings."""
    from dataclasses import replace

    from vigorl_agents.eval import ResumeConfigError

    base = EvalConfig(env_ids=("ViGoRL/SynthSearch-v0",), limit=3, env_kwargs={"max_images": 3})
    policy = RandomZoom("option_text")
    asyncio.run(evaluate(policy, base, tmp_path, policy_name="rz"))
    old_lines = (tmp_path / "samples.jsonl").read_text()

    hotter = replace(base, temperature=0.9, env_kwargs={"max_images": 4})
    with pytest.raises(ResumeConfigError) as info:
        asyncio.run(evaluate(policy, hotter, tmp_path, policy_name="rz"))
    msg = str(info.value)
    assert "eval.temperature: 0.5 → 0.9" in msg
    assert "eval.env_kwargs.max_images: 3 → 4" in msg
    assert "--eval.overwrite" in msg and "3 evaluation record(s)" in msg
    with pytest.raises(ResumeConfigError, match='policy: "rz" → "other"'):
        asyncio.run(evaluate(policy, base, tmp_path, policy_name="other"))
    assert (tmp_path / "samples.jsonl").read_text() == old_lines  # nothing was run or written

    # fields that do not change answers may change: a larger limit extends the run
    more = replace(base, limit=5, max_in_flight=2, data_errors="exclude")
    summary = asyncio.run(evaluate(policy, more, tmp_path, policy_name="rz"))
    assert summary["rows"][0]["n"] == 5
    assert (tmp_path / "samples.jsonl").read_text().startswith(old_lines)

    # without eval_config.json (an older run), the env fingerprints still catch an env change
    (tmp_path / "eval_config.json").unlink()
    with pytest.raises(ResumeConfigError, match="env config of ViGoRL/SynthSearch-v0"):
        asyncio.run(evaluate(policy, replace(base, env_kwargs={"max_images": 4}), tmp_path,
                             policy_name="rz"))  # fmt: skip

    # overwrite: start afresh with the new settings
    fresh = replace(hotter, overwrite=True)
    summary = asyncio.run(evaluate(policy, fresh, tmp_path, policy_name="rz"))
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 3 and summary["decoding"]["temperature"] == 0.9
    stored = json.loads((tmp_path / "eval_config.json").read_text())
    assert stored["eval"]["temperature"] == 0.9 and stored["eval"]["env_kwargs"] == {
        "max_images": 4
    }


def test_resume_logs_how_many_episodes_it_skipped(tmp_path, caplog):
    cfg = EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=3, progress_every_s=0)
    asyncio.run(evaluate(FullViewGuess("option_text"), cfg, tmp_path, policy_name="p"))
    bigger = EvalConfig(env_ids=("ViGoRL/SynthSpatial-v0",), limit=5, progress_every_s=0)
    with caplog.at_level(logging.INFO, logger="vigorl_agents.eval"):
        asyncio.run(evaluate(FullViewGuess("option_text"), bigger, tmp_path, policy_name="p"))
    msgs = [r.getMessage() for r in caplog.records]
    assert any("skipped 3 of 5 episode(s)" in m for m in msgs)
    # stderr is not a terminal under pytest: progress is logged, not drawn
    assert any("2 episode(s) to run" in m for m in msgs)
    assert any("1/2 episodes" in m for m in msgs)
    assert any("2/2 episodes done" in m for m in msgs)


# --------------------------------------------------------------------------- unreadable data


def _vstar_root(root, corrupt_index=2, n=4):
    """A DATA_ROOT holding VStar's test file with `n` questions; image `corrupt_index` is a PNG cut
    after 200 bytes (unreadable), the others are fine."""
    import io

    from PIL import Image

    folder = root / "visual_search" / "vstar"
    (folder / "img").mkdir(parents=True)
    lines = []
    for i in range(n):
        rel = f"visual_search/vstar/img/{i}.png"
        img = Image.new("RGB", (300, 200), (40 * i, 90, 200))
        if i == corrupt_index:
            buf = io.BytesIO()
            img.save(buf, "PNG")
            (root / rel).write_bytes(buf.getvalue()[:200])
        else:
            img.save(root / rel)
        question = "<image>\nWhat is the color of the box?\nA. red\nB. blue"
        conv = [{"from": "human", "value": question}, {"from": "gpt", "value": "blue"}]
        lines.append(json.dumps({"id": f"q{i}", "image": rel, "conversations": conv}))
    (folder / "vstarbench_test.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("data_errors", ["score_zero", "exclude"])
def test_an_unreadable_image_is_an_error_line_and_the_run_goes_on(tmp_path, data_errors):
    """Regression: one corrupt image aborted the whole benchmark, at the same sample every rerun."""
    root = _vstar_root(tmp_path / "data")
    cfg = EvalConfig(
        env_ids=("ViGoRL/VStar-v0",), limit=None, env_kwargs={"data_root": str(root)},
        data_errors=data_errors,
    )  # fmt: skip
    out = tmp_path / "run"
    summary = asyncio.run(evaluate(FullViewGuess("option_text"), cfg, out, policy_name="p"))
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    errors = [r for r in recs if "error" in r]
    assert len(recs) == 4 and len(errors) == 1
    (err,) = errors
    assert err["sample_id"] == "q2" and err["index"] == 2 and err["episode"] == 0
    assert err["error_type"] == "DataFormatError" and "corrupt or truncated" in err["error"]
    assert err["config_fingerprint"] == recs[0]["config_fingerprint"]
    (row,) = summary["rows"]
    good = [r["score"] for r in recs if "error" not in r]
    assert row["errors"] == 1 and row["end_reasons"]["error"] == 1
    if data_errors == "score_zero":
        assert row["n"] == 4 and row["accuracy"]["mean"] == pytest.approx(100 * sum(good) / 4)
    else:
        assert row["n"] == 3 and row["accuracy"]["mean"] == pytest.approx(100 * sum(good) / 3)
    report = (out / "report.md").read_text()
    assert "q2: DataFormatError" in report and f"data_errors={data_errors}" in report

    # a rerun retries the errored sample only; once the image is fixed, it gets a result
    from PIL import Image

    Image.new("RGB", (300, 200), "blue").save(root / "visual_search/vstar/img/2.png")
    summary = asyncio.run(evaluate(FullViewGuess("option_text"), cfg, out, policy_name="p"))
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(recs) == 5 and "error" not in recs[-1] and recs[-1]["sample_id"] == "q2"
    assert summary["rows"][0]["n"] == 4 and summary["rows"][0]["errors"] == 0


# --------------------------------------------------------------------------- reports


def _baseline_factory(env_id):
    import gymnasium as gym

    import vigorl_env

    bench = gym.spec(env_id).kwargs["benchmark"]
    return FullViewGuess(vigorl_env.tasks.BENCHMARKS[bench].family.answer_kind)


def test_report_shows_wilson_weights_and_explains_exact_and_the_plot_labels_zero(tmp_path):
    from vigorl_agents.eval import summary_figure

    envs = ("ViGoRL/SynthGrounding-v0", "ViGoRL/SynthWebAction-v0", "ViGoRL/SynthSearch-v0")
    cfg = EvalConfig(env_ids=envs, limit=6, env_kwargs={"max_images": 3})
    summary = asyncio.run(evaluate(_baseline_factory, cfg, tmp_path, policy_name="guess"))
    rows = {r["env_id"]: r for r in summary["rows"]}
    grounding = rows["ViGoRL/SynthGrounding-v0"]
    assert grounding["accuracy"]["mean"] == 0.0 and grounding["accuracy"]["half_width"] == 0.0
    assert grounding["accuracy_wilson"]["high"] > 30  # 0/6 is no evidence of a 0 % model
    assert rows["ViGoRL/SynthSearch-v0"]["reward_weights"] == {"accuracy": 0.6, "format": 0.4}
    assert rows["ViGoRL/SynthSearch-v0"]["mode"] == "multi_turn"
    report = (tmp_path / "report.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("| ViGoRL/SynthGrounding-v0"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "0.0 ± 0.0"
    w = grounding["accuracy_wilson"]
    assert cells[4] == f"[{w['low']:.1f}, {w['high']:.1f}]" and cells[4] != "[0.0, 0.0]"
    assert cells[7] == "accuracy 0.5 · format 0.5"
    assert "Wilson 95 % CI" in report and "Web action: *accuracy* gives partial credit" in report

    fig = summary_figure(summary)
    (ax,) = fig.axes
    texts = {t.get_text() for t in ax.texts}
    assert "all 0 (N=6)" in texts  # the zero env's slot is labelled, not blank
    others = [rows[e]["accuracy"]["mean"] for e in envs[1:]]
    assert {f"{m:.1f}" if m else "all 0 (N=6)" for m in others} <= texts
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "SynthGrounding", "SynthWebAction", "SynthSearch"
    ]  # fmt: skip

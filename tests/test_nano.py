"""The nano pipeline (experiments/nano.py): one small real run of every default stage, then
asserts that would fail if a stage silently did nothing (docs/nano.md)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from experiments import nano
from vigorl_env.protocol import all_think_points


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke preset, run once for the module (about 30-60 s on 2 CPU cores)."""
    out = tmp_path_factory.mktemp("nano")
    args = replace(nano.PRESETS["smoke"][1], out_root=out)
    res = nano.run(args)
    return args, Path(res["root"]), res


def _done(root: Path, stage: str) -> dict:
    return json.loads((root / stage / "done.json").read_text(encoding="utf-8"))


def test_every_default_stage_ran_and_wrote_its_marker(smoke):
    args, root, res = smoke
    names = nano.default_stages(with_grpo=nano.grpo_available())
    assert list(res["times"]) == names
    for name in names:
        marker = _done(root, name)
        assert marker["stage"] == name and len(marker["fingerprint"]) == 64
    # without the trainer no GRPO stage is in the default list; with it, all of them are
    grpo = [n for n in names if n.startswith("grpo_")]
    assert grpo == (list(nano.GRPO_STAGES) if nano.grpo_available() else [])


def test_grpo_stages_ran_the_trainer(smoke):
    if not nano.grpo_available():
        pytest.skip("vigorl_agents.train.grpo is not in this checkout")
    args, root, _ = smoke
    failed = root / "grpo_multi_turn" / "failed.json"
    if failed.is_file() and "bound to a different event loop" in failed.read_text():
        # HFPolicy's asyncio.Lock is reused across the trainer's per-step event loops
        # (vigorl_agents/backends/hf.py; reported to its owner): multi-turn GRPO stops at step 2
        pytest.xfail("multi-turn GRPO with the transformers backend: asyncio.Lock across loops")
    for name, (cond, start) in nano.GRPO_STAGES.items():
        r = _done(root, name)["result"]
        assert r["start"] == start and r["steps"] == args.grpo.steps
        assert len(r["history"]) == args.grpo.steps
        for h in r["history"]:
            assert 0.0 <= h["reward"] <= 2.0 and 0.0 <= h["accuracy"] <= 1.0
        assert (Path(r["checkpoint"]) / "config.json").is_file()
        ev = _records(root / f"eval_{cond}" / "samples.jsonl")
        assert len(ev) == args.tasks.n_test
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    assert summary["conditions"]["multi_turn"]["model"] == "sft+grpo"
    assert summary["conditions"]["vanilla_grpo"]["n"] == args.tasks.n_test
    assert (root / "grpo_curves.png").is_file()


def test_test_split_is_disjoint_from_everything_trained_on(smoke):
    args, root, _ = smoke
    splits = json.loads((root / "data" / "splits.json").read_text(encoding="utf-8"))
    trained = set()
    for f in (root / "chains").glob("sft_*.jsonl"):
        trained |= {r["sample_id"] for r in _records(f)}
    assert trained, "no training chains"
    captions = {r["sample_id"] for r in _records(root / "pretrain" / "captions.jsonl")}
    assert len(captions) == args.pretrain.samples
    assert not captions & trained  # the base model's scenes are not the searched ones
    trained |= captions
    for key, env in splits["envs"].items():
        assert env["test"] and env["train"], key
        assert not set(env["test"]) & set(env["train"])
        assert all("-test-" in sid for sid in env["test"])
        assert not set(env["test"]) & trained
    # every evaluated sample is a test sample, and none was trained on
    for cond in nano.SFT_CONDITIONS:
        recs = _records(root / f"eval_{cond.name}" / "samples.jsonl")
        assert len(recs) == args.tasks.n_test
        assert {r["split"] for r in recs} == {"test"}
        assert not {r["sample_id"] for r in recs} & trained


def test_crops_are_real_zooms(smoke):
    _, root, _ = smoke
    zoom = _done(root, "data")["result"]["zoom"]
    assert zoom["factor"] > 1.0
    assert zoom["crop"][0] > zoom["region"][0]


def test_chains_of_each_condition(smoke):
    _, root, _ = smoke
    chains = root / "chains"
    grounded = _records(chains / "sft_grounded.jsonl")
    ungrounded = _records(chains / "sft_ungrounded.jsonl")
    direct = _records(chains / "sft_direct.jsonl")
    assert len(grounded) == len(ungrounded) == len(direct) > 0
    n_points = 0
    for g, u, d in zip(grounded, ungrounded, direct, strict=True):
        assert g["sample_id"] == u["sample_id"] == d["sample_id"]
        inside, total = nano.points_inside_frame(g)
        assert total > 0 and inside == total  # grounded chains point inside the frame
        n_points += total
        assert all(not all_think_points(m["content"]) for m in u["messages"])
        assert d["messages"][-1]["content"] == f"<answer> {g['gt_answer']} </answer>"
        assert g["messages"][0]["content"] == nano.PROMPT_GROUNDED
        assert u["messages"][0]["content"] == nano.PROMPT_UNGROUNDED
        # the same answer closes the grounded and the ungrounded chain
        assert (
            g["messages"][-1]["content"].split("<answer>")[-1]
            == (u["messages"][-1]["content"].split("<answer>")[-1])
        )
        assert all(Path(p).is_file() for p in g["images"])
    assert n_points >= len(grounded)
    multi = _records(chains / "sft_multi_turn.jsonl")
    assert multi and all(len(r["images"]) >= 2 for r in multi)  # frame + at least one crop
    assert all(r["messages"][0]["content"] == nano.PROMPT_MULTI_TURN for r in multi)


def test_base_model_is_trained_on_grounded_captions_and_every_condition_starts_from_it(smoke):
    args, root, _ = smoke
    base = _done(root, "pretrain")["result"]
    assert base["records"] == args.pretrain.samples and base["first_index"] == 8
    assert base["loss_last"] < base["loss_first"]
    assert (Path(base["checkpoint"]) / "config.json").is_file()
    for key in ("random_student", "base"):  # held-out scenes captioned before and after
        score = base["held_out"][key]
        assert score["objects"] >= 2 * args.pretrain.eval_samples
        assert 0.0 <= score["on_target"] <= 1.0 and score["x_error_of_the_mean"] > 0
    for rec in _records(root / "pretrain" / "captions.jsonl"):
        # every object named once with its point, left to right, inside the frame
        text = rec["messages"][-1]["content"]
        points = [(int(x), int(y)) for x, y in re.findall(r"\((\d+), (\d+)\)", text)]
        w, h = rec["frame"]["model_size"]
        assert len(points) == text.count(" at (") >= 2
        assert all(0 <= x < w and 0 <= y < h for x, y in points)
        assert [x for x, _ in points] == sorted(x for x, _ in points)
        assert Path(rec["images"][0]).is_file()
    eval_untrained = _done(root, "eval_untrained")
    assert eval_untrained["result"]["checkpoint"] == base["checkpoint"]


def test_sft_loss_falls_and_checkpoints_exist(smoke):
    _, root, _ = smoke
    for name in nano.SFT_STAGES:
        r = _done(root, name)["result"]
        assert r["steps"] >= 2
        assert r["loss_last"] < r["loss_first"] - 0.5, (name, r["loss_curve"])
        assert (Path(r["checkpoint"]) / "config.json").is_file()


def test_student_is_the_qwen2_vl_architecture_from_random_weights(smoke):
    _, root, _ = smoke
    cfg = json.loads((root / "student" / "model" / "config.json").read_text(encoding="utf-8"))
    assert cfg["model_type"] == "qwen2_vl"
    student = nano.PRESETS["smoke"][1].student
    assert cfg["text_config"]["hidden_size"] == student.hidden
    # SFT changed the weights (a trained checkpoint differs from the random start)
    from safetensors.numpy import load_file

    w0 = load_file(str(root / "student" / "model" / "model.safetensors"))
    w1 = load_file(str(Path(_done(root, "sft_grounded")["result"]["checkpoint"]) /
                       "model.safetensors"))  # fmt: skip
    key = next(k for k in w0 if "embed_tokens" in k)
    assert w0[key].shape == w1[key].shape
    assert abs(w0[key] - w1[key]).max() > 1e-4


def test_chain_lengths_are_counted_against_the_caps(smoke):
    """The student stage counts each condition's training turns in the student's tokens against
    the evaluation/GRPO caps (the smoke caps are far below the chains: most turns are over)."""
    from transformers import AutoTokenizer

    args, root, _ = smoke
    res = _done(root, "student")["result"]["chain_tokens"]
    assert set(res) == {f"{n}" for n in nano.SFT_STAGES}
    tok = AutoTokenizer.from_pretrained(root / "student" / "model")
    turns = [
        len(tok(m["content"], add_special_tokens=False)["input_ids"])
        for r in _records(root / "chains" / "sft_grounded.jsonl")
        for m in r["messages"]
        if m["role"] == "assistant"
    ]
    g = res["sft_grounded"]
    assert g["cap"] == min(args.eval.max_tokens, args.grpo.max_response_tokens) == 24
    assert g["max"] == max(turns) and g["over_cap"] == sum(n > 24 for n in turns) / len(turns)
    assert g["over_cap"] > 0.5 and res["sft_direct"]["over_cap"] == 0.0  # `<answer> x </answer>`
    assert res["sft_multi_turn"]["cap"] == min(args.eval.max_tokens, args.grpo.per_turn_tokens)


def test_report_and_summary(smoke):
    args, root, _ = smoke
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    assert summary["preset"] == "smoke" and summary["machine"]
    conds = summary["conditions"]
    for name in ("untrained", "sft_direct", "sft_grounded", "sft_ungrounded",
                 "multi_turn", "single_turn"):  # fmt: skip
        c = conds[name]
        assert c["n"] == args.tasks.n_test
        assert 0.0 <= c["accuracy"] <= 100.0 and c["ci95"] >= 0.0
    assert conds["untrained"]["model"] == "base" and conds["sft_direct"]["model"] == "sft"
    report = (root / "report.md").read_text(encoding="utf-8")
    assert "| sft_grounded |" in report and "## Claims" in report
    # the chance level of the evaluated samples: the nano SynthSpatial families have 2 options
    chance = nano.chance_level(root / "eval_untrained" / "samples.jsonl")
    assert chance == pytest.approx(50.0)
    assert f"SynthSpatial-v0 {chance:.1f} %" in report
    # the image-dependence check ran: the random student's outputs move with the image
    untrained = _done(root, "eval_untrained")["result"]["image_dependence"]
    assert untrained is not None and untrained > 0.0
    assert _done(root, "eval_sft_multi_turn")["result"].get("image_dependence") is None
    for png in ("accuracy.png", "sft_loss.png"):
        assert (root / png).stat().st_size > 1000
        assert f"]({png})" in report
    assert summary["machine"] == _done(root, "eval_sft_direct")["result"]["machine"]


def test_answer_breakdown_counts_every_answer(smoke):
    """Per family: correct + another option + no option = the evaluated samples, the correct
    count is the accuracy's numerator, and the untrained student (which never answers) has every
    answer under 'not an option'."""
    args, root, _ = smoke
    pipe = nano.Pipeline(args, nano._stages())
    names = ["untrained", "sft_direct", "multi_turn"]
    out = nano.answer_breakdown(args, pipe, names)
    for name in names:
        fams = out[name]
        assert sum(sum(c.values()) for c in fams.values()) == args.tasks.n_test
        acc = _done(root, f"eval_{name}")["result"]["accuracy"]
        correct = sum(c["correct"] for c in fams.values())
        assert correct == pytest.approx(acc * args.tasks.n_test / 100)
    assert all(c["none"] == sum(c.values()) for c in out["untrained"].values())
    assert set(out["sft_direct"]) <= set(args.tasks.spatial_families)
    report = (root / "report.md").read_text(encoding="utf-8")
    assert "## Answers by question family" in report


def test_a_second_run_skips_every_done_stage(smoke):
    args, root, res = smoke
    before = {n: (root / n / "done.json").stat().st_mtime_ns for n in res["times"]}
    again = nano.run(replace(args, stages=tuple(n for n in res["times"] if n != "report")))
    for n, seconds in again["times"].items():
        assert seconds == pytest.approx(res["times"][n])
        assert (root / n / "done.json").stat().st_mtime_ns == before[n]


@pytest.mark.parametrize(
    ("stage", "inputs"),
    [
        ("pretrain", ("data", "search", "chains", "student")),
        ("grpo_grounded", ("data", "search", "chains", "student", "pretrain", "sft_grounded")),
    ],
)
def test_an_interrupted_training_stage_resumes_from_its_checkpoint(
    smoke, tmp_path, monkeypatch, stage, inputs
):
    """A training stage that dies after its first checkpoint keeps its folder; the next run
    resumes there and ends with the uninterrupted run's weights and one record per step."""
    from safetensors.torch import load_file

    from vigorl_agents.train.grpo import GRPOTrainer
    from vigorl_agents.train.sft import SFTTrainer

    args, root, _ = smoke
    if stage.startswith("grpo") and not (root / stage / "done.json").is_file():
        pytest.skip(f"{stage} did not run in this checkout")
    for s in inputs:
        shutil.copytree(root / s, tmp_path / args.preset / s)
    a = replace(args, out_root=tmp_path, stages=(*inputs, stage))
    trainer = GRPOTrainer if stage.startswith("grpo") else SFTTrainer
    save, saved = trainer.save_checkpoint, []

    def dies_after_its_first_checkpoint(self):
        path = save(self)
        saved.append(self.step)
        if len(saved) == 1:
            raise RuntimeError("killed")
        return path

    monkeypatch.setattr(trainer, "save_checkpoint", dies_after_its_first_checkpoint)
    nano.run(a)
    out = tmp_path / args.preset / stage
    assert (out / "failed.json").is_file() and not (out / "done.json").exists()
    assert [c.name for c in out.glob("checkpoint-*")] == [f"checkpoint-{saved[0]}"]
    nano.run(a)
    r = _done(tmp_path / args.preset, stage)["result"]
    assert saved[1] == saved[0] + 1  # resumed after the checkpoint, not from step 0
    steps = [rec["step"] for rec in _records(out / "metrics.jsonl") if "split" not in rec]
    assert steps == list(range(1, r["steps"] + 1)) and not (out / "failed.json").exists()
    curve = r["loss_curve"] if stage == "pretrain" else r["history"]
    assert len(curve) == r["steps"]
    assert [c.name for c in out.glob("checkpoint-*")] == [f"checkpoint-{r['steps']}"]
    resumed = load_file(Path(r["checkpoint"]) / "model.safetensors")
    whole = load_file(Path(_done(root, stage)["result"]["checkpoint"]) / "model.safetensors")
    assert resumed.keys() == whole.keys()
    for k in whole:
        assert (resumed[k] == whole[k]).all(), k


def test_fingerprints_follow_config_and_inputs(smoke):
    args, root, _ = smoke
    stages = nano._stages()
    pipe = nano.Pipeline(args, stages)
    assert pipe.fingerprint_of("sft_direct") == _done(root, "sft_direct")["fingerprint"]
    other = nano.Pipeline(replace(args, sft=replace(args.sft, lr=args.sft.lr / 2)), stages)
    assert other.fingerprint_of("sft_direct") != pipe.fingerprint_of("sft_direct")
    # an evaluation is keyed by the checkpoint stage it reads
    assert other.fingerprint_of("eval_sft_direct") == pipe.fingerprint_of("eval_sft_direct")


def test_remove_points():
    text = (
        "<think>\nIn the centre region the red cube sits at (72, 44); it is relevant. "
        "Comparing the red cube and the blue cone around (60, 50), so the answer should be "
        '"left". The region around (3, 4) matches (5,6).\n</think>\n<answer> left </answer>'
    )
    out = nano.remove_points(text)
    assert out == (
        "<think>\nIn the centre region the red cube sits; it is relevant. "
        'Comparing the red cube and the blue cone, so the answer should be "left". '
        "The region matches.\n</think>\n<answer> left </answer>"
    )
    assert not all_think_points(out)


def test_claim_status():
    def m(acc, ci):
        return {"accuracy": acc, "ci95": ci}

    assert nano.claim_status(m(70, 5), m(50, 5)).startswith("holds")
    assert nano.claim_status(m(60, 6), m(50, 6)).startswith("same direction")
    assert nano.claim_status(m(40, 5), m(50, 5)) == "does not hold"
    assert nano.claim_status(None, m(50, 5)).startswith("not measured")


def test_single_turn_gets_the_same_image_budget():
    t = nano.Tasks(search_pixels=48 * 784, search_crop_size=56, max_images=3)
    assert t.single_turn_search_pixels == 48 * 784 + 2 * 56 * 56
    kw_multi = nano.env_kwargs(t, nano.CONDITIONS["sft_multi_turn"])
    kw_single = nano.env_kwargs(t, nano.CONDITIONS["sft_single_turn"])
    assert kw_multi["mode"] == "multi_turn" and kw_single["mode"] == "single_turn"
    assert kw_single["max_pixels"] == t.single_turn_search_pixels
    assert t.processor_max_pixels >= t.single_turn_search_pixels


def test_publish_copies_the_report(smoke, tmp_path):
    args, root, _ = smoke
    dest = tmp_path / "results" / "nano"
    nano.run(replace(args, stages=("report",), publish=dest))
    for name in ("report.md", "summary.json", "accuracy.png"):
        assert (dest / name).read_bytes() == (root / name).read_bytes()


def test_chains_do_not_depend_on_how_the_search_was_sharded(smoke, tmp_path):
    """Three shards per SynthSearch job (six worker processes) give the same training files as
    one shard: a sample's trees and chains depend only on its id."""
    args, root, _ = smoke
    sharded = replace(args, out_root=tmp_path, search=replace(args.search, workers=6),
                      stages=("data", "search", "chains"))  # fmt: skip
    res = nano.run(sharded)
    assert _done(Path(res["root"]), "search")["result"]["search"]["shards"] == 3

    def content(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "images"} for r in _records(path)]

    for name in ("sft_grounded", "sft_direct", "sft_multi_turn", "sft_single_turn"):
        assert content(Path(res["root"]) / "chains" / f"{name}.jsonl") == content(
            root / "chains" / f"{name}.jsonl"
        )


def test_lanes_run_every_condition_to_the_same_markers(smoke, tmp_path):
    """Two lanes (worker processes) after the shared stages: every stage of the default list
    finishes with the fingerprint of the one-process run, and the report reads them all."""
    args, root, res = smoke
    laned = nano.run(replace(args, out_root=tmp_path, lanes=2))
    assert not laned["failed"]
    assert set(laned["times"]) == set(res["times"])
    lroot = Path(laned["root"])
    for name in res["times"]:
        if name != "report":
            assert _done(lroot, name)["fingerprint"] == _done(root, name)["fingerprint"], name
    summary = json.loads((lroot / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["conditions"]) == set(
        json.loads((root / "summary.json").read_text(encoding="utf-8"))["conditions"]
    )


def test_lanes_group_each_condition_after_its_sft():
    lanes = nano.lanes_of(nano.default_stages(with_grpo=True))
    assert lanes[0] == ["sft_direct", "eval_sft_direct", "grpo_vanilla", "eval_vanilla_grpo"]
    assert ["eval_untrained"] in lanes
    flat = [n for lane in lanes for n in lane]
    assert len(flat) == len(set(flat))
    assert set(flat) | set(nano.SHARED_STAGES) | {"report"} == set(
        nano.default_stages(with_grpo=True)
    )


def test_nano_scale_reaches_the_envs(smoke):
    """The preset's scene (few solids, two-option families; a small SynthSearch canvas with few
    shapes) is what the evaluated test samples hold."""
    import gymnasium as gym

    args, _, _ = smoke
    t = args.tasks
    env = gym.make(nano.SPATIAL, split="test", **nano.env_kwargs(t, frame="spatial")).unwrapped
    for i in range(8):
        env.reset(options={"index": i})
        s = env._episode.sample
        assert t.spatial_objects[0] <= len(s.objects) <= t.spatial_objects[1]
        assert s.meta["family"] in t.spatial_families and len(s.options) == 2
    env = gym.make(nano.SEARCH, split="test", **nano.env_kwargs(t, frame="search")).unwrapped
    for i in range(4):
        env.reset(options={"index": i})
        s = env._episode.sample
        assert t.search_shapes[0] <= len(s.objects) <= t.search_shapes[1]
        assert t.search_width[0] <= s.image().width <= t.search_width[1]


def test_lanes_after_a_failed_shared_stage_skip_every_condition(smoke, tmp_path, monkeypatch):
    """A shared stage that fails (here: the student) leaves every lane stage skipped as blocked,
    recorded in the result, and the report still runs; nothing raises."""
    args, _, _ = smoke

    def broken(*a, **k):
        raise RuntimeError("no student today")

    stages = nano._stages()
    stages["student"] = nano.Stage("student", ("chains",), stages["student"].config, broken)
    monkeypatch.setattr(nano, "_stages", lambda: stages)
    res = nano.run(replace(args, out_root=tmp_path, lanes=2))
    assert res["failed"]["student"].startswith("RuntimeError: no student today")
    for lane in nano.lanes_of(nano.default_stages(with_grpo=nano.grpo_available())):
        for name in lane:
            assert "which failed" in res["failed"][name], name
    assert (Path(res["root"]) / "report.md").is_file()


def test_caption_scores_count_a_point_inside_its_box_in_left_to_right_order():
    from experiments.nano_pretrain import caption, score_captions

    objs = [("the red cube", (50.0, 10.0, 60.0, 20.0)), ("the blue cone", (10.0, 30.0, 20.0, 44.0))]
    assert caption(objs) == "the blue cone at (15, 37). the red cube at (55, 15)."
    exact = score_captions([caption(objs)], [objs])
    assert exact["on_target"] == 1.0 and exact["x_error"] == 0.0
    assert exact["x_error_of_the_mean"] == 20.0
    # the same points in the wrong order miss both boxes; a missing point counts as a miss
    swapped = score_captions(["the red cube at (55, 15). the blue cone at (15, 37)."], [objs])
    assert swapped["on_target"] == 0.0 and swapped["x_error"] == 40.0
    assert score_captions(["the blue cone at (15, 37)."], [objs])["on_target"] == 0.5


def test_referring_queries_point_at_the_named_object(tmp_path):
    from experiments import nano_pretrain

    tasks = nano.PRESETS["smoke"][1].tasks
    kw = nano.env_kwargs(tasks, frame="spatial")
    recs = nano_pretrain.caption_shard(nano.SPATIAL, kw, list(range(6)), tmp_path, referring=1.0)
    kinds = {r["messages"][0]["content"] for r in recs}
    assert kinds <= {nano_pretrain.PROMPT_POINT, nano_pretrain.PROMPT_CAPTION}
    queries = [r for r in recs if r["messages"][0]["content"] == nano_pretrain.PROMPT_POINT]
    assert len(queries) >= 4  # only a scene without a uniquely named object keeps its caption
    for r in queries:
        name = r["messages"][1]["content"].removeprefix("<image>Point at ").removesuffix(".")
        box = next(b for n, b in r["objects"] if n == name)
        assert [n for n, _ in r["objects"]].count(name) == 1
        target = r["messages"][2]["content"]
        x, y = map(int, re.fullmatch(rf"{name} at \((\d+), (\d+)\)\.", target).groups())
        assert box[0] <= x <= box[2] and box[1] <= y <= box[3]
    # the share is drawn per scene index: the same records whatever the sharding
    again = nano_pretrain.caption_shard(nano.SPATIAL, kw, [3, 1], tmp_path, referring=1.0)
    assert [r["messages"] for r in again] == [recs[3]["messages"], recs[1]["messages"]]
    none = nano_pretrain.caption_shard(nano.SPATIAL, kw, [0, 1], tmp_path)
    assert all(r["messages"][0]["content"] == nano_pretrain.PROMPT_CAPTION for r in none)

"""The benchmark runner end to end on the procedural suite: table, CIs, resume, picture."""

import json

from benchmarks.run import Args, main


def test_runner_writes_summary_resumes_and_draws(tmp_path):
    args = Args(
        envs=("ViGoRL/SynthSpatial-v0", "ViGoRL/SynthWebAction-v0"),
        episodes=4,
        out=tmp_path,
        picture=True,
    )
    summary = main(args)
    rows = {(r["env_id"], r["policy"]): r for r in summary["rows"]}
    assert len(rows) == 4 and all(r["n"] == 4 for r in rows.values())
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 16
    rec = json.loads(lines[0])
    assert {
        "sample_id",
        "transcript",
        "score",
        "components",
        "end_reason",
        "turns",
        "frame",
    } <= set(rec)
    # random zoom really zoomed, in multi-turn mode
    zoom = [json.loads(x) for x in lines if json.loads(x)["policy"] == "random_zoom"]
    assert all("<tool_call>" in r["transcript"] and r["turns"] >= 2 for r in zoom)
    # baselines follow the protocol: full format credit on single-turn spatial
    st = [
        json.loads(x)
        for x in lines
        if json.loads(x)["policy"] == "full_view_guess"
        and json.loads(x)["env_id"] == "ViGoRL/SynthSpatial-v0"
    ]
    assert all(r["components"]["format"] == 1.0 for r in st)
    # resume: nothing is re-run
    main(Args(envs=args.envs, episodes=4, out=tmp_path, picture=False))
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 16
    assert (tmp_path / "episodes.png").stat().st_size > 10_000
    assert "±" in (tmp_path / "table.md").read_text()

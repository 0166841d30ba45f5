"""One parser for env make kwargs on every command line, and quiet library logging.

Regression: `--eval.env-kwargs` was a fixed pair of typed sub-flags in experiments/eval.py's debug
preset (so `mode multi_turn`, which --help listed for the paper preset, was rejected there) and
free-form elsewhere; benchmarks/run.py's dict field did not reach the command line at all."""

from __future__ import annotations

import logging

import pytest
import tyro

from vigorl_agents.cli import format_env_kwargs, parse_env_kwargs, setup_logging

EXPECTED = {
    "mode": "multi_turn",
    "max_pixels": 1003520,
    "draw_dot": True,
    "max_side": None,
    "diversity_bonus": 0.25,
    "reward_weights": {"accuracy": 0.7, "format": 0.3},
    "data_root": "/data/vigorl",
}
TOKENS = [
    "mode=multi_turn",
    "max_pixels=1003520",
    "draw_dot=true",
    "max_side=null",
    "diversity_bonus=0.25",
    'reward_weights={"accuracy": 0.7, "format": 0.3}',
    "data_root=/data/vigorl",
]


def test_values_are_typed_and_both_spellings_agree():
    assert parse_env_kwargs(TOKENS) == EXPECTED
    pairs = [x for t in TOKENS for x in t.split("=", 1)]  # KEY VALUE KEY VALUE ...
    assert parse_env_kwargs(pairs) == EXPECTED
    assert parse_env_kwargs(["max_side=None", "draw_dot=False"]) == {
        "max_side": None,
        "draw_dot": False,
    }
    assert parse_env_kwargs(format_env_kwargs(EXPECTED)) == EXPECTED  # --help shows parseable text


def test_unknown_keys_and_missing_values_are_refused():
    with pytest.raises(ValueError, match=r"unknown env kwarg 'max_pixel'.*max_pixels"):
        parse_env_kwargs(["max_pixel=5"])
    with pytest.raises(ValueError, match="'mode' has no value"):
        parse_env_kwargs(["mode"])


@pytest.mark.parametrize("preset", ["debug", "paper"])
@pytest.mark.parametrize(
    "spelling", [["mode=multi_turn", "crop_size=336"], ["mode", "multi_turn", "crop_size", "336"]]
)
def test_experiments_eval_presets_take_the_same_env_kwargs(preset, spelling):
    from experiments.eval import PRESETS

    args = tyro.extras.overridable_config_cli(
        PRESETS, args=[preset, "--eval.env-kwargs", *spelling, "--policy.request-timeout-s", "7"]
    )
    assert args.eval.env_kwargs == {"mode": "multi_turn", "crop_size": 336}
    assert args.policy.request_timeout_s == 7.0 and args.policy.max_retries == 3
    assert tyro.extras.overridable_config_cli(PRESETS, args=[preset]).eval.env_kwargs == {}


def test_benchmark_runner_takes_the_same_env_kwargs():
    from benchmarks.run import Args

    args = tyro.cli(Args, args=["--env-kwargs", "mode=multi_turn", "max_side=null", "-v"])
    assert args.env_kwargs == {"mode": "multi_turn", "max_side": None} and args.verbose


def test_a_bad_env_kwarg_is_a_clean_cli_error(capsys):
    from experiments.eval import PRESETS

    with pytest.raises(SystemExit):
        tyro.extras.overridable_config_cli(PRESETS, args=["debug", "--eval.env-kwargs", "mod=x"])
    assert "unknown env kwarg 'mod'" in capsys.readouterr().err


def test_library_noise_is_silenced_unless_verbose():
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup_logging(verbose=False)
        assert logging.getLogger("vigorl_agents.eval").isEnabledFor(logging.INFO)
        for noisy in ("matplotlib.font_manager", "httpx", "transformers.modeling_utils"):
            assert not logging.getLogger(noisy).isEnabledFor(logging.INFO), noisy
        setup_logging(verbose=True)
        assert logging.getLogger("matplotlib.font_manager").isEnabledFor(logging.INFO)
        assert logging.getLogger("vigorl_agents.eval").isEnabledFor(logging.DEBUG)
    finally:
        for name in ("matplotlib", "PIL", "httpx", "httpcore", "urllib3", "filelock", "fsspec",
                     "asyncio", "transformers", "huggingface_hub"):  # fmt: skip
            logging.getLogger(name).setLevel(logging.NOTSET)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]

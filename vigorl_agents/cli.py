"""Command-line pieces shared by `experiments/eval.py`, `benchmarks/run.py` and the demo.

* `parse_env_kwargs` / `EnvKwargs`: the one way env make kwargs are given on a command line
  (`--eval.env-kwargs mode=multi_turn max_pixels=1003520`), whatever the preset. A dict-typed field
  left to tyro became a fixed set of typed sub-flags in a preset that set some keys (the debug
  preset accepted only `max-pixels` and `crop-size`) and a free-form `KEY VALUE` list in one that set
  none, so the same flag took different arguments per preset; `EnvKwargs` makes tyro hand every
  preset's tokens to this parser instead.
* `setup_logging`: INFO logging for our own modules, with the noise of libraries (matplotlib's
  font cache, httpx request lines, transformers' weight-loading bars) silenced unless verbose.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Annotated, Any

import tyro

__all__ = ["EnvKwargs", "format_env_kwargs", "parse_env_kwargs", "setup_logging"]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PY_WORDS = {"None": None, "True": True, "False": False}


@cache
def env_kwarg_names() -> frozenset[str]:
    """Every make kwarg an env accepts (docs/envs.md#make-kwargs), plus `data_root` and the
    browser envs' own (docs/web.md)."""
    from vigorl_env.config import build_config
    from vigorl_env.registration import WEB_MAKE_KWARGS

    names = set(inspect.signature(build_config).parameters) - {"benchmark"}
    return frozenset(names | {"data_root"} | WEB_MAKE_KWARGS)


def _value(text: str) -> Any:
    """JSON when it parses (numbers, true/false/null, lists, objects, "quoted strings"), the Python
    spellings None/True/False, else the text itself as a string (`mode=multi_turn`)."""
    if text in _PY_WORDS:
        return _PY_WORDS[text]
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_env_kwargs(tokens: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` tokens (or `KEY VALUE` pairs) → make kwargs, values typed by `_value`.

    Keys must be env make kwargs; an unknown one is a `ValueError` listing the known ones (a typo
    would otherwise fail later, inside gym.make, or silently change nothing)."""
    out: dict[str, Any] = {}
    tokens = list(tokens)
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        key, eq, rest = tok.partition("=")
        if eq and _KEY.fullmatch(key):
            value_text = rest
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ValueError(f"env kwarg {tok!r} has no value: write {tok}=VALUE")
            key, value_text = tok, tokens[i + 1]
            i += 2
        if key not in env_kwarg_names():
            raise ValueError(
                f"unknown env kwarg {key!r}; known: {', '.join(sorted(env_kwarg_names()))} "
                "(see docs/envs.md#make-kwargs)"
            )
        out[key] = _value(value_text)
    return out


def format_env_kwargs(kwargs: Mapping[str, Any]) -> list[str]:
    """The `KEY=VALUE` tokens that `parse_env_kwargs` turns back into `kwargs` (for --help)."""
    return [
        f"{k}={v}" if isinstance(v, str) and _value(v) == v else f"{k}={json.dumps(v, default=str)}"
        for k, v in kwargs.items()
    ]


EnvKwargs = Annotated[
    dict[str, Any],
    tyro.constructors.PrimitiveConstructorSpec(
        nargs="*",
        metavar="KEY=VALUE",
        instance_from_str=parse_env_kwargs,
        is_instance=lambda x: isinstance(x, dict),
        str_from_instance=format_env_kwargs,
    ),
]
"""A dict of env make kwargs that tyro reads with `parse_env_kwargs` in every preset."""


_NOISY = ("matplotlib", "PIL", "httpx", "httpcore", "urllib3", "filelock", "fsspec", "asyncio")


def setup_logging(verbose: bool = False) -> None:
    """INFO logging (DEBUG if verbose) for our modules; libraries' chatter only when verbose.

    Quiet means: the loggers in `_NOISY` at WARNING, transformers and huggingface_hub at ERROR with
    their progress bars (weight loading, downloads) off. Environment variables are set too, so a
    library imported later (or a child process such as a vLLM server) starts quiet."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    for name in ("transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:  # already imported: its own switches (env variables are read at import)
        import sys

        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        if "huggingface_hub" in sys.modules:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
    except ImportError:  # pragma: no cover - optional libraries
        pass

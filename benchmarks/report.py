"""Write a benchmark's result: the Markdown table (title, the command that produced it) and the
same numbers as JSON beside it (`<out>.json`). One place for what every benchmark commits."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any


def write_results(
    out: Path | None,
    *,
    title: str,
    module: str,
    table: str,
    result: dict[str, Any],
    runner: str = "python",
) -> None:
    """`out` (nothing if None) gets `# title`, the command line (`runner -m module` + this
    process's arguments) and `table`; `out.with_suffix(".json")` gets `result`."""
    if out is None:
        return
    command = shlex.join([*runner.split(), "-m", module, *sys.argv[1:]])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {title}\n\nCommand: `{command}`\n\n{table}\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")

"""Name the machine a result was measured on (every committed table says where it ran)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine_name() -> str:
    """CPU model and core count (the result tables name the machine they ran on)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()}"

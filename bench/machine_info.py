"""What machine a benchmark ran on: one helper for every bench script's header line."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """1-minute load average, as text ("?" when unknown)."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "?"

"""What machine a number was measured on: benchmarks and the reproduction report name it."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict:
    """CPU model, logical cores, torch version and threads, GPU (or None), Python, platform."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def machine_description() -> str:
    """One line: 'AMD EPYC ..., 2 logical cores, no GPU; torch 2.13.0+cpu (2 threads), Python 3.11.7'."""
    info = machine_info()
    return (f"{info['cpu']}, {info['cores']} logical cores, {info['gpu'] or 'no GPU'}; "
            f"torch {info['torch']} ({info['threads']} threads), Python {info['python']}")

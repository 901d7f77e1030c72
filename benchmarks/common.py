"""Shared bits of the benchmark scripts: the environment header and result files."""
from __future__ import annotations

import datetime
import os
import platform
import statistics
from pathlib import Path

import torch
import torchvision

import ssnfx

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> str:
    """One line: machine, versions, threads and date, for every results file."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, torchvision "
            f"{torchvision.__version__}, ssnfx {ssnfx.__version__}, "
            f"{torch.get_num_threads()} threads, {datetime.date.today().isoformat()}")


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}"
    mean, std = statistics.mean(values) * scale, statistics.stdev(values) * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def write(name: str, title: str, body: str, command: str) -> Path:
    """Write ``results/<name>.md`` with the environment and the command that produced it."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(f"## {title}\n\n`{command}`: {environment()}\n\n{body}\n")
    return path

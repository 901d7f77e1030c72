"""Each benchmark script's --quick mode runs, so the scripts cannot rot."""
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,expect", [("bench_compile", "| resnet18 |"),
                                         ("bench_search", "Search cost"),
                                         ("bench_digits", "reduced baseline"),
                                         ("bench_accuracy", "| 25% | reduced baseline"),
                                         ("bench_speed", "| WRN-16-1, batch 8 | 10% |"),
                                         ("bench_memory", "| resnet18 | 2 | 10% |"),
                                         ("bench_ensemble", "| independent 3/4 |"),
                                         ("bench_distill", "| ssnfx 4x, one store | ✓ |")])
def test_quick_mode(name, expect):
    body = _load(name).main(["--quick"])
    assert expect in body

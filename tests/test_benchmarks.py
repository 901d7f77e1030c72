"""Each benchmark script's --quick mode runs, so the scripts cannot rot."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,expect", [("bench_compile", "| resnet18 |"),
                                         ("bench_search", "Search cost"),
                                         ("bench_digits", "reduced baseline"),
                                         ("bench_accuracy", "| 25% | reduced baseline"),
                                         ("bench_speed", "| WRN-16-1, batch 8 | 10% |"),
                                         ("bench_memory", "| resnet18 | 2 | default | 10% |"),
                                         ("bench_ensemble", "| independent 3/4 |"),
                                         ("bench_distill", "| ssnfx 4x, one store | ✓ |"),
                                         ("bench_forms", "| SmallCNN-like, batch 8 | 10% |"),
                                         ("bench_lm", "| depth | "),
                                         ("bench_tile", "| 32 | "),
                                         ("bench_conflict", "| oracle | ")])
def test_quick_mode(name, expect):
    body = _load(name).main(["--quick"])
    assert expect in body
    if name in FASHION:  # the full set where present, else the tests' sample; it says which
        assert "Data: " in body and "Fashion-MNIST" in body


FASHION = ("bench_search", "bench_accuracy", "bench_ensemble", "bench_distill")


def test_fashion_data_is_the_sample_only_in_quick_runs(tmp_path, monkeypatch):
    common = _load("common")
    monkeypatch.setenv("SSNFX_FASHION_MNIST", str(tmp_path / "hidden"))
    assert common.fashion_data(quick=True) == common.SAMPLE
    assert "the tests' 1.3 MB sample" in common.data_note(common.SAMPLE)
    with pytest.raises(SystemExit) as info:  # a full run: one line, both ways to get the data
        common.fashion_data(quick=False)
    message = str(info.value)
    assert "\n" not in message and "apt-get install -y dataset-fashion-mnist" in message
    assert "FashionMNIST(DIR, download=True)" in message
    monkeypatch.setenv("SSNFX_FASHION_MNIST", str(common.SAMPLE.parent))
    with pytest.raises(SystemExit):  # the sample's folder is no full set either
        common.fashion_data(quick=False)

"""The README: short, its snippets run as written (tests/snippets.py), and its results come from
the benchmarks' output."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from snippets import LANGUAGES, ROOT, blocks, run_commands, run_python

README = ROOT / "README.md"


def test_readme_is_read_in_five_minutes():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150
    quickstart = next(b for b in blocks(README) if b.language == "python")
    assert len(quickstart.code.strip().splitlines()) <= 12
    assert all(b.language in LANGUAGES for b in blocks(README))


def test_readme_layout_is_the_tree():
    layout = next(b.code for b in blocks(README) if b.language == "text" and "passes/" in b.code)
    folders = [line.split()[0] for line in layout.strip().splitlines()]
    assert all((ROOT / f).is_dir() for f in folders)
    # every package inside ssnfx/ is named (as a folder or in a description)
    packages = {p.name for p in (ROOT / "ssnfx").iterdir() if (p / "__init__.py").is_file()}
    assert all(f"{name}/" in layout for name in packages), packages


def test_readme_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope = run_python(README, zoo=False)
    assert isinstance(scope["folded"], type(scope["model"]))
    assert (tmp_path / "resnet18.pt2").stat().st_size > 0


@pytest.mark.zoo
def test_readme_snippets_run_with_the_zoo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python(README, zoo=True)
    assert (tmp_path / "gpt2-folded" / "config.json").is_file()


def test_readme_command_line_runs(tmp_path):
    run_commands(README, tmp_path)
    out = tmp_path / "out" / "digits"
    assert (out / "shared.safetensors").is_file() and (out / "model.pt2").is_file()
    assert (out / "sharing.png").read_bytes()[:4] == b"\x89PNG"


def test_results_are_the_benchmarks_output():
    """The table and picture, and docs/results.md, are what benchmarks/summary.py makes from
    benchmarks/results/ now: nothing typed by hand, nothing stale."""
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "summary.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    text = README.read_text()
    table = text.split("<!-- results:", 1)[1].split("<!-- /results -->", 1)[0]
    assert re.search(r"seeds 0-\d", table) and re.search(r"\d{4}-\d{2}-\d{2}", table)
    assert "EPYC" in table or "cores" in table  # the machine
    assert "(docs/assets/accuracy_budget.png)" in table

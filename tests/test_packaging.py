"""The built wheel installs the passes as ssnfx.passes (setuptools package_dir), as the card's
layout says: passes/ at the top of the repository, ssnfx.passes once installed."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_holds_the_passes_under_ssnfx(tmp_path):
    # From a copy without build outputs: setuptools builds in the source tree, and a stale
    # build/ would put files in the wheel that the sources no longer have.
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", ".hypothesis", "out", "benchmarks",
        "tests"))
    # No build isolation: the build needs setuptools only, which the test environment has, and
    # nothing is fetched.
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)], check=True,
                   capture_output=True, text=True, timeout=300)
    wheel, = tmp_path.glob("ssnfx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every module of the three layers, the passes under ssnfx/passes/.
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ssnfx").rglob("*.py")}
    tree |= {"ssnfx/" + p.relative_to(ROOT).as_posix() for p in (ROOT / "passes").rglob("*.py")}
    assert "ssnfx/passes/tracing.py" in tree and "ssnfx/core/plan.py" in tree
    assert {n for n in names if n.endswith(".py")} == tree
    # Nothing outside the package: no top-level passes/, tests or benchmarks.
    assert not [n for n in names if n.split("/")[0] in ("passes", "tests", "benchmarks")]
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ssnfx = ssnfx.cli:run" in zipfile.ZipFile(wheel).read(entry).decode()

"""The layers (pyproject.toml's import-linter contracts): they hold on the tree, and they catch an
upward import and an import circle.

import-linter reads an installed layout, where the checkout's ``passes/`` is ``ssnfx/passes/``;
each check runs on such a copy of the tree, so that a test can break it without touching ours.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def lint(tmp_path: Path, edit: tuple[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``lint-imports`` on a copy of the installed layout, with ``edit`` = (file under the
    copy's ``ssnfx/``, a line to add at its end) applied first."""
    shutil.copytree(ROOT / "ssnfx", tmp_path / "ssnfx",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "passes", tmp_path / "ssnfx" / "passes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    if edit is not None:
        target = tmp_path / "ssnfx" / edit[0]
        target.write_text(target.read_text() + "\n" + edit[1] + "\n")
    # (lint-imports' entry point, run by this interpreter wherever pip put the script)
    command = "from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run([sys.executable, "-c", command, "--no-cache"], cwd=tmp_path,
                          capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})


def test_the_tree_keeps_its_layers(tmp_path):
    result = lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("edit,broken,culprit", [
    # the core importing a pass
    (("core/errors.py", "import ssnfx.passes.tracing"), "over the core BROKEN",
     "ssnfx.core.errors -> ssnfx.passes.tracing"),
    # a pass importing the API
    (("passes/folding.py", "from ssnfx.api import share"), "over the core BROKEN",
     "ssnfx.passes.folding -> ssnfx.api"),
    # a circle inside the core: the plan's records importing the plan
    (("core/slots.py", "from ssnfx.core.plan import SharingPlan"), "circle among the modules",
     ".slots -> .plan"),
])
def test_a_broken_layer_fails(tmp_path, edit, broken, culprit):
    result = lint(tmp_path, edit)
    assert result.returncode == 1, result.stdout + result.stderr
    assert broken in result.stdout and culprit in result.stdout, result.stdout


def test_every_top_level_module_is_in_the_top_layer():
    # A module the contract does not name is not checked: each one must be named.
    top = set(CONTRACTS["contracts"][0]["layers"][0].replace(" ", "").split(":"))
    here = {f"ssnfx.{p.stem}" for p in (ROOT / "ssnfx").glob("*.py") if p.stem != "__init__"
            and p.stem != "__main__"}
    here |= {f"ssnfx.{p.name}" for p in (ROOT / "ssnfx").iterdir()
             if (p / "__init__.py").is_file() and p.name != "core"}
    assert top == here


def test_no_module_rewrites_the_import_system():
    # Our modules are found and bound by plain imports: no module of ours put in sys.modules by
    # hand, no module's class swapped, no finder added. (Loading a user's model file registers
    # that file's module, as importlib's recipe for importing a source file does.)
    for path in [*(ROOT / "ssnfx").rglob("*.py"), *(ROOT / "passes").rglob("*.py")]:
        where = path.relative_to(ROOT)
        for node in ast.walk(ast.parse(path.read_text())):
            text = ast.unparse(node) if isinstance(node, (ast.Assign, ast.Call)) else ""
            assert "sys.modules[__name__]" not in text and "sys.meta_path" not in text, \
                f"{where}:{node.lineno}: {text}"

"""The code blocks of a Markdown page, and running them as a reader would (tests/test_readme.py,
tests/test_docs.py).

A page's ``python`` blocks run in order in one namespace, as a reader pastes them one after
another. Blocks that import ``transformers`` or ``timm`` need the zoo extra: they run with the
zoo (``pytest -m zoo``), the other blocks of their page in every run. ``bash`` blocks are
commands: ``ssnfx ...`` lines run as the console script, ``pip ...`` lines are the installation
(what .ci/run itself runs). ``text`` blocks are not code (diagrams, usage synopses, equations).
"""
from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Imports that need the zoo extra (pip install -e '.[zoo]').
ZOO = re.compile(r"^\s*(?:import|from)\s+(?:[\w, ]*\b)?(transformers|timm)\b", re.M)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
#: The fenced languages a page may use: code that runs, commands, and text that is not code.
LANGUAGES = {"python", "bash", "text"}


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # where the block's code starts in its page (1-based)

    @property
    def zoo(self) -> bool:
        return bool(ZOO.search(self.code))


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2)
            for m in FENCE.finditer(text)]


@contextlib.contextmanager
def registries_restored() -> Iterator[None]:
    """What a page registers (a combiner, an export format) is gone after it, as for a reader
    whose Python exits: the registries are the process's, and other tests count them."""
    from ssnfx.core.combiners import COMBINER_REGISTRY
    from ssnfx.core.grouping import STRATEGIES
    from ssnfx.core.layer_kinds import LAYER_KINDS
    from ssnfx.core.methods import METHOD_REGISTRY
    from ssnfx.deploy import EXPORT_FORMATS

    registries = (COMBINER_REGISTRY, EXPORT_FORMATS, STRATEGIES, LAYER_KINDS, METHOD_REGISTRY)
    saved = [dict(r) for r in registries]
    try:
        yield
    finally:
        for registry, before in zip(registries, saved):
            registry.clear()
            registry.update(before)


def run_python(page: Path, zoo: bool) -> dict:
    """Run the page's python blocks in order in one namespace (with the zoo's, or without
    them); returns the namespace. The current folder should be a fresh one: blocks write files."""
    scope: dict = {"__name__": "__snippet__"}
    with registries_restored():
        for block in blocks(page):
            if block.language != "python" or (block.zoo and not zoo):
                continue
            # Line numbers of a failure point into the page.
            code = "\n" * (block.line - 1) + block.code
            exec(compile(code, str(page), "exec"), scope)
    return scope


def commands(page: Path) -> list[str]:
    """The page's ``ssnfx`` command lines (bash blocks), in order."""
    return [line.strip() for b in blocks(page) if b.language == "bash"
            for line in b.code.splitlines() if line.strip().startswith("ssnfx ")]


def run_commands(page: Path, cwd: Path) -> None:
    """Run the page's ``ssnfx`` lines in ``cwd`` (which sees the checkout's examples/)."""
    (cwd / "examples").symlink_to(ROOT / "examples")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for line in commands(page):
        args = shlex.split(line.split("#", 1)[0])[1:]
        run = subprocess.run([sys.executable, "-m", "ssnfx", *args], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"{page.name}: {line}\n{run.stdout}\n{run.stderr}"

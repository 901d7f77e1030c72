"""Every snippet of the documentation site (docs/) runs as written (see tests/snippets.py), and
the site's generated pages are up to date."""
from __future__ import annotations

import pytest

from snippets import LANGUAGES, ROOT, blocks, commands, run_commands, run_python

PAGES = sorted((ROOT / "docs").rglob("*.md"))


def _id(page) -> str:
    return str(page.relative_to(ROOT / "docs"))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_blocks_are_code_that_runs_or_text(page):
    for block in blocks(page):
        assert block.language in LANGUAGES, f"{_id(page)}:{block.line}: ```{block.language}"
        if block.language == "bash":  # install commands or ssnfx commands, nothing else
            for line in block.code.strip().splitlines():
                assert line.startswith(("pip ", "ssnfx ", "python -m pytest", "mkdocs ",
                                        "python benchmarks/")), f"{_id(page)}: {line}"


@pytest.mark.parametrize("page", [p for p in PAGES
                                  if any(b.language == "python" for b in blocks(p))], ids=_id)
def test_python_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python(page, zoo=False)


@pytest.mark.zoo
@pytest.mark.parametrize("page", [p for p in PAGES if any(b.zoo for b in blocks(p))], ids=_id)
def test_python_snippets_run_with_the_zoo(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_python(page, zoo=True)


@pytest.mark.parametrize("page", [p for p in PAGES if commands(p)], ids=_id)
def test_command_line_snippets_run(page, tmp_path):
    run_commands(page, tmp_path)

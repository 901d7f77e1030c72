"""griffe extensions for the API reference (mkdocs.yml names this file).

* The checkout's ``passes/`` folder is the package ``ssnfx.passes`` (setuptools ``package_dir``
  maps it so when installing), which griffe, reading the sources, would not find under
  ``ssnfx/``.
* The docstrings are written for Python's ``help`` and for doctest: an ``Example:`` section of
  ``>>>`` lines, Sphinx roles (``:func:`ssnfx.load```). griffe's Google style reads the section
  as ``Examples:`` (code, not Markdown), and the roles become code spans.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parents[2]
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


class PassesAsSsnfxPasses(griffe.Extension):
    """Load ``passes/`` and attach it to ``ssnfx`` as its submodule ``passes``."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader,
                   **kwargs: Any) -> None:
        if pkg.name != "ssnfx" or "passes" in pkg.members:
            return
        passes = griffe.load(ROOT / "passes", search_paths=[str(ROOT)],
                             docstring_parser=loader.docstring_parser,
                             docstring_options=loader.docstring_options,
                             extensions=griffe.load_extensions(DocstringsForMarkdown))
        pkg.set_member("passes", passes)


class DocstringsForMarkdown(griffe.Extension):
    """``Example:`` as an Examples section, Sphinx roles as code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)

"""Where ``ssnfx.passes`` comes from.

The passes live in the repository's top-level ``passes/`` folder and install as ``ssnfx.passes``
(setuptools ``package_dir``): a wheel holds ``ssnfx/passes/``, an editable install maps the name
to the folder. A source checkout used without installing (its root on ``PYTHONPATH``) has
neither; there the folder beside this package is ``ssnfx.passes``, so that a checkout always
runs its own passes, never those of an ssnfx installed elsewhere.

The folder is only made findable here, not imported: the passes import torch, and ``import
ssnfx`` (``ssnfx --help``) does not.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["find_passes"]


class _PassesFinder(importlib.abc.MetaPathFinder):
    """Finds ``ssnfx.passes`` in a checkout's ``passes/`` folder (its submodules are then found
    through the package's ``__path__``, as any package's are)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ssnfx.passes":
            return None
        return importlib.util.spec_from_file_location(
            fullname, os.path.join(self.folder, "__init__.py"),
            submodule_search_locations=[self.folder])


def find_passes() -> None:
    """Make the checkout's ``passes/`` the module ``ssnfx.passes`` where the package lacks one."""
    here = os.path.dirname(os.path.abspath(__file__))
    beside = os.path.join(os.path.dirname(here), "passes")
    if os.path.isdir(os.path.join(here, "passes")) or "ssnfx.passes" in sys.modules \
            or not os.path.isfile(os.path.join(beside, "__init__.py")):
        return  # a wheel install, or passes imported already, or not a checkout
    if not any(isinstance(f, _PassesFinder) for f in sys.meta_path):
        # First, ahead of an editable install's finder or another ssnfx on sys.path.
        sys.meta_path.insert(0, _PassesFinder(beside))


find_passes()

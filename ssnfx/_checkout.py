"""Where ``ssnfx.passes`` comes from.

The passes live in the repository's top-level ``passes/`` folder and install as ``ssnfx.passes``
(setuptools ``package_dir``): a wheel holds ``ssnfx/passes/``, an editable install maps the name
to the folder. A source checkout used without installing (its root on ``PYTHONPATH``) has
neither; there the folder beside this package is ``ssnfx.passes``, so that a checkout always
runs its own passes, never those of an ssnfx installed elsewhere.
"""
from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["find_passes"]


def find_passes() -> None:
    """Register the checkout's ``passes/`` as ``ssnfx.passes`` where the package lacks one."""
    here = os.path.dirname(os.path.abspath(__file__))
    beside = os.path.join(os.path.dirname(here), "passes")
    if os.path.isdir(os.path.join(here, "passes")) or "ssnfx.passes" in sys.modules \
            or not os.path.isfile(os.path.join(beside, "__init__.py")):
        return  # a wheel install, or passes imported already, or not a checkout
    spec = importlib.util.spec_from_file_location(
        "ssnfx.passes", os.path.join(beside, "__init__.py"), submodule_search_locations=[beside])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ssnfx.passes"] = module
    spec.loader.exec_module(module)
    sys.modules["ssnfx"].passes = module  # as the import system does for a submodule


find_passes()

"""The passes' docstring examples run. The passes live in the top-level ``passes/`` folder and
install as ``ssnfx.passes``, so they are imported under that name here; ``--doctest-modules``
over the folder would import them a second time as a package named ``passes``."""
import doctest
import importlib
import pkgutil

import pytest

import ssnfx.passes

MODULES = sorted(m.name for m in pkgutil.iter_modules(ssnfx.passes.__path__))


def test_every_pass_is_here():
    assert {"tracing", "searching", "planner", "rewriting", "folding", "refining",
            "members"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"ssnfx.passes.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed"
    if name in ("tracing", "searching", "planner", "rewriting", "folding", "refining", "members"):
        assert result.attempted > 0, f"ssnfx.passes.{name} has no runnable example"

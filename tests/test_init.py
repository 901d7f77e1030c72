"""ssnfx's top level (ssnfx/__init__.py): the pipeline, its configs and plan types, the errors;
nothing else public, and no module named as a function."""
import importlib
import importlib.util
import types

import pytest

import ssnfx
import ssnfx.passes

TOP_LEVEL = {
    "share", "trace", "search", "make_plan", "rewrite", "fold", "refine", "save", "load",
    "export", "report", "summary",
    "ShareConfig", "SearchConfig", "SharingPlan", "GroupPlan", "Slot", "PLAN_VERSION",
    "RefineResult",
    "SsnfxError", "TraceError", "BudgetError", "PlanError", "SearchError", "CheckpointError",
    "ExportError", "EnsembleError",
    "__version__",
}


def test_the_top_level_is_the_pipeline():
    assert set(ssnfx.__all__) == TOP_LEVEL and len(ssnfx.__all__) == len(TOP_LEVEL)
    namespace = {}
    exec("from ssnfx import *", namespace)
    assert TOP_LEVEL <= set(namespace)
    assert callable(ssnfx.export) and callable(ssnfx.report)  # the functions, not the modules


def test_no_module_is_named_as_a_function():
    # `import ssnfx.x` binds the module x on its package, over a function x read from there.
    for package in (ssnfx, ssnfx.passes):
        for name in package.__all__:
            if callable(getattr(package, name)):
                assert importlib.util.find_spec(f"{package.__name__}.{name}") is None, name


def test_the_public_names_are_all():
    # Read every public name (each imports its module), then: nothing public beyond __all__
    # but the submodules that those imports bind.
    for name in ssnfx.__all__:
        getattr(ssnfx, name)
    extra = {k for k, v in vars(ssnfx).items() if not k.startswith("_") and k not in
             ssnfx.__all__ and not (isinstance(v, types.ModuleType)
                                    and v.__name__ == f"ssnfx.{k}")}
    assert not extra


def test_unknown_names_and_the_modules():
    with pytest.raises(AttributeError, match="module 'ssnfx' has no attribute 'nonesuch'"):
        ssnfx.nonesuch
    for module in ("anytime", "distill", "ensemble", "lsm", "deploy", "core", "passes"):
        assert getattr(ssnfx, module).__name__ == f"ssnfx.{module}"  # after `import ssnfx` alone
    # Member extraction is a pass; ssnfx.ensemble, where users look for it, re-exports it.
    for name in ("member", "member_names", "select_members"):
        assert getattr(ssnfx.ensemble, name) is getattr(ssnfx.passes, name)


def test_the_top_level_is_imported_on_first_use():
    """`import ssnfx` imports no torch (the command line's --help answers at once); the first
    name read imports its module, and the names a type checker or the API reference read (the
    TYPE_CHECKING imports) are the ones imported at run time."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, ssnfx; print('torch' in sys.modules); ssnfx.share; "
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.stdout.split() == ["False", "True"], run.stderr
    tree = ast.parse(Path(ssnfx.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If)
                 and getattr(n.test, "id", "") == "_TYPE_CHECKING")
    static = {a.asname or a.name: node.module for node in block.body
              for a in node.names}
    assert static == {name: f"ssnfx.{module}" for name, module in ssnfx._PUBLIC.items()}
    assert set(static) | {"__version__"} == TOP_LEVEL

"""ssnfx's top level (ssnfx/__init__.py): the pipeline, its configs and plan types, the errors;
every name that moved to a submodule says where it went."""
import importlib

import pytest
import torch

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


@pytest.mark.parametrize("name", sorted(ssnfx._MOVED))
def test_a_moved_name_says_where_it_went(name):
    module = ssnfx._MOVED[name]
    new = "initialize" if name == "reset_parameters" else name
    with pytest.raises(AttributeError, match=rf"^ssnfx\.{name} moved: use "
                                             rf"ssnfx\.{module}\.{new} \(from ssnfx\.{module} "
                                             rf"import {new}\)$"):
        getattr(ssnfx, name)
    assert name not in ssnfx.__all__
    namespace = {}
    exec(f"from ssnfx.{module} import {new}", namespace)  # and it is there
    assert namespace[new] is getattr(importlib.import_module(f"ssnfx.{module}"), new)


def test_unknown_names_and_the_modules():
    with pytest.raises(AttributeError, match="module 'ssnfx' has no attribute 'nonesuch'"):
        ssnfx.nonesuch
    for module in ("anytime", "distill", "ensemble", "lsm", "combiners", "config", "passes"):
        assert getattr(ssnfx, module).__name__ == f"ssnfx.{module}"  # after `import ssnfx` alone
    # Member extraction is a pass; ssnfx.ensemble, where users look for it, re-exports it.
    for name in ("member", "member_names", "select_members"):
        assert getattr(ssnfx.ensemble, name) is getattr(ssnfx.passes, name)


def test_the_ensemble_module_is_not_the_function():
    folded = ssnfx.fold(ssnfx.share([torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)], 0.5))
    with pytest.raises(TypeError, match=r"ssnfx\.ensemble is the module: call "
                                        r"ssnfx\.ensemble\.ensemble\(model, names\)"):
        ssnfx.ensemble(folded)
    probs = ssnfx.ensemble.ensemble(folded)(torch.randn(2, 8))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


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
                 and getattr(n.test, "id", "") == "TYPE_CHECKING")
    static = {a.asname or a.name: node.module for node in block.body
              for a in node.names}
    assert static == ssnfx._PUBLIC
    assert set(static) | {"__version__"} == TOP_LEVEL

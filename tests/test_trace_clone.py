"""A user's project in a folder named ``ssnfx``: a TraceError still names the user's own file.

A new user clones the repository into ``ssnfx`` and writes models there, so their files' paths
contain ``/ssnfx/``; the trace pass must tell ssnfx's own frames from theirs by the package's
folders, not by that substring. The test clones this repository the same way and traces an
untraceable model written inside the clone, with the installed ssnfx (the code under test) and
with the clone's own package (what that user runs).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

MODEL = '''\
import torch
import ssnfx


class Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value: torch.fx cannot trace it
            return self.fc(x)
        return x


try:
    ssnfx.trace(Branchy(), auto_leaves=False)  # the error, not an automatic leaf
except ssnfx.TraceError as e:
    print(ssnfx.__file__)
    print(e)
'''
BRANCH_LINE = 1 + MODEL.splitlines().index("        if x.sum() > 0:  # control flow on a tensor "
                                           "value: torch.fx cannot trace it")


def _clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    inside = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--show-toplevel"],
                            capture_output=True, text=True)
    if inside.returncode != 0 or Path(inside.stdout.strip()).resolve() != REPO:
        pytest.skip(f"{REPO} is not a git checkout")
    clone = tmp_path / "ssnfx"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    return clone


@pytest.mark.parametrize("package", ["installed", "clone"])
def test_trace_error_names_a_file_inside_a_folder_named_ssnfx(tmp_path, package):
    clone = _clone(tmp_path)
    if package == "installed":
        # Run from a folder without a package named ssnfx: the import finds the installed one.
        model = clone / "examples" / "branchy.py"
        env = {**os.environ, "PYTHONPATH": ""}
    else:
        # The script's own folder comes first on sys.path: the import finds the clone's package,
        # laid out as installed (its passes/ as ssnfx/passes/, as a wheel has it).
        shutil.copytree(clone / "passes", clone / "ssnfx" / "passes")
        model = clone / "branchy.py"
        env = {**os.environ, "PYTHONPATH": str(clone)}
    model.write_text(MODEL)
    out = subprocess.run([sys.executable, str(model)], capture_output=True, text=True,
                         cwd=model.parent, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    package_file, message = out.stdout.split("\n", 1)
    from_clone = Path(package_file).resolve().parent == (clone / "ssnfx").resolve()
    assert from_clone == (package == "clone"), package_file
    assert f"{model}:{BRANCH_LINE} (if x.sum() > 0:" in message, message

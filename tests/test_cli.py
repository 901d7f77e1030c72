"""Drive the real console script, as a user would."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ssnfx.checkpoint import read

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _plan(out: Path) -> dict:
    """The plan of a compile folder, as JSON: it lives in the checkpoint."""
    return read(out / "shared.pt")[0].to_dict()


def ssnfx(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ssnfx", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    out = ssnfx("compile", str(EXAMPLES / "digits_cnn.py"), "--budget", "0.1", "--epochs", "2",
                "-o", "out", cwd=work)
    assert out.returncode == 0, out.stderr
    return work, out


def test_compile_writes_plan_checkpoint_and_report(compiled):
    work, out = compiled
    assert sorted(p.name for p in (work / "out").iterdir()) == [
        "report.txt", "shared.pt", "source.json"]
    plan = _plan(work / "out")
    assert plan["budget"] == 5863 and plan["method"] == "ssn"
    assert "test accuracy" in out.stdout and "group" in out.stdout
    assert "searched 20 steps" in out.stdout and plan["hyper"]["strategy"] == "search"
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("fmt,load", [
    ("pt2", "torch.export.load(p).module()"), ("torchscript", "torch.jit.load(p)")])
def test_fold_exports_load_in_a_fresh_process(compiled, fmt, load):
    work, _ = compiled
    out = ssnfx("fold", "out", "--format", fmt, "-o", f"model.{fmt}", cwd=work)
    assert out.returncode == 0, out.stderr
    assert "reproduces the folded model" in out.stdout
    code = (f"import torch, warnings; warnings.simplefilter('ignore'); p = 'model.{fmt}'; "
            f"m = {load}; print(tuple(m(torch.randn(2, 1, 8, 8)).shape))")
    run = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True)
    assert run.stdout.strip() == "(2, 10)", run.stderr
    again = ssnfx("fold", "out", "--format", fmt, "-o", f"model.{fmt}", cwd=work)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr


def _on_a_terminal(*args: str, cwd: Path) -> str:
    """Run the console script with a pseudo-terminal (120 columns) as stdout and stderr."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "ssnfx", *args], cwd=cwd, env=env,
                            stdout=follower, stderr=follower)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=600) == 0, out
    return out.decode(errors="replace")


def test_progress_bars_on_a_terminal_only(compiled):
    work, _ = compiled
    shown = _on_a_terminal("fold", "out", "--format", "pt2", "-o", "bar.pt2", cwd=work)
    assert "ssnfx fold" in shown and "3/3" in shown and "export to pt2" in shown
    quiet = _on_a_terminal("fold", "out", "-q", "--force", "-o", "bar.pt2", cwd=work)
    assert "ssnfx fold" not in quiet and "3/3" not in quiet
    piped = ssnfx("fold", "out", "--force", "-o", "bar.pt2", cwd=work)
    assert piped.returncode == 0 and "3/3" not in piped.stderr + piped.stdout


def test_report_and_picture(compiled):
    work, _ = compiled
    out = ssnfx("report", "out", "--png", "sharing.png", cwd=work)
    assert out.returncode == 0, out.stderr
    assert "original 58,634" in out.stdout
    assert (work / "sharing.png").read_bytes()[:4] == b"\x89PNG"
    # The plan, once: in the checkpoint, printed as JSON on demand.
    out = ssnfx("report", "out", "--json", cwd=work)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _plan(work / "out")


def test_resnet_with_attr_and_swn(tmp_path):
    out = ssnfx("compile", f"{EXAMPLES / 'resnet18.py'}:model", "--method", "swn", "-q",
                "-o", "r", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == "", out.stderr
    assert _plan(tmp_path / "r")["method"] == "swn"


BROKEN = "import torch\nraise RuntimeError('boom')\n"
UNTRACEABLE = """import torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x
model = Net()
"""
NO_MODEL = "x = 1\n"


def test_untraceable_model_compiles_as_one_leaf(tmp_path):
    (tmp_path / "m.py").write_text(UNTRACEABLE)
    out = ssnfx("compile", "m.py", "--budget", "0.9", "-q", "-o", "o", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plan = _plan(tmp_path / "o")
    assert "if x.sum() > 0" in plan["trace"]["auto_leaves"][""]


@pytest.mark.parametrize("source,args,code,message", [
    (None, ["missing.py"], 2, "model file not found: missing.py"),
    (BROKEN, ["m.py"], 1, "m.py failed to import: RuntimeError: boom"),
    (NO_MODEL, ["m.py"], 2, "no model in m.py: define one of model, build_model"),
    (UNTRACEABLE, ["m.py:nope"], 2, "m.py has no attribute 'nope'"),
    (UNTRACEABLE, ["m.py", "--no-auto-leaves"], 1, "cannot trace the model's forward (Net)"),
    (UNTRACEABLE, ["m.py", "--budget", "lots"], 2, "--budget must be a fraction"),
    (NO_MODEL.replace("x = 1", "import torch\nmodel = torch.nn.Linear(50, 50)"),
     ["m.py", "--budget", "0.001"], 2, "below the least"),
])
def test_errors_have_exit_codes_and_one_line_messages(tmp_path, source, args, code, message):
    if source is not None:
        (tmp_path / "m.py").write_text(source)
    out = ssnfx("compile", *args, cwd=tmp_path)
    assert out.returncode == code, (out.stdout, out.stderr)
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_force(compiled, tmp_path):
    work, _ = compiled
    target = tmp_path / "out"
    shutil.copytree(work / "out", target)
    before = (target / "shared.pt").read_bytes()
    out = ssnfx("compile", str(EXAMPLES / "digits_cnn.py"), "-o", "out", "--no-search",
                cwd=tmp_path)
    assert out.returncode == 2 and "pass --force" in out.stderr
    assert (target / "shared.pt").read_bytes() == before
    out = ssnfx("compile", str(EXAMPLES / "digits_cnn.py"), "-o", "out", "--force", "-q",
                "--budget", "0.2", "--no-search", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert _plan(target)["budget"] == 11726


def test_help_and_version(tmp_path):
    out = ssnfx("--version", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("ssnfx ")
    for cmd in ("compile", "fold", "report"):
        out = ssnfx(cmd, "--help", cwd=tmp_path)
        assert out.returncode == 0 and "usage: ssnfx " + cmd in out.stdout
    assert ssnfx("bogus", cwd=tmp_path).returncode == 2

"""Drive the real console script, as a user would."""
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssnfx.checkpoint import read

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _plan(out: Path) -> dict:
    """The plan of a compile folder, as JSON: it lives in the checkpoint."""
    return read(out / "shared.safetensors")[0].to_dict()


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
        "report.txt", "shared.safetensors", "source.json"]
    plan = _plan(work / "out")
    assert plan["budget"] == 5863 and plan["method"] == "swn"  # the default at 10%
    assert "test accuracy" in out.stdout and "SuperWeight cluster(s)" in out.stdout
    assert "searched 46 steps" in out.stdout and plan["options"]["strategy"] == "search"
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_compile_searches_with_either_method(tmp_path):
    # SWN's search finds SuperWeight clusters (the default, above), SSN's parameter groups:
    # the summary says which.
    out = ssnfx("compile", str(EXAMPLES / "digits_cnn.py"), "--method", "ssn",
                "--search-steps", "4", "-o", "out", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    plan = _plan(tmp_path / "out")
    assert plan["method"] == "ssn" and plan["options"]["strategy"] == "search"
    assert "searched 4 steps" in out.stdout
    assert f"{len(plan['groups'])} parameter group(s)" in out.stdout


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
    before = (target / "shared.safetensors").read_bytes()
    out = ssnfx("compile", str(EXAMPLES / "digits_cnn.py"), "-o", "out", "--no-search",
                cwd=tmp_path)
    assert out.returncode == 2 and "pass --force" in out.stderr
    assert (target / "shared.safetensors").read_bytes() == before
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


HELP = """import sys
from ssnfx.cli import main
for argv in (["--help"], ["compile", "--help"], ["fold", "--help"], ["report", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted(m for m in ("torch", "ssnfx.passes", "matplotlib") if m in sys.modules))
"""


def test_help_answers_at_once(tmp_path):
    """--help parses before anything heavy is imported: no torch, so it answers in well under
    a second (it took 6-12 s when the package imported torch first)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", HELP], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stderr
    times = []
    for _ in range(3):
        start = time.perf_counter()
        assert ssnfx("--help", cwd=tmp_path).returncode == 0
        times.append(time.perf_counter() - start)
    assert min(times) < 1.0, times


def test_help_names_every_registered_choice(tmp_path):
    from ssnfx.cli import registered_names

    for cmd, kinds in (("compile", ("method", "combiner", "strategy")), ("fold", ("format",))):
        text = " ".join(ssnfx(cmd, "--help", cwd=tmp_path).stdout.split())
        for kind in kinds:
            for name in registered_names(kind):
                assert re.search(rf"\b{name}\b", text), (cmd, kind, name)
    out = ssnfx("compile", "m.py", "--method", "bogus", cwd=tmp_path)
    assert out.returncode == 2
    assert "argument --method: invalid choice: 'bogus' (choose from ssn, swn)" in out.stderr


def test_quiet_prints_nothing(compiled):
    work, _ = compiled
    out = ssnfx("report", "out", "-q", cwd=work)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    out = ssnfx("report", "out", "-q", "--png", "quiet.png", cwd=work)
    assert out.returncode == 0 and out.stdout == "" and (work / "quiet.png").is_file()
    out = ssnfx("fold", "out", "-q", "--force", "-o", "quiet.pt2", cwd=work)
    assert out.returncode == 0 and out.stdout == "" and (work / "quiet.pt2").is_file()
    assert ssnfx("report", "out", "-q", "--json", cwd=work).stdout.startswith("{")


# ---- faults: nothing lost, every fault one line ----------------------------------------------

TINY = """import torch
model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
example_inputs = (torch.randn(2, 8),)
"""


@pytest.fixture
def tiny(tmp_path):
    """A folder with a tiny model file and its compiled output ``out``; returns the folder and
    the bytes of ``out/shared.safetensors``."""
    (tmp_path / "m.py").write_text(TINY)
    done = ssnfx("compile", "m.py", "-b", "0.5", "-o", "out", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path, (tmp_path / "out" / "shared.safetensors").read_bytes()


def _in_process(work: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """``ssnfx *args`` run in a fresh Python after ``code`` (which injects a fault)."""
    script = f"import sys\n{code}\nfrom ssnfx.cli import main\nsys.exit(main({list(args)!r}))\n"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)


KILL_AT_RENAME = """import os, signal
_rename = os.rename
def rename(src, dst):
    if {when}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _rename(src, dst)
os.rename = rename
"""


def test_sigkill_inside_the_replacement_loses_nothing(tiny):
    """Killed after the old output is moved aside, before the new one is moved in: the next run
    puts the old one back, and says so."""
    work, before = tiny
    run = _in_process(work, KILL_AT_RENAME.format(when="'.new-' in str(src)"),
                      "compile", "m.py", "-b", "0.25", "-o", "out", "-q", "--force")
    assert run.returncode == -9, run.stderr
    assert not (work / "out").exists()
    aside, = work.glob(".out.old-*")
    assert (aside / "shared.safetensors").read_bytes() == before
    report = ssnfx("report", "out", "--json", cwd=work)
    assert report.returncode == 0, report.stderr
    assert "restored out from an interrupted replacement" in report.stderr
    assert (work / "out" / "shared.safetensors").read_bytes() == before
    assert json.loads(report.stdout)["budget"] == 45
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]


def test_sigkill_while_writing_the_new_output_keeps_the_old(tiny):
    work, before = tiny
    kill = "import ssnfx.checkpoint, os, signal\n" \
           "ssnfx.checkpoint._write = lambda *a: os.kill(os.getpid(), signal.SIGKILL)"
    run = _in_process(work, kill, "compile", "m.py", "-b", "0.25", "-o", "out", "-q",
                      "--force")
    assert run.returncode == -9
    assert (work / "out" / "shared.safetensors").read_bytes() == before
    assert [p.name for p in work.glob(".out.new-*")]  # the unfinished one, until the next run
    again = ssnfx("compile", "m.py", "-b", "0.25", "-o", "out", "-q", "--force", cwd=work)
    assert again.returncode == 0, again.stderr
    assert "removed the unfinished output .out.new-" in again.stderr
    assert _plan(work / "out")["budget"] == 22
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]


FOLDER_DURING_TRAINING = TINY + """import os
class Loader:
    def __iter__(self):
        os.makedirs("out", exist_ok=True)  # someone else's folder, made while we train
        with open("out/theirs.txt", "w") as f:
            f.write("keep me")
        yield torch.randn(4, 8), torch.randint(0, 2, (4,))
train_loader = Loader()
loss_fn = torch.nn.functional.cross_entropy
"""


def test_a_folder_created_during_training_is_not_replaced(tmp_path):
    (tmp_path / "m.py").write_text(FOLDER_DURING_TRAINING)
    run = ssnfx("compile", "m.py", "-b", "0.5", "-o", "out", "--no-search", "--epochs", "1",
                "-q", cwd=tmp_path)
    assert run.returncode == 2 and "output out exists; pass --force" in run.stderr, run.stderr
    assert (tmp_path / "out" / "theirs.txt").read_text() == "keep me"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["theirs.txt"]


def test_two_concurrent_compiles_to_one_folder(tmp_path):
    (tmp_path / "m.py").write_text(TINY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([sys.executable, "-m", "ssnfx", "compile", "m.py", "-b", budget,
                              "-o", "out", "-q"], cwd=tmp_path, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for budget in ("0.5", "0.25")]
    results = [(r.wait(timeout=600), r.stderr.read()) for r in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "output out exists; pass --force" in loser
    winner = [45, 22][[code for code, _ in results].index(0)]
    assert _plan(tmp_path / "out")["budget"] == winner  # the winner's output, whole


def test_a_full_disk_is_one_line_and_keeps_the_old_output(tiny):
    """A real failed write (the file-size limit: EFBIG, as ENOSPC would be) mid-checkpoint."""
    work, before = tiny
    limit = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n" \
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))"
    run = _in_process(work, limit, "compile", "m.py", "-b", "0.25", "-o", "out", "-q",
                      "--force")
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("ssnfx: File too large") and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert (work / "out" / "shared.safetensors").read_bytes() == before
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_a_write_to_a_full_device_is_the_oserror_it_is(fmt):
    """How ssnfx.save writes either format: through a Python file, whose failed write is the
    OSError it is (torch.save to a path says "enforce fail at inline_container.cc")."""
    import safetensors.torch

    from ssnfx.checkpoint import _write
    tensors = {"t": torch.ones(10_000)}
    dump = (lambda f: torch.save(tensors, f)) if fmt == "torch" else \
        (lambda f: f.write(safetensors.torch.save(tensors)))
    with pytest.raises(OSError) as err:
        _write(dump, "/dev/full")
    assert err.value.errno == errno.ENOSPC


@pytest.mark.parametrize("args,code,message", [
    (["compile", "m.py", "--config", "nope.json"], 2, "--config nope.json: no such file"),
    (["compile", "m.py", "--lr", "nan"], 2, "argument --lr: must be above 0, got nan"),
    (["compile", "m.py", "--lr", "-1"], 2, "argument --lr: must be above 0, got -1"),
    (["compile", "m.py", "--groups", "0"], 2, "argument --groups: must be at least 1, got 0"),
    (["compile", "m.py", "--epochs", "-2"], 2, "argument --epochs: must be at least 0"),
    (["compile", "m.py", "-o", "m.py"], 2, "output m.py is a file, not a folder"),
    (["compile", "m.py", "-b", "0.5", "-o", "/proc/ssnfx/out"], 1, "No such file or directory: "
                                                      "/proc/ssnfx/out"),
    (["compile", "m.py", "-b", "0.5", "-o", "/sys/ssnfx-out"], 1,
     ": /sys/ssnfx-out (any previous output is unchanged)"),
    (["compile", "exits.py"], 1, "exits.py exited while being imported (sys.exit(0)), so "
                                 "there is no model and nothing was written"),
    (["fold", "out", "--input-shape", "1,3"], 2, "the example inputs ((1, 3)) do not fit the "
                                                 "model: RuntimeError: mat1 and mat2 shapes"),
])
def test_faults_are_one_line_with_the_documented_code(tiny, args, code, message):
    work, before = tiny
    (work / "exits.py").write_text("import sys\nsys.exit(0)\n")
    (work / "bad.json").write_text("{")
    run = ssnfx(*args, cwd=work)
    assert run.returncode == code, (run.stdout, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert message in lines[-1], run.stderr
    # One line, no traceback before it; argparse's own errors come after its usage text.
    assert len(lines) == 1 or lines[0].startswith("usage: ssnfx") and "Traceback" not in \
        run.stderr, run.stderr
    assert (work / "out" / "shared.safetensors").read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder(tiny):
    work, before = tiny
    (work / "out").chmod(0o555)
    os.chmod(work, 0o555)
    try:
        run = ssnfx("compile", "m.py", "-o", "out", "--force", "-q", cwd=work)
    finally:
        os.chmod(work, 0o755)
        (work / "out").chmod(0o755)
    assert run.returncode == 1 and "Permission denied" in run.stderr
    assert (work / "out" / "shared.safetensors").read_bytes() == before


# A byte-level language model on real text (this ssnfx's own source), called with keyword
# inputs as a Hugging Face model is, whose output has per-token logits: top-1 accuracy does not
# apply to it.
KEYWORD_LM = '''
import pathlib
import torch
import torch.nn.functional as F

class LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(256, 32)
        self.mix = torch.nn.Linear(32, 32)
        self.head = torch.nn.Linear(32, 256)

    def forward(self, input_ids, attention_mask=None):
        h = torch.relu(self.mix(self.embed(input_ids)))
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
        return {"logits": self.head(h)}

model = LM()
text = pathlib.Path(torch.nn.modules.module.__file__).read_bytes()[:4096]
ids = torch.tensor(list(text)).view(-1, 64)
train_loader = [({"input_ids": ids[i:i + 8, :-1]}, ids[i:i + 8, 1:]) for i in range(0, 64, 8)]
test_loader = train_loader[:2]
loss_fn = lambda out, t: F.cross_entropy(out["logits"].flatten(0, 1), t.flatten())
example_inputs = {"input_ids": ids[:2, :-1], "attention_mask": torch.ones(2, 63)}
'''


def test_keyword_inputs_and_a_metric_that_does_not_apply(tmp_path):
    (tmp_path / "lm.py").write_text(KEYWORD_LM)
    out = ssnfx("compile", "lm.py", "-b", "0.3", "--epochs", "1", "--no-search", "-o", "out",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # Written first, then the metric is a note, not a crash that loses the training.
    assert out.stdout.index("wrote out/") < out.stdout.index("test accuracy skipped")
    assert "class scores of shape (batch, classes)" in out.stdout
    assert "shape (8, 63, 256)" in out.stdout and "metric_fn" in out.stdout
    assert (tmp_path / "out" / "shared.safetensors").is_file()
    folded = ssnfx("fold", "out", "--format", "pt2", cwd=tmp_path)
    assert folded.returncode == 0, folded.stderr
    code = ("import torch; m = torch.export.load('out/model.pt2').module(); "
            "print(tuple(m(input_ids=torch.zeros(2, 63, dtype=torch.long), "
            "attention_mask=torch.ones(2, 63))['logits'].shape))")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True)
    assert run.stdout.strip() == "(2, 63, 256)", run.stderr
    script = ssnfx("fold", "out", "--format", "torchscript", cwd=tmp_path)
    assert script.returncode == 0, script.stderr


def test_metric_fn_in_the_model_file_is_used(tmp_path):
    (tmp_path / "lm.py").write_text(
        KEYWORD_LM + "metric_fn = lambda model, loader: round(float(len(list(loader))), 1)\n")
    out = ssnfx("compile", "lm.py", "-b", "0.3", "--epochs", "1", "--no-search", "-o", "out",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "test metric_fn 2.0" in out.stdout and "accuracy" not in out.stdout

import copy
import subprocess
import sys

import pytest
import torch
import torchvision

import ssnfx
from ssnfx.cli import build_parser
from ssnfx.deploy import (
    EXPORT_FORMATS,
    ExportFormat,
    export_pt2,
    export_torchscript,
    register_export_format,
)

from models import AttnNet, SmallCNN

LOAD = {
    "torchscript": "m = torch.jit.load(sys.argv[1])",
    "pt2": "m = torch.export.load(sys.argv[1]).module()",
}


@pytest.fixture(scope="module")
def folded():
    shared = ssnfx.share(torchvision.models.resnet18(num_classes=10), 0.1)
    return ssnfx.fold(shared.eval())


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
def test_export_reloads_in_a_fresh_process(folded, fmt, tmp_path):
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / ("m.pt" if fmt == "torchscript" else "m.pt2")
    export = export_torchscript if fmt == "torchscript" else export_pt2
    export(folded, (x,), path)
    torch.save({"x": x, "y": folded(x).detach()}, tmp_path / "io.pt")
    code = ("import sys, warnings, torch; warnings.simplefilter('ignore'); " + LOAD[fmt] + "; "
            "io = torch.load(sys.argv[2]); "
            "torch.testing.assert_close(m(io['x']), io['y'], rtol=1e-5, atol=1e-5); print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "io.pt")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_attention_model_exports(tmp_path):
    folded = ssnfx.fold(ssnfx.share(AttnNet(), 0.3).eval())
    x = torch.randn(2, 5, 8)
    export_torchscript(folded, x, tmp_path / "a.pt")
    export_pt2(folded, (x,), tmp_path / "a.pt2")
    torch.testing.assert_close(torch.export.load(tmp_path / "a.pt2").module()(x), folded(x))


def test_export_refuses_a_shared_model(tmp_path):
    shared = ssnfx.share(AttnNet(), 0.3)
    with pytest.raises(ssnfx.ExportError, match="call ssnfx.fold"):
        export_pt2(shared, (torch.randn(2, 5, 8),), tmp_path / "x.pt2")
    assert not (tmp_path / "x.pt2").exists()


def test_failed_export_leaves_no_file(folded, tmp_path):
    with pytest.raises(ssnfx.ExportError, match="fails on the example inputs"):
        export_pt2(folded, ("not a tensor",), tmp_path / "bad.pt2")
    assert list(tmp_path.iterdir()) == []


def test_a_format_registered_in_one_place(tmp_path):
    # A new format is one ExportFormat and one registration: export() picks it by name or by
    # suffix, checks it, and the command line offers it.
    folded = ssnfx.fold(ssnfx.share(SmallCNN(), 0.3)).eval()

    def write(model, inputs, path):
        torch.save(model.state_dict(), path)

    def load(path):
        model = copy.deepcopy(folded)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model

    fmt = register_export_format(ExportFormat("weights", ".sd", write, load))
    try:
        x = torch.randn(2, 1, 8, 8)
        ssnfx.export(folded, x, tmp_path / "m.sd")
        assert (tmp_path / "m.sd").is_file()
        broken = ExportFormat("weights", ".sd", write, lambda path: lambda x: x.sum())
        register_export_format(broken)
        with pytest.raises(ssnfx.ExportError, match="the weights export does not reproduce"):
            ssnfx.export(folded, x, tmp_path / "bad.sd")
        assert not (tmp_path / "bad.sd").exists()  # nothing half-written, nothing wrong
        assert build_parser().parse_args(["fold", "out", "--format", "weights"]).format \
            == "weights"
    finally:
        EXPORT_FORMATS.pop(fmt.name)
    with pytest.raises(ssnfx.ExportError, match="unknown export format 'weights'"):
        ssnfx.export(folded, x, tmp_path / "m.sd", format="weights")

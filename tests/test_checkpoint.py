import argparse
import collections
import enum
import json
import os
import pathlib
import re

import numpy as np
import pytest
import torch

import ssnfx
import ssnfx.core.jit

from models import GRUNet, KeywordModel, SmallCNN, TiedAcrossLeaf, TiedLM


@pytest.fixture
def shared():
    model = SmallCNN()
    shared = ssnfx.share(model, 0.2, ssnfx.ShareConfig(method="swn", combiner="emb"))
    # train a step so the checkpoint differs from a fresh initialisation
    opt = torch.optim.SGD(shared.parameters(), lr=0.1)
    shared(torch.randn(4, 1, 8, 8)).square().mean().backward()
    opt.step()
    return shared.eval()


def test_round_trip(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    again = ssnfx.load(SmallCNN(), path).eval()
    assert again.ssnfx.plan == shared.ssnfx.plan
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(again(x), shared(x), rtol=0, atol=0)
    for k, v in shared.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_leaf_model_round_trip(tmp_path):
    shared = ssnfx.share(GRUNet(), 0.3).eval()
    ssnfx.save(shared, tmp_path / "gru.pt")
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(ssnfx.load(GRUNet(), tmp_path / "gru.pt").eval()(x), shared(x))


def test_file_is_plain_data(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "plan", "state_dict"}
    assert ssnfx.SharingPlan.from_json(payload["plan"]) == shared.ssnfx.plan


@pytest.mark.parametrize("keep", [0, 1, 10, 0.5, -1])  # bytes, or a fraction of the file
def test_truncated_file(shared, tmp_path, keep):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(SmallCNN(), path)
    msg = str(err.value)
    assert f"{str(path)!r} is not a readable checkpoint (truncated or corrupt?)" in msg
    assert "save it again with ssnfx.save" in msg
    assert "weights_only=False" not in msg  # torch's advice to unpickle anyway is not repeated


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["beside", "in the state_dict"])
def test_pickled_objects_are_refused(tmp_path, where):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    payload = {"format": "ssnfx-checkpoint-1", "plan": "{}", "state_dict": {}}
    if where == "beside":
        payload["obj"] = Evil(marker)
    else:
        payload["state_dict"]["w"] = Evil(marker)
    torch.save(payload, path)
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(SmallCNN(), path)
    msg = str(err.value)
    assert re.search(r"tries to unpickle (posix|nt)\.system; ssnfx never unpickles", msg), msg
    assert "write it with ssnfx.save" in msg
    assert not marker.exists()


def test_a_pickled_module_is_refused_by_name(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    # Written around ssnfx.save, which refuses such an extra (next test).
    _edit(path, lambda p: p.update(extra={"model": torch.nn.Linear(2, 2)}))
    with pytest.raises(ssnfx.CheckpointError, match=re.escape(
            "tries to unpickle torch.nn.modules.linear.Linear; ssnfx never unpickles")):
        ssnfx.load(SmallCNN(), path)


class _Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value,name", [
    (np.float64(0.91), "numpy.float64"), (np.arange(3), "numpy.ndarray"),
    (pathlib.Path("runs/a"), "pathlib.PosixPath"),
    (argparse.Namespace(lr=0.1), "argparse.Namespace"),
    (collections.namedtuple("Point", "x y")(1, 2), "test_checkpoint.Point"),
    (_Colour.RED, "test_checkpoint._Colour"), (frozenset({1}), "frozenset"),
    (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
])
def test_save_refuses_an_extra_that_load_would_refuse(shared, tmp_path, value, name):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(ssnfx.CheckpointError, match=re.escape(
            f"extra['run'][1]['best'] is a {name}, which ssnfx.load would refuse")):
        ssnfx.save(shared, path, extra={"run": [0, {"best": value}]})
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(ssnfx.CheckpointError, match="a key of extra is a pathlib.PosixPath"):
        ssnfx.save(shared, path, extra={pathlib.Path("a"): 1})


@pytest.mark.parametrize("name", ["ckpt.pt", "ckpt.safetensors"])
def test_every_extra_save_accepts_loads_back(shared, tmp_path, name):
    extra = {"none": None, "flag": True, "step": 3, "acc": 0.5, "z": 1 + 2j, "name": "run",
             "raw": b"x", "buf": bytearray(b"y"), "size": torch.Size([2]),
             "dtype": torch.float16, "device": torch.device("cpu"), "t": torch.ones(2),
             "p": torch.nn.Parameter(torch.zeros(1)), "nested": [(1, 2), {3}],
             "ordered": collections.OrderedDict(a=1), 7: "an int key"}
    ssnfx.save(shared, tmp_path / name, extra=extra)
    _, again = ssnfx.load(SmallCNN(), tmp_path / name, return_extra=True)
    assert again.keys() == extra.keys()
    for k, v in extra.items():
        assert type(again[k]) is (torch.Tensor if isinstance(v, torch.Tensor) else type(v)) \
            or name.endswith(".pt"), k  # (the torch format keeps a Parameter a Parameter)
        assert torch.equal(again[k], v) if isinstance(v, torch.Tensor) else again[k] == v, k


def test_safetensors_is_the_default_format(shared, tmp_path):
    """Tensors and JSON metadata, no pickle: safetensors itself reads the file, and the plan
    and an optimizer's state (int keys, nested tensors) come back exactly."""

    import safetensors
    opt = torch.optim.Adam(shared.parameters())
    shared(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    path = tmp_path / "shared.safetensors"
    ssnfx.save(shared, path, extra={"optimizer": opt.state_dict(), "step": 7})
    assert path.read_bytes()[:2] != b"PK"  # not a torch zip
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        names = set(f.keys())
    assert meta["format"] == "ssnfx-safetensors-1"
    assert ssnfx.SharingPlan.from_json(meta["plan"]) == shared.ssnfx.plan
    assert set(shared.state_dict()) <= names
    again, extra = ssnfx.load(SmallCNN(), path, return_extra=True)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(again.eval()(x), shared.eval()(x), rtol=0, atol=0)
    resumed = torch.optim.Adam(again.parameters())
    resumed.load_state_dict(extra["optimizer"])
    mine = opt.state_dict()["state"]
    for i, state in resumed.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], mine[i]["exp_avg"]), i
    assert extra["step"] == 7 and json.loads(meta["extra"])  # the extra is JSON


def test_safetensors_keeps_tied_weights(tmp_path):
    model = TiedLM()
    shared = ssnfx.share(model, 0.5).eval()
    ssnfx.save(shared, tmp_path / "tied.safetensors")
    again = ssnfx.load(TiedLM(), tmp_path / "tied.safetensors").eval()
    x = torch.randint(0, 32, (2, 5))
    torch.testing.assert_close(again(x), shared(x), rtol=0, atol=0)


def test_old_pt_checkpoints_still_load(shared, tmp_path):
    ssnfx.save(shared, tmp_path / "old.pt")
    assert (tmp_path / "old.pt").read_bytes()[:2] == b"PK"  # torch's format, as before
    again = ssnfx.load(SmallCNN(), tmp_path / "old.pt").eval()
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(again(x), shared(x), rtol=0, atol=0)


def _metadata_edit(path, change):
    import safetensors
    import safetensors.torch
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    change(meta)
    safetensors.torch.save_file(tensors, str(path), meta)


@pytest.mark.parametrize("change,message", [
    (lambda m: m.pop("format"), "is a safetensors file but not an ssnfx checkpoint"),
    (lambda m: m.pop("plan"), "has no plan in its metadata"),
    (lambda m: m.update(plan=json.dumps({**json.loads(m["plan"]), "budget": 10})),
     "plan.budget is 10, but the plan gives the model"),
    (lambda m: m.update(plan=m["plan"].replace(f'"version": {ssnfx.PLAN_VERSION}',
                                               '"version": 0', 1)),
     "plan.version is 0"),
    (lambda m: m.update(extra='{"dict": [["a", {"tensor": "nope"}]]}'),
     "the extra entry is damaged (KeyError"),
    (lambda m: m.update(extra='{"dict": [["a", {"dtype": "load"}]]}'),
     "'load' is not a torch dtype"),
])
def test_damaged_safetensors_metadata(shared, tmp_path, change, message):
    path = tmp_path / "ckpt.safetensors"
    ssnfx.save(shared, path)
    _metadata_edit(path, change)
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(SmallCNN(), path, return_extra=True)
    assert str(err.value).startswith(repr(str(path))) and message in str(err.value)


def test_truncated_safetensors(shared, tmp_path):
    path = tmp_path / "ckpt.safetensors"
    ssnfx.save(shared, path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ssnfx.CheckpointError, match="is not a readable checkpoint"):
        ssnfx.load(SmallCNN(), path)


def test_plan_from_another_model(shared, tmp_path):
    ssnfx.save(shared, tmp_path / "ckpt.pt")
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(GRUNet(), tmp_path / "ckpt.pt")
    msg = str(err.value)
    assert "does not fit GRUNet: the plan was made for another model" in msg
    assert "slots not in this model: ['bn1.bias'" in msg
    assert "load it into a fresh instance of the model it was saved from" in msg


def _plan(payload):
    return json.loads(payload["plan"])


def _edit_plan(payload, version=None, budget=None, swap_layouts=None, shared=None, tile=None,
               numel=None, role=None):
    """Edit the plan's JSON in a checkpoint payload as a user editing the file would."""
    d = _plan(payload)
    group = d["groups"][0]
    if version is not None:
        d["version"] = version
    if budget is not None:
        d["budget"] = budget
    if swap_layouts is not None:
        a, b = swap_layouts
        group["layout"][a], group["layout"][b] = group["layout"][b], group["layout"][a]
    if shared is not None:
        next(s for s in d["slots"] if s["name"] == shared)["shared"] = True
    if tile is not None:
        index, field, value = tile
        first = group["layout"][group["slots"][0]][index]
        first[["superweight", "row", "col", "coefficients"].index(field)] = value
    if numel is not None:
        group["numel"] = numel
    if role is not None:
        next(s for s in d["slots"] if s["name"] == role[0])["role"] = role[1]
    payload["plan"] = json.dumps(d)


def _edit(path, change):
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_state_dict_keys_missing(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    _edit(path, lambda p: p["state_dict"].pop("ssnfx.g0.store"))
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(SmallCNN(), path)
    assert "state_dict does not match the shared SmallCNN: missing ['ssnfx.g0.store'], " \
           "unexpected []" in str(err.value)
    assert "save the shared model again with ssnfx.save" in str(err.value)


def test_state_dict_keys_extra(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    _edit(path, lambda p: p["state_dict"].update({"fc.weight": torch.ones(10, 128)}))
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(SmallCNN(), path)
    assert "missing [], unexpected ['fc.weight']" in str(err.value)  # fc.weight is generated
    assert "save the shared model again with ssnfx.save" in str(err.value)


def test_state_dict_wrong_shape(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    _edit(path, lambda p: p["state_dict"].update({"ssnfx.g0.store": torch.ones(3)}))
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(SmallCNN(), path)
    msg = str(err.value)
    assert "weights do not fit the shared SmallCNN" in msg and "ssnfx.g0.store" in msg
    assert "save it again with ssnfx.save" in msg


@pytest.mark.parametrize("change,message", [
    (lambda p: p.pop("plan"), "has no plan entry (damaged or edited); save it again"),
    (lambda p: p.pop("state_dict"), "has no state_dict entry (damaged or edited)"),
    (lambda p: p.update(plan={"version": 1}),
     "the plan entry must be the plan's JSON text, got dict; save it again"),
    (lambda p: p.update(state_dict=[torch.ones(2)]),
     "the state_dict entry must be a dict of tensors, got list; save it again"),
    (lambda p: p.update(plan=p["plan"].replace(f'"version": {ssnfx.PLAN_VERSION}',
                                                '"version": "1.0"', 1)),
     "the plan's version must be an int, got '1.0'"),
    (lambda p: p.update(plan=p["plan"].replace('"method": "swn"', '"method": "lora"', 1)),
     "plan.method is 'lora', not one of ('ssn', 'swn')"),
    (lambda p: p.update(plan="{"), "the plan is not valid JSON"),
    # Plans edited inconsistently: each is refused naming the field, before anything is built.
    (lambda p: _edit_plan(p, version=0), "plan.version is 0; this ssnfx reads versions 1 to"),
    (lambda p: _edit_plan(p, version=-1), "plan.version is -1"),
    (lambda p: _edit_plan(p, budget=10), "plan.budget is 10, but the plan gives the model"),
    (lambda p: _edit_plan(p, budget=_plan(p)["budget"] - 1), "the budget or a store size was "
                                                             "edited"),
    (lambda p: _edit_plan(p, swap_layouts=("conv1.weight", "fc.weight")),
     'plan.groups[0].layout["conv1.weight"]['),
    (lambda p: _edit_plan(p, shared="bn1.bias"), "marks ['bn1.bias'] shared, but no group"),
    (lambda p: _edit_plan(p, tile=(0, "row", -3)), "[0] places a"),
    (lambda p: _edit_plan(p, tile=(0, "superweight", 99)), "names SuperWeight 99; the group has"),
    (lambda p: _edit_plan(p, tile=(0, "coefficients", -1)), "names coefficient row -1"),
    (lambda p: _edit_plan(p, numel=0), "plan.groups[0].numel is 0; it must be at least 1"),
    (lambda p: _edit_plan(p, role=("conv1.weight", "bias")),
     "the plan's slot 'conv1.weight' has role 'bias', but the model reads it as 'weight'"),
])
def test_damaged_payload(shared, tmp_path, change, message):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    _edit(path, change)
    with pytest.raises(ssnfx.CheckpointError) as err:
        ssnfx.load(SmallCNN(), path)
    assert str(err.value).startswith(repr(str(path)))  # names the file
    assert message in str(err.value)


def test_newer_plan_version(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    payload = torch.load(path, weights_only=True)
    payload["plan"] = payload["plan"].replace(f'"version": {ssnfx.PLAN_VERSION}',
                                                '"version": 99', 1)
    torch.save(payload, path)
    with pytest.raises(ssnfx.CheckpointError, match=f"version 99, newer than this ssnfx "
                                                    f"understands \\({ssnfx.PLAN_VERSION}\\); "
                                                    f"upgrade ssnfx"):
        ssnfx.load(SmallCNN(), path)


def test_not_a_checkpoint_and_missing_file(tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ssnfx.CheckpointError, match="not an ssnfx checkpoint"):
        ssnfx.load(SmallCNN(), tmp_path / "other.pt")
    with pytest.raises(ssnfx.CheckpointError, match="no checkpoint at"):
        ssnfx.load(SmallCNN(), tmp_path / "absent.pt")


def test_save_is_atomic(shared, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        ssnfx.save(shared, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_concrete_args_and_leaves_are_replayed_by_load(tmp_path):
    # The plan records how the model was traced (its concrete_args, the automatic leaves), so
    # load rebuilds the same graph; the unread non-persistent buffer stays out of every
    # state_dict (it came back persistent before, and strict loads failed).
    config = ssnfx.ShareConfig(concrete_args={"attention_mask": None, "labels": None})
    model = KeywordModel()
    shared = ssnfx.share(model, 0.5, config)
    assert shared.ssnfx.plan.trace["concrete_args"] == {"attention_mask": None, "labels": None}
    ssnfx.save(shared, tmp_path / "k.pt")
    again = ssnfx.load(KeywordModel(), tmp_path / "k.pt")
    assert type(again) is type(shared) and again.ssnfx.plan == shared.ssnfx.plan
    ids = torch.randint(0, 30, (2, 5))
    torch.testing.assert_close(again(ids), shared(ids), rtol=0, atol=0)
    folded = ssnfx.fold(shared)
    assert "unused_cache" not in shared.state_dict() and "unused_cache" in dict(
        folded.named_buffers())
    KeywordModel().load_state_dict(folded.state_dict(), strict=True)

    tied = ssnfx.share(TiedAcrossLeaf(), 0.5)
    ssnfx.save(tied, tmp_path / "t.pt")
    again = ssnfx.load(TiedAcrossLeaf(), tmp_path / "t.pt")
    assert again.ssnfx.plan == tied.ssnfx.plan
    tokens = torch.randint(0, 40, (2, 7))
    torch.testing.assert_close(again(tokens), tied(tokens), rtol=0, atol=0)


@pytest.mark.parametrize("generation", ssnfx.core.jit.GENERATIONS)
def test_torch_save_of_a_whole_shared_model_says_how_to_save_it(tmp_path, generation):
    shared = ssnfx.share(GRUNet(), 0.3, ssnfx.ShareConfig(generation=generation))
    with pytest.raises(ssnfx.CheckpointError, match=r"torch.save of a shared GRUNet .* save "
                                                    r"the model with ssnfx.save\(shared, path\)"):
        torch.save(shared, tmp_path / "whole.pt")
    # A folded model is plain: it pickles as the user's class does.
    torch.save(ssnfx.fold(shared), tmp_path / "folded.pt")
    assert (tmp_path / "folded.pt").stat().st_size > 0

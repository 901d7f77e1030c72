import os

import pytest
import torch

import ssnfx

from models import GRUNet, SmallCNN


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


def test_truncated_file(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ssnfx.CheckpointError, match="truncated or corrupt"):
        ssnfx.load(SmallCNN(), path)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ssnfx-checkpoint-1", "plan": "{}", "obj": Evil()}, path)
    with pytest.raises(ssnfx.CheckpointError, match="never unpickles"):
        ssnfx.load(SmallCNN(), path)


def test_plan_from_another_model(shared, tmp_path):
    ssnfx.save(shared, tmp_path / "ckpt.pt")
    with pytest.raises(ssnfx.CheckpointError, match="does not fit GRUNet.*another model"):
        ssnfx.load(GRUNet(), tmp_path / "ckpt.pt")


def test_state_dict_keys_missing(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["ssnfx.g0.store"]
    torch.save(payload, path)
    with pytest.raises(ssnfx.CheckpointError, match="missing \\['ssnfx.g0.store'\\]"):
        ssnfx.load(SmallCNN(), path)


def test_newer_plan_version(shared, tmp_path):
    path = tmp_path / "ckpt.pt"
    ssnfx.save(shared, path)
    payload = torch.load(path, weights_only=True)
    payload["plan"] = payload["plan"].replace('"version": 1', '"version": 99', 1)
    torch.save(payload, path)
    with pytest.raises(ssnfx.CheckpointError, match="version 99, newer"):
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

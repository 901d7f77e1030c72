"""ssnfx.share, the one-liner: what it keeps of the model it was given."""
import gc
import weakref

import pytest
import torchvision

import ssnfx

from models import DataDependent, KeywordModel, TiedInsideLeaf


@pytest.mark.parametrize("make", [torchvision.models.resnet18, torchvision.models.swin_t,
                                  DataDependent, TiedInsideLeaf, KeywordModel])
def test_share_lets_go_of_the_original_model(make):
    # Nothing of the original (module, parameters, frames that held them) outlives share unless
    # the caller holds it: checked with the cycle collector off, as it may not run for several
    # training steps. swin_t calls torch.fx.wrap'ed functions, whose compiled code keeps the
    # frames that built it in a cycle; resnet18 does not.
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        model = make()
        alive = [weakref.ref(model), *(weakref.ref(p) for p in model.parameters())]
        shared = ssnfx.share(model, 0.5)
        del model
        assert [r for r in alive if r() is not None] == []
        assert sum(p.numel() for p in shared.parameters()) > 0
    finally:
        if enabled:
            gc.enable()

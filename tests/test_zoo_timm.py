"""timm architectures as users have them: created by name (random weights, no download), small
inputs, no wrapper and no manual leaf.

Part of the zoo step (``pytest -m zoo``); needs the ``zoo`` extra (``pip install -e '.[zoo]'``).
"""
from __future__ import annotations

import pytest
import torch

import ssnfx
from ssnfx.deploy import export_pt2

from helpers import check_pipeline

timm = pytest.importorskip("timm")
pytestmark = pytest.mark.zoo

#: Families: ResNets, ConvNeXt, EfficientNet, MobileNet v3/v4, RegNet, DenseNet, other CNNs,
#: ViT, DeiT, Swin, BEiT, EVA-02, MaxViT, MobileViT, Twins, EfficientViT, NesT, TinyViT,
#: CrossViT, LeViT, PoolFormer, MLP-Mixer and other MLPs, hybrids.
ARCHITECTURES = [
    "resnet18", "resnet50d", "resnext26ts", "seresnet18", "res2net50_14w_8s", "resnest14d",
    "convnext_atto", "convnextv2_atto", "efficientnet_b0", "efficientnet_lite0",
    "tf_efficientnetv2_b0", "mobilenetv3_small_050", "mobilenetv3_large_100",
    "mobilenetv4_conv_small", "regnetx_002", "regnety_002", "regnetz_b16", "densenet121",
    "dla34", "dpn48b", "ghostnet_100", "hrnet_w18_small", "inception_v3", "mnasnet_050",
    "rexnet_100", "repvgg_a0", "cspresnet50", "darknet53", "vovnet39a", "xception41",
    "nfnet_l0", "hgnetv2_b0", "mobileone_s0", "repvit_m1", "fastvit_t8", "edgenext_xx_small",
    "inception_next_atto",
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_relpos_small_patch16_224",
    "deit_tiny_patch16_224", "deit3_small_patch16_224", "flexivit_small",
    "swin_tiny_patch4_window7_224", "swinv2_cr_tiny_224", "beit_base_patch16_224",
    "eva02_tiny_patch14_224", "maxvit_tiny_tf_224", "mobilevit_xxs", "twins_svt_small",
    "efficientvit_b0", "nest_tiny", "tiny_vit_5m_224", "crossvit_tiny_240", "levit_128s",
    "poolformer_s12", "caformer_s18", "mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224",
    "convmixer_768_32", "coat_lite_tiny", "pit_ti_224", "cait_xxs24_224",
    "xcit_nano_12_p16_224", "volo_d1_224", "efficientformer_l1", "efficientformerv2_s0",
    "focalnet_tiny_srf", "davit_tiny", "gcvit_xxtiny", "mvitv2_tiny", "pvt_v2_b0",
    "sequencer2d_s",
]
#: Exported with torch.export after folding (a few families, to keep the step short).
EXPORTED = {"resnet18", "convnext_atto", "efficientnet_b0", "vit_tiny_patch16_224",
            "swin_tiny_patch4_window7_224", "mixer_s16_224"}


#: Inputs other than 64 px, for models that need them (deep strides, fixed token grids).
SIZES = {"inception_v3": 96, "crossvit_tiny_240": 240, "efficientformer_l1": 224}


def _create(name: str) -> tuple[torch.nn.Module, int, dict[str, int]]:
    """The model with 10 classes, a small input it takes (64 px, or :data:`SIZES`), and the
    arguments that made it."""
    size = SIZES.get(name, 64)
    torch.manual_seed(0)
    for kwargs in ({"num_classes": 10, "img_size": size}, {"num_classes": 10}):
        try:
            return timm.create_model(name, pretrained=False, **kwargs), size, kwargs
        except TypeError:  # no img_size argument: a CNN, which takes any size
            continue
    raise AssertionError(f"timm cannot create {name}")


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_timm_shares_as_it_is(name, tmp_path):
    model, size, kwargs = _create(name)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    # Budget within 95-100%, gradients reach every store, fold == shared (1e-4: deep nets at
    # random init amplify float rounding), strict load into a fresh model made the same way,
    # checkpoint round trip.
    fresh = timm.create_model(name, pretrained=False, **kwargs)
    shared, folded = check_pipeline(model, (x,), 0.1, backward=True, atol=1e-4, fresh=fresh,
                                    checkpoint=tmp_path / "c.pt")
    if name in EXPORTED:
        export_pt2(folded, x[:1], tmp_path / "m.pt2", atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_the_shared_model_keeps_timms_methods_and_data_config(name, tmp_path):
    """share returns the timm class: forward_features, forward_head, get_classifier and
    pretrained_cfg work, resolve_data_config gives the model's own preprocessing (a ViT's
    mean is 0.5, not ImageNet's), and fold gives the class back, exported to pt2."""
    from timm.data import resolve_data_config

    model, size, _ = _create(name)
    model.eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    shared = ssnfx.share(model, 0.1).eval()
    assert isinstance(shared, type(model)) and shared.pretrained_cfg == model.pretrained_cfg
    assert resolve_data_config(model=shared) == resolve_data_config(model=model)
    folded = ssnfx.fold(shared)
    assert type(folded) is type(model)
    with torch.no_grad():
        features = shared.forward_features(x)
        torch.testing.assert_close(features, folded.forward_features(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(shared.forward_head(features), shared(x), rtol=1e-5,
                                   atol=1e-5)
    assert shared.get_classifier() is not None
    export_pt2(folded, x, tmp_path / "m.pt2", atol=1e-4, rtol=1e-4)


def test_readme_timm_example_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(import timm, torch, ssnfx\n.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert type(scope["deployed"]) is type(scope["vit"])
    assert scope["features"].shape[0] == 2 and scope["features"].requires_grad

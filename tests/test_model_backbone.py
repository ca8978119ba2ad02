"""ResNet / FPN backbone: shapes, freezing, torchvision weight loading."""
import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from multitask import get_cfg
from multitask.modeling.backbone import (
    ResNet,
    ResNetFPN,
    build_backbone,
    load_torchvision_resnet_state_dict,
)
from multitask.modeling.layers import ModulatedDeformConv2d

H, W = 64, 96
STAGES = ("res2", "res3", "res4", "res5")


pytestmark = pytest.mark.usefixtures("one_thread")


def _image(seed=0, n=1, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, h, w, generator=g)


@pytest.mark.parametrize(
    "depth, channels",
    [
        (18, (64, 128, 256, 512)),
        (34, (64, 128, 256, 512)),
        (50, (256, 512, 1024, 2048)),
        (101, (256, 512, 1024, 2048)),
        (152, (256, 512, 1024, 2048)),
    ],
)
def test_resnet_output_shapes(depth, channels):
    torch.manual_seed(0)
    model = ResNet(depth=depth).eval()
    assert model.out_channels == dict(zip(STAGES, channels))
    assert model.strides == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    with torch.no_grad():
        out = model(_image())
    assert list(out.keys()) == list(STAGES)
    for name, c in zip(STAGES, channels):
        s = model.strides[name]
        assert out[name].shape == (1, c, H // s, W // s), name
        assert torch.isfinite(out[name]).all()


def test_resnet_subset_of_out_features():
    model = ResNet(depth=18, out_features=["res3", "res4"]).eval()
    with torch.no_grad():
        out = model(_image())
    assert list(out.keys()) == ["res3", "res4"]
    assert model.out_channels == {"res3": 128, "res4": 256}


def test_resnet_bad_arguments():
    with pytest.raises(ValueError, match="DEPTH"):
        ResNet(depth=42)
    with pytest.raises(ValueError, match="res6"):
        ResNet(depth=18, out_features=["res2", "res6"])
    with pytest.raises(ValueError, match="DEFORM_ON_PER_STAGE"):
        ResNet(depth=18, deform_on_per_stage=[True, True])


def _tiny_fpn_cfg(depth=18, deform=(False, False, False, False)):
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", depth,
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE", list(deform),
            "MODEL.FPN.OUT_CHANNELS", 32,
        ]
    )
    return cfg


def test_fpn_output_shapes():
    torch.manual_seed(0)
    backbone = build_backbone(_tiny_fpn_cfg()).eval()
    assert isinstance(backbone, ResNetFPN)
    assert backbone.out_channels == 32
    assert backbone.size_divisibility == 32
    assert backbone.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    with torch.no_grad():
        out = backbone(_image())
    assert list(out.keys()) == ["p2", "p3", "p4", "p5", "p6"]
    expected = {
        "p2": (16, 24),
        "p3": (8, 12),
        "p4": (4, 6),
        "p5": (2, 3),
        "p6": (1, 2),  # stride-2 max-pool (kernel 1) of p5, as detectron2's LastLevelMaxPool
    }
    for name, (h, w) in expected.items():
        assert out[name].shape == (1, 32, h, w), name
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2])


def _requires_grad(module):
    return {p.requires_grad for p in module.parameters()}


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3])
def test_freeze_at(freeze_at):
    model = ResNet(depth=18, freeze_at=freeze_at, norm="FrozenBN")
    stem = nn.ModuleList([model.conv1, model.bn1])
    parts = [stem] + model.stages()
    for i, part in enumerate(parts):
        frozen = i < freeze_at
        assert _requires_grad(part) == {not frozen}, (freeze_at, i)


def test_freeze_at_with_batchnorm_keeps_frozen_stages_frozen():
    """NORM "BN": frozen stages use fixed statistics, also after ``model.train()``."""
    torch.manual_seed(0)
    model = ResNet(depth=18, freeze_at=2, norm="BN")
    model.train()
    assert isinstance(model.bn1, FrozenBatchNorm2d)
    frozen_bns = [m for m in model.layer1.modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen_bns == []
    # the later stages keep trainable BatchNorm2d
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.layer2.modules())
    assert _requires_grad(model.layer2) == {True}
    assert _requires_grad(nn.ModuleList([model.conv1, model.bn1, model.layer1])) == {False}

    x = _image(n=2)

    def res2(m):
        return m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))

    with torch.no_grad():
        train_mode = res2(model)
        model.eval()
        eval_mode = res2(model)
    torch.testing.assert_close(train_mode, eval_mode)


def test_freeze_at_with_batchnorm_keeps_loaded_statistics():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        tv.bn1.running_mean.uniform_(-1, 1)
        tv.bn1.running_var.uniform_(0.5, 2)
        tv.layer1[0].bn1.running_var.uniform_(0.5, 2)
    model = ResNet(depth=18, freeze_at=2, norm="BN")
    missing, unexpected = load_torchvision_resnet_state_dict(model, tv.state_dict())
    assert missing == [] and unexpected == []
    torch.testing.assert_close(model.bn1.running_mean, tv.bn1.running_mean)
    torch.testing.assert_close(model.layer1[0].bn1.running_var, tv.layer1[0].bn1.running_var)


@pytest.mark.parametrize("depth", [18, 50])
def test_load_torchvision_state_dict_plain(depth):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    with torch.no_grad():  # make the statistics distinguishable from the defaults
        tv.bn1.running_mean.uniform_(-1, 1)
    sd = tv.state_dict()
    torch.manual_seed(1)
    model = ResNet(depth=depth)
    assert not torch.equal(model.layer3[0].conv2.weight, sd["layer3.0.conv2.weight"])
    missing, unexpected = load_torchvision_resnet_state_dict(model, sd)
    assert missing == []
    assert unexpected == []
    for key in ("conv1.weight", "layer3.0.conv2.weight", "layer4.1.bn1.weight", "bn1.running_mean"):
        torch.testing.assert_close(model.state_dict()[key], sd[key], rtol=0, atol=0)
    # and the loaded trunk computes what torchvision's does (same BN statistics, eval)
    tv.eval()
    model.eval()
    x = _image()
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        out = model(x)["res5"]
    # random weights give large activations: compare relative to their scale
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("depth", [18, 50])
def test_load_torchvision_state_dict_deformable(depth):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    sd = tv.state_dict()
    torch.manual_seed(1)
    model = ResNet(depth=depth, deform_on_per_stage=[False, True, True, True])
    assert isinstance(model.layer3[0].conv2, ModulatedDeformConv2d)
    missing, unexpected = load_torchvision_resnet_state_dict(model, sd)
    assert unexpected == []
    assert missing, "the conv_offset branches are not in a torchvision checkpoint"
    assert all(".conv_offset." in k for k in missing), missing
    n_blocks = sum(len(s) for s in model.stages()[1:])
    assert len(missing) == 2 * n_blocks  # weight + bias per deformable conv
    # the deformable convs took the 3x3 weights of the checkpoint
    for key in ("layer2.0.conv2.weight", "layer4.1.conv2.weight", "layer1.0.conv1.weight"):
        torch.testing.assert_close(model.state_dict()[key], sd[key], rtol=0, atol=0)
    # and the offset branches are still zero
    assert model.layer3[0].conv2.conv_offset.weight.abs().sum() == 0


def test_deformable_backbone_equals_plain_after_loading():
    torch.manual_seed(0)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    plain = ResNet(depth=18).eval()
    deform = ResNet(depth=18, deform_on_per_stage=[False, True, True, True]).eval()
    load_torchvision_resnet_state_dict(plain, sd)
    load_torchvision_resnet_state_dict(deform, sd)
    x = _image()
    with torch.no_grad():
        a, b = plain(x), deform(x)
    for k in STAGES:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)


def test_load_wrong_depth_state_dict_gives_clear_error():
    sd18 = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError) as excinfo:
        load_torchvision_resnet_state_dict(ResNet(depth=50), sd18)
    msg = str(excinfo.value)
    assert "DEPTH" in msg and "shape" in msg
    sd50 = torchvision.models.resnet50(weights=None).state_dict()
    with pytest.raises(ValueError, match="DEPTH"):
        load_torchvision_resnet_state_dict(ResNet(depth=18), sd50)
    with pytest.raises(ValueError, match="DEPTH"):
        load_torchvision_resnet_state_dict(ResNet(depth=34), sd50)

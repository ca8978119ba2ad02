"""Modulated deformable convolution: equals the plain conv at init, gradients reach offsets."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import resnet as tv_resnet
from torchvision.ops import FrozenBatchNorm2d

from multitask.modeling.backbone.resnet import _to_deformable
from multitask.modeling.layers import ModulatedDeformConv2d
from multitask.modeling.layers import deform_conv as deform_conv_module

pytestmark = pytest.mark.usefixtures("one_thread")


# in, out, kernel, stride, padding, dilation, groups, deformable_groups, modulated, bias
CASES = [
    (8, 16, 3, 1, 1, 1, 1, 1, True, True),
    (8, 16, 3, 2, 1, 1, 1, 1, True, True),
    (8, 16, 3, 1, 1, 1, 4, 1, True, True),
    (8, 16, 3, 1, 1, 1, 1, 2, True, False),
    (8, 12, 3, 2, 2, 2, 2, 2, True, True),
    (6, 4, 1, 1, 0, 1, 1, 1, True, True),
    (8, 16, 3, 1, 1, 1, 1, 1, False, True),  # DCNv1
    (8, 16, 3, 2, 1, 1, 2, 2, False, True),
]
CASE_IDS = [
    "k3s1", "k3s2", "groups4", "dg2_nobias", "k3s2_dil2_g2_dg2", "k1", "dcnv1", "dcnv1_s2_g2_dg2"
]


def _check_equals_plain_conv(case, device, x_shape=(2, 8, 9, 11)):
    cin, cout, k, stride, pad, dil, groups, dgroups, modulated, bias = case
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(
        cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups,
        deformable_groups=dgroups, bias=bias, modulated=modulated,
    ).to(device)
    assert m.weight.shape == (cout, cin // groups, k, k)
    per_position = 3 if modulated else 2
    assert m.conv_offset.out_channels == dgroups * per_position * k * k
    x = torch.randn(x_shape[0], cin, *x_shape[2:], device=device)
    with torch.no_grad():
        out = m(x)
        ref = F.conv2d(x, m.weight, m.bias, stride=stride, padding=pad, dilation=dil, groups=groups)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fresh_deform_conv_equals_conv2d(case):
    _check_equals_plain_conv(case, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fresh_deform_conv_equals_conv2d_cuda(case):
    _check_equals_plain_conv(case, "cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_deform_conv_cpu_equals_cuda_with_offsets():
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(8, 16, 3, padding=1, deformable_groups=2)
    with torch.no_grad():
        m.conv_offset.weight.normal_(std=0.1)
        m.conv_offset.bias.normal_(std=0.5)
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        cpu = m(x)
        gpu = m.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "op",
    [deform_conv_module._deform_conv2d, torchvision.ops.deform_conv2d],
    ids=["module_kernel", "torchvision"],
)
@pytest.mark.parametrize("stride, groups, dgroups", [(1, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_zero_offset_unit_mask_op_equals_conv(op, stride, groups, dgroups):
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 10)
    weight = torch.randn(12, 8 // groups, 3, 3)
    bias = torch.randn(12)
    ho = (7 + 2 - 3) // stride + 1
    wo = (10 + 2 - 3) // stride + 1
    offset = torch.zeros(2, 2 * dgroups * 9, ho, wo)
    mask = torch.ones(2, dgroups * 9, ho, wo)
    out = op(x, offset, weight, bias, stride=(stride, stride), padding=(1, 1), mask=mask)
    ref = F.conv2d(x, weight, bias, stride=stride, padding=1, groups=groups)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_integer_offset_shifts_sampling():
    """An offset of +1 in x for every tap of a 1x1 kernel reads the right neighbour."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 4, 5)
    weight = torch.randn(3, 2, 1, 1)
    offset = torch.zeros(1, 2, 4, 5)
    offset[:, 1] = 1.0  # (dy, dx) per tap: dx = 1
    out = deform_conv_module._deform_conv2d(x, offset, weight, None, mask=torch.ones(1, 1, 4, 5))
    shifted = torch.zeros_like(x)
    shifted[..., :-1] = x[..., 1:]
    torch.testing.assert_close(out, F.conv2d(shifted, weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "block_cls, inplanes, planes, stride",
    [
        (tv_resnet.BasicBlock, 16, 16, 1),
        (tv_resnet.Bottleneck, 32, 8, 1),
        (tv_resnet.Bottleneck, 16, 8, 2),
    ],
)
def test_deformable_block_from_plain_block_identical_at_init(block_cls, inplanes, planes, stride):
    torch.manual_seed(0)
    downsample = None
    if stride != 1 or inplanes != planes * block_cls.expansion:
        downsample = torch.nn.Sequential(
            torch.nn.Conv2d(inplanes, planes * block_cls.expansion, 1, stride=stride, bias=False),
            FrozenBatchNorm2d(planes * block_cls.expansion),
        )
    plain = block_cls(inplanes, planes, stride=stride, downsample=downsample,
                      norm_layer=FrozenBatchNorm2d).eval()
    deform = copy.deepcopy(plain)
    deform.conv2 = _to_deformable(plain.conv2, modulated=True, groups=1)
    assert isinstance(deform.conv2, ModulatedDeformConv2d)
    assert deform.conv2.stride == plain.conv2.stride
    torch.testing.assert_close(deform.conv2.weight, plain.conv2.weight, rtol=0, atol=0)
    x = torch.randn(2, inplanes, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(deform(x), plain(x), rtol=1e-4, atol=1e-4)


def test_gradients_reach_conv_offset_with_nonzero_offsets():
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(8, 16, 3, padding=1, deformable_groups=2)
    with torch.no_grad():
        m.conv_offset.weight.normal_(std=0.05)
        m.conv_offset.bias.uniform_(-0.7, 0.7)  # fractional offsets, away from the kinks
    x = torch.randn(2, 8, 9, 11, requires_grad=True)
    offset, mask = m.offset_and_mask(x)
    assert offset.abs().min() > 0 and not torch.allclose(mask, torch.ones_like(mask))
    out = m(x)
    (out * torch.randn_like(out)).sum().backward()
    for p in (m.conv_offset.weight, m.conv_offset.bias, m.weight, m.bias):
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()


def test_gradients_reach_conv_offset_at_init():
    """Zero-initialised offsets still get a (finite, non-zero) gradient: training can start."""
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    out = m(x)
    (out * torch.randn_like(out)).sum().backward()
    g = m.conv_offset.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="groups"):
        ModulatedDeformConv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="deformable_groups"):
        ModulatedDeformConv2d(6, 8, 3, deformable_groups=4)


def test_reset_offset_restores_plain_conv():
    torch.manual_seed(0)
    m = ModulatedDeformConv2d(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 7, 7)
    with torch.no_grad():
        m.conv_offset.weight.normal_()
        assert not torch.allclose(m(x), F.conv2d(x, m.weight, m.bias, padding=1), atol=1e-3)
        m.reset_offset()
        torch.testing.assert_close(m(x), F.conv2d(x, m.weight, m.bias, padding=1),
                                   rtol=1e-4, atol=1e-4)


def test_deformable_output_can_be_modified_in_place():
    """ResNet blocks apply ReLU(inplace=True) to the conv output; autograd must allow it."""
    torch.manual_seed(0)
    conv = ModulatedDeformConv2d(8, 8, 3, padding=1)
    for n in (1, 2):
        x = torch.randn(n, 8, 9, 11, requires_grad=True)
        y = torch.relu_(conv(x))
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()

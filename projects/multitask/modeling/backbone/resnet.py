"""ResNet-18/34/50/101/152 with torchvision's module names and optional deformable 3x3 convs.

The network *is* torchvision's ``ResNet`` (so an ImageNet state dict from torchvision loads without
renaming); this file only swaps the norm layer, replaces the 3x3 conv of chosen stages by a
:class:`ModulatedDeformConv2d` (which keeps the ``conv2.weight`` name), freezes early stages, and
returns the stage outputs ``res2..res5``.
"""

import functools
import logging
from collections import OrderedDict
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.ops import FrozenBatchNorm2d

from ..layers import ModulatedDeformConv2d

logger = logging.getLogger(__name__)

_DEPTHS = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}
_STAGE_NAMES = ("res2", "res3", "res4", "res5")  # torchvision: layer1..layer4


def _norm_layer(norm: str, frozen_bn_eps: float = 1e-5):
    if norm == "FrozenBN":
        return functools.partial(FrozenBatchNorm2d, eps=frozen_bn_eps)
    if norm == "BN":
        return nn.BatchNorm2d
    raise ValueError(f"MODEL.RESNETS.NORM: unknown norm '{norm}' (use 'FrozenBN' or 'BN')")


class ResNet(nn.Module):
    """ResNet trunk returning ``{"res2": C2, "res3": C3, "res4": C4, "res5": C5}``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        out_features: stage names to return.
        norm: "FrozenBN" or "BN".
        freeze_at: 0 = train everything; 1 = freeze the stem; k >= 2 also freezes res2..res_k.
        deform_on_per_stage: four booleans (res2..res5) for deformable 3x3 convs.
        deform_modulated: DCNv2 (offsets + mask) instead of DCNv1.
        deform_num_groups: offset groups of the deformable convs.
        width_per_group: inner width of res2's bottleneck 3x3 convs (64 = standard).
        width_mult: scales every stage's width (1.0 = standard, torchvision-compatible).
        stride_in_1x1: stride a stage's first bottleneck in its 1x1 conv (MSRA / detectron2
            weights) instead of its 3x3 conv (torchvision).
        frozen_bn_eps: eps of the FrozenBatchNorm2d layers (``norm="FrozenBN"``).

    Input ``(N, 3, H, W)`` normalised image; output strides are 4, 8, 16, 32.
    """

    def __init__(
        self,
        depth: int = 50,
        out_features: Sequence[str] = _STAGE_NAMES,
        norm: str = "FrozenBN",
        freeze_at: int = 2,
        deform_on_per_stage: Sequence[bool] = (False, False, False, False),
        deform_modulated: bool = True,
        deform_num_groups: int = 1,
        width_per_group: int = 64,
        width_mult: float = 1.0,
        stride_in_1x1: bool = False,
        frozen_bn_eps: float = 1e-5,
    ):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"MODEL.RESNETS.DEPTH: {depth} is not one of {sorted(_DEPTHS)}")
        if len(deform_on_per_stage) != 4:
            raise ValueError("MODEL.RESNETS.DEFORM_ON_PER_STAGE needs 4 booleans (res2..res5)")
        unknown = set(out_features) - set(_STAGE_NAMES)
        if unknown:
            raise ValueError(f"MODEL.RESNETS.OUT_FEATURES: unknown stages {sorted(unknown)}")
        block, layers = _DEPTHS[depth]
        if block is tv_resnet.BasicBlock and width_per_group != 64:
            raise ValueError("ResNet-18/34 only support MODEL.RESNETS.WIDTH_PER_GROUP = 64")
        if block is tv_resnet.BasicBlock and stride_in_1x1:
            raise ValueError("MODEL.RESNETS.STRIDE_IN_1X1 needs bottleneck blocks (ResNet-50+)")
        if width_mult == 1.0:
            trunk = tv_resnet.ResNet(
                block, layers, width_per_group=width_per_group,
                norm_layer=_norm_layer(norm, frozen_bn_eps),
            )
        else:
            trunk = _NarrowResNet(
                block, layers, width_mult, width_per_group, _norm_layer(norm, frozen_bn_eps)
            )
        # torchvision's names, without the classifier
        self.conv1, self.bn1, self.relu, self.maxpool = (
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
        )
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            trunk.layer1,
            trunk.layer2,
            trunk.layer3,
            trunk.layer4,
        )
        self.out_features = list(out_features)
        self.block_expansion = block.expansion
        base = int(round(64 * width_mult))
        self._out_channels = {
            name: base * 2**i * block.expansion for i, name in enumerate(_STAGE_NAMES)
        }

        if stride_in_1x1:
            for stage in self.stages():
                first = stage[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, first.conv1.stride
        for stage, deform in zip(self.stages(), deform_on_per_stage):
            if deform:
                for blk in stage:
                    blk.conv2 = _to_deformable(blk.conv2, deform_modulated, deform_num_groups)
        self.freeze(freeze_at)
        # inference folds FrozenBatchNorm2d into the convs (see forward); False runs
        # torchvision's block forwards as they are. Not in training: it did not make a step
        # faster, and single-threaded oneDNN gave some folded weight gradients 0.5 % off the
        # float64 ones (1e-6 unfolded)
        self.fold_frozen_bn = True

    def stages(self) -> List[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    @property
    def out_channels(self) -> Dict[str, int]:
        return {k: self._out_channels[k] for k in self.out_features}

    @property
    def strides(self) -> Dict[str, int]:
        return {name: 4 * 2**i for i, name in enumerate(_STAGE_NAMES)}

    def freeze(self, freeze_at: int) -> None:
        """detectron2's FREEZE_AT: 1 freezes the stem, k >= 2 also freezes res2..res_k."""
        # As detectron2: BatchNorm of frozen stages becomes FrozenBatchNorm2d (a BatchNorm2d put
        # in eval mode would be switched back to batch statistics by the next ``model.train()``).
        if freeze_at >= 1 and isinstance(self.bn1, nn.BatchNorm2d):
            self.bn1 = _frozen_batchnorm(self.bn1)
        modules = [nn.ModuleList([self.conv1, self.bn1])] + self.stages()
        for m in modules[: max(freeze_at, 0)]:
            for p in m.parameters():
                p.requires_grad_(False)
            for sub in list(m.modules()):
                for name, child in sub.named_children():
                    if isinstance(child, nn.BatchNorm2d):
                        setattr(sub, name, _frozen_batchnorm(child))

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        # At inference every FrozenBatchNorm2d is folded into the conv before it: the same
        # values to float rounding, one pass over each activation fewer (the norms took ~250 ms
        # of the R-50 trunk's ~1.8 s at 800x1216 on 2 CPU cores). torchvision's block forwards
        # call conv and norm separately, hence _block_folded.
        fold = self.fold_frozen_bn and not self.training
        x = _conv_norm(self.conv1, self.bn1, x) if fold else self.bn1(self.conv1(x))
        x = self.maxpool(self.relu(x))
        out = OrderedDict()
        for name, stage in zip(_STAGE_NAMES, self.stages()):
            if fold:
                for blk in stage:
                    x = _block_folded(blk, x)
            else:
                x = stage(x)
            if name in self.out_features:
                out[name] = x
            if name == self.out_features[-1]:
                break
        return out


def _conv_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, computed as one convolution when ``norm`` is a FrozenBatchNorm2d (the
    folded weights are computed from the parameters in every call: nothing can go stale)."""
    if not isinstance(norm, FrozenBatchNorm2d):
        return norm(conv(x))
    scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
    shift = norm.bias - norm.running_mean * scale
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    if isinstance(conv, ModulatedDeformConv2d):
        return conv.forward_with_weight(x, weight, bias)
    return conv._conv_forward(x, weight, bias)


def _block_folded(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``Bottleneck`` / ``BasicBlock`` forward with :func:`_conv_norm`."""
    identity = x
    out = blk.relu(_conv_norm(blk.conv1, blk.bn1, x))
    out = _conv_norm(blk.conv2, blk.bn2, out)
    if isinstance(blk, tv_resnet.Bottleneck):
        out = _conv_norm(blk.conv3, blk.bn3, blk.relu(out))
    if blk.downsample is not None:
        ds = blk.downsample
        identity = _conv_norm(ds[0], ds[1], x) if len(ds) == 2 else ds(x)
    return blk.relu(out + identity)


def _frozen_batchnorm(bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight)
            frozen.bias.copy_(bn.bias)
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


class _NarrowResNet(tv_resnet.ResNet):
    """torchvision's ResNet with every stage's width scaled by ``width_mult`` (same names).

    torchvision hard-codes the widths 64/128/256/512; a narrower trunk (e.g. ``0.5``) makes
    CPU-sized models such as the quickstart's. ImageNet weights only fit ``width_mult = 1``.
    """

    def __init__(self, block, layers, width_mult: float, width_per_group: int, norm_layer):
        nn.Module.__init__(self)
        base = int(round(64 * width_mult))
        if base < 8:
            raise ValueError(f"MODEL.RESNETS.WIDTH_MULT {width_mult} is too small")
        self._norm_layer = norm_layer
        self.dilation = 1
        self.groups = 1
        self.base_width = width_per_group
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, base, layers[0])
        self.layer2 = self._make_layer(block, base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], stride=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def _to_deformable(conv: nn.Conv2d, modulated: bool, groups: int) -> ModulatedDeformConv2d:
    dconv = ModulatedDeformConv2d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        deformable_groups=groups,
        bias=conv.bias is not None,
        modulated=modulated,
    )
    with torch.no_grad():
        dconv.weight.copy_(conv.weight)
    return dconv


def build_resnet(cfg) -> ResNet:
    r = cfg.MODEL.RESNETS
    return ResNet(
        depth=r.DEPTH,
        out_features=r.OUT_FEATURES,
        norm=r.NORM,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        deform_on_per_stage=r.DEFORM_ON_PER_STAGE,
        deform_modulated=r.DEFORM_MODULATED,
        deform_num_groups=r.DEFORM_NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        width_mult=r.WIDTH_MULT,
        stride_in_1x1=r.STRIDE_IN_1X1,
        frozen_bn_eps=r.FROZEN_BN_EPS,
    )


def load_torchvision_resnet_state_dict(
    resnet: ResNet, state_dict: Mapping[str, torch.Tensor]
) -> Tuple[List[str], List[str]]:
    """Load a torchvision-named ResNet state dict (e.g. ImageNet weights) into ``resnet``.

    The classifier (``fc.*``) is dropped. Returns ``(missing, unexpected)`` key lists; for a
    deformable backbone the only missing keys are the zero-initialised ``conv_offset`` branches.
    BatchNorm statistics (``num_batches_tracked``) that FrozenBatchNorm2d does not keep are
    ignored.
    """
    sd = {
        k: v
        for k, v in state_dict.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    own = resnet.state_dict()
    for k, v in sd.items():
        if k in own and own[k].shape != v.shape:
            raise ValueError(
                f"Backbone weight '{k}' has shape {tuple(v.shape)} in the checkpoint but "
                f"{tuple(own[k].shape)} in the model (wrong MODEL.RESNETS.DEPTH?)"
            )
    result = resnet.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    return missing, list(result.unexpected_keys)

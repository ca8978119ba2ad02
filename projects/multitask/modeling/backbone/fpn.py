"""ResNet + FPN backbone producing ``p2..p6`` (torchvision's FeaturePyramidNetwork)."""

from collections import OrderedDict
from typing import Dict

import torch
from fvcore.common.registry import Registry
from torch import nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from ..layers import get_norm
from .resnet import build_resnet

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry for backbones. A registered function is called as ``fn(cfg)`` and returns an
``nn.Module`` whose forward maps a normalised image batch ``(N, 3, H, W)`` to an ordered dict of
feature maps, and which has ``out_channels`` (int, shared by all maps), ``strides``
(dict name -> int) and ``size_divisibility`` (int).
"""


class ResNetFPN(nn.Module):
    """``bottom_up`` ResNet + top-down FPN. Output: OrderedDict ``p2, p3, p4, p5, p6``.

    ``p6`` is a stride-2 max-pool of ``p5`` (as detectron2's ``LastLevelMaxPool``); it feeds the
    RPN only. All maps have ``out_channels`` channels; ``p_k`` has stride ``2**k``. ``norm``
    (``MODEL.FPN.NORM``: "", "GN" or "BN") follows every lateral and output conv.
    """

    def __init__(self, bottom_up: nn.Module, in_features, out_channels: int = 256, norm: str = ""):
        super().__init__()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        in_channels = [bottom_up.out_channels[f] for f in self.in_features]
        self.fpn = FeaturePyramidNetwork(
            in_channels,
            out_channels,
            extra_blocks=LastLevelMaxPool(),
            norm_layer=get_norm(norm, "MODEL.FPN.NORM"),
        )
        first_stage = int(self.in_features[0][-1])
        self._names = [f"p{first_stage + i}" for i in range(len(self.in_features) + 1)]
        self.out_channels = out_channels
        self.strides = {name: 2 ** int(name[1:]) for name in self._names}
        self.size_divisibility = 32

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        c = self.bottom_up(x)
        feats = self.fpn(OrderedDict((k, c[k]) for k in self.in_features))
        return OrderedDict(zip(self._names, feats.values()))


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg) -> ResNetFPN:
    """ResNet (``MODEL.RESNETS.*``) + FPN (``MODEL.FPN.*``)."""
    fpn = cfg.MODEL.FPN
    return ResNetFPN(build_resnet(cfg), fpn.IN_FEATURES, fpn.OUT_CHANNELS, fpn.NORM)


def build_backbone(cfg) -> nn.Module:
    """Build ``cfg.MODEL.BACKBONE.NAME`` from :data:`BACKBONE_REGISTRY`."""
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg)

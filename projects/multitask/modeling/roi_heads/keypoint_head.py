"""Keypoint head with heatmap refinement by learned offsets (report section 3.2.3)."""

from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from fvcore.common.registry import Registry
from torch import nn
from torch.autograd.function import once_differentiable

from ..layers import ModulatedDeformConv2d, get_norm
from ..layers.row_gather import capturing_graph
from .keypoint_codec import refine_heatmaps

ROI_KEYPOINT_HEAD_REGISTRY = Registry("ROI_KEYPOINT_HEAD")
ROI_KEYPOINT_HEAD_REGISTRY.__doc__ = """
Registry for keypoint heads. A registered class is built as ``cls(**cls.from_config(cfg, C))``
(or ``cls(cfg, C)`` without ``from_config``), ``C`` the ROI feature channels, and maps
pooled ROI features ``(R, C, P, P)`` to a dict with ``"heatmaps"`` ``(R, K, S, S)`` (the maps that
are supervised and decoded) and optionally ``"raw_heatmaps"`` and ``"offsets"``. A head with
children ``body`` and ``predictor`` (``forward(x) == predictor(body(x))``) is split between
torchvision's ``RoIHeads.keypoint_head`` and ``keypoint_predictor``; any other head becomes
``keypoint_head`` with an identity predictor.
"""


class OffsetRefinedKeypointPredictor(nn.Module):
    """torchvision's ``KeypointRCNNPredictor`` with offset refinement: a 4x4 stride-2 transposed
    conv ``kps_score_lowres`` (torchvision's name) and a ``up_scale`` bilinear upsample.

    With ``offset_refinement`` it has ``3K`` output channels: K heatmaps ``x`` and per keypoint an
    offset field ``(dx, dy)``; the output heatmap is ``y(p) = x(p + dp(p))``. The offset
    channels start at zero, so training starts from the plain heatmap (and a torchvision
    Keypoint R-CNN's ``kps_score_lowres`` loaded into the first K channels predicts exactly what
    it predicted there). With ``small_init`` (used for the ``gaussian_mse`` loss) the heatmaps
    start near zero instead of at the logit scale that suits the softmax cross-entropy.

    Forward: ``(R, C, P, P)`` -> dict ``heatmaps (R, K, S, S)`` (refined), ``raw_heatmaps`` and
    ``offsets (R, 2K, S, S)`` (when refining), ``S = 2 * up_scale * P``.
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int = 17,
        offset_refinement: bool = True,
        up_scale: int = 2,
        small_init: bool = False,
    ):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.offset_refinement = offset_refinement
        self.up_scale = up_scale
        out = num_keypoints * (3 if offset_refinement else 1)
        self.kps_score_lowres = nn.ConvTranspose2d(
            in_channels, out, kernel_size=4, stride=2, padding=1
        )
        w = self.kps_score_lowres.weight
        if small_init:  # regression targets in [0, 1]: start near 0, not at logit scale
            nn.init.normal_(w, std=0.001)
        else:
            nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.kps_score_lowres.bias)
        if offset_refinement:
            with torch.no_grad():
                w[:, num_keypoints:].zero_()

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.kps_score_lowres(x)
        if self.up_scale != 1:
            x = upsample_bilinear(x, self.up_scale)
        k = self.num_keypoints
        if not self.offset_refinement:
            return {"heatmaps": x}
        raw, offsets = x[:, :k], x[:, k:]
        return {"heatmaps": refine_heatmaps(raw, offsets), "raw_heatmaps": raw, "offsets": offsets}


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class OffsetRefinedKeypointHead(nn.Module):
    """Conv stack ``body`` + :class:`OffsetRefinedKeypointPredictor` ``predictor``.

    ``body`` is ``conv_dims`` 3x3 convs (deformable when ``deform_on``: the report's "H") with
    ReLU (and ``norm`` -- ``"GN"``/``"BN"`` -- between conv and ReLU when set): without norm and
    deformable convs it is torchvision's ``KeypointRCNNHeads`` layer for layer (indices 0, 2, ..
    14), and the ROI heads hand it to torchvision's ``RoIHeads`` as ``keypoint_head`` and the
    predictor as ``keypoint_predictor``, so parameter names match torchvision's.
    14x14 ROI features -> 56x56 maps.

    Forward: ``(R, C, 14, 14)`` -> dict ``heatmaps (R, K, 56, 56)`` (refined),
    ``raw_heatmaps (R, K, 56, 56)`` and ``offsets (R, 2K, 56, 56)`` (when refining).
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int = 17,
        conv_dims: Sequence[int] = (512,) * 8,
        deform_on: bool = False,
        deform_modulated: bool = True,
        offset_refinement: bool = True,
        up_scale: int = 2,
        small_init: bool = False,
        norm: str = "",
    ):
        super().__init__()
        norm_layer = get_norm(norm, "MODEL.ROI_KEYPOINT_HEAD.NORM")
        layers = []
        c = in_channels
        for dim in conv_dims:
            bias = norm_layer is None
            if deform_on:
                conv = ModulatedDeformConv2d(
                    c, dim, 3, padding=1, bias=bias, modulated=deform_modulated
                )
            else:
                conv = nn.Conv2d(c, dim, 3, padding=1, bias=bias)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if bias:
                nn.init.zeros_(conv.bias)
            layers.append(conv)
            if norm_layer is not None:
                layers.append(norm_layer(dim))
            layers.append(nn.ReLU(inplace=True))
            c = dim
        self.body = nn.Sequential(*layers)
        self.predictor = OffsetRefinedKeypointPredictor(
            c, num_keypoints, offset_refinement, up_scale, small_init
        )

    @classmethod
    def from_config(cls, cfg, in_channels: int) -> Dict:
        k = cfg.MODEL.ROI_KEYPOINT_HEAD
        if k.HEATMAP_SIZE % (2 * k.POOLER_RESOLUTION):
            raise ValueError(
                f"MODEL.ROI_KEYPOINT_HEAD.HEATMAP_SIZE ({k.HEATMAP_SIZE}) must be a multiple of "
                f"2 x POOLER_RESOLUTION ({2 * k.POOLER_RESOLUTION})"
            )
        return dict(
            in_channels=in_channels,
            num_keypoints=k.NUM_KEYPOINTS,
            conv_dims=k.CONV_DIMS,
            deform_on=k.DEFORM_ON,
            deform_modulated=k.DEFORM_MODULATED,
            offset_refinement=k.OFFSET_REFINEMENT,
            up_scale=k.HEATMAP_SIZE // (2 * k.POOLER_RESOLUTION),
            small_init=k.LOSS_TYPE == "gaussian_mse",
            norm=k.NORM,
        )

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.predictor(self.body(x))


class _ChannelsLastUpsample(torch.autograd.Function):
    """2-D bilinear upsampling (``align_corners=False``) computed in channels-last layout,
    forward and backward, with contiguous (NCHW) output and input gradient."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.in_shape = tuple(x.shape)
        ctx.scale = float(scale)
        x = x.contiguous(memory_format=torch.channels_last)
        y = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
        ctx.out_hw = tuple(y.shape[-2:])
        return y.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        grad = grad.contiguous(memory_format=torch.channels_last)
        gx = torch.ops.aten.upsample_bilinear2d_backward(
            grad, list(ctx.out_hw), list(ctx.in_shape), False, ctx.scale, ctx.scale
        )
        return gx.contiguous(), None


def upsample_bilinear(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)``, returned
    contiguous. On CPU, forward and backward run in channels-last layout: the same values, but
    torch's NCHW bilinear kernels took ~9 ms forward and ~6 ms backward on a (19, 51, 28, 28)
    batch of heatmap logits, the channels-last ones ~1 ms each plus the layout copies."""
    if x.device.type == "cpu" and x.dim() == 4 and not capturing_graph():
        return _ChannelsLastUpsample.apply(x, scale)
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def build_keypoint_head(cfg, in_channels: int) -> nn.Module:
    """Build ``cfg.MODEL.ROI_KEYPOINT_HEAD.NAME`` from :data:`ROI_KEYPOINT_HEAD_REGISTRY`."""
    cls = ROI_KEYPOINT_HEAD_REGISTRY.get(cfg.MODEL.ROI_KEYPOINT_HEAD.NAME)
    if hasattr(cls, "from_config"):
        return cls(**cls.from_config(cfg, in_channels))
    return cls(cfg, in_channels)

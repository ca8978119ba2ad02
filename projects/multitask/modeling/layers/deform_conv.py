"""Modulated deformable convolution (DCNv2) with its own offset/mask branch.

One module serves the ResNet backbone ("RB") and the keypoint head ("RB+H"). The kernel is
``torchvision.ops.deform_conv2d`` (CPU and CUDA); on CPU a faster, numerically equal pure-PyTorch
kernel is used when available (see ``deform_conv_fast.py``).
"""

import math
from typing import Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair

# the fast CPU path; it dispatches to torchvision's deform_conv2d on other devices
from .deform_conv_fast import deform_conv2d_auto as _deform_conv2d

_IntPair = Union[int, Tuple[int, int]]


class ModulatedDeformConv2d(nn.Module):
    """A k x k deformable convolution that predicts its own offsets (and mask).

    The main weight is stored as ``weight`` (and ``bias``) exactly like ``nn.Conv2d``, so weights
    of a plain convolution load into it unchanged; the offset/mask predictor is the sub-module
    ``conv_offset``. ``conv_offset`` is zero-initialised and the mask is ``2 * sigmoid(m)``, so a
    freshly built module computes exactly the plain convolution (offsets 0, mask 1).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as
            ``nn.Conv2d``.
        deformable_groups: number of offset groups (channels are split into this many groups,
            each with its own offsets and mask).
        modulated: True for DCNv2 (offsets + mask), False for DCNv1 (offsets only).

    Shapes:
        input ``(N, C_in, H, W)`` -> output ``(N, C_out, H_out, W_out)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair = 3,
        stride: _IntPair = 1,
        padding: _IntPair = 1,
        dilation: _IntPair = 1,
        groups: int = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        modulated: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be "
                f"divisible by groups ({groups})"
            )
        if in_channels % deformable_groups:
            raise ValueError(
                f"in_channels ({in_channels}) must be divisible by deformable_groups "
                f"({deformable_groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        self.groups = groups
        self.deformable_groups = deformable_groups
        self.modulated = modulated

        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        per_position = 3 if modulated else 2
        self.conv_offset = nn.Conv2d(
            in_channels,
            deformable_groups * per_position * kh * kw,
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        self.reset_offset()

    def reset_offset(self) -> None:
        """Zero the offset/mask branch: the module then equals the plain convolution."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offset_and_mask(self, x: torch.Tensor):
        """Return ``offset (N, 2*G*kh*kw, Ho, Wo)`` and ``mask (N, G*kh*kw, Ho, Wo)`` or None."""
        out = self.conv_offset(x)
        n_off = 2 * self.deformable_groups * self.kernel_size[0] * self.kernel_size[1]
        offset = out[:, :n_off]
        mask = 2.0 * torch.sigmoid(out[:, n_off:]) if self.modulated else None
        return offset, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_weight(x, self.weight, self.bias)

    def forward_with_weight(self, x: torch.Tensor, weight: torch.Tensor,
                            bias: Optional[torch.Tensor]) -> torch.Tensor:
        """The forward pass with another main ``weight`` / ``bias`` (e.g. a norm folded in);
        the offsets and mask still come from ``conv_offset``."""
        offset, mask = self.offset_and_mask(x)
        return _deform_conv2d(
            x,
            offset,
            weight,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, deformable_groups={self.deformable_groups}, "
            f"modulated={self.modulated}, bias={self.bias is not None}"
        )

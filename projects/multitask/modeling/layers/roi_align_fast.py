"""Fast ROIAlign for CPU: ``torchvision.ops.roi_align`` as a weighted row gather.

torchvision's CPU ``roi_align`` loops over every output value in scalar C++, and its backward
scatters into the input gradient one value at a time on one thread; in the quickstart's
training step the three ROI poolers' backward took ~10 % of the step. :func:`roi_align_fast`
computes the same values and gradients from two well-optimised ATen kernels:

1. For every ROI, bin and sampling point the bilinear corners and weights are computed with
   torchvision's rules (``aligned`` half-pixel offset, minimum ROI size 1 when not aligned, a
   sample contributes only if ``-1 <= y <= H`` and ``-1 <= x <= W``, coordinates clamped to the
   map, ``sampling_ratio`` points per bin side, averaged). The two axes are separable, so this
   is a handful of vectorised ops on (ROIs, bins, samples) planes per axis.
2. The output is a weighted sum of ``(2 * sampling_ratio) ** 2`` rows of the channels-last
   feature table per bin: one ``embedding_bag`` call (:func:`.row_gather.gather_rows`).
3. The backward pass is the transposed gather :func:`.row_gather.scatter_rows` (sort by
   destination pixel, then ``embedding_bag``), not a serial scatter-add.

Only ``sampling_ratio > 0`` (a fixed number of points per bin, as every config here uses) and
float32 / float64 tensors take the fast path; adaptive sampling, other dtypes and non-CPU
tensors go to torchvision (CUDA keeps its kernel). There are no gradients for the boxes, as in
torchvision, and double backward is not supported. ``set_fast_cpu_roi_align(False)`` or
``MULTITASK_FAST_ROI_ALIGN=0`` turns the fast path off.
"""

import os
from typing import List, Tuple, Union

import torch
from torch.autograd.function import once_differentiable
from torchvision.ops import roi_align as _tv_roi_align

from .row_gather import capturing_graph, env_switch, gather_rows, scatter_rows

__all__ = ["roi_align_fast", "roi_align_auto", "set_fast_cpu_roi_align",
           "fast_cpu_roi_align_enabled"]

_fast_enabled = env_switch(os.environ, "MULTITASK_FAST_ROI_ALIGN")

BoxesArg = Union[torch.Tensor, List[torch.Tensor]]
SizeArg = Union[int, Tuple[int, int], List[int]]


def set_fast_cpu_roi_align(enabled: bool) -> None:
    """Enable or disable the fast CPU path used by :func:`roi_align_auto`."""
    global _fast_enabled
    _fast_enabled = bool(enabled)


def fast_cpu_roi_align_enabled() -> bool:
    """Whether :func:`roi_align_auto` uses :func:`roi_align_fast` for CPU tensors."""
    return _fast_enabled


def _axis_samples(start: torch.Tensor, length: torch.Tensor, bins: int, grid: int,
                  size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Bilinear corners along one axis for every ROI, bin and sampling point.

    Args:
        start, length: (R,) ROI start and extent in feature cells.
        bins: output bins along the axis; grid: sampling points per bin.
        size: feature map extent along the axis.

    Returns:
        idx (R, bins, 2 * grid) int64 cell indices and wts (R, bins, 2 * grid) weights (already
        divided by ``grid``; zero for points outside ``[-1, size]``), ordered (point, corner).
    """
    bin_len = (length / bins)[:, None, None]
    b = torch.arange(bins, dtype=start.dtype, device=start.device).view(1, bins, 1)
    p = torch.arange(grid, dtype=start.dtype, device=start.device).view(1, 1, grid)
    pos = start[:, None, None] + b * bin_len + (p + 0.5) * bin_len / grid
    inside = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = pos.floor().clamp(max=size - 1)
    frac = torch.where(low >= size - 1, torch.zeros_like(pos), pos - low)
    high = (low + 1).clamp(max=size - 1)
    scale = inside.to(pos.dtype) / grid
    idx = torch.stack((low, high), -1).long().flatten(2)
    wts = torch.stack(((1.0 - frac) * scale, frac * scale), -1).flatten(2)
    return idx, wts


def _sampling(rois: torch.Tensor, shape: torch.Size, out_hw: Tuple[int, int],
              spatial_scale: float, sampling_ratio: int,
              aligned: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows of the (N * H * W, C) feature table and weights for every output bin:
    idx / wts (R * PH * PW, (2 * sampling_ratio) ** 2)."""
    N, _, H, W = shape
    ph, pw = out_hw
    coords = rois[:, 1:]
    offset = 0.5 if aligned else 0.0
    x0 = coords[:, 0] * spatial_scale - offset
    y0 = coords[:, 1] * spatial_scale - offset
    w = coords[:, 2] * spatial_scale - offset - x0
    h = coords[:, 3] * spatial_scale - offset - y0
    if not aligned:  # torchvision's legacy rule: malformed ROIs are forced to 1x1
        w = w.clamp(min=1.0)
        h = h.clamp(min=1.0)
    iy, wy = _axis_samples(y0, h, ph, sampling_ratio, H)
    ix, wx = _axis_samples(x0, w, pw, sampling_ratio, W)
    image = rois[:, 0].long().view(-1, 1, 1, 1, 1)
    # (R, PH, PW, 2g, 2g): pixel (image, y, x) is table row (image * H + y) * W + x
    idx = (image * H + iy[:, :, None, :, None]) * W + ix[:, None, :, None, :]
    wts = wy[:, :, None, :, None] * wx[:, None, :, None, :]
    k = (2 * sampling_ratio) ** 2
    return idx.reshape(-1, k), wts.reshape(-1, k)


class _RoIAlignFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, out_hw, spatial_scale, sampling_ratio, aligned):
        N, C, H, W = input.shape
        # rois are in the input's dtype (roi_align_fast casts them), so are the weights
        idx, wts = _sampling(rois, input.shape, out_hw, spatial_scale, sampling_ratio, aligned)
        table = input.permute(0, 2, 3, 1).reshape(N * H * W, C)
        out = gather_rows(table, idx, wts)
        ctx.save_for_backward(idx, wts)
        ctx.input_shape = input.shape
        return out.view(rois.shape[0], out_hw[0], out_hw[1], C).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        idx, wts = ctx.saved_tensors
        N, C, H, W = ctx.input_shape
        grad_table = grad_out.new_zeros(N * H * W, C)
        src = grad_out.permute(0, 2, 3, 1).reshape(-1, C)
        scatter_rows(grad_table, idx, wts, src)
        grad_input = grad_table.view(N, H, W, C).permute(0, 3, 1, 2)
        return grad_input, None, None, None, None, None


def _out_hw(output_size: SizeArg) -> Tuple[int, int]:
    if isinstance(output_size, int):
        return (output_size, output_size)
    h, w = output_size
    return (int(h), int(w))


def roi_align_fast(
    input: torch.Tensor,
    boxes: BoxesArg,
    output_size: SizeArg,
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = False,
) -> torch.Tensor:
    """``torchvision.ops.roi_align`` (same arguments, values and input gradient) as a weighted
    row gather; see the module docstring. ``sampling_ratio`` must be positive.

    Args:
        input: (N, C, H, W) float32 or float64 features.
        boxes: (K, 5) ``(batch index, x1, y1, x2, y2)`` or a list of (K_i, 4) boxes per image,
            in image coordinates.
        output_size: ``(PH, PW)`` or an int.
        spatial_scale: image -> feature coordinate factor (1 / stride).
        sampling_ratio: sampling points per bin side.
        aligned: subtract half a cell (detectron2's ROIAlignV2).

    Returns:
        (K, C, PH, PW).
    """
    if sampling_ratio <= 0:
        raise ValueError(f"roi_align_fast needs a positive sampling_ratio, got {sampling_ratio}")
    if input.dim() != 4:
        raise ValueError(f"roi_align_fast: input must be (N, C, H, W), got {tuple(input.shape)}")
    if isinstance(boxes, torch.Tensor):
        rois = boxes
    else:  # per-image (K_i, 4) boxes -> (K, 5) with the image index first
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1)
                          for i, b in enumerate(boxes)]) if len(boxes) else input.new_zeros(0, 5)
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align_fast: boxes must be (K, 5), got {tuple(rois.shape)}")
    rois = rois.detach().to(input.dtype)
    if rois.shape[0] and not 0 <= int(rois[:, 0].min()) <= int(rois[:, 0].max()) < input.shape[0]:
        raise ValueError(f"roi_align_fast: batch indices must be in [0, {input.shape[0]}), got "
                         f"{int(rois[:, 0].min())}..{int(rois[:, 0].max())}")
    out_hw = _out_hw(output_size)
    if rois.shape[0] == 0 or input.numel() == 0:
        return input.new_zeros((rois.shape[0], input.shape[1]) + out_hw)
    with torch.autocast(input.device.type, enabled=False):
        return _RoIAlignFn.apply(input, rois, out_hw, float(spatial_scale),
                                 int(sampling_ratio), bool(aligned))


def roi_align_auto(
    input: torch.Tensor,
    boxes: BoxesArg,
    output_size: SizeArg,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """:func:`roi_align_fast` for float32 / float64 CPU tensors with ``sampling_ratio > 0`` when
    enabled, ``torchvision.ops.roi_align`` otherwise (also while a graph is traced for export).
    Same arguments as both."""
    if (_fast_enabled and input.device.type == "cpu" and sampling_ratio > 0
            and input.dtype in (torch.float32, torch.float64) and not capturing_graph()):
        return roi_align_fast(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return _tv_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)

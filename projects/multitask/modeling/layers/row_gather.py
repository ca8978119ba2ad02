"""Weighted row gathers and their transposes, the building block of the fast CPU samplers.

Bilinear sampling of a feature map is a weighted sum of a few rows of a channels-last table
(one row of ``C`` channels per pixel): ``out[b] = sum_j wts[b, j] * table[idx[b, j]]``.
:func:`gather_rows` computes that with ``F.embedding_bag`` (one multithreaded, vectorised
kernel). The gradient with respect to the table is the transposed operation, a scatter-add;
:func:`scatter_rows` turns it into a gather too, by sorting the samples by destination row, so
no serial ``index_add_`` is needed. Used by :mod:`.deform_conv_fast` and :mod:`.roi_align_fast`,
which also share :func:`env_switch` for their on/off environment variables and
:func:`capturing_graph`, which sends them back to torchvision's kernels while a graph is traced
for export (their custom autograd functions have no ONNX or TorchScript form).
"""

from typing import Mapping

import torch
import torch.nn.functional as F

__all__ = ["gather_rows", "scatter_rows", "env_switch", "capturing_graph", "is_channels_last"]


def env_switch(environ: Mapping[str, str], name: str) -> bool:
    """``environ[name]`` = 0 / false / off / no turns a fast path off; unset or anything else
    leaves it on."""
    return environ.get(name, "1").strip().lower() not in ("0", "false", "off", "no")


def capturing_graph() -> bool:
    """True while ``torch.jit.trace`` or ``torch.onnx.export`` records the model: the fast CPU
    paths step aside for torchvision's operators, which have ONNX and TorchScript forms."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def is_channels_last(t: torch.Tensor) -> bool:
    """A 4-D tensor in channels-last memory format and not also contiguous (a 1x1 map or a
    single channel is both): the fast samplers then read and write channels-last."""
    return (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
            and not t.is_contiguous())


def gather_rows(table: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
    """``out[b] = sum_j wts[b, j] * table[idx[b, j]]``.

    Args:
        table: (T, C) rows.
        idx: (B, J) int64 rows of ``table``.
        wts: (B, J) weights, the dtype of ``table``.

    Returns:
        (B, C).
    """
    return F.embedding_bag(idx, table, per_sample_weights=wts, mode="sum")


def scatter_rows(dst: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor,
                 src: torch.Tensor) -> None:
    """``dst[idx[b, j]] += wts[b, j] * src[b]`` for all b, j (the transpose of
    :func:`gather_rows`).

    Args:
        dst: (T, C) accumulated in place.
        idx: (B, J) int64 rows of ``dst``.
        wts: (B, J) weights.
        src: (B, C) rows.

    Sorting the samples by destination row turns the scatter-add into a gather
    (``embedding_bag`` with one bag per destination row) over the touched row range.
    """
    if idx.numel() == 0:
        return
    per_bag = idx.shape[1]
    flat = idx.reshape(-1)
    if dst.shape[0] < 2 ** 31:
        flat = flat.to(torch.int32)  # sorts ~1.7x faster than int64
    rows, order = flat.sort()
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    offsets = order.new_zeros(hi - lo + 1)
    torch.cumsum(torch.bincount(flat - lo, minlength=hi - lo), 0, out=offsets[1:])
    part = F.embedding_bag(order // per_bag, src, offsets,
                           per_sample_weights=wts.reshape(-1)[order], mode="sum",
                           include_last_offset=True)
    dst[lo:hi] += part

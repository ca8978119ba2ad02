"""Keypoint heatmaps: encoding targets, offset refinement, losses and decoding, side by side.

Coordinates follow detectron2/torchvision: a keypoint at continuous image position ``x`` inside a
box ``[x0, x1)`` lies at heatmap coordinate ``u = (x - x0) * S / (x1 - x0)``; heatmap cell ``i``
covers ``[i, i + 1)`` and its centre ``i + 0.5`` decodes back to ``x0 + (i + 0.5) * w / S``.
So encode -> decode moves a keypoint by at most half a heatmap cell.

All functions are pure: tensors in, tensors out.
"""

from typing import Tuple

import torch
import torch.nn.functional as F

from ..layers.row_gather import capturing_graph


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------
def keypoints_to_heatmap_coords(
    keypoints: torch.Tensor, rois: torch.Tensor, heatmap_size: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Map image keypoints into each ROI's heatmap frame.

    Args:
        keypoints: ``(R, K, 3)`` x, y, visibility (COCO: 0 absent, 1 occluded, 2 visible).
        rois: ``(R, 4)`` XYXY boxes the heatmaps cover.
        heatmap_size: side ``S`` of the square heatmap.

    Returns:
        ``uv (R, K, 2)`` continuous heatmap coordinates and ``valid (R, K)`` bool: labelled
        (v > 0) and inside the ROI.
    """
    x0, y0 = rois[:, 0:1], rois[:, 1:2]
    sx = heatmap_size / (rois[:, 2:3] - x0).clamp(min=1e-6)
    sy = heatmap_size / (rois[:, 3:4] - y0).clamp(min=1e-6)
    u = (keypoints[..., 0] - x0) * sx
    v = (keypoints[..., 1] - y0) * sy
    inside = (u >= 0) & (u < heatmap_size) & (v >= 0) & (v < heatmap_size)
    valid = (keypoints[..., 2] > 0) & inside
    return torch.stack([u, v], dim=-1), valid


def encode_onehot_targets(uv: torch.Tensor, valid: torch.Tensor, heatmap_size: int) -> torch.Tensor:
    """Flat cell index ``(R, K)`` of each keypoint (the target of ``softmax_ce``); -1 if invalid."""
    cells = uv.floor().long().clamp(0, heatmap_size - 1)
    index = cells[..., 1] * heatmap_size + cells[..., 0]
    return torch.where(valid, index, torch.full_like(index, -1))


def gaussian_profiles(
    u: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, height: int, width: int, sigma: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The factors of the one Gaussian renderer: ``gx (..., W)`` and ``gy (..., H)``.

    ``u``, ``v`` are continuous heatmap coordinates in this module's convention (cell ``i``
    covers ``[i, i + 1)``, its centre is ``i + 0.5``); the map of a keypoint is
    ``gy[..., j, None] * gx[..., None, i]``, that is
    ``exp(-((i + 0.5 - u)^2 + (j + 0.5 - v)^2) / (2 sigma^2))``: peak 1 in the cell holding the
    keypoint, all zero where ``valid`` is False.
    """
    inv = -0.5 / float(sigma) ** 2
    xs = torch.arange(width, dtype=u.dtype, device=u.device) + 0.5
    ys = torch.arange(height, dtype=v.dtype, device=v.device) + 0.5
    gx = torch.exp((xs - u[..., None]) ** 2 * inv) * valid[..., None].to(u.dtype)
    gy = torch.exp((ys - v[..., None]) ** 2 * inv)
    return gx, gy


def render_gaussians(
    u: torch.Tensor, v: torch.Tensor, valid: torch.Tensor, height: int, width: int, sigma: float
) -> torch.Tensor:
    """Gaussian maps ``(..., H, W)`` of keypoints at ``u``, ``v`` (see :func:`gaussian_profiles`;
    the PRN's heatmaps are drawn with the same profiles)."""
    gx, gy = gaussian_profiles(u, v, valid, height, width, sigma)
    return gy[..., :, None] * gx[..., None, :]


def encode_gaussian_targets(
    uv: torch.Tensor, valid: torch.Tensor, heatmap_size: int, sigma: float = 1.0
) -> torch.Tensor:
    """Gaussian heatmaps ``(R, K, S, S)`` with std ``sigma`` cells centred on each keypoint.

    The peak lies in the cell that contains the keypoint; invalid keypoints get all-zero maps (as
    the report prescribes for truncated or occluded joints).
    """
    return render_gaussians(uv[..., 0], uv[..., 1], valid, heatmap_size, heatmap_size, sigma)


# ---------------------------------------------------------------------------------------------
# Offset refinement (report eq. 6: y(p0) = x(p0 + dp(p0)), bilinear as eqs. 2-3)
# ---------------------------------------------------------------------------------------------
def refine_heatmaps(heatmaps: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Resample each heatmap at its own offset positions.

    Args:
        heatmaps: ``(R, K, H, W)``.
        offsets: ``(R, 2K, H, W)``, per keypoint ``(dx, dy)`` in heatmap cells.

    Returns:
        ``(R, K, H, W)`` with ``y[r, k, i, j] = x[r, k, i + dy, j + dx]`` read with bilinear
        interpolation; positions outside the map read as 0 (``g(a, b) = max(0, 1 - |a - b|)``).
    """
    r, k, h, w = heatmaps.shape
    if r == 0 and not capturing_graph():  # a traced graph keeps the general path
        return heatmaps
    # fixed by the head: constants in a traced graph, whose reshapes then work for R = 0
    k, h, w = int(k), int(h), int(w)
    off = offsets.reshape(r * k, 2, h, w)
    ys = torch.arange(h, dtype=heatmaps.dtype, device=heatmaps.device).view(1, h, 1)
    xs = torch.arange(w, dtype=heatmaps.dtype, device=heatmaps.device).view(1, 1, w)
    # normalised coordinates with align_corners=True: -1 is cell 0, +1 is the last cell
    gx = (xs + off[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + off[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)  # (R*K, H, W, 2)
    out = F.grid_sample(
        heatmaps.reshape(r * k, 1, h, w),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return out.view(r, k, h, w)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def keypoint_softmax_ce_loss(heatmaps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """detectron2's keypoint loss: cross-entropy over the ``S*S`` cells of each visible keypoint.

    ``heatmaps (R, K, S, S)`` logits, ``targets (R, K)`` flat index or -1. Averaged over visible
    keypoints; returns a zero that keeps the graph when there are none.
    """
    valid = targets >= 0
    if heatmaps.numel() == 0 or not bool(valid.any()):
        return heatmaps.sum() * 0.0
    logits = heatmaps.flatten(2)[valid]  # (V, S*S)
    return F.cross_entropy(logits, targets[valid])


def keypoint_gaussian_ce_loss(
    heatmaps: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy over the ``S*S`` cells against a Gaussian target distribution.

    As :func:`keypoint_softmax_ce_loss`, but each target map of :func:`encode_gaussian_targets`
    is normalised to sum to 1, so a peak one cell off is penalised less than one ten cells off:
    denser gradients than the one-hot target, which helps models trained from scratch. The decoded
    peak is unchanged (argmax of the logits). ``heatmaps`` and ``targets`` are ``(R, K, S, S)``,
    ``valid (R, K)``; averaged over visible keypoints, zero with a graph if none.
    """
    if heatmaps.numel() == 0 or not bool(valid.any()):
        return heatmaps.sum() * 0.0
    logp = F.log_softmax(heatmaps[valid].flatten(1), dim=1)  # (V, S*S)
    target = targets[valid].flatten(1)
    target = target / target.sum(1, keepdim=True).clamp(min=1e-12)
    return -(target * logp).sum(1).mean()


def keypoint_gaussian_mse_loss(
    heatmaps: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """The report's eq. 9: ``sum_p (F_k(p) - H_k(p))^2`` averaged over visible keypoints.

    ``heatmaps`` and ``targets`` are ``(R, K, S, S)``; ``valid (R, K)``. Maps of unlabelled
    keypoints do not contribute (they are not known to be empty). Zero with a graph if none.
    """
    if heatmaps.numel() == 0 or not bool(valid.any()):
        return heatmaps.sum() * 0.0
    diff = (heatmaps - targets)[valid]  # (V, S, S)
    return diff.pow(2).flatten(1).sum(1).mean()


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------
KEYPOINT_DECODERS = ("subcell", "bicubic")
KEYPOINT_SCORES = ("logit", "prob")


def _peak_probability(maps: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """``exp(peak) / sum(exp(maps))`` over the last axis of ``maps (..., S*S)`` for ``peak
    (...)``: the softmax of the map at its peak (detectron2's keypoint probability)."""
    return 1.0 / torch.exp(maps - peak.unsqueeze(-1)).sum(dim=-1)


def heatmaps_to_keypoints(
    heatmaps: torch.Tensor, rois: torch.Tensor, score: str = "logit"
) -> torch.Tensor:
    """Decode ``(R, K, S, S)`` heatmaps over ``(R, 4)`` XYXY boxes into ``(R, K, 3)`` x, y, score.

    The peak cell's centre is moved a quarter cell towards the larger neighbour on each axis
    (the usual sub-cell refinement of heatmap decoders), then mapped to image coordinates.
    ``score``: ``"logit"``, the heatmap value at the peak (a logit for ``softmax_ce``), or
    ``"prob"``, the peak's softmax probability over the ``S x S`` map.
    """
    if score not in KEYPOINT_SCORES:
        raise ValueError(f"keypoint score must be one of {KEYPOINT_SCORES}, got '{score}'")
    r, k, h, w = heatmaps.shape
    if r == 0 and not capturing_graph():  # a traced graph keeps the general path
        return heatmaps.new_zeros((0, k, 3))
    k, h, w = int(k), int(h), int(w)  # as in refine_heatmaps
    flat = heatmaps.reshape(r, k, h * w)
    peak, idx = flat.max(dim=2)
    iy = torch.div(idx, w, rounding_mode="floor")
    ix = idx - iy * w
    u = ix.to(heatmaps.dtype) + 0.5
    v = iy.to(heatmaps.dtype) + 0.5

    def neighbour(dy: int, dx: int) -> torch.Tensor:
        jy = (iy + dy).clamp(0, h - 1)
        jx = (ix + dx).clamp(0, w - 1)
        return flat.gather(2, (jy * w + jx).unsqueeze(2)).squeeze(2)

    interior_x = (ix > 0) & (ix < w - 1)
    interior_y = (iy > 0) & (iy < h - 1)
    u = u + 0.25 * torch.sign(neighbour(0, 1) - neighbour(0, -1)) * interior_x
    v = v + 0.25 * torch.sign(neighbour(1, 0) - neighbour(-1, 0)) * interior_y

    x0, y0 = rois[:, 0:1], rois[:, 1:2]
    bw = (rois[:, 2:3] - x0).clamp(min=1e-6)
    bh = (rois[:, 3:4] - y0).clamp(min=1e-6)
    x = x0 + u * bw / w
    y = y0 + v * bh / h
    if score == "prob":
        peak = _peak_probability(flat, peak)
    return torch.stack([x, y, peak], dim=2)


def heatmaps_to_keypoints_bicubic(
    heatmaps: torch.Tensor, rois: torch.Tensor, score: str = "logit"
) -> torch.Tensor:
    """torchvision's and detectron2's decoding of ``(R, K, S, S)`` heatmaps over ``(R, 4)`` XYXY
    boxes into ``(R, K, 3)`` x, y, score.

    Each box's maps are resized bicubically (``align_corners=False``) to ``ceil(w) x ceil(h)``
    pixels (sides at least 1); the argmax cell ``(i, j)`` decodes to
    ``x0 + (j + 0.5) * w / ceil(w)`` (likewise y). ``score``: ``"logit"``, the resized map's value
    at the peak (torchvision's ``keypoints_scores``), or ``"prob"``, detectron2's probability:
    ``exp(peak - peak) / sum(exp(S x S map - peak))``, the softmax of the low-resolution map
    evaluated at the full-resolution peak. One interpolation per box, as both libraries do.
    """
    if score not in KEYPOINT_SCORES:
        raise ValueError(f"keypoint score must be one of {KEYPOINT_SCORES}, got '{score}'")
    r, k = heatmaps.shape[:2]
    out = heatmaps.new_zeros((r, k, 3))
    if r == 0:
        return out
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    widths_ceil, heights_ceil = widths.ceil(), heights.ceil()
    kk = torch.arange(k, device=heatmaps.device)
    for i in range(r):
        mw, mh = int(widths_ceil[i]), int(heights_ceil[i])
        resized = F.interpolate(heatmaps[i][:, None], size=(mh, mw), mode="bicubic",
                                align_corners=False)[:, 0]
        pos = resized.reshape(k, -1).argmax(dim=1)
        col = pos % mw
        row = torch.div(pos - col, mw, rounding_mode="floor")
        out[i, :, 0] = (col.to(heatmaps.dtype) + 0.5) * (widths[i] / mw) + rois[i, 0]
        out[i, :, 1] = (row.to(heatmaps.dtype) + 0.5) * (heights[i] / mh) + rois[i, 1]
        peak = resized[kk, row, col]
        if score == "prob":
            peak = _peak_probability(heatmaps[i].reshape(k, -1), peak)
        out[i, :, 2] = peak
    return out


def decode_keypoints(heatmaps: torch.Tensor, rois: torch.Tensor, decoder: str = "subcell",
                     score: str = "logit") -> torch.Tensor:
    """``MODEL.ROI_KEYPOINT_HEAD.DECODER`` / ``SCORE``: :func:`heatmaps_to_keypoints`
    (``"subcell"``) or :func:`heatmaps_to_keypoints_bicubic` (``"bicubic"``)."""
    if decoder == "subcell":
        return heatmaps_to_keypoints(heatmaps, rois, score)
    if decoder == "bicubic":
        return heatmaps_to_keypoints_bicubic(heatmaps, rois, score)
    raise ValueError(f"MODEL.ROI_KEYPOINT_HEAD.DECODER: '{decoder}' is not one of "
                     f"{KEYPOINT_DECODERS}")

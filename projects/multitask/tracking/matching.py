"""Track-to-detection matching: box IoU, keypoint OKS, their cost and the optimal assignment.

The cost of pairing a track ``t`` with a detection ``d`` is::

    cost = w_iou * (1 - IoU(box_t, box_d)) + w_oks * (1 - OKS(kpts_t, kpts_d))

with ``w_iou + w_oks = 1`` (the weights are normalised), so every cost lies in ``[0, 1]``. OKS is
COCO's object keypoint similarity with per-keypoint sigmas and the *track's* box area as the
object scale, averaged over the keypoints both poses have (score ``>=`` the keypoint threshold);
a pair with no such keypoint has no OKS and costs ``1 - IoU``. Pairs costing more than the gate
``max_cost`` are never matched; among the rest :func:`assign` minimises the total cost
(``scipy.optimize.linear_sum_assignment``).
"""

from typing import Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["box_iou", "box_areas", "keypoint_oks", "matching_cost", "assign"]

# Cost given to gated pairs before the assignment: larger than any sum of valid costs
_GATED = 1e6


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas ``(N,)`` of XYXY boxes ``(N, 4)`` (0 for empty boxes)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    wh = np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None)
    return wh[:, 0] * wh[:, 1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union ``(N, M)`` of XYXY boxes ``a (N, 4)`` and ``b (M, 4)``; 0 where the
    union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0.0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def keypoint_oks(
    a: np.ndarray,
    b: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float],
    threshold: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """COCO object keypoint similarity between poses ``a (N, K, 3)`` and ``b (M, K, 3)`` (x, y,
    score).

    ``areas (N,)`` is the object scale of each pose of ``a`` (``s^2`` of COCO's
    ``exp(-d^2 / (2 s^2 (2 sigma)^2))``), ``sigmas (K,)`` the per-keypoint sigmas; a keypoint
    counts when its score is ``>= threshold`` in both poses. Returns ``oks (N, M)`` in ``[0, 1]``,
    the mean over the keypoints that count, and ``has (N, M)`` bool, False where no keypoint
    counts (``oks`` is 0 there).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    scale = np.maximum(np.asarray(areas, dtype=np.float64), 1.0)  # (N,)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # (N, M, K)
    e = d2 / (2.0 * scale[:, None, None] * variances[None, None, :])
    both = (a[:, None, :, 2] >= threshold) & (b[None, :, :, 2] >= threshold)  # (N, M, K)
    count = both.sum(-1)
    total = np.where(both, np.exp(-e), 0.0).sum(-1)
    return total / np.maximum(count, 1), count > 0


def matching_cost(
    track_boxes: np.ndarray,
    track_keypoints: np.ndarray,
    det_boxes: np.ndarray,
    det_keypoints: np.ndarray,
    sigmas: Sequence[float],
    iou_weight: float,
    oks_weight: float,
    keypoint_threshold: float,
) -> np.ndarray:
    """The cost ``(T, D)`` in ``[0, 1]`` (module docstring) of tracks (``track_boxes (T, 4)``,
    ``track_keypoints (T, K, 3)``) against detections (``det_boxes (D, 4)``,
    ``det_keypoints (D, K, 3)``). The weights are normalised to sum 1; OKS uses the tracks' box
    areas."""
    if iou_weight < 0 or oks_weight < 0 or iou_weight + oks_weight <= 0:
        raise ValueError(f"iou_weight ({iou_weight}) and oks_weight ({oks_weight}) must be >= 0 "
                         "and not both 0")
    w_iou = iou_weight / (iou_weight + oks_weight)
    iou = box_iou(track_boxes, det_boxes)
    oks, has = keypoint_oks(track_keypoints, det_keypoints, box_areas(track_boxes), sigmas,
                            keypoint_threshold)
    return np.where(has, w_iou * (1.0 - iou) + (1.0 - w_iou) * (1.0 - oks), 1.0 - iou)


def assign(cost: np.ndarray, max_cost: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment of the rows and columns of ``cost (T, D)`` with the pairs
    costing more than ``max_cost`` (or NaN) left out.

    Returns ``matches (M, 2)`` int64 (row, column) pairs, sorted by row, and the unmatched
    ``rows (T - M,)`` and ``columns (D - M,)``.
    """
    cost = np.asarray(cost, dtype=np.float64)
    T, D = cost.shape
    allowed = np.isfinite(cost) & (cost <= max_cost)
    matches = np.zeros((0, 2), dtype=np.int64)
    if T and D and allowed.any():
        rows, cols = linear_sum_assignment(np.where(allowed, cost, _GATED))
        keep = allowed[rows, cols]
        matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    free_rows = np.setdiff1d(np.arange(T), matches[:, 0])
    free_cols = np.setdiff1d(np.arange(D), matches[:, 1])
    return matches, free_rows, free_cols

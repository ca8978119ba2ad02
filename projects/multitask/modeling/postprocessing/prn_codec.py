"""Encoding and decoding of the Pose Residual Network's heatmaps (pure functions).

A box's PRN input is a ``(K, H, W)`` stack of heatmaps (MultiPoseNet: ``H x W = 56 x 36``) drawn
over the box enlarged by ``margin`` of its size on every side, with a Gaussian peak (std ``sigma``
heatmap cells, peak 1, peaks of one channel max-combined) for every keypoint of *every* person
that falls inside it; the training target is the same drawing of the box's own keypoints only.

Cell convention, the keypoint head's (:mod:`multitask.modeling.roi_heads.keypoint_codec`), and
the Gaussians are drawn by its renderer (:func:`gaussian_profiles`): the enlarged box is
``[x0 - m w, y0 - m h, x1 + m w, y1 + m h]``; its cells are ``cw = W_box / W`` wide and
``ch = H_box / H`` high; a point ``(x, y)`` lies at continuous cell coordinates
``u = (x - ex0) / cw``, ``v = (y - ey0) / ch`` (cell ``j`` covers ``[j, j + 1)``, its centre is
``j + 0.5``), and cell ``(i, j)`` decodes to ``(ex0 + (j + 0.5) cw, ey0 + (i + 0.5) ch)``.
Encode and decode are exact inverses up to the cell quantisation: a lone keypoint comes back
within half a cell of where it was.
"""

from typing import Optional, Sequence, Tuple

import torch

from ..roi_heads.keypoint_codec import gaussian_profiles

__all__ = [
    "enlarge_boxes",
    "encode_prn_input",
    "encode_prn_inputs",
    "decode_prn_output",
    "snap_to_candidates",
    "KEYPOINT_SCORE_THRESH",
    "SOURCE_BOX_SCORE_THRESH",
    "SNAP_RADIUS",
]

# Defaults of the functions below and of MODEL.PRN.KEYPOINT_THRESHOLD / SOURCE_SCORE_THRESH /
# SNAP_RADIUS (config/defaults.py).
# Keypoints with score (or COCO visibility) above this are drawn into the PRN input.
KEYPOINT_SCORE_THRESH = 0.05
# Detections with a box score below this contribute their keypoints only to their own box.
SOURCE_BOX_SCORE_THRESH = 0.3
# The decoded PRN peak is snapped to the nearest candidate keypoint (of the same type, inside the
# enlarged box) within this many cells; inf: always, so the PRN picks one of the detected
# keypoints; 0 disables snapping. (In the config, a negative MODEL.PRN.SNAP_RADIUS means inf.)
SNAP_RADIUS = float("inf")
# Elements of the (chunk, P, 17, H, W) rendering tensor per chunk, to bound memory
_RENDER_CHUNK_ELEMENTS = 1 << 25


def enlarge_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """Boxes ``(R, 4)`` XYXY enlarged by ``margin`` of their width/height on every side.

    Widths and heights below 1 pixel are treated as 1 pixel.
    """
    boxes = boxes.float()
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hw, hh = w * (0.5 + margin), h * (0.5 + margin)
    return torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=1)


def _cell_coords(
    keypoints: torch.Tensor, ext: torch.Tensor, heatmap_size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Continuous cell coordinates ``u`` (x) and ``v`` (y) of keypoints ``(R, P, K, >=2)``."""
    H, W = heatmap_size
    ex0, ey0 = ext[:, 0, None, None], ext[:, 1, None, None]
    cw = ((ext[:, 2] - ext[:, 0]) / W)[:, None, None]
    ch = ((ext[:, 3] - ext[:, 1]) / H)[:, None, None]
    u = (keypoints[..., 0] - ex0) / cw
    v = (keypoints[..., 1] - ey0) / ch
    return u, v


def _render(
    boxes: torch.Tensor,
    keypoints: torch.Tensor,
    heatmap_size: Tuple[int, int],
    margin: float,
    sigma: float,
    score_thresh: float,
) -> torch.Tensor:
    """Heatmaps ``(R, K, H, W)`` of per-box keypoint sets ``(R, P, K, 3)`` (max over P)."""
    H, W = heatmap_size
    R, P, K = keypoints.shape[:3]
    device = keypoints.device
    out = torch.zeros((R, K, H, W), dtype=torch.float32, device=device)
    if R == 0 or P == 0:
        return out
    ext = enlarge_boxes(boxes.to(device), margin)
    u, v = _cell_coords(keypoints.float(), ext, heatmap_size)
    valid = (keypoints[..., 2] > score_thresh) & (u >= 0) & (u <= W) & (v >= 0) & (v <= H)
    gx, gy = gaussian_profiles(u, v, valid, H, W, sigma)  # (R, P, K, W), (R, P, K, H)
    step = max(1, _RENDER_CHUNK_ELEMENTS // max(1, P * K * H * W))
    for s in range(0, R, step):
        g = gy[s : s + step, :, :, :, None] * gx[s : s + step, :, :, None, :]
        out[s : s + step] = g.amax(dim=1)
    return out


def encode_prn_inputs(
    boxes: torch.Tensor,
    keypoints_all: torch.Tensor,
    heatmap_size: Sequence[int] = (56, 36),
    margin: float = 0.1,
    sigma: float = 1.0,
    score_thresh: float = KEYPOINT_SCORE_THRESH,
    own_keypoints: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Encode the keypoints of all people into every box: ``(R, 17, H, W)``.

    Args:
        boxes: ``(R, 4)`` XYXY boxes in image coordinates.
        keypoints_all: ``(P, 17, 3)`` x, y, and COCO visibility or score, of all people of the
            image; a keypoint is drawn where its third value is > ``score_thresh`` and it lies
            inside the box enlarged by ``margin``.
        heatmap_size: ``(H, W)`` of the heatmaps.
        sigma: std of the Gaussian peaks in heatmap cells (peak value 1, max-combined).
        own_keypoints: optional ``(R, 17, 3)``; box ``r`` additionally gets ``own_keypoints[r]``.
    """
    heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
    R = boxes.shape[0]
    kps = keypoints_all.float()
    if own_keypoints is not None:
        own = own_keypoints.float().to(kps.device)[:, None]
        kps = torch.cat([kps[None].expand(R, -1, -1, -1), own], dim=1)
    else:
        kps = kps[None].expand(R, -1, -1, -1)
    return _render(boxes, kps, heatmap_size, margin, sigma, score_thresh)


def encode_prn_input(
    keypoints_all: torch.Tensor,
    box: torch.Tensor,
    heatmap_size: Sequence[int] = (56, 36),
    margin: float = 0.1,
    sigma: float = 1.0,
    score_thresh: float = KEYPOINT_SCORE_THRESH,
) -> torch.Tensor:
    """Encode the keypoints ``(P, 17, 3)`` of all people into one box ``(4,)``: ``(17, H, W)``."""
    box = torch.as_tensor(box, dtype=torch.float32).reshape(1, 4)
    return encode_prn_inputs(box, keypoints_all, heatmap_size, margin, sigma, score_thresh)[0]


def decode_prn_output(
    probs: torch.Tensor, boxes: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Peaks of the PRN output ``(R, 17, H, W)`` in image coordinates: ``(R, 17, 3)``.

    Returns x, y (centre of the peak cell of the box enlarged by ``margin``, the same margin as
    the encoding) and the peak value (the PRN confidence for softmax probabilities).
    """
    R, K, H, W = probs.shape
    if R == 0:
        return probs.new_zeros((0, K, 3))
    conf, idx = probs.reshape(R, K, H * W).max(dim=2)
    i = torch.div(idx, W, rounding_mode="floor").float()
    j = (idx % W).float()
    ext = enlarge_boxes(boxes.to(probs.device), margin)
    cw = ((ext[:, 2] - ext[:, 0]) / W)[:, None]
    ch = ((ext[:, 3] - ext[:, 1]) / H)[:, None]
    x = ext[:, 0, None] + (j + 0.5) * cw
    y = ext[:, 1, None] + (i + 0.5) * ch
    return torch.stack([x, y, conf.float()], dim=2)


def snap_to_candidates(
    decoded: torch.Tensor,
    boxes: torch.Tensor,
    candidates: torch.Tensor,
    heatmap_size: Sequence[int] = (56, 36),
    margin: float = 0.1,
    radius: float = SNAP_RADIUS,
    score_thresh: float = KEYPOINT_SCORE_THRESH,
    own_candidates: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move decoded points ``(R, 17, >=2)`` onto the nearest candidate keypoint of the same type.

    ``candidates (P, 17, 3)`` with third value > ``score_thresh`` inside the box enlarged by
    ``margin`` (plus ``own_candidates (R, 17, 3)`` per box, wherever they are); the distance is
    measured in the box's heatmap cells and a point moves only when a candidate is within
    ``radius`` cells (``inf``: always, if there is a candidate). Returns the new ``(R, 17, 2)``
    x, y and the index
    ``(R, 17)`` of the candidate used (``-1``: none; ``P``: the box's own keypoint).
    """
    heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
    R = decoded.shape[0]
    xy = decoded[..., :2].clone()
    H, W = heatmap_size
    cand = candidates.float().to(decoded.device)[None].expand(R, -1, -1, -1)
    P = cand.shape[1]
    if own_candidates is not None:
        cand = torch.cat([cand, own_candidates.float().to(decoded.device)[:, None]], dim=1)
    if R == 0 or cand.shape[1] == 0 or radius <= 0:
        return xy, torch.full(xy.shape[:2], -1, dtype=torch.long, device=xy.device)
    ext = enlarge_boxes(boxes.to(decoded.device), margin)
    u, v = _cell_coords(cand, ext, heatmap_size)  # (R, P, K)
    du, dv = _cell_coords(decoded[:, None, :, :2].float(), ext, heatmap_size)  # (R, 1, K)
    d2 = (u - du) ** 2 + (v - dv) ** 2
    inside = (u >= 0) & (u <= W) & (v >= 0) & (v <= H)
    inside[:, P:] = True  # the box's own keypoints count wherever they are
    ok = (cand[..., 2] > score_thresh) & inside
    d2 = torch.where(ok, d2, torch.full_like(d2, float("inf")))
    best, arg = d2.min(dim=1)  # (R, K)
    ok = torch.isfinite(best) & (best <= radius**2)
    picked = torch.gather(cand[..., :2], 1, arg[:, None, :, None].expand(-1, 1, -1, 2))[:, 0]
    xy = torch.where(ok[..., None], picked, xy)
    return xy, torch.where(ok, arg, torch.full_like(arg, -1))

"""Encoding of a person's 2D pose into the activity classifier's input.

Features (:func:`keypoints_to_activity_features`), per person: the 17 keypoints' x, y normalised to
[0, 1] within the person's box (``(x - x0) / w``, ``(y - y0) / h``, clamped to [0, 1]) and
interleaved as ``[K0x, K0y, K1x, K1y, ...]`` (34 values), followed, when ``use_visibility``, by a
17-value mask (1 = keypoint present, 0 = missing). A keypoint is missing when its score / COCO
visibility is <= ``score_thresh`` or the classifier's ``keypoint_mask`` excludes it; its x, y are
then 0. With ``keep_aspect`` the box is first made square (side ``max(w, h)``, same centre), so
the features keep the pose's aspect ratio (a sitting person's box is squat, a standing one tall).
With ``geometry`` (``MODEL.ACTIVITY.GEOMETRY``, COCO keypoints only) the pose's geometry follows
(:func:`pose_geometry_features`, ``2 * GEOMETRY_DIM`` values): the angles at knees, hips, elbows
and shoulders, the torso's direction, the thighs' and shins' directions and lengths, and how far
apart the ankles, knees and wrists are, lengths relative to the torso; then a mask of which of
these could be measured. An MLP has to learn angles from coordinates; given them, its 5-fold
cross-validated accuracy (``tools/train_activity.py``) goes from 0.651 to 0.660 on MPII and from
0.817 to 0.843 on the synthetic people's training poses.

Also here: :func:`flip_keypoints` (a pose's mirror image, for data augmentation) and
:data:`COCO_FLIP_PERMUTATION`. All functions are pure: they return new tensors / arrays.
"""

from typing import Optional, Tuple

import numpy as np
import torch

from ...structures.keypoints import COCO_PERSON_KEYPOINTS, hflip_keypoints

__all__ = [
    "keypoints_to_activity_features",
    "pose_geometry_features",
    "activity_feature_dim",
    "flip_keypoints",
    "COCO_FLIP_PERMUTATION",
    "KEEP_ASPECT",
    "GEOMETRY_DIM",
]

# Default of the feature's square-box normalisation (stored in the weights file's input_layout;
# wanted config key: MODEL.ACTIVITY.KEEP_ASPECT)
KEEP_ASPECT = True
# COCO keypoint index of the horizontally mirrored keypoint
COCO_FLIP_PERMUTATION = COCO_PERSON_KEYPOINTS.flip_indices


# Pose geometry (COCO keypoint indices): joint angles (vertex in the middle) at the knees, hips,
# elbows and shoulders ...
GEOMETRY_ANGLES = (
    (11, 13, 15),
    (12, 14, 16),
    (5, 11, 13),
    (6, 12, 14),
    (5, 7, 9),
    (6, 8, 10),
    (7, 5, 11),
    (8, 6, 12),
)
# ... the thighs and shins (direction, and length relative to the torso) ...
GEOMETRY_SEGMENTS = ((11, 13), (12, 14), (13, 15), (14, 16))
# ... and the offsets between the ankles, the knees and the wrists (relative to the torso)
GEOMETRY_PAIRS = ((15, 16), (13, 14), (9, 10))
# angle cosines, torso direction (2), segment direction (2) + length, pair offset (2)
GEOMETRY_DIM = len(GEOMETRY_ANGLES) + 2 + 3 * len(GEOMETRY_SEGMENTS) + 2 * len(GEOMETRY_PAIRS)
# torso-relative lengths and offsets are clipped to +-this many torso lengths
_GEOMETRY_CLIP = 3.0


def activity_feature_dim(
    num_keypoints: int = 17, use_visibility: bool = True, geometry: bool = False
) -> int:
    """Length ``D`` of a feature row of :func:`keypoints_to_activity_features`: ``2K`` (x, y)
    [+ ``K`` (visibility mask)] [+ ``2 * GEOMETRY_DIM`` (geometry values and their mask)]."""
    return num_keypoints * (3 if use_visibility else 2) + (2 * GEOMETRY_DIM if geometry else 0)


def pose_geometry_features(keypoints: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Geometry of COCO poses ``(R, 17, >=2)``, given which keypoints are ``present (R, 17)``:
    ``(R, 2 * GEOMETRY_DIM)``, the ``GEOMETRY_DIM`` values (see ``GEOMETRY_*``: cosines of the
    joint angles; the unit vector from mid-hip to mid-shoulder; each leg segment's unit vector and
    its length in torso lengths; each pair's x and y offset in torso lengths) followed by a 0/1
    mask of the values whose keypoints are all present (a masked value is 0).

    Invariant to the pose's position and scale; mirrored poses give mirrored values.
    """
    if keypoints.shape[1] != 17:
        raise ValueError(
            f"pose geometry features need the 17 COCO keypoints, got {keypoints.shape[1]}"
        )
    xy = keypoints[..., :2].float()
    pm = present.bool()
    eps = 1e-6
    values, masks = [], []

    def unit(v):
        return v / v.norm(dim=-1, keepdim=True).clamp(min=eps)

    for a, b, c in GEOMETRY_ANGLES:
        cos = (unit(xy[:, a] - xy[:, b]) * unit(xy[:, c] - xy[:, b])).sum(-1)
        values.append(cos)
        masks.append(pm[:, a] & pm[:, b] & pm[:, c])
    torso_vec = (xy[:, 5] + xy[:, 6] - xy[:, 11] - xy[:, 12]) / 2
    torso_len = torso_vec.norm(dim=-1).clamp(min=eps)
    torso_ok = pm[:, 5] & pm[:, 6] & pm[:, 11] & pm[:, 12]
    values += list(unit(torso_vec).unbind(-1))
    masks += [torso_ok, torso_ok]
    for a, b in GEOMETRY_SEGMENTS:
        seg = xy[:, b] - xy[:, a]
        ok = pm[:, a] & pm[:, b]
        values += list(unit(seg).unbind(-1)) + [seg.norm(dim=-1) / torso_len]
        masks += [ok, ok, ok & torso_ok]
    for a, b in GEOMETRY_PAIRS:
        off = (xy[:, b] - xy[:, a]) / torso_len[:, None]
        ok = pm[:, a] & pm[:, b] & torso_ok
        values += list(off.unbind(-1))
        masks += [ok, ok]
    v = torch.stack(values, dim=1).clamp(-_GEOMETRY_CLIP, _GEOMETRY_CLIP)
    m = torch.stack(masks, dim=1).to(v.dtype)
    return torch.cat([v * m, m], dim=1)


def keypoints_to_activity_features(
    keypoints: torch.Tensor,
    boxes: torch.Tensor,
    use_visibility: bool = True,
    score_thresh: float = 0.05,
    keep_aspect: bool = KEEP_ASPECT,
    keypoint_mask: Optional[torch.Tensor] = None,
    geometry: bool = False,
) -> torch.Tensor:
    """Features ``(R, 2K [+K] [+2 GEOMETRY_DIM])`` of keypoints ``(R, K, 3)`` (x, y, score) in
    boxes ``(R, 4)``.

    See the module docstring for the layout. Accepts numpy arrays too; returns float32.
    """
    kps = torch.as_tensor(keypoints).float()
    boxes = torch.as_tensor(boxes).float().to(kps.device)
    R, K = kps.shape[0], kps.shape[1]
    present = kps[..., 2] > score_thresh
    if keypoint_mask is not None:
        present = present & (torch.as_tensor(keypoint_mask).to(kps.device).reshape(1, K) > 0)
    x0, y0 = boxes[:, 0], boxes[:, 1]
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    if keep_aspect:
        side = torch.maximum(w, h)
        x0 = x0 + (w - side) / 2
        y0 = y0 + (h - side) / 2
        w = h = side
    nx = ((kps[..., 0] - x0[:, None]) / w[:, None]).clamp(0.0, 1.0)
    ny = ((kps[..., 1] - y0[:, None]) / h[:, None]).clamp(0.0, 1.0)
    pm = present.float()
    xy = torch.stack([nx * pm, ny * pm], dim=2).reshape(R, 2 * K)
    parts = [xy, pm] if use_visibility else [xy]
    if geometry:
        parts.append(pose_geometry_features(kps, present))
    return torch.cat(parts, dim=1)


def flip_keypoints(keypoints: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror COCO keypoints ``(N, 17, 3)`` and boxes ``(N, 4)`` about each box's vertical centre
    line (left/right keypoints swapped); for data augmentation. Returns float32 copies
    ``(N, 17, 3)`` and ``(N, 4)`` (the boxes are symmetric about that line, so unchanged); a
    missing keypoint (visibility 0) gets x = 0."""
    b = np.array(boxes, dtype=np.float32, copy=True)
    return hflip_keypoints(keypoints, (b[:, 0] + b[:, 2])[:, None], COCO_FLIP_PERMUTATION), b

"""Pose augmentation for the activity classifier, and the body slices it is judged on.

The activity classifier reads a pose (17 COCO keypoints with visibility) normalised in its box.
On real data which joints are visible correlates with the class: in MPII, most people labelled
"standing" show no legs, so a classifier can learn "no legs visible" instead of "standing".
:func:`augment_poses` breaks that shortcut in the copies it makes: a copy of a person takes the
visibility of a random person of *another* class (the joints missing there are hidden here), so
that in the copies the visibility pattern tells little about the class; copies also lose, in
every class alike, a random limb, the legs, the lower body or one side, and are rotated and
scaled a little about the box centre. Joints can only be hidden, never restored, so the copies
equalise what is visible across classes from the most occluded class downwards.
:func:`pose_slices` names the people a result should be reported on: everyone, the full-body
people (hips, knees and ankles visible) and the upper-body-only people (no knee or ankle
visible).

All functions take numpy arrays ``keypoints (N, 17, 3)`` (x, y, visibility; COCO order) and
``boxes (N, 4)`` XYXY and return new arrays; nothing is modified in place.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

# COCO keypoint indices
_L_SHOULDER, _R_SHOULDER, _L_ELBOW, _R_ELBOW, _L_WRIST, _R_WRIST = 5, 6, 7, 8, 9, 10
_L_HIP, _R_HIP, _L_KNEE, _R_KNEE, _L_ANKLE, _R_ANKLE = 11, 12, 13, 14, 15, 16
LOWER_BODY = (_L_HIP, _R_HIP, _L_KNEE, _R_KNEE, _L_ANKLE, _R_ANKLE)
LEGS = (_L_KNEE, _R_KNEE, _L_ANKLE, _R_ANKLE)

#: What an occlusion hides: name -> COCO keypoint indices. Applied to every class alike.
OCCLUSION_PATTERNS: Dict[str, Tuple[int, ...]] = {
    "left_arm": (_L_ELBOW, _L_WRIST),
    "right_arm": (_R_ELBOW, _R_WRIST),
    "left_leg": (_L_KNEE, _L_ANKLE),
    "right_leg": (_R_KNEE, _R_ANKLE),
    "legs": LEGS,
    "lower_body": LOWER_BODY,
    "left_side": (1, 3, _L_SHOULDER, _L_ELBOW, _L_WRIST, _L_HIP, _L_KNEE, _L_ANKLE),
    "right_side": (2, 4, _R_SHOULDER, _R_ELBOW, _R_WRIST, _R_HIP, _R_KNEE, _R_ANKLE),
}


def occlude(keypoints: np.ndarray, pattern: Sequence[int]) -> np.ndarray:
    """Copy of ``keypoints (N, 17, 3)`` with the joints of ``pattern`` unlabelled (0, 0, 0)."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    out[:, list(pattern)] = 0.0
    return out


def augment_poses(
    keypoints: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    rng: np.random.RandomState,
    copies: int = 2,
    transplant_prob: float = 0.8,
    occlusion_prob: float = 0.3,
    rotate_deg: float = 10.0,
    scale: float = 0.1,
    patterns: Optional[Dict[str, Tuple[int, ...]]] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The poses followed by ``copies`` augmented copies of each.

    Each copy is rotated by ``U(-rotate_deg, rotate_deg)`` degrees and scaled by
    ``U(1 - scale, 1 + scale)`` about its box centre (the box stays); with probability
    ``transplant_prob`` it loses the joints that a random pose of another class lacks; and with
    probability ``occlusion_prob`` the joints of one pattern drawn uniformly from ``patterns``
    (default :data:`OCCLUSION_PATTERNS`), whatever its class. Unlabelled joints stay unlabelled.
    Returns ``(keypoints, boxes, labels)`` of ``(1 + copies) * N`` poses.
    """
    kps = np.asarray(keypoints, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32)
    labels = np.asarray(labels)
    if kps.ndim != 3 or kps.shape[2] != 3 or kps.shape[1] != 17:
        raise ValueError(f"augment_poses: keypoints must be (N, 17, 3), got {kps.shape}")
    if len(boxes) != len(kps) or len(labels) != len(kps):
        raise ValueError(f"augment_poses: {len(kps)} poses, {len(boxes)} boxes, "
                         f"{len(labels)} labels")
    patterns = list((patterns or OCCLUSION_PATTERNS).values())
    missing = kps[..., 2] <= 0
    others = {c: np.nonzero(labels != c)[0] for c in np.unique(labels)}
    out_k, out_b, out_y = [kps], [boxes], [labels]
    n = len(kps)
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    for _ in range(copies):
        angle = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, n)).astype(np.float32)
        s = rng.uniform(1 - scale, 1 + scale, n).astype(np.float32)
        cos, sin = np.cos(angle) * s, np.sin(angle) * s
        rel = kps[..., :2] - centre[:, None]
        new = kps.copy()
        new[..., 0] = centre[:, None, 0] + cos[:, None] * rel[..., 0] - sin[:, None] * rel[..., 1]
        new[..., 1] = centre[:, None, 1] + sin[:, None] * rel[..., 0] + cos[:, None] * rel[..., 1]
        hidden = missing.copy()
        transplant = rng.uniform(size=n) < transplant_prob
        occluded = rng.uniform(size=n) < occlusion_prob
        choice = rng.randint(len(patterns), size=n)
        for i in range(n):
            if transplant[i] and len(others[labels[i]]):
                hidden[i] |= missing[others[labels[i]][rng.randint(len(others[labels[i]]))]]
            if occluded[i]:
                hidden[i, list(patterns[choice[i]])] = True
        new[hidden] = 0.0
        out_k.append(new)
        out_b.append(boxes)
        out_y.append(labels)
    return np.concatenate(out_k), np.concatenate(out_b), np.concatenate(out_y)


def pose_slices(keypoints: np.ndarray, thresh: float = 0.0) -> Dict[str, np.ndarray]:
    """Boolean masks ``(N,)`` of the slices activity results are reported on: ``all``,
    ``full_body`` (hips, knees and ankles all visible, i.e. score / visibility > ``thresh``)
    and ``upper_body_only`` (no knee and no ankle visible)."""
    vis = np.asarray(keypoints)[..., 2] > thresh
    return {
        "all": np.ones(len(vis), dtype=bool),
        "full_body": vis[:, list(LOWER_BODY)].all(1),
        "upper_body_only": ~vis[:, list(LEGS)].any(1),
    }


def visibility_groups(keypoints: np.ndarray, thresh: float = 0.0) -> np.ndarray:
    """``(N,)`` int: 0 full body, 1 upper body only, 2 anything between (see
    :func:`pose_slices`), the groups within which training balances the classes."""
    s = pose_slices(keypoints, thresh)
    return np.where(s["full_body"], 0, np.where(s["upper_body_only"], 1, 2))


__all__ = ["OCCLUSION_PATTERNS", "occlude", "augment_poses", "pose_slices", "visibility_groups"]

"""Does the keypoint head look at the image? Compare it with the average pose put in its boxes.

A keypoint head that has only learned where each keypoint usually lies inside a person box (the
"mean pose") already gets some keypoints near their place. :func:`mean_pose_results` gives every
detection that mean pose, in its own box, and keeps its score, so its keypoint AP (pycocotools
OKS) is what the detector alone earns; the model's AP above it is what the keypoint head adds.
:func:`keypoint_errors` gives per-keypoint distances to the matched ground truth, normalised by
the square root of the ground-truth box area, for a finer view than AP.

``tools/keypoint_error.py`` prints both for a ``coco_instances_results.json``.
"""

import copy
from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np

from .activity_evaluation import greedy_match


def mean_pose(gt: Dict) -> np.ndarray:
    """Mean position ``(K, 2)`` of each keypoint in box coordinates (0..1 across the box),
    over the labelled keypoints (v > 0) of the non-crowd people of a COCO keypoints dict."""
    sums, counts = None, None
    for a in gt["annotations"]:
        if a.get("iscrowd", 0) or not a.get("num_keypoints", 0):
            continue
        x, y, w, h = a["bbox"]
        if w <= 0 or h <= 0:
            continue
        k = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        if sums is None:
            sums, counts = np.zeros((len(k), 2)), np.zeros(len(k))
        lab = k[:, 2] > 0
        sums[lab, 0] += (k[lab, 0] - x) / w
        sums[lab, 1] += (k[lab, 1] - y) / h
        counts[lab] += 1
    if sums is None:
        raise ValueError("no person with labelled keypoints to average")
    return sums / np.maximum(counts, 1)[:, None]


def mean_pose_results(results: Sequence[Dict], pose: np.ndarray) -> List[Dict]:
    """Copies of COCO keypoint ``results`` whose keypoints are ``pose`` placed in each ``bbox``
    (visibility 1); scores, boxes and everything else unchanged."""
    out = []
    for r in results:
        x, y, w, h = r["bbox"]
        kp = np.concatenate([pose * [w, h] + [x, y], np.ones((len(pose), 1))], axis=1)
        r = copy.copy(r)
        r["keypoints"] = [round(float(v), 2) for v in kp.reshape(-1)]
        out.append(r)
    return out


def keypoint_errors(
    gt: Dict, results: Sequence[Dict], score_thresh: float = 0.5, iou_thresh: float = 0.5
) -> np.ndarray:
    """Normalised keypoint errors ``(M, K)`` of the detections matched to a ground truth.

    Per image, detections with ``score >= score_thresh`` are matched greedily by box IoU
    (``>= iou_thresh``) to the non-crowd people with labelled keypoints. Entry ``[m, k]`` is the
    distance between predicted and labelled keypoint ``k`` divided by ``sqrt(w * h)`` of the
    ground-truth box; NaN where keypoint ``k`` is not labelled.
    """
    people = defaultdict(list)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and a.get("num_keypoints", 0):
            people[a["image_id"]].append(a)
    dets = defaultdict(list)
    for r in results:
        if r["score"] >= score_thresh and "keypoints" in r:
            dets[r["image_id"]].append(r)
    errors = []
    for image_id, ds in dets.items():
        gs = people.get(image_id, [])
        if not gs:
            continue
        match = greedy_match(
            np.array([g["bbox"] for g in gs]),
            np.array([d["bbox"] for d in ds]),
            np.array([d["score"] for d in ds]),
            iou_thresh,
        )
        for d, g in zip(ds, match):
            if g < 0:
                continue
            gk = np.asarray(gs[g]["keypoints"], dtype=np.float64).reshape(-1, 3)
            dk = np.asarray(d["keypoints"], dtype=np.float64).reshape(-1, 3)
            _, _, w, h = gs[g]["bbox"]
            e = np.linalg.norm(dk[:, :2] - gk[:, :2], axis=1) / np.sqrt(max(w * h, 1e-12))
            e[gk[:, 2] <= 0] = np.nan
            errors.append(e)
    if not errors:
        num_keypoints = next((len(a["keypoints"]) // 3 for gs in people.values() for a in gs), 17)
        return np.zeros((0, num_keypoints))
    return np.stack(errors)

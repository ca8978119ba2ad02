"""Activity metrics on top of person detections.

Two numbers per activity class, computed from COCO-format ground truth whose person annotations
carry an ``"activity"`` field (a class name, a class index, or ``None`` = unknown) and from COCO
results (see ``coco_evaluation.instances_to_coco_json``) that carry ``"activity_id"`` (index into
the activity classes, -1 = none) and optionally ``"activity_score"``:

accuracy on matched detections
    Detections of each image are taken in decreasing score order and greedily matched, like
    COCOeval does, to the not-yet-matched non-crowd person with the highest box IoU >= ``iou``.
    Persons with an unknown activity take part in the matching (so that a detection of such a
    person is not matched to a neighbour instead) but those matches are not counted; crowd
    regions never match. ``accuracy = correct / matched`` over persons with a known activity, and
    per class over the matched persons of that class (i.e. a per-class recall of the classifier).

per-activity detection AP
    COCOeval (bbox) on a rewritten problem in which every activity class is a category: a person
    with activity ``c`` is a ground truth of category ``c`` only, and each detection is submitted
    once, under its predicted activity, with score ``score * activity_score``. A detection is thus
    a true positive for ``c`` only when it is labelled ``c`` and matches a person doing ``c``;
    labelled ``c`` on a person doing something else it is a false positive for ``c`` (and that
    person a miss for its own class). Crowd regions and persons with unknown activity become
    crowd ("ignore") regions of every category, so detections on them count neither way.
    AP is COCO's AP@[.5:.95] (and AP50) of each category; classes without any ground truth get
    NaN and are left out of the mean (``mAP``).
"""
import contextlib
import copy
import io
import logging
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from .testing import create_small_table

__all__ = [
    "gt_activity_index",
    "has_activity_annotations",
    "infer_activity_classes",
    "greedy_match",
    "evaluate_activity",
]

logger = logging.getLogger(__name__)


def has_activity_annotations(coco_gt: COCO, cat_id: Optional[int] = None) -> bool:
    """Whether any (person) annotation of ``coco_gt`` carries a non-empty ``"activity"``."""
    for ann in coco_gt.dataset.get("annotations", []):
        if cat_id is not None and ann.get("category_id") != cat_id:
            continue
        if ann.get("activity") not in (None, ""):
            return True
    return False


def infer_activity_classes(coco_gt: COCO) -> Optional[List[str]]:
    """Activity class names from the GT json: its top-level ``"activity_classes"`` when present,
    else the sorted distinct string activities of its annotations; ``None`` when there are none."""
    classes = coco_gt.dataset.get("activity_classes")
    if classes:
        return list(classes)
    names = {
        a["activity"]
        for a in coco_gt.dataset.get("annotations", [])
        if isinstance(a.get("activity"), str) and a["activity"]
    }
    return sorted(names) or None


def gt_activity_index(value: Any, classes: Sequence[str]) -> int:
    """Class index of a GT ``"activity"`` value (name or index); -1 when unknown/out of range."""
    if value is None or isinstance(value, bool):
        return -1
    if isinstance(value, str):
        try:
            return list(classes).index(value)
        except ValueError:
            return -1
    if isinstance(value, (int, np.integer)) and 0 <= int(value) < len(classes):
        return int(value)
    return -1


def greedy_match(
    gt_boxes: np.ndarray, dt_boxes: np.ndarray, dt_scores: np.ndarray, iou_threshold: float = 0.5
) -> np.ndarray:
    """Match detections to ground truths greedily in decreasing score order.

    Args:
        gt_boxes: (G, 4) XYWH boxes (non-crowd).
        dt_boxes: (D, 4) XYWH boxes.
        dt_scores: (D,) scores.
    Returns:
        (D,) int array: index of the matched ground truth for each detection, -1 if unmatched.
        Each detection takes the unmatched ground truth of highest IoU, if that IoU >= threshold.
    """
    num_dt = len(dt_boxes)
    matches = -np.ones(num_dt, dtype=np.int64)
    if num_dt == 0 or len(gt_boxes) == 0:
        return matches
    ious = mask_util.iou(
        np.asarray(dt_boxes, dtype=np.float64).reshape(-1, 4).tolist(),
        np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4).tolist(),
        [0] * len(gt_boxes),
    )
    ious = np.asarray(ious).reshape(num_dt, len(gt_boxes))
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for d in np.argsort(-np.asarray(dt_scores), kind="mergesort"):
        iou = np.where(taken, -1.0, ious[d])
        g = int(np.argmax(iou))
        if iou[g] >= iou_threshold:
            matches[d] = g
            taken[g] = True
    return matches


def _nan_mean(values: Sequence[float]) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


class _MatchCounts(NamedTuple):
    """Per activity class: persons with that activity (non-crowd), those matched by a detection,
    those matched and given a label (not "unknown"), and those given the right label."""

    num_gt: np.ndarray
    matched: np.ndarray
    labelled: np.ndarray
    correct: np.ndarray


def evaluate_activity(
    coco_gt: COCO,
    coco_results: List[Dict[str, Any]],
    activity_classes: Sequence[str],
    person_cat_id: int,
    iou_threshold: float = 0.5,
) -> "OrderedDict[str, float]":
    """Activity accuracy on matched detections and per-activity AP (see the module docstring).

    Args:
        coco_gt: the ground truth; person annotations carry ``"activity"``.
        coco_results: COCO results of ``category_id == person_cat_id`` with ``"activity_id"``.
        activity_classes: class names; ``activity_id`` indexes this list.
    Returns:
        OrderedDict with ``accuracy`` (an "unknown" answer, ``activity_id < 0``, counts as
        wrong), ``coverage`` (share of matched people given a label), ``accuracy_labelled``
        (accuracy on those), ``mAP``, ``mAP50`` and, per class ``c``, ``accuracy-c``,
        ``AP-c``, ``AP50-c``, all in percent (NaN where undefined).
    """
    classes = list(activity_classes)
    person_results = [r for r in coco_results if r.get("category_id") == person_cat_id]
    gt_by_img = _person_gt_by_image(coco_gt, person_cat_id, classes)
    dt_by_img: Dict[int, List[Dict[str, Any]]] = {}
    for r in person_results:
        dt_by_img.setdefault(r["image_id"], []).append(r)

    # (a) accuracy on matched detections
    counts = _count_matches(gt_by_img, dt_by_img, classes, iou_threshold)
    # (b) per-activity AP
    ap, ap50 = _per_activity_ap(coco_gt, gt_by_img, person_results, classes)

    results = _activity_results(counts, ap, ap50, classes)
    _log_activity_results(results, counts, ap, ap50, classes, iou_threshold)
    return results


def _person_gt_by_image(
    coco_gt: COCO, person_cat_id: int, classes: List[str]
) -> Dict[int, List[Dict[str, Any]]]:
    """The person annotations of ``coco_gt`` by image id; warns about activities that are not
    among ``classes`` (those persons count as "unknown activity")."""
    gt_by_img: Dict[int, List[Dict[str, Any]]] = {}
    unknown_names = set()
    for ann in coco_gt.dataset["annotations"]:
        if ann.get("category_id") != person_cat_id:
            continue
        gt_by_img.setdefault(ann["image_id"], []).append(ann)
        act = ann.get("activity")
        if isinstance(act, str) and act and act not in classes:
            unknown_names.add(act)
    if unknown_names:
        logger.warning(
            f"Activities {sorted(unknown_names)} of the ground truth are not among the classes "
            f"{classes}; those persons count as 'unknown activity'."
        )
    return gt_by_img


def _count_matches(
    gt_by_img: Dict[int, List[Dict[str, Any]]],
    dt_by_img: Dict[int, List[Dict[str, Any]]],
    classes: List[str],
    iou_threshold: float,
) -> _MatchCounts:
    """Match each image's detections to its non-crowd persons (:func:`greedy_match`) and count,
    per activity class, the persons, the matched ones and the right and given labels."""
    num_classes = len(classes)
    counts = _MatchCounts(*(np.zeros(num_classes, dtype=np.int64) for _ in range(4)))
    for img_id, anns in gt_by_img.items():
        anns = [a for a in anns if not a.get("iscrowd", 0)]
        gt_cls = np.array(
            [gt_activity_index(a.get("activity"), classes) for a in anns], dtype=np.int64
        )
        for c in gt_cls[gt_cls >= 0]:
            counts.num_gt[c] += 1
        dts = dt_by_img.get(img_id, [])
        if not anns or not dts:
            continue
        match = greedy_match(
            np.array([a["bbox"] for a in anns]),
            np.array([d["bbox"] for d in dts]),
            np.array([d["score"] for d in dts]),
            iou_threshold,
        )
        for d, g in enumerate(match):
            if g < 0 or gt_cls[g] < 0:
                continue
            c = gt_cls[g]
            counts.matched[c] += 1
            counts.labelled[c] += int(dts[d].get("activity_id", -1) >= 0)
            counts.correct[c] += int(dts[d].get("activity_id", -1) == c)
    return counts


def _per_class_accuracy(counts: _MatchCounts) -> List[float]:
    """Percentage of each class's matched persons given the right label (NaN if none matched)."""
    matched, correct = counts.matched, counts.correct
    return [
        100.0 * correct[c] / matched[c] if matched[c] else float("nan")
        for c in range(len(matched))
    ]


def _activity_results(
    counts: _MatchCounts, ap: List[float], ap50: List[float], classes: List[str]
) -> "OrderedDict[str, float]":
    """The metrics dict of :func:`evaluate_activity` from the match counts and the APs."""
    total_matched = int(counts.matched.sum())
    total_labelled = int(counts.labelled.sum())
    num_correct = counts.correct.sum()
    accuracy = 100.0 * num_correct / total_matched if total_matched else float("nan")
    # the classifier may answer "unknown" (activity_id < 0): how many it judged, and how well
    coverage = 100.0 * total_labelled / total_matched if total_matched else float("nan")
    accuracy_labelled = (
        100.0 * num_correct / total_labelled if total_labelled else float("nan")
    )
    per_class_acc = _per_class_accuracy(counts)

    results: "OrderedDict[str, float]" = OrderedDict()
    results["accuracy"] = float(accuracy)
    results["coverage"] = float(coverage)
    results["accuracy_labelled"] = float(accuracy_labelled)
    results["mAP"] = _nan_mean(ap)
    results["mAP50"] = _nan_mean(ap50)
    for c, name in enumerate(classes):
        results[f"accuracy-{name}"] = float(per_class_acc[c])
        results[f"AP-{name}"] = float(ap[c])
        results[f"AP50-{name}"] = float(ap50[c])
    return results


def _log_activity_results(
    results: "OrderedDict[str, float]",
    counts: _MatchCounts,
    ap: List[float],
    ap50: List[float],
    classes: List[str],
    iou_threshold: float,
) -> None:
    """Log the summary metrics and a per-activity table."""
    from tabulate import tabulate

    per_class_acc = _per_class_accuracy(counts)
    rows = [
        [name, int(counts.num_gt[c]), int(counts.matched[c]), per_class_acc[c], ap[c], ap50[c]]
        for c, name in enumerate(classes)
    ]
    table = tabulate(
        rows,
        headers=["activity", "#GT", "#matched", "accuracy", "AP", "AP50"],
        tablefmt="pipe",
        floatfmt=".3f",
        numalign="left",
    )
    logger.info(
        "Evaluation results for activity (accuracy on detections matched at IoU >= "
        f"{iou_threshold}: {int(counts.correct.sum())}/{int(counts.matched.sum())}): \n"
        + create_small_table({k: results[k] for k in ("accuracy", "coverage",
                                                      "accuracy_labelled", "mAP", "mAP50")})
    )
    logger.info("Per-activity results: \n" + table)


def _per_activity_ap(coco_gt, gt_by_img, person_results, classes):
    num_classes = len(classes)
    nan = float("nan")
    annotations = []
    for anns in gt_by_img.values():
        for ann in anns:
            c = -1 if ann.get("iscrowd", 0) else gt_activity_index(ann.get("activity"), classes)
            base = {
                "image_id": ann["image_id"],
                "bbox": list(ann["bbox"]),
                "area": float(ann.get("area", ann["bbox"][2] * ann["bbox"][3])),
            }
            if c >= 0:
                annotations.append(dict(base, category_id=c + 1, iscrowd=0))
            else:  # crowd or unknown activity: an ignore region for every class
                annotations.extend(
                    dict(base, category_id=k + 1, iscrowd=1) for k in range(num_classes)
                )
    for i, ann in enumerate(annotations):
        ann["id"] = i + 1
    has_gt = np.zeros(num_classes, dtype=bool)
    for ann in annotations:
        if not ann["iscrowd"]:
            has_gt[ann["category_id"] - 1] = True

    detections = []
    for r in person_results:
        c = int(r.get("activity_id", -1))
        if not 0 <= c < num_classes:
            continue
        score = float(r["score"]) * float(r.get("activity_score", 1.0))
        detections.append(
            {
                "image_id": r["image_id"],
                "category_id": c + 1,
                "bbox": list(r["bbox"]),
                "score": score,
            }
        )

    if not detections:
        ap = [0.0 if has_gt[c] else nan for c in range(num_classes)]
        return ap, list(ap)

    gt = COCO()
    gt.dataset = {
        "images": copy.copy(coco_gt.dataset["images"]),
        "categories": [{"id": c + 1, "name": name} for c, name in enumerate(classes)],
        "annotations": annotations,
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(detections)
        coco_eval = COCOeval(gt, dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    # precision: (iouThrs, recThrs, catIds, areaRng, maxDets); area "all", maxDets 100
    precision = coco_eval.eval["precision"]
    cat_index = {cid: k for k, cid in enumerate(coco_eval.params.catIds)}
    ap, ap50 = [], []
    for c in range(num_classes):
        if not has_gt[c]:
            ap.append(nan)
            ap50.append(nan)
            continue
        p = precision[:, :, cat_index[c + 1], 0, -1]
        p_all = p[p > -1]
        p_50 = p[0][p[0] > -1]
        ap.append(float(np.mean(p_all)) * 100 if p_all.size else nan)
        ap50.append(float(np.mean(p_50)) * 100 if p_50.size else nan)
    return ap, ap50

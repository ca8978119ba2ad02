"""Validation of COCO person records, one cleaner per field.

Each cleaner takes the raw value of one field of an image entry or an annotation and returns the
cleaned value and/or an :class:`Issue` (the problem kind, the message and how many times it
counts); :func:`multitask.data.coco.load_coco_person_json` applies them and reports the issues to
a :class:`ProblemLog`.

Validation (each case is counted in the load statistics, and logged with the json file, the image
file and the annotation id -- the first :data:`MAX_LOGGED_PER_KIND` of each kind one by one, then
one summary line with the counts of every kind):

==========================  ===================================================================
kind                        what happens
==========================  ===================================================================
bbox_fixed_from_mask        box missing / w or h <= 0 / not finite / outside the image, but the
                            segmentation gives a non-empty mask: the box is replaced by the
                            tight box of that mask; the annotation is kept.
bbox_invalid_skipped        the same, without a usable mask: the annotation is skipped.
keypoints_outside_image     a labelled keypoint (v > 0) lies outside ``[0, W] x [0, H]``: its v is
                            set to 0 (what COCO does for such keypoints). Counted per keypoint.
keypoints_malformed         ``keypoints`` is not 51 numbers (-> all 17 set to v=0), or one
                            triplet is not finite / has v not in {0, 1, 2} (-> that one v=0).
keypoints_missing           no ``keypoints`` field (a detection-only json): all 17 get v=0.
                            Summary only, no line per annotation.
segmentation_missing        no / empty / unusable segmentation: the annotation is KEPT for its
                            box and keypoints, without a ``"segmentation"`` key; the training
                            mapper gives it an all-zero mask and ``gt_mask_valid = False`` so a
                            mask loss can ignore it.
polygons_dropped            polygons with fewer than 3 points (or odd length / non-finite) are
                            removed from an otherwise usable segmentation.
image_bad_entry             image entry without a file name or a positive width/height: skipped
                            with its annotations.
image_file_missing          the image file does not exist (``check_image_files=True``): skipped.
duplicate_annotation_id     a second annotation with an id already seen: skipped.
==========================  ===================================================================

Crowd annotations (``iscrowd=1``) are kept with ``iscrowd=1``; the training mapper drops them and
the evaluator reads them from the json.
"""
import logging
import math
import os
from collections import OrderedDict
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple

from ..structures.keypoints import COCO_PERSON_KEYPOINT_NAMES, KEYPOINT_COORD_OFFSET

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_LOGGED_PER_KIND",
    "PROBLEM_KINDS",
    "Issue",
    "ProblemLog",
    "clean_image_entry",
    "check_image_file",
    "clean_annotation_id",
    "clean_iscrowd",
    "clean_segmentation",
    "clean_bbox",
    "clean_keypoints",
    "clean_activity",
    "segmentation_bbox",
]

# Each problem kind is logged one line per record up to this many times per json, then summarised.
MAX_LOGGED_PER_KIND = 20

PROBLEM_KINDS = (
    "bbox_fixed_from_mask",
    "bbox_invalid_skipped",
    "keypoints_outside_image",
    "keypoints_malformed",
    "keypoints_missing",
    "segmentation_missing",
    "polygons_dropped",
    "image_bad_entry",
    "image_file_missing",
    "duplicate_annotation_id",
)
# kinds that get no per-record log line (they are usually a property of the whole json)
SUMMARY_ONLY_KINDS = ("keypoints_missing",)


class Issue(NamedTuple):
    """One validation problem of a field: its kind (see the module docstring), the message, and
    how many times it counts (e.g. the number of keypoints affected)."""

    kind: str
    detail: str
    n: int = 1


class ProblemLog:
    """Counts validation problems and logs the first few of each kind."""

    def __init__(self, json_file: str, log: logging.Logger = logger):
        self.json_file = json_file
        self.counts: "OrderedDict[str, int]" = OrderedDict((k, 0) for k in PROBLEM_KINDS)
        self._logged: Dict[str, int] = {k: 0 for k in PROBLEM_KINDS}
        self._log = log

    def add(self, kind: str, image_file: str, ann_id: Any, detail: str, n: int = 1) -> None:
        self.counts[kind] += n
        if kind in SUMMARY_ONLY_KINDS:
            return
        self._logged[kind] += 1
        if self._logged[kind] <= MAX_LOGGED_PER_KIND:
            self._log.warning(
                "%s: json=%s image=%s annotation_id=%s: %s",
                kind, self.json_file, image_file, ann_id, detail,
            )
            if self._logged[kind] == MAX_LOGGED_PER_KIND:
                self._log.warning(
                    "%s: further records of this kind in %s are only counted, not logged",
                    kind, self.json_file,
                )

    def report(self, issue: Optional[Issue], image_file: str, ann_id: Any) -> None:
        """:meth:`add` an issue returned by a cleaner; ``None`` (no problem) is ignored."""
        if issue is not None:
            self.add(issue.kind, image_file, ann_id, issue.detail, n=issue.n)

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.counts.items())


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------------------------------------
# image entry
# ------------------------------------------------------------------------------------------------
def clean_image_entry(
    img_id: Any, img: Dict[str, Any], num_anns: int
) -> Tuple[Optional[Tuple[str, int, int]], Optional[Issue]]:
    """``((file_name, height, width), None)``, or ``(None, issue)`` when the image is skipped."""
    file_name = img.get("file_name")
    height, width = img.get("height"), img.get("width")
    size_ok = _is_number(height) and _is_number(width) and height > 0 and width > 0
    if not file_name or not size_ok:
        return None, Issue(
            "image_bad_entry",
            f"image id {img_id} has file_name={file_name!r} height={height!r} width={width!r}; "
            f"image skipped with its {num_anns} person annotations",
        )
    return (file_name, int(height), int(width)), None


def check_image_file(path: str, img_id: Any, num_anns: int) -> Optional[Issue]:
    """``None`` if the image file exists, else the reason to skip the image."""
    if os.path.isfile(path):
        return None
    return Issue(
        "image_file_missing",
        f"image id {img_id}: file does not exist; skipped with its {num_anns} annotations",
    )


# ------------------------------------------------------------------------------------------------
# annotation fields
# ------------------------------------------------------------------------------------------------
def clean_annotation_id(ann_id: Any, seen_ids: Set[Any]) -> Optional[Issue]:
    """``None`` for an id not seen before (it is added to ``seen_ids``), else the reason to skip
    the annotation."""
    if ann_id in seen_ids:
        return Issue("duplicate_annotation_id", "annotation id seen before; skipped")
    seen_ids.add(ann_id)
    return None


def clean_iscrowd(iscrowd: Any) -> int:
    """``iscrowd`` as 0 or 1."""
    return int(bool(iscrowd))


def _clean_rle(segm: Dict[str, Any], height: int, width: int) -> Tuple[Any, str]:
    counts, size = segm.get("counts"), segm.get("size")
    if counts is None or size is None or len(counts) == 0:
        return None, "RLE without counts/size"
    try:
        size_ok = [int(s) for s in size] == [height, width]
    except (TypeError, ValueError):
        size_ok = False
    if not size_ok:
        return None, f"RLE size {size!r} != image size {[height, width]}"
    return segm, ""


def _clean_polygons(segm: Any) -> Tuple[Any, int, str]:
    good, dropped = [], 0
    for poly in segm:
        if (
            isinstance(poly, (list, tuple))
            and len(poly) >= 6
            and len(poly) % 2 == 0
            and all(_is_number(c) for c in poly)
        ):
            good.append([float(c) for c in poly])
        else:
            dropped += 1
    if not good:
        return None, dropped, "empty segmentation" if not segm else "no valid polygon"
    return good, dropped, ""


def clean_segmentation(segm: Any, height: int, width: int) -> Tuple[Any, Optional[Issue]]:
    """``(segmentation, issue)``: the usable segmentation (RLE, or the valid polygons as float
    lists) with a ``polygons_dropped`` issue if some polygons were removed; or ``(None,
    segmentation_missing issue)`` -- the annotation is still kept for its box and keypoints."""
    dropped, reason = 0, ""
    if segm is None:
        cleaned, reason = None, "no segmentation"
    elif isinstance(segm, dict):
        cleaned, reason = _clean_rle(segm, height, width)
    elif isinstance(segm, (list, tuple)):
        cleaned, dropped, reason = _clean_polygons(segm)
    else:
        cleaned, reason = None, f"unsupported segmentation type {type(segm).__name__}"
    if cleaned is None:
        return None, Issue(
            "segmentation_missing", f"{reason}; kept for box/keypoints, mask marked invalid"
        )
    if dropped:
        return cleaned, Issue(
            "polygons_dropped", f"{dropped} polygon(s) with < 3 points dropped", n=dropped
        )
    return cleaned, None


def segmentation_bbox(segm: Any, height: int, width: int) -> Optional[List[float]]:
    """Tight XYWH box of a (cleaned) segmentation as pycocotools rasterises it, or None if empty."""
    from pycocotools import mask as mask_util

    if isinstance(segm, dict):
        rle = segm
        if isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects(segm, height, width)
    else:
        rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
    x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
    if w <= 0 or h <= 0:
        return None
    return [x, y, w, h]


def _bbox_problem(bbox: Any, height: int, width: int) -> str:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"bbox {bbox!r} is not 4 finite numbers"
    if not all(_is_number(v) for v in bbox):
        return f"bbox {bbox!r} is not 4 finite numbers"
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return f"bbox {list(bbox)} has w or h <= 0"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"bbox {list(bbox)} lies outside the {width}x{height} image"
    return ""


def clean_bbox(
    bbox: Any, segm: Any, height: int, width: int
) -> Tuple[Optional[List[float]], Optional[Issue]]:
    """``(XYWH floats, issue)``: the box itself (no issue), or the tight box of the cleaned
    segmentation ``segm`` when the box is unusable (``bbox_fixed_from_mask``); ``(None,
    bbox_invalid_skipped issue)`` when there is neither -- the annotation is skipped."""
    bad = _bbox_problem(bbox, height, width)
    if not bad:
        return [float(v) for v in bbox], None
    mask_box = segmentation_bbox(segm, height, width) if segm is not None else None
    if mask_box is None:
        return None, Issue("bbox_invalid_skipped", bad + "; no usable mask; skipped")
    return mask_box, Issue(
        "bbox_fixed_from_mask",
        bad + f"; replaced by the mask's tight box {[round(v, 2) for v in mask_box]}",
    )


def clean_keypoints(
    keypoints: Any, height: int, width: int, names: Sequence[str] = COCO_PERSON_KEYPOINT_NAMES
) -> Tuple[List[float], List[Issue]]:
    """``(3K floats, issues)`` for the K keypoint ``names`` of the dataset: coordinates shifted by
    :data:`KEYPOINT_COORD_OFFSET`, v as float; malformed triplets and labelled keypoints outside
    the image get v=0."""
    num_keypoints = len(names)
    kpts = [0.0] * (3 * num_keypoints)
    if keypoints is None or (isinstance(keypoints, (list, tuple)) and len(keypoints) == 0):
        return kpts, [Issue("keypoints_missing", "")]
    if not isinstance(keypoints, (list, tuple)) or len(keypoints) != 3 * num_keypoints:
        n = len(keypoints) if isinstance(keypoints, (list, tuple)) else keypoints
        return kpts, [
            Issue(
                "keypoints_malformed",
                f"keypoints has {n} values, expected {3 * num_keypoints}; all set to v=0",
            )
        ]
    n_bad, out_names = 0, []
    for j in range(num_keypoints):
        kx, ky, kv = keypoints[3 * j : 3 * j + 3]
        if not (_is_number(kx) and _is_number(ky) and kv in (0, 1, 2)):
            n_bad += 1
            continue  # stays (0, 0, 0)
        kx = float(kx) + KEYPOINT_COORD_OFFSET
        ky = float(ky) + KEYPOINT_COORD_OFFSET
        kv = float(kv)
        if kv > 0 and not (0.0 <= kx <= width and 0.0 <= ky <= height):
            kv = 0.0
            out_names.append(names[j])
        kpts[3 * j : 3 * j + 3] = [kx, ky, kv]
    issues = []
    if n_bad:
        issues.append(Issue(
            "keypoints_malformed",
            f"{n_bad} keypoint(s) not finite or with v not in {{0,1,2}}; set to v=0",
            n=n_bad,
        ))
    if out_names:
        issues.append(Issue(
            "keypoints_outside_image",
            f"keypoint(s) {out_names} outside the {width}x{height} image; set to v=0",
            n=len(out_names),
        ))
    return kpts, issues


def clean_activity(activity: Any) -> Optional[str]:
    """The activity name as a string, ``None`` when absent or empty."""
    return str(activity) if activity not in (None, "") else None

"""COCO person-keypoint json -> dataset dicts, with validation.

The dataset-dict format is the one of docs/internals.md. Conventions (detectron2's):

* boxes are converted from COCO's XYWH to ``XYXY_ABS``;
* keypoint coordinates get **+0.5**: COCO stores integer pixel *indices*, detectron2 works in
  continuous coordinates where pixel ``i`` covers ``[i, i + 1)``; so a horizontal flip maps
  ``x -> W - x``. Whoever writes predicted keypoints back to COCO json subtracts 0.5 again
  (as detectron2's ``COCOEvaluator`` does). :data:`KEYPOINT_COORD_OFFSET` is that 0.5.

Every image entry and annotation goes through the per-field cleaners of
:mod:`multitask.data.validation`, whose docstring lists the problem kinds, what happens to the
record in each case, and how they are counted and logged (:data:`MAX_LOGGED_PER_KIND`).

Crowd annotations (``iscrowd=1``) are kept with ``iscrowd=1``; the training mapper drops them and
the evaluator reads them from the json.

The builtin datasets and the registration functions live in :mod:`multitask.data.builtin`; they
can still be imported from this module.
"""
import contextlib
import io
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Set, Union

from ..structures.keypoints import (
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    COCO_PERSON_KEYPOINTS,
    KEYPOINT_COORD_OFFSET,
    KeypointSet,
    infer_flip_map,
)
from .catalog import MetadataCatalog
from .validation import (
    MAX_LOGGED_PER_KIND,
    ProblemLog,
    check_image_file,
    clean_activity,
    clean_annotation_id,
    clean_bbox,
    clean_image_entry,
    clean_iscrowd,
    clean_keypoints,
    clean_segmentation,
)

logger = logging.getLogger(__name__)

# COCO's person keypoints are defined in multitask.structures.keypoints and re-exported here
__all__ = [
    "COCO_PERSON_KEYPOINT_NAMES",
    "COCO_PERSON_KEYPOINT_FLIP_MAP",
    "KEYPOINT_COORD_OFFSET",
    "MAX_LOGGED_PER_KIND",
    "load_coco_person_json",
]


def _base_metadata(keypoint_set: KeypointSet = COCO_PERSON_KEYPOINTS) -> Dict[str, Any]:
    """A person dataset's metadata: its class and its keypoint set (COCO's by default)."""
    return dict(thing_classes=["person"], evaluator_type="coco", **keypoint_set.metadata())


def _keypoint_set(category: Dict[str, Any], json_file: str) -> KeypointSet:
    """The keypoints the person category of a json labels: COCO's when it names none or COCO's
    17, else its own (names, ``skeleton`` as 1-based index pairs, left/right pairs by name)."""
    names = list(category.get("keypoints") or [])
    if not names or tuple(names) == COCO_PERSON_KEYPOINT_NAMES:
        return COCO_PERSON_KEYPOINTS
    skeleton = [
        (names[a - 1], names[b - 1])
        for a, b in (category.get("skeleton") or [])
        if 1 <= a <= len(names) and 1 <= b <= len(names)
    ]
    keypoint_set = KeypointSet(
        names=tuple(names), flip_map=tuple(infer_flip_map(names)), skeleton=tuple(skeleton)
    )
    logger.info(
        "%s labels its own %d keypoints %s (left/right pairs %s); the model needs "
        "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS %d", json_file, len(names), names,
        [list(p) for p in keypoint_set.flip_map], len(names),
    )
    return keypoint_set


def _read_coco_api(json_file: str, dataset_name: Optional[str]):
    """``pycocotools.coco.COCO`` of ``json_file``; errors name the file."""
    from pycocotools.coco import COCO

    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"COCO json file not found: {json_file}"
            + (f" (dataset '{dataset_name}')" if dataset_name else "")
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(json_file)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_file} is not valid JSON: {e}") from e
    except (AssertionError, TypeError, KeyError) as e:
        raise ValueError(f"{json_file} is not a COCO annotation file: {e!r}") from e


def _person_category_id(coco, json_file: str) -> Any:
    """Id of the ``person`` category (or of the only category, with a warning)."""
    cats = coco.loadCats(coco.getCatIds())
    person = [c for c in cats if c.get("name") == "person"]
    if person:
        person_id = person[0]["id"]
    elif len(cats) == 1:
        person_id = cats[0]["id"]
        logger.warning(
            "%s has no category named 'person'; using its only category %r as person",
            json_file, cats[0].get("name"),
        )
    else:
        raise ValueError(
            f"{json_file} has no 'person' category (categories: {[c.get('name') for c in cats]})"
        )
    return person_id, _keypoint_set(person[0] if person else cats[0], json_file)


def _annotation_record(
    ann: Dict[str, Any], height: int, width: int, path: str,
    seen_ann_ids: Set[Any], problems: ProblemLog, keypoint_names: List[str],
) -> Optional[dict]:
    """The dataset-dict annotation of one COCO annotation, or ``None`` when it is skipped."""
    ann_id = ann.get("id")
    duplicate = clean_annotation_id(ann_id, seen_ann_ids)
    if duplicate is not None:
        problems.report(duplicate, path, ann_id)
        return None
    iscrowd = clean_iscrowd(ann.get("iscrowd", 0))

    segm, segm_issue = clean_segmentation(ann.get("segmentation"), height, width)
    if segm is not None:
        problems.report(segm_issue, path, ann_id)  # polygons dropped
    bbox, bbox_issue = clean_bbox(ann.get("bbox"), segm, height, width)
    problems.report(bbox_issue, path, ann_id)
    if bbox is None:
        return None
    if segm is None:  # counted only for annotations that are kept
        problems.report(segm_issue, path, ann_id)

    kpts, kpt_issues = clean_keypoints(ann.get("keypoints"), height, width, keypoint_names)
    for issue in kpt_issues:
        problems.report(issue, path, ann_id)

    x, y, w, h = bbox
    obj = {
        "id": ann_id,
        "bbox": [x, y, x + w, y + h],
        "bbox_mode": "XYXY_ABS",
        "category_id": 0,
        "keypoints": kpts,
        "iscrowd": iscrowd,
        "activity": clean_activity(ann.get("activity")),
    }
    if segm is not None:
        obj["segmentation"] = segm
    return obj


def _image_record(
    img_id: Any, img: Dict[str, Any], anns: List[Dict[str, Any]], image_root: str,
    check_image_files: bool, seen_ann_ids: Set[Any], problems: ProblemLog,
    stats: "OrderedDict[str, int]", keypoint_names: List[str],
) -> Optional[dict]:
    """The dataset dict of one image with its person annotations, or ``None`` when skipped."""
    entry, issue = clean_image_entry(img_id, img, len(anns))
    if entry is None:
        problems.report(issue, str(img.get("file_name")), "-")
        return None
    file_name, height, width = entry
    path = os.path.join(image_root, file_name)
    if check_image_files:
        issue = check_image_file(path, img_id, len(anns))
        if issue is not None:
            problems.report(issue, path, "-")
            return None

    objs = []
    for ann in anns:
        obj = _annotation_record(ann, height, width, path, seen_ann_ids, problems,
                                 keypoint_names)
        if obj is None:
            continue
        objs.append(obj)
        stats["annotations_kept"] += 1
        stats["crowd_kept"] += obj["iscrowd"]
    return {
        "file_name": os.path.abspath(path),
        "image_id": img_id,
        "height": height,
        "width": width,
        "annotations": objs,
    }


def load_coco_person_json(
    json_file: Union[str, os.PathLike],
    image_root: Union[str, os.PathLike],
    dataset_name: Optional[str] = None,
    *,
    check_image_files: bool = True,
    return_stats: bool = False,
):
    """Load the person annotations of a COCO(-keypoints) json as dataset dicts.

    Args:
        json_file: COCO json (``person_keypoints_*.json`` or any COCO instances json with a
            ``person`` category; other categories are ignored).
        image_root: directory the images' ``file_name`` are relative to.
        dataset_name: when given, ``MetadataCatalog.get(dataset_name)`` is filled (json_file,
            image_root, thing_classes, keypoint_names, keypoint_flip_map, activity_classes,
            evaluator_type, thing_dataset_id_to_contiguous_id, load_stats).
        check_image_files: skip (and count) images whose file does not exist.
        return_stats: return ``(dicts, stats)`` instead of ``dicts``.

    Returns:
        ``list[dict]`` in the format of docs/internals.md (every image of the json that passes
        validation, including images without people), or ``(list, stats)``. ``stats`` is an
        ordered dict: ``images``, ``images_kept``, ``annotations``, ``annotations_kept``,
        ``crowd_kept`` and one count per problem kind (see :mod:`multitask.data.validation`).
    """
    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root)
    coco = _read_coco_api(json_file, dataset_name)
    person_id, keypoint_set = _person_category_id(coco, json_file)
    keypoint_names = list(keypoint_set.names)

    problems = ProblemLog(json_file, logger)
    stats: "OrderedDict[str, int]" = OrderedDict(
        images=0, images_kept=0, annotations=0, annotations_kept=0, crowd_kept=0
    )
    seen_ann_ids: Set[Any] = set()
    dataset_dicts: List[dict] = []
    for img_id in sorted(coco.imgs.keys()):
        stats["images"] += 1
        anns = [a for a in coco.imgToAnns.get(img_id, []) if a.get("category_id") == person_id]
        stats["annotations"] += len(anns)
        record = _image_record(
            img_id, coco.imgs[img_id], anns, image_root, check_image_files, seen_ann_ids,
            problems, stats, keypoint_names,
        )
        if record is not None:
            dataset_dicts.append(record)
            stats["images_kept"] += 1

    stats.update(problems.counts)
    activities = {
        a["activity"] for d in dataset_dicts for a in d["annotations"] if a["activity"] is not None
    }
    activity_classes = sorted(activities) if activities else None
    n_problems = sum(problems.counts.values())
    logger.info(
        "Loaded %d/%d images, %d/%d person annotations (%d crowd) from %s",
        stats["images_kept"], stats["images"], stats["annotations_kept"], stats["annotations"],
        stats["crowd_kept"], json_file,
    )
    (logger.warning if n_problems else logger.info)(
        "Validation of %s: %s", json_file, problems.summary()
    )

    if dataset_name is not None:
        md = MetadataCatalog.get(dataset_name)
        meta = _base_metadata(keypoint_set)
        given = md.get("keypoint_oks_sigmas")  # sigmas a user set for the dataset's own keypoints
        if meta["keypoint_oks_sigmas"] is None and given is not None and len(given) == len(
            keypoint_set
        ):
            meta["keypoint_oks_sigmas"] = list(given)
        md.set(
            json_file=json_file,
            image_root=image_root,
            activity_classes=activity_classes,
            thing_dataset_id_to_contiguous_id={person_id: 0},
            load_stats=dict(stats),
            **meta,
        )
    if return_stats:
        return dataset_dicts, stats
    return dataset_dicts

"""COCO person-keypoint json -> dataset dicts, with validation; builtin dataset registrations.

The dataset-dict format is the one of docs/internals.md. Conventions (detectron2's):

* boxes are converted from COCO's XYWH to ``XYXY_ABS``;
* keypoint coordinates get **+0.5**: COCO stores integer pixel *indices*, detectron2 works in
  continuous coordinates where pixel ``i`` covers ``[i, i + 1)``; so a horizontal flip maps
  ``x -> W - x``. Whoever writes predicted keypoints back to COCO json subtracts 0.5 again
  (as detectron2's ``COCOEvaluator`` does). :data:`KEYPOINT_COORD_OFFSET` is that 0.5.

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
import contextlib
import io
import json
import logging
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .catalog import DatasetCatalog, MetadataCatalog

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_PERSON_KEYPOINT_NAMES",
    "COCO_PERSON_KEYPOINT_FLIP_MAP",
    "KEYPOINT_CONNECTION_RULES",
    "KEYPOINT_COORD_OFFSET",
    "load_coco_person_json",
    "register_coco_person_keypoints",
    "register_all_builtin",
    "register_datasets_from_cfg",
    "get_dataset_json",
    "get_builtin_datasets_root",
]

COCO_PERSON_KEYPOINT_NAMES = (
    "nose",
    "left_eye", "right_eye",
    "left_ear", "right_ear",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)  # fmt: skip

COCO_PERSON_KEYPOINT_FLIP_MAP = (
    ("left_eye", "right_eye"),
    ("left_ear", "right_ear"),
    ("left_shoulder", "right_shoulder"),
    ("left_elbow", "right_elbow"),
    ("left_wrist", "right_wrist"),
    ("left_hip", "right_hip"),
    ("left_knee", "right_knee"),
    ("left_ankle", "right_ankle"),
)

# (keypoint name, keypoint name, RGB colour) as detectron2's, for drawing skeletons
KEYPOINT_CONNECTION_RULES = [
    ("left_ear", "left_eye", (102, 204, 255)),
    ("right_ear", "right_eye", (51, 153, 255)),
    ("left_eye", "nose", (102, 0, 204)),
    ("nose", "right_eye", (51, 102, 255)),
    ("left_shoulder", "right_shoulder", (255, 128, 0)),
    ("left_shoulder", "left_elbow", (153, 255, 204)),
    ("right_shoulder", "right_elbow", (128, 229, 255)),
    ("left_elbow", "left_wrist", (153, 255, 153)),
    ("right_elbow", "right_wrist", (102, 255, 224)),
    ("left_hip", "right_hip", (255, 102, 0)),
    ("left_hip", "left_knee", (255, 255, 77)),
    ("right_hip", "right_knee", (153, 255, 204)),
    ("left_knee", "left_ankle", (191, 255, 128)),
    ("right_knee", "right_ankle", (255, 195, 77)),
]

KEYPOINT_COORD_OFFSET = 0.5
NUM_KEYPOINTS = len(COCO_PERSON_KEYPOINT_NAMES)

# Each problem kind is logged one line per record up to this many times per json, then summarised.
MAX_LOGGED_PER_KIND = 20

_PROBLEM_KINDS = (
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
_SUMMARY_ONLY_KINDS = ("keypoints_missing",)


def _base_metadata() -> Dict[str, Any]:
    return dict(
        thing_classes=["person"],
        keypoint_names=list(COCO_PERSON_KEYPOINT_NAMES),
        keypoint_flip_map=[tuple(p) for p in COCO_PERSON_KEYPOINT_FLIP_MAP],
        keypoint_connection_rules=list(KEYPOINT_CONNECTION_RULES),
        evaluator_type="coco",
    )


class _Problems:
    """Counts validation problems and logs the first few of each kind."""

    def __init__(self, json_file: str):
        self.json_file = json_file
        self.counts: "OrderedDict[str, int]" = OrderedDict((k, 0) for k in _PROBLEM_KINDS)
        self._logged: Dict[str, int] = {k: 0 for k in _PROBLEM_KINDS}

    def add(self, kind: str, image_file: str, ann_id: Any, detail: str, n: int = 1) -> None:
        self.counts[kind] += n
        if kind in _SUMMARY_ONLY_KINDS:
            return
        self._logged[kind] += 1
        if self._logged[kind] <= MAX_LOGGED_PER_KIND:
            logger.warning(
                "%s: json=%s image=%s annotation_id=%s: %s",
                kind, self.json_file, image_file, ann_id, detail,
            )
            if self._logged[kind] == MAX_LOGGED_PER_KIND:
                logger.warning(
                    "%s: further records of this kind in %s are only counted, not logged",
                    kind, self.json_file,
                )


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _clean_segmentation(segm: Any, height: int, width: int) -> Tuple[Any, int, str]:
    """Return ``(segmentation or None, number of dropped polygons, reason if None)``."""
    if segm is None:
        return None, 0, "no segmentation"
    if isinstance(segm, dict):
        counts, size = segm.get("counts"), segm.get("size")
        if counts is None or size is None or len(counts) == 0:
            return None, 0, "RLE without counts/size"
        try:
            size_ok = [int(s) for s in size] == [height, width]
        except (TypeError, ValueError):
            size_ok = False
        if not size_ok:
            return None, 0, f"RLE size {size!r} != image size {[height, width]}"
        return segm, 0, ""
    if isinstance(segm, (list, tuple)):
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
    return None, 0, f"unsupported segmentation type {type(segm).__name__}"


def _segmentation_bbox(segm: Any, height: int, width: int) -> Optional[List[float]]:
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
        ``crowd_kept`` and one count per problem kind (see the module docstring).
    """
    from pycocotools.coco import COCO

    json_file = os.fspath(json_file)
    image_root = os.fspath(image_root)
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"COCO json file not found: {json_file}"
            + (f" (dataset '{dataset_name}')" if dataset_name else "")
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(json_file)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{json_file} is not valid JSON: {e}") from e
    except (AssertionError, TypeError, KeyError) as e:
        raise ValueError(f"{json_file} is not a COCO annotation file: {e!r}") from e

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
    json_kpt_names = (person[0] if person else cats[0]).get("keypoints")
    if json_kpt_names and list(json_kpt_names) != list(COCO_PERSON_KEYPOINT_NAMES):
        logger.warning(
            "%s: keypoint names %s differ from COCO's; they are read in COCO's order anyway",
            json_file, json_kpt_names,
        )

    problems = _Problems(json_file)
    stats: "OrderedDict[str, int]" = OrderedDict(
        images=0, images_kept=0, annotations=0, annotations_kept=0, crowd_kept=0
    )
    seen_ann_ids = set()
    activities = set()
    dataset_dicts: List[dict] = []

    for img_id in sorted(coco.imgs.keys()):
        img = coco.imgs[img_id]
        stats["images"] += 1
        file_name = img.get("file_name")
        height, width = img.get("height"), img.get("width")
        anns = [a for a in coco.imgToAnns.get(img_id, []) if a.get("category_id") == person_id]
        stats["annotations"] += len(anns)
        size_ok = _is_number(height) and _is_number(width) and height > 0 and width > 0
        if not file_name or not size_ok:
            problems.add(
                "image_bad_entry", str(file_name), "-",
                f"image id {img_id} has file_name={file_name!r} height={height!r} width={width!r}; "
                f"image skipped with its {len(anns)} person annotations",
            )
            continue
        height, width = int(height), int(width)
        path = os.path.join(image_root, file_name)
        if check_image_files and not os.path.isfile(path):
            problems.add(
                "image_file_missing", path, "-",
                f"image id {img_id}: file does not exist; skipped with its {len(anns)} annotations",
            )
            continue

        objs = []
        for ann in anns:
            ann_id = ann.get("id")
            if ann_id in seen_ann_ids:
                problems.add(
                    "duplicate_annotation_id", path, ann_id, "annotation id seen before; skipped"
                )
                continue
            seen_ann_ids.add(ann_id)
            iscrowd = int(bool(ann.get("iscrowd", 0)))

            segm, n_dropped, segm_reason = _clean_segmentation(
                ann.get("segmentation"), height, width
            )
            if n_dropped and segm is not None:
                problems.add(
                    "polygons_dropped", path, ann_id,
                    f"{n_dropped} polygon(s) with < 3 points dropped",
                    n=n_dropped,
                )

            bbox = ann.get("bbox")
            bad = _bbox_problem(bbox, height, width)
            if bad:
                mask_box = _segmentation_bbox(segm, height, width) if segm is not None else None
                if mask_box is None:
                    problems.add(
                        "bbox_invalid_skipped", path, ann_id, bad + "; no usable mask; skipped"
                    )
                    continue
                problems.add(
                    "bbox_fixed_from_mask", path, ann_id,
                    bad + f"; replaced by the mask's tight box {[round(v, 2) for v in mask_box]}",
                )
                bbox = mask_box
            x, y, w, h = (float(v) for v in bbox)

            if segm is None:
                problems.add(
                    "segmentation_missing", path, ann_id,
                    f"{segm_reason}; kept for box/keypoints, mask marked invalid",
                )

            kpts_raw = ann.get("keypoints")
            if kpts_raw is None or (isinstance(kpts_raw, (list, tuple)) and len(kpts_raw) == 0):
                problems.add("keypoints_missing", path, ann_id, "")
                kpts = [0.0] * (3 * NUM_KEYPOINTS)
            elif not isinstance(kpts_raw, (list, tuple)) or len(kpts_raw) != 3 * NUM_KEYPOINTS:
                n = len(kpts_raw) if isinstance(kpts_raw, (list, tuple)) else kpts_raw
                problems.add(
                    "keypoints_malformed", path, ann_id,
                    f"keypoints has {n} values, expected {3 * NUM_KEYPOINTS}; all set to v=0",
                )
                kpts = [0.0] * (3 * NUM_KEYPOINTS)
            else:
                kpts = [0.0] * (3 * NUM_KEYPOINTS)
                n_out, out_names, n_bad = 0, [], 0
                for j in range(NUM_KEYPOINTS):
                    kx, ky, kv = kpts_raw[3 * j : 3 * j + 3]
                    if not (_is_number(kx) and _is_number(ky) and kv in (0, 1, 2)):
                        n_bad += 1
                        continue  # stays (0, 0, 0)
                    kx = float(kx) + KEYPOINT_COORD_OFFSET
                    ky = float(ky) + KEYPOINT_COORD_OFFSET
                    kv = float(kv)
                    if kv > 0 and not (0.0 <= kx <= width and 0.0 <= ky <= height):
                        kv = 0.0
                        n_out += 1
                        out_names.append(COCO_PERSON_KEYPOINT_NAMES[j])
                    kpts[3 * j : 3 * j + 3] = [kx, ky, kv]
                if n_bad:
                    problems.add(
                        "keypoints_malformed", path, ann_id,
                        f"{n_bad} keypoint(s) not finite or with v not in {{0,1,2}}; set to v=0",
                        n=n_bad,
                    )
                if n_out:
                    problems.add(
                        "keypoints_outside_image", path, ann_id,
                        f"keypoint(s) {out_names} outside the {width}x{height} image; set to v=0",
                        n=n_out,
                    )

            activity = ann.get("activity")
            activity = str(activity) if activity not in (None, "") else None
            if activity is not None:
                activities.add(activity)

            obj = {
                "id": ann_id,
                "bbox": [x, y, x + w, y + h],
                "bbox_mode": "XYXY_ABS",
                "category_id": 0,
                "keypoints": kpts,
                "iscrowd": iscrowd,
                "activity": activity,
            }
            if segm is not None:
                obj["segmentation"] = segm
            objs.append(obj)
            stats["annotations_kept"] += 1
            stats["crowd_kept"] += iscrowd

        dataset_dicts.append(
            {
                "file_name": os.path.abspath(path),
                "image_id": img_id,
                "height": height,
                "width": width,
                "annotations": objs,
            }
        )
        stats["images_kept"] += 1

    stats.update(problems.counts)
    activity_classes = sorted(activities) if activities else None
    n_problems = sum(problems.counts.values())
    summary = ", ".join(f"{k}={v}" for k, v in problems.counts.items())
    logger.info(
        "Loaded %d/%d images, %d/%d person annotations (%d crowd) from %s",
        stats["images_kept"], stats["images"], stats["annotations_kept"], stats["annotations"],
        stats["crowd_kept"], json_file,
    )
    (logger.warning if n_problems else logger.info)("Validation of %s: %s", json_file, summary)

    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            json_file=json_file,
            image_root=image_root,
            activity_classes=activity_classes,
            thing_dataset_id_to_contiguous_id={person_id: 0},
            load_stats=dict(stats),
            **_base_metadata(),
        )
    if return_stats:
        return dataset_dicts, stats
    return dataset_dicts


def register_coco_person_keypoints(
    name: str, json_file: Union[str, os.PathLike], image_root: Union[str, os.PathLike]
) -> None:
    """Register a COCO person-keypoints json under ``name`` (loaded lazily on ``get``)."""
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_coco_person_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, activity_classes=None, **_base_metadata()
    )


# ------------------------------------------------------------------------------------------------
# builtin datasets
# ------------------------------------------------------------------------------------------------
_PREDEFINED_COCO = {
    "keypoints_coco_2017_train": (
        "coco/annotations/person_keypoints_train2017.json", "coco/train2017"),
    "keypoints_coco_2017_val": ("coco/annotations/person_keypoints_val2017.json", "coco/val2017"),
}
_SYNTHETIC = {"synthetic_people_train": "train", "synthetic_people_val": "val"}
_COCO_MINI = {"coco_mini_train": "train2017", "coco_mini_val": "val2017"}


def get_builtin_datasets_root() -> str:
    """``$MULTITASK_DATASETS``, default ``./datasets`` (detectron2's ``$DETECTRON2_DATASETS``)."""
    return os.path.expanduser(os.environ.get("MULTITASK_DATASETS", "datasets"))


def _repo_root() -> Path:
    # projects/multitask/data/coco.py -> parents: data, multitask, projects, <repo root>
    return Path(__file__).resolve().parents[3]


def _find_coco_mini() -> Optional[str]:
    env = os.environ.get("MULTITASK_COCO_MINI")
    if env:
        return os.path.expanduser(env)
    repo = _repo_root()
    rel = Path("shared") / "data" / "coco-mini"
    for cand in (repo.parent / rel, repo / rel):
        if cand.is_dir():
            return str(cand)
    return None


def _load_synthetic(name: str, split: str, root: str) -> List[dict]:
    try:
        from .synthetic import ensure_synthetic_dataset
    except ImportError as e:
        raise ImportError(
            f"Dataset '{name}' needs multitask.data.synthetic.ensure_synthetic_dataset: {e}"
        ) from e
    json_file, image_root = ensure_synthetic_dataset(root, split)
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root)
    return load_coco_person_json(json_file, image_root, name)


def _register_replacing(name: str, func, **metadata: Any) -> None:
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    DatasetCatalog.register(name, func)
    MetadataCatalog.get(name).set(activity_classes=None, **_base_metadata(), **metadata)


def register_all_builtin(root: Optional[str] = None) -> None:
    """(Re-)register the builtin datasets. Cheap: nothing is read or generated here.

    * ``keypoints_coco_2017_{train,val}``: ``<root>/coco/annotations/person_keypoints_*2017.json``
      and ``<root>/coco/{train,val}2017`` (``root`` = ``$MULTITASK_DATASETS`` or ``./datasets``);
    * ``coco_mini_{train,val}``: ``$MULTITASK_COCO_MINI`` or ``<repo>/../shared/data/coco-mini``,
      only if that directory exists;
    * ``synthetic_people_{train,val}``: generated on first ``get`` by
      ``multitask.data.synthetic.ensure_synthetic_dataset(syn_root, split)`` (which writes under
      ``<syn_root>/synthetic_people/<split>``), ``syn_root`` = ``$MULTITASK_SYNTHETIC_ROOT`` or
      ``root``; their metadata gets
      ``json_file``/``image_root`` when the loader runs (see :func:`get_dataset_json`).
    """
    root = root if root is not None else get_builtin_datasets_root()
    for name, (json_rel, img_rel) in _PREDEFINED_COCO.items():
        jf, ir = os.path.join(root, json_rel), os.path.join(root, img_rel)
        _register_replacing(
            name, (lambda jf=jf, ir=ir, name=name: load_coco_person_json(jf, ir, name)),
            json_file=jf, image_root=ir,
        )

    mini = _find_coco_mini()
    if mini is not None:
        for name, split in _COCO_MINI.items():
            jf = os.path.join(mini, "annotations", f"person_keypoints_{split}.json")
            ir = os.path.join(mini, split)
            _register_replacing(
                name, (lambda jf=jf, ir=ir, name=name: load_coco_person_json(jf, ir, name)),
                json_file=jf, image_root=ir,
            )

    syn_root = os.environ.get("MULTITASK_SYNTHETIC_ROOT") or root
    for name, split in _SYNTHETIC.items():
        _register_replacing(
            name, (lambda name=name, split=split: _load_synthetic(name, split, syn_root))
        )


def get_dataset_json(name: str) -> str:
    """Path of the COCO json behind dataset ``name``, making sure it exists.

    For lazily generated datasets (synthetic) this runs the dataset's loader once, which creates
    the json and records it in the metadata. Raises ``FileNotFoundError`` when there is none.
    """
    md = MetadataCatalog.get(name)
    jf = md.get("json_file")
    if jf and os.path.isfile(jf):
        return jf
    if name in DatasetCatalog:
        DatasetCatalog.get(name)
        jf = md.get("json_file")
        if jf and os.path.isfile(jf):
            return jf
    raise FileNotFoundError(
        f"Dataset '{name}' has no COCO json file on disk (metadata json_file={jf!r})"
    )


def register_datasets_from_cfg(cfg) -> List[str]:
    """Register each ``[name, json_file, image_root]`` of ``cfg.DATASETS.REGISTER``.

    Idempotent: a name already registered with the same files is left alone; with other files it
    is an error. Returns the names of the entries.
    """
    entries = cfg.DATASETS.get("REGISTER", []) or []
    names = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not all(
            isinstance(e, str) and e for e in entry
        ):
            raise ValueError(
                f"DATASETS.REGISTER[{i}] must be [name, json_file, image_root] (3 strings), "
                f"got {entry!r}"
            )
        name, json_file, image_root = entry
        json_file, image_root = os.path.expanduser(json_file), os.path.expanduser(image_root)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"DATASETS.REGISTER entry '{name}': json file {json_file} does not exist"
            )
        if not os.path.isdir(image_root):
            raise FileNotFoundError(
                f"DATASETS.REGISTER entry '{name}': image root {image_root} is not a directory"
            )
        if name in DatasetCatalog:
            md = MetadataCatalog.get(name)
            if (md.get("json_file"), md.get("image_root")) == (json_file, image_root):
                names.append(name)
                continue
            raise ValueError(
                f"DATASETS.REGISTER entry '{name}': a dataset of this name is already registered "
                f"(json_file={md.get('json_file')!r}, image_root={md.get('image_root')!r})"
            )
        register_coco_person_keypoints(name, json_file, image_root)
        names.append(name)
    return names

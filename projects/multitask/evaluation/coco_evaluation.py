"""COCO evaluation of person boxes, masks and keypoints (pycocotools), plus activities.

Like detectron2's ``COCOEvaluator``: ``process`` turns each image's predicted ``Instances`` into
COCO result dicts, ``evaluate`` gathers them on the main process, writes
``coco_instances_results.json`` and runs ``COCOeval`` per task on the person category.
"""
import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Set

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data import MetadataCatalog, get_dataset_json
from ..structures.activity import activity_name
from ..structures.keypoints import KEYPOINT_COORD_OFFSET, KeypointSet
from ..utils import comm
from .activity_evaluation import evaluate_activity, has_activity_annotations, infer_activity_classes
from .evaluator import DatasetEvaluator
from .testing import create_small_table

__all__ = ["COCOEvaluator", "instances_to_coco_json", "KEYPOINT_COORD_OFFSET"]

logger = logging.getLogger(__name__)

COCO_TASKS = ("bbox", "segm", "keypoints")
# The keypoint head's keypoints before the Pose Residual Network rewrote them, scored like
# "keypoints" on the same detections (TEST.EVAL_KEYPOINTS_BEFORE_PRN)
BEFORE_PRN_TASK = "keypoints_before_prn"
# Instances field that a task needs in the predictions
_TASK_FIELDS = {
    "bbox": "pred_boxes",
    "segm": "pred_masks",
    "keypoints": "pred_keypoints",
    BEFORE_PRN_TASK: "pred_keypoints_before_prn",
    "activity": "pred_activity",
}
_METRICS = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],
    BEFORE_PRN_TASK: ["AP", "AP50", "AP75", "APm", "APl"],
}


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "tensor"):  # a detectron2-style Boxes
        x = x.tensor
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def instances_to_coco_json(
    instances,
    img_id: int,
    class_map: Optional[Dict[int, int]] = None,
    activity_classes: Optional[Sequence[str]] = None,
    keypoint_coord_offset: float = KEYPOINT_COORD_OFFSET,
) -> List[Dict[str, Any]]:
    """Turn one image's predicted ``Instances`` into a list of COCO result dicts.

    Args:
        instances: ``Instances`` with ``pred_boxes`` (XYXY), ``scores``, ``pred_classes`` and
            optionally ``pred_masks`` (R, H, W) bool, ``pred_keypoints`` (R, K, 3) x, y, score,
            ``pred_activity`` (R,) and ``activity_scores`` (R, C).
        img_id: the COCO image id.
        class_map: contiguous class index -> COCO category id (default ``{0: 1}``).
        activity_classes: activity names; ``pred_activity`` indexes it.
        keypoint_coord_offset: subtracted from keypoint x, y (see ``KEYPOINT_COORD_OFFSET``).
    Returns:
        One dict per instance: ``image_id``, ``category_id``, ``bbox`` (XYWH), ``score`` and, when
        predicted, ``segmentation`` (compressed RLE, ``counts`` as str), ``keypoints``
        (``[x1, y1, s1, ...]``: keypoint scores in place of visibilities, as detectron2 writes
        them; x, y minus ``keypoint_coord_offset``, i.e. back to COCO's pixel-index convention),
        ``activity_id``, ``activity`` (name or None) and ``activity_score``.
    """
    num_instance = len(instances)
    if num_instance == 0:
        return []
    class_map = {0: 1} if class_map is None else class_map

    boxes = _to_numpy(instances.pred_boxes).astype(np.float64).reshape(-1, 4)
    boxes[:, 2:] -= boxes[:, :2]  # XYXY -> XYWH
    boxes = boxes.tolist()
    scores = _to_numpy(instances.scores).astype(np.float64).tolist()
    if instances.has("pred_classes"):
        classes = _to_numpy(instances.pred_classes).astype(np.int64).tolist()
    else:
        classes = [0] * num_instance

    rles = None
    if instances.has("pred_masks"):
        masks = _to_numpy(instances.pred_masks).astype(np.uint8)
        rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))
        for rle in rles:
            # "counts" is bytes; json (and loadRes after json) want a str
            rle["counts"] = rle["counts"].decode("utf-8")

    def coco_keypoints(field):
        if not instances.has(field):
            return None
        kps = _to_numpy(instances.get(field)).astype(np.float64)  # copy
        kps[..., :2] -= keypoint_coord_offset
        return kps.reshape(num_instance, -1).tolist()

    keypoints = coco_keypoints("pred_keypoints")
    before_prn = coco_keypoints("pred_keypoints_before_prn")

    activity = activity_score = None
    if instances.has("pred_activity"):
        activity = _to_numpy(instances.pred_activity).astype(np.int64).reshape(-1).tolist()
        if instances.has("activity_scores"):
            probs = _to_numpy(instances.activity_scores).astype(np.float64)
            probs = probs.reshape(num_instance, -1)
            activity_score = [
                float(probs[i, a]) if 0 <= a < probs.shape[1] else 0.0
                for i, a in enumerate(activity)
            ]

    results = []
    for k in range(num_instance):
        result = {
            "image_id": int(img_id),
            "category_id": int(class_map.get(classes[k], classes[k])),
            "bbox": boxes[k],
            "score": scores[k],
        }
        if rles is not None:
            result["segmentation"] = rles[k]
        if keypoints is not None:
            result["keypoints"] = keypoints[k]
        if before_prn is not None:
            result[BEFORE_PRN_TASK] = before_prn[k]
        if activity is not None:
            a = activity[k]
            result["activity_id"] = a
            result["activity"] = activity_name(a, activity_classes)
            result["activity_score"] = activity_score[k] if activity_score is not None else 1.0
        results.append(result)
    return results


def _resolve_dataset(dataset_name_or_json: str):
    """(json_file, metadata or None). A path to an existing file or a ``*.json`` name is a json
    file; anything else a dataset name looked up in ``multitask.data`` (imported lazily)."""
    path = os.fspath(dataset_name_or_json)
    if path.endswith(".json") or os.path.isfile(path):
        return path, None
    get_dataset_json(path)  # e.g. converts / writes the dataset's COCO json
    meta = MetadataCatalog.get(path)
    json_file = getattr(meta, "json_file", None)
    if not json_file:
        raise ValueError(f"Dataset '{path}' has no 'json_file' in its metadata")
    return json_file, meta


class COCOEvaluator(DatasetEvaluator):
    """Person box / mask / keypoint AP with pycocotools, and activity metrics.

    Args:
        dataset_name_or_json: path of the COCO-format ground-truth json, or the name of a
            registered dataset (its ``MetadataCatalog`` entry gives ``json_file``).
        tasks: any of "bbox", "segm", "keypoints", "keypoints_before_prn" (the keypoint head's
            keypoints before the PRN, ``pred_keypoints_before_prn``, scored as keypoints) and
            "activity". Tasks whose prediction field
            is absent from every image (e.g. no ``pred_masks`` with ``MODEL.MASK_ON`` False) or
            whose ground truth the json lacks are left out of the results.
        distributed: gather predictions from all ranks on the main process before evaluating;
            other ranks then return ``{}``.
        output_dir: where ``coco_instances_results.json`` is written (nothing written if None).
        kpt_oks_sigmas: per-keypoint OKS sigmas (``cfg.TEST.KEYPOINT_OKS_SIGMAS``); empty = COCO's.
        activity_classes: activity names that ``pred_activity`` indexes
            (``cfg.MODEL.ACTIVITY.CLASSES``); default: the dataset metadata's ``activity_classes``,
            else the json's top-level ``activity_classes``, else its sorted distinct activities.
        evaluate_activity: None (default) evaluates activities whenever the GT has activity labels
            and the predictions have ``pred_activity``; False never; True warns when it cannot.
        activity_iou_threshold: IoU of a detection-to-person match for the activity accuracy.
        keypoint_coord_offset: subtracted from predicted keypoint x, y when writing COCO results
            (default 0.5: the data loader's +0.5, as detectron2; 0 for raw COCO coordinates).

    ``evaluate()`` returns ``OrderedDict[task -> OrderedDict[metric -> float]]`` (percent):
    bbox/segm ``AP, AP50, AP75, APs, APm, APl``; keypoints ``AP, AP50, AP75, APm, APl``;
    activity ``accuracy, mAP, mAP50, accuracy-<c>, AP-<c>, AP50-<c>``. A task without any
    prediction gives NaN for each metric (with a warning).
    """

    def __init__(
        self,
        dataset_name_or_json: str,
        tasks: Sequence[str] = COCO_TASKS,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        kpt_oks_sigmas: Sequence[float] = (),
        activity_classes: Optional[Sequence[str]] = None,
        *,
        evaluate_activity: Optional[bool] = None,
        activity_iou_threshold: float = 0.5,
        keypoint_coord_offset: float = KEYPOINT_COORD_OFFSET,
    ):
        if isinstance(tasks, str):
            tasks = (tasks,)
        known = COCO_TASKS + (BEFORE_PRN_TASK, "activity")
        unknown = set(tasks) - set(known)
        if unknown:
            raise ValueError(f"Unknown tasks {sorted(unknown)}; expected some of {known}")
        self._tasks = tuple(tasks)
        self._distributed = distributed
        self._output_dir = output_dir
        self._kpt_oks_sigmas = np.asarray(list(kpt_oks_sigmas), dtype=np.float64)
        self._evaluate_activity = evaluate_activity
        self._activity_iou_threshold = float(activity_iou_threshold)
        self._keypoint_coord_offset = float(keypoint_coord_offset)

        self._json_file, meta = _resolve_dataset(dataset_name_or_json)
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco_api = COCO(self._json_file)

        cats = self._coco_api.loadCats(self._coco_api.getCatIds())
        person = [c for c in cats if c.get("name") == "person"]
        if person:
            self._person_id = int(person[0]["id"])
        elif len(cats) == 1:
            self._person_id = int(cats[0]["id"])
        else:
            raise ValueError(f"No 'person' category in {self._json_file}")
        # contiguous class 0 = person; any other categories follow in id order (not evaluated)
        others = sorted(int(c["id"]) for c in cats if int(c["id"]) != self._person_id)
        self._class_map = {0: self._person_id, **{i + 1: cid for i, cid in enumerate(others)}}
        person_cat = self._coco_api.cats[self._person_id]
        self._num_keypoints = len(person_cat.get("keypoints", [])) or None
        keypoint_set = KeypointSet.from_metadata(meta)
        if not len(self._kpt_oks_sigmas) and keypoint_set is not None:
            # a dataset's own keypoints are scored with its own sigmas (COCO's are COCOeval's)
            if not keypoint_set.is_coco_person and keypoint_set.oks_sigmas is not None:
                self._kpt_oks_sigmas = np.asarray(keypoint_set.oks_sigmas, dtype=np.float64)
        num_sigmas = len(self._kpt_oks_sigmas)
        if num_sigmas and self._num_keypoints and num_sigmas != self._num_keypoints:
            raise ValueError(
                f"{num_sigmas} keypoint OKS sigmas given for {self._num_keypoints} keypoints"
            )

        anns = [
            a
            for a in self._coco_api.dataset.get("annotations", [])
            if a.get("category_id") == self._person_id
        ]
        self._gt_tasks = {"bbox"}
        if any(a.get("segmentation") for a in anns):
            self._gt_tasks.add("segm")
        if any(a.get("keypoints") for a in anns):
            self._gt_tasks.add("keypoints")
        if has_activity_annotations(self._coco_api, self._person_id):
            self._gt_tasks.add("activity")

        if activity_classes is None and meta is not None:
            activity_classes = getattr(meta, "activity_classes", None)
        if activity_classes is None and "activity" in self._gt_tasks:
            activity_classes = infer_activity_classes(self._coco_api)
            logger.warning(
                f"No activity_classes given; using {activity_classes} from {self._json_file}. "
                "Pass cfg.MODEL.ACTIVITY.CLASSES so that they match the model's output order."
            )
        self._activity_classes = list(activity_classes) if activity_classes else None
        self.reset()

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs, outputs) -> None:
        for input, output in zip(inputs, outputs):
            if "instances" not in output:
                continue
            instances = output["instances"]
            fields = [t for t, f in _TASK_FIELDS.items() if instances.has(f)]
            instances = instances.to("cpu")
            self._predictions.append(
                {
                    "image_id": int(input["image_id"]),
                    "fields": fields,
                    "instances": instances_to_coco_json(
                        instances,
                        input["image_id"],
                        self._class_map,
                        self._activity_classes,
                        self._keypoint_coord_offset,
                    ),
                }
            )

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> Dict[str, Any]:
        """Evaluate the gathered predictions; ``img_ids`` restricts COCOeval to those images."""
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        if len(predictions) == 0:
            logger.warning("[COCOEvaluator] Did not receive valid predictions.")
        coco_results = list(itertools.chain(*(p["instances"] for p in predictions)))

        unknown_imgs = {r["image_id"] for r in coco_results} - set(self._coco_api.getImgIds())
        if unknown_imgs:
            raise ValueError(
                f"Predictions for {len(unknown_imgs)} image ids absent from {self._json_file}, "
                f"e.g. {sorted(unknown_imgs)[:5]}"
            )

        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            file_path = os.path.join(self._output_dir, "coco_instances_results.json")
            logger.info("Saving results to {}".format(file_path))
            with open(file_path, "w") as f:
                json.dump(coco_results, f)

        seen: Set[str] = set(itertools.chain(*(p["fields"] for p in predictions)))
        results: "OrderedDict[str, Any]" = OrderedDict()
        for task in COCO_TASKS + (BEFORE_PRN_TASK,):
            if task not in self._tasks:
                continue
            if seen and task not in seen:
                logger.info(
                    f"Skipping '{task}' evaluation: predictions have no {_TASK_FIELDS[task]}"
                )
                continue
            if task.split("_")[0] not in self._gt_tasks:
                logger.warning(
                    f"Skipping '{task}' evaluation: {self._json_file} has no ground truth for it"
                )
                continue
            coco_eval = self._evaluate_on_coco(coco_results, task, img_ids)
            results[task] = self._derive_coco_results(coco_eval, task)

        act = self._should_evaluate_activity(seen)
        if act:
            results["activity"] = self._eval_activity(coco_results, img_ids)
        return copy.deepcopy(results)

    # ------------------------------------------------------------------------------------------
    def _should_evaluate_activity(self, seen: Set[str]) -> bool:
        if self._evaluate_activity is False:
            return False
        wanted = self._evaluate_activity is True or "activity" in self._tasks
        reasons = []
        if "activity" not in self._gt_tasks:
            reasons.append(f"{self._json_file} has no activity labels")
        if seen and "activity" not in seen:
            reasons.append("predictions have no pred_activity")
        if not seen and not wanted:
            reasons.append("no predictions")
        if not self._activity_classes:
            reasons.append("no activity classes")
        if reasons:
            if wanted:
                logger.warning("Skipping 'activity' evaluation: " + "; ".join(reasons))
            return False
        return True

    def _eval_activity(self, coco_results, img_ids):
        coco_gt = self._coco_api
        if img_ids is not None:
            coco_gt, coco_results = _restrict_to_images(coco_gt, coco_results, img_ids)
        return evaluate_activity(
            coco_gt,
            coco_results,
            self._activity_classes,
            self._person_id,
            iou_threshold=self._activity_iou_threshold,
        )

    def _evaluate_on_coco(self, coco_results, iou_type, img_ids=None) -> Optional[COCOeval]:
        """COCOeval of ``iou_type`` on the person category; None when nothing to evaluate."""
        # loadRes adds fields to the dicts: evaluate on shallow copies
        coco_results = [dict(r) for r in coco_results]
        if iou_type == "segm":
            # Without a box loadRes derives the detection's area from its mask (as detectron2).
            for r in coco_results:
                r.pop("bbox", None)
            coco_results = [r for r in coco_results if "segmentation" in r]
        elif iou_type == "keypoints":
            coco_results = [r for r in coco_results if "keypoints" in r]
        elif iou_type == BEFORE_PRN_TASK:
            coco_results = [dict(r, keypoints=r[iou_type]) for r in coco_results if iou_type in r]
        metric_name = iou_type
        iou_type = iou_type.split("_")[0]
        if len(coco_results) == 0:
            return None
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = self._coco_api.loadRes(coco_results)
        coco_eval = COCOeval(self._coco_api, coco_dt, iou_type)
        coco_eval.params.catIds = [self._person_id]
        if img_ids is not None:
            coco_eval.params.imgIds = list(img_ids)
        if iou_type == "keypoints":
            num_kpts = len(coco_results[0]["keypoints"]) // 3
            sigmas = self._kpt_oks_sigmas if len(self._kpt_oks_sigmas) else None
            expected = len(coco_eval.params.kpt_oks_sigmas) if sigmas is None else len(sigmas)
            if num_kpts != expected:
                raise ValueError(
                    f"Predictions have {num_kpts} keypoints but there are {expected} OKS sigmas "
                    f"({'given' if sigmas is not None else 'COCOeval defaults'}); give "
                    f"{num_kpts} in TEST.KEYPOINT_OKS_SIGMAS or in the dataset metadata's "
                    "keypoint_oks_sigmas"
                )
            if sigmas is not None:
                coco_eval.params.kpt_oks_sigmas = sigmas
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        # keep COCOeval's metric lines, drop its progress messages
        lines = [ln for ln in summary.getvalue().splitlines() if ln.lstrip().startswith("Average")]
        logger.info(f"COCOeval ({metric_name}) summary:\n" + "\n".join(lines))
        return coco_eval

    def _derive_coco_results(
        self, coco_eval: Optional[COCOeval], iou_type: str
    ) -> "OrderedDict[str, float]":
        metrics = _METRICS[iou_type]
        if coco_eval is None:
            logger.warning(f"No predictions for '{iou_type}': its metrics are NaN.")
            return OrderedDict((m, float("nan")) for m in metrics)
        stats = coco_eval.stats
        results = OrderedDict(
            (m, float(stats[i] * 100) if stats[i] >= 0 else float("nan"))
            for i, m in enumerate(metrics)
        )
        logger.info("Evaluation results for {}: \n".format(iou_type) + create_small_table(results))
        if not np.isfinite(sum(results.values())):
            logger.info("Some metrics cannot be computed and are shown as NaN.")
        return results


def _restrict_to_images(coco_gt: COCO, coco_results, img_ids):
    keep = set(int(i) for i in img_ids)
    gt = COCO()
    gt.dataset = dict(coco_gt.dataset)
    gt.dataset["images"] = [im for im in coco_gt.dataset["images"] if im["id"] in keep]
    gt.dataset["annotations"] = [a for a in coco_gt.dataset["annotations"] if a["image_id"] in keep]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, [r for r in coco_results if r["image_id"] in keep]

#!/usr/bin/env python
"""How much does the keypoint head add to the detector? Model keypoints vs the mean pose.

Reads a model's ``coco_instances_results.json`` (written by the evaluator into
``OUTPUT_DIR/inference/<dataset>/``) and the dataset's ground truth, and prints

* keypoint AP (pycocotools OKS) of the model, and of the same detections (same boxes, same
  scores) given the mean pose of ``--mean-pose-from`` (default: the ground truth itself) in their
  box: a head that does not look at the image scores about the latter;
* per keypoint, the median distance to the matched ground truth divided by ``sqrt`` of its box
  area, for both.

Example (after the quickstart)::

    python tools/keypoint_error.py \
        --gt datasets/synthetic_people/val/annotations.json \
        --mean-pose-from datasets/synthetic_people/train/annotations.json \
        --results output/quickstart/inference/synthetic_people_val/coco_instances_results.json
"""

import argparse
import contextlib
import io
import json
import sys

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from multitask.evaluation.keypoint_diagnostics import keypoint_errors, mean_pose, mean_pose_results


def keypoint_ap(coco_gt: COCO, results) -> np.ndarray:
    """pycocotools keypoint stats (AP, AP50, AP75, APm, APl, ...) in percent; -1 when empty."""
    if not results:
        return np.full(10, -1.0)
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes writes area and id into each result dict: give it copies, keep ours as read
        ev = COCOeval(coco_gt, coco_gt.loadRes([dict(r) for r in results]), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats) * 100


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gt", required=True, help="COCO person_keypoints json")
    parser.add_argument("--results", required=True, help="coco_instances_results.json")
    parser.add_argument("--mean-pose-from", help="json to average the pose over (default --gt)")
    parser.add_argument("--score-thresh", type=float, default=0.5, help="for the error table")
    parser.add_argument("--iou", type=float, default=0.5, help="box IoU to match a person")
    args = parser.parse_args(argv)

    with open(args.gt) as f:
        gt = json.load(f)
    with open(args.results) as f:
        results = [r for r in json.load(f) if "keypoints" in r]
    if args.mean_pose_from:
        with open(args.mean_pose_from) as f:
            pose = mean_pose(json.load(f))
    else:
        pose = mean_pose(gt)
    baseline = mean_pose_results(results, pose)

    coco_gt = COCO()  # the json read above, indexed once for both evaluations
    coco_gt.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    ap_model, ap_base = keypoint_ap(coco_gt, results), keypoint_ap(coco_gt, baseline)
    print(f"{len(results)} detections with keypoints in {args.results}")
    print(
        tabulate(
            [
                ["model", *np.round(ap_model[[0, 1, 2, 3, 4]], 2)],
                ["mean pose in the same boxes", *np.round(ap_base[[0, 1, 2, 3, 4]], 2)],
            ],
            headers=["keypoints", "AP", "AP50", "AP75", "APm", "APl"],
            tablefmt="pipe",
        )
    )

    err_model = keypoint_errors(gt, results, args.score_thresh, args.iou)
    err_base = keypoint_errors(gt, baseline, args.score_thresh, args.iou)
    names = gt["categories"][0].get("keypoints") or [str(k) for k in range(len(pose))]
    rows = []
    with np.errstate(all="ignore"), _quiet_nan_warnings():
        med_m, med_b = np.nanmedian(err_model, axis=0), np.nanmedian(err_base, axis=0)
        for name, m, b in zip(names, med_m, med_b):
            rows.append([name, round(float(m), 3), round(float(b), 3)])
        rows.append(
            [
                "all",
                round(float(np.nanmedian(err_model)), 3),
                round(float(np.nanmedian(err_base)), 3),
            ]
        )
    print(
        f"\nmedian error / sqrt(box area), {len(err_model)} matched people "
        f"(score >= {args.score_thresh}, IoU >= {args.iou}):"
    )
    print(tabulate(rows, headers=["keypoint", "model", "mean pose"], tablefmt="pipe"))
    return {
        "model_ap": float(ap_model[0]),
        "mean_pose_ap": float(ap_base[0]),
        "model_median_error": float(rows[-1][1]),
        "mean_pose_median_error": float(rows[-1][2]),
    }


@contextlib.contextmanager
def _quiet_nan_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: unlabelled keypoints
        yield


if __name__ == "__main__":
    main(sys.argv[1:])

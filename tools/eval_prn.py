#!/usr/bin/env python
"""Evaluate the Pose Residual Network's keypoint-to-person assignment on ground truth.

Given the ground-truth boxes and the ground-truth keypoints of ALL people of each image (from
``--json``), every method assigns 17 keypoints to each person box (non-crowd persons with >= 1
labelled keypoint); the assignments are written as COCO keypoint results and scored with
pycocotools ``COCOeval(iouType="keypoints")`` (OKS AP), for all images and for the images with two
or more such persons. Methods:

* ``prn``: the PRN (``--weights``): encode all people's keypoints into the box, softmax peak per
  keypoint type, snapped to the nearest candidate keypoint of that type within ``--snap-radius``
  heatmap cells (else the peak cell's centre);
* ``baseline`` (no PRN): per keypoint type, of the candidates of that type inside the box enlarged
  by the PRN's margin, the one nearest the box centre (none: the box centre, v = 0);
* ``oracle``: the person's own keypoints (sanity check: AP 100).

All results get score 1. Also printed: the fraction of labelled keypoints assigned to their own
person (exact match). Example::

    python tools/eval_prn.py \
        --json ../shared/data/coco-mini/annotations/person_keypoints_val2017.json \
        --weights output/prn/prn.pth --output-dir output/prn/eval
"""

import argparse
import contextlib
import io
import json
import os
from collections import OrderedDict

import numpy as np
import torch

from multitask.engine.prn_training import people_from_coco_json, prn_assign_ground_truth
from multitask.modeling.postprocessing.prn import (
    PRN_INFERENCE_DTYPES,
    PoseResidualNetwork,
    load_prn_state,
    read_prn_weights,
)
from multitask.modeling.postprocessing.prn_codec import SNAP_RADIUS, enlarge_boxes


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", required=True, help="COCO-format person keypoint json (ground truth)")
    p.add_argument("--weights", required=True, help="PRN weights written by tools/train_prn.py")
    p.add_argument(
        "--snap-radius",
        type=float,
        default=SNAP_RADIUS,
        help="snap the PRN peak to a candidate within this many cells (0: off)",
    )
    p.add_argument("--dtype", choices=PRN_INFERENCE_DTYPES, default="float16",
                   help="storage of the fully connected layers, as MODEL.PRN.INFERENCE_DTYPE "
                   "(default float16, the model's default at inference)")
    p.add_argument("--output-dir", default="output/prn/eval")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    return p.parse_args(argv)


def build_prn(path, device, dtype: str = "float32"):
    """The PRN a weights file of ``tools/train_prn.py`` describes, with its weights, its fully
    connected layers stored in ``dtype`` (``MODEL.PRN.INFERENCE_DTYPE``)."""
    sd, meta = read_prn_weights(path, key="--weights")
    if "heatmap_size" not in meta or "hidden_dim" not in meta:
        raise SystemExit(
            f"--weights: '{path}' is not a PRN weights file of tools/train_prn.py "
            "(needs heatmap_size / hidden_dim next to the state_dict)"
        )
    # what the file does not record takes the default config's value
    recorded = ("heatmap_size", "hidden_dim", "margin", "sigma", "num_keypoints", "variant")
    net = PoseResidualNetwork(**{k: meta[k] for k in recorded if k in meta},
                              inference_dtype=dtype)
    load_prn_state(net, sd, meta, path, key="--weights")
    net.set_inference_precision(True)
    return net.to(device).eval()


def baseline_assign(boxes: torch.Tensor, kps_all: torch.Tensor, margin: float) -> torch.Tensor:
    """Per box and keypoint type: the candidate inside the enlarged box nearest the box centre."""
    ext = enlarge_boxes(boxes, margin)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    x, y, v = kps_all[None, ..., 0], kps_all[None, ..., 1], kps_all[None, ..., 2]  # (1, P, K)
    e = ext[:, :, None, None]
    inside = (x >= e[:, 0]) & (x <= e[:, 2]) & (y >= e[:, 1]) & (y <= e[:, 3]) & (v > 0)
    d = (x - cx[:, None, None]) ** 2 + (y - cy[:, None, None]) ** 2
    d = torch.where(inside, d, torch.full_like(d, float("inf")))
    best, arg = d.min(dim=1)  # (R, K)
    K = kps_all.shape[1]
    out = kps_all[arg, torch.arange(K)[None].expand_as(arg)].clone()  # (R, K, 3)
    none = ~torch.isfinite(best)
    out[..., 0] = torch.where(none, cx[:, None].expand_as(best), out[..., 0])
    out[..., 1] = torch.where(none, cy[:, None].expand_as(best), out[..., 1])
    out[..., 2] = (~none).float()
    return out


def coco_eval(coco_gt, results, img_ids):
    from pycocotools.cocoeval import COCOeval

    if not results:
        return [0.0] * 10
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, iouType="keypoints")
        ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(args.json)
    cat_id = coco_gt.getCatIds(catNms=["person"]) or coco_gt.getCatIds()
    cat_id = cat_id[0]
    net = build_prn(args.weights, torch.device(args.device), args.dtype)
    images = people_from_coco_json(args.json)
    methods = OrderedDict((m, []) for m in ("prn", "baseline", "oracle"))
    correct = {m: [0, 0] for m in methods}
    img_all, img_multi = set(), set()
    for im in images:
        t = np.flatnonzero(im["targets"])
        if len(t) == 0:
            continue
        img_all.add(im["image_id"])
        if len(t) >= 2:
            img_multi.add(im["image_id"])
        kps_all = torch.from_numpy(im["keypoints"])
        boxes = torch.from_numpy(im["boxes"][t])
        own = kps_all[t]
        outs = {
            "prn": prn_assign_ground_truth(net, boxes, kps_all, args.snap_radius),
            "baseline": baseline_assign(boxes, kps_all, net.margin),
            "oracle": own.clone(),
        }
        labelled = own[..., 2] > 0
        for m, out in outs.items():
            ok = (out[..., :2] - own[..., :2]).norm(dim=-1) < 1e-3
            correct[m][0] += int((ok & labelled).sum())
            correct[m][1] += int(labelled.sum())
            for r in range(len(t)):
                k = out[r].clone()
                k[:, 2] = 1.0
                methods[m].append(
                    {
                        "image_id": im["image_id"],
                        "category_id": cat_id,
                        "keypoints": [round(float(v), 2) for v in k.reshape(-1)],
                        "score": 1.0,
                    }
                )
    os.makedirs(args.output_dir, exist_ok=True)
    names = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
    table, metrics = [], OrderedDict()
    for m, res in methods.items():
        with open(os.path.join(args.output_dir, f"keypoints_{m}.json"), "w") as f:
            json.dump(res, f)
        s_all = coco_eval(coco_gt, res, img_all)
        s_multi = coco_eval(coco_gt, [r for r in res if r["image_id"] in img_multi], img_multi)
        frac = correct[m][0] / max(correct[m][1], 1)
        metrics[m] = {
            "all": dict(zip(names, s_all)),
            "multi_person": dict(zip(names, s_multi)),
            "keypoints_assigned_to_own_person": frac,
        }
        table.append([m] + [100 * s_all[i] for i in range(5)] + [100 * s_multi[0], 100 * frac])
    headers = ["method", "AP", "AP50", "AP75", "APm", "APl", "AP (2+ people)", "% kps own person"]
    print(
        f"{args.json}: {len(img_all)} images, {len(methods['oracle'])} "
        f"persons, {len(img_multi)} images with 2+ people; OKS AP x100, GT boxes"
    )
    try:
        from tabulate import tabulate

        print(tabulate(table, headers=headers, floatfmt=".1f"))
    except ImportError:
        print(headers)
        for row in table:
            print(row)
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(f"results and metrics in {os.path.abspath(args.output_dir)}")
    return metrics


if __name__ == "__main__":
    main()

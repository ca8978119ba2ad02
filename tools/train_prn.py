#!/usr/bin/env python
"""Train the Pose Residual Network from the ground truth of a COCO-format keypoint json.

For every non-crowd person with at least one labelled keypoint (the *target* person): the input is
the encoding of the keypoints of ALL non-crowd people of the image (v > 0) inside that person's
box enlarged by ``--margin``; the target is the encoding of the target person's own keypoints
only (Gaussian peaks, value 1 at the keypoint). Adam (``--lr``), binary cross-entropy between the
PRN's softmax output and the target (``multitask.modeling.postprocessing.prn.prn_loss``;
``--loss ce`` for the soft-target cross-entropy). Augmentation (on by default): random horizontal
flip of the whole image (left/right keypoints swapped), a random shift/scale of the target box
by up to ``--box-jitter`` of its size, so the PRN sees detector-like boxes, and synthetic
overlapping people (``--distractors``: poses of other persons of the json, rescaled to the target's
size and placed overlapping its box, added to the input only), so that the few crowded scenes of a
small json are not the only examples of people to tell apart.

Writes ``--output`` (``{"state_dict", "heatmap_size", "hidden_dim", "margin", "sigma", ...}``),
loadable as ``MODEL.PRN.WEIGHTS`` (set ``MODEL.PRN.HEATMAP_SIZE`` / ``HIDDEN_DIM`` to match).

Example::

    python tools/train_prn.py \
        --json ../shared/data/coco-mini/annotations/person_keypoints_train2017.json \
        --epochs 40 --output output/prn/prn.pth
"""

import argparse
import json
import os
import time
from typing import Dict, List

import numpy as np
import torch

from multitask.modeling.postprocessing.activity import COCO_FLIP_PERMUTATION
from multitask.modeling.postprocessing.prn import PoseResidualNetwork, prn_loss


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--json", help="COCO-format person keypoint json")
    src.add_argument("--dataset", help="a dataset name of multitask.data.DatasetCatalog")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=1024, help="hidden width (MODEL.PRN.HIDDEN_DIM)")
    p.add_argument("--heatmap-size", type=int, nargs=2, default=[56, 36], metavar=("H", "W"))
    p.add_argument(
        "--margin", type=float, default=0.1, help="box enlargement (MODEL.PRN.BOX_MARGIN)"
    )
    p.add_argument(
        "--sigma", type=float, default=1.0, help="Gaussian std in cells (MODEL.PRN.SIGMA)"
    )
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--loss", default="bce", choices=["bce", "ce"])
    p.add_argument("--box-jitter", type=float, default=0.1, help="0 disables box jitter")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flip augmentation")
    p.add_argument(
        "--distractors",
        type=float,
        default=0.5,
        help="probability that a training person gets 1..--max-distractors synthetic "
        "overlapping people (poses of the json's other persons) added to its input",
    )
    p.add_argument("--max-distractors", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--output", default="output/prn/prn.pth")
    return p.parse_args(argv)


def load_people_from_json(path: str) -> List[Dict]:
    """Per image: ``{"image_id", "width", "boxes" (N,4) XYXY, "keypoints" (N,17,3), "ann_ids",
    "targets" (N,) bool (non-crowd with >= 1 labelled keypoint)}``; crowd annotations dropped."""
    with open(path) as f:
        data = json.load(f)
    widths = {im["id"]: im.get("width", 0) for im in data["images"]}
    per_image: Dict[int, List] = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        if a.get("iscrowd", 0):
            continue
        per_image.setdefault(a["image_id"], []).append(a)
    out = []
    for image_id, anns in per_image.items():
        if not anns:
            continue
        boxes, kps, ids = [], [], []
        for a in anns:
            x, y, w, h = a["bbox"]
            boxes.append([x, y, x + w, y + h])
            k = a.get("keypoints") or [0] * 51
            kps.append(np.asarray(k, np.float32).reshape(17, 3))
            ids.append(a["id"])
        kps = np.stack(kps)
        out.append(
            {
                "image_id": image_id,
                "width": widths.get(image_id, 0),
                "boxes": np.asarray(boxes, np.float32),
                "keypoints": kps,
                "ann_ids": ids,
                "targets": (kps[..., 2] > 0).sum(1) > 0,
            }
        )
    return out


def load_people_from_dataset(name: str) -> List[Dict]:
    """Same as :func:`load_people_from_json` from ``DatasetCatalog.get(name)`` (XYXY boxes)."""
    from multitask.data import DatasetCatalog  # lazy: written by another part of the project

    out = []
    for d in DatasetCatalog.get(name):
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        kps = np.stack(
            [np.asarray(a.get("keypoints") or [0] * 51, np.float32).reshape(17, 3) for a in anns]
        )
        out.append(
            {
                "image_id": d["image_id"],
                "width": d.get("width", 0),
                "boxes": np.asarray([a["bbox"] for a in anns], np.float32),
                "keypoints": kps,
                "ann_ids": [a.get("id", i) for i, a in enumerate(anns)],
                "targets": (kps[..., 2] > 0).sum(1) > 0,
            }
        )
    return out


def load_people(args) -> List[Dict]:
    return load_people_from_json(args.json) if args.json else load_people_from_dataset(args.dataset)


def flip_image_people(boxes: np.ndarray, kps: np.ndarray, width: float):
    """Mirror an image's boxes and keypoints horizontally (left/right keypoints swapped)."""
    b = boxes.copy()
    b[:, 0], b[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    k = kps.copy()
    k[..., 0] = np.where(kps[..., 2] > 0, width - kps[..., 0], 0.0)
    return b, k[:, COCO_FLIP_PERMUTATION]


def jitter_boxes(boxes: np.ndarray, amount: float, rng: np.random.RandomState) -> np.ndarray:
    if amount <= 0:
        return boxes
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    d = rng.uniform(-amount, amount, size=(len(boxes), 4)).astype(np.float32)
    return boxes + d * np.stack([w, h, w, h], 1)


def distractor_pool(images: List[Dict], min_keypoints: int = 5):
    """(keypoints (M,17,3), boxes (M,4)) of all people with >= ``min_keypoints`` labelled."""
    kps = np.concatenate([im["keypoints"] for im in images])
    boxes = np.concatenate([im["boxes"] for im in images])
    keep = (kps[..., 2] > 0).sum(1) >= min_keypoints
    return kps[keep], boxes[keep]


def sample_distractors(box: np.ndarray, pool, n: int, rng: np.random.RandomState) -> np.ndarray:
    """``n`` poses from the pool, rescaled to ``box``'s height (x0.8-1.2) and placed overlapping
    it (centre shifted by 0.25-0.7 of its width sideways and up to 0.15 of its height)."""
    pk, pb = pool
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    out = []
    for i in rng.randint(0, len(pk), size=n):
        k, b = pk[i].copy(), pb[i]
        scale = h / max(b[3] - b[1], 1.0) * rng.uniform(0.8, 1.2)
        dx = rng.uniform(0.25, 0.7) * w * rng.choice([-1.0, 1.0])
        dy = rng.uniform(-0.15, 0.15) * h
        bcx, bcy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        vis = k[:, 2] > 0
        k[:, 0] = np.where(vis, (k[:, 0] - bcx) * scale + cx + dx, 0.0)
        k[:, 1] = np.where(vis, (k[:, 1] - bcy) * scale + cy + dy, 0.0)
        if rng.rand() < 0.5:  # mirror the distractor about its own centre
            k[:, 0] = np.where(vis, 2 * (cx + dx) - k[:, 0], 0.0)
            k = k[COCO_FLIP_PERMUTATION]
        out.append(k)
    return np.stack(out) if out else np.zeros((0, 17, 3), np.float32)


def make_samples(images: List[Dict], net: PoseResidualNetwork, args, rng=None, pool=None):
    """Inputs (N,17,H,W), targets (N,17,H,W) for every target person (augmented when rng)."""
    xs, ys = [], []
    for im in images:
        boxes, kps = im["boxes"], im["keypoints"]
        if rng is not None and not args.no_flip and rng.rand() < 0.5:
            width = im["width"] or float(max(boxes[:, 2].max(), kps[..., 0].max()) + 1)
            boxes, kps = flip_image_people(boxes, kps, width)
        t = np.flatnonzero(im["targets"])
        if len(t) == 0:
            continue
        tb = boxes[t] if rng is None else jitter_boxes(boxes[t], args.box_jitter, rng)
        tb, k_all = torch.from_numpy(np.ascontiguousarray(tb)), torch.from_numpy(kps)
        if rng is not None and pool is not None and args.distractors > 0:
            for i in range(len(t)):  # each target gets its own synthetic neighbours
                n = rng.randint(1, args.max_distractors + 1) if rng.rand() < args.distractors else 0
                extra = torch.from_numpy(sample_distractors(boxes[t[i]], pool, n, rng))
                xs.append(net.encode(tb[i : i + 1], torch.cat([k_all, extra])))
        else:
            xs.append(net.encode(tb, k_all))
        ys.append(net.encode(tb, k_all[:0], own_keypoints=k_all[t]))  # own keypoints only
    return torch.cat(xs), torch.cat(ys)


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.RandomState(args.seed)
    images = load_people(args)
    n_targets = int(sum(im["targets"].sum() for im in images))
    print(
        f"{len(images)} images, {n_targets} target persons, "
        f"{sum(int(im['targets'].sum()) > 1 for im in images)} images with 2+ people"
    )
    pool = distractor_pool(images) if args.distractors > 0 else None
    device = torch.device(args.device)
    net = PoseResidualNetwork(
        heatmap_size=args.heatmap_size,
        hidden_dim=args.hidden,
        dropout=args.dropout,
        margin=args.margin,
        sigma=args.sigma,
    ).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    t0 = time.time()
    for epoch in range(args.epochs):
        net.train()
        x, y = make_samples(images, net, args, rng, pool)
        perm = torch.randperm(x.shape[0])
        total = 0.0
        for s in range(0, x.shape[0], args.batch_size):
            idx = perm[s : s + args.batch_size]
            logits = net.forward_logits(x[idx].to(device))
            loss = prn_loss(logits, y[idx].to(device), kind=args.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
        print(
            f"epoch {epoch + 1}/{args.epochs}: loss {total / x.shape[0]:.4f} "
            f"({time.time() - t0:.0f}s)",
            flush=True,
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    net.cpu().save(
        args.output,
        loss=args.loss,
        epochs=args.epochs,
        source=args.json or f"dataset:{args.dataset}",
    )
    print(f"saved {os.path.abspath(args.output)}")


if __name__ == "__main__":
    main()

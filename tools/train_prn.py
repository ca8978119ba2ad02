#!/usr/bin/env python
"""Train the Pose Residual Network from the ground truth of COCO-format keypoint data.

For every non-crowd person with at least one labelled keypoint the input is the encoding of the
keypoints of ALL people of the image inside that person's enlarged box and the target the
encoding of the person's own keypoints (``multitask.engine.prn_training``, which also holds the
augmentation: flips, box jitter, synthetic overlapping people). ``--json`` and ``--dataset`` may
each be given several times; their people are pooled.

Writes ``--output`` (``{"state_dict", "variant", "heatmap_size", "hidden_dim", "margin", "sigma",
...}``), loadable as ``MODEL.PRN.WEIGHTS`` (with ``MODEL.PRN.VARIANT`` / ``HEATMAP_SIZE`` /
``HIDDEN_DIM`` / ``BOX_MARGIN`` / ``SIGMA`` set to match; a mismatch is refused by name).

Example (the synthetic people and the coco-mini train split)::

    python tools/train_prn.py --dataset synthetic_people_train \
        --json ../shared/data/coco-mini/annotations/person_keypoints_train2017.json \
        --epochs 40 --output output/prn/prn.pth
"""

import argparse
import os

import torch

from multitask.engine.prn_training import (
    PRNFitSettings,
    fit_prn,
    people_from_coco_json,
    people_from_dataset_dicts,
)
from multitask.modeling.postprocessing.prn import PRN_VARIANTS, PoseResidualNetwork


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--json", action="append", default=[], help="COCO-format person keypoint json")
    p.add_argument(
        "--dataset", action="append", default=[],
        help="a dataset name of multitask.data.DatasetCatalog",
    )
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--variant", default="residual_mlp", choices=PRN_VARIANTS,
                   help="layer stack (MODEL.PRN.VARIANT)")
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
        "overlapping people (poses of the data's other persons) added to its input",
    )
    p.add_argument("--max-distractors", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--output", default="output/prn/prn.pth")
    args = p.parse_args(argv)
    if not args.json and not args.dataset:
        p.error("give the training people with --json FILE and/or --dataset NAME")
    return args


def load_people(args):
    from multitask.data import DatasetCatalog

    images = []
    for path in args.json:
        if not os.path.isfile(path):
            raise SystemExit(f"--json: file not found: '{path}'")
        images += people_from_coco_json(path)
    for name in args.dataset:
        images += people_from_dataset_dicts(DatasetCatalog.get(name))
    return images


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images = load_people(args)
    n_targets = int(sum(im["targets"].sum() for im in images))
    print(
        f"{len(images)} images, {n_targets} target persons, "
        f"{sum(int(im['targets'].sum()) > 1 for im in images)} images with 2+ people"
    )
    net = PoseResidualNetwork(
        heatmap_size=args.heatmap_size,
        hidden_dim=args.hidden,
        dropout=args.dropout,
        margin=args.margin,
        sigma=args.sigma,
        variant=args.variant,
    ).to(torch.device(args.device))
    settings = PRNFitSettings(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        loss=args.loss,
        box_jitter=args.box_jitter,
        flip=not args.no_flip,
        distractors=args.distractors,
        max_distractors=args.max_distractors,
    )
    fit_prn(net, images, settings, seed=args.seed)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    sources = [*args.json, *(f"dataset:{d}" for d in args.dataset)]
    net.cpu().save(args.output, loss=args.loss, epochs=args.epochs, source=",".join(sources))
    print(f"saved {os.path.abspath(args.output)}")


if __name__ == "__main__":
    main()

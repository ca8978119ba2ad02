#!/usr/bin/env python
"""Mask and keypoint AP of a model on the ground-truth person boxes.

The detector is taken out of the measurement: for every image of each ``DATASETS.TEST`` dataset
the mask and keypoint heads (and the post-processors) run on the non-crowd ground-truth boxes,
each with score 1, and the results are scored like ``train_net.py --eval-only`` scores them
(segm and keypoint AP, activity accuracy). Against the ``--eval-only`` tables this says whether
the detector or the heads hold an AP back; top-down pose papers report the same "GT-box" AP.

Because every prediction has score 1, the AP does not reward ranking: it counts how many people
get a good mask or pose. Writes ``log.txt``, ``config.yaml`` and
``inference/<dataset>/coco_instances_results.json`` (which ``tools/keypoint_error.py --results``
reads) under ``--output-dir`` (default ``<OUTPUT_DIR>/gt_boxes``).

``--num-gpus N`` shards the images over N processes like ``train_net.py --eval-only --num-gpus
N`` (N CPU processes on a machine without GPUs); it also runs under ``torchrun``.

Example (after the quickstart)::

    python tools/eval_gt_boxes.py \\
        --config-file configs/quickstart/multitask_R_18_FPN_synthetic.yaml \\
        MODEL.WEIGHTS output/quickstart/model_final.pth
"""

import argparse
import os
from collections import OrderedDict

from multitask.data import DatasetCatalog, build_detection_test_loader
from multitask.engine import MultiTaskCheckpointer, Trainer, default_setup, launch, setup_cfg
from multitask.engine.launch import launched_by_torchrun
from multitask.engine.postprocessor_fit import check_postprocessor_weights
from multitask.engine.trainer import evaluation_tasks
from multitask.evaluation import GivenBoxes, inference_on_dataset, print_csv_format
from multitask.modeling import build_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--output-dir", help="default: <OUTPUT_DIR>/gt_boxes")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (default 1)")
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.WEIGHTS model.pth"
    )
    return parser.parse_args(argv)


def _cfg(args):
    cfg = setup_cfg(args, freeze=False)
    cfg.OUTPUT_DIR = args.output_dir or os.path.join(cfg.OUTPUT_DIR, "gt_boxes")
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("MODEL.WEIGHTS is empty: give the checkpoint to evaluate")
    if not cfg.DATASETS.TEST:
        raise SystemExit("DATASETS.TEST is empty: nothing to evaluate")
    return cfg


def evaluate(args, cfg=None) -> "OrderedDict[str, dict]":
    """The evaluation in one process of the (possibly distributed) run; the main process
    returns ``{dataset: {task: metrics}}``. Launched processes build ``cfg`` themselves (that
    also registers ``DATASETS.REGISTER`` in them)."""
    cfg = cfg if cfg is not None else _cfg(args)
    logger = default_setup(cfg, args)
    model = build_model(cfg)
    checkpointer = MultiTaskCheckpointer(model)
    checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
    check_postprocessor_weights(cfg, model, checkpointer.last_report)
    # boxes are given, so box AP would only score the ground truth against itself
    tasks = [t for t in evaluation_tasks(cfg) if t != "bbox"]
    results = OrderedDict()
    for name in cfg.DATASETS.TEST:
        out = os.path.join(cfg.OUTPUT_DIR, "inference", name)
        evaluator = Trainer.build_evaluator(cfg, name, out, tasks=tasks)
        loader = build_detection_test_loader(cfg, name)
        given = GivenBoxes(model, DatasetCatalog.get(name))
        results[name] = inference_on_dataset(given, loader, evaluator)
        logger.info("Evaluation on the ground-truth boxes of %s in csv format:", name)
        print_csv_format(results[name])
    return results


def main(argv=None) -> "OrderedDict[str, dict] | None":
    """Returns the results in a single process; with ``--num-gpus N > 1`` or under ``torchrun``
    they are logged (and written) by the main process, and None is returned."""
    args = parse_args(argv)
    if args.num_gpus < 1:
        raise SystemExit(f"--num-gpus must be >= 1, got {args.num_gpus}")
    cfg = _cfg(args)  # refuses a bad command before any process starts
    if args.num_gpus == 1 and not launched_by_torchrun():
        return evaluate(args, cfg)
    launch(evaluate, args.num_gpus, dist_url="auto", args=(args,))
    return None


if __name__ == "__main__":
    main()

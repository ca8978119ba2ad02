#!/usr/bin/env python
"""Export a trained model to ONNX or TorchScript, and check the export against PyTorch.

    python tools/export_model.py --config-file cfg.yaml --format onnx --output output/export \\
        --check ../shared/data/coco-mini/val2017 MODEL.WEIGHTS output/model_final.pth

writes into ``--output``:

* ``model.onnx`` (opset 19) or ``model.ts``: one image ``(3, H, W)`` float32, 0-255, in the
  model's colour order and already resized as at test time (any size) -> ``boxes (R, 4)``,
  ``scores``, ``labels``, ``masks (R, 1, M, M)`` probabilities and ``keypoints (R, K, 3)`` in that
  image's frame. Inside: normalisation and padding, the backbone with its deformable convs, the
  RPN, the box head with NMS, the mask head and the offset-refined keypoint head with its decoder
  (``DECODER subcell``). ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` and ``DETECTIONS_PER_IMAGE`` are
  baked in.
* ``config.yaml`` (``MODEL.WEIGHTS`` = the graph), ``export.json`` (outputs, colour order,
  versions) and ``postprocessors.pth`` (the PRN's and activity classifier's weights, when the
  model has them: they run in PyTorch after the graph, in :class:`multitask.export.ExportedModel`).

Run it with the predictor or the demo::

    python tools/demo.py --config-file output/export/config.yaml --backend onnxruntime \\
        --input image.jpg --output vis/

``--check PATH...`` (images, folders or globs) runs PyTorch and the export on each image after
the test-time resize and prints the largest difference of every output and the time per image
of both; the exit status is 1 when an output differs by more than ``--tolerance`` (1e-3) or the
number of people differs.
"""

import argparse
import logging
import os
import sys
import time
from typing import Dict, Sequence

import numpy as np
import torch
from tabulate import tabulate

from multitask.data import ImageReadError, read_image
from multitask.data.mapper import build_augmentation
from multitask.engine import MultiTaskCheckpointer, setup_cfg
from multitask.engine.defaults import parse_args_with_trailing_overrides
from multitask.engine.postprocessor_fit import check_postprocessor_weights
from multitask.export import EXPORT_FORMATS, ExportedModel, export_model
from multitask.modeling import build_model
from multitask.utils.file_io import expand_inputs
from multitask.utils.logger import setup_logger

logger = logging.getLogger("multitask.export")

_VALUE_OPTIONS = ("--config-file", "--format", "--output", "--max-check-images", "--tolerance")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    parser.add_argument("--output", default="output/export", metavar="DIR",
                        help="folder to write the export into (default output/export)")
    parser.add_argument("--check", nargs="+", default=[], metavar="PATH",
                        help="images, folders or globs to compare the export with PyTorch on")
    parser.add_argument("--max-check-images", type=int, default=8,
                        help="at most this many of the --check images (default 8)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="largest allowed difference of any output in --check")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="config overrides, e.g. MODEL.WEIGHTS model_final.pth (they may "
                        "also follow the --check list)")
    return parse_args_with_trailing_overrides(parser, argv, _VALUE_OPTIONS)


def build_trained_model(cfg):
    """The model of ``cfg`` in eval mode with ``MODEL.WEIGHTS`` loaded; refuses post-processors
    that have no weights (as ``--eval-only`` does)."""
    model = build_model(cfg).eval()
    report = []
    if cfg.MODEL.WEIGHTS:
        checkpointer = MultiTaskCheckpointer(model)
        checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
        report = checkpointer.last_report
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    check_postprocessor_weights(cfg, model, report)
    return model


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a.double() - b.double()).abs().max())


def check_export(cfg, model, exported: ExportedModel, images: Sequence[str],
                 tolerance: float) -> bool:
    """Compare ``exported`` with ``model`` on ``images``; log a table; True when they agree."""
    aug = build_augmentation(cfg, is_train=False)[0]
    rows, ok = [], True
    times = {"pytorch": [], exported.backend: []}
    for path in images:
        try:
            image = read_image(path, format=cfg.INPUT.FORMAT)
        except ImageReadError as e:
            logger.warning("skipped: %s", e)
            continue
        resized = aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))).float()
        with torch.no_grad():
            t0 = time.perf_counter()
            ref = model.inference([{"image": tensor}], do_postprocess=False)[0]
            t1 = time.perf_counter()
            out = exported.runner(tensor)
            t2 = time.perf_counter()
        times["pytorch"].append(t1 - t0)
        times[exported.backend].append(t2 - t1)
        diffs = {k: _max_diff(out[k], ref[k].cpu()) for k in exported.meta["outputs"]}
        same = len(out["boxes"]) == len(ref["boxes"]) and max(diffs.values()) <= tolerance
        ok &= same
        rows.append([os.path.basename(path), f"{len(ref['boxes'])}/{len(out['boxes'])}"]
                    + [f"{d:.2e}" for d in diffs.values()] + ["ok" if same else "DIFFERS"])
    if not rows:
        logger.error("--check: none of the images could be read")
        return False
    headers = ["image", "people torch/export"] + list(exported.meta["outputs"]) + [""]
    logger.info("Export check (largest absolute difference per output):\n%s",
                tabulate(rows, headers=headers, tablefmt="pipe"))
    logger.info("Time per image: pytorch %.0f ms, %s %.0f ms (first image included)",
                1000 * np.mean(times["pytorch"]), exported.backend,
                1000 * np.mean(times[exported.backend]))
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="multitask")
    cfg = setup_cfg(args)
    model = build_trained_model(cfg)
    t0 = time.perf_counter()
    paths: Dict[str, str] = export_model(cfg, model, args.output, args.format)
    logger.info("Exported in %.1f s: %s", time.perf_counter() - t0,
                ", ".join(f"{k} {v}" for k, v in paths.items()))
    if not args.check:
        return 0
    images, unmatched = expand_inputs(args.check)
    for pattern in unmatched:
        logger.warning("--check %s: no files", pattern)
    images = images[: args.max_check_images]
    if not images:
        logger.error("--check %s: no images found", " ".join(args.check))
        return 1
    exported_cfg = cfg.clone()
    exported_cfg.defrost()
    exported_cfg.merge_from_file(paths["config"])
    exported = ExportedModel(exported_cfg)
    return 0 if check_export(cfg, model, exported, images, args.tolerance) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Speed and memory benchmark of the multi-task R-CNN against torchvision's R-CNNs.

Sections (``--sections``, default all):

* ``inference``: one image through our full model (box + mask + offset keypoints, deformable
  res3-res5 and keypoint head, post-processors PRN + activity) vs torchvision's
  ``keypointrcnn_resnet50_fpn`` vs torchvision's ``maskrcnn_resnet50_fpn`` followed by
  ``keypointrcnn_resnet50_fpn``. Every model runs its whole pipeline (RPN, box head, NMS) with the
  box score threshold at 0, box NMS off (IoU threshold 1.0) and ``N`` detections per image, so
  exactly ``--num-people`` boxes go through the mask/keypoint heads; the tool checks the count.
* ``train``: one training iteration (forward + backward + SGD step) on the same batch of images
  with generated people (boxes, masks, keypoints): ours regular and full vs torchvision.
* ``postproc``: the post-processors' share of the full model's inference time.
* ``memory``: peak resident memory (CUDA: peak allocated memory) of one inference, one fresh
  process per model.
* ``ops``: deformable conv (ours, torchvision) vs dense conv2d, via
  ``tools/bench_deform_conv.py:measure_deform_conv``.
* ``amp``: our regular model's training iteration in float32 vs under the autocast that
  ``SOLVER.AMP.ENABLED`` uses on the device (float16 on CUDA, bfloat16 on CPUs with native
  bfloat16; skipped on other CPUs).

Weights are random (no downloads); speed does not depend on them once the number of people is
fixed. Candidates run interleaved (one run of each per repeat), so load changes on a shared
machine hit all of them. Tables go to stdout, progress to stderr, every raw number to
``--output`` (JSON).

Examples::

    python tools/benchmark.py                                   # everything, CPU, 2 threads
    python tools/benchmark.py --sections inference,memory --repeats 10
    python tools/benchmark.py --device cuda --amp --threads 8
    python tools/benchmark.py --tiny                            # seconds-long smoke test
"""

import argparse
import datetime
import importlib.util
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torchvision
from tabulate import tabulate
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs" / "COCO-MultiTask"
OUR_CONFIGS = {
    "full": "multitask_R_50_FPN_1x_dconv_c3-c5_dconv_head.yaml",
    "regular": "multitask_R_50_FPN_1x.yaml",
}
POSTPROCESSORS = ["PoseResidualNetwork", "ActivityClassifier"]
SECTIONS = ("inference", "train", "postproc", "memory", "ops", "amp")
NUM_KEYPOINTS = 17

# Tiny mode: ResNet-18, 32-channel FPN, 1-2 conv heads, 7x7 poolers, few proposals.
TINY_OVERRIDES = [
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_MASK_HEAD.NUM_CONV", 1,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16],
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_KEYPOINT_HEAD.HEATMAP_SIZE", 28,
    "MODEL.PRN.HIDDEN_DIM", 64,
    "MODEL.PRN.HEATMAP_SIZE", [28, 18],
    "MODEL.ACTIVITY.HIDDEN_DIMS", [64, 16],
]
TINY_SIZE = (128, 160)
TINY_OPS_SHAPES = ((32, 25, 34), (64, 13, 17))
FULL_OPS_SHAPES = ((128, 100, 136), (256, 50, 68), (512, 25, 34))
# ROIAlign cases: (name, feature map (N, C, H, W), image (H, W), ROIs, output size); boxes of
# 16-160 px. "quickstart": one level of the quickstart's batch (P2 of four 224x288 images,
# 64 channels) with the box head's 128 ROIs and the mask / keypoint heads' ~32; "COCO": P2 of
# two 800x1216 images, 256 channels, with the 512 box ROIs and ~64 mask / keypoint ROIs.
FULL_ROI_CASES = (
    ("quickstart box", (4, 64, 56, 72), (224, 288), 128, 7),
    ("quickstart mask/kp", (4, 64, 56, 72), (224, 288), 32, 14),
    ("COCO box", (2, 256, 200, 304), (800, 1216), 512, 7),
    ("COCO mask/kp", (2, 256, 200, 304), (800, 1216), 64, 14),
)
TINY_ROI_CASES = (("tiny", (2, 16, 32, 40), (128, 160), 24, 7),)

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress line on stderr (stdout is for the tables)."""
    print(f"[benchmark {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------------
# Settings
# -------------------------------------------------------------------------------------------
@dataclass
class Settings:
    """Everything a measurement needs; plain data so it pickles into memory workers."""

    device: str
    amp: bool
    threads: int
    repeats: int
    warmup: int
    size: Tuple[int, int]
    memory_size: Tuple[int, int]
    num_people: int
    train_images: int
    train_people: int
    tiny: bool
    tv_backbone: str
    boxes: str = "people"
    seed: int = 0


def parse_size(text: str) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 800x1216, got '{text}'") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size {text} is too small (>= 32x32)")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sections: " + ", ".join(SECTIONS),
    )
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--tiny", action="store_true",
                   help="seconds-long smoke test: 128x160 input, ResNet-18, small heads, "
                        "2 repeats, no warm-up (numbers are meaningless)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true",
                   help="run every model under SOLVER.AMP's autocast: float16 on CUDA, bfloat16 "
                        "on CPUs with native bfloat16")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default 2, for CPU comparability; --tiny: 1, "
                        "which is much faster than 2 on a busy 2-core machine)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per candidate (default 5; --tiny: 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs per candidate first (default 1; --tiny: 0). The ops "
                        "section always does measure_deform_conv's single warm-up run")
    p.add_argument("--size", type=parse_size, default=None,
                   help="HxW input of inference/train/postproc (default 800x1216; --tiny 128x160)")
    p.add_argument("--memory-size", type=parse_size, default=None,
                   help="HxW input of the memory section (default 800x1333; --tiny 128x160)")
    p.add_argument("--num-people", type=int, default=10,
                   help="detections forced through the mask/keypoint heads (default %(default)s)")
    p.add_argument("--train-images", type=int, default=2, help="images per training batch")
    p.add_argument("--train-people", type=int, default=3,
                   help="ground-truth people per training image")
    p.add_argument("--tv-backbone", default="frozen", choices=["frozen", "builder"],
                   help="torchvision backbone: 'frozen' (default) = what keypointrcnn_resnet50_fpn "
                        "builds when given ImageNet backbone weights (FrozenBN, stem+layer1 "
                        "frozen, as our FREEZE_AT=2), without the weights; 'builder' = the public "
                        "builder with weights_backbone=None (BatchNorm2d, all layers trainable)")
    p.add_argument("--boxes", default="people", choices=["people", "model"],
                   help="'people' (default): after each model's own RPN + box head + NMS have "
                        "picked the N detections, their coordinates are replaced by the same N "
                        "person-shaped boxes for every model, so mask pasting and keypoint "
                        "decoding (whose cost grows with the box size in torchvision) see "
                        "realistic, identical boxes; 'model': keep the random model's boxes "
                        "(degenerate: 0-px-wide or image-tall)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="./output/benchmark.json", help="JSON with all raw numbers")
    return p


def settings_from_args(args) -> Settings:
    return Settings(
        device=args.device,
        amp=args.amp,
        threads=args.threads if args.threads is not None else (1 if args.tiny else 2),
        repeats=args.repeats if args.repeats is not None else (2 if args.tiny else 5),
        warmup=args.warmup if args.warmup is not None else (0 if args.tiny else 1),
        size=args.size or (TINY_SIZE if args.tiny else (800, 1216)),
        memory_size=args.memory_size or (TINY_SIZE if args.tiny else (800, 1333)),
        num_people=args.num_people,
        train_images=args.train_images,
        train_people=args.train_people,
        tiny=args.tiny,
        tv_backbone=args.tv_backbone,
        boxes=args.boxes,
        seed=args.seed,
    )


# -------------------------------------------------------------------------------------------
# Environment
# -------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def environment(s: Settings) -> Dict[str, object]:
    env = {
        "device": s.device,
        "amp": s.amp,
        "threads": s.threads,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name() if s.device == "cuda" else None,
    }
    return env


def header(section: str, env: Dict[str, object], extra: str = "") -> str:
    dev = env["device"] + (f" ({env['gpu']}{', AMP fp16' if env['amp'] else ''})"
                           if env["device"] == "cuda" else "")
    line = (f"== {section} == device {dev} | threads {env['threads']} | torch {env['torch']} | "
            f"torchvision {env['torchvision']} | CPU {env['cpu_model']} "
            f"({env['cpu_count']} logical cores) | load avg {load_average()}")
    return line + (f"\n   {extra}" if extra else "")


# -------------------------------------------------------------------------------------------
# Timing helpers
# -------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of SOLVER.AMP.ENABLED on ``device`` (None: float32)."""
    from multitask.engine.trainer import amp_dtype as trainer_amp_dtype

    return trainer_amp_dtype(device)


def amp_context(s: Settings):
    if s.amp:
        return torch.autocast(device_type=s.device, dtype=amp_dtype(torch.device(s.device)))
    return nullcontext()


def summarize(times_ms: Sequence[float]) -> Dict[str, object]:
    a = np.asarray(times_ms, dtype=np.float64)
    p25, p50, p75 = np.percentile(a, [25, 50, 75])
    return {
        "times_ms": [float(t) for t in a],
        "median_ms": float(p50),
        "p25_ms": float(p25),
        "p75_ms": float(p75),
        "iqr_ms": float(p75 - p25),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
    }


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def run_interleaved(
    fns: Dict[str, Callable[[], object]],
    s: Settings,
    label: str,
    device: torch.device,
) -> Tuple[Dict[str, List[float]], Dict[str, List[object]], Dict[str, str]]:
    """Warm up, then time ``repeats`` rounds of one call of each fn. Returns times (ms), the
    values the fns returned during the timed rounds, and ``{name: error}`` for the fns that
    raised (they are dropped from the later rounds; the others go on)."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    values: Dict[str, List[object]] = {k: [] for k in fns}
    errors: Dict[str, str] = {}

    def call(name, fn, what):
        if name in errors:
            return None
        synchronize(device)
        t0 = time.perf_counter()
        try:
            value = fn()
            synchronize(device)
        except Exception as exc:  # noqa: BLE001  (recorded, reported, and the exit code is 1)
            errors[name] = short_error(exc)
            log(f"{label}: {name} FAILED during {what}:\n{traceback.format_exc()}")
            return None
        ms = (time.perf_counter() - t0) * 1e3
        log(f"{label}: {what} {name} {ms:.0f} ms")
        return ms, value

    for i in range(s.warmup):
        for name, fn in fns.items():
            call(name, fn, f"warm-up {i + 1}/{s.warmup}")
    for i in range(s.repeats):
        for name, fn in fns.items():
            got = call(name, fn, f"run {i + 1}/{s.repeats}")
            if got is not None:
                times[name].append(got[0])
                values[name].append(got[1])
    return times, values, errors


def fmt_ms(st: Dict[str, object]) -> Tuple[str, str, str]:
    if "error" in st:
        return "FAILED", "", ""
    return (f"{st['median_ms']:.1f}", f"{st['p25_ms']:.1f}-{st['p75_ms']:.1f}",
            f"{st['min_ms']:.1f}-{st['max_ms']:.1f}")


def ratio(a: Dict[str, object], b: Dict[str, object], key: str = "median_ms") -> Optional[float]:
    """``a[key] / b[key]``; None when either side failed."""
    if key not in a or key not in b:
        return None
    return float(a[key]) / float(b[key])


def fmt_ratio(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


fmt_num = fmt_ratio


def sum_stats(parts: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """Stats of per-round sums (the models of a pair run one after the other each round)."""
    failed = [p["error"] for p in parts if "error" in p]
    if failed:
        return {"error": "a component failed: " + "; ".join(failed)}
    return summarize([sum(ts) for ts in zip(*(p["times_ms"] for p in parts))])


def stats_or_error(times: Dict[str, List[float]], errors: Dict[str, str], name: str):
    return {"error": errors[name]} if name in errors else summarize(times[name])


# -------------------------------------------------------------------------------------------
# Models
# -------------------------------------------------------------------------------------------
def our_cfg(s: Settings, variant: str, size: Tuple[int, int], postprocessors: bool = True):
    from multitask import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / OUR_CONFIGS[variant]))
    h, w = size
    overrides = [
        "MODEL.DEVICE", s.device,
        "MODEL.WEIGHTS", "",
        "INPUT.MIN_SIZE_TEST", min(h, w),
        "INPUT.MAX_SIZE_TEST", max(h, w),
        # force exactly N detections: no score threshold, no box NMS, N per image
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "MODEL.ROI_HEADS.NMS_THRESH_TEST", 1.0,
        "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", s.num_people,
        "TEST.DETECTIONS_PER_IMAGE", s.num_people,
        "MODEL.POSTPROCESSORS", list(POSTPROCESSORS) if postprocessors else [],
    ]
    if s.tiny:
        overrides += TINY_OVERRIDES
    cfg.merge_from_list(overrides)
    cfg.freeze()
    return cfg


def person_boxes(n: int, size: Tuple[int, int], seed: int) -> torch.Tensor:
    """``n`` upright person-shaped XYXY boxes inside an image of ``size`` (H, W): heights 15-60%
    of the image height, width/height 0.35-0.6. Deterministic in ``seed``."""
    h, w = float(size[0]), float(size[1])
    gen = torch.Generator().manual_seed(seed + 7919)
    bh = h * (0.15 + 0.45 * torch.rand(n, generator=gen))
    bw = torch.clamp(bh * (0.35 + 0.25 * torch.rand(n, generator=gen)), max=0.95 * w)
    x0 = torch.rand(n, generator=gen) * (w - bw)
    y0 = torch.rand(n, generator=gen) * (h - bh)
    return torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)


def force_person_boxes(roi_heads: nn.Module, s: Settings) -> None:
    """Replace the coordinates of the detections that ``roi_heads.postprocess_detections``
    (torchvision's ``RoIHeads`` method, which ours inherits) returns by :func:`person_boxes`.

    The RPN, box head, score threshold, NMS and top-N selection all still run; only the boxes
    handed to the mask/keypoint heads and the output rescaling change, identically for every
    model. Training does not call ``postprocess_detections``."""
    original = roi_heads.postprocess_detections

    def postprocess_detections(class_logits, box_regression, proposals, image_shapes):
        boxes, scores, labels = original(class_logits, box_regression, proposals, image_shapes)
        fixed = [person_boxes(s.num_people, shape, s.seed).to(b)[: len(b)]
                 for b, shape in zip(boxes, image_shapes)]
        return fixed, scores, labels

    roi_heads.postprocess_detections = postprocess_detections


def build_ours(s: Settings, variant: str, size: Tuple[int, int], postprocessors: bool = True):
    from multitask import build_model

    torch.manual_seed(s.seed)
    model = build_model(our_cfg(s, variant, size, postprocessors))
    if s.boxes == "people":
        force_person_boxes(model.roi_heads, s)
    return model.to(s.device).eval()


def _tv_backbone(depth: int, out_channels: int, frozen: bool) -> nn.Module:
    """torchvision's ``_resnet_fpn_extractor`` with a configurable FPN width: FrozenBN and 3
    trainable stages (``frozen``) or BatchNorm2d and all 5 trainable."""
    from torchvision.models import resnet
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    norm = misc_nn_ops.FrozenBatchNorm2d if frozen else nn.BatchNorm2d
    body = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=norm)
    trainable = 3 if frozen else 5
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable]
    if trainable == 5:
        layers_to_train.append("bn1")
    for name, p in body.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            p.requires_grad_(False)
    c2 = body.inplanes // 8
    return BackboneWithFPN(
        body, {f"layer{k}": str(k - 1) for k in range(1, 5)}, [c2 * 2**i for i in range(4)],
        out_channels, extra_blocks=LastLevelMaxPool(),
    )


def tv_kwargs(cfg, s: Settings, size: Tuple[int, int]) -> Dict[str, object]:
    """torchvision R-CNN kwargs matching our config: same input size (no resize), same RPN and
    ROI sampling, and the same N-detection forcing."""
    h, w = size
    r, rh = cfg.MODEL.RPN, cfg.MODEL.ROI_HEADS
    return dict(
        min_size=min(h, w), max_size=max(h, w),
        rpn_pre_nms_top_n_train=r.PRE_NMS_TOPK_TRAIN, rpn_pre_nms_top_n_test=r.PRE_NMS_TOPK_TEST,
        rpn_post_nms_top_n_train=r.POST_NMS_TOPK_TRAIN,
        rpn_post_nms_top_n_test=r.POST_NMS_TOPK_TEST,
        rpn_nms_thresh=r.NMS_THRESH, rpn_fg_iou_thresh=r.IOU_THRESHOLDS[1],
        rpn_bg_iou_thresh=r.IOU_THRESHOLDS[0], rpn_batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        rpn_positive_fraction=r.POSITIVE_FRACTION,
        box_score_thresh=0.0, box_nms_thresh=1.0, box_detections_per_img=s.num_people,
        box_fg_iou_thresh=rh.IOU_THRESHOLDS[-1], box_bg_iou_thresh=rh.IOU_THRESHOLDS[0],
        box_batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE,
        box_positive_fraction=rh.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(cfg.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS),
    )


def _tiny_tv_heads(cfg, kind: str) -> Dict[str, object]:
    """Our tiny heads' sizes, in torchvision's head classes."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    c = cfg.MODEL.FPN.OUT_CHANNELS
    names = ["0", "1", "2", "3"]
    bh, mh, kh = cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD, cfg.MODEL.ROI_KEYPOINT_HEAD
    heads = dict(
        box_roi_pool=MultiScaleRoIAlign(names, bh.POOLER_RESOLUTION, bh.POOLER_SAMPLING_RATIO),
        box_head=TwoMLPHead(c * bh.POOLER_RESOLUTION**2, bh.FC_DIM),
        box_predictor=FastRCNNPredictor(bh.FC_DIM, 2),
    )
    if kind == "maskrcnn":
        heads.update(
            mask_roi_pool=MultiScaleRoIAlign(names, mh.POOLER_RESOLUTION, 2),
            mask_head=MaskRCNNHeads(c, [mh.CONV_DIM] * mh.NUM_CONV, 1),
            mask_predictor=MaskRCNNPredictor(mh.CONV_DIM, mh.CONV_DIM, 2),
        )
    else:
        dims = list(kh.CONV_DIMS)
        heads.update(
            keypoint_roi_pool=MultiScaleRoIAlign(names, kh.POOLER_RESOLUTION, 2),
            keypoint_head=KeypointRCNNHeads(c, dims),
            keypoint_predictor=KeypointRCNNPredictor(dims[-1], NUM_KEYPOINTS),
        )
    return heads


def build_tv(s: Settings, kind: str, size: Tuple[int, int]) -> nn.Module:
    """torchvision ``keypointrcnn`` or ``maskrcnn`` (person + background), random weights."""
    from torchvision.models.detection import (
        KeypointRCNN,
        MaskRCNN,
        keypointrcnn_resnet50_fpn,
        maskrcnn_resnet50_fpn,
    )

    cfg = our_cfg(s, "full", size)
    kw = tv_kwargs(cfg, s, size)
    torch.manual_seed(s.seed)
    if s.tiny:
        backbone = _tv_backbone(cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.FPN.OUT_CHANNELS, frozen=True)
        kw.update(_tiny_tv_heads(cfg, kind))  # the predictors fix classes and keypoints
        if kind == "maskrcnn":
            model = MaskRCNN(backbone, num_classes=None, **kw)
        else:
            model = KeypointRCNN(backbone, num_classes=None, **kw)
    elif s.tv_backbone == "builder":
        builder = maskrcnn_resnet50_fpn if kind == "maskrcnn" else keypointrcnn_resnet50_fpn
        model = builder(weights=None, weights_backbone=None, num_classes=2, **kw)
    else:
        backbone = _tv_backbone(50, 256, frozen=True)
        if kind == "maskrcnn":
            model = MaskRCNN(backbone, num_classes=2, **kw)
        else:
            model = KeypointRCNN(backbone, num_classes=2, num_keypoints=NUM_KEYPOINTS, **kw)
    if s.boxes == "people":
        force_person_boxes(model.roi_heads, s)
    return model.to(s.device).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


MODEL_LABELS = {
    "ours_full": "ours full (dconv c3-c5 + dconv kp head + PRN + activity)",
    "ours_regular": "ours regular (no dconv, no post-processors)",
    "ours_full_train": "ours full (dconv c3-c5 + dconv kp head)",
    "tv_keypointrcnn": "torchvision keypointrcnn_resnet50_fpn",
    "tv_maskrcnn": "torchvision maskrcnn_resnet50_fpn",
    "tv_maskrcnn+keypointrcnn": "torchvision maskrcnn + keypointrcnn (one after the other)",
}


def label(name: str, s: Settings) -> str:
    text = MODEL_LABELS.get(name, name)
    return text.replace("resnet50", "resnet18") if s.tiny else text


# -------------------------------------------------------------------------------------------
# Inputs
# -------------------------------------------------------------------------------------------
def random_image(size: Tuple[int, int], seed: int) -> torch.Tensor:
    """uint8 (3, H, W), taken as BGR by our model; torchvision gets the RGB float copy."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, *size), generator=gen, dtype=torch.uint8)


def to_tv_image(img_bgr: torch.Tensor, device: str) -> torch.Tensor:
    return img_bgr.flip(0).to(device).float().div_(255.0)


def make_people(size: Tuple[int, int], n: int, seed: int) -> Dict[str, torch.Tensor]:
    """``n`` upright people: boxes (n, 4) XYXY, elliptic masks (n, H, W) uint8 and keypoints
    (n, 17, 3) inside the boxes, all visible."""
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    bh = h * (0.3 + 0.5 * rand(n))
    bw = torch.minimum(bh * (0.35 + 0.25 * rand(n)), torch.tensor(0.9 * w))
    x0 = rand(n) * (w - bw)
    y0 = rand(n) * (h - bh)
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    cx, cy = ((x0 + bw / 2).view(n, 1, 1), (y0 + bh / 2).view(n, 1, 1))
    masks = (((xx - cx) / (bw.view(n, 1, 1) / 2)) ** 2
             + ((yy - cy) / (bh.view(n, 1, 1) / 2)) ** 2 <= 1.0).to(torch.uint8)
    kx = x0.view(n, 1) + bw.view(n, 1) * (0.1 + 0.8 * rand(n, NUM_KEYPOINTS))
    ky = y0.view(n, 1) + bh.view(n, 1) * (0.1 + 0.8 * rand(n, NUM_KEYPOINTS))
    keypoints = torch.stack([kx, ky, torch.full_like(kx, 2.0)], dim=2)
    return {"boxes": boxes, "masks": masks, "keypoints": keypoints}


def make_train_batch(s: Settings):
    """Same images and people for every model: (our batched_inputs, tv images, tv targets)."""
    from multitask import Instances

    h, w = s.size
    ours, tv_images, tv_targets = [], [], []
    for i in range(s.train_images):
        img = random_image(s.size, s.seed + 100 + i)
        people = make_people(s.size, s.train_people, s.seed + 200 + i)
        n = len(people["boxes"])
        inst = Instances(
            (h, w),
            gt_boxes=people["boxes"].to(s.device),
            gt_classes=torch.zeros(n, dtype=torch.int64, device=s.device),
            gt_masks=people["masks"].to(s.device),
            gt_keypoints=people["keypoints"].to(s.device),
        )
        ours.append({"image": img.to(s.device), "height": h, "width": w, "instances": inst})
        tv_images.append(to_tv_image(img, s.device))
        tv_targets.append({
            "boxes": people["boxes"].to(s.device),
            "labels": torch.ones(n, dtype=torch.int64, device=s.device),
            "masks": people["masks"].to(s.device),
            "keypoints": people["keypoints"].to(s.device),
        })
    return ours, tv_images, tv_targets


# -------------------------------------------------------------------------------------------
# Inference callables (return the number of detections)
# -------------------------------------------------------------------------------------------
def _box_summary(boxes: torch.Tensor) -> Tuple[int, float, float]:
    """(count, mean width, mean height) of (R, 4) XYXY boxes."""
    if len(boxes) == 0:
        return 0, 0.0, 0.0
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).float().mean(dim=0).tolist()
    return len(boxes), float(wh[0]), float(wh[1])


def ours_infer_fn(model, img_bgr: torch.Tensor, s: Settings) -> Callable[[], Tuple]:
    h, w = img_bgr.shape[-2:]
    inputs = [{"image": img_bgr.to(s.device), "height": int(h), "width": int(w)}]

    def fn() -> Tuple[int, float, float]:
        with torch.no_grad(), amp_context(s):
            out = model(inputs)
        boxes = out[0]["instances"].pred_boxes
        return _box_summary(getattr(boxes, "tensor", boxes))

    return fn


def tv_infer_fn(model, img_bgr: torch.Tensor, s: Settings) -> Callable[[], Tuple]:
    image = [to_tv_image(img_bgr, s.device)]

    def fn() -> Tuple[int, float, float]:
        with torch.no_grad(), amp_context(s):
            out = model(image)
        return _box_summary(out[0]["boxes"])

    return fn


class ModelCache:
    """Inference models built once and shared by the sections of one run."""

    def __init__(self, s: Settings):
        self.s = s
        self._models: Dict[str, nn.Module] = {}

    def get(self, name: str) -> nn.Module:
        if name not in self._models:
            log(f"building {name}")
            t0 = time.perf_counter()
            if name == "ours_full":
                self._models[name] = build_ours(self.s, "full", self.s.size)
            elif name == "tv_keypointrcnn":
                self._models[name] = build_tv(self.s, "keypointrcnn", self.s.size)
            elif name == "tv_maskrcnn":
                self._models[name] = build_tv(self.s, "maskrcnn", self.s.size)
            else:
                raise KeyError(name)
            log(f"built {name} ({n_params(self._models[name]) / 1e6:.1f}M parameters) in "
                f"{time.perf_counter() - t0:.1f} s")
        return self._models[name]


# -------------------------------------------------------------------------------------------
# Sections
# -------------------------------------------------------------------------------------------
def section_inference(s: Settings, env, cache: ModelCache) -> Dict[str, object]:
    device = torch.device(s.device)
    img = random_image(s.size, s.seed)
    names = ["ours_full", "tv_keypointrcnn", "tv_maskrcnn"]
    models = {k: cache.get(k) for k in names}
    fns = {
        "ours_full": ours_infer_fn(models["ours_full"], img, s),
        "tv_keypointrcnn": tv_infer_fn(models["tv_keypointrcnn"], img, s),
        "tv_maskrcnn": tv_infer_fn(models["tv_maskrcnn"], img, s),
    }
    times, counts, errors = run_interleaved(fns, s, "inference", device)
    res: Dict[str, Dict[str, object]] = {}
    for k in names:
        res[k] = stats_or_error(times, errors, k)
        res[k]["num_detections"] = [int(c[0]) for c in counts[k]]
        res[k]["mean_box_wh"] = list(counts[k][-1][1:]) if counts[k] else None
        res[k]["params_m"] = n_params(models[k]) / 1e6
    pair = "tv_maskrcnn+keypointrcnn"
    res[pair] = sum_stats([res["tv_maskrcnn"], res["tv_keypointrcnn"]])
    res[pair]["num_detections"] = [
        min(a, b) for a, b in zip(res["tv_maskrcnn"]["num_detections"],
                                  res["tv_keypointrcnn"]["num_detections"])
    ]
    res[pair]["mean_box_wh"] = None
    res[pair]["params_m"] = res["tv_maskrcnn"]["params_m"] + res["tv_keypointrcnn"]["params_m"]
    ok = {k: "error" not in v and all(c == s.num_people for c in v["num_detections"])
          for k, v in res.items()}
    for k, good in ok.items():
        if not good and "error" not in res[k]:
            log(f"WARNING: {k} returned {res[k]['num_detections']} detections, "
                f"not {s.num_people} every run")
    ours = res["ours_full"]
    ratios = {
        "ours_over_keypointrcnn": ratio(ours, res["tv_keypointrcnn"]),
        "ours_over_keypointrcnn_min": ratio(ours, res["tv_keypointrcnn"], "min_ms"),
        "ours_over_maskrcnn_plus_keypointrcnn": ratio(ours, res[pair]),
        "ours_over_maskrcnn_plus_keypointrcnn_min": ratio(ours, res[pair], "min_ms"),
    }
    rows = []
    for k in names + [pair]:
        st = res[k]
        counts_txt = ",".join(str(c) for c in sorted(set(st["num_detections"]))) or "-"
        wh = st["mean_box_wh"]
        rows.append([label(k, s), counts_txt + ("" if ok[k] or "error" in st else " (!)"),
                     f"{wh[0]:.0f} x {wh[1]:.0f}" if wh else "", f"{st['params_m']:.1f}",
                     *fmt_ms(st), fmt_ratio(ratio(ours, st))])
    h, w = s.size
    print(header("inference", env, f"one {h}x{w} image, {s.num_people} people forced through "
                                   f"the heads (boxes: {s.boxes}), median of {s.repeats} runs "
                                   f"after {s.warmup} warm-up, random weights"))
    print(tabulate(rows, headers=["model", "boxes returned", "mean box w x h", "params (M)",
                                  "median ms", "IQR ms", "min-max ms", "ours / model"],
                   tablefmt="github", disable_numparse=True))
    print(f"ours / keypointrcnn = {fmt_ratio(ratios['ours_over_keypointrcnn'])} (median), "
          f"{fmt_ratio(ratios['ours_over_keypointrcnn_min'])} (min);  ours / (maskrcnn + "
          f"keypointrcnn) = {fmt_ratio(ratios['ours_over_maskrcnn_plus_keypointrcnn'])} "
          f"(median), {fmt_ratio(ratios['ours_over_maskrcnn_plus_keypointrcnn_min'])} (min)")
    for k, v in res.items():
        if "error" in v:
            print(f"FAILED {k}: {v['error']}")
    print(flush=True)
    return {"size": list(s.size), "num_people": s.num_people, "boxes": s.boxes, "models": res,
            "detections_ok": ok, "ratios": ratios, "errors": errors}


def _train_step_fn(model: nn.Module, loss_fn: Callable[[], Dict[str, torch.Tensor]],
                   s: Settings) -> Callable[[], float]:
    params = [p for p in model.parameters() if p.requires_grad]
    # a tiny lr: random weights must not diverge over the repeats (the step costs the same)
    opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=1e-4)
    use_scaler = s.amp and amp_dtype(torch.device(s.device)) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with amp_context(s):
            losses = loss_fn()
        loss = sum(losses.values())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return float(loss.detach())

    return step


def section_train(s: Settings, env) -> Dict[str, object]:
    device = torch.device(s.device)
    ours_inputs, tv_images, tv_targets = make_train_batch(s)
    log("train: building ours_regular, ours_full_train, tv_keypointrcnn, tv_maskrcnn")
    models = {
        "ours_regular": build_ours(s, "regular", s.size, postprocessors=False),
        "ours_full_train": build_ours(s, "full", s.size, postprocessors=False),
        "tv_keypointrcnn": build_tv(s, "keypointrcnn", s.size),
        "tv_maskrcnn": build_tv(s, "maskrcnn", s.size),
    }
    fns = {}
    for name, model in models.items():
        model.train()
        if name.startswith("ours"):
            fns[name] = _train_step_fn(model, lambda m=model: m(ours_inputs), s)
        else:
            fns[name] = _train_step_fn(model, lambda m=model: m(tv_images, tv_targets), s)
    times, losses, errors = run_interleaved(fns, s, "train", device)
    res: Dict[str, Dict[str, object]] = {}
    for k, model in models.items():
        res[k] = stats_or_error(times, errors, k)
        res[k]["losses"] = [float(v) for v in losses[k]]
        res[k]["finite"] = bool(np.all(np.isfinite(res[k]["losses"])))
        res[k]["trainable_params_m"] = sum(
            p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    pair = "tv_maskrcnn+keypointrcnn"
    res[pair] = sum_stats([res["tv_maskrcnn"], res["tv_keypointrcnn"]])
    res[pair]["trainable_params_m"] = (res["tv_maskrcnn"]["trainable_params_m"]
                                       + res["tv_keypointrcnn"]["trainable_params_m"])
    ratios = {}
    for ours in ("ours_regular", "ours_full_train"):
        for ref, ref_name in (("tv_keypointrcnn", "keypointrcnn"),
                              (pair, "maskrcnn_plus_keypointrcnn")):
            ratios[f"{ours}_over_{ref_name}"] = ratio(res[ours], res[ref])
            ratios[f"{ours}_over_{ref_name}_min"] = ratio(res[ours], res[ref], "min_ms")
    rows = []
    for k in ["ours_regular", "ours_full_train", "tv_keypointrcnn", "tv_maskrcnn", pair]:
        st = res[k]
        rows.append([label(k, s), f"{st['trainable_params_m']:.1f}", *fmt_ms(st),
                     fmt_ratio(ratio(res["ours_regular"], st)),
                     fmt_ratio(ratio(res["ours_full_train"], st))])
    h, w = s.size
    print(header("train", env, f"one iteration (forward + backward + SGD step), batch of "
                               f"{s.train_images} {h}x{w} images with {s.train_people} people "
                               f"each, median of {s.repeats} runs after {s.warmup} warm-up"))
    print(tabulate(rows, headers=["model", "trainable params (M)", "median ms", "IQR ms",
                                  "min-max ms", "ours regular / model", "ours full / model"],
                   tablefmt="github", disable_numparse=True))
    print("ours / keypointrcnn = {} (regular), {} (full);  ours / (maskrcnn + keypointrcnn) = "
          "{} (regular), {} (full)  [medians]".format(
              *(fmt_ratio(ratios[k]) for k in (
                  "ours_regular_over_keypointrcnn", "ours_full_train_over_keypointrcnn",
                  "ours_regular_over_maskrcnn_plus_keypointrcnn",
                  "ours_full_train_over_maskrcnn_plus_keypointrcnn"))))
    for k, v in res.items():
        if "error" in v:
            print(f"FAILED {k}: {v['error']}")
        elif "finite" in v and not v["finite"]:
            log(f"WARNING: {k} had a non-finite loss: {v['losses']}")
    print(flush=True)
    del models
    return {"size": list(s.size), "images": s.train_images, "people_per_image": s.train_people,
            "models": res, "ratios": ratios, "errors": errors}


def section_amp(s: Settings, env) -> Dict[str, object]:
    """Our regular model's training iteration in float32 vs under SOLVER.AMP's autocast."""
    dtype = amp_dtype(torch.device(s.device))
    if dtype is None:
        reason = "this CPU has no native bfloat16 (AVX512-BF16 / AMX); SOLVER.AMP is ignored here"
        print(header("amp", env, f"skipped: {reason}") + "\n", flush=True)
        return {"skipped": reason}
    name = str(dtype).replace("torch.", "")
    ours_inputs, _, _ = make_train_batch(s)
    log("amp: building ours_regular")
    model = build_ours(s, "regular", s.size, postprocessors=False)
    model.train()
    fns = {
        "float32": _train_step_fn(model, lambda: model(ours_inputs), replace(s, amp=False)),
        name: _train_step_fn(model, lambda: model(ours_inputs), replace(s, amp=True)),
    }
    times, losses, errors = run_interleaved(fns, s, "amp", torch.device(s.device))
    res = {}
    for k in fns:
        res[k] = stats_or_error(times, errors, k)
        res[k]["losses"] = [float(v) for v in losses[k]]
        res[k]["finite"] = bool(np.all(np.isfinite(res[k]["losses"])))
    speedup = ratio(res["float32"], res[name])
    h, w = s.size
    print(header("amp", env, f"ours_regular, one training iteration, batch of {s.train_images} "
                             f"{h}x{w} images, median of {s.repeats} runs after {s.warmup} "
                             f"warm-up"))
    rows = [[k, *fmt_ms(res[k]), fmt_ratio(ratio(res["float32"], res[k]))] for k in fns]
    print(tabulate(rows, headers=["precision", "median ms", "IQR ms", "min-max ms",
                                  "float32 / this"], tablefmt="github", disable_numparse=True))
    print(f"SOLVER.AMP.ENABLED speed-up: {fmt_ratio(speedup)} [medians]\n", flush=True)
    return {"dtype": name, "models": res, "speedup": speedup, "errors": errors}


def section_postproc(s: Settings, env, cache: ModelCache) -> Dict[str, object]:
    device = torch.device(s.device)
    model = cache.get("ours_full")
    img = random_image(s.size, s.seed)
    postprocessors = model.postprocessors
    if len(postprocessors) == 0:
        raise RuntimeError("the full model has no post-processors (MODEL.POSTPROCESSORS)")
    call_times: Dict[str, List[float]] = {name: [] for name in postprocessors}
    starts: Dict[str, float] = {}
    scores: List[torch.Tensor] = []
    first = next(iter(postprocessors.keys()))
    handles = []
    for name, module in postprocessors.items():
        def pre(_m, inp, name=name):
            synchronize(device)
            if name == first:  # the scores the PRN sees (its sources depend on them)
                scores[:] = [inp[1][0].scores.detach().float().cpu()]
            starts[name] = time.perf_counter()

        def post(_m, _inp, _out, name=name):
            synchronize(device)
            call_times[name].append((time.perf_counter() - starts[name]) * 1e3)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    infer = ours_infer_fn(model, img, s)

    def without_pp() -> int:
        model.postprocessors = nn.ModuleDict()
        try:
            return infer()
        finally:
            model.postprocessors = postprocessors

    try:
        times, counts, errors = run_interleaved({"with": infer, "without": without_pp}, s,
                                                "postproc", device)
    finally:
        for hnd in handles:
            hnd.remove()
    if errors:
        raise RuntimeError("; ".join(f"{k}: {v}" for k, v in errors.items()))
    # the hooks also fired during warm-up: keep the timed calls only
    for name in call_times:
        call_times[name] = call_times[name][-s.repeats:]
    with_st, without_st = summarize(times["with"]), summarize(times["without"])
    calls = {name: summarize(ts) for name, ts in call_times.items()}
    total_calls = sum_stats(list(calls.values()))
    try:
        from multitask.modeling.postprocessing import prn as prn_module

        source_thresh = float(getattr(prn_module, "SOURCE_BOX_SCORE_THRESH", 0.3))
    except ImportError:  # pragma: no cover
        source_thresh = 0.3
    res = {
        "num_people": s.num_people,
        "size": list(s.size),
        "num_detections": [int(c[0]) for c in counts["with"]],
        "with_postprocessors": with_st,
        "without_postprocessors": without_st,
        "postprocessor_calls": calls,
        "postprocessor_calls_total": total_calls,
        "share_by_difference_pct": 100.0 * (with_st["median_ms"] - without_st["median_ms"])
        / with_st["median_ms"],
        "share_by_call_pct": 100.0 * total_calls["median_ms"] / with_st["median_ms"],
        "prn_source_boxes": int((scores[0] >= source_thresh).sum()) if scores else 0,
        "prn_source_box_score_thresh": source_thresh,
    }
    for name, st in calls.items():
        st["share_pct"] = 100.0 * st["median_ms"] / with_st["median_ms"]
    rows = [
        ["full model with post-processors", *fmt_ms(with_st), "100.0"],
        ["full model without post-processors", *fmt_ms(without_st),
         f"{100.0 * without_st['median_ms'] / with_st['median_ms']:.1f}"],
        ["difference (with - without medians)",
         f"{with_st['median_ms'] - without_st['median_ms']:.1f}", "", "",
         f"{res['share_by_difference_pct']:.1f}"],
    ]
    for name, st in calls.items():
        rows.append([f"{name} call", *fmt_ms(st), f"{st['share_pct']:.1f}"])
    rows.append(["all post-processor calls", *fmt_ms(total_calls),
                 f"{res['share_by_call_pct']:.1f}"])
    h, w = s.size
    print(header("postproc", env, f"one {h}x{w} image, {s.num_people} people "
                                  f"({res['prn_source_boxes']} with box score >= "
                                  f"{source_thresh:g}, the PRN's sources), median of "
                                  f"{s.repeats} runs after {s.warmup} warm-up"))
    print(tabulate(rows, headers=["what", "median ms", "IQR ms", "min-max ms",
                                  "% of full model time"], tablefmt="github",
                   disable_numparse=True))
    print(f"post-processors' share of inference: {res['share_by_call_pct']:.1f}% (timed calls), "
          f"{res['share_by_difference_pct']:.1f}% (with - without)\n", flush=True)
    return res


# ---- memory ---------------------------------------------------------------------------------
def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> Tuple[float, str]:
    """Peak RSS of this process's own address space. VmHWM (Linux) belongs to the current
    memory map, so it does not carry a parent's peak over a fork; ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0, "VmHWM"
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024.0), "ru_maxrss"


def memory_worker(conn, s: Settings, name: str) -> None:
    """Runs in a fresh process: build ``name``, run inference twice, report peak memory."""
    try:
        torch.set_num_threads(s.threads)
        device = torch.device(s.device)
        img = random_image(s.memory_size, s.seed)
        if device.type == "cuda":
            torch.cuda.init()
        baseline = _rss_mb()
        if name == "ours_full":
            models = [build_ours(s, "full", s.memory_size)]
            fns = [ours_infer_fn(models[0], img, s)]
        elif name == "tv_keypointrcnn":
            models = [build_tv(s, "keypointrcnn", s.memory_size)]
            fns = [tv_infer_fn(models[0], img, s)]
        elif name == "tv_maskrcnn+keypointrcnn":
            models = [build_tv(s, "maskrcnn", s.memory_size),
                      build_tv(s, "keypointrcnn", s.memory_size)]
            fns = [tv_infer_fn(m, img, s) for m in models]
        else:
            raise KeyError(name)
        after_build = _rss_mb()
        cuda = device.type == "cuda"
        cuda_weights = torch.cuda.memory_allocated(device) / 2**20 if cuda else None
        counts = []
        for _ in range(2):
            for fn in fns:
                counts.append(fn()[0])
            synchronize(device)
        peak, source = _peak_rss_mb()
        out = {
            "peak_rss_mb": peak,
            "peak_rss_source": source,
            "baseline_rss_mb": baseline,
            "after_build_rss_mb": after_build,
            "model_rss_mb": after_build - baseline,
            "peak_minus_baseline_mb": peak - baseline,
            "params_m": sum(n_params(m) for m in models) / 1e6,
            "num_detections": counts,
        }
        if device.type == "cuda":
            out["cuda_weights_mb"] = cuda_weights
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
        conn.send(("ok", out))
    except BaseException:  # report everything, the parent re-raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _mp_context():
    """Fresh processes without paying the torch import each time: a fork server that has
    imported torch/torchvision/multitask (and nothing else) forks one child per model."""
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "torchvision", "multitask", "tabulate", "numpy"])
        return ctx
    return mp.get_context("spawn")


def section_memory(s: Settings, env) -> Dict[str, object]:
    ctx = _mp_context()
    names = ["ours_full", "tv_keypointrcnn", "tv_maskrcnn+keypointrcnn"]
    res: Dict[str, Dict[str, object]] = {}
    for name in names:
        log(f"memory: {name} in a fresh process ({ctx.get_start_method()})")
        t0 = time.perf_counter()
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=memory_worker, args=(child, s, name))
        proc.start()
        child.close()
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = "error", "worker died without a result"
        proc.join()
        if status != "ok":
            log(f"memory: worker for {name} FAILED (exit code {proc.exitcode}):\n{payload}")
            lines = [x for x in str(payload).strip().splitlines() if x.strip()]
            res[name] = {"error": lines[-1][:300] if lines else "failed"}
            continue
        res[name] = payload
        log(f"memory: {name} peak {payload['peak_rss_mb']:.0f} MB "
            f"({time.perf_counter() - t0:.1f} s)")
    cuda = s.device == "cuda"
    rows = []
    ours = res["ours_full"]
    for k in names:
        r = res[k]
        if "error" in r:
            rows.append([label(k, s), "FAILED"] + [""] * (5 + 2 * cuda))
            continue
        rel = ratio(r, ours, "peak_minus_baseline_mb")
        row = [label(k, s), f"{r['params_m']:.1f}", f"{r['peak_rss_mb']:.0f}",
               f"{r['baseline_rss_mb']:.0f}", f"{r['model_rss_mb']:.0f}",
               f"{r['peak_minus_baseline_mb']:.0f}", fmt_ratio(rel)]
        if cuda:
            row += [f"{r['cuda_max_allocated_mb']:.0f}", f"{r['cuda_weights_mb']:.0f}"]
        rows.append(row)
    headers = ["model", "params (M)", "peak RSS MB", "RSS after imports MB", "weights MB (RSS)",
               "peak - after imports MB", "relative to ours"]
    if cuda:
        headers += ["CUDA max allocated MB", "CUDA weights MB"]
    h, w = s.memory_size
    print(header("memory", env, f"one {h}x{w} image, {s.num_people} people, 2 inference runs "
                                f"in a fresh process per model (peak = "
                                f"{ours.get('peak_rss_source', 'n/a')})"))
    print(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
    errors = {k: v["error"] for k, v in res.items() if "error" in v}
    for k, v in errors.items():
        print(f"FAILED {k}: {v}")
    print(flush=True)
    return {"size": list(s.memory_size), "num_people": s.num_people, "models": res,
            "errors": errors}


# ---- ops ------------------------------------------------------------------------------------
def load_bench_deform_conv():
    """``tools/bench_deform_conv.py`` as a module (it is a script, not part of the package)."""
    path = Path(__file__).resolve().with_name("bench_deform_conv.py")
    spec = importlib.util.spec_from_file_location("bench_deform_conv", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _measure_deform_conv_device(bench, shapes, s: Settings, backward: bool):
    """``measure_deform_conv`` rows for a CUDA device (that function times CPU tensors only):
    its inputs and candidates, moved to the device, with synchronisation around each run."""
    device = torch.device(s.device)
    rows = []
    for channels, height, width in shapes:
        tensors = [t.detach().to(device).requires_grad_(backward)
                   for t in bench._make_inputs(channels, height, width, requires_grad=False)]
        fns = bench._candidates(*tensors)
        grad = torch.randn(1, channels, height, width, device=device)

        def run(fn):
            if backward:
                fn().backward(grad)
                for t in tensors:
                    t.grad = None
            else:
                with torch.no_grad():
                    fn()

        failed: Dict[str, str] = {}
        for name, fn in list(fns.items()):  # warm-up; a candidate that cannot run is dropped
            try:
                run(fn)
                synchronize(device)
            except Exception as exc:  # noqa: BLE001  (e.g. a CPU-only kernel)
                failed[name] = short_error(exc)
                log(f"ops: {name} cannot run on {device}: {failed[name]}")
                del fns[name]
        times: Dict[str, List[float]] = {name: [] for name in fns}
        for _ in range(s.repeats):
            for name, fn in fns.items():
                synchronize(device)
                t0 = time.perf_counter()
                run(fn)
                synchronize(device)
                times[name].append((time.perf_counter() - t0) * 1e3)
        row: Dict[str, object] = {"channels": channels, "height": height, "width": width,
                                  "threads": s.threads, "pass": "fwd+bwd" if backward else "fwd"}
        for name, ts in times.items():
            row[f"{name}_ms"] = float(np.median(ts))
            row[f"{name}_min_ms"] = float(min(ts))
        for name, err in failed.items():
            row[f"{name}_ms"] = row[f"{name}_min_ms"] = None
            row[f"{name}_error"] = err
        dense = row.get("dense_ms")
        for name in ("torchvision", "fast"):
            value = row.get(f"{name}_ms")
            row[f"{name}_ratio"] = value / dense if value and dense else None
        rows.append(row)
    return rows


def section_ops(s: Settings, env) -> Dict[str, object]:
    bench = load_bench_deform_conv()
    shapes = TINY_OPS_SHAPES if s.tiny else FULL_OPS_SHAPES
    rows = []
    for backward in (False, True):
        log(f"ops: {'forward+backward' if backward else 'forward'} on {len(shapes)} shapes")
        if s.device == "cpu":
            rows += bench.measure_deform_conv(shapes, s.threads, s.repeats, backward=backward)
        else:
            rows += _measure_deform_conv_device(bench, shapes, s, backward)
    table = []
    for r in rows:
        table.append([f"{r['channels']} x {r['height']} x {r['width']}", r["pass"],
                      *(fmt_num(r.get(k)) for k in (
                          "dense_ms", "torchvision_ms", "fast_ms", "torchvision_ratio",
                          "fast_ratio")),
                      fmt_num(r["torchvision_ms"] / r["fast_ms"]
                              if r.get("torchvision_ms") and r.get("fast_ms") else None)])
    ours_note = ("ours = deform_conv2d_fast, what the model runs on CPU" if s.device == "cpu" else
                 "ours = deform_conv2d_fast (the model itself uses torchvision's kernel on CUDA)")
    print(header("ops", env, f"modulated deformable 3x3 conv, batch 1, C -> C, stride 1, pad 1, "
                             f"median of {s.repeats} runs after 1 warm-up; {ours_note}"))
    print(tabulate(table, headers=["shape (C x H x W)", "pass", "dense conv2d ms",
                                   "torchvision deform ms", "ours deform ms", "torchvision / dense",
                                   "ours / dense", "torchvision / ours"], tablefmt="github",
                   disable_numparse=True))
    print(flush=True)
    return {"rows": rows, "roi_align": section_ops_roi_align(s, env)}


def _roi_case(feature_shape, image_hw, num_rois: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    n = feature_shape[0]
    feat = torch.randn(feature_shape, generator=g)
    side = 16 + 144 * torch.rand(num_rois, 2, generator=g)
    xy = torch.rand(num_rois, 2, generator=g) * (torch.tensor(image_hw[::-1]) - side)
    img = torch.randint(0, n, (num_rois, 1), generator=g).float()
    return feat, torch.cat([img, xy, xy + side], 1)


def section_ops_roi_align(s: Settings, env) -> List[Dict[str, object]]:
    """torchvision's roi_align vs :func:`roi_align_fast` (what the poolers run on CPU), forward
    and forward + backward, ROIAlignV2 with 2x2 samples per bin."""
    from torchvision.ops import roi_align

    from multitask.modeling.layers.roi_align_fast import roi_align_fast

    device = torch.device(s.device)
    rows = []
    for name, shape, image_hw, num_rois, size in (TINY_ROI_CASES if s.tiny else FULL_ROI_CASES):
        feat, rois = _roi_case(shape, image_hw, num_rois, s.seed)
        feat, rois = feat.to(device), rois.to(device)
        scale = shape[2] / image_hw[0]
        for backward in (False, True):
            def make(fn):
                def run():
                    if not backward:
                        with torch.no_grad():
                            return fn(feat, rois, size, scale, 2, True)
                    x = feat.clone().requires_grad_()
                    out = fn(x, rois, size, scale, 2, True)
                    out.backward(torch.ones_like(out))
                    return None
                return run

            label = f"ops roi_align {name} {'fwd+bwd' if backward else 'fwd'}"
            times, _, errors = run_interleaved(
                {"torchvision": make(roi_align), "ours": make(roi_align_fast)}, s, label, device)
            tv, ours = (stats_or_error(times, errors, k) for k in ("torchvision", "ours"))
            rows.append({"case": name, "features": list(shape), "rois": num_rois,
                         "output": size, "pass": "fwd+bwd" if backward else "fwd",
                         "torchvision": tv, "ours": ours, "torchvision_over_ours": ratio(tv, ours)})
    where = ("ours = roi_align_fast, what the ROI poolers run on CPU" if s.device == "cpu" else
             "ours = roi_align_fast (the poolers themselves use torchvision's kernel on CUDA)")
    print(header("ops", env, f"ROIAlignV2 (aligned, 2x2 samples per bin), median of {s.repeats} "
                             f"runs after {s.warmup} warm-up; {where}"))
    table = [[r["case"], " x ".join(map(str, r["features"])), r["rois"],
              f"{r['output']}x{r['output']}", r["pass"], fmt_ms(r["torchvision"])[0],
              fmt_ms(r["ours"])[0], fmt_ratio(r["torchvision_over_ours"])] for r in rows]
    print(tabulate(table, headers=["case", "features (N x C x H x W)", "ROIs", "output", "pass",
                                   "torchvision ms", "ours ms", "torchvision / ours"],
                   tablefmt="github", disable_numparse=True))
    print(flush=True)
    return rows


# -------------------------------------------------------------------------------------------
def write_json(path: Path, data: Dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.amp and amp_dtype(torch.device(args.device)) is None:
        parser.error("--amp: this CPU has no native bfloat16 (AVX512-BF16 / AMX)")
    if ((args.threads is not None and args.threads < 1) or args.num_people < 1
            or args.train_images < 1 or args.train_people < 1):
        parser.error("--threads, --num-people, --train-images and --train-people must be >= 1")
    s = settings_from_args(args)
    if s.repeats < 1 or s.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")

    torch.set_num_threads(s.threads)
    # registers the models and post-processors
    import multitask  # noqa: F401

    env = environment(s)
    out_path = Path(args.output)
    data: Dict[str, object] = {
        "meta": {
            **env,
            "argv": [sys.argv[0]] + list(argv if argv is not None else sys.argv[1:]),
            "settings": asdict(s),
            "sections": sections,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_avg_start": load_average(),
        }
    }
    log(f"sections {sections}; device {s.device}, {s.threads} threads, size {s.size}, "
        f"{s.num_people} people, {s.repeats} repeats, {s.warmup} warm-up"
        + (" (tiny)" if s.tiny else ""))
    cache = ModelCache(s)
    runners = {
        "inference": lambda: section_inference(s, env, cache),
        "train": lambda: section_train(s, env),
        "postproc": lambda: section_postproc(s, env, cache),
        "memory": lambda: section_memory(s, env),
        "ops": lambda: section_ops(s, env),
        "amp": lambda: section_amp(s, env),
    }
    failures: List[str] = []
    for name in SECTIONS:
        if name not in sections:
            continue
        t0 = time.perf_counter()
        log(f"--- section {name}")
        try:
            data[name] = runners[name]()
        except Exception as exc:  # noqa: BLE001  (the other sections still run; exit code 1)
            log(f"section {name} FAILED:\n{traceback.format_exc()}")
            print(header(name, env))
            print(f"FAILED: {short_error(exc)}\n", flush=True)
            data[name] = {"error": short_error(exc)}
        for model, err in (data[name].get("errors") or {}).items():
            failures.append(f"{name}/{model}: {err}")
        if "error" in data[name]:
            failures.append(f"{name}: {data[name]['error']}")
        data[name]["section_seconds"] = time.perf_counter() - t0
        data[name]["load_avg_end"] = load_average()
        data["meta"]["load_avg_end"] = load_average()
        data["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        data["meta"]["failures"] = failures
        write_json(out_path, data)  # after every section: partial results survive
        log(f"--- section {name} done in {time.perf_counter() - t0:.1f} s; wrote {out_path}")
    if failures:
        log("FAILURES:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The candidates: our multi-task R-CNN (regular and full) and torchvision's R-CNNs, built with
random weights, the same input size, RPN / ROI sampling and N-detection forcing; and the
inference callables the sections time."""

import os
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import (
    KeypointRCNN,
    MaskRCNN,
    keypointrcnn_resnet50_fpn,
    maskrcnn_resnet50_fpn,
)
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from multitask import build_model, get_cfg

from .harness import amp_context, log
from .inputs import NUM_KEYPOINTS, person_boxes, random_image, to_tv_image
from .settings import Settings
from .tiny_model import BENCHMARK_TINY_MODEL

# projects/multitask/benchmark/candidates.py -> parents: benchmark, multitask, projects, <repo root>
REPO_ROOT = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO_ROOT / "configs" / "COCO-MultiTask"
OUR_CONFIGS = {
    "full": "multitask_R_50_FPN_1x_dconv_c3-c5_dconv_head.yaml",
    "regular": "multitask_R_50_FPN_1x.yaml",
}
POSTPROCESSORS = ["PoseResidualNetwork", "ActivityClassifier"]

MODEL_LABELS = {
    "ours_full": "ours full (dconv c3-c5 + dconv kp head + PRN + activity)",
    "ours_regular": "ours regular (no dconv, no post-processors)",
    "ours_full_train": "ours full (dconv c3-c5 + dconv kp head)",
    "ours_full_onnxruntime": "ours full, exported: onnxruntime graph, then PRN + activity",
    "tv_keypointrcnn": "torchvision keypointrcnn_resnet50_fpn",
    "tv_maskrcnn": "torchvision maskrcnn_resnet50_fpn",
    "tv_maskrcnn+keypointrcnn": "torchvision maskrcnn + keypointrcnn (one after the other)",
}


def our_cfg(s: Settings, variant: str, size: Tuple[int, int], postprocessors: bool = True):
    """Frozen config of our ``variant`` ("full" or "regular") forced to ``s.num_people``
    detections at input ``size``; the tiny network with ``s.tiny``."""
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
        "MODEL.POSTPROCESSORS", list(POSTPROCESSORS) if postprocessors else [],
    ]
    if s.tiny:
        overrides += BENCHMARK_TINY_MODEL
    cfg.merge_from_list(overrides)
    cfg.freeze()
    return cfg


def force_person_boxes(roi_heads: nn.Module, s: Settings) -> None:
    """Replace the coordinates of the detections that ``roi_heads.postprocess_detections``
    (torchvision's ``RoIHeads`` method, which ours inherits) returns by
    :func:`~multitask.benchmark.inputs.person_boxes`.

    The RPN, box head, score threshold, NMS and top-N selection all still run; only the boxes
    handed to the mask/keypoint heads and the output rescaling change, identically for every
    model. Training does not call ``postprocess_detections``."""
    original = roi_heads.postprocess_detections
    cache: Dict[Tuple[int, int], torch.Tensor] = {}  # made once per size: constants in a trace

    def boxes_for(shape) -> torch.Tensor:
        key = (int(shape[0]), int(shape[1]))
        if key not in cache:
            cache[key] = person_boxes(s.num_people, key, s.seed)
        return cache[key]

    def postprocess_detections(class_logits, box_regression, proposals, image_shapes):
        boxes, scores, labels = original(class_logits, box_regression, proposals, image_shapes)
        fixed = [boxes_for(shape).to(b)[: len(b)] for b, shape in zip(boxes, image_shapes)]
        return fixed, scores, labels

    roi_heads.postprocess_detections = postprocess_detections


def build_ours(s: Settings, variant: str, size: Tuple[int, int], postprocessors: bool = True):
    """Our model of ``variant`` with random weights, in eval mode on ``s.device``."""
    torch.manual_seed(s.seed)
    model = build_model(our_cfg(s, variant, size, postprocessors))
    if s.boxes == "people":
        force_person_boxes(model.roi_heads, s)
    return model.to(s.device).eval()


def tv_backbone(depth: int, out_channels: int, frozen: bool) -> nn.Module:
    """torchvision's ``_resnet_fpn_extractor`` with a configurable FPN width: FrozenBN and 3
    trainable stages (``frozen``) or BatchNorm2d and all 5 trainable."""
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


def tiny_tv_heads(cfg, kind: str) -> Dict[str, object]:
    """Our tiny heads' sizes, in torchvision's head classes."""
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
    cfg = our_cfg(s, "full", size)
    kw = tv_kwargs(cfg, s, size)
    torch.manual_seed(s.seed)
    if s.tiny:
        backbone = tv_backbone(cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.FPN.OUT_CHANNELS, frozen=True)
        kw.update(tiny_tv_heads(cfg, kind))  # the predictors fix classes and keypoints
        if kind == "maskrcnn":
            model = MaskRCNN(backbone, num_classes=None, **kw)
        else:
            model = KeypointRCNN(backbone, num_classes=None, **kw)
    elif s.tv_backbone == "builder":
        builder = maskrcnn_resnet50_fpn if kind == "maskrcnn" else keypointrcnn_resnet50_fpn
        model = builder(weights=None, weights_backbone=None, num_classes=2, **kw)
    else:
        backbone = tv_backbone(50, 256, frozen=True)
        if kind == "maskrcnn":
            model = MaskRCNN(backbone, num_classes=2, **kw)
        else:
            model = KeypointRCNN(backbone, num_classes=2, num_keypoints=NUM_KEYPOINTS, **kw)
    if s.boxes == "people":
        force_person_boxes(model.roi_heads, s)
    return model.to(s.device).eval()


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def label(name: str, s: Settings) -> str:
    """The table label of candidate ``name`` (ResNet-18 in tiny mode)."""
    text = MODEL_LABELS.get(name, name)
    return text.replace("resnet50", "resnet18") if s.tiny else text


# -------------------------------------------------------------------------------------------
# Inference callables (return the number of detections and their mean box size)
# -------------------------------------------------------------------------------------------
def box_summary(boxes: torch.Tensor) -> Tuple[int, float, float]:
    """(count, mean width, mean height) of (R, 4) XYXY boxes."""
    if len(boxes) == 0:
        return 0, 0.0, 0.0
    wh = (boxes[:, 2:4] - boxes[:, 0:2]).float().mean(dim=0).tolist()
    return len(boxes), float(wh[0]), float(wh[1])


def ours_infer_fn(model, img_bgr: torch.Tensor, s: Settings) -> Callable[[], Tuple]:
    """One inference of our model on ``img_bgr``, returning :func:`box_summary`."""
    h, w = img_bgr.shape[-2:]
    inputs = [{"image": img_bgr.to(s.device), "height": int(h), "width": int(w)}]

    def fn() -> Tuple[int, float, float]:
        with torch.no_grad(), amp_context(s):
            out = model(inputs)
        return box_summary(out[0]["instances"].pred_boxes)

    return fn


def tv_infer_fn(model, img_bgr: torch.Tensor, s: Settings) -> Callable[[], Tuple]:
    """One inference of a torchvision model on ``img_bgr`` (as RGB), returning
    :func:`box_summary`."""
    image = [to_tv_image(img_bgr, s.device)]

    def fn() -> Tuple[int, float, float]:
        with torch.no_grad(), amp_context(s):
            out = model(image)
        return box_summary(out[0]["boxes"])

    return fn


def onnxruntime_available() -> bool:
    """Whether the ``ours_full_onnxruntime`` candidate can run (onnxruntime, CPU)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_ours_onnx(s: Settings, model, size: Tuple[int, int], directory: str) -> Dict[str, str]:
    """Export our full ``model`` at ``size`` into ``directory`` (``export_model``'s paths). One
    plain run comes first: the forced person boxes are made then, and traced as constants."""
    from multitask.export import export_model

    ours_infer_fn(model, random_image(size, s.seed), s)()
    return export_model(our_cfg(s, "full", size), model, directory, "onnx", sample_size=size)


def params_m(model) -> float:
    """Parameters in millions; an exported model reports those of the network in its graph."""
    return getattr(model, "params_m", None) or n_params(model) / 1e6


class ModelCache:
    """Inference models built once and shared by the sections of one run.

    ``ours_full_onnxruntime`` is ``ours_full`` exported to ONNX (into a temporary folder, removed
    with the cache) and run by :class:`multitask.export.ExportedModel` with ``s.threads``
    onnxruntime threads; ``export_info`` then holds the export's time and graph size.
    """

    def __init__(self, s: Settings):
        self.s = s
        self._models: Dict[str, nn.Module] = {}
        self.export_info: Dict[str, float] = {}
        self._tmp = None

    def _export_onnx(self) -> nn.Module:
        import tempfile

        from multitask.export import ExportedModel

        ours = self.get("ours_full")
        self._tmp = tempfile.TemporaryDirectory(prefix="multitask_bench_export_")
        t0 = time.perf_counter()
        paths = export_ours_onnx(self.s, ours, self.s.size, self._tmp.name)
        self.export_info = {
            "export_s": time.perf_counter() - t0,
            "graph_mb": os.path.getsize(paths["graph"]) / 2**20,
        }
        exported_cfg = get_cfg()
        exported_cfg.merge_from_file(paths["config"])
        model = ExportedModel(exported_cfg, paths["graph"], num_threads=self.s.threads)
        # the graph's weights are the same network's: report its parameters
        model.params_m = n_params(ours) / 1e6
        return model

    def get(self, name: str) -> nn.Module:
        if name not in self._models:
            log(f"building {name}")
            t0 = time.perf_counter()
            if name == "ours_full":
                self._models[name] = build_ours(self.s, "full", self.s.size)
            elif name == "ours_full_onnxruntime":
                self._models[name] = self._export_onnx()
            elif name == "tv_keypointrcnn":
                self._models[name] = build_tv(self.s, "keypointrcnn", self.s.size)
            elif name == "tv_maskrcnn":
                self._models[name] = build_tv(self.s, "maskrcnn", self.s.size)
            else:
                raise KeyError(name)
            log(f"built {name} ({params_m(self._models[name]):.1f}M parameters) in "
                f"{time.perf_counter() - t0:.1f} s")
        return self._models[name]

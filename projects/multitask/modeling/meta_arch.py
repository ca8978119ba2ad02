"""MultiTaskRCNN: preprocess -> backbone -> RPN -> ROI heads -> rescale -> post-processors."""

import logging
from typing import Dict, List, Optional, Tuple

import torch
from fvcore.common.registry import Registry
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from ..structures import Instances
from .backbone import build_backbone
from .postprocessing import build_postprocessors, run_postprocessors, set_postprocessor_precision
from .roi_heads import build_roi_heads

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures: ``cls(cfg)`` -> ``nn.Module`` taking a list of per-image input
dicts (see docs/internals.md).
"""


def build_rpn(cfg, in_channels: int) -> RegionProposalNetwork:
    """torchvision's RPN configured from ``MODEL.RPN.*`` and ``MODEL.ANCHOR_GENERATOR.*``."""
    r, a = cfg.MODEL.RPN, cfg.MODEL.ANCHOR_GENERATOR
    n_levels = len(r.IN_FEATURES)
    sizes = [tuple(s) for s in a.SIZES]
    ratios = [tuple(x) for x in a.ASPECT_RATIOS]
    if len(sizes) != n_levels:
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR.SIZES has {len(sizes)} levels but MODEL.RPN.IN_FEATURES "
            f"has {n_levels}"
        )
    if len(ratios) == 1:
        ratios = ratios * n_levels
    anchor_gen = AnchorGenerator(tuple(sizes), tuple(ratios))
    head = RPNHead(in_channels, anchor_gen.num_anchors_per_location()[0])
    return RegionProposalNetwork(
        anchor_gen,
        head,
        fg_iou_thresh=r.IOU_THRESHOLDS[1],
        bg_iou_thresh=r.IOU_THRESHOLDS[0],
        batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        positive_fraction=r.POSITIVE_FRACTION,
        pre_nms_top_n=dict(training=r.PRE_NMS_TOPK_TRAIN, testing=r.PRE_NMS_TOPK_TEST),
        post_nms_top_n=dict(training=r.POST_NMS_TOPK_TRAIN, testing=r.POST_NMS_TOPK_TEST),
        nms_thresh=r.NMS_THRESH,
    )


@META_ARCH_REGISTRY.register()
class MultiTaskRCNN(nn.Module):
    """One R-CNN for people: box, mask and offset-refined keypoints, then post-processors.

    Input: a list of dicts, one per image (see ``docs/internals.md``):

    * ``"image"``: ``uint8`` or float ``(3, H, W)`` BGR tensor, already resized;
    * ``"height"``, ``"width"`` (optional): the size to report predictions at (the original
      image); defaults to ``(H, W)``;
    * ``"instances"`` (training): :class:`Instances` with ``gt_boxes (N, 4)`` XYXY,
      ``gt_classes (N,)``, ``gt_masks (N, H, W)`` and ``gt_keypoints (N, K, 3)``.
      ``N`` may be 0 (an image without people).

    Training returns a dict of losses: ``loss_objectness``, ``loss_rpn_box_reg`` (RPN),
    ``loss_classifier``, ``loss_box_reg`` (box head; with the RPN's: L_obj), ``loss_mask``
    (L_seg) and ``loss_keypoint`` (L_key), each already multiplied by its ``LOSS_WEIGHT``.

    Inference returns a list of ``{"instances": Instances((height, width))}`` with
    ``pred_boxes (R, 4)``, ``scores (R,)``, ``pred_classes (R,)``, ``pred_masks (R, height,
    width) bool`` (if ``MODEL.MASK_ON``), ``pred_keypoints (R, K, 3)`` x, y, score (if
    ``MODEL.KEYPOINT_ON``) and whatever the post-processors add.
    """

    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg)
        self.proposal_generator = build_rpn(cfg, self.backbone.out_channels)
        self.roi_heads = build_roi_heads(cfg, self.backbone.out_channels)
        self.postprocessors = build_postprocessors(cfg)
        self.rpn_loss_weight = cfg.MODEL.RPN.LOSS_WEIGHT
        self.mask_on = cfg.MODEL.MASK_ON
        self.keypoint_on = cfg.MODEL.KEYPOINT_ON
        # colour order of the input images; the checkpointer converts weights trained on the other
        self.input_format = cfg.INPUT.FORMAT
        self.register_buffer(
            "pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), persistent=False
        )
        self.channels_last_inference = bool(cfg.TEST.CHANNELS_LAST)
        self._channels_last = False
        self._trains = False  # set by train(True): see train()

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def train(self, mode: bool = True):
        """``nn.Module.train``; with ``TEST.CHANNELS_LAST`` on a CPU model, eval mode also puts
        the backbone's and ROI heads' weights in channels-last memory format and training mode
        back in NCHW (the values do not change, so neither does ``state_dict()``). Post-processors
        with ``set_inference_precision`` (the PRN) are told which mode the model is in, and
        whether it has trained (``train(True)`` was called: a trainer's model), in which case
        they keep their float32 weights for the way back."""
        super().train(mode)
        if mode:  # a model that trains keeps its post-processors' float32 weights while evaluated
            self._trains = True
        want = (not mode) and self.channels_last_inference and self.device.type == "cpu"
        if want != self._channels_last:
            fmt = torch.channels_last if want else torch.contiguous_format
            self.backbone.to(memory_format=fmt)
            self.roi_heads.to(memory_format=fmt)
            self._channels_last = want
        set_postprocessor_precision(self.postprocessors, not mode, keep_float32=self._trains)
        return self

    # -------------------------------------------------------------------------------------
    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        """Normalise and pad the images to a common size divisible by 32."""
        images = [
            (x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std
            for x in batched_inputs
        ]
        batch = images_to_imagelist(images, self.backbone.size_divisibility)
        if self._channels_last and not self.training:
            batch.tensors = batch.tensors.contiguous(memory_format=torch.channels_last)
        return batch

    def forward(self, batched_inputs: List[dict]):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        targets = [self._to_target(x["instances"]) for x in batched_inputs]
        features = self.backbone(images.tensors)
        proposals, rpn_losses = self.proposal_generator(images, features, targets)
        _, roi_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        losses = {k: v * self.rpn_loss_weight for k, v in rpn_losses.items()}
        losses.update(roi_losses)
        return losses

    def inference(
        self,
        batched_inputs: List[dict],
        detected_instances: Optional[List[Instances]] = None,
        do_postprocess: bool = True,
    ):
        """Predict. With ``detected_instances`` (boxes in the input image's frame, field
        ``pred_boxes``), the RPN and box head are skipped and masks/keypoints are predicted for
        exactly those boxes (used by benchmarks and for ground-truth-box evaluation)."""
        assert not self.training
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensors)
        if detected_instances is None:
            proposals, _ = self.proposal_generator(images, features)
            results, _ = self.roi_heads(features, proposals, images.image_sizes)
        else:
            results = [
                {
                    "boxes": d.pred_boxes.to(self.device),
                    "scores": (
                        d.scores.to(self.device)
                        if d.has("scores")
                        else torch.ones(len(d), device=self.device)
                    ),
                    "labels": torch.ones(len(d), dtype=torch.int64, device=self.device),
                }
                for d in detected_instances
            ]
            results = self.roi_heads.forward_with_given_boxes(features, results, images.image_sizes)
        if not do_postprocess:
            return results
        processed = []
        for r, x, size in zip(results, batched_inputs, images.image_sizes):
            height = x.get("height", size[0])
            width = x.get("width", size[1])
            processed.append(detector_postprocess(r, size, (height, width)))
        processed = run_postprocessors(self.postprocessors, batched_inputs, processed)
        return [{"instances": r} for r in processed]

    def _to_target(self, inst: Instances) -> Dict[str, torch.Tensor]:
        target = {
            "boxes": inst.gt_boxes.to(self.device, torch.float32),
            "labels": (inst.gt_classes.to(self.device) + 1).long(),  # torchvision: 0 = background
        }
        if self.mask_on:
            target["masks"] = inst.gt_masks.to(self.device)
            if inst.has("gt_mask_valid"):  # False: annotation without a segmentation
                target["mask_valid"] = inst.gt_mask_valid.to(self.device)
        if self.keypoint_on:
            target["keypoints"] = inst.gt_keypoints.to(self.device, torch.float32)
        return target


def images_to_imagelist(images: List[torch.Tensor], size_divisibility: int = 32) -> ImageList:
    """Pad ``(3, H_i, W_i)`` images into one ``(N, 3, H, W)`` batch, H and W divisible."""
    sizes: List[Tuple[int, int]] = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    max_h = max(s[0] for s in sizes)
    max_w = max(s[1] for s in sizes)
    d = size_divisibility
    max_h, max_w = (max_h + d - 1) // d * d, (max_w + d - 1) // d * d
    batch = images[0].new_zeros((len(images), images[0].shape[0], max_h, max_w))
    for im, pad in zip(images, batch):
        pad[:, : im.shape[-2], : im.shape[-1]].copy_(im)
    return ImageList(batch, sizes)


def detector_postprocess(
    result: Dict[str, torch.Tensor],
    input_size: Tuple[int, int],
    output_size: Tuple[int, int],
    mask_threshold: float = 0.5,
) -> Instances:
    """Rescale one image's raw head outputs from the network input size to ``output_size``.

    ``result`` holds ``boxes``, ``scores``, ``labels`` and optionally ``masks (R, 1, M, M)``
    probabilities and ``keypoints (R, K, 3)``, in the frame of ``input_size``. Returns
    :class:`Instances` at ``output_size`` with full-image boolean masks.
    """
    oh, ow = int(output_size[0]), int(output_size[1])
    sy, sx = oh / input_size[0], ow / input_size[1]
    boxes = result["boxes"] * torch.tensor([sx, sy, sx, sy], device=result["boxes"].device)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
    inst = Instances((oh, ow))
    inst.pred_boxes = boxes
    inst.scores = result["scores"]
    inst.pred_classes = result["labels"] - 1
    if "masks" in result:
        masks = result["masks"]
        if len(boxes):
            pasted = paste_masks_in_image(masks, boxes, (oh, ow), padding=1)[:, 0]
        else:
            pasted = masks.new_zeros((0, oh, ow))
        inst.pred_masks = pasted > mask_threshold
    if "keypoints" in result:
        kp = result["keypoints"].clone()
        kp[..., 0] *= sx
        kp[..., 1] *= sy
        inst.pred_keypoints = kp
    return inst


def build_model(cfg) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``.

    If the config asks for CUDA on a machine without it, the model is built on the CPU with a
    warning, so configs written for GPU machines run unchanged on a laptop.
    """
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    device = torch.device(cfg.MODEL.DEVICE)
    if device.type == "cuda" and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE is '%s' but CUDA is not available; using the CPU", device)
        device = torch.device("cpu")
    model.to(device)
    n_params = count_parameters(model) / 1e6
    logger.info("Built %s with %.2fM parameters", type(model).__name__, n_params)
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = ["MultiTaskRCNN", "build_model", "detector_postprocess", "images_to_imagelist"]

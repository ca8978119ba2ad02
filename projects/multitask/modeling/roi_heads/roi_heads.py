"""Box + mask + offset-refined keypoint heads on shared ROI features.

:class:`MultiTaskROIHeads` subclasses torchvision's ``RoIHeads`` and reuses its proposal sampling
(``select_training_samples``), box loss (``fastrcnn_loss``), box decoding and NMS
(``postprocess_detections``) and mask loss; each task is a ``_forward_<task>`` method returning
losses in training and updated results at inference, also reachable through
:meth:`forward_with_given_boxes`.
"""

from typing import Dict, List, Optional, Tuple

import torch
from fvcore.common.registry import Registry
from torch import nn
from torchvision.models.detection.faster_rcnn import (
    FastRCNNConvFCHead,
    FastRCNNPredictor,
    TwoMLPHead,
)
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    fastrcnn_loss,
    maskrcnn_inference,
    maskrcnn_loss,
)

from ..layers import get_norm
from .keypoint_codec import (
    KEYPOINT_DECODERS,
    KEYPOINT_SCORES,
    decode_keypoints,
    encode_gaussian_targets,
    encode_onehot_targets,
    keypoint_gaussian_ce_loss,
    keypoint_gaussian_mse_loss,
    keypoint_softmax_ce_loss,
    keypoints_to_heatmap_coords,
)
from .keypoint_head import build_keypoint_head
from .poolers import build_pooler

ROI_HEADS_REGISTRY = Registry("ROI_HEADS")
ROI_HEADS_REGISTRY.__doc__ = """
Registry for ROI heads. A registered class is built as ``cls(cfg, in_channels)`` and called as
``heads(features, proposals, image_shapes, targets=None) -> (results, losses)``, torchvision's
``RoIHeads`` signature: ``features`` dict of FPN maps, ``proposals`` list of ``(P_i, 4)`` boxes,
``targets`` list of dicts with ``boxes``, ``labels`` (1 = person), ``masks``, ``keypoints``.
``results`` is a list of dicts with ``boxes, scores, labels`` and, per enabled task, ``masks
(R, 1, 28, 28)`` probabilities and ``keypoints (R, K, 3)``.
"""

_LOSS_TYPES = ("softmax_ce", "gaussian_ce", "gaussian_mse")


@ROI_HEADS_REGISTRY.register()
class MultiTaskROIHeads(RoIHeads):
    """Person box head, 28x28 mask head and 56x56 offset-refined keypoint head.

    Loss names: ``loss_classifier``, ``loss_box_reg`` (L_obj with the RPN's), ``loss_mask``
    (L_seg), ``loss_keypoint`` (L_key), each multiplied by its ``LOSS_WEIGHT``.
    """

    def __init__(self, cfg, in_channels: int):
        rh, bh = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
        names = list(rh.IN_FEATURES)
        # FPN level of a box of side s: floor(4 + log2(s / CANONICAL_BOX_SIZE)), clamped
        canonical = dict(canonical_scale=rh.CANONICAL_BOX_SIZE, canonical_level=4)
        box_pool = build_pooler(
            bh.POOLER_TYPE,
            names,
            bh.POOLER_RESOLUTION,
            bh.POOLER_SAMPLING_RATIO,
            "MODEL.ROI_BOX_HEAD.POOLER_TYPE",
            **canonical,
        )
        box_head = _build_box_head(cfg, in_channels)
        box_predictor = FastRCNNPredictor(bh.FC_DIM, rh.NUM_CLASSES + 1)
        # torchvision's RoIHeads gets every part under its own name (mask_head, mask_predictor,
        # keypoint_head, keypoint_predictor, ...), so has_mask() / has_keypoint() tell the truth
        # and a torchvision R-CNN's parameter names map onto ours by a prefix only.
        parts = {}
        if cfg.MODEL.MASK_ON:
            mh = cfg.MODEL.ROI_MASK_HEAD
            parts["mask_roi_pool"] = build_pooler(
                mh.POOLER_TYPE,
                names,
                mh.POOLER_RESOLUTION,
                mh.POOLER_SAMPLING_RATIO,
                "MODEL.ROI_MASK_HEAD.POOLER_TYPE",
                **canonical,
            )
            parts["mask_head"] = MaskRCNNHeads(
                in_channels,
                [mh.CONV_DIM] * mh.NUM_CONV,
                dilation=1,
                norm_layer=get_norm(mh.NORM, "MODEL.ROI_MASK_HEAD.NORM"),
            )
            predictor = MaskRCNNPredictor(mh.CONV_DIM, mh.CONV_DIM, rh.NUM_CLASSES + 1)
            # detectron2's init of the mask logits: small, so the first mask losses are ~log 2
            nn.init.normal_(predictor.mask_fcn_logits.weight, std=0.001)
            nn.init.zeros_(predictor.mask_fcn_logits.bias)
            parts["mask_predictor"] = predictor
        if cfg.MODEL.KEYPOINT_ON:
            kh = cfg.MODEL.ROI_KEYPOINT_HEAD
            if kh.LOSS_TYPE not in _LOSS_TYPES:
                raise ValueError(
                    f"MODEL.ROI_KEYPOINT_HEAD.LOSS_TYPE: '{kh.LOSS_TYPE}' is not one of "
                    f"{_LOSS_TYPES}"
                )
            parts["keypoint_roi_pool"] = build_pooler(
                kh.POOLER_TYPE,
                names,
                kh.POOLER_RESOLUTION,
                kh.POOLER_SAMPLING_RATIO,
                "MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE",
                **canonical,
            )
            head = build_keypoint_head(cfg, in_channels)
            if isinstance(getattr(head, "body", None), nn.Module) and isinstance(
                getattr(head, "predictor", None), nn.Module
            ):
                parts["keypoint_head"], parts["keypoint_predictor"] = head.body, head.predictor
            else:
                parts["keypoint_head"], parts["keypoint_predictor"] = head, nn.Identity()
        super().__init__(
            box_pool,
            box_head,
            box_predictor,
            fg_iou_thresh=rh.IOU_THRESHOLDS[-1],
            bg_iou_thresh=rh.IOU_THRESHOLDS[0],
            batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE,
            positive_fraction=rh.POSITIVE_FRACTION,
            bbox_reg_weights=tuple(bh.BBOX_REG_WEIGHTS),
            score_thresh=rh.SCORE_THRESH_TEST,
            nms_thresh=rh.NMS_THRESH_TEST,
            detections_per_img=rh.DETECTIONS_PER_IMAGE,
            **parts,
        )
        self.box_loss_weight = bh.LOSS_WEIGHT
        self.mask_on = self.has_mask()
        if self.mask_on:
            self.mask_loss_weight = cfg.MODEL.ROI_MASK_HEAD.LOSS_WEIGHT
        self.keypoint_on = self.has_keypoint()
        if self.keypoint_on:
            kh = cfg.MODEL.ROI_KEYPOINT_HEAD
            if kh.DECODER not in KEYPOINT_DECODERS or kh.SCORE not in KEYPOINT_SCORES:
                raise ValueError(
                    f"MODEL.ROI_KEYPOINT_HEAD: DECODER '{kh.DECODER}' / SCORE '{kh.SCORE}' must "
                    f"be one of {KEYPOINT_DECODERS} / {KEYPOINT_SCORES}"
                )
            self.keypoint_decoder, self.keypoint_score = kh.DECODER, kh.SCORE
            self.keypoint_loss_type = kh.LOSS_TYPE
            self.keypoint_loss_weight = kh.LOSS_WEIGHT
            self.gaussian_sigma = kh.GAUSSIAN_SIGMA

    # -------------------------------------------------------------------------------------
    def forward(
        self,
        features: Dict[str, torch.Tensor],
        proposals: List[torch.Tensor],
        image_shapes: List[Tuple[int, int]],
        targets: Optional[List[Dict[str, torch.Tensor]]] = None,
    ):
        """See :data:`ROI_HEADS_REGISTRY`. Returns ``(results, losses)``."""
        if self.training:
            if targets is None:
                raise ValueError("MultiTaskROIHeads needs targets in training")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
            losses = self._forward_box(
                features, proposals, image_shapes, labels, regression_targets
            )
            pos_proposals, pos_matched = [], []
            for props, lab, idx in zip(proposals, labels, matched_idxs):
                pos = torch.where(lab > 0)[0]
                pos_proposals.append(props[pos])
                pos_matched.append(idx[pos])
            if self.mask_on:
                losses.update(
                    self._forward_mask(features, pos_proposals, image_shapes, targets, pos_matched)
                )
            if self.keypoint_on:
                losses.update(
                    self._forward_keypoint(
                        features, pos_proposals, image_shapes, targets, pos_matched
                    )
                )
            return [], losses

        results = self._forward_box(features, proposals, image_shapes)
        return self.forward_with_given_boxes(features, results, image_shapes), {}

    def forward_with_given_boxes(
        self,
        features: Dict[str, torch.Tensor],
        results: List[Dict[str, torch.Tensor]],
        image_shapes: List[Tuple[int, int]],
    ) -> List[Dict[str, torch.Tensor]]:
        """Run the mask and keypoint heads on given ``results[i]["boxes"]`` (inference)."""
        boxes = [r["boxes"] for r in results]
        if self.mask_on:
            masks = self._forward_mask(features, boxes, image_shapes)
            labels = [
                r.get("labels", torch.ones_like(b[:, 0], dtype=torch.int64))
                for r, b in zip(results, boxes)
            ]
            for r, m in zip(results, maskrcnn_inference(masks, labels)):
                r["masks"] = m
        if self.keypoint_on:
            heatmaps = self._forward_keypoint(features, boxes, image_shapes)
            keypoints = decode_keypoints(
                heatmaps, torch.cat(boxes), self.keypoint_decoder, self.keypoint_score
            )
            # shape[0], not len(): a traced graph keeps the number of boxes dynamic
            for r, kp in zip(results, keypoints.split([b.shape[0] for b in boxes])):
                r["keypoints"] = kp
        return results

    # -------------------------------------------------------------------------------------
    def _forward_box(self, features, proposals, image_shapes, labels=None, regression_targets=None):
        x = self.box_roi_pool(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(self.box_head(x))
        if self.training:
            loss_cls, loss_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            w = self.box_loss_weight
            return {"loss_classifier": loss_cls * w, "loss_box_reg": loss_reg * w}
        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        return [
            {"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)
        ]

    def _forward_mask(self, features, boxes, image_shapes, targets=None, matched_idxs=None):
        """Training: ``{"loss_mask"}`` on positive proposals.

        Inference: mask logits ``(R, C, 28, 28)``."""
        if self.training and any("mask_valid" in t for t in targets):
            # people annotated without a segmentation train the box and keypoint heads only
            keep = [
                (
                    t["mask_valid"][idx]
                    if "mask_valid" in t
                    else torch.ones_like(idx, dtype=torch.bool)
                )
                for t, idx in zip(targets, matched_idxs)
            ]
            boxes = [b[k] for b, k in zip(boxes, keep)]
            matched_idxs = [i[k] for i, k in zip(matched_idxs, keep)]
        x = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
        if not self.training:
            return x
        loss = maskrcnn_loss(
            x, boxes, [t["masks"] for t in targets], [t["labels"] for t in targets], matched_idxs
        )
        return {"loss_mask": loss * self.mask_loss_weight}

    def _forward_keypoint(self, features, boxes, image_shapes, targets=None, matched_idxs=None):
        """Training: ``{"loss_keypoint"}``. Inference: refined heatmaps ``(R, K, 56, 56)``."""
        x = self.keypoint_roi_pool(features, boxes, image_shapes)
        heatmaps = self.keypoint_predictor(self.keypoint_head(x))["heatmaps"]
        if not self.training:
            return heatmaps
        gt = [t["keypoints"][idx] for t, idx in zip(targets, matched_idxs)]
        return {"loss_keypoint": self.keypoint_loss(heatmaps, torch.cat(boxes), torch.cat(gt))}

    def keypoint_loss(
        self, heatmaps: torch.Tensor, rois: torch.Tensor, gt_keypoints: torch.Tensor
    ) -> torch.Tensor:
        """L_key for ``heatmaps (R, K, S, S)`` over ``rois (R, 4)`` and ``gt (R, K, 3)``."""
        size = heatmaps.shape[-1]
        uv, valid = keypoints_to_heatmap_coords(gt_keypoints, rois, size)
        if self.keypoint_loss_type == "softmax_ce":
            loss = keypoint_softmax_ce_loss(heatmaps, encode_onehot_targets(uv, valid, size))
        else:
            target = encode_gaussian_targets(uv, valid, size, self.gaussian_sigma)
            if self.keypoint_loss_type == "gaussian_ce":
                loss = keypoint_gaussian_ce_loss(heatmaps, target, valid)
            else:
                loss = keypoint_gaussian_mse_loss(heatmaps, target, valid)
        return loss * self.keypoint_loss_weight


def _build_box_head(cfg, in_channels: int) -> nn.Module:
    """``MODEL.ROI_BOX_HEAD``: torchvision's ``TwoMLPHead`` for the default 2fc head, else its
    ``FastRCNNConvFCHead`` (NUM_CONV convs with NORM, then NUM_FC fc layers)."""
    bh = cfg.MODEL.ROI_BOX_HEAD
    if bh.NUM_CONV < 0 or bh.NUM_FC < 1:
        raise ValueError(
            f"MODEL.ROI_BOX_HEAD: NUM_CONV must be >= 0 and NUM_FC >= 1 "
            f"(got NUM_CONV={bh.NUM_CONV}, NUM_FC={bh.NUM_FC}); the box predictor reads FC_DIM"
        )
    norm_layer = get_norm(bh.NORM, "MODEL.ROI_BOX_HEAD.NORM")
    res = bh.POOLER_RESOLUTION
    if bh.NUM_CONV == 0 and bh.NUM_FC == 2:  # parameter names fc6/fc7, as before
        return TwoMLPHead(in_channels * res**2, bh.FC_DIM)
    return FastRCNNConvFCHead(
        (in_channels, res, res),
        [bh.CONV_DIM] * bh.NUM_CONV,
        [bh.FC_DIM] * bh.NUM_FC,
        norm_layer=norm_layer,
    )


def build_roi_heads(cfg, in_channels: int) -> nn.Module:
    """Build ``cfg.MODEL.ROI_HEADS.NAME`` from :data:`ROI_HEADS_REGISTRY`."""
    return ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME)(cfg, in_channels)

"""ROI poolers: torchvision's ``MultiScaleRoIAlign`` with detectron2's choice of ROIAlign.

detectron2's ``POOLER_TYPE`` names two conventions of ``torchvision.ops.roi_align``:

* ``"ROIAlign"`` (``aligned=False``, what torchvision's ``MultiScaleRoIAlign`` always does): a box
  corner at image coordinate ``x`` is sampled at feature coordinate ``x * scale``, although feature
  cell ``i`` is centred on image coordinate ``(i + 0.5) / scale``. Pooled features are shifted by
  half a feature stride: 2 px on P2, 16 px on P5, up to a tenth of a small person's box.
* ``"ROIAlignV2"`` (``aligned=True``, detectron2's default): the half-cell offset is subtracted,
  so the features pooled for a box are the ones under it.

:func:`build_pooler` returns an :class:`FPNRoIAlign` for either: torchvision's level assignment
(``canonical_scale`` / ``canonical_level``), scale inference and ROI format, with the
convention's ``aligned`` flag, and ``roi_align`` from :mod:`multitask.modeling.layers.
roi_align_fast` (the same values and gradients as torchvision's, several times faster on CPU;
CUDA keeps torchvision's kernel).
"""

from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import (
    _convert_to_roi_format,
    _filter_input,
    _onnx_merge_levels,
    _setup_scales,
)

from ..layers.roi_align_fast import roi_align_auto
from ..layers.row_gather import capturing_graph, is_channels_last

__all__ = ["POOLER_TYPES", "FPNRoIAlign", "build_pooler"]

POOLER_TYPES = ("ROIAlign", "ROIAlignV2")


class FPNRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` with a choice of ``aligned`` and the fast CPU ``roi_align``.

    Same constructor (plus ``aligned``), attributes and call as torchvision's class
    (``forward(features, boxes, image_shapes)``); with ``aligned=False`` it pools what
    torchvision's class pools.
    """

    def __init__(self, featmap_names: Sequence[str], output_size, sampling_ratio: int, *,
                 aligned: bool = True, **kwargs):
        super().__init__(list(featmap_names), output_size, sampling_ratio, **kwargs)
        self.aligned = bool(aligned)

    def forward(
        self,
        x: Dict[str, Tensor],
        boxes: List[Tensor],
        image_shapes: List[Tuple[int, int]],
    ) -> Tensor:
        # torchvision's own input filtering, scale inference, level rule and roi format, so that
        # only the roi_align call below differs from MultiScaleRoIAlign.forward
        feats = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                feats, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        levels = self.map_levels(boxes)
        shape = (rois.shape[0], feats[0].shape[1]) + tuple(self.output_size)
        # channels-last features give a channels-last output
        fmt = torch.channels_last if is_channels_last(feats[0]) else torch.contiguous_format
        out = torch.empty(shape, dtype=feats[0].dtype, device=feats[0].device,
                          memory_format=fmt).zero_()
        per_level = []
        for level, (feat, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.where(levels == level)[0]
            pooled = roi_align_auto(
                feat,
                rois[idx],
                output_size=self.output_size,
                spatial_scale=scale,
                sampling_ratio=self.sampling_ratio,
                aligned=self.aligned,
            )
            if capturing_graph():  # index assignment would be traced with fixed counts
                per_level.append(pooled.to(out.dtype))
                continue
            # under autocast the levels may come back in different dtypes (as in torchvision)
            out[idx] = pooled.to(out.dtype)
        if per_level:  # torchvision's trace-friendly merge (a scatter per level)
            return _onnx_merge_levels(levels, per_level)
        return out

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", aligned={self.aligned})"


def build_pooler(
    pooler_type: str,
    featmap_names: Sequence[str],
    output_size: int,
    sampling_ratio: int,
    key: str,
    **kwargs,
) -> FPNRoIAlign:
    """The pooler named by a ``POOLER_TYPE`` config value; ``key`` names it in the error."""
    if pooler_type not in POOLER_TYPES:
        raise ValueError(
            f"{key}: unknown pooler type '{pooler_type}', expected one of {POOLER_TYPES}"
        )
    aligned = pooler_type == "ROIAlignV2"
    return FPNRoIAlign(featmap_names, output_size, sampling_ratio, aligned=aligned, **kwargs)

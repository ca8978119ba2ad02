from .keypoint_codec import (
    decode_keypoints,
    encode_gaussian_targets,
    encode_onehot_targets,
    heatmaps_to_keypoints,
    heatmaps_to_keypoints_bicubic,
    keypoint_gaussian_ce_loss,
    keypoint_gaussian_mse_loss,
    keypoint_softmax_ce_loss,
    keypoints_to_heatmap_coords,
    refine_heatmaps,
)
from .keypoint_head import (
    ROI_KEYPOINT_HEAD_REGISTRY,
    OffsetRefinedKeypointHead,
    build_keypoint_head,
)
from .roi_heads import ROI_HEADS_REGISTRY, MultiTaskROIHeads, build_roi_heads

__all__ = [
    "ROI_HEADS_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "MultiTaskROIHeads",
    "OffsetRefinedKeypointHead",
    "build_keypoint_head",
    "build_roi_heads",
    "encode_gaussian_targets",
    "encode_onehot_targets",
    "heatmaps_to_keypoints",
    "heatmaps_to_keypoints_bicubic",
    "decode_keypoints",
    "keypoint_gaussian_ce_loss",
    "keypoint_gaussian_mse_loss",
    "keypoint_softmax_ce_loss",
    "keypoints_to_heatmap_coords",
    "refine_heatmaps",
]

"""Model parts; importing this package fills every registry."""
from .backbone import BACKBONE_REGISTRY, build_backbone
from .meta_arch import META_ARCH_REGISTRY, MultiTaskRCNN, build_model, count_parameters
from .postprocessing import POSTPROCESSOR_REGISTRY, build_postprocessors
from .roi_heads import ROI_HEADS_REGISTRY, ROI_KEYPOINT_HEAD_REGISTRY

__all__ = [
    "BACKBONE_REGISTRY",
    "META_ARCH_REGISTRY",
    "POSTPROCESSOR_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "ROI_KEYPOINT_HEAD_REGISTRY",
    "MultiTaskRCNN",
    "build_backbone",
    "build_model",
    "build_postprocessors",
    "count_parameters",
]

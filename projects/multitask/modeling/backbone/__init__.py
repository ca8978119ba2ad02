from .fpn import BACKBONE_REGISTRY, ResNetFPN, build_backbone, build_resnet_fpn_backbone
from .resnet import ResNet, build_resnet, load_torchvision_resnet_state_dict

__all__ = [
    "BACKBONE_REGISTRY",
    "ResNet",
    "ResNetFPN",
    "build_backbone",
    "build_resnet",
    "build_resnet_fpn_backbone",
    "load_torchvision_resnet_state_dict",
]

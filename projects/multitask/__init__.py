"""multitask: one R-CNN for people -- boxes, masks, offset-refined keypoints, PRN and activities.

``import multitask`` registers every backbone, head, post-processor and builtin dataset.
"""
from .config import add_multitask_config, get_cfg
from .modeling import build_model
from .structures import Instances

__version__ = "0.1.0"
__all__ = ["Instances", "add_multitask_config", "build_model", "get_cfg"]

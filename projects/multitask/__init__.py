"""multitask: one R-CNN for people -- boxes, masks, offset-refined keypoints, PRN and activities."""
from .config import add_multitask_config, get_cfg
from .structures import Instances

__version__ = "0.1.0"

from .activity import UNKNOWN_ACTIVITY, activity_name
from .instances import Instances

__all__ = ["Instances", "UNKNOWN_ACTIVITY", "activity_name"]

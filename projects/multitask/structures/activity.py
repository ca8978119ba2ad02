"""Activity ids as the models output them (``pred_activity``): an index into the activity class
list, or :data:`UNKNOWN_ACTIVITY` when the classifier judged the pose too uncertain."""

from typing import Optional, Sequence

#: ``pred_activity`` of a person whose pose is too uncertain to judge
UNKNOWN_ACTIVITY = -1


def activity_name(activity_id: int, classes: Optional[Sequence[str]]) -> Optional[str]:
    """The class name of ``activity_id``, ``"unknown"`` for a negative id, ``None`` for an id
    without a name in ``classes``."""
    if activity_id < 0:
        return "unknown"
    if classes is not None and activity_id < len(classes):
        return classes[activity_id]
    return None


__all__ = ["UNKNOWN_ACTIVITY", "activity_name"]

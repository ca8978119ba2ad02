"""Online multi-person tracking of the model's detections, with smoothed keypoints and activity.

Library only (numpy in, numpy out; no model, no video I/O)::

    from multitask.config import get_cfg
    from multitask.tracking import PoseTracker

    tracker = PoseTracker(get_cfg(), fps=25.0)      # TRACKING.* keys, see config/defaults.py
    for frame in video:
        inst = model([...])[0]["instances"].to("cpu")
        ids = tracker.update(inst.pred_boxes.tensor.numpy(), inst.scores.numpy(),
                             inst.pred_keypoints.numpy(), inst.activity_scores.numpy())
        for track in tracker.active_tracks:         # confirmed tracks matched in this frame
            track.track_id, track.box, track.smoothed_keypoints, track.activity_label

Parts, usable on their own:

- :mod:`.tracker`: :class:`PoseTracker` (matching, track life cycle, IDs) and :class:`Track`;
- :mod:`.matching`: box IoU, keypoint OKS, the matching cost and the gated optimal assignment;
- :mod:`.smoothing`: :class:`OneEuroFilter` (vectorised) and :class:`KeypointSmoother`;
- :mod:`.activity`: :class:`WindowedActivity`, per-track activity probabilities averaged over a
  sliding window;
- :mod:`.temporal_activity`: :class:`TemporalActivityNet`, a small temporal convolutional model
  over a track's pose sequence, and :class:`TemporalActivity`, its per-track online use
  (``TRACKING.ACTIVITY_MODEL "temporal"``).
"""

from .activity import WindowedActivity
from .matching import assign, box_iou, keypoint_oks, matching_cost
from .smoothing import KeypointSmoother, OneEuroFilter
from .temporal_activity import TemporalActivity, TemporalActivityNet, load_temporal_weights
from .tracker import ACTIVITY_MODELS, PoseTracker, Track, check_detections

__all__ = [
    "PoseTracker",
    "Track",
    "check_detections",
    "KeypointSmoother",
    "OneEuroFilter",
    "WindowedActivity",
    "TemporalActivity",
    "TemporalActivityNet",
    "load_temporal_weights",
    "ACTIVITY_MODELS",
    "assign",
    "box_iou",
    "keypoint_oks",
    "matching_cost",
]

"""Online multi-person tracking of pose detections.

:class:`PoseTracker` takes one frame's detections at a time, as the model outputs them (numpy):
``boxes (N, 4)`` XYXY, ``scores (N,)``, ``keypoints (N, K, 3)`` (x, y, score) and optionally
``activity_scores (N, C)`` (class probabilities), and returns a track ID per detection.

Per frame:

1. detections with a box score below ``min_score`` are ignored (ID -1);
2. every live track predicts its box and keypoints at this frame with a constant velocity (an
   average of its recent motion, from its keypoints or else its box centre; the box keeps its
   size);
3. tracks and detections are paired by the optimal assignment on the cost
   ``w_iou (1 - IoU) + w_oks (1 - OKS)`` of :mod:`.matching` (weights normalised, OKS with the
   keypoint set's sigmas and the predicted box's area, keypoints scored below
   ``keypoint_threshold`` left out); pairs costing more than ``max_cost`` are never paired.
   Matching always compares raw keypoints (the detections' and the tracks' last detected
   ones), never smoothed ones;
4. a matched track takes its detection's box, score and keypoints; a detection left over starts
   a *tentative* track. A tentative track is confirmed at its ``min_hits``-th consecutive
   matched frame and only then gets its ID (1, 2, 3, ... in order of confirmation, never
   reused); it is deleted at its first frame without a match. A confirmed track is deleted at
   its ``max_misses``-th consecutive frame without a match (it coasts through
   ``max_misses - 1`` missed frames and keeps its ID if it is matched again);
5. each matched track's keypoints are smoothed (:class:`~.smoothing.KeypointSmoother`, One-Euro)
   into ``Track.smoothed_keypoints``, and its activity is updated into ``Track.activity_probs``
   and ``Track.activity_label`` by the ``activity_model`` (``TRACKING.ACTIVITY_MODEL``):
   ``"window"`` averages the detections' activity probabilities over a sliding window
   (:class:`~.activity.WindowedActivity`); ``"temporal"`` reads the track's last raw poses
   (keypoints and box) with a temporal model (:class:`~.temporal_activity.TemporalActivity`,
   ``TRACKING.TEMPORAL_*``), and gives the frame's own probabilities until the track has
   ``TRACKING.TEMPORAL_MIN_FRAMES`` frames.

Frames are counted by the calls of :meth:`PoseTracker.update`; a frame's time stamp (seconds,
for the smoothing) is ``timestamp`` when given, else ``frame_index / fps``.
"""

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config.configurable import configurable
from ..structures.keypoints import COCO_PERSON_OKS_SIGMAS
from .activity import WindowedActivity
from .matching import assign, matching_cost
from .smoothing import KeypointSmoother
from .temporal_activity import TemporalActivity

__all__ = ["Track", "PoseTracker", "check_detections", "ACTIVITY_MODELS"]

logger = logging.getLogger(__name__)

# The values of TRACKING.ACTIVITY_MODEL
ACTIVITY_MODELS = ("window", "temporal")
# A temporal model trained at another frame rate than the video's (by more than this fraction)
# reads gaits at another pace: warned about
_FPS_TOLERANCE = 0.2

# Weight of the newest frame-to-frame motion in a track's velocity (exponential average)
_VELOCITY_UPDATE = 0.5
# Keypoints that a track's velocity sample needs in both poses (else the box centre moves it)
_MIN_MOTION_KEYPOINTS = 3


@dataclass(eq=False)
class Track:
    """One tracked person. Arrays are float64; treat them as read-only.

    ``track_id``: the ID (>= 1), -1 while the track is tentative. ``box (4,)`` XYXY, ``score``
    and ``keypoints (K, 3)`` are those of the last matched detection (raw),
    ``smoothed_keypoints (K, 3)`` the One-Euro smoothed keypoints (score column unchanged);
    ``activity_probs (C,)`` the activity probabilities of the tracker's activity model
    (window-averaged, or the temporal model's) and ``activity_label`` their argmax (None and -1
    without activity scores, or, with the temporal model, while the track is shorter than its
    minimum and its frame has no activity scores). ``hits``: consecutive matched frames;
    ``misses``: consecutive frames without a match (0 when matched in the latest frame);
    ``detection_index``: the index of its detection in the latest :meth:`PoseTracker.update`
    call (-1 when missed). ``first_frame`` / ``last_frame``: frame indices of the first and the
    last match; ``timestamp``: time (s) of the last match; ``velocity (2,)``: the person's
    motion (x, y) in pixels per frame (:meth:`observe`). A coasting track (``misses > 0``) keeps
    the values of its last match. ``key``: a serial number of every track, tentative or not,
    that keys its smoothing and activity state.
    """

    key: int
    box: np.ndarray
    score: float
    keypoints: np.ndarray
    smoothed_keypoints: np.ndarray
    first_frame: int
    last_frame: int
    timestamp: float
    track_id: int = -1
    activity_probs: Optional[np.ndarray] = None
    activity_label: int = -1
    hits: int = 1
    misses: int = 0
    detection_index: int = -1
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0

    def predict(self, frame: int) -> Tuple[np.ndarray, np.ndarray]:
        """The box ``(4,)`` and raw keypoints ``(K, 3)`` predicted at frame index ``frame``: both
        moved by ``velocity`` times the frames since the last match (the box keeps its size)."""
        shift = self.velocity * (frame - self.last_frame)
        kps = self.keypoints.copy()
        kps[:, :2] += shift
        return self.box + np.tile(shift, 2), kps

    def observe(self, frame: int, box: np.ndarray, score: float, keypoints: np.ndarray,
                keypoint_threshold: float) -> None:
        """Take a matched detection (``box (4,)``, ``keypoints (K, 3)``) at frame ``frame``.

        The velocity's new sample is the mean displacement of the keypoints scored
        ``>= keypoint_threshold`` in both poses (at least 3; else the box centre's), per frame,
        averaged exponentially with the previous velocity."""
        both = np.minimum(self.keypoints[:, 2], keypoints[:, 2]) >= keypoint_threshold
        if both.sum() >= _MIN_MOTION_KEYPOINTS:
            motion = (keypoints[both, :2] - self.keypoints[both, :2]).mean(axis=0)
        else:
            motion = 0.5 * ((box[:2] + box[2:]) - (self.box[:2] + self.box[2:]))
        motion = motion / max(frame - self.last_frame, 1)
        if self.last_frame == self.first_frame:
            self.velocity = motion  # the track's second frame: its first motion
        else:
            self.velocity = self.velocity + _VELOCITY_UPDATE * (motion - self.velocity)
        self.box, self.score, self.keypoints = box, float(score), keypoints
        self.last_frame = frame
        self.hits = self.hits + 1 if self.misses == 0 else 1
        self.misses = 0


def _array(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: not a numeric array ({e})") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def check_detections(
    boxes,
    scores,
    keypoints,
    activity_scores=None,
    num_keypoints: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """One frame's detections as float64 arrays ``boxes (N, 4)``, ``scores (N,)``,
    ``keypoints (N, K, 3)`` and ``activity_scores (N, C)`` (or None), checked: a wrong shape, a
    count that differs between the arguments, ``K != num_keypoints`` (when given) or a non-finite
    value is a ValueError naming the argument. Empty inputs are N = 0."""
    boxes = _array(boxes, "boxes")
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4) XYXY, got {boxes.shape}")
    n = boxes.shape[0]
    scores = _array(scores, "scores")
    if scores.shape != (n,) and not (n == 0 and scores.size == 0):
        raise ValueError(f"scores: expected shape ({n},), one per box, got {scores.shape}")
    k = num_keypoints
    keypoints = _array(keypoints, "keypoints")
    if n == 0 and keypoints.size == 0:
        keypoints = keypoints.reshape(0, k or 0, 3)
    if (keypoints.ndim != 3 or keypoints.shape[0] != n or keypoints.shape[2] != 3
            or k not in (None, keypoints.shape[1])):
        want = f"({n}, {'K' if k is None else k}, 3)"
        raise ValueError(f"keypoints: expected shape {want} (x, y, score), got {keypoints.shape}")
    if activity_scores is not None:
        activity_scores = _array(activity_scores, "activity_scores")
        if n == 0 and activity_scores.size == 0:
            activity_scores = activity_scores.reshape(0, 0)
        if activity_scores.ndim != 2 or activity_scores.shape[0] != n or (
                n and activity_scores.shape[1] == 0):
            raise ValueError(f"activity_scores: expected shape ({n}, C), got "
                             f"{activity_scores.shape}")
    return boxes, scores.reshape(n), keypoints, activity_scores


class PoseTracker:
    """Online multi-person pose tracker (module docstring).

    ``PoseTracker(cfg)`` reads ``TRACKING.*`` (:meth:`from_config`); keyword arguments override
    them, and ``PoseTracker(min_hits=1)`` without a cfg takes the other values from the default
    config (:func:`multitask.config.configurable.configurable`). ``fps`` (default 30) sets the
    activity window's length in frames and the default time stamps; ``oks_sigmas (K,)`` the
    keypoint set's OKS sigmas (default COCO's 17), and so the ``K`` every frame must have.
    ``activity_model`` is ``"window"`` or ``"temporal"``; the latter needs ``temporal_activity``
    (a :class:`~.temporal_activity.TemporalActivity`, built by :meth:`from_config` from
    ``TRACKING.TEMPORAL_WEIGHTS``), of which the tracker keeps its own copy (:attr:`temporal`:
    the network shared, the per-track state its own).

    Per frame: ``ids = tracker.update(boxes, scores, keypoints, activity_scores=None,
    timestamp=None)`` -> ``(N,)`` int64, the ID of each detection's confirmed track, -1 for a
    detection that is ignored or on a tentative track. Then :attr:`tracks` (the confirmed live
    tracks), :attr:`active_tracks` (those matched in this frame), :meth:`get` and
    :attr:`deleted_ids` (IDs deleted by this frame) describe the state. :meth:`reset` starts
    a new video.
    """

    @configurable
    def __init__(
        self,
        *,
        iou_weight: float,
        oks_weight: float,
        max_cost: float,
        min_hits: int,
        max_misses: int,
        min_score: float,
        keypoint_threshold: float,
        smoothing_min_cutoff: float,
        smoothing_beta: float,
        smoothing_d_cutoff: float,
        activity_window_seconds: float,
        activity_model: str = "window",
        temporal_activity: Optional[TemporalActivity] = None,
        fps: float = 30.0,
        oks_sigmas: Optional[Sequence[float]] = None,
    ):
        if iou_weight < 0 or oks_weight < 0 or iou_weight + oks_weight <= 0:
            raise ValueError(f"TRACKING.IOU_WEIGHT ({iou_weight}) and TRACKING.OKS_WEIGHT "
                             f"({oks_weight}) must be >= 0 and not both 0")
        if int(min_hits) < 1 or int(max_misses) < 1:
            raise ValueError(f"TRACKING.MIN_HITS ({min_hits}) and TRACKING.MAX_MISSES "
                             f"({max_misses}) must be >= 1")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.iou_weight = float(iou_weight) / (iou_weight + oks_weight)
        self.oks_weight = float(oks_weight) / (iou_weight + oks_weight)
        self.max_cost = float(max_cost)
        self.min_hits = int(min_hits)
        self.max_misses = int(max_misses)
        self.min_score = float(min_score)
        self.keypoint_threshold = float(keypoint_threshold)
        self.fps = float(fps)
        sigmas = COCO_PERSON_OKS_SIGMAS if oks_sigmas is None else oks_sigmas
        self.oks_sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
        if self.oks_sigmas.size == 0 or not np.all(self.oks_sigmas > 0):
            raise ValueError(f"oks_sigmas: expected K > 0 positive sigmas, got {sigmas}")
        self.smoother = KeypointSmoother(smoothing_min_cutoff, smoothing_beta,
                                         smoothing_d_cutoff, self.keypoint_threshold)
        self.activity = WindowedActivity(activity_window_seconds, self.fps)
        self.activity_model = str(activity_model)
        self.temporal = self._check_temporal(temporal_activity)
        self.reset()

    def _check_temporal(self, temporal: Optional[TemporalActivity]) -> Optional[TemporalActivity]:
        """The temporal model the activity model needs (None for "window"), checked."""
        if self.activity_model not in ACTIVITY_MODELS:
            raise ValueError(f"TRACKING.ACTIVITY_MODEL must be one of {list(ACTIVITY_MODELS)}, "
                             f"got {self.activity_model!r}")
        if self.activity_model == "window":
            return None
        if temporal is None:
            raise ValueError("TRACKING.ACTIVITY_MODEL is 'temporal' but there is no temporal "
                             "model: set TRACKING.TEMPORAL_WEIGHTS (or pass temporal_activity)")
        if temporal.num_keypoints != self.num_keypoints:
            raise ValueError(f"temporal_activity: reads {temporal.num_keypoints} keypoints, the "
                             f"tracker's keypoint set has {self.num_keypoints}")
        if temporal.fps and abs(self.fps / temporal.fps - 1.0) > _FPS_TOLERANCE:
            pace = "slower" if self.fps > temporal.fps else "faster"
            logger.warning("The temporal activity model (%s) was trained on %g fps clips, the "
                           "video has %g fps: its gaits look %s", temporal.weights_source,
                           temporal.fps, self.fps, pace)
        return temporal.copy()

    @classmethod
    def from_config(cls, cfg, fps: float = 30.0,
                    oks_sigmas: Optional[Sequence[float]] = None) -> Dict:
        """The constructor's arguments from ``TRACKING.*``; ``fps`` (frames per second of the
        video) and ``oks_sigmas`` (None: COCO's person sigmas) are not config keys. With
        ``TRACKING.ACTIVITY_MODEL "temporal"`` the temporal model is built from the config
        (``TRACKING.TEMPORAL_*``, ``MODEL.ACTIVITY.*``) and its weights loaded."""
        t = cfg.TRACKING
        temporal = None
        if t.ACTIVITY_MODEL == "temporal":
            if not t.TEMPORAL_WEIGHTS:
                raise ValueError("TRACKING.ACTIVITY_MODEL is 'temporal' but "
                                 "TRACKING.TEMPORAL_WEIGHTS is empty; give the temporal "
                                 "model's weights file (tools/train_temporal_activity.py)")
            k = len(COCO_PERSON_OKS_SIGMAS if oks_sigmas is None else oks_sigmas)
            temporal = TemporalActivity(cfg, num_keypoints=k)
        return {
            "iou_weight": t.IOU_WEIGHT,
            "oks_weight": t.OKS_WEIGHT,
            "max_cost": t.MAX_COST,
            "min_hits": t.MIN_HITS,
            "max_misses": t.MAX_MISSES,
            "min_score": t.MIN_SCORE,
            "keypoint_threshold": t.KEYPOINT_THRESHOLD,
            "smoothing_min_cutoff": t.SMOOTHING.MIN_CUTOFF,
            "smoothing_beta": t.SMOOTHING.BETA,
            "smoothing_d_cutoff": t.SMOOTHING.D_CUTOFF,
            "activity_window_seconds": t.ACTIVITY_WINDOW_SECONDS,
            "activity_model": t.ACTIVITY_MODEL,
            "temporal_activity": temporal,
            "fps": fps,
            "oks_sigmas": oks_sigmas,
        }

    # ---- state --------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every track and restart frame counting and IDs (a new video)."""
        self._tracks: List[Track] = []
        self._frame = 0
        self._timestamp: Optional[float] = None
        self._next_id = 1
        self._next_key = 0
        self._num_classes: Optional[int] = None
        self.deleted_ids: List[int] = []
        self.smoother.reset()
        self.activity.reset()
        if self.temporal is not None:
            self.temporal.reset()

    @property
    def num_keypoints(self) -> int:
        return int(self.oks_sigmas.shape[0])

    @property
    def frame_index(self) -> int:
        """The index the next :meth:`update` call's frame gets (frames seen so far)."""
        return self._frame

    @property
    def tracks(self) -> List[Track]:
        """The confirmed live tracks (matched in the latest frame or coasting), by ID."""
        return sorted((t for t in self._tracks if t.confirmed), key=lambda t: t.track_id)

    @property
    def active_tracks(self) -> List[Track]:
        """The confirmed tracks matched in the latest frame, by ID."""
        return [t for t in self.tracks if t.misses == 0]

    @property
    def tentative_tracks(self) -> List[Track]:
        """The tracks not confirmed yet (no ID)."""
        return [t for t in self._tracks if not t.confirmed]

    def get(self, track_id: int) -> Optional[Track]:
        """The confirmed live track with this ID, or None."""
        return next((t for t in self._tracks if t.confirmed and t.track_id == int(track_id)),
                    None)

    # ---- per frame ----------------------------------------------------------------------
    def update(self, boxes, scores, keypoints, activity_scores=None,
               timestamp: Optional[float] = None) -> np.ndarray:
        """Track one frame's detections: ``boxes (N, 4)`` XYXY, ``scores (N,)``, ``keypoints
        (N, K, 3)`` (x, y, score), optional ``activity_scores (N, C)`` (class probabilities) and
        ``timestamp`` (seconds, increasing; default ``frame_index / fps``). Returns ``(N,)``
        int64: each detection's track ID, -1 where it is not on a confirmed track."""
        boxes, scores, keypoints, activity_scores = check_detections(
            boxes, scores, keypoints, activity_scores, self.num_keypoints)
        t = self._frame / self.fps if timestamp is None else float(timestamp)
        if self._timestamp is not None and not t > self._timestamp:
            raise ValueError(f"timestamp: {t} s is not after the previous frame's "
                             f"{self._timestamp} s")
        if activity_scores is not None and activity_scores.shape[0]:
            if self._num_classes not in (None, activity_scores.shape[1]):
                raise ValueError(f"activity_scores: {activity_scores.shape[1]} classes, earlier "
                                 f"frames had {self._num_classes}")
            if self.temporal is not None and activity_scores.shape[1] != len(
                    self.temporal.classes):
                raise ValueError(f"activity_scores: {activity_scores.shape[1]} classes, the "
                                 f"temporal activity model has {len(self.temporal.classes)}")
            self._num_classes = activity_scores.shape[1]
        frame = self._frame
        for track in self._tracks:
            track.detection_index = -1
        candidates = np.flatnonzero(scores >= self.min_score)
        matches, missed, new = self._match(frame, boxes[candidates], keypoints[candidates])
        matched = []
        for row, col in matches:
            det = int(candidates[col])
            self._tracks[row].observe(frame, boxes[det].copy(), scores[det],
                                      keypoints[det].copy(), self.keypoint_threshold)
            self._after_match(self._tracks[row], det, t)
            matched.append(self._tracks[row])
        survivors = self._age(missed)
        for col in new:
            det = int(candidates[col])
            survivors.append(self._spawn(frame, t, boxes[det].copy(), scores[det],
                                         keypoints[det].copy()))
            self._after_match(survivors[-1], det, t)
            matched.append(survivors[-1])
        self._update_activity(matched, activity_scores)
        self._tracks = survivors
        self._frame += 1
        self._timestamp = t
        ids = np.full(boxes.shape[0], -1, dtype=np.int64)
        for track in self._tracks:
            if track.detection_index >= 0:
                ids[track.detection_index] = track.track_id
        return ids

    def _match(self, frame: int, boxes: np.ndarray, keypoints: np.ndarray):
        """Optimal pairs (track row, candidate column) of the live tracks' predictions and the
        candidate detections, the unmatched track rows and the unmatched candidate columns."""
        if not self._tracks or boxes.shape[0] == 0:
            return (np.zeros((0, 2), dtype=np.int64), np.arange(len(self._tracks)),
                    np.arange(boxes.shape[0]))
        predicted = [track.predict(frame) for track in self._tracks]
        pred_boxes = np.stack([p[0] for p in predicted])
        pred_kps = np.stack([p[1] for p in predicted])
        cost = matching_cost(pred_boxes, pred_kps, boxes, keypoints, self.oks_sigmas,
                             self.iou_weight, self.oks_weight, self.keypoint_threshold)
        return assign(cost, self.max_cost)

    def _after_match(self, track: Track, det: int, t: float) -> None:
        """Confirmation and smoothing of a track matched to detection ``det``."""
        track.detection_index = det
        track.timestamp = t
        if not track.confirmed and track.hits >= self.min_hits:
            track.track_id = self._next_id
            self._next_id += 1
        track.smoothed_keypoints = self.smoother.smooth(track.key, track.keypoints, t)

    def _update_activity(self, matched: List[Track],
                         activity_scores: Optional[np.ndarray]) -> None:
        """The activity of the tracks matched in this frame (their ``detection_index`` rows of
        ``activity_scores (N, C)``): window-averaged, or the temporal model's on their raw
        keypoints and boxes (one batch)."""
        if self.temporal is None:
            if activity_scores is None:
                return
            for track in matched:
                track.activity_probs, track.activity_label = self.activity.update(
                    track.key, activity_scores[track.detection_index])
            return
        if not matched:
            return
        dets = [track.detection_index for track in matched]
        results = self.temporal.update_many(
            [track.key for track in matched], np.stack([track.keypoints for track in matched]),
            np.stack([track.box for track in matched]),
            None if activity_scores is None else activity_scores[dets])
        for track, (probs, label) in zip(matched, results):
            track.activity_probs, track.activity_label = probs, label

    def _age(self, missed: np.ndarray) -> List[Track]:
        """The live tracks after this frame's misses (``missed``: rows of unmatched tracks):
        tentative ones missed and confirmed ones at ``max_misses`` misses are deleted."""
        missed_rows = set(int(r) for r in missed)
        survivors, deleted = [], []
        for row, track in enumerate(self._tracks):
            if row in missed_rows:
                track.misses += 1
                track.hits = 0
                if not track.confirmed or track.misses >= self.max_misses:
                    deleted.append(track)
                    continue
            survivors.append(track)
        self.smoother.forget(t.key for t in deleted)
        self.activity.forget(t.key for t in deleted)
        if self.temporal is not None:
            self.temporal.forget(t.key for t in deleted)
        self.deleted_ids = sorted(t.track_id for t in deleted if t.confirmed)
        return survivors

    def _spawn(self, frame: int, t: float, box: np.ndarray, score: float,
               keypoints: np.ndarray) -> Track:
        """A new tentative track from a detection."""
        track = Track(key=self._next_key, box=box, score=float(score), keypoints=keypoints,
                      smoothed_keypoints=keypoints.copy(), first_frame=frame, last_frame=frame,
                      timestamp=t)
        self._next_key += 1
        return track

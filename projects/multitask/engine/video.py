"""People over time: run the predictor on every frame of a video and track them.

::

    from multitask.engine.video import VideoRunner, VideoSource

    runner = VideoRunner(cfg)                        # DefaultPredictor(cfg) + TRACKING.* keys
    for record in runner.records("clip.mp4"):        # or a folder of frames, fps=...
        for person in record["people"]:
            person["track_id"], person["keypoints_smoothed"], person["track_activity"]

    with VideoSource("clip.mp4", fps=None) as source:  # frames, fps, checks; see below
        for frame in runner.run(source):             # TrackedFrame: image, instances, record
            ...
        source.stop_reason                           # None, or why it stopped early

Input (:class:`VideoSource`): a video file read with OpenCV, or a folder of image files (sorted by
name, one frame each). The frame rate is the video's own unless ``fps`` is given; a folder has
none, so it needs ``fps``. Bad input raises :class:`VideoInputError` naming the file before any
frame is predicted: a missing path, a file OpenCV cannot open as a video, a video without a
decodable frame, an empty folder, a missing or zero frame rate. A frame whose size differs from the
first frame's (or an unreadable image in a folder) ends the video there with a warning: the frames
before it are returned as usual and :attr:`VideoSource.stop_reason` says what happened.

Per frame (:meth:`VideoRunner.run`), the predictor's people are given to a
:class:`multitask.tracking.PoseTracker` (boxes, scores, keypoints, activity probabilities; time
stamps ``index / fps``) and described by one JSON-ready record::

    {"frame": int (from 0), "time": float (seconds, frame / fps),
     "people": [{"track_id": int (-1: not on a confirmed track),
                 "box": [x0, y0, x1, y1],               # XYXY pixels
                 "score": float,
                 "keypoints": [[x, y, score], ...],     # the model's, K per person (None: no
                 "keypoints_smoothed": [[x, y, score], ...],  # keypoint head); One-Euro smoothed
                 "activity": {"name", "score"} or None,        # this frame's classifier
                 "track_activity": {"name", "score"} or None}, # the track's (windowed average
                ...]}                                          # by default)

in the predictor's order (by score). Coordinates are continuous (``docs/internals.md``), rounded to
3 decimals. ``keypoints_smoothed`` and ``track_activity`` are those of the person's track, also
for a tentative track (ID -1, not confirmed yet); a person on no track (score below
``TRACKING.MIN_SCORE``) has its raw keypoints there and no track activity. An activity's ``name``
is ``"unknown"`` where the classifier abstained (its ``score`` is then the highest probability);
the activities are None without the activity classifier. A track's activity is the tracker's
(``TRACKING.ACTIVITY_MODEL``; by default the per-frame probabilities averaged over
``TRACKING.ACTIVITY_WINDOW_SECONDS``).
"""

import logging
import math
import os
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from ..config.configurable import configurable
from ..data.detection_utils import ImageReadError, read_image
from ..structures.activity import activity_name
from ..tracking import PoseTracker
from .predictor import DefaultPredictor

__all__ = [
    "IMAGE_EXTENSIONS",
    "TrackedFrame",
    "VideoInputError",
    "VideoRunner",
    "VideoSource",
    "tracking_arguments",
]

logger = logging.getLogger(__name__)

#: Files of these extensions are the frames of a folder
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_DECIMALS = 3


class VideoInputError(ValueError):
    """A video (file or folder of frames) that cannot be run; the message names the path."""

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _check_fps(fps: Optional[float]) -> Optional[float]:
    if fps is None:
        return None
    fps = float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    return fps


class VideoSource:
    """The frames of a video file or of a folder of images (module docstring), as BGR uint8
    arrays ``(H, W, 3)``.

    Opening reads the first frame, so a path without frames fails here. Attributes: ``path``,
    ``fps`` (the ``fps`` argument, else the video's), ``num_frames`` (the container's count or the
    folder's files; None when unknown), ``frame_size`` ``(H, W)`` of the first frame,
    ``is_folder``, ``frames_read`` and ``stop_reason`` (None, or why the frames ended early).
    Iterating yields ``(index, image)`` once; :meth:`close` (or ``with``) releases the video.
    """

    def __init__(self, path: str, fps: Optional[float] = None):
        self.path = os.fspath(path)
        fps = _check_fps(fps)
        self.stop_reason: Optional[str] = None
        self.frames_read = 0
        self._cap = None
        self._files: List[str] = []
        if not os.path.exists(self.path):
            raise VideoInputError(self.path, "no such file or folder")
        self.is_folder = os.path.isdir(self.path)
        if self.is_folder:
            self._first = self._open_folder()
        else:
            self._first = self._open_video()
        if fps is None:
            fps = self._own_fps()
        self.fps = fps
        self.frame_size = tuple(self._first.shape[:2])

    # ---- opening -------------------------------------------------------------------------
    def _open_folder(self) -> np.ndarray:
        names = sorted(n for n in os.listdir(self.path) if not n.startswith(".")
                       and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
        self._files = [os.path.join(self.path, n) for n in names]
        self.num_frames: Optional[int] = len(self._files)
        if not self._files:
            raise VideoInputError(self.path, "a folder without image files "
                                  f"({', '.join(IMAGE_EXTENSIONS)}): no frames")
        try:
            return read_image(self._files[0], format="BGR")
        except ImageReadError as e:
            raise VideoInputError(e.file_name, f"cannot read the first frame: {e.reason}") from None

    def _open_video(self) -> np.ndarray:
        if os.path.getsize(self.path) == 0:
            raise VideoInputError(self.path, "empty file (0 bytes), not a video")
        cap = cv2.VideoCapture(self.path)
        if not cap.isOpened():
            cap.release()
            raise VideoInputError(self.path, "cannot be opened as a video (not a video, an "
                                  "unsupported format, or an empty or truncated file)")
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise VideoInputError(self.path, "no frame could be decoded (an empty or corrupt "
                                  "video)")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.num_frames = count if count > 0 else None
        self._cap = cap
        return frame

    def _own_fps(self) -> float:
        if self.is_folder:
            self.close()
            raise VideoInputError(self.path, "a folder of frames has no frame rate: pass --fps")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        if not (math.isfinite(fps) and fps > 0):
            self.close()
            raise VideoInputError(self.path, f"the video gives no frame rate (fps {fps:g}): pass "
                                  "--fps")
        return fps

    # ---- reading -------------------------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self._first is None:
            raise RuntimeError(f"{self.path}: the frames can be read once")
        first, self._first = self._first, None
        frames = self._folder_frames() if self.is_folder else self._video_frames()
        index = 0
        for image in _chain(first, frames):
            if image is None:
                break
            if tuple(image.shape[:2]) != self.frame_size:
                self._stop(f"frame {index} is {image.shape[1]}x{image.shape[0]}, the frames "
                           f"before it {self.frame_size[1]}x{self.frame_size[0]}")
                break
            self.frames_read = index + 1
            yield index, image
            index += 1

    def _video_frames(self) -> Iterator:
        while self._cap is not None:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return
            yield frame

    def _folder_frames(self) -> Iterator:
        for file_name in self._files[1:]:
            try:
                yield read_image(file_name, format="BGR")
            except ImageReadError as e:
                self._stop(f"cannot read frame {os.path.basename(file_name)}: {e.reason}")
                yield None

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        logger.warning("%s: %s; stopping after %d frame(s), which are kept", self.path, reason,
                       self.frames_read)

    def close(self) -> None:
        """Release the video (the frames not read yet are dropped)."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"VideoSource({self.path!r}, fps={self.fps:g}, frames={self.num_frames}, "
                f"size={self.frame_size[1]}x{self.frame_size[0]})")


def _chain(first, rest):
    yield first
    yield from rest


class TrackedFrame(NamedTuple):
    """One frame of :meth:`VideoRunner.run`: its ``index`` and ``time`` (s), the ``image`` (BGR),
    the predictor's ``instances`` (CPU), each instance's ``track_ids (R,)`` and the ``record``
    (module docstring)."""

    index: int
    time: float
    image: np.ndarray
    instances: object
    track_ids: np.ndarray
    record: Dict


def tracking_arguments(cfg) -> Dict:
    """:class:`PoseTracker`'s arguments from ``TRACKING.*``, the frame rate left out; the OKS
    sigmas are ``TEST.KEYPOINT_OKS_SIGMAS`` when set, else COCO's (which need 17 keypoints)."""
    sigmas = [float(s) for s in cfg.TEST.KEYPOINT_OKS_SIGMAS]
    num_keypoints = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
    if sigmas and len(sigmas) != num_keypoints:
        raise ValueError(f"TEST.KEYPOINT_OKS_SIGMAS has {len(sigmas)} sigmas, "
                         f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS is {num_keypoints}")
    if not sigmas and num_keypoints != 17:
        raise ValueError(f"tracking {num_keypoints} keypoints needs their OKS sigmas in "
                         "TEST.KEYPOINT_OKS_SIGMAS (COCO's are for 17)")
    args = PoseTracker.from_config(cfg, oks_sigmas=sigmas or None)
    args.pop("fps")
    return args


class VideoRunner:
    """Predict and track the people of a video, frame by frame (module docstring).

    ``VideoRunner(cfg)`` builds a :class:`DefaultPredictor` from ``cfg`` and reads ``TRACKING.*``
    (:func:`tracking_arguments`) and ``MODEL.ACTIVITY.CLASSES``; ``predictor=`` gives any
    callable ``image (H, W, 3) BGR -> {"instances": Instances}`` instead (the default config then
    gives the rest, :func:`multitask.config.configurable.configurable`). Each video gets a fresh
    :class:`PoseTracker` at the video's frame rate.
    """

    @configurable
    def __init__(self, *, predictor, tracking: Dict, activity_classes: Sequence[str]):
        self.predictor = predictor
        self.tracking = dict(tracking)
        self.activity_classes = list(activity_classes)

    @classmethod
    def from_config(cls, cfg, predictor=None) -> Dict:
        """The constructor's arguments; ``predictor`` None builds ``DefaultPredictor(cfg)``."""
        return {
            "predictor": DefaultPredictor(cfg) if predictor is None else predictor,
            "tracking": tracking_arguments(cfg),
            "activity_classes": list(cfg.MODEL.ACTIVITY.CLASSES),
        }

    def make_tracker(self, fps: float) -> PoseTracker:
        """A new tracker for a video of ``fps`` frames per second."""
        return PoseTracker(**self.tracking, fps=fps)

    def run(self, video, fps: Optional[float] = None) -> Iterator[TrackedFrame]:
        """The :class:`TrackedFrame` of every frame of ``video``: a path (opened here, so bad
        input raises now, and closed at the end; ``fps`` overrides its frame rate) or an open
        :class:`VideoSource` (the caller closes it; ``fps`` must be None)."""
        if isinstance(video, VideoSource):
            if fps is not None:
                raise ValueError("fps is for a path; a VideoSource has its own")
            return self._frames(video, owned=False)
        return self._frames(VideoSource(video, fps=fps), owned=True)

    def records(self, video, fps: Optional[float] = None) -> Iterator[Dict]:
        """The record of every frame (:meth:`run`'s, without the images)."""
        return (frame.record for frame in self.run(video, fps))

    def _frames(self, source: VideoSource, owned: bool) -> Iterator[TrackedFrame]:
        tracker = self.make_tracker(source.fps)
        try:
            for index, image in source:
                instances = self.predictor(image)["instances"].to("cpu")
                time = index / source.fps
                ids, record = self.track(tracker, index, time, instances)
                yield TrackedFrame(index, time, image, instances, ids, record)
        finally:
            if owned:
                source.close()

    # ---- one frame -----------------------------------------------------------------------
    def track(self, tracker: PoseTracker, index: int, time: float, instances):
        """Feed one frame's ``instances`` to ``tracker``; returns the track IDs ``(R,)`` and the
        frame's record."""
        boxes, scores, keypoints, probs, labels = _detections(instances, tracker.num_keypoints)
        ids = tracker.update(boxes, scores, keypoints, probs, timestamp=time)
        on_track = {t.detection_index: t for t in tracker.tracks + tracker.tentative_tracks
                    if t.detection_index >= 0}
        has_keypoints = instances.has("pred_keypoints")
        people = []
        for i in range(len(boxes)):
            track = on_track.get(i)
            smoothed = keypoints[i] if track is None else track.smoothed_keypoints
            activity = None
            if probs is not None:
                activity = self._activity(int(labels[i]), probs[i])
            track_activity = None
            if track is not None and track.activity_probs is not None:
                track_activity = self._activity(track.activity_label, track.activity_probs)
            people.append({
                "track_id": int(ids[i]),
                "box": _rounded(boxes[i]),
                "score": round(float(scores[i]), 4),
                "keypoints": _rounded(keypoints[i]) if has_keypoints else None,
                "keypoints_smoothed": _rounded(smoothed) if has_keypoints else None,
                "activity": activity,
                "track_activity": track_activity,
            })
        return ids, {"frame": int(index), "time": round(float(time), 6), "people": people}

    def _activity(self, label: int, probs: np.ndarray) -> Dict:
        name = activity_name(label, self.activity_classes) or f"activity {label}"
        score = probs[label] if 0 <= label < len(probs) else np.max(probs)
        return {"name": name, "score": round(float(score), 4)}


def _numpy(x) -> np.ndarray:
    if hasattr(x, "tensor"):  # Boxes
        x = x.tensor
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _detections(instances, num_keypoints: int):
    """Boxes ``(R, 4)``, scores ``(R,)``, keypoints ``(R, K, 3)`` (zeros without a keypoint head:
    the tracker then matches boxes alone), activity probabilities ``(R, C)`` and labels ``(R,)``
    (None, None without the activity classifier) of ``instances``."""
    n = len(instances)
    boxes = _numpy(instances.pred_boxes).reshape(n, 4)
    scores = _numpy(instances.scores).reshape(n)
    keypoints = np.zeros((n, num_keypoints, 3))
    if instances.has("pred_keypoints") and n:
        keypoints = _numpy(instances.pred_keypoints).reshape(n, -1, 3)
    probs = labels = None
    if instances.has("activity_scores"):
        probs = _numpy(instances.activity_scores)
        probs = probs.reshape(n, probs.shape[-1] if probs.ndim == 2 else -1)
        labels = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
        if instances.has("pred_activity"):
            labels = _numpy(instances.pred_activity).astype(np.int64).reshape(n)
    return boxes, scores, keypoints, probs, labels


def _rounded(a: np.ndarray) -> List:
    """``a`` as nested lists of floats rounded to 3 decimals."""
    return np.round(np.asarray(a, dtype=np.float64), _DECIMALS).tolist()

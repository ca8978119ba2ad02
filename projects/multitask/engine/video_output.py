"""Outputs of a tracked video (:mod:`.video`): the annotated video and the JSON-lines records.

::

    with VideoSource("clip.mp4") as source, TrackedVideoWriter(
            "vis/clip.mp4", "vis/clip.jsonl", fps=source.fps) as out:
        for frame in runner.run(source):
            out.write(frame.image, frame.record)
    records = read_records("vis/clip.jsonl")           # one dict per frame, in order

The JSON-lines file has one record (:mod:`.video`'s module docstring) per line, written and flushed
frame by frame, so a run that stops early leaves the frames done so far, and the video is finalised
by :meth:`TrackedVideoWriter.close` (or the ``with`` block) whatever happens. A drawn frame
(:func:`draw_tracked_frame`) shows every person's box and skeleton (the smoothed keypoints) in the
colour of its track ID, with ``#ID`` and the track's windowed activity; people not on a confirmed
track are drawn in grey with their raw keypoints and no label.
"""

import json
import logging
import os
from typing import Dict, List, Optional

import cv2
import numpy as np

from ..utils.visualizer import KEYPOINT_THRESHOLD, draw_people, instance_color

__all__ = ["OFF_TRACK_COLOR", "TrackedVideoWriter", "draw_tracked_frame", "read_records"]

logger = logging.getLogger(__name__)

#: BGR colour of the people not on a confirmed track
OFF_TRACK_COLOR = (160, 160, 160)


def _person_keypoints(person: Dict, num_keypoints: int) -> np.ndarray:
    """The keypoints to draw ``(K, 3)``: smoothed on a track, raw off it, none (scores -inf)
    without a keypoint head."""
    kps = person.get("keypoints_smoothed") if person["track_id"] > 0 else None
    kps = kps if kps is not None else person.get("keypoints")
    if kps is None:
        return np.full((num_keypoints, 3), -np.inf)
    return np.asarray(kps, dtype=np.float64).reshape(-1, 3)


def draw_tracked_frame(image: np.ndarray, record: Dict,
                       keypoint_thresh: float = KEYPOINT_THRESHOLD,
                       min_score: float = 0.0) -> np.ndarray:
    """Draw one frame's ``record`` on a copy of ``image`` (BGR, the frame it was made for): the
    people scored at least ``min_score``, confirmed tracks last (on top); keypoints scored below
    ``keypoint_thresh`` are hidden."""
    people = sorted((p for p in record["people"] if p["score"] >= min_score),
                    key=lambda p: p["track_id"])
    num_keypoints = max((len(p["keypoints"]) for p in people if p.get("keypoints")), default=17)
    boxes = np.asarray([p["box"] for p in people], dtype=np.float64).reshape(-1, 4)
    keypoints = np.stack([_person_keypoints(p, num_keypoints) for p in people]) if people else (
        np.zeros((0, num_keypoints, 3)))
    labels, colors = [], []
    for p in people:
        tid = p["track_id"]
        colors.append(instance_color(tid) if tid > 0 else OFF_TRACK_COLOR)
        lines = [f"#{tid}"] if tid > 0 else []
        activity = p.get("track_activity")
        if tid > 0 and activity:
            lines.append(f"{activity['name']} {activity['score']:.2f}")
        labels.append(lines)
    return draw_people(image, boxes, keypoints, labels, colors, keypoint_thresh=keypoint_thresh)


class TrackedVideoWriter:
    """Writes a tracked video's outputs frame by frame (module docstring).

    Args:
        video_path: the annotated video (mp4v codec; its folder is created), or None for none.
        jsonl_path: the JSON-lines records, or None for none.
        fps: frame rate of the annotated video.
        keypoint_thresh, min_score: what :func:`draw_tracked_frame` draws.

    ``write(image, record)`` draws and writes one frame; the video's size is the first frame's.
    ``frames_written`` counts the frames. :meth:`close` finalises both files.
    """

    def __init__(self, video_path: Optional[str], jsonl_path: Optional[str], fps: float,
                 keypoint_thresh: float = KEYPOINT_THRESHOLD, min_score: float = 0.0):
        self.video_path = video_path
        self.jsonl_path = jsonl_path
        self.fps = float(fps)
        self.keypoint_thresh = float(keypoint_thresh)
        self.min_score = float(min_score)
        self.frames_written = 0
        self._video = None
        self._jsonl = None
        if jsonl_path is not None:
            _make_parent(jsonl_path)
            self._jsonl = open(jsonl_path, "w")

    def _open_video(self, width: int, height: int):
        _make_parent(self.video_path)
        writer = cv2.VideoWriter(self.video_path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                 (width, height), True)
        if not writer.isOpened():
            raise IOError(f"{self.video_path}: cannot open an mp4v video writer (OpenCV without "
                          "FFmpeg, or the folder is not writable)")
        return writer

    def write(self, image: np.ndarray, record: Dict) -> None:
        """Draw ``record`` on ``image`` into the video and append it to the JSON-lines file."""
        if self.video_path is not None:
            if self._video is None:
                self._video = self._open_video(image.shape[1], image.shape[0])
            self._video.write(draw_tracked_frame(image, record, self.keypoint_thresh,
                                                 self.min_score))
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
            self._jsonl.flush()
        self.frames_written += 1

    def close(self) -> None:
        """Finalise the video and close the JSON-lines file (idempotent)."""
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None

    def __enter__(self) -> "TrackedVideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_parent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def read_records(path: str) -> List[Dict]:
    """The records of a JSON-lines file written by :class:`TrackedVideoWriter`, in file order;
    a malformed line is a ValueError naming the file and line (blank lines are skipped)."""
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON record ({e.msg})") from None
            if not isinstance(record, dict) or "frame" not in record or "people" not in record:
                raise ValueError(f"{path}:{number}: expected a frame record with 'frame' and "
                                 "'people'")
            records.append(record)
    return records

"""Writing a synthetic clip: the video, its frames, MOTChallenge ground truth and a COCO json.

A clip directory holds::

    clip.mp4            the frames as an MPEG-4 video (OpenCV ``mp4v``; lossy)
    frames/000000.jpg   every frame as a JPEG, to read the clip back frame-exactly
    gt.txt              MOTChallenge ground truth: ``frame,id,x,y,w,h,1,1,1`` per visible person
                        and frame, frames from 1, sorted by frame then id
    annotations.json    COCO person_keypoints json, one image per frame

The boxes of gt.txt and of the json are the same: the tight box of the person's visible part,
``x, y`` 0-based pixel coordinates (MOTChallenge's own ground truth boxes are 1-based and cover
occluded parts too). Per annotation, the json has the still images' fields (see the package
docstring) plus ``track_id`` (the MOT id) and ``visibility`` (visible pixels / pixels the person
covers in the image: occlusion by other people, not truncation at the border); per image
``frame_index`` (from 0) and ``video_fps``; at the top level ``video`` and ``tracks`` (id,
activity, first and last frame index of every track that is visible at least once).
"""

import json
import logging
import os
import time
from typing import NamedTuple

import cv2
import numpy as np

from ...utils.file_io import atomic_write
from .clip import render_clip
from .poses import ACTIVITY_CLASSES
from .scene import DEFAULT_IMAGE_SIZE
from .writer import DEFAULT_MIN_KEYPOINT_AREA, _annotation, _categories

logger = logging.getLogger(__name__)

# Bumped whenever the clip generator's output changes.
VIDEO_GENERATOR_VERSION = "1"
VIDEO_FILENAME = "clip.mp4"
FRAMES_DIRNAME = "frames"
MOT_GT_FILENAME = "gt.txt"
ANNOTATIONS_FILENAME = "annotations.json"


class ClipPaths(NamedTuple):
    """The files of a generated clip."""

    video: str
    frames_dir: str
    gt: str
    annotations: str


def generate_synthetic_clip(out_dir, num_frames, seed, fps=25, image_size=DEFAULT_IMAGE_SIZE,
                            clip_index=0, min_keypoint_area=DEFAULT_MIN_KEYPOINT_AREA,
                            jpeg_quality=92, show_progress=False, **scene_options):
    """Render a clip with :func:`render_clip` and write it into ``out_dir`` (see the module
    docstring; the json is written last, atomically). Deterministic in ``(seed, clip_index)``.

    Args:
        fps: frames per second of the motion and of the video.
        image_size: (H, W).
        min_keypoint_area: persons with a smaller visible area get no keypoints, as in the still
            images.
        show_progress: a tqdm bar over the frames.
        scene_options: the other keyword arguments of :func:`render_clip` (``min_people``,
            ``max_people``, ``arrival_rate``, ``activities``, ``min_person_height``,
            ``max_person_height_frac``, ``min_visible_area``).
    Returns:
        ClipPaths: paths of ``clip.mp4``, ``frames/``, ``gt.txt`` and ``annotations.json``.
    """
    H, W = int(image_size[0]), int(image_size[1])
    paths = ClipPaths(*(os.path.join(out_dir, name) for name in (
        VIDEO_FILENAME, FRAMES_DIRNAME, MOT_GT_FILENAME, ANNOTATIONS_FILENAME)))
    os.makedirs(paths.frames_dir, exist_ok=True)
    logger.info("Generating a synthetic clip of %d frames (%dx%d, %g fps, seed %d, clip %d) "
                "into %s", num_frames, H, W, fps, seed, clip_index, out_dir)
    start = time.perf_counter()
    frames = render_clip(seed, num_frames, fps=fps, image_size=(H, W), clip_index=clip_index,
                         **scene_options)
    images, annotations = [], []
    video = _open_video(paths.video, fps, W, H)
    try:
        for f, (img, persons) in enumerate(_progress(frames, show_progress, num_frames)):
            file_name = f"{FRAMES_DIRNAME}/{f:06d}.jpg"
            _write_jpeg(os.path.join(out_dir, file_name), img, jpeg_quality)
            video.write(img)
            images.append({"id": f + 1, "file_name": file_name, "height": H, "width": W,
                           "frame_index": f, "video_fps": fps})
            for person in sorted(persons, key=lambda p: p["track_id"]):
                ann = _annotation(person, len(annotations) + 1, f + 1, min_keypoint_area)
                ann["track_id"] = int(person["track_id"])
                ann["visibility"] = round(float(person["visibility"]), 4)
                annotations.append(ann)
    finally:
        video.release()
    info = {"description": "multitask synthetic people clip", "version": VIDEO_GENERATOR_VERSION,
            "seed": int(seed), "clip_index": int(clip_index), "num_frames": int(num_frames),
            "fps": fps, "min_keypoint_area": int(min_keypoint_area)}
    atomic_write(paths.gt, lambda fh: fh.write(_mot_lines(annotations)), mode="w")
    atomic_write(paths.annotations,
                 lambda fh: json.dump(_clip_json(info, images, annotations, H, W), fh), mode="w")
    logger.info("Wrote %d frames with %d people (%d tracks) to %s in %.1fs", len(images),
                len(annotations), len({a["track_id"] for a in annotations}), out_dir,
                time.perf_counter() - start)
    return paths


def _open_video(path, fps, W, H):
    """An OpenCV ``mp4v`` writer of (W, H) BGR frames; raises if the codec is unavailable."""
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (W, H))
    if not writer.isOpened():
        raise IOError(f"could not open an mp4v video writer for {path} (OpenCV without FFmpeg?)")
    return writer


def _write_jpeg(path, img, quality):
    """Write ``img`` as a JPEG of ``quality``; raises if OpenCV cannot."""
    if not cv2.imwrite(path, img, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)]):
        raise IOError(f"could not write {path}")


def _progress(frames, show_progress, total):
    """``frames`` wrapped in a tqdm bar when ``show_progress`` and tqdm is installed."""
    if show_progress:
        try:
            from tqdm import tqdm

            frames = tqdm(frames, total=total, desc="synthetic clip", unit="frame")
        except ImportError:  # pragma: no cover
            pass
    return frames


def _number(v):
    """A box coordinate for gt.txt: an integer when integral (boxes of masks are), else 2
    decimals."""
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:.2f}"


def _mot_lines(annotations):
    """gt.txt: ``frame,id,x,y,w,h,1,1,1`` per annotation (annotations sorted by frame, then id)."""
    lines = []
    for ann in annotations:
        box = ",".join(_number(v) for v in ann["bbox"])
        lines.append(f"{ann['image_id']},{ann['track_id']},{box},1,1,1\n")
    return "".join(lines)


def _tracks(annotations):
    """Per track id: activity and the first and last frame index it is visible in."""
    tracks = {}
    for ann in annotations:
        frame = ann["image_id"] - 1
        t = tracks.setdefault(ann["track_id"], {"id": ann["track_id"],
                                                "activity": ann["activity"],
                                                "first_frame": frame})
        t["last_frame"] = frame
    return [tracks[k] for k in sorted(tracks)]


def _clip_json(info, images, annotations, H, W):
    """The COCO dict of a clip (see the module docstring)."""
    return {
        "info": info,
        "licenses": [],
        "video": {"file_name": VIDEO_FILENAME, "fps": info["fps"],
                  "num_frames": info["num_frames"], "height": H, "width": W},
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
        "activity_classes": list(ACTIVITY_CLASSES),
        "tracks": _tracks(annotations),
    }


def read_mot_gt(path):
    """Read a MOTChallenge gt.txt: an int array (N, 2) of ``(frame, id)`` and a float array
    (N, 4) of ``x, y, w, h`` boxes, in file order."""
    with open(path) as f:
        rows = [[float(v) for v in line.split(",")] for line in f if line.strip()]
    if not rows:
        return np.zeros((0, 2), np.int64), np.zeros((0, 4))
    rows = np.array(rows)
    return rows[:, :2].astype(np.int64), rows[:, 2:6]

#!/usr/bin/env python
"""Evaluate people tracked over time on synthetic clips: tracking, keypoint jitter and activity.

    # run the model on every clip (its clip.mp4; --frames: its frames/), then evaluate
    python tools/eval_tracking.py datasets/synthetic_clips --output-dir eval/ \\
        --config-file cfg.yaml MODEL.WEIGHTS model_final.pth
    # evaluate the records tools/demo.py --video wrote (one JSON-lines file per clip, in order)
    python tools/eval_tracking.py clips/clip_000000 clips/clip_000001 --output-dir eval/ \\
        --predictions vis0/clip.jsonl vis1/clip.jsonl

A clip is a directory of ``tools/make_synthetic_clips.py`` (``gt.txt``, ``annotations.json``,
``clip.mp4`` / ``frames/``); a directory without ``gt.txt`` stands for its sub-directories that
have one. Without ``--predictions`` the model runs on each clip (``multitask.engine.video``) and
its records are written to ``<output-dir>/predictions/<clip>.jsonl``, so that the evaluation can
be re-run with ``--predictions`` alone. Config overrides (``KEY VALUE``) trail the command line.

Metrics (per clip and overall), written flat to ``<output-dir>/metrics.json`` (overall keys as
below, per clip ``clips/<clip>/<key>``) and printed as a table:

* ``tracking/*``: py-motmetrics on the confirmed tracks (``track_id > 0``) against ``gt.txt``,
  a pair matching when its box IoU is at least 0.5: ``MOTA``, ``IDF1``, ``ID_switches``,
  ``MOTP_IoU`` (mean IoU of the matches), precision, recall, false positives, misses, ...;
* ``jitter/*``: keypoint jitter of the matched people, over every three consecutive frames in
  which a ground-truth person is matched to the same track: the mean acceleration norm
  ``|k(t+1) - 2 k(t) + k(t-1)|`` of the keypoints (labelled in the ground truth, scored at least
  ``--keypoint-threshold`` by the model) divided by the ground-truth box height, for the raw and
  the smoothed keypoints and for the ground truth itself (``*_accel``); ``jitter/raw`` and
  ``jitter/smoothed`` are the former two over the ground truth's (1: as smooth as the truth);
* ``activity/*``: accuracy over the matched people of the per-frame classifier (``per_frame``)
  and of the track's windowed activity (``windowed``), and per track (``per_track``): a track's
  activity is the class with the highest summed per-frame score over its whole life, its truth
  the activity of the ground-truth person it matched most often. ``unknown`` counts as wrong.
"""
import argparse
import json
import logging
import math
import os
import sys
from collections import Counter, defaultdict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import motmetrics as mm
import numpy as np
import tqdm
from tabulate import tabulate

from multitask.data.synthetic.video import (
    ANNOTATIONS_FILENAME,
    FRAMES_DIRNAME,
    MOT_GT_FILENAME,
    VIDEO_FILENAME,
    read_mot_gt,
)
from multitask.engine.defaults import parse_args_with_trailing_overrides, setup_cfg
from multitask.engine.video import VideoRunner
from multitask.engine.video_output import TrackedVideoWriter, read_records
from multitask.tracking import box_iou
from multitask.utils.file_io import atomic_write
from multitask.utils.logger import setup_logger

logger = logging.getLogger("multitask.eval_tracking")

#: A prediction and a ground-truth box match when their IoU is at least this
IOU_THRESHOLD = 0.5
_MOT_METRICS = {
    "mota": "MOTA", "idf1": "IDF1", "num_switches": "ID_switches", "motp": "MOTP_IoU",
    "idp": "IDP", "idr": "IDR", "precision": "precision", "recall": "recall",
    "num_false_positives": "false_positives", "num_misses": "misses",
    "num_objects": "objects", "num_unique_objects": "GT_tracks",
    "mostly_tracked": "mostly_tracked", "mostly_lost": "mostly_lost",
    "num_fragmentations": "fragmentations", "num_frames": "frames",
}  # fmt: skip
_COUNTS = {"ID_switches", "false_positives", "misses", "objects", "GT_tracks", "mostly_tracked",
           "mostly_lost", "fragmentations", "frames", "samples"}
_TABLE = [
    ("frames", "tracking/frames", "d"), ("GT", "tracking/GT_tracks", "d"),
    ("MOTA", "tracking/MOTA", ".3f"), ("IDF1", "tracking/IDF1", ".3f"),
    ("IDsw", "tracking/ID_switches", "d"), ("FP", "tracking/false_positives", "d"),
    ("FN", "tracking/misses", "d"), ("jitter raw", "jitter/raw", ".2f"),
    ("jitter smoothed", "jitter/smoothed", ".2f"), ("act frame", "activity/per_frame", ".3f"),
    ("act window", "activity/windowed", ".3f"), ("act track", "activity/per_track", ".3f"),
]  # fmt: skip


# ------------------------------------------------------------------------------------------------
# clips and predictions
# ------------------------------------------------------------------------------------------------
class Clip(NamedTuple):
    """A clip's ground truth: ``boxes[f]`` the (ids ``(N,)``, XYWH boxes ``(N, 4)``) of gt.txt at
    frame index ``f`` (from 0); ``people[(f, id)]`` the annotation's ``keypoints (K, 3)``,
    ``height`` and ``activity``; ``activities[id]`` the track's activity."""

    name: str
    path: str
    num_frames: int
    fps: float
    boxes: List[Tuple[np.ndarray, np.ndarray]]
    people: Dict[Tuple[int, int], Dict]
    activities: Dict[int, Optional[str]]


def find_clips(paths: Sequence[str]) -> List[str]:
    """The clip directories of ``paths``: those with a gt.txt, else their sub-directories that
    have one (sorted)."""
    clips = []
    for path in paths:
        if os.path.isfile(os.path.join(path, MOT_GT_FILENAME)):
            clips.append(path)
            continue
        subs = sorted(os.path.join(path, d) for d in os.listdir(path)) if os.path.isdir(
            path) else []
        found = [d for d in subs if os.path.isfile(os.path.join(d, MOT_GT_FILENAME))]
        if not found:
            raise SystemExit(f"{path}: not a clip directory ({MOT_GT_FILENAME} missing) and no "
                             "sub-directory is one")
        clips.extend(found)
    return clips


def load_clip(path: str, name: str) -> Clip:
    """Read a clip's gt.txt and annotations.json."""
    with open(os.path.join(path, ANNOTATIONS_FILENAME)) as f:
        js = json.load(f)
    frame_of = {im["id"]: int(im.get("frame_index", im["id"] - 1)) for im in js["images"]}
    num_frames = len(js["images"])
    first = js["images"][0] if js["images"] else {}
    fps = float(js.get("video", {}).get("fps") or first.get("video_fps") or 0) or None
    ids, xywh = read_mot_gt(os.path.join(path, MOT_GT_FILENAME))
    boxes = []
    for f in range(num_frames):
        rows = ids[:, 0] == f + 1
        boxes.append((ids[rows, 1], xywh[rows]))
    people = {}
    for ann in js["annotations"]:
        kps = np.asarray(ann.get("keypoints") or [], dtype=np.float64).reshape(-1, 3)
        people[(frame_of[ann["image_id"]], int(ann["track_id"]))] = {
            "keypoints": kps, "height": float(ann["bbox"][3]), "activity": ann.get("activity")}
    activities = {int(t["id"]): t.get("activity") for t in js.get("tracks", [])}
    return Clip(name, path, num_frames, fps, boxes, people, activities)


def clip_names(paths: Sequence[str]) -> List[str]:
    """Unique names of the clips: their directory names (``_<i>`` added on clashes)."""
    names, used = [], Counter()
    for p in paths:
        base = os.path.basename(os.path.normpath(p))
        used[base] += 1
        names.append(base if used[base] == 1 else f"{base}_{used[base] - 1}")
    return names


def predict_clip(runner: VideoRunner, clip: Clip, use_frames: bool, out_path: str) -> List[Dict]:
    """Run ``runner`` on the clip's video (or frames) and write its records to ``out_path``."""
    video = os.path.join(clip.path, VIDEO_FILENAME)
    if use_frames or not os.path.isfile(video):
        video = os.path.join(clip.path, FRAMES_DIRNAME)
    fps = clip.fps if os.path.isdir(video) else None
    records = []
    with TrackedVideoWriter(None, out_path, fps or 1.0) as out:
        bar = tqdm.tqdm(total=clip.num_frames, desc=clip.name, unit="frame", mininterval=0.5)
        with bar:
            for record in runner.records(video, fps=fps):
                out.write(None, record)
                records.append(record)
                bar.update(1)
    logger.info("%s: %d frames predicted, records in %s", clip.name, len(records), out_path)
    return records


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def iou_distance(gt_xywh: np.ndarray, hyp_xywh: np.ndarray) -> np.ndarray:
    """``1 - IoU`` of XYWH boxes ``(N, M)``, NaN (no match) where the IoU is below 0.5 (what
    ``motmetrics.distances.iou_matrix`` computes, without its numpy 2 problem)."""
    def xyxy(b):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)

    iou = box_iou(xyxy(gt_xywh), xyxy(hyp_xywh))
    return np.where(iou >= IOU_THRESHOLD, 1.0 - iou, np.nan)


def accumulate(clip: Clip, records: Sequence[Dict]):
    """The clip's ``MOTAccumulator``, the matches ``{(frame, gt id): track id}`` and the tracked
    people ``{(frame, track id): person}``. Frames without a record have no predictions."""
    by_frame = {int(r["frame"]): r for r in records}
    extra = sorted(f for f in by_frame if not 0 <= f < clip.num_frames)
    if extra:
        logger.warning("%s: records of frames %s are outside the clip's %d frames; ignored",
                       clip.name, extra[:5], clip.num_frames)
    missing = clip.num_frames - sum(1 for f in by_frame if 0 <= f < clip.num_frames)
    if missing:
        logger.warning("%s: %d of %d frames have no record: all their people count as missed",
                       clip.name, missing, clip.num_frames)
    acc = mm.MOTAccumulator(auto_id=False)
    tracked = {}
    for f in range(clip.num_frames):
        people = [p for p in by_frame.get(f, {"people": []})["people"] if p["track_id"] > 0]
        hyp = np.asarray([p["box"] for p in people], dtype=np.float64).reshape(-1, 4)
        hyp[:, 2:] -= hyp[:, :2]
        gt_ids, gt_boxes = clip.boxes[f]
        hyp_ids = [int(p["track_id"]) for p in people]
        acc.update(gt_ids.tolist(), hyp_ids, iou_distance(gt_boxes, hyp), frameid=f)
        tracked.update(((f, tid), p) for tid, p in zip(hyp_ids, people))
    events = acc.mot_events
    pairs = events[events["Type"].isin(["MATCH", "SWITCH"])]
    frames = pairs.index.get_level_values(0)
    matches = {(int(f), int(o)): int(h) for f, o, h in zip(frames, pairs["OId"], pairs["HId"])}
    return acc, matches, tracked


def jitter_sums(clip: Clip, matches: Dict, tracked: Dict, keypoint_threshold: float) -> Dict:
    """Sums of the acceleration norms / box height of the raw, smoothed and ground-truth
    keypoints over the matched triples of frames (module docstring), and their count."""
    sums = {"raw": 0.0, "smoothed": 0.0, "gt": 0.0, "count": 0}
    for (f, g), h in matches.items():
        frames = (f - 1, f, f + 1)
        if any(matches.get((t, g)) != h for t in frames):
            continue
        people = [tracked[(t, h)] for t in frames]
        gt = [clip.people.get((t, g)) for t in frames]
        if any(p is None for p in gt) or any(p.get("keypoints") is None for p in people):
            continue
        gt_kps = np.stack([p["keypoints"] for p in gt])
        raw = np.asarray([p["keypoints"] for p in people], dtype=np.float64)
        smoothed = np.asarray([p["keypoints_smoothed"] for p in people], dtype=np.float64)
        if gt_kps.shape != raw.shape:
            raise ValueError(f"{clip.name}: the ground truth has {gt_kps.shape[1]} keypoints, "
                             f"the predictions {raw.shape[1]}")
        valid = (gt_kps[..., 2] > 0).all(0) & (raw[..., 2] >= keypoint_threshold).all(0)
        height = max(gt[1]["height"], 1.0)
        for key, kps in (("raw", raw), ("smoothed", smoothed), ("gt", gt_kps)):
            accel = kps[2, :, :2] - 2.0 * kps[1, :, :2] + kps[0, :, :2]
            sums[key] += float(np.linalg.norm(accel[valid], axis=1).sum()) / height
        sums["count"] += int(valid.sum())
    return sums


def _argmax_vote(votes: Dict[str, float]) -> str:
    return max(sorted(votes), key=lambda name: votes[name]) if votes else "unknown"


def activity_counts(clip: Clip, matches: Dict, tracked: Dict) -> Dict:
    """``[correct, total]`` of the per-frame, windowed and per-track activities (module
    docstring)."""
    counts = {"per_frame": [0, 0], "windowed": [0, 0], "per_track": [0, 0]}
    matched_gt = defaultdict(Counter)
    for (f, g), h in matches.items():
        truth = (clip.people.get((f, g)) or {}).get("activity") or clip.activities.get(g)
        matched_gt[h][g] += 1
        person = tracked[(f, h)]
        for key, field in (("per_frame", "activity"), ("windowed", "track_activity")):
            if truth is not None and person.get(field):
                counts[key][0] += int(person[field]["name"] == truth)
                counts[key][1] += 1
    votes = defaultdict(lambda: defaultdict(float))
    has_activity = set()
    for (_, h), person in tracked.items():
        if person.get("activity"):
            has_activity.add(h)
            if person["activity"]["name"] != "unknown":
                votes[h][person["activity"]["name"]] += float(person["activity"]["score"])
    for h, gts in matched_gt.items():
        truth = clip.activities.get(gts.most_common(1)[0][0])
        if truth is not None and h in has_activity:
            counts["per_track"][0] += int(_argmax_vote(votes[h]) == truth)
            counts["per_track"][1] += 1
    return counts


def _ratio(a: float, b: float) -> Optional[float]:
    return a / b if b else None


def derived_metrics(jitter: Dict, activity: Dict) -> Dict[str, Optional[float]]:
    """The ``jitter/*`` and ``activity/*`` metrics of summed jitter and activity counts."""
    n = jitter["count"]
    out = {
        "jitter/raw": _ratio(jitter["raw"], jitter["gt"]),
        "jitter/smoothed": _ratio(jitter["smoothed"], jitter["gt"]),
        "jitter/raw_accel": _ratio(jitter["raw"], n),
        "jitter/smoothed_accel": _ratio(jitter["smoothed"], n),
        "jitter/gt_accel": _ratio(jitter["gt"], n),
        "jitter/samples": n,
    }
    for key, (correct, total) in activity.items():
        out[f"activity/{key}"] = _ratio(correct, total)
        out[f"activity/{key}_count"] = total
    return out


def tracking_metrics(accs: Sequence, names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """``{clip name or "OVERALL": {"tracking/<metric>": value}}`` from py-motmetrics."""
    mh = mm.metrics.create()
    summary = mh.compute_many(list(accs), metrics=list(_MOT_METRICS), names=list(names),
                              generate_overall=True)
    out = {}
    for name, row in summary.iterrows():
        values = {}
        for metric, key in _MOT_METRICS.items():
            v = float(row[metric])
            if metric == "motp":
                v = 1.0 - v  # motmetrics' MOTP is the mean distance, 1 - IoU here
            values[f"tracking/{key}"] = v
        out[str(name)] = values
    return out


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _clean(key: str, value):
    """JSON-ready: NaN and inf become None, counts ints."""
    if value is None or not math.isfinite(float(value)):
        return None
    return int(value) if key.split("/")[-1] in _COUNTS or key.endswith("_count") else float(value)


def format_table(rows: Dict[str, Dict]) -> str:
    """The table of the clips' (and the overall) metrics."""
    body = []
    for name, metrics in rows.items():
        line = [name]
        for _, key, fmt in _TABLE:
            v = metrics.get(key)
            line.append("-" if v is None else format(int(v) if fmt == "d" else float(v), fmt))
        body.append(line)
    return tabulate(body, headers=["clip"] + [h for h, _, _ in _TABLE], disable_numparse=True)


def evaluate(clips: Sequence[Clip], records: Sequence[Sequence[Dict]],
             keypoint_threshold: float) -> Dict[str, Dict]:
    """``{clip name ..., "OVERALL": {flat metric: value}}`` of the clips and their records."""
    accs, per_clip = [], {}
    total_jitter = {"raw": 0.0, "smoothed": 0.0, "gt": 0.0, "count": 0}
    total_activity = {"per_frame": [0, 0], "windowed": [0, 0], "per_track": [0, 0]}
    for clip, recs in zip(clips, records):
        acc, matches, tracked = accumulate(clip, recs)
        jitter = jitter_sums(clip, matches, tracked, keypoint_threshold)
        activity = activity_counts(clip, matches, tracked)
        accs.append(acc)
        per_clip[clip.name] = derived_metrics(jitter, activity)
        for key in total_jitter:
            total_jitter[key] += jitter[key]
        for key, (correct, total) in activity.items():
            total_activity[key][0] += correct
            total_activity[key][1] += total
    tracking = tracking_metrics(accs, [c.name for c in clips])
    rows = {name: {**tracking[name], **metrics} for name, metrics in per_clip.items()}
    rows["OVERALL"] = {**tracking["OVERALL"], **derived_metrics(total_jitter, total_activity)}
    return {name: {k: _clean(k, v) for k, v in metrics.items()} for name, metrics in rows.items()}


def flat_metrics(rows: Dict[str, Dict]) -> Dict[str, Optional[float]]:
    """metrics.json's content: the overall metrics, then ``clips/<clip>/<metric>``."""
    out = dict(rows["OVERALL"])
    for name, metrics in rows.items():
        if name != "OVERALL":
            out.update({f"clips/{name}/{k}": v for k, v in metrics.items()})
    return out


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def get_parser() -> argparse.ArgumentParser:
    """The command line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("clips", nargs="+", metavar="CLIP", help="clip directories (or their parent)")
    p.add_argument("--output-dir", required=True, help="metrics.json (and predictions/) go here")
    p.add_argument("--predictions", nargs="+", metavar="JSONL",
                   help="records per clip, in the clips' order (tools/demo.py --video's "
                        ".jsonl); without them the model runs")
    p.add_argument("--config-file", default="", metavar="FILE", help="the model's config")
    p.add_argument("--frames", action="store_true",
                   help="run the model on the clips' frames/ (exact) instead of clip.mp4 (lossy)")
    p.add_argument("--keypoint-threshold", type=float, default=None,
                   help="keypoints scored below this are left out of the jitter (default "
                        "TRACKING.KEYPOINT_THRESHOLD)")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides (the '--opts' may be left out)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv``; the first token shaped like a config key that is not an existing path
    starts the config overrides."""
    return parse_args_with_trailing_overrides(
        get_parser(), argv, ("--output-dir", "--config-file", "--keypoint-threshold"))


def load_records(args, cfg, clips: Sequence[Clip]) -> List[List[Dict]]:
    """The records of every clip: read from ``--predictions``, else predicted by the model."""
    if args.predictions:
        if len(args.predictions) != len(clips):
            raise SystemExit(f"--predictions: {len(args.predictions)} files for {len(clips)} "
                             "clips; give one per clip, in the clips' order")
        return [read_records(path) for path in args.predictions]
    runner = VideoRunner(cfg)
    out_dir = os.path.join(args.output_dir, "predictions")
    return [predict_clip(runner, clip, args.frames, os.path.join(out_dir, clip.name + ".jsonl"))
            for clip in clips]


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Optional[float]]:
    """Evaluate, print the table and write metrics.json; returns its content."""
    args = parse_args(argv)
    setup_logger(name="multitask")
    cfg = setup_cfg(args)
    threshold = args.keypoint_threshold
    if threshold is None:
        threshold = cfg.TRACKING.KEYPOINT_THRESHOLD
    paths = find_clips(args.clips)
    clips = [load_clip(p, n) for p, n in zip(paths, clip_names(paths))]
    records = load_records(args, cfg, clips)
    rows = evaluate(clips, records, threshold)
    print(format_table(rows))
    metrics = flat_metrics(rows)
    os.makedirs(args.output_dir, exist_ok=True)
    out = os.path.join(args.output_dir, "metrics.json")
    atomic_write(out, lambda f: json.dump(metrics, f, indent=1), mode="w")
    print(f"Wrote {out}")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])

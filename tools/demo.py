#!/usr/bin/env python
"""Run a multitask model on images or a video; draw and/or save the predictions.

    # images: files, globs (quote them) and folders, expanded and sorted; results into a folder
    python tools/demo.py --config-file cfg.yaml --input img1.jpg 'photos/*.jpg' more_photos/ \\
        --output vis/ --json MODEL.WEIGHTS model_final.pth
    # no --output: one summary line per image, nothing written
    python tools/demo.py --config-file cfg.yaml --input img.jpg MODEL.WEIGHTS model_final.pth
    # a video (or a folder of frames, with --fps): people tracked over time -> vis/clip.mp4 with
    # track IDs, smoothed skeletons and activities, and vis/clip.jsonl (one record per frame)
    python tools/demo.py --config-file cfg.yaml --video clip.mp4 --output vis/ \\
        MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu
    # an exported model (tools/export_model.py) run by onnxruntime
    python tools/demo.py --config-file output/export/config.yaml --backend onnxruntime \\
        --input img.jpg --output vis/

Config overrides (``KEY VALUE`` pairs, as for ``tools/train_net.py``) go at the end, or after
``--opts`` (detectron2's demo spelling); the first ``KEY.SUBKEY`` token ends the ``--input`` list.
``--confidence-threshold`` (default 0.5) sets ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` and the
drawing threshold (it wins over an override of that key).

Outputs (``--output``):

* images: ``--output`` is a folder (created; required when there are several inputs): one
  drawing per input, named like the input (``.png`` when the input's extension is not one OpenCV
  writes well; ``_1``, ``_2``... appended on name clashes). With a single input, ``--output`` may
  also be a file name with an image extension.
* video (``--video`` / ``--video-input``: a video file, or a folder of frames in name order): the
  people are tracked over time (``multitask.engine.video``; ``TRACKING.*`` config keys).
  ``--output`` is a folder (``<folder>/<video stem>.mp4``) or a file name (its extension becomes
  ``.mp4``); codec mp4v, the input's fps and frame size. Each person is drawn in the colour of
  their track with ``#ID``, the smoothed skeleton and the track's windowed activity (people not
  on a confirmed track in grey). Next to it, ``<stem>.jsonl``: one JSON record per frame,
  ``{"frame", "time", "people": [{"track_id", "box", "score", "keypoints",
  "keypoints_smoothed", "activity", "track_activity"}, ...]}`` (``tools/eval_tracking.py
  --predictions`` reads it). The frame rate is the video's; ``--fps`` overrides it and is needed
  for a folder of frames or a video that has none. A missing, unreadable or empty video is an
  error; a frame of another size ends the video there with a warning (the frames before it are
  written).
* ``--json`` (needs ``--output``): COCO results (a list of dicts from
  ``multitask.evaluation.instances_to_coco_json``: ``image_id``, ``category_id``, ``bbox`` XYWH,
  ``score``, ``segmentation`` (compressed RLE), ``keypoints`` ``[x, y, score] * 17`` in COCO's
  pixel-index convention, ``activity_id`` / ``activity`` / ``activity_score`` when the model has
  the activity post-processor). One file per image, next to its drawing (``<name>.json``);
  ``image_id`` is the file name's stem when it is an integer (COCO's ``000000000139.jpg`` -> 139),
  else the image's index in the sorted input list. For a video, one file per frame:
  ``<output stem>_frames/000000.json``, ``000001.json``, ... with ``image_id`` = frame index.

Unreadable images (missing, empty, corrupt, not an image) are logged one line each and skipped.
The exit status is 0 when at least one input was processed, 1 when none could be.
"""
import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from multitask.data import ImageReadError, read_image
from multitask.engine import DefaultPredictor
from multitask.engine.defaults import parse_args_with_trailing_overrides, seed_all, setup_cfg
from multitask.engine.predictor import PREDICTOR_BACKENDS
from multitask.engine.video import VideoInputError, VideoRunner, VideoSource
from multitask.engine.video_output import TrackedVideoWriter
from multitask.evaluation import instances_to_coco_json
from multitask.structures import activity_name
from multitask.utils.file_io import expand_inputs
from multitask.utils.logger import setup_logger
from multitask.utils.visualizer import KEYPOINT_THRESHOLD, draw_instance_predictions

logger = logging.getLogger("multitask.demo")

# extensions written as they are; anything else is written as .png
_WRITABLE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
_VALUE_OPTIONS = (
    "--config-file", "--output", "--video-input", "--video", "--confidence-threshold",
    "--keypoint-threshold", "--fps", "--backend",
)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 1)[1],
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--input",
        nargs="+",
        metavar="PATH",
        help="image files, glob patterns (quote them) and/or folders (their files, not recursive)",
    )
    src.add_argument("--video-input", "--video", metavar="PATH",
                     help="a video file or a folder of frames: track the people over time")
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="folder (or, for one input, file) to write drawings to; absent: print a summary",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum person score, applied to MODEL.ROI_HEADS.SCORE_THRESH_TEST and to drawing",
    )
    parser.add_argument(
        "--keypoint-threshold",
        type=float,
        default=KEYPOINT_THRESHOLD,
        help="keypoints scoring below this are not drawn (the score MODEL.ROI_KEYPOINT_HEAD."
        "SCORE names: the heatmap logit by default, a probability with 'prob')",
    )
    parser.add_argument(
        "--json", action="store_true", help="also write COCO-results json (see the docs above)"
    )
    parser.add_argument(
        "--backend", choices=PREDICTOR_BACKENDS, default="pytorch",
        help="run the PyTorch model (default) or a graph written by tools/export_model.py "
        "(give its config.yaml as --config-file; MODEL.WEIGHTS there names the graph)",
    )
    parser.add_argument(
        "--fps", type=float, default=None,
        help="frame rate of the video (default: the video's own; needed for a folder of frames)",
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu "
        "(the '--opts' itself may be left out: overrides may simply trail the command line)",
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv``; the first token shaped like a config key (``MODEL.WEIGHTS``) that is not an
    existing path starts the overrides, so they can trail a ``--input`` list."""
    parser = get_parser()
    args = parse_args_with_trailing_overrides(parser, argv, _VALUE_OPTIONS)
    if args.json and not args.output:
        parser.error("--json needs --output (the folder or file the results go to)")
    if args.fps is not None and not (np.isfinite(args.fps) and args.fps > 0):
        parser.error(f"--fps must be a positive number, got {args.fps}")
    return args


def build_cfg(args):
    cfg = setup_cfg(args, freeze=False)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    return cfg


# ------------------------------------------------------------------------------------------------
# inputs and output names (expand_inputs: multitask.utils.file_io)
# ------------------------------------------------------------------------------------------------
def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in _WRITABLE_EXTS


def output_names(files: Sequence[str], output: str) -> List[str]:
    """The drawing's path for each input (folder mode, or one file)."""
    if len(files) == 1 and _is_image_name(output) and not os.path.isdir(output):
        return [output]
    used, names = set(), []
    for f in files:
        base = os.path.basename(f)
        stem, ext = os.path.splitext(base)
        ext = ext if ext.lower() in _WRITABLE_EXTS else ".png"
        name, k = stem + ext, 0
        while name.lower() in used:
            k += 1
            name = f"{stem}_{k}{ext}"
        used.add(name.lower())
        names.append(os.path.join(output, name))
    return names


def image_id_of(path: str, index: int) -> int:
    stem = os.path.splitext(os.path.basename(path))[0]
    return int(stem) if stem.isdigit() else index


def summarize(name: str, instances, activity_classes, seconds: float) -> str:
    n = len(instances)
    text = f"{name}: {n} {'person' if n == 1 else 'people'} in {seconds:.2f}s"
    if n:
        scores = instances.scores.tolist()
        text += " (scores " + ", ".join(f"{s:.2f}" for s in scores[:5])
        text += ", ..." if n > 5 else ""
        text += ")"
        if instances.has("pred_activity"):
            names = [
                activity_name(a, activity_classes) or f"activity {a}"
                for a in instances.pred_activity.tolist()
            ]
            text += "; activities: " + ", ".join(f"{k} {v}" for k, v in Counter(names).items())
    return text


def write_json(path: str, results: List[Dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f)


# ------------------------------------------------------------------------------------------------
# runs
# ------------------------------------------------------------------------------------------------
class Demo:
    def __init__(self, cfg, args):
        self.cfg = cfg
        self.args = args
        self.predictor = DefaultPredictor(cfg, backend=args.backend)
        self.activity_classes = list(cfg.MODEL.ACTIVITY.CLASSES)
        self.keypoint_coord_offset = cfg.TEST.KEYPOINT_COORD_OFFSET

    def predict(self, image: np.ndarray):
        return self.predictor(image)["instances"].to("cpu")

    def draw(self, image: np.ndarray, instances) -> np.ndarray:
        return draw_instance_predictions(
            image,
            instances,
            score_thresh=self.args.confidence_threshold,
            keypoint_thresh=self.args.keypoint_threshold,
            activity_classes=self.activity_classes,
        )

    def to_json(self, instances, image_id: int) -> List[Dict]:
        return instances_to_coco_json(instances, image_id, activity_classes=self.activity_classes,
                                      keypoint_coord_offset=self.keypoint_coord_offset)

    # --------------------------------------------------------------------------------------
    def run_images(self, patterns: Sequence[str]) -> Tuple[int, List[str]]:
        args = self.args
        files, unmatched = expand_inputs(patterns)
        for p in unmatched:
            logger.warning("--input %s: no files found", p)
        if not files:
            logger.error("No input files found")
            return 0, list(unmatched)
        outputs = None
        if args.output:
            if len(files) > 1 and _is_image_name(args.output) and not os.path.isdir(args.output):
                raise SystemExit(
                    f"--output {args.output}: {len(files)} inputs need an output folder, "
                    "not a file name"
                )
            outputs = output_names(files, args.output)
            os.makedirs(os.path.dirname(os.path.abspath(outputs[0])), exist_ok=True)
        logger.info("%d input file(s)", len(files))
        processed, skipped = 0, list(unmatched)
        for idx, path in enumerate(tqdm.tqdm(files, desc="images", unit="img", mininterval=0.5)):
            try:
                image = read_image(path, format="BGR")
            except ImageReadError as e:
                logger.warning("Skipping %s: %s", path, e.reason)
                skipped.append(path)
                continue
            start = time.perf_counter()
            instances = self.predict(image)
            seconds = time.perf_counter() - start
            if outputs is None:
                logger.info(summarize(path, instances, self.activity_classes, seconds))
            else:
                out_path = outputs[idx]
                if not cv2.imwrite(out_path, self.draw(image, instances)):
                    raise SystemExit(f"Cannot write {out_path}")
                if args.json:
                    results = self.to_json(instances, image_id_of(path, idx))
                    write_json(os.path.splitext(out_path)[0] + ".json", results)
                logger.debug(summarize(path, instances, self.activity_classes, seconds))
            processed += 1
        return processed, skipped

    def video_outputs(self, path: str) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """The annotated video, the JSON-lines records and the per-frame COCO json folder of the
        video ``path`` (None each when not asked for)."""
        args = self.args
        if not args.output:
            return None, None, None
        if os.path.isdir(args.output) or not os.path.splitext(args.output)[1]:
            stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
            out_video = os.path.join(args.output, stem + ".mp4")
        else:
            out_video = os.path.splitext(args.output)[0] + ".mp4"
        stem = os.path.splitext(out_video)[0]
        return out_video, stem + ".jsonl", (stem + "_frames") if args.json else None

    def run_video(self, source: VideoSource) -> Tuple[int, List[str]]:
        """Track the people of an open video (closed here) and write its outputs."""
        args = self.args
        out_video, jsonl, frames_dir = self.video_outputs(source.path)
        if frames_dir is not None:
            os.makedirs(frames_dir, exist_ok=True)
        runner = VideoRunner(self.cfg, predictor=self.predictor)
        tracks, n_people = set(), 0
        start = time.perf_counter()
        with source, TrackedVideoWriter(
            out_video, jsonl, source.fps, args.keypoint_threshold, args.confidence_threshold
        ) as out, tqdm.tqdm(
            total=source.num_frames, desc="frames", unit="frame", mininterval=0.5
        ) as bar:
            for frame in runner.run(source):
                out.write(frame.image, frame.record)
                if frames_dir is not None:
                    write_json(os.path.join(frames_dir, f"{frame.index:06d}.json"),
                               self.to_json(frame.instances, frame.index))
                tracks.update(int(t) for t in frame.track_ids if t > 0)
                n_people += len(frame.instances)
                bar.update(1)
        n_frames = source.frames_read
        logger.info(
            "%s: %d frames (%.1f fps) in %.1fs, %.2f people per frame, %d track(s)",
            source.path, n_frames, source.fps, time.perf_counter() - start,
            n_people / max(n_frames, 1), len(tracks),
        )
        if source.stop_reason:
            logger.warning("%s: stopped early (%s); the %d frame(s) before it are written",
                           source.path, source.stop_reason, n_frames)
        for what, path in (("video", out_video), ("records", jsonl), ("json files", frames_dir)):
            if path is not None:
                logger.info("Wrote %s: %s", what, path)
        return 1, []


def open_video_input(args) -> Optional[VideoSource]:
    """The ``--video-input`` source, opened; None (the reason logged) when it cannot be run."""
    try:
        return VideoSource(args.video_input, fps=args.fps)
    except VideoInputError as e:
        logger.error("Cannot run %s", e)
        return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; the exit status (0: at least one input processed)."""
    args = parse_args(argv)
    setup_logger(name="multitask")
    setup_logger(name="fvcore")
    logger.info("Arguments: %s", vars(args))
    cfg = build_cfg(args)
    if cfg.SEED >= 0:
        seed_all(cfg.SEED)
    source = open_video_input(args) if args.video_input else None
    if args.video_input and source is None:
        logger.info("Done: 0 video(s) processed, 1 skipped: %s", args.video_input)
        return 1
    try:
        demo = Demo(cfg, args)
    except BaseException:
        if source is not None:
            source.close()
        raise
    base_logger = logging.getLogger("multitask")
    with logging_redirect_tqdm(loggers=[base_logger]):
        for h in base_logger.handlers:  # tqdm's console handler does not copy the INFO level
            if not isinstance(h, logging.FileHandler) and h.level == logging.NOTSET:
                h.setLevel(logging.INFO)
        if args.video_input:
            processed, skipped = demo.run_video(source)
            what = "video"
        else:
            processed, skipped = demo.run_images(args.input)
            what = "image"
    logger.info(
        "Done: %d %s(s) processed, %d skipped%s%s",
        processed,
        what,
        len(skipped),
        (": " + ", ".join(skipped)) if skipped else "",
        f"; results in {args.output}" if args.output and processed else "",
    )
    return 0 if processed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

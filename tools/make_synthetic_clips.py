#!/usr/bin/env python
"""Generate synthetic video clips of people with tracking and activity ground truth.

    python tools/make_synthetic_clips.py --output datasets/synthetic_clips --num-clips 10
    python tools/make_synthetic_clips.py --output /tmp/clips --num-clips 2 --num-frames 24 --fps 12

Writes ``<output>/clip_000000/ ...``, each with ``clip.mp4``, ``frames/000000.jpg ...``,
MOTChallenge ``gt.txt`` (``frame,id,x,y,w,h,1,1,1``) and a COCO ``annotations.json`` with one image
per frame and a ``track_id`` and ``activity`` per person. Clip ``i`` is drawn from
``(--seed, i)``, so the same arguments always give the same files and a longer run only adds
clips. See ``multitask.data.synthetic.video`` for the conventions.
"""
import argparse
import json
import logging
import os
import sys

from multitask.data.synthetic import DEFAULT_IMAGE_SIZE, generate_synthetic_clip


def get_parser():
    """The command line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--num-clips", type=int, default=4)
    p.add_argument("--num-frames", type=int, default=100)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=DEFAULT_IMAGE_SIZE[0])
    p.add_argument("--width", type=int, default=DEFAULT_IMAGE_SIZE[1])
    p.add_argument("--min-people", type=int, default=1, help="people in the first frame")
    p.add_argument("--max-people", type=int, default=4, help="people in the first frame")
    p.add_argument("--arrival-rate", type=float, default=0.5,
                   help="walkers and runners entering the image per second")
    p.add_argument("--min-keypoint-area", type=float, default=32 * 32,
                   help="people with a smaller visible area get no keypoints, as in COCO; "
                        "0 labels everyone")
    return p


def _progress(it):
    """``it`` with a tqdm progress bar (when tqdm is installed)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return it
    return tqdm(it, desc="synthetic clips", unit="clip")


def _summary(paths):
    """One line about a written clip: its directory, frames, tracks and annotations."""
    with open(paths.annotations) as f:
        js = json.load(f)
    return (f"{os.path.dirname(paths.annotations)}: {len(js['images'])} frames, "
            f"{len(js['tracks'])} tracks, {len(js['annotations'])} boxes")


def main(argv=None):
    """Write the clips and print what was written; returns their :class:`ClipPaths`."""
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    fps = int(args.fps) if float(args.fps).is_integer() else args.fps
    written = []
    for i in _progress(range(args.num_clips)):
        written.append(generate_synthetic_clip(
            os.path.join(args.output, f"clip_{i:06d}"), num_frames=args.num_frames,
            seed=args.seed, clip_index=i, fps=fps, image_size=(args.height, args.width),
            min_people=args.min_people, max_people=args.max_people,
            arrival_rate=args.arrival_rate, min_keypoint_area=args.min_keypoint_area,
        ))
    for paths in written:
        print(_summary(paths))
    print(f"Wrote {len(written)} clips of {args.num_frames} frames ({args.height}x{args.width}, "
          f"{fps} fps) to {args.output}: each clip.mp4, frames/, gt.txt and annotations.json")
    return written


if __name__ == "__main__":
    main(sys.argv[1:])

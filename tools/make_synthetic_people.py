#!/usr/bin/env python
"""Generate a synthetic "crowded people" dataset in COCO person_keypoints format.

    python tools/make_synthetic_people.py --out datasets/synthetic_people/train --num-images 500
    python tools/make_synthetic_people.py --out /tmp/synth --num-images 8 --seed 3 --height 256

Writes ``<out>/images/000000.jpg ...`` and ``<out>/annotations.json`` (boxes, visible-part RLE
masks, 17 COCO keypoints and an ``activity`` per person). The same arguments always give the same
files. See the docstring of ``multitask.data.synthetic`` for the design and conventions.
"""
import argparse
import logging
import os
import sys

from multitask.data.synthetic import DEFAULT_IMAGE_SIZE, generate_synthetic_people


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num-images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--height", type=int, default=DEFAULT_IMAGE_SIZE[0])
    p.add_argument("--width", type=int, default=DEFAULT_IMAGE_SIZE[1])
    p.add_argument("--min-people", type=int, default=1)
    p.add_argument("--max-people", type=int, default=4)
    p.add_argument("--min-keypoint-area", type=float, default=32 * 32,
                   help="people with a smaller visible area get no keypoints, as in COCO; "
                        "0 labels everyone")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    json_path = generate_synthetic_people(
        args.out, num_images=args.num_images, seed=args.seed,
        image_size=(args.height, args.width), min_people=args.min_people,
        max_people=args.max_people, min_keypoint_area=args.min_keypoint_area,
    )
    print(f"Wrote {args.num_images} images to {os.path.join(args.out, 'images')} "
          f"and annotations to {json_path}")
    return json_path


if __name__ == "__main__":
    main(sys.argv[1:])

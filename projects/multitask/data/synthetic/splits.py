"""The built-in synthetic splits, generated on first use under the datasets root."""

import json
import logging
import os

from .writer import DEFAULT_MIN_KEYPOINT_AREA, GENERATOR_VERSION, generate_synthetic_people

logger = logging.getLogger(__name__)

# Fixed defaults per split used by ensure_synthetic_dataset. At ~12 ms per image on one CPU core,
# train (~1220 people) generates in ~6 s and val (~250 people) in ~1 s.
SPLITS = {
    "train": dict(num_images=500, seed=0),
    "val": dict(num_images=100, seed=1),
}
DATASET_DIRNAME = "synthetic_people"


def ensure_synthetic_dataset(root, split):
    """Return ``(json_file, image_root)`` of the synthetic split under
    ``root/synthetic_people/<split>/``, generating it with :data:`SPLITS` defaults if its json is
    absent (the json is written last, so an interrupted generation is redone) or was written by
    another generator version or with another seed, number of images or ``min_keypoint_area``
    (a json without that field counts as the default's)."""
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLITS)}")
    out_dir = os.path.join(root, DATASET_DIRNAME, split)
    json_file = os.path.join(out_dir, "annotations.json")
    image_root = os.path.join(out_dir, "images")
    spec = SPLITS[split]
    info = _generated_info(json_file)
    wanted = {"version": GENERATOR_VERSION, "seed": int(spec["seed"]),
              "num_images": int(spec["num_images"]),
              "min_keypoint_area": int(spec.get("min_keypoint_area", DEFAULT_MIN_KEYPOINT_AREA))}
    if info is None:
        logger.info("Synthetic people split %r not found at %s; generating it", split, out_dir)
        generate_synthetic_people(out_dir, **spec)
    else:
        differ = {k: (info.get(k), v) for k, v in wanted.items() if info.get(k) != v}
        if differ:
            logger.info("Synthetic people split %r at %s differs from the current one (%s); "
                        "regenerating it", split, out_dir,
                        ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in differ.items()))
            generate_synthetic_people(out_dir, **spec)
    return json_file, image_root


def _generated_info(json_file):
    """``info`` of ``json_file`` with ``version`` as a string, or None when the file does not
    exist."""
    if not os.path.isfile(json_file):
        return None
    with open(json_file) as f:
        info = dict(json.load(f).get("info", {}))
    info["version"] = str(info.get("version", "unknown"))
    # files written before the threshold was recorded used the default
    info.setdefault("min_keypoint_area", DEFAULT_MIN_KEYPOINT_AREA)
    return info

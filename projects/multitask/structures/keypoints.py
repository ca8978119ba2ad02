"""Keypoint sets: which keypoints a dataset labels, how they mirror, connect and are scored.

A keypoint set travels as dataset metadata, as in detectron2 (``MetadataCatalog.get(name)``):
``keypoint_names`` (K names, in the order of the annotations), ``keypoint_flip_map`` (pairs of
names that swap under a horizontal flip), ``keypoint_connection_rules`` (``(name, name, RGB)``
edges to draw) and ``keypoint_oks_sigmas`` (K per-keypoint OKS sigmas for COCO keypoint AP). COCO's
person keypoints are defined here, once; every other part (loader, augmentation, heads,
evaluator, visualizer, PRN, activity features, synthetic data) reads them from here or from the
dataset's metadata. A model handles any K as long as ``MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS``
equals the datasets' K (:func:`check_num_keypoints`).

Coordinates: keypoints are continuous image coordinates where pixel ``i`` covers ``[i, i + 1)``;
COCO files store pixel indices, so the loader adds :data:`KEYPOINT_COORD_OFFSET` and the COCO
evaluator subtracts it again (detectron2's convention).
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "COCO_PERSON_KEYPOINT_NAMES",
    "COCO_PERSON_KEYPOINT_FLIP_MAP",
    "COCO_PERSON_KEYPOINT_CONNECTION_RULES",
    "COCO_PERSON_SKELETON",
    "COCO_PERSON_OKS_SIGMAS",
    "KEYPOINT_COORD_OFFSET",
    "KeypointSet",
    "COCO_PERSON_KEYPOINTS",
    "flip_permutation",
    "hflip_keypoints",
    "infer_flip_map",
    "check_num_keypoints",
]

COCO_PERSON_KEYPOINT_NAMES = (
    "nose",
    "left_eye", "right_eye",
    "left_ear", "right_ear",
    "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
    "left_hip", "right_hip",
    "left_knee", "right_knee",
    "left_ankle", "right_ankle",
)  # fmt: skip

COCO_PERSON_KEYPOINT_FLIP_MAP = (
    ("left_eye", "right_eye"),
    ("left_ear", "right_ear"),
    ("left_shoulder", "right_shoulder"),
    ("left_elbow", "right_elbow"),
    ("left_wrist", "right_wrist"),
    ("left_hip", "right_hip"),
    ("left_knee", "right_knee"),
    ("left_ankle", "right_ankle"),
)

# (keypoint name, keypoint name, RGB colour) as detectron2's, for drawing skeletons
COCO_PERSON_KEYPOINT_CONNECTION_RULES = (
    ("left_ear", "left_eye", (102, 204, 255)),
    ("right_ear", "right_eye", (51, 153, 255)),
    ("left_eye", "nose", (102, 0, 204)),
    ("nose", "right_eye", (51, 102, 255)),
    ("left_shoulder", "right_shoulder", (255, 128, 0)),
    ("left_shoulder", "left_elbow", (153, 255, 204)),
    ("right_shoulder", "right_elbow", (128, 229, 255)),
    ("left_elbow", "left_wrist", (153, 255, 153)),
    ("right_elbow", "right_wrist", (102, 255, 224)),
    ("left_hip", "right_hip", (255, 102, 0)),
    ("left_hip", "left_knee", (255, 255, 77)),
    ("right_hip", "right_knee", (153, 255, 204)),
    ("left_knee", "left_ankle", (191, 255, 128)),
    ("right_knee", "right_ankle", (255, 195, 77)),
)

# The ``skeleton`` of COCO's person category (19 edges, in COCO's order), as name pairs
COCO_PERSON_SKELETON = (
    ("left_ankle", "left_knee"), ("left_knee", "left_hip"),
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"),
    ("left_hip", "right_hip"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
    ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
    ("left_eye", "right_eye"), ("nose", "left_eye"), ("nose", "right_eye"),
    ("left_eye", "left_ear"), ("right_eye", "right_ear"),
    ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder"),
)  # fmt: skip

# pycocotools' per-keypoint OKS sigmas of the COCO person keypoints (COCOeval's defaults)
COCO_PERSON_OKS_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
    0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip

# Added to COCO's pixel-index keypoints when read, subtracted when results are written
KEYPOINT_COORD_OFFSET = 0.5


def flip_permutation(names: Sequence[str], flip_map: Sequence[Tuple[str, str]]) -> List[int]:
    """Index permutation that swaps the keypoints of every pair of ``flip_map`` (a keypoint of no
    pair keeps its index): ``flipped = keypoints[perm]``. A name of the map that is not in
    ``names`` is an error naming it."""
    index = {n: i for i, n in enumerate(names)}
    perm = list(range(len(names)))
    for a, b in flip_map:
        missing = [n for n in (a, b) if n not in index]
        if missing:
            raise ValueError(f"keypoint_flip_map names {missing}, which are not among the "
                             f"keypoint_names {list(names)}")
        perm[index[a]], perm[index[b]] = index[b], index[a]
    return perm


def hflip_keypoints(keypoints: np.ndarray, width, flip_indices: Sequence[int]) -> np.ndarray:
    """Mirror keypoints ``(..., K, 3)`` about the vertical line ``x = width / 2`` (``width``: a
    number, or one per pose broadcasting as ``(..., 1)``): ``x -> width - x`` for the labelled
    keypoints (v > 0; the others get x = 0) and left and right swapped by ``flip_indices``
    (:func:`flip_permutation`). Returns a float32 copy. The one keypoint flip of the data-side
    augmentations (activity poses, PRN training people)."""
    kps = np.array(keypoints, dtype=np.float32, copy=True)
    kps[..., 0] = np.where(kps[..., 2] > 0, width - kps[..., 0], 0.0)
    return np.take(kps, np.asarray(flip_indices, dtype=np.int64), axis=-2)


def infer_flip_map(names: Sequence[str]) -> List[Tuple[str, str]]:
    """Left/right pairs of ``names`` by their prefixes (``left_x`` / ``right_x``, ``l_x`` /
    ``r_x``): the flip map of a keypoint set that does not give one."""
    present = set(names)
    pairs = []
    for n in names:
        for left, right in (("left_", "right_"), ("l_", "r_")):
            if n.startswith(left) and right + n[len(left):] in present:
                pairs.append((n, right + n[len(left):]))
    return pairs


@dataclass(frozen=True)
class KeypointSet:
    """A dataset's keypoints: names, flip map, drawing rules and OKS sigmas (module docstring)."""

    names: Tuple[str, ...]
    flip_map: Tuple[Tuple[str, str], ...] = ()
    connection_rules: Tuple[Tuple[str, str, Tuple[int, int, int]], ...] = ()
    oks_sigmas: Optional[Tuple[float, ...]] = None
    skeleton: Tuple[Tuple[str, str], ...] = field(default=())

    def __post_init__(self):
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"keypoint_names repeat a name: {list(self.names)}")
        if self.oks_sigmas is not None and len(self.oks_sigmas) != len(self.names):
            raise ValueError(f"{len(self.oks_sigmas)} keypoint OKS sigmas for "
                             f"{len(self.names)} keypoints {list(self.names)}")
        flip_permutation(self.names, self.flip_map)  # names of the map must exist

    def __len__(self) -> int:
        return len(self.names)

    @property
    def flip_indices(self) -> List[int]:
        return flip_permutation(self.names, self.flip_map)

    @property
    def edges(self) -> List[Tuple[str, str]]:
        """Name pairs to draw: the skeleton, else the connection rules' pairs."""
        if self.skeleton:
            return list(self.skeleton)
        return [(a, b) for a, b, *_ in self.connection_rules]

    @property
    def is_coco_person(self) -> bool:
        return tuple(self.names) == COCO_PERSON_KEYPOINT_NAMES

    def metadata(self) -> dict:
        """The keys this set puts on a dataset's ``MetadataCatalog`` entry."""
        return {
            "keypoint_names": list(self.names),
            "keypoint_flip_map": [tuple(p) for p in self.flip_map],
            "keypoint_connection_rules": [tuple(r) for r in self.connection_rules],
            "keypoint_skeleton": [tuple(p) for p in self.skeleton],
            "keypoint_oks_sigmas": None if self.oks_sigmas is None else list(self.oks_sigmas),
        }

    @classmethod
    def from_metadata(cls, metadata: Any) -> Optional["KeypointSet"]:
        """The set a ``Metadata`` (or dict) describes; None when it has no ``keypoint_names``."""
        def get(key):
            if isinstance(metadata, dict):
                return metadata.get(key)
            return metadata.get(key) if metadata is not None else None

        names = get("keypoint_names")
        if not names:
            return None
        flip = get("keypoint_flip_map")
        sigmas = get("keypoint_oks_sigmas")
        return cls(
            names=tuple(names),
            flip_map=tuple(tuple(p) for p in (infer_flip_map(names) if flip is None else flip)),
            connection_rules=tuple(tuple(r) for r in (get("keypoint_connection_rules") or ())),
            oks_sigmas=None if sigmas is None else tuple(float(s) for s in sigmas),
            skeleton=tuple(tuple(p) for p in (get("keypoint_skeleton") or ())),
        )


COCO_PERSON_KEYPOINTS = KeypointSet(
    names=COCO_PERSON_KEYPOINT_NAMES,
    flip_map=COCO_PERSON_KEYPOINT_FLIP_MAP,
    connection_rules=COCO_PERSON_KEYPOINT_CONNECTION_RULES,
    oks_sigmas=COCO_PERSON_OKS_SIGMAS,
    skeleton=COCO_PERSON_SKELETON,
)


def check_num_keypoints(num_keypoints: int, keypoint_set: Optional[KeypointSet],
                        dataset: str) -> None:
    """``MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS`` must equal the dataset's keypoint count."""
    if keypoint_set is not None and len(keypoint_set) != int(num_keypoints):
        raise ValueError(
            f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS is {num_keypoints}, but dataset '{dataset}' "
            f"labels {len(keypoint_set)} keypoints {list(keypoint_set.names)}; set "
            f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS {len(keypoint_set)}"
        )

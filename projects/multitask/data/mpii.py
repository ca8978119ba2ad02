"""MPII Human Pose activity data, mapped to COCO's 17 keypoints, for the activity classifier.

The shipped csv (``mpii_human_pose.csv``) has one row per annotated person (``ID``, ``NAME`` = image
file, 16 joints as ``<joint>_X, <joint>_Y`` with ``-1, -1`` = not annotated, ``Scale``, and MPII's
``Activity`` / ``Category`` names, the latter from the Compendium of Physical Activities).

Joint mapping (MPII -> COCO index)
----------------------------------
==============  =====  ====================================================================
MPII joint      COCO   note
==============  =====  ====================================================================
l shoulder      5      left_shoulder
r shoulder      6      right_shoulder
l elbow         7      left_elbow
r elbow         8      right_elbow
l wrist         9      left_wrist
r wrist         10     right_wrist
l hip           11     left_hip
r hip           12     right_hip
l knee          13     left_knee
r knee          14     right_knee
l ankle         15     left_ankle
r ankle         16     right_ankle
upper neck +    0      nose, *derived*: ``upper_neck + NOSE_FRACTION * (head_top - upper_neck)``
head top                (v = 1, "labelled but approximate"); missing unless both are annotated
--              1..4   eyes and ears: MPII has none, always v = 0 (missing)
pelvis, thorax  --     not used (no COCO counterpart)
==============  =====  ====================================================================

MPII's left/right are the person's own (as COCO's). A joint is missing iff both its coordinates
are exactly -1 (other negative values are real joints just outside the image).

Box
---
The tight box of all annotated MPII joints (head top included, so the box reaches the top of the
head as a detector's box does), enlarged by ``BOX_ENLARGE`` (10%) of its width/height on each side.

Activity classes
----------------
Derived from MPII's ``Activity`` name (lower-cased) and ``Category`` by whole-word regular
expressions; two rules (``rule=``):

``"posture"`` (default; the blog's classes: walking, running, sitting, and standing as "lack of
activity"), the class must be the person's main posture/locomotion:

* ``walking``:  Category "walking" and the name says walk/walking/hiking/backpacking/marching
  ("walking, general", "race walking", "walking the dog", "hiking", "backpacking", "bird
  watching, slow walk", ...), or the name starts with "walking" ("walking, applying fertilizer");
* ``running``:  Category "running" ("running", "jogging", "running, marathon", ...);
* ``sitting``:  the name says sitting/seated anywhere ("sitting quietly", "cello, sitting", ...);
* ``standing``: the name's first phrase (before the first comma) says standing ("standing
  quietly, standing in a line", "standing, talking in person", "standing, miscellaneous", ...;
  not "trombone, standing" or "massage therapist, standing", where standing is incidental).

``"keywords"`` (broad): the class word anywhere in the name (walking: walk, walking, hiking,
backpacking, marching; running: running, jogging; sitting: sitting, seated, sit; standing:
standing), e.g. also "mowing lawn, walk, hand mower", "garbage collector, walking, dumping bins",
"trombone, standing".

Both rules drop rows that match no class or two or more classes, or whose name names another
posture word too (e.g. "food shopping ..., standing or walking", "horse cart, driving, standing or
sitting"), activities in water (``\\bwater\\b``: "water walking", "water jogging"; legs hidden)
and "implied" activities ("loading unloading a car, implied walking"), and rows with fewer than
``min_visible_joints`` annotated MPII joints; ``require_knees=True`` also drops persons without
both knees annotated (upper-body crops, where sitting/standing/walking cannot be told apart).
"""

import csv
import re
from collections import Counter, OrderedDict
from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = [
    "MPII_JOINT_NAMES",
    "MPII_TO_COCO",
    "CLASS_PATTERNS",
    "activity_to_class",
    "RULES",
    "mpii_joints_to_coco",
    "load_mpii_activity_csv",
]

# MPII's joint order (as in the csv's column names, "<name>_X", "<name>_Y")
MPII_JOINT_NAMES = (
    "r ankle",
    "r knee",
    "r hip",
    "l hip",
    "l knee",
    "l ankle",
    "pelvis",
    "thorax",
    "upper neck",
    "head top",
    "r wrist",
    "r elbow",
    "r shoulder",
    "l shoulder",
    "l elbow",
    "l wrist",
)
# MPII joint name -> COCO keypoint index (the nose is derived, see NOSE_FRACTION)
MPII_TO_COCO = OrderedDict(
    [
        ("l shoulder", 5),
        ("r shoulder", 6),
        ("l elbow", 7),
        ("r elbow", 8),
        ("l wrist", 9),
        ("r wrist", 10),
        ("l hip", 11),
        ("r hip", 12),
        ("l knee", 13),
        ("r knee", 14),
        ("l ankle", 15),
        ("r ankle", 16),
    ]
)
# nose = upper_neck + NOSE_FRACTION * (head_top - upper_neck)
NOSE_FRACTION = 0.4
# Visibility given to the derived nose (COCO: 1 = labelled, not visible / approximate)
NOSE_VISIBILITY = 1.0
# The tight box of the annotated joints is enlarged by this fraction of its size on each side
BOX_ENLARGE = 0.1
# Rows with fewer annotated MPII joints (of 16) are dropped (default of min_visible_joints)
MIN_VISIBLE_JOINTS = 6

# class name -> whole-word regular expression on the lower-cased MPII activity name ("keywords")
CLASS_PATTERNS: Dict[str, str] = {
    "walking": r"\b(walk|walking|hiking|backpacking|marching)\b",
    "running": r"\b(running|jogging)\b",
    "sitting": r"\b(sitting|seated|sit)\b",
    "standing": r"\bstanding\b",
}
# activities matching this are dropped whatever else they match
EXCLUDE_PATTERN = r"\bwater\b|\bimplied\b"
RULES = ("posture", "keywords")


def _posture_match(cls: str, name: str, category: str) -> bool:
    head = name.split(",")[0]
    if cls == "walking":
        says_walk = re.search(CLASS_PATTERNS["walking"], name) is not None
        return (category == "walking" and says_walk) or re.match(r"walking\b", head) is not None
    if cls == "running":
        return category == "running"
    if cls == "sitting":
        return re.search(CLASS_PATTERNS["sitting"], name) is not None
    if cls == "standing":
        return re.search(CLASS_PATTERNS["standing"], head) is not None
    raise KeyError(cls)


def activity_to_class(
    activity: str, classes: Sequence[str], category: str = "", rule: str = "posture"
) -> int:
    """Class index of an MPII activity name (and category): the one class that matches, else -1.

    Returns -1 for no match, a match of two or more classes or posture words (ambiguous) or an
    excluded activity (water, implied). See the module docstring for the rules.
    """
    if rule not in RULES:
        raise ValueError(f"unknown MPII class rule '{rule}', expected one of {RULES}")
    name = activity.lower()
    category = (category or "").lower()
    if re.search(EXCLUDE_PATTERN, name):
        return -1
    for c in classes:
        if c not in CLASS_PATTERNS:
            raise KeyError(
                f"No MPII activity rule for class '{c}'; known classes: {sorted(CLASS_PATTERNS)}"
            )
    words = sum(re.search(p, name) is not None for p in CLASS_PATTERNS.values())
    if rule == "keywords":
        hits = [i for i, c in enumerate(classes) if re.search(CLASS_PATTERNS[c], name)]
    else:
        hits = [i for i, c in enumerate(classes) if _posture_match(c, name, category)]
    return hits[0] if len(hits) == 1 and words <= 1 else -1


def mpii_joints_to_coco(joints: np.ndarray) -> np.ndarray:
    """Map MPII joints ``(N, 16, 2)`` (``-1, -1`` = missing) to COCO keypoints ``(N, 17, 3)``.

    Visibility is 2 for annotated joints, :data:`NOSE_VISIBILITY` for the derived nose and 0 (with
    x = y = 0) for missing ones (eyes and ears always).
    """
    joints = np.asarray(joints, dtype=np.float64)
    n = joints.shape[0]
    present = ~((joints[..., 0] == -1) & (joints[..., 1] == -1))
    out = np.zeros((n, 17, 3), dtype=np.float32)
    idx = {name: i for i, name in enumerate(MPII_JOINT_NAMES)}
    for name, k in MPII_TO_COCO.items():
        j = idx[name]
        p = present[:, j]
        out[p, k, :2] = joints[p, j]
        out[p, k, 2] = 2.0
    neck, top = idx["upper neck"], idx["head top"]
    p = present[:, neck] & present[:, top]
    out[p, 0, :2] = joints[p, neck] + NOSE_FRACTION * (joints[p, top] - joints[p, neck])
    out[p, 0, 2] = NOSE_VISIBILITY
    return out


_KNEES = (MPII_JOINT_NAMES.index("r knee"), MPII_JOINT_NAMES.index("l knee"))


def _boxes_from_joints(joints: np.ndarray) -> np.ndarray:
    present = ~((joints[..., 0] == -1) & (joints[..., 1] == -1))
    big = np.where(present[..., None], joints, np.nan)
    x0, y0 = np.nanmin(big[..., 0], 1), np.nanmin(big[..., 1], 1)
    x1, y1 = np.nanmax(big[..., 0], 1), np.nanmax(big[..., 1], 1)
    w, h = np.maximum(x1 - x0, 1.0), np.maximum(y1 - y0, 1.0)
    return np.stack(
        [x0 - BOX_ENLARGE * w, y0 - BOX_ENLARGE * h, x1 + BOX_ENLARGE * w, y1 + BOX_ENLARGE * h], 1
    ).astype(np.float32)


def load_mpii_activity_csv(
    path: str,
    classes: Sequence[str] = ("walking", "running", "sitting", "standing"),
    rule: str = "posture",
    min_visible_joints: int = MIN_VISIBLE_JOINTS,
    require_knees: bool = False,
    verbose: bool = True,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Load the MPII activity csv as COCO-layout poses with activity labels.

    Returns ``keypoints (N, 17, 3) float32`` (x, y, v in image pixels, v = 0 missing),
    ``boxes (N, 4) float32`` XYXY, ``labels (N,) int64`` (index into ``classes``) and ``info``, a
    dict with ``classes``, ``person_ids (N,)`` (the csv's ``ID``, one per person), ``image_names``,
    ``activities`` (the MPII names kept), ``class_counts``, ``num_rows``, ``num_dropped`` (dict of
    reasons), ``rule`` and ``joint_mapping``. Prints the class counts when ``verbose``.
    """
    classes = list(classes)
    cols = [(f"{n}_X", f"{n}_Y") for n in MPII_JOINT_NAMES]
    joints, labels, ids, names, acts = [], [], [], [], []
    dropped = Counter()
    n_rows = 0
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing_cols = [c for xy in cols for c in xy if c not in reader.fieldnames] + [
            c for c in ("ID", "NAME", "Activity") if c not in reader.fieldnames
        ]
        if missing_cols:
            raise ValueError(f"{path}: not an MPII activity csv, missing columns {missing_cols}")
        for row in reader:
            n_rows += 1
            label = activity_to_class(row["Activity"], classes, row.get("Category", ""), rule)
            if label < 0:
                dropped["no class or ambiguous"] += 1
                continue
            j = np.array([[float(row[cx]), float(row[cy])] for cx, cy in cols], dtype=np.float64)
            present = ~((j[:, 0] == -1) & (j[:, 1] == -1))
            if int(present.sum()) < min_visible_joints:
                dropped[f"fewer than {min_visible_joints} joints"] += 1
                continue
            if require_knees and not (present[_KNEES[0]] and present[_KNEES[1]]):
                dropped["knees not annotated"] += 1
                continue
            joints.append(j)
            labels.append(label)
            ids.append(int(row["ID"]))
            names.append(row["NAME"])
            acts.append(row["Activity"])
    if not joints:
        raise ValueError(f"{path}: no rows of classes {classes}")
    joints = np.stack(joints)
    keypoints = mpii_joints_to_coco(joints)
    boxes = _boxes_from_joints(joints)
    labels = np.asarray(labels, dtype=np.int64)
    counts = OrderedDict((c, int((labels == i).sum())) for i, c in enumerate(classes))
    info = {
        "classes": classes,
        "person_ids": np.asarray(ids, dtype=np.int64),
        "image_names": names,
        "activities": acts,
        "class_counts": counts,
        "num_rows": n_rows,
        "num_dropped": dict(dropped),
        "rule": rule,
        "joint_mapping": dict(MPII_TO_COCO, **{"nose (derived)": 0}),
    }
    if verbose:
        print(
            f"MPII activity csv {path} (rule '{rule}'): {n_rows} rows, kept {len(labels)}, "
            f"dropped {dict(dropped)}"
        )
        print("  class counts: " + ", ".join(f"{c}={n}" for c, n in counts.items()))
    return keypoints, boxes, labels, info

"""Deterministic synthetic "crowded people" dataset in COCO person_keypoints format.

It lets a user with no COCO download and no GPU train and evaluate the whole model (boxes, masks,
17 keypoints, activities) in minutes on a small CPU::

    from multitask.data.synthetic import ensure_synthetic_dataset
    json_file, image_root = ensure_synthetic_dataset("datasets", "train")

or from the command line: ``python tools/make_synthetic_people.py --out /tmp/synth --num-images 8``.

Design
------
Every person is a small 3D articulated figure built on COCO's 17-keypoint skeleton (pelvis-rooted
forward kinematics: hips -> knees -> ankles -> feet, a torso that can lean, shoulders -> elbows ->
wrists -> hands, a neck and a head carrying nose/eyes/ears). Joint angles are sampled around one of
four activity templates -- ``walking`` (moderate stride, arms swinging opposite to the legs),
``running`` (forward lean, long stride, heel kick, elbows bent ~90 deg), ``sitting`` (thighs
~horizontal, shins down, often on a stool) and ``standing`` (legs straight, arms down, sometimes a
raised arm / hand on hip / hand to face) -- with random per-joint variation; which side leads is
random (pose mirroring). The figure is rotated by a random yaw (like COCO's people, mostly towards
the camera, with 3/4, side and back views: :func:`_sample_yaw`), a small camera pitch and an
in-plane roll, projected orthographically with a random scale (~30 px to ~90 % of the image
height) and aspect squeeze, and painted part by part from far to near (painter's algorithm):
tapered capsules for limbs, a shaded 3D box for the torso and a per-pixel shaded sphere for the
head. The keypoints are exactly the joint centres of the drawn limbs (pixel-index coordinates
like COCO: pixel centres at integer coordinates).

Colours vary per person and per part (skin tone, hair, shirt, trousers, shoes, sleeve/shorts
lengths, random jitter and rare off-palette colours) so that no colour identifies a part.

Left/right cue. The training mapper flips images horizontally and swaps the left/right keypoint
labels (``INPUT.RANDOM_FLIP``), so a colour convention such as "the left limbs are darker" would be
contradicted by half of the flipped training samples. Instead left/right is decided as for real
people, by cues that are consistent under flip+swap: the facing direction (eyes, nose and mouth on
the front of the head and hair on the back, a skin-coloured V-neck on the front of the shirt, feet
pointing forward) combined with depth cues (near-side limbs are drawn over the torso and lit
brighter, far-side limbs are hidden behind it and shaded darker). The generator is mirror
symmetric in distribution (yaw and -yaw equally likely, symmetric roll, random leading side,
light from either side), so a horizontally flipped sample with swapped labels is itself a
plausible sample.

Backgrounds mix smooth gradients, multi-octave value noise, stripes/checkers and flat colours with
sensor noise, plus random clutter (rectangles, discs, ellipses, polygons, thick lines, some in
clothing/skin colours) that is never an articulated figure.

Annotation conventions
----------------------
* People are painted in depth order; ``segmentation`` is the VISIBLE part of a person (what is
  left after later-painted people are drawn over it) as COCO RLE (``counts`` a str), so masks of
  one image are pairwise disjoint. ``area`` is the pixel count of that mask and ``bbox``
  ``[x, y, w, h]`` is the tight box of the visible mask (COCO's convention: boxes of the visible
  part, ``pycocotools.mask.toBbox``).
* Keypoint visibility: 2 = inside the image and not covered by a later-painted person (a joint
  hidden only by the person's own body, e.g. the far arm in a side view, stays 2); 1 = inside the
  image but covered by another person painted on top; 0 = outside the image, then ``x = y = 0``.
  Face keypoints on the far side of the person's own head (the nose and eyes of a back view, the
  far ear of a profile) are unlabelled, ``(0, 0, 0)``, as COCO's annotators leave them.
  ``num_keypoints`` counts ``v > 0``.
* Persons with fewer than ``min_visible_area`` visible pixels are dropped (almost nothing is).
* As in COCO, where only medium and large people (area >= 32^2) carry keypoints, a person whose
  visible area is below ``min_keypoint_area`` keeps its box, mask and activity but gets no
  keypoints: all 17 are ``(0, 0, 0)`` and ``num_keypoints = 0``, so the keypoint metric ignores
  it and the keypoint loss skips it.
* Each annotation has ``"activity"`` in :data:`ACTIVITY_CLASSES`; the json also lists them under
  the top-level key ``"activity_classes"``. ``iscrowd = 0``, ``category_id = 1``, annotation ids
  are unique from 1 and image ids are ``index + 1`` for ``images/{index:06d}.jpg``.

Determinism: image ``i`` is drawn from ``np.random.default_rng([seed, i])`` only, so the output
depends on ``(seed, i, parameters)`` alone -- not on the global RNG state nor on ``num_images``
(the first k images of a larger set equal a k-image set).
"""

import colorsys
import json
import logging
import os
import time

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from ..utils.file_io import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "KEYPOINT_NAMES",
    "SKELETON",
    "ACTIVITY_CLASSES",
    "SPLITS",
    "DEFAULT_IMAGE_SIZE",
    "render_image",
    "generate_synthetic_people",
    "ensure_synthetic_dataset",
]

# COCO person_keypoints order, names and skeleton (1-based keypoint indices) exactly as in COCO.
KEYPOINT_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
]
SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
    [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]
ACTIVITY_CLASSES = ["walking", "running", "sitting", "standing"]

DEFAULT_IMAGE_SIZE = (256, 320)  # (H, W)
# COCO labels keypoints of medium and large people only
DEFAULT_MIN_KEYPOINT_AREA = 32 * 32
# Fixed defaults per split used by ensure_synthetic_dataset. At ~12 ms per image on one CPU core,
# train (~1220 people) generates in ~6 s and val (~250 people) in ~1 s.
SPLITS = {
    "train": dict(num_images=500, seed=0),
    "val": dict(num_images=100, seed=1),
}
DATASET_DIRNAME = "synthetic_people"
# Bumped whenever the generator's output changes; a generated split whose json has another
# version is regenerated by ensure_synthetic_dataset.
GENERATOR_VERSION = "3"
# Facing direction, matched to COCO: in coco-mini's people with both shoulders labelled, ~78 % face
# the camera (left shoulder on the image right) and ~20 % face away; these give ~74 % and ~18 %.
FRONT_FACING_PROB = 0.6
FRONT_YAW_STD_DEG = 40.0
# A face keypoint whose direction from the head centre points away from the camera by more than
# this cosine is behind the head: unlabelled, as in COCO (ears on the head's outline stay labelled).
FACE_HIDDEN_DEPTH = 0.3

_KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
_SHIFT = 4  # fixed-point bits for cv2 drawing (sub-pixel accuracy)
_ONE = 1 << _SHIFT

# Skin tones (RGB) from light to dark; stored as BGR below.
_SKIN_RGB = [
    (255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (161, 102, 62),
    (141, 85, 36), (92, 56, 36),
]
_HAIR_RGB = [(20, 16, 14), (60, 40, 25), (110, 75, 40), (200, 160, 90), (150, 150, 150),
             (120, 40, 20)]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _bgr(rgb):
    return np.array(rgb[::-1], dtype=np.float64)


def _rand_color(rng, sat=(0.15, 1.0), val=(0.2, 1.0)):
    """A random BGR colour (float64, 0..255) from HSV."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([b, g, r]) * 255.0


def _jitter(rng, color, amount=14.0):
    return np.clip(color + rng.uniform(-amount, amount, size=3), 0, 255)


def _fx(p):
    """Float pixel coordinates -> cv2 fixed-point int32 coordinates."""
    return np.round(np.asarray(p, dtype=np.float64) * _ONE).astype(np.int32)


def _color_tuple(c):
    return tuple(float(v) for v in np.clip(c, 0, 255))


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / max(np.linalg.norm(v), 1e-12)


# --------------------------------------------------------------------------------------------
# poses
# --------------------------------------------------------------------------------------------
def _limb_dir(flex, abd, side):
    """Unit direction in the body frame (X = person's left, Y = up, Z = forward).

    A hanging limb points down; ``flex`` swings it forward (towards +Z) in the sagittal plane and
    ``abd`` moves it outwards to the person's ``side`` (+1 left, -1 right). Radians.
    """
    return np.array(
        [side * np.sin(abd), -np.cos(abd) * np.cos(flex), np.cos(abd) * np.sin(flex)]
    )


def _sample_pose(rng, activity):
    """Joint angles (degrees) around the activity template. Returns dict with 'lean', 'head_yaw',
    'head_nod' and per-side dicts 'L'/'R' with hip_flex, hip_abd, knee, sh_flex, sh_abd, elbow."""
    U = rng.uniform
    N = rng.normal
    lead, trail = {}, {}  # the leading leg's side / the other side
    if activity == "standing":
        lean = N(0, 3)
        for d in (lead, trail):
            d.update(hip_flex=N(0, 4), hip_abd=U(1, 9), knee=U(0, 8),
                     sh_flex=N(0, 8), sh_abd=U(3, 14), elbow=U(3, 25))
        r = rng.random()
        if r < 0.12:  # raised arm (waving)
            trail.update(sh_flex=U(110, 170), sh_abd=U(10, 40), elbow=U(0, 60))
        elif r < 0.24:  # hand on hip
            trail.update(sh_flex=U(-25, -5), sh_abd=U(25, 45), elbow=U(90, 125))
        elif r < 0.34:  # hand to face / phone
            trail.update(sh_flex=U(20, 45), sh_abd=U(5, 20), elbow=U(115, 140))
    elif activity == "walking":
        lean = U(0, 6)
        swing = U(15, 32)
        lead.update(hip_flex=swing, knee=U(3, 20))
        trail.update(hip_flex=-swing * U(0.6, 0.95), knee=U(10, 40))
        # arms swing opposite to the legs
        trail.update(sh_flex=swing * U(0.6, 1.2), elbow=U(10, 40))
        lead.update(sh_flex=-swing * U(0.5, 1.0), elbow=U(5, 25))
        for d in (lead, trail):
            d.update(hip_abd=U(0, 6), sh_abd=U(3, 12))
    elif activity == "running":
        lean = U(8, 22)
        lead.update(hip_flex=U(40, 80), knee=U(55, 110))
        trail.update(hip_flex=U(-35, -12), knee=U(40, 110))
        trail.update(sh_flex=U(30, 70), elbow=U(75, 115))
        lead.update(sh_flex=U(-65, -25), elbow=U(65, 105))
        for d in (lead, trail):
            d.update(hip_abd=U(0, 8), sh_abd=U(4, 16))
    elif activity == "sitting":
        lean = U(-10, 12)
        for d in (lead, trail):
            d.update(hip_flex=U(72, 100), hip_abd=U(3, 16), knee=U(65, 115),
                     sh_flex=U(-5, 45), sh_abd=U(3, 14), elbow=U(15, 85))
        if rng.random() < 0.25:  # legs crossed at the knee / one leg stretched
            lead.update(knee=U(20, 50), hip_flex=U(60, 85))
    else:
        raise ValueError(f"unknown activity {activity!r}")
    if rng.random() < 0.5:  # pose mirroring: which side leads
        pose = {"L": lead, "R": trail}
    else:
        pose = {"L": trail, "R": lead}
    pose["lean"] = lean
    pose["head_yaw"] = float(np.clip(N(0, 18), -50, 50))
    pose["head_nod"] = float(np.clip(N(5 if activity == "sitting" else 0, 8), -20, 30))
    return pose


def _build_figure(rng, activity):
    """3D figure in the body frame (units: standing height ~1). Returns (keypoints (17, 3), parts,
    head) where parts are (kind, ...) in body coordinates."""
    pose = _sample_pose(rng, activity)
    rad = np.deg2rad
    wf = rng.uniform(0.82, 1.22)  # build (width) factor
    lf = rng.uniform(0.92, 1.08)  # leg length factor
    thigh, shin = 0.245 * lf, 0.235 * lf
    torso_len = 0.30 * rng.uniform(0.93, 1.07)
    upper_arm, forearm = 0.165 * rng.uniform(0.93, 1.07), 0.145 * rng.uniform(0.93, 1.07)
    sh_half, hip_half = 0.112 * wf, 0.078 * wf
    torso_half_depth = 0.062 * wf
    head_r = 0.062 * rng.uniform(0.9, 1.12)
    neck_len = 0.045
    limb_w = rng.uniform(0.85, 1.2) * np.sqrt(wf)

    kp = np.zeros((17, 3))
    parts = []  # ("capsule", p0, p1, r0, r1, color_key, side)  with p in body coords

    # ---- legs (pelvis frame, not leaned)
    feet = {}
    for side_name, side in (("left", 1.0), ("right", -1.0)):
        p = pose["L" if side > 0 else "R"]
        hip = np.array([side * hip_half, 0.0, 0.0])
        a_thigh = rad(p["hip_flex"])
        abd = rad(p["hip_abd"])
        knee = hip + thigh * _limb_dir(a_thigh, abd, side)
        a_shin = a_thigh - rad(p["knee"])
        ankle = knee + shin * _limb_dir(a_shin, abd * 0.5, side)
        toe = ankle + 0.075 * _limb_dir(a_shin + rad(rng.uniform(75, 100)), 0.0, side)
        kp[_KP[side_name + "_hip"]] = hip
        kp[_KP[side_name + "_knee"]] = knee
        kp[_KP[side_name + "_ankle"]] = ankle
        parts.append(("capsule", hip, knee, 0.052 * limb_w, 0.036 * limb_w, "thigh", side))
        parts.append(("capsule", knee, ankle, 0.036 * limb_w, 0.026 * limb_w, "shin", side))
        feet[side] = (ankle, toe)
    for side, (ankle, toe) in feet.items():
        parts.append(("capsule", ankle, toe, 0.026 * limb_w, 0.022 * limb_w, "foot", side))

    # ---- upper body (torso frame, then leaned about the pelvis)
    lean = _rot_x(rad(pose["lean"]))
    up = {}
    for side_name, side in (("left", 1.0), ("right", -1.0)):
        p = pose["L" if side > 0 else "R"]
        shoulder = np.array([side * sh_half, torso_len, 0.0])
        a_up = rad(p["sh_flex"])
        abd = rad(p["sh_abd"])
        elbow = shoulder + upper_arm * _limb_dir(a_up, abd, side)
        a_fore = a_up + rad(p["elbow"])
        fdir = _limb_dir(a_fore, abd * 0.6, side)
        wrist = elbow + forearm * fdir
        hand = wrist + 0.05 * fdir
        up[side_name] = (shoulder, elbow, wrist, hand)
    for side_name, side in (("left", 1.0), ("right", -1.0)):
        shoulder, elbow, wrist, hand = (lean @ q for q in up[side_name])
        kp[_KP[side_name + "_shoulder"]] = shoulder
        kp[_KP[side_name + "_elbow"]] = elbow
        kp[_KP[side_name + "_wrist"]] = wrist
        w = limb_w
        parts.append(("capsule", shoulder, elbow, 0.034 * w, 0.027 * w, "upper_arm", side))
        parts.append(("capsule", elbow, wrist, 0.027 * w, 0.021 * w, "forearm", side))
        parts.append(("capsule", wrist, hand, 0.024 * w, 0.024 * w, "hand", side))

    # torso: a box (frustum) from the hips to the shoulders, 8 corners in torso frame
    top_y, bot_y = torso_len + 0.02, -0.045
    tw, bw = sh_half + 0.02, hip_half + 0.035
    corners = []
    for y, w, dz in ((top_y, tw, torso_half_depth), (bot_y, bw, torso_half_depth * 0.95)):
        for sx in (1.0, -1.0):
            for sz in (1.0, -1.0):
                corners.append(lean @ np.array([sx * w, y, sz * dz]))
    parts.append(("torso", np.array(corners)))

    # neck + head
    neck_base = lean @ np.array([0.0, torso_len - 0.01, 0.0])
    head_c = lean @ np.array([0.0, torso_len + neck_len + head_r * 0.85, 0.012])
    parts.append(("capsule", neck_base, head_c, 0.028 * limb_w, 0.028 * limb_w, "neck", 0.0))
    head_rot = lean @ _rot_y(rad(pose["head_yaw"])) @ _rot_x(rad(pose["head_nod"]))
    face = {
        "nose": (_unit([0.0, -0.12, 1.0]), 0.97),
        "left_eye": (_unit([0.36, 0.18, 0.92]), 0.95),
        "right_eye": (_unit([-0.36, 0.18, 0.92]), 0.95),
        "left_ear": (_unit([1.0, 0.04, -0.08]), 0.93),
        "right_ear": (_unit([-1.0, 0.04, -0.08]), 0.93),
    }
    for name, (d, f) in face.items():
        kp[_KP[name]] = head_c + head_rot @ (d * head_r * f)
    head = dict(center=head_c, radius=head_r, rot=head_rot,
                hair_top=rng.uniform(0.15, 0.55), hair_back=rng.uniform(-0.35, 0.05))
    return kp, parts, head, pose


def _person_colors(rng):
    """Per-person colour set (BGR float); every part gets its own jitter."""
    if rng.random() < 0.1:
        skin = _rand_color(rng, sat=(0.1, 0.8), val=(0.3, 1.0))
    else:
        skin = _jitter(rng, _bgr(_SKIN_RGB[rng.integers(len(_SKIN_RGB))]), 18)
    if rng.random() < 0.15:
        hair = _rand_color(rng)
    else:
        hair = _jitter(rng, _bgr(_HAIR_RGB[rng.integers(len(_HAIR_RGB))]), 12)
    shirt = _rand_color(rng)
    pants = _rand_color(rng, sat=(0.05, 0.9), val=(0.1, 0.9))
    shoes = _rand_color(rng, sat=(0.0, 0.8), val=(0.05, 0.7))
    long_sleeves = rng.random() < 0.5
    shorts = rng.random() < 0.25
    bare_arms = rng.random() < 0.15
    c = {
        "skin": skin,
        "hair": hair,
        "shirt": shirt,
        "torso": _jitter(rng, shirt, 8),
        "upper_arm": _jitter(rng, skin if bare_arms else shirt, 8),
        "forearm": _jitter(rng, shirt if long_sleeves and not bare_arms else skin, 8),
        "hand": _jitter(rng, skin, 8),
        "neck": _jitter(rng, skin, 6),
        "thigh": _jitter(rng, pants, 8),
        "shin": _jitter(rng, skin if shorts else pants, 8),
        "foot": _jitter(rng, shoes, 8),
        "vneck": rng.random() < 0.8,
    }
    return c


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
class _Camera:
    """Body frame -> image: rotation R (body -> OpenCV camera: x right, y down, depth forward),
    orthographic scale ``s`` px per body unit, aspect squeeze ``ax`` on x, translation ``t``."""

    def __init__(self, yaw, pitch, roll, scale, ax):
        base = np.diag([1.0, -1.0, -1.0])  # facing the camera: person's left = image right
        self.R = _rot_z(roll) @ _rot_x(pitch) @ base @ _rot_y(yaw)
        self.s = scale
        self.ax = ax
        self.t = np.zeros(2)

    def cam(self, p):
        return np.asarray(p) @ self.R.T

    def project(self, p):
        c = self.cam(p)
        return c[..., :2] * np.array([self.s * self.ax, self.s]) + self.t

    def depth(self, p):
        return self.cam(p)[..., 2]


def _draw_capsule(img, mask, p0, p1, r0, r1, color):
    r0 = max(r0, 0.6)
    r1 = max(r1, 0.6)
    col = _color_tuple(color)
    d = p1 - p0
    length = float(np.hypot(*d))
    if length > 1e-3:
        n = np.array([-d[1], d[0]]) / length
        quad = _fx([p0 + n * r0, p1 + n * r1, p1 - n * r1, p0 - n * r0])
        cv2.fillConvexPoly(img, quad, col, cv2.LINE_8, _SHIFT)
        cv2.fillConvexPoly(mask, quad, 1, cv2.LINE_8, _SHIFT)
    for p, r in ((p0, r0), (p1, r1)):
        c = tuple(int(v) for v in _fx(p))
        rr = int(round(r * _ONE))
        cv2.circle(img, c, rr, col, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(mask, c, rr, 1, -1, cv2.LINE_8, _SHIFT)


def _fill_poly(img, mask, pts, color):
    q = _fx(pts)
    cv2.fillConvexPoly(img, q, _color_tuple(color), cv2.LINE_8, _SHIFT)
    cv2.fillConvexPoly(mask, q, 1, cv2.LINE_8, _SHIFT)


def _draw_torso(img, mask, cam, corners, colors, light):
    """Shaded box: the camera-facing faces of the 8-corner frustum (convex, so no ordering)."""
    # corner index = 4 * level + 2 * (sx == -1) + (sz == -1); level 0 = top
    faces = {
        "front": [0, 2, 6, 4], "back": [1, 5, 7, 3], "left": [0, 4, 5, 1],
        "right": [2, 3, 7, 6], "top": [0, 1, 3, 2], "bottom": [4, 6, 7, 5],
    }
    cc = cam.cam(corners)
    center = cc.mean(axis=0)
    img_pts = cam.project(corners)
    base = colors["torso"]
    for name, idx in faces.items():
        f = cc[idx]
        n = np.cross(f[1] - f[0], f[3] - f[0])
        if np.dot(n, f.mean(axis=0) - center) < 0:
            n = -n
        n = _unit(n)
        if n[2] >= -1e-6:  # facing away from the camera
            continue
        shade = 0.5 + 0.6 * max(0.0, float(np.dot(n, light)))
        _fill_poly(img, mask, img_pts[idx], base * shade)
        if name == "front" and colors["vneck"] and -n[2] > 0.25:
            # skin-coloured V-neck on the front face: front-top corners 0 (left), 2 (right)
            tl, tr, bl, br = img_pts[0], img_pts[2], img_pts[4], img_pts[6]
            mid_top = 0.5 * (tl + tr)
            mid_bot = 0.5 * (bl + br)
            v = [mid_top + 0.28 * (tl - mid_top), mid_top + 0.28 * (tr - mid_top),
                 mid_top + 0.28 * (mid_bot - mid_top)]
            _fill_poly(img, mask, np.array(v), colors["neck"] * shade)


def _draw_head(img, mask, cam, head, colors, light):
    H, W = mask.shape
    c2 = cam.project(head["center"])
    rpx = head["radius"] * cam.s
    rx, ry = rpx * cam.ax, rpx
    x0, x1 = int(np.floor(c2[0] - rx)), int(np.ceil(c2[0] + rx))
    y0, y1 = int(np.floor(c2[1] - ry)), int(np.ceil(c2[1] + ry))
    x0c, x1c, y0c, y1c = max(x0, 0), min(x1, W - 1), max(y0, 0), min(y1, H - 1)
    if x0c > x1c or y0c > y1c:
        return
    ys, xs = np.mgrid[y0c:y1c + 1, x0c:x1c + 1].astype(np.float64)
    qx = (xs - c2[0]) / max(rx, 1e-6)
    qy = (ys - c2[1]) / max(ry, 1e-6)
    q2 = qx * qx + qy * qy
    inside = q2 <= 1.0
    if rpx < 1.2:  # tiny head: make sure at least the centre pixel is painted
        cx, cy = int(round(c2[0])), int(round(c2[1]))
        if y0c <= cy <= y1c and x0c <= cx <= x1c:
            inside[cy - y0c, cx - x0c] = True
    if not inside.any():
        return
    nz = -np.sqrt(np.clip(1.0 - q2, 0.0, 1.0))
    n_cam = np.stack([qx, qy, nz], axis=-1)
    n_cam /= np.linalg.norm(n_cam, axis=-1, keepdims=True) + 1e-12
    # camera -> head-local frame (X left, Y up, Z forward)
    R_head_cam = cam.R @ head["rot"]
    n_loc = n_cam @ R_head_cam  # (R^T n) row-wise
    nx, ny, nzl = n_loc[..., 0], n_loc[..., 1], n_loc[..., 2]
    col = np.empty(inside.shape + (3,))
    col[:] = colors["skin"]
    hair = (ny > head["hair_top"]) | (nzl < head["hair_back"])
    col[hair] = colors["hair"]
    if rpx >= 3.0:
        for side in (1.0, -1.0):
            ear = np.array([side, 0.04, -0.08]) / np.linalg.norm([1.0, 0.04, -0.08])
            e = (n_loc @ ear) > 0.965
            col[e & (ny < 0.25)] = colors["skin"] * 0.82
            eye = _unit([0.36 * side, 0.18, 0.92])
            cosang = n_loc @ eye
            col[cosang > 0.985] = (235, 235, 235)
            col[cosang > 0.994] = (25, 20, 20)
        nose = _unit([0.0, -0.12, 1.0])
        col[(n_loc @ nose) > 0.992] = colors["skin"] * 0.72
        mouth = (np.abs(nx) < 0.22) & (np.abs(ny + 0.45) < 0.05) & (nzl > 0.7)
        col[mouth] = (60, 50, 150)
    shade = 0.5 + 0.6 * np.clip(n_cam @ light, 0.0, None)
    col = np.clip(col * shade[..., None], 0, 255)
    roi = img[y0c:y1c + 1, x0c:x1c + 1]
    roi[inside] = col[inside].astype(np.uint8)
    mask[y0c:y1c + 1, x0c:x1c + 1][inside] = 1


def _sample_yaw(rng):
    """Body yaw (0 = facing the camera): like COCO's people, mostly towards the camera.

    With probability :data:`FRONT_FACING_PROB` the yaw is normal around the front view (3/4 views
    included), otherwise uniform over the circle (back and side views). Mirror symmetric (yaw and
    -yaw are equally likely), as the flip augmentation needs.
    """
    if rng.random() < FRONT_FACING_PROB:
        return float(rng.normal(0.0, np.deg2rad(FRONT_YAW_STD_DEG)))
    return float(rng.uniform(-np.pi, np.pi))


def _face_points_hidden(person):
    """bool (17,): face keypoints on the far side of the person's own head (COCO leaves those
    unlabelled: no nose or eyes on a back view). Body keypoints are never hidden here."""
    hidden = np.zeros(17, bool)
    cam = person["cam"]
    centre = person["head"]["center"]
    for k in range(5):  # nose, eyes, ears
        d = cam.cam(person["kp3d"][k] - centre)
        hidden[k] = d[2] > FACE_HIDDEN_DEPTH * np.linalg.norm(d)
    return hidden


def _sample_person(rng, H, W, min_h, max_h):
    activity = ACTIVITY_CLASSES[int(rng.integers(len(ACTIVITY_CLASSES)))]
    kp3d, parts, head, pose = _build_figure(rng, activity)
    height_px = float(np.exp(rng.uniform(np.log(min_h), np.log(max_h))))
    yaw = _sample_yaw(rng)
    pitch = np.deg2rad(rng.uniform(-5, 25))
    roll = np.deg2rad(float(np.clip(rng.normal(0, 8), -25, 25)))
    ax = rng.uniform(0.85, 1.15)
    cam = _Camera(yaw, pitch, roll, height_px, ax)
    return dict(activity=activity, kp3d=kp3d, parts=parts, head=head, cam=cam,
                colors=_person_colors(rng), height_px=height_px,
                has_stool=(activity == "sitting" and rng.random() < 0.7),
                stool_color=_rand_color(rng, sat=(0.0, 0.6), val=(0.2, 0.8)))


def _figure_extent(person):
    """2D extent (min, max) of the projected figure with translation 0."""
    cam = person["cam"]
    pts = [person["kp3d"]]
    for part in person["parts"]:
        if part[0] == "capsule":
            pts.append(np.stack([part[1], part[2]]))
        elif part[0] == "torso":
            pts.append(part[1])
    p2 = cam.project(np.concatenate(pts, axis=0))
    pad = 0.06 * cam.s
    return p2.min(axis=0) - pad, p2.max(axis=0) + pad


def _place_people(rng, people, H, W):
    centers = []
    for i, person in enumerate(people):
        lo, hi = _figure_extent(person)
        size = hi - lo
        if centers and rng.random() < 0.55:  # overlap with an earlier person
            j = int(rng.integers(len(centers)))
            pc, psize = centers[j]
            c = pc + rng.normal(0, 1, 2) * np.array([0.35, 0.2]) * np.maximum(psize, size)
        else:
            c = np.array([rng.uniform(0, W - 1), rng.uniform(0, H - 1)])
        # keep at least ~1/4 of the figure's box inside the image
        c = np.clip(c, -0.25 * size, np.array([W - 1, H - 1]) + 0.25 * size)
        person["cam"].t = c - 0.5 * (lo + hi)
        centers.append((c, size))


def _background(rng, H, W):
    kind = rng.choice(["gradient", "noise", "stripes", "checker", "flat"],
                      p=[0.25, 0.3, 0.2, 0.1, 0.15])
    c1 = _rand_color(rng).astype(np.float32)
    c2 = _rand_color(rng).astype(np.float32)
    xs = np.arange(W, dtype=np.float32)[None, :]
    ys = np.arange(H, dtype=np.float32)[:, None]
    if kind == "gradient":
        if rng.random() < 0.3:  # radial
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            t = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) / np.float32(np.hypot(W, H))
        else:
            a = rng.uniform(0, 2 * np.pi)
            t = xs * np.float32(np.cos(a)) + ys * np.float32(np.sin(a))
            t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        t = t[..., None]
    elif kind == "noise":
        acc = np.zeros((H, W, 3), np.float32)
        total = 0.0
        for octave in range(int(rng.integers(2, 5))):
            cells = int(rng.integers(2, 6)) * (2 ** octave)
            small = rng.random((cells, max(2, cells * W // H), 3), dtype=np.float32)
            amp = 0.55 ** octave
            acc += np.float32(amp) * cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
            total += amp
        t = np.clip(acc / np.float32(total), 0, 1)
    elif kind == "stripes":
        a = rng.uniform(0, np.pi)
        period = rng.uniform(6, 60)
        u = xs * np.float32(np.cos(a)) + ys * np.float32(np.sin(a))
        t = 0.5 + 0.5 * np.sin(u * np.float32(2 * np.pi / period))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
        t = t[..., None]
    elif kind == "checker":
        cell = np.float32(rng.uniform(8, 48))
        a = rng.uniform(0, np.pi / 2)
        ca, sa = np.float32(np.cos(a)), np.float32(np.sin(a))
        u = np.floor((xs * ca + ys * sa) / cell)
        v = np.floor((ys * ca - xs * sa) / cell)
        t = ((u + v) % 2).astype(np.float32)[..., None]
    else:
        t = np.zeros((H, W, 1), np.float32)
    img = c1 + (c2 - c1) * t
    return np.clip(np.broadcast_to(img, (H, W, 3)), 0, 255).astype(np.uint8)


def _clutter(rng, img, people_colors):
    """Random non-articulated shapes; some reuse clothing/skin colours of the people."""
    H, W = img.shape[:2]
    dummy = np.zeros((H, W), np.uint8)
    for _ in range(int(rng.integers(0, 12))):
        if people_colors and rng.random() < 0.35:
            pc = people_colors[int(rng.integers(len(people_colors)))]
            color = _jitter(rng, pc[["skin", "shirt", "thigh", "hair"][int(rng.integers(4))]], 20)
        else:
            color = _rand_color(rng)
        col = _color_tuple(color)
        size = float(np.exp(rng.uniform(np.log(4), np.log(0.45 * min(H, W)))))
        c = np.array([rng.uniform(-0.1, 1.1) * W, rng.uniform(-0.1, 1.1) * H])
        kind = int(rng.integers(5))
        if kind == 0:  # rotated rectangle
            a = rng.uniform(0, np.pi)
            box = cv2.boxPoints(((float(c[0]), float(c[1])),
                                 (size, size * rng.uniform(0.2, 2.5)), np.rad2deg(a)))
            _fill_poly(img, dummy, box, color)
        elif kind == 1:  # disc
            cv2.circle(img, tuple(int(v) for v in _fx(c)), int(size * 0.5 * _ONE), col, -1,
                       cv2.LINE_AA, _SHIFT)
        elif kind == 2:  # ellipse
            cv2.ellipse(img, (int(c[0]), int(c[1])),
                        (int(size * 0.5), int(size * rng.uniform(0.1, 0.6))),
                        rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA)
        elif kind == 3:  # random polygon (star-ish blob)
            k = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = size * 0.5 * rng.uniform(0.4, 1.0, k)
            pts = c + np.stack([np.cos(ang) * rad, np.sin(ang) * rad], axis=1)
            cv2.fillPoly(img, [_fx(pts)], col, cv2.LINE_AA, _SHIFT)
        else:  # thick straight line
            a = rng.uniform(0, np.pi)
            d = np.array([np.cos(a), np.sin(a)]) * size
            p0, p1 = _fx(c - d), _fx(c + d)
            cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), col,
                     int(rng.integers(1, max(2, int(size * 0.15)))), cv2.LINE_AA, _SHIFT)


def _draw_stool(img, person):
    """A stool/chair under a sitting person, drawn with the background (behind everyone)."""
    cam = person["cam"]
    kp = person["kp3d"]
    hips = kp[[_KP["left_hip"], _KP["right_hip"]]]
    ankles = kp[[_KP["left_ankle"], _KP["right_ankle"]]]
    half_w = abs(hips[0, 0] - hips[1, 0]) / 2 + 0.06
    seat_y = -0.07
    floor_y = min(float(ankles[:, 1].min()) - 0.02, seat_y - 0.12)
    z0, z1 = -0.12, 0.16
    dummy = np.zeros(img.shape[:2], np.uint8)
    color = person["stool_color"]
    # legs
    for x in (-half_w, half_w):
        for z in (z0 + 0.02, z1 - 0.02):
            p0 = cam.project(np.array([x, seat_y, z]))
            p1 = cam.project(np.array([x, floor_y, z]))
            _draw_capsule(img, dummy, p0, p1, 0.012 * cam.s, 0.012 * cam.s, color * 0.8)
    # seat slab (convex hull of its 8 corners)
    corners = np.array([[x, y, z] for x in (-half_w, half_w) for y in (seat_y, seat_y - 0.035)
                        for z in (z0, z1)])
    hull = cv2.convexHull(cam.project(corners).astype(np.float32)).reshape(-1, 2)
    _fill_poly(img, dummy, hull, color)


def _render_person(img, mask, person, light):
    cam = person["cam"]
    colors = person["colors"]
    items = []  # (depth, tiebreak, callable)
    torso_depth = None
    for k, part in enumerate(person["parts"]):
        if part[0] == "torso":
            torso_depth = float(cam.depth(part[1]).mean())
            items.append((torso_depth + 0.01, k, part))
    for k, part in enumerate(person["parts"]):
        if part[0] == "capsule":
            d = float(cam.depth(np.stack([part[1], part[2]])).mean())
            items.append((d, k, part))
    head_depth = float(cam.depth(person["head"]["center"]))
    items.append((head_depth, len(person["parts"]), ("head",)))
    # far to near (larger depth = farther from the camera)
    items.sort(key=lambda it: (-it[0], it[1]))
    for depth, _, part in items:
        if part[0] == "torso":
            _draw_torso(img, mask, cam, part[1], colors, light)
        elif part[0] == "head":
            _draw_head(img, mask, cam, person["head"], colors, light)
        else:
            _, p0, p1, r0, r1, key, side = part
            rel = np.clip((depth - torso_depth) / 0.12, -1.0, 1.0)
            shade = 0.9 - 0.2 * rel  # near side brighter, far side darker
            _draw_capsule(img, mask, cam.project(p0), cam.project(p1), r0 * cam.s, r1 * cam.s,
                          colors[key] * shade)


def render_image(rng, image_size=DEFAULT_IMAGE_SIZE, min_people=1, max_people=4,
                 min_person_height=30.0, max_person_height_frac=0.9, min_visible_area=10):
    """Render one synthetic image.

    Args:
        rng (np.random.Generator): the only source of randomness.
        image_size: (H, W).
    Returns:
        (image uint8 (H, W, 3) BGR, persons): persons in painting order (back to front), each a
        dict with ``mask`` (H, W) bool visible mask, ``keypoints`` float (17, 3) COCO (x, y, v)
        with v=0 entries zeroed, ``keypoints_raw`` (17, 2) projected joint positions before
        zeroing, ``behind_head`` bool (17,) face keypoints on the far side of the person's own
        head (unlabelled), and ``activity``. Persons with < ``min_visible_area`` visible pixels
        are omitted.
    """
    H, W = int(image_size[0]), int(image_size[1])
    max_h = max(4.0, max_person_height_frac * H)
    min_h = min(float(min_person_height), 0.5 * max_h)
    n = int(rng.integers(min_people, max_people + 1))
    people = [_sample_person(rng, H, W, min_h, max_h) for _ in range(n)]
    # painting order: mostly small (far) first, large (near) last
    order = np.argsort([np.log(p["height_px"]) + rng.normal(0, 0.35) for p in people],
                       kind="stable")
    people = [people[i] for i in order]
    _place_people(rng, people, H, W)

    img = _background(rng, H, W)
    _clutter(rng, img, [p["colors"] for p in people])
    for p in people:
        if p["has_stool"]:
            _draw_stool(img, p)

    lx = rng.uniform(-0.8, 0.8)
    light = _unit([lx, -rng.uniform(0.3, 0.9), -rng.uniform(0.5, 1.0)])
    label = np.zeros((H, W), np.int32)  # index + 1 of the person painted last at each pixel
    mask = np.zeros((H, W), np.uint8)
    for i, p in enumerate(people):
        mask[:] = 0
        _render_person(img, mask, p, light)
        label[mask > 0] = i + 1

    # photometric post-processing (masks are unaffected)
    out = img.astype(np.float32)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.9))
    out *= np.float32(rng.uniform(0.8, 1.15))
    out += np.float32(rng.uniform(-20, 20))
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(0, 8))
    out += noise
    img = np.clip(out, 0, 255).astype(np.uint8)

    persons = []
    for i, p in enumerate(people):
        vis = label == i + 1
        if int(vis.sum()) < min_visible_area:
            continue
        raw = p["cam"].project(p["kp3d"])
        behind_head = _face_points_hidden(p)
        kps = np.zeros((17, 3))
        for k, (x, y) in enumerate(raw):
            ix, iy = int(round(x)), int(round(y))
            if behind_head[k] or not (0 <= ix < W and 0 <= iy < H):
                continue
            v = 1 if label[iy, ix] > i + 1 else 2
            kps[k] = (x, y, v)
        persons.append(dict(mask=vis, keypoints=kps, keypoints_raw=raw, behind_head=behind_head,
                            activity=p["activity"]))
    return img, persons


# --------------------------------------------------------------------------------------------
# dataset files
# --------------------------------------------------------------------------------------------
def _categories():
    return [{
        "id": 1, "name": "person", "supercategory": "person",
        "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(s) for s in SKELETON],
    }]


def generate_synthetic_people(out_dir, num_images, seed, image_size=DEFAULT_IMAGE_SIZE,
                              min_people=1, max_people=4, min_person_height=30.0,
                              max_person_height_frac=0.9, min_visible_area=10,
                              min_keypoint_area=DEFAULT_MIN_KEYPOINT_AREA, jpeg_quality=92,
                              show_progress=None):
    """Generate ``num_images`` images into ``out_dir/images/{i:06d}.jpg`` and the COCO json
    ``out_dir/annotations.json`` (written last, atomically). Deterministic in ``seed``.

    Args:
        image_size: (H, W) of every image.
        min_people, max_people: people per image (uniform, inclusive).
        min_person_height: smallest standing-figure height in px; the largest is
            ``max_person_height_frac * H``.
        min_visible_area: persons with fewer visible pixels are not annotated.
        min_keypoint_area: persons with a smaller visible area get no keypoints (COCO labels
            keypoints of medium and large people only); 0 keeps every person's keypoints.
        show_progress: tqdm bar; default: when ``num_images > 50``.
    Returns:
        str: path of the json file.
    """
    if not 1 <= min_people <= max_people:
        raise ValueError(f"need 1 <= min_people <= max_people, got {min_people}, {max_people}")
    H, W = int(image_size[0]), int(image_size[1])
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "annotations.json")
    if show_progress is None:
        show_progress = num_images > 50
    logger.info("Generating %d synthetic images (%dx%d, seed %d) into %s",
                num_images, H, W, seed, out_dir)
    start = time.perf_counter()
    it = range(num_images)
    if show_progress:
        try:
            from tqdm import tqdm

            it = tqdm(it, desc="synthetic people", unit="img")
        except ImportError:  # pragma: no cover
            pass

    images, annotations = [], []
    ann_id = 1
    for i in it:
        rng = np.random.default_rng([int(seed), i])
        img, persons = render_image(
            rng, (H, W), min_people=min_people, max_people=max_people,
            min_person_height=min_person_height, max_person_height_frac=max_person_height_frac,
            min_visible_area=min_visible_area)
        file_name = f"{i:06d}.jpg"
        if not cv2.imwrite(os.path.join(img_dir, file_name), img,
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]):
            raise IOError(f"could not write {os.path.join(img_dir, file_name)}")
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "height": H, "width": W})
        for p in persons:
            rle = mask_utils.encode(np.asfortranarray(p["mask"].astype(np.uint8)))
            area = int(mask_utils.area(rle))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            rle["counts"] = rle["counts"].decode("ascii")
            kps = p["keypoints"] if area >= min_keypoint_area else np.zeros((17, 3))
            flat = []
            for x, y, v in kps:
                flat += [round(float(x), 2), round(float(y), 2), int(v)]
            annotations.append({
                "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                "segmentation": rle, "area": area, "bbox": bbox,
                "keypoints": flat, "num_keypoints": int((kps[:, 2] > 0).sum()),
                "activity": p["activity"],
            })
            ann_id += 1
    dataset = {
        "info": {"description": "multitask synthetic crowded people", "version": GENERATOR_VERSION,
                 "seed": int(seed), "num_images": int(num_images),
                 "min_keypoint_area": int(min_keypoint_area)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _categories(),
        "activity_classes": list(ACTIVITY_CLASSES),
    }
    atomic_write(json_path, lambda f: json.dump(dataset, f), mode="w")
    logger.info("Wrote %d images with %d people to %s in %.1fs", len(images), len(annotations),
                out_dir, time.perf_counter() - start)
    return json_path


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

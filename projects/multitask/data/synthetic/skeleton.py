"""COCO's 17-keypoint skeleton and the 3D articulated figure built on it (forward kinematics)."""

import numpy as np

from ...structures.keypoints import COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_SKELETON
from .geometry import _rot_x, _rot_y, _unit
from .poses import _sample_pose

# COCO person_keypoints order, names and skeleton (1-based keypoint indices) exactly as in COCO
KEYPOINT_NAMES = list(COCO_PERSON_KEYPOINT_NAMES)
SKELETON = [[KEYPOINT_NAMES.index(a) + 1, KEYPOINT_NAMES.index(b) + 1]
            for a, b in COCO_PERSON_SKELETON]

_KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}


def _limb_dir(flex, abd, side):
    """Unit direction in the body frame (X = person's left, Y = up, Z = forward).

    A hanging limb points down; ``flex`` swings it forward (towards +Z) in the sagittal plane and
    ``abd`` moves it outwards to the person's ``side`` (+1 left, -1 right). Radians.
    """
    return np.array(
        [side * np.sin(abd), -np.cos(abd) * np.cos(flex), np.cos(abd) * np.sin(flex)]
    )


def _build_figure(rng, activity):
    """3D figure in the body frame (units: standing height ~1). Returns (keypoints (17, 3), parts,
    head) where parts are (kind, ...) in body coordinates."""
    pose = _sample_pose(rng, activity)
    body = _sample_body(rng)
    kp, parts, head = _figure_from_pose(rng, pose, body)
    return kp, parts, head, pose


def _figure_from_pose(rng, pose, body):
    """The 3D figure of a given ``pose`` (see :func:`_sample_pose`) and ``body`` (see
    :func:`_sample_body`). ``rng`` draws the foot angles and the hair line (4 numbers); a fresh
    generator with the same seed therefore gives the same figure, which lets a clip re-pose one
    person frame after frame. Returns (keypoints (17, 3), parts, head)."""
    kp = np.zeros((17, 3))
    parts = []  # ("capsule", p0, p1, r0, r1, color_key, side)  with p in body coords
    _add_legs(rng, pose, body, kp, parts)
    # upper body: torso frame, then leaned about the pelvis
    lean = _rot_x(np.deg2rad(pose["lean"]))
    _add_arms(pose, body, lean, kp, parts)
    _add_torso(body, lean, parts)
    head = _add_head(rng, pose, body, lean, kp, parts)
    return kp, parts, head


def _sample_body(rng):
    """Random body proportions (segment lengths, half widths, radii) in body units."""
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
    return dict(thigh=thigh, shin=shin, torso_len=torso_len, upper_arm=upper_arm,
                forearm=forearm, sh_half=sh_half, hip_half=hip_half,
                torso_half_depth=torso_half_depth, head_r=head_r, neck_len=neck_len,
                limb_w=limb_w)


def _add_legs(rng, pose, body, kp, parts):
    """Hips, knees, ankles and feet (pelvis frame, not leaned): fills ``kp``, appends the thighs
    and shins of both sides, then both feet."""
    rad = np.deg2rad
    limb_w = body["limb_w"]
    feet = {}
    for side_name, side in (("left", 1.0), ("right", -1.0)):
        p = pose["L" if side > 0 else "R"]
        hip = np.array([side * body["hip_half"], 0.0, 0.0])
        a_thigh = rad(p["hip_flex"])
        abd = rad(p["hip_abd"])
        knee = hip + body["thigh"] * _limb_dir(a_thigh, abd, side)
        a_shin = a_thigh - rad(p["knee"])
        ankle = knee + body["shin"] * _limb_dir(a_shin, abd * 0.5, side)
        toe = ankle + 0.075 * _limb_dir(a_shin + rad(rng.uniform(75, 100)), 0.0, side)
        kp[_KP[side_name + "_hip"]] = hip
        kp[_KP[side_name + "_knee"]] = knee
        kp[_KP[side_name + "_ankle"]] = ankle
        parts.append(("capsule", hip, knee, 0.052 * limb_w, 0.036 * limb_w, "thigh", side))
        parts.append(("capsule", knee, ankle, 0.036 * limb_w, 0.026 * limb_w, "shin", side))
        feet[side] = (ankle, toe)
    for side, (ankle, toe) in feet.items():
        parts.append(("capsule", ankle, toe, 0.026 * limb_w, 0.022 * limb_w, "foot", side))


def _add_arms(pose, body, lean, kp, parts):
    """Shoulders, elbows, wrists and hands in the torso frame, rotated by ``lean``."""
    rad = np.deg2rad
    up = {}
    for side_name, side in (("left", 1.0), ("right", -1.0)):
        p = pose["L" if side > 0 else "R"]
        shoulder = np.array([side * body["sh_half"], body["torso_len"], 0.0])
        a_up = rad(p["sh_flex"])
        abd = rad(p["sh_abd"])
        elbow = shoulder + body["upper_arm"] * _limb_dir(a_up, abd, side)
        a_fore = a_up + rad(p["elbow"])
        fdir = _limb_dir(a_fore, abd * 0.6, side)
        wrist = elbow + body["forearm"] * fdir
        hand = wrist + 0.05 * fdir
        up[side_name] = (shoulder, elbow, wrist, hand)
    for side_name, side in (("left", 1.0), ("right", -1.0)):
        shoulder, elbow, wrist, hand = (lean @ q for q in up[side_name])
        kp[_KP[side_name + "_shoulder"]] = shoulder
        kp[_KP[side_name + "_elbow"]] = elbow
        kp[_KP[side_name + "_wrist"]] = wrist
        w = body["limb_w"]
        parts.append(("capsule", shoulder, elbow, 0.034 * w, 0.027 * w, "upper_arm", side))
        parts.append(("capsule", elbow, wrist, 0.027 * w, 0.021 * w, "forearm", side))
        parts.append(("capsule", wrist, hand, 0.024 * w, 0.024 * w, "hand", side))


def _add_torso(body, lean, parts):
    """The torso: a box (frustum) from the hips to the shoulders, 8 corners in torso frame."""
    sh_half, hip_half = body["sh_half"], body["hip_half"]
    torso_half_depth = body["torso_half_depth"]
    top_y, bot_y = body["torso_len"] + 0.02, -0.045
    tw, bw = sh_half + 0.02, hip_half + 0.035
    corners = []
    for y, w, dz in ((top_y, tw, torso_half_depth), (bot_y, bw, torso_half_depth * 0.95)):
        for sx in (1.0, -1.0):
            for sz in (1.0, -1.0):
                corners.append(lean @ np.array([sx * w, y, sz * dz]))
    parts.append(("torso", np.array(corners)))


def _add_head(rng, pose, body, lean, kp, parts):
    """The neck capsule and the head sphere with its face keypoints; returns the head dict."""
    rad = np.deg2rad
    torso_len, head_r, limb_w = body["torso_len"], body["head_r"], body["limb_w"]
    neck_base = lean @ np.array([0.0, torso_len - 0.01, 0.0])
    head_c = lean @ np.array([0.0, torso_len + body["neck_len"] + head_r * 0.85, 0.012])
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
    return dict(center=head_c, radius=head_r, rot=head_rot,
                hair_top=rng.uniform(0.15, 0.55), hair_back=rng.uniform(-0.35, 0.05))

"""Motion of the people of a synthetic clip: the gait cycle of walkers and runners, the sway of
people standing or sitting, and where each person is on the ground plane.

A *track* is one person of a clip: a fixed body, colours, facing direction and size, plus a
motion model. :func:`_posed_person` turns a track and a frame index into the person dict that
:func:`multitask.data.synthetic.draw._render_person` paints (the same dict a still image uses).
"""

import numpy as np

from .appearance import _person_colors, _rand_color
from .geometry import _Camera
from .poses import _sample_pose
from .scene import _figure_extent, _sample_yaw
from .skeleton import _figure_from_pose, _sample_body

MOVING_ACTIVITIES = ("walking", "running")

# Gait templates: (low, high) of the uniform per-person draws. Angles in degrees; ``speed`` in
# standing heights per second; ``stride`` (one full cycle = two steps) in standing heights, so the
# cadence (cycles per second) is speed / stride, ~1 Hz walking and ~1.4 Hz running; ``bob`` is the
# vertical oscillation of the pelvis (twice per cycle) as a fraction of the height. Running is
# faster, leans more and swings with larger amplitudes (high knee lift, heel kick, bent elbows).
_GAITS = {
    "walking": dict(speed=(0.6, 0.95), stride=(0.75, 0.9), hip_amp=(15, 26), hip_off=(0, 5),
                    knee0=(3, 10), knee_amp=(35, 55), arm_frac=(0.6, 1.1), elbow0=(8, 20),
                    elbow_amp=(10, 25), hip_abd=(0, 6), sh_abd=(3, 12), lean=(0, 6),
                    bob=(0.008, 0.015)),
    "running": dict(speed=(1.6, 2.4), stride=(1.3, 1.7), hip_amp=(35, 48), hip_off=(12, 22),
                    knee0=(20, 35), knee_amp=(60, 90), arm_frac=(0.9, 1.2), elbow0=(70, 95),
                    elbow_amp=(0, 20), hip_abd=(0, 8), sh_abd=(4, 16), lean=(8, 20),
                    bob=(0.02, 0.035)),
}
# Sway of people in place: amplitudes of the lean (deg), head yaw (deg), arm swing (deg) and
# sideways shift (fraction of the height); sitting people move less than standing ones.
_SWAYS = {
    "standing": dict(lean=1.5, head=6.0, arm=4.0, shift=0.008),
    "sitting": dict(lean=1.0, head=5.0, arm=3.0, shift=0.002),
}


def _sample_gait(rng, activity):
    """Per-person gait parameters of a walker or runner (see :data:`_GAITS`)."""
    gait = {k: float(rng.uniform(*v)) for k, v in _GAITS[activity].items()}
    gait["head_yaw"] = float(np.clip(rng.normal(0, 10), -30, 30))
    gait["head_nod"] = float(np.clip(rng.normal(0, 6), -15, 20))
    gait["phase0"] = float(rng.uniform(0, 2 * np.pi))
    # walkers' pelvis is highest at mid-stance, runners' at mid-flight
    gait["bob_sign"] = -1.0 if activity == "walking" else 1.0
    return gait


def _gait_pose(gait, phase):
    """Joint angles (the dict of :func:`_sample_pose`) at gait ``phase`` (radians).

    The left leg has phase ``phase``, the right one ``phase + pi``. A thigh swings as
    ``hip_off + hip_amp * sin``; its knee bends most in mid-swing (thigh moving forward, ``cos >
    0``); each arm swings opposite to the leg of its side and its elbow bends more in front.
    """
    pose = {}
    arm_amp = gait["arm_frac"] * gait["hip_amp"]
    for side, psi in (("L", phase), ("R", phase + np.pi)):
        s, c = float(np.sin(psi)), float(np.cos(psi))
        pose[side] = dict(
            hip_flex=gait["hip_off"] + gait["hip_amp"] * s, hip_abd=gait["hip_abd"],
            knee=gait["knee0"] + gait["knee_amp"] * max(0.0, c),
            sh_flex=-arm_amp * s, sh_abd=gait["sh_abd"],
            elbow=gait["elbow0"] + gait["elbow_amp"] * max(0.0, -s),
        )
    pose.update(lean=gait["lean"], head_yaw=gait["head_yaw"], head_nod=gait["head_nod"])
    return pose


def _sample_sway(rng, activity):
    """Rest pose (the still images' template) and slow sway of a person standing or sitting."""
    sway = dict(_SWAYS[activity])
    sway["pose"] = _sample_pose(rng, activity)
    sway["freq"] = float(rng.uniform(0.15, 0.35))  # Hz
    sway["phases"] = rng.uniform(0, 2 * np.pi, 3)
    return sway


def _sway_pose(sway, t):
    """(pose, sideways shift as a fraction of the height) of a swaying person at time ``t`` (s)."""
    base = sway["pose"]
    w = 2 * np.pi * sway["freq"] * t
    p0, p1, p2 = sway["phases"]
    pose = {"L": dict(base["L"]), "R": dict(base["R"])}
    pose["lean"] = base["lean"] + sway["lean"] * np.sin(w + p0)
    pose["head_yaw"] = base["head_yaw"] + sway["head"] * np.sin(0.7 * w + p1)
    pose["head_nod"] = base["head_nod"]
    pose["L"]["sh_flex"] += sway["arm"] * np.sin(w + p2)
    pose["R"]["sh_flex"] -= sway["arm"] * np.sin(w + p2)
    return pose, sway["shift"] * float(np.sin(w + p0))


def _sample_track(rng, activity, scene):
    """One person of a clip, not yet placed: body, colours, size, depth and motion model.

    ``scene``: dict with ``horizon`` (image row of the horizon), ``px_per_row`` (standing height
    in px of a person whose feet are one row below the horizon, times the rows), ``min_h``,
    ``max_h``, ``pitch`` and ``fps``. The standing height is log-uniform in [min_h, max_h] and
    fixes the feet's row (perspective: farther people are smaller and higher up).
    """
    body = _sample_body(rng)
    colors = _person_colors(rng)
    height = float(np.exp(rng.uniform(np.log(scene["min_h"]), np.log(scene["max_h"]))))
    size_factor = rng.uniform(0.88, 1.08)  # people differ in height
    y_foot = scene["horizon"] + height / (size_factor * scene["px_per_row"])
    track = dict(activity=activity, body=body, colors=colors, height_px=height,
                 y_foot=float(y_foot), figure_seed=int(rng.integers(2 ** 62)),
                 roll=float(np.deg2rad(np.clip(rng.normal(0, 3), -8, 8))),
                 ax=float(rng.uniform(0.9, 1.1)))
    if activity in MOVING_ACTIVITIES:
        track["direction"] = 1.0 if rng.random() < 0.5 else -1.0  # +1: to the image right
        # facing the way they go: side views turned up to ~35 deg towards or away from the camera
        turn = float(np.clip(rng.normal(0, 0.3), -0.6, 0.6))
        track["yaw"] = track["direction"] * (np.pi / 2 + turn)
        gait = _sample_gait(rng, activity)
        track["gait"] = gait
        speed_px = gait["speed"] * height / scene["fps"]
        track["vx"] = speed_px * float(np.sin(track["yaw"]))  # px per frame
        track["cycles_per_frame"] = gait["speed"] / (gait["stride"] * scene["fps"])
    else:
        track["yaw"] = _sample_yaw(rng)
        track["sway"] = _sample_sway(rng, activity)
    track["has_stool"] = activity == "sitting" and rng.random() < 0.7
    track["stool_color"] = _rand_color(rng, sat=(0.0, 0.6), val=(0.2, 0.8))
    _set_anchor(track, scene)
    return track


def _set_anchor(track, scene):
    """Offset from (box centre x, feet row) to the camera translation, from the rest pose, and
    the half width of the rest pose's box."""
    person = _posed_person(track, 0, scene, at_rest=True)
    lo, hi = _figure_extent(person)
    track["anchor"] = np.array([-0.5 * (lo[0] + hi[0]), -hi[1]])
    track["half_width"] = 0.5 * float(hi[0] - lo[0])


def _place_track(rng, track, W, start_frame):
    """Where and when the track starts. A person present from the first frame stands anywhere
    across the image; a later arrival walks in from outside the border it comes from."""
    track["start"] = int(start_frame)
    if start_frame == 0:
        track["x0"] = float(rng.uniform(0.05, 0.95) * (W - 1))
        return
    outside = track["half_width"] + 0.15 * track["height_px"]
    track["x0"] = -outside if track["direction"] > 0 else W - 1 + outside


def _track_position(track, frame, fps):
    """(pose, box centre x, feet row) of a track at ``frame`` (frames count from its start)."""
    t = frame - track["start"]
    height = track["height_px"]
    if "gait" in track:
        gait = track["gait"]
        phase = gait["phase0"] + 2 * np.pi * track["cycles_per_frame"] * t
        bob = gait["bob_sign"] * gait["bob"] * height * float(np.cos(2 * phase))
        return _gait_pose(gait, phase), track["x0"] + track["vx"] * t, track["y_foot"] + bob
    pose, shift = _sway_pose(track["sway"], frame / fps)
    return pose, track["x0"] + shift * height, track["y_foot"]


def _posed_person(track, frame, scene, at_rest=False):
    """The person dict painted for ``track`` at ``frame`` (body frame figure, camera, colours);
    ``at_rest``: the rest pose (gait phase 0 or the unswayed pose) at translation 0."""
    if at_rest:
        pose = _gait_pose(track["gait"], 0.0) if "gait" in track else track["sway"]["pose"]
        x = y = 0.0
    else:
        pose, x, y = _track_position(track, frame, scene["fps"])
    figure_rng = np.random.default_rng(track["figure_seed"])  # same feet and hair every frame
    kp3d, parts, head = _figure_from_pose(figure_rng, pose, track["body"])
    cam = _Camera(track["yaw"], scene["pitch"], track["roll"], track["height_px"], track["ax"])
    if not at_rest:
        cam.t = np.array([x, y]) + track["anchor"]
    return dict(activity=track["activity"], track_id=track.get("track_id"), kp3d=kp3d,
                parts=parts, head=head, cam=cam, colors=track["colors"],
                stool_color=track["stool_color"])


def _is_near_image(track, frame, fps, W):
    """Whether the track has started and its box may reach into the image at ``frame``
    (walkers far outside the borders are skipped)."""
    if frame < track["start"]:
        return False
    if "gait" not in track:
        return True
    _, x, _ = _track_position(track, frame, fps)
    reach = track["half_width"] + 0.3 * track["height_px"]
    return -reach < x < W - 1 + reach

"""Activity classes and their joint-angle templates."""

import numpy as np

ACTIVITY_CLASSES = ["walking", "running", "sitting", "standing"]


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

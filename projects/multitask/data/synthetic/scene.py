"""Composing one image: sampling and placing people, painting them in depth order, visibility."""

import cv2
import numpy as np

from .appearance import _person_colors, _rand_color
from .background import _background, _clutter, _draw_stool
from .draw import _render_person
from .geometry import _Camera, _unit
from .poses import ACTIVITY_CLASSES
from .skeleton import _build_figure

DEFAULT_IMAGE_SIZE = (256, 320)  # (H, W)
# Facing direction, matched to COCO: in coco-mini's people with both shoulders labelled, ~78 % face
# the camera (left shoulder on the image right) and ~20 % face away; these give ~74 % and ~18 %.
FRONT_FACING_PROB = 0.6
FRONT_YAW_STD_DEG = 40.0
# A face keypoint whose direction from the head centre points away from the camera by more than
# this cosine is behind the head: unlabelled, as in COCO (ears on the head's outline stay labelled).
FACE_HIDDEN_DEPTH = 0.3


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
    people = _sample_people(rng, H, W, min_people, max_people, min_person_height,
                            max_person_height_frac)

    img = _background(rng, H, W)
    _clutter(rng, img, [p["colors"] for p in people])
    for p in people:
        if p["has_stool"]:
            _draw_stool(img, p)

    label = _paint_people(rng, img, people)
    img = _photometric(rng, img)
    return img, _visible_persons(people, label, min_visible_area)


def _sample_people(rng, H, W, min_people, max_people, min_person_height, max_person_height_frac):
    """The people of one image, in painting order and placed in the image."""
    max_h = max(4.0, max_person_height_frac * H)
    min_h = min(float(min_person_height), 0.5 * max_h)
    n = int(rng.integers(min_people, max_people + 1))
    people = [_sample_person(rng, H, W, min_h, max_h) for _ in range(n)]
    # painting order: mostly small (far) first, large (near) last
    order = np.argsort([np.log(p["height_px"]) + rng.normal(0, 0.35) for p in people],
                       kind="stable")
    people = [people[i] for i in order]
    _place_people(rng, people, H, W)
    return people


def _paint_people(rng, img, people):
    """Paint ``people`` in order under a random light; returns the int32 (H, W) label map: index
    + 1 of the person painted last at each pixel, 0 for the background."""
    H, W = img.shape[:2]
    lx = rng.uniform(-0.8, 0.8)
    light = _unit([lx, -rng.uniform(0.3, 0.9), -rng.uniform(0.5, 1.0)])
    label = np.zeros((H, W), np.int32)  # index + 1 of the person painted last at each pixel
    mask = np.zeros((H, W), np.uint8)
    for i, p in enumerate(people):
        mask[:] = 0
        _render_person(img, mask, p, light)
        label[mask > 0] = i + 1
    return label


def _photometric(rng, img):
    """Photometric post-processing: blur, gain, offset and sensor noise (masks are unaffected)."""
    out = img.astype(np.float32)
    if rng.random() < 0.5:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 0.9))
    out *= np.float32(rng.uniform(0.8, 1.15))
    out += np.float32(rng.uniform(-20, 20))
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= np.float32(rng.uniform(0, 8))
    out += noise
    return np.clip(out, 0, 255).astype(np.uint8)


def _visible_persons(people, label, min_visible_area):
    """Visible masks and COCO keypoints (with visibility) of the painted people; see
    :func:`render_image`."""
    H, W = label.shape
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
    return persons

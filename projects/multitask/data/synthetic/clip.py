"""Rendering a synthetic clip frame by frame: one static scene (background, clutter, stools,
light, camera) with people who keep their body and clothes while they move."""

import cv2
import numpy as np

from .background import _background, _clutter, _draw_stool
from .draw import _render_person
from .geometry import _unit
from .motion import MOVING_ACTIVITIES, _is_near_image, _place_track, _posed_person, _sample_track
from .poses import ACTIVITY_CLASSES
from .scene import DEFAULT_IMAGE_SIZE, _visible_persons

# First entry of every seed sequence of a clip, so clips never share random streams with the
# still images (``default_rng([seed, i])``). Sub-streams: 0 the scene, 1 a person, 2 a frame.
_CLIP_STREAM = 0x636C6970
_SCENE, _PERSON, _FRAME = 0, 1, 2
_RUNNING_ARRIVAL_PROB = 0.3  # an arrival runs instead of walking


def _stream(seed, clip_index, *keys):
    """The random generator of one sub-stream of clip ``(seed, clip_index)``."""
    return np.random.default_rng([_CLIP_STREAM, int(seed), int(clip_index), *keys])


def render_clip(seed, num_frames, fps=25, image_size=DEFAULT_IMAGE_SIZE, clip_index=0,
                min_people=1, max_people=4, arrival_rate=0.5, activities=None,
                min_person_height=30.0, max_person_height_frac=0.75, min_visible_area=10):
    """Render a synthetic clip; yields ``(image, persons)`` per frame.

    The camera is static. ``min_people``..``max_people`` people (uniform) are in the scene from
    the first frame, with random activities or the given ``activities`` (a list of names of
    :data:`ACTIVITY_CLASSES`, one per person). Then walkers and runners enter through the left or
    right border, as a Poisson process of ``arrival_rate`` people per second. Walkers and
    runners cross the image with a gait cycle and leave it; people standing or sitting stay in
    place and sway a little. Nearer people stand lower in the image, are larger and are painted
    later, so people who cross occlude each other in depth order.

    Args:
        seed, clip_index: the clip is drawn from these alone (not from the global RNG state);
            frame ``f`` does not depend on ``num_frames`` (a clip is a prefix of a longer one).
        fps: frames per second; speeds and cadences are per second, so they look the same at
            any frame rate.
        image_size: (H, W).
        min_person_height: smallest standing height in px; the largest is
            ``max_person_height_frac * H`` (a person whose feet touch the bottom border).
        min_visible_area: persons with fewer visible pixels are not returned.
    Yields:
        (image uint8 (H, W, 3) BGR, persons): persons in painting order (back to front), each the
        dict of :func:`render_image` (``mask``, ``keypoints``, ``keypoints_raw``, ``behind_head``,
        ``activity``) plus ``track_id`` and ``visibility``: visible pixels / pixels the person
        covers in the image (occlusion by other people only). Track ids are stable over the clip:
        1..n for the people of the first frame, then the arrivals in order of arrival (one who
        never becomes visible leaves a gap).
    """
    H, W = int(image_size[0]), int(image_size[1])
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 1 <= min_people <= max_people:
        raise ValueError(f"need 1 <= min_people <= max_people, got {min_people}, {max_people}")
    rng = _stream(seed, clip_index, _SCENE)
    scene = _sample_scene(rng, H, W, fps, min_person_height, max_person_height_frac)
    tracks = _initial_tracks(rng, seed, clip_index, scene, min_people, max_people, activities)
    background = _background(rng, H, W)
    _clutter(rng, background, [t["colors"] for t in tracks])
    for track in tracks:
        if track["has_stool"]:
            _draw_stool(background, _posed_person(track, 0, scene))
    light = _unit([rng.uniform(-0.8, 0.8), -rng.uniform(0.3, 0.9), -rng.uniform(0.5, 1.0)])
    photometric = _sample_photometric(rng)
    tracks += _arrivals(rng, seed, clip_index, scene, num_frames, arrival_rate, len(tracks))
    # painting order: by feet row (depth), then track id; fixed for the whole clip
    tracks.sort(key=lambda t: (t["y_foot"], t["track_id"]))
    for frame in range(num_frames):
        people = [_posed_person(t, frame, scene) for t in tracks
                  if _is_near_image(t, frame, fps, W)]
        img = background.copy()
        label, covered = _paint(img, people, light)
        img = _apply_photometric(img, photometric, _stream(seed, clip_index, _FRAME, frame))
        yield img, _frame_persons(people, label, covered, min_visible_area)


def _sample_scene(rng, H, W, fps, min_person_height, max_person_height_frac):
    """Camera and ground plane of a clip (see :func:`motion._sample_track`)."""
    max_h = max(4.0, max_person_height_frac * H)
    min_h = min(float(min_person_height), 0.5 * max_h)
    horizon = float(rng.uniform(0.15, 0.35) * H)
    return dict(H=H, W=W, fps=float(fps), min_h=min_h, max_h=max_h, horizon=horizon,
                px_per_row=max_h / (H - horizon), pitch=float(np.deg2rad(rng.uniform(-3, 15))))


def _initial_tracks(rng, seed, clip_index, scene, min_people, max_people, activities):
    """The people present from the first frame, with track ids 1..n."""
    if activities is None:
        n = int(rng.integers(min_people, max_people + 1))
        activities = [ACTIVITY_CLASSES[int(rng.integers(len(ACTIVITY_CLASSES)))]
                      for _ in range(n)]
    unknown = [a for a in activities if a not in ACTIVITY_CLASSES]
    if unknown:
        raise ValueError(f"unknown activities {unknown}; expected names of {ACTIVITY_CLASSES}")
    return [_new_track(seed, clip_index, scene, k, activity, 0)
            for k, activity in enumerate(activities)]


def _arrivals(rng, seed, clip_index, scene, num_frames, arrival_rate, first_index):
    """Walkers and runners entering after the first frame (a Poisson process in time). Drawn last
    from the scene stream and stopped at ``num_frames``, so earlier frames do not depend on it."""
    tracks = []
    t = 0.0
    while arrival_rate > 0:
        t += rng.exponential(scene["fps"] / arrival_rate)
        if t >= num_frames:
            break
        running = rng.random() < _RUNNING_ARRIVAL_PROB
        activity = MOVING_ACTIVITIES[1] if running else MOVING_ACTIVITIES[0]
        tracks.append(_new_track(seed, clip_index, scene, first_index + len(tracks), activity,
                                 max(1, int(t))))
    return tracks


def _new_track(seed, clip_index, scene, k, activity, start_frame):
    """Track ``k`` (id ``k + 1``) of the clip, drawn from its own stream and placed."""
    rng = _stream(seed, clip_index, _PERSON, k)
    track = _sample_track(rng, activity, scene)
    track["track_id"] = k + 1
    _place_track(rng, track, scene["W"], start_frame)
    return track


def _paint(img, people, light):
    """Paint ``people`` in order; returns the int32 label map (index + 1 of the person painted
    last at each pixel, 0 for the background) and the pixels each person covers (occluded or
    not)."""
    H, W = img.shape[:2]
    label = np.zeros((H, W), np.int32)
    mask = np.zeros((H, W), np.uint8)
    covered = []
    for i, person in enumerate(people):
        mask[:] = 0
        _render_person(img, mask, person, light)
        drawn = mask > 0
        label[drawn] = i + 1
        covered.append(int(drawn.sum()))
    return label, covered


def _frame_persons(people, label, covered, min_visible_area):
    """Visible persons of one frame (:func:`_visible_persons`) with ``track_id`` and
    ``visibility``."""
    persons = []
    # with min_visible_area 0, _visible_persons returns every painted person, in order
    for person, painted, n_covered in zip(_visible_persons(people, label, 0), people, covered):
        area = int(person["mask"].sum())
        if area < max(1, min_visible_area):
            continue
        person["track_id"] = painted["track_id"]
        person["visibility"] = area / n_covered
        persons.append(person)
    return persons


def _sample_photometric(rng):
    """Photometric parameters of a clip (blur, gain, offset, noise level; as the still images)."""
    blur = float(rng.uniform(0.3, 0.9)) if rng.random() < 0.5 else 0.0
    return dict(blur=blur, gain=float(rng.uniform(0.8, 1.15)),
                offset=float(rng.uniform(-20, 20)), noise=float(rng.uniform(0, 8)))


def _apply_photometric(img, params, rng):
    """Blur, gain and offset of the clip, and fresh sensor noise from ``rng`` (every frame)."""
    out = img.astype(np.float32)
    if params["blur"] > 0:
        out = cv2.GaussianBlur(out, (0, 0), params["blur"])
    out *= np.float32(params["gain"])
    out += np.float32(params["offset"])
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= np.float32(params["noise"])
    out += noise
    return np.clip(out, 0, 255).astype(np.uint8)

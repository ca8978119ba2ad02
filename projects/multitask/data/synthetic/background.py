"""What is painted behind the people: backgrounds, clutter and stools."""

import cv2
import numpy as np

from .appearance import _jitter, _rand_color
from .draw import _ONE, _SHIFT, _color_tuple, _draw_capsule, _fill_poly, _fx
from .skeleton import _KP


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

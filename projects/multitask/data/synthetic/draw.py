"""Painting one figure: capsule limbs, the shaded torso box and the head, with its mask."""

import cv2
import numpy as np

from .geometry import _unit

_SHIFT = 4  # fixed-point bits for cv2 drawing (sub-pixel accuracy)
_ONE = 1 << _SHIFT


def _fx(p):
    """Float pixel coordinates -> cv2 fixed-point int32 coordinates."""
    return np.round(np.asarray(p, dtype=np.float64) * _ONE).astype(np.int32)


def _color_tuple(c):
    return tuple(float(v) for v in np.clip(c, 0, 255))


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

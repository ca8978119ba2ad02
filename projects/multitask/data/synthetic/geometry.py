"""Rotations, unit vectors and the orthographic camera of the synthetic figures."""

import numpy as np


def _rot_x(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_y(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_z(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / max(np.linalg.norm(v), 1e-12)


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

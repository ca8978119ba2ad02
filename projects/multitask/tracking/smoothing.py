"""One-Euro filtering of keypoints over time (Casiez, Roussel and Vogel, CHI 2012).

The One-Euro filter is a first-order low-pass filter whose cutoff frequency grows with the
signal's speed: slow motion is smoothed strongly (little jitter), fast motion lightly (little
lag). For a sample ``x`` at time ``t`` (seconds), ``dt`` after the previous one::

    alpha(fc)  = 1 / (1 + 1 / (2 pi fc dt))
    dx         = (x - x_prev_hat) / dt
    dx_hat     = alpha(d_cutoff) dx + (1 - alpha(d_cutoff)) dx_prev_hat
    fc         = min_cutoff + beta |dx_hat|
    x_hat      = alpha(fc) x + (1 - alpha(fc)) x_prev_hat

``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` (Hz per unit/s of speed: per pixel/s
for image coordinates) how fast the cutoff rises with speed, ``d_cutoff`` (Hz) the smoothing of
the speed estimate. The first sample of a signal is passed through (``dx_hat = 0``).

:class:`OneEuroFilter` filters an array of independent signals at once, each element with its own
state and last time stamp, so elements may be reset separately. :class:`KeypointSmoother` holds
one filter per track for the ``(K, 2)`` keypoint coordinates; a keypoint scored below the
threshold is passed through unchanged and its filter restarts at its next confident sample.
"""

import math
from typing import Dict, Iterable, Optional

import numpy as np

__all__ = ["OneEuroFilter", "KeypointSmoother", "smoothing_factor"]


def smoothing_factor(cutoff, dt):
    """The exponential smoothing factor ``alpha`` of a low-pass filter with cutoff frequency
    ``cutoff`` (Hz) sampled every ``dt`` seconds (arrays broadcast)."""
    r = 2.0 * math.pi * np.asarray(cutoff, dtype=np.float64) * dt
    return r / (r + 1.0)


def _check_params(min_cutoff: float, beta: float, d_cutoff: float) -> None:
    if not min_cutoff > 0:
        raise ValueError(f"min_cutoff must be > 0 (Hz), got {min_cutoff}")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if not d_cutoff > 0:
        raise ValueError(f"d_cutoff must be > 0 (Hz), got {d_cutoff}")


class OneEuroFilter:
    """Vectorised One-Euro filter (module docstring) of an array of signals.

    ``f(x, t)`` filters ``x`` (any shape, fixed by the first call) sampled at time ``t`` seconds
    and returns the filtered array of the same shape. ``valid`` (bool, broadcasting to ``x``)
    marks the elements to filter; the others (and non-finite ones) are returned unchanged and
    their state is cleared, so their next valid sample starts afresh. ``t`` must increase for
    every element that has a state.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        _check_params(min_cutoff, beta, d_cutoff)
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget every element's state (the shape is set again by the next call)."""
        self._x: Optional[np.ndarray] = None  # filtered value, NaN = no state
        self._dx: Optional[np.ndarray] = None  # filtered speed
        self._t: Optional[np.ndarray] = None  # time of the last sample

    @property
    def shape(self) -> Optional[tuple]:
        """The shape of the filtered array (None before the first call)."""
        return None if self._x is None else self._x.shape

    def __call__(self, x: np.ndarray, t: float, valid: Optional[np.ndarray] = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        t = float(t)
        if self._x is None:
            self._x = np.full(x.shape, np.nan)
            self._dx = np.full(x.shape, np.nan)
            self._t = np.full(x.shape, np.nan)
        elif x.shape != self._x.shape:
            raise ValueError(f"x: shape {x.shape} differs from this filter's {self._x.shape}")
        ok = np.isfinite(x)
        if valid is not None:
            ok &= np.broadcast_to(np.asarray(valid, dtype=bool), x.shape)
        has_state = ~np.isnan(self._t)
        run = ok & has_state
        if np.any(t <= self._t[run]):
            raise ValueError(f"t: {t} s is not after the previous sample's "
                             f"{np.nanmax(self._t[run])} s")
        with np.errstate(invalid="ignore"):
            dt = np.where(run, t - self._t, 1.0)
            dx_hat = self._lowpass((x - self._x) / dt, self._dx, self.d_cutoff, dt)
            cutoff = self.min_cutoff + self.beta * np.abs(dx_hat)
            x_hat = self._lowpass(x, self._x, cutoff, dt)
        fresh = ok & ~has_state
        self._x = np.where(run, x_hat, np.where(fresh, x, np.nan))
        self._dx = np.where(run, dx_hat, np.where(fresh, 0.0, np.nan))
        self._t = np.where(ok, t, np.nan)
        return np.where(run, x_hat, x)

    @staticmethod
    def _lowpass(x, previous, cutoff, dt):
        a = smoothing_factor(cutoff, dt)
        return a * x + (1.0 - a) * previous


class KeypointSmoother:
    """One-Euro smoothing of each track's keypoints, one filter state per track and keypoint.

    ``smooth(track_id, keypoints (K, 3), t) -> (K, 3)``: x, y filtered, the score column as
    given; a keypoint whose score is below ``keypoint_threshold`` is returned unchanged and
    resets that keypoint's filter. ``forget(track_ids)`` drops the states of deleted tracks.
    The first call of a track fixes its ``K``.
    """

    def __init__(
        self,
        min_cutoff: float = 1.0,
        beta: float = 0.0,
        d_cutoff: float = 1.0,
        keypoint_threshold: float = 0.0,
    ):
        _check_params(min_cutoff, beta, d_cutoff)
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.keypoint_threshold = float(keypoint_threshold)
        self._filters: Dict[int, OneEuroFilter] = {}

    def smooth(self, track_id: int, keypoints: np.ndarray, t: float) -> np.ndarray:
        """Smoothed keypoints ``(K, 3)`` of track ``track_id`` for its keypoints ``(K, 3)`` (x, y,
        score) at time ``t`` seconds."""
        kps = np.asarray(keypoints, dtype=np.float64)
        if kps.ndim != 2 or kps.shape[1] != 3:
            raise ValueError(f"keypoints: expected shape (K, 3) (x, y, score), got {kps.shape}")
        filt = self._filters.get(int(track_id))
        if filt is None:
            filt = OneEuroFilter(self.min_cutoff, self.beta, self.d_cutoff)
            self._filters[int(track_id)] = filt
        elif filt.shape is not None and filt.shape[0] != kps.shape[0]:
            raise ValueError(f"keypoints: {kps.shape[0]} keypoints for track {track_id}, which "
                             f"had {filt.shape[0]}")
        valid = (kps[:, 2] >= self.keypoint_threshold)[:, None]
        out = kps.copy()
        out[:, :2] = filt(kps[:, :2], t, valid)
        return out

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the filter states of ``track_ids`` (unknown ids are ignored)."""
        for tid in track_ids:
            self._filters.pop(int(tid), None)

    def reset(self) -> None:
        """Drop every track's state."""
        self._filters.clear()

    @property
    def track_ids(self):
        """The ids of the tracks that have a state, sorted."""
        return sorted(self._filters)

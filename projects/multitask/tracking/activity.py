"""Activity over time: each track's per-frame class probabilities averaged over a sliding window.

A single frame's activity prediction flickers; the mean of the last ``round(window_seconds *
fps)`` probability vectors a track received (at least one) is steadier. Frames in which a track
has no detection add nothing, so after a gap the window reaches further back in time.
"""

from collections import deque
from typing import Deque, Dict, Iterable, Optional, Tuple

import numpy as np

__all__ = ["WindowedActivity"]


class WindowedActivity:
    """Per-track sliding-window average of activity probabilities.

    ``WindowedActivity(window_seconds, fps)`` averages over ``window = max(1, round(window_seconds
    * fps))`` frames. ``update(track_id, probs (C,)) -> (probs (C,), label)`` adds a frame and
    returns the window's mean and its argmax; ``get(track_id)`` returns the same without adding
    (None for a track with no frame); ``forget(track_ids)`` drops deleted tracks. The first frame
    of a track fixes its ``C``.
    """

    def __init__(self, window_seconds: float, fps: float):
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.window_seconds = float(window_seconds)
        self.fps = float(fps)
        self.window = max(1, int(round(self.window_seconds * self.fps)))
        self._history: Dict[int, Deque[np.ndarray]] = {}

    def update(self, track_id: int, probs: np.ndarray) -> Tuple[np.ndarray, int]:
        """Add track ``track_id``'s class probabilities ``(C,)`` of one frame; returns the mean
        ``(C,)`` over its window and the mean's argmax."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 1 or p.size == 0:
            raise ValueError(f"probs: expected shape (C,) with C >= 1, got {p.shape}")
        if not np.all(np.isfinite(p)):
            raise ValueError(f"probs: not finite for track {track_id}: {p}")
        history = self._history.setdefault(int(track_id), deque(maxlen=self.window))
        if history and history[0].shape != p.shape:
            raise ValueError(f"probs: {p.size} classes for track {track_id}, which had "
                             f"{history[0].size}")
        history.append(p)
        return self.get(track_id)

    def get(self, track_id: int) -> Optional[Tuple[np.ndarray, int]]:
        """The mean ``(C,)`` over track ``track_id``'s window and its argmax; None without
        frames."""
        history = self._history.get(int(track_id))
        if not history:
            return None
        mean = np.mean(np.stack(history), axis=0)
        return mean, int(np.argmax(mean))

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the windows of ``track_ids`` (unknown ids are ignored)."""
        for tid in track_ids:
            self._history.pop(int(tid), None)

    def reset(self) -> None:
        """Drop every track's window."""
        self._history.clear()

    @property
    def track_ids(self):
        """The ids of the tracks that have a window, sorted."""
        return sorted(self._history)

"""Activity from a track's pose sequence: a small temporal convolutional model.

A single frame does not always tell the activity: a walker's mid-stride pose, feet together, is a
standing pose. The way the pose changes does. :class:`TemporalActivityNet` reads the last ``T``
frames of a track, each encoded by the activity classifier's per-frame features
(:func:`~multitask.modeling.postprocessing.activity_features.keypoints_to_activity_features`:
keypoints normalised in the person's box, visibility mask and, with ``MODEL.ACTIVITY.GEOMETRY``,
joint angles and limb directions), through dilated 1-D convolutions over time, a mean over the
frames and a linear head.

:class:`TemporalActivity` is the online, per-track part that :class:`~.tracker.PoseTracker` uses
with ``TRACKING.ACTIVITY_MODEL "temporal"``: it keeps each track's last ``T`` feature vectors
(computed from the track's raw keypoints and box in every matched frame), predicts class
probabilities once a track has ``TRACKING.TEMPORAL_MIN_FRAMES`` frames (until then it returns
the frame's own per-frame probabilities, when given) and forgets deleted tracks. A track with
fewer than ``T`` frames is read left-padded (the padding masked out), as in training.

Weights file (:meth:`TemporalActivity.save`, ``tools/train_temporal_activity.py``): a dict with
``model`` = ``"TemporalActivityNet"``, ``state_dict``, ``classes``, ``frames`` (``T``),
``min_frames``, ``architecture`` (``channels``, ``kernel_size``, ``dilations``, ``dropout``),
``input_layout`` (the activity classifier's: ``feature``, ``num_keypoints``, ``use_visibility``,
``geometry``, ``keep_aspect``, ``score_thresh``, ``keypoint_mask``, ``in_dim``) and ``fps`` (of
the training clips; None when unknown). Loading refuses, naming the config key and the file, a
file of another model, other classes than ``MODEL.ACTIVITY.CLASSES``, another ``T`` than
``TRACKING.TEMPORAL_FRAMES``, another feature layout than ``MODEL.ACTIVITY.*`` and a state dict
that does not fit. Training: ``multitask.engine.temporal_activity_training``.
"""

import copy
from collections import deque
from typing import Deque, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config.configurable import configurable
from ..modeling.postprocessing.activity_features import (
    KEEP_ASPECT,
    activity_feature_dim,
    keypoints_to_activity_features,
)
from ..modeling.postprocessing.weights_io import load_state_dict_checked, read_weights_file
from ..utils.file_io import atomic_write

__all__ = [
    "TemporalActivityNet",
    "TemporalActivity",
    "load_temporal_weights",
    "TEMPORAL_MODEL_NAME",
    "FEATURE_NAME",
    "DEFAULT_ARCHITECTURE",
]

# The weights file's ``model`` entry
TEMPORAL_MODEL_NAME = "TemporalActivityNet"
# The per-frame feature encoding (the activity classifier's input_layout "feature")
FEATURE_NAME = "xy_in_box_interleaved"
# Architecture of an untrained model (a weights file brings its own; not config keys)
DEFAULT_ARCHITECTURE = {"channels": 64, "kernel_size": 3, "dilations": (1, 2, 4), "dropout": 0.2}
_KEY = "TRACKING.TEMPORAL_WEIGHTS"
_WHAT = "temporal activity"
# The result of one track and frame: class probabilities (C,) or None, and their argmax
Result = Tuple[Optional[np.ndarray], int]


class TemporalActivityNet(nn.Module):
    """``[Conv1d(kernel_size, dilation d) -> BatchNorm1d -> ReLU]`` for each ``d`` in
    ``dilations``, a mean over the (unmasked) frames, ``Dropout`` and ``Linear``; logits out.

    ``forward(x (B, T, D), mask (B, T) bool or None) -> (B, C)``: ``x`` the per-frame features,
    oldest first; ``mask`` True for real frames (False for padding, which is zeroed after every
    layer and left out of the mean). The convolutions keep the length, so any ``T`` works.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        channels: int = 64,
        kernel_size: int = 3,
        dilations: Sequence[int] = (1, 2, 4),
        dropout: float = 0.2,
    ):
        super().__init__()
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if not dilations or min(int(d) for d in dilations) < 1:
            raise ValueError(f"dilations must be >= 1 and at least one, got {list(dilations)}")
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)
        self.channels, self.kernel_size = int(channels), int(kernel_size)
        self.dilations = [int(d) for d in dilations]
        self.dropout_p = float(dropout)
        blocks, c_in = [], self.in_dim
        for d in self.dilations:
            pad = d * (self.kernel_size - 1) // 2
            blocks.append(nn.Sequential(
                nn.Conv1d(c_in, self.channels, self.kernel_size, padding=pad, dilation=d,
                          bias=False),
                nn.BatchNorm1d(self.channels),
                nn.ReLU(inplace=True),
            ))
            c_in = self.channels
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(self.dropout_p)
        self.head = nn.Linear(self.channels, self.num_classes)

    def architecture(self) -> Dict:
        """The constructor's arguments after ``in_dim`` and ``num_classes`` (for the file)."""
        return {"channels": self.channels, "kernel_size": self.kernel_size,
                "dilations": list(self.dilations), "dropout": self.dropout_p}

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = x.transpose(1, 2)  # (B, D, T)
        m = None if mask is None else mask.to(h.dtype)[:, None, :]  # (B, 1, T)
        if m is not None:
            h = h * m
        for block in self.blocks:
            h = block(h)
            if m is not None:
                h = h * m
        if m is None:
            pooled = h.mean(dim=2)
        else:
            pooled = h.sum(dim=2) / m.sum(dim=2).clamp(min=1.0)
        return self.head(self.dropout(pooled))

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Softmax probabilities ``(B, C)`` in eval mode (the mode is restored afterwards)."""
        was = self.training
        self.eval()
        try:
            if x.shape[0] == 0:
                return x.new_zeros((0, self.num_classes))
            return F.softmax(self.forward(x, mask), dim=1)
        finally:
            self.train(was)


def load_temporal_weights(path: str, key: str = _KEY) -> Dict:
    """Read a temporal activity weights file (module docstring); a file that is not a dict with
    ``model`` = ``"TemporalActivityNet"`` and the entries the model needs is refused, naming
    ``key`` and the file."""
    obj = read_weights_file(path, key, _WHAT)
    if not isinstance(obj, dict):
        raise RuntimeError(f"{key}: '{path}' holds a {type(obj).__name__}, not a dict")
    if obj.get("model") != TEMPORAL_MODEL_NAME:
        what = obj.get("model") or ("an activity classifier (MLP)" if "hidden_dims" in obj
                                    else "no 'model' entry")
        raise ValueError(f"{key}: '{path}' is not a temporal activity weights file (its "
                         f"'model' is {what!r}, expected {TEMPORAL_MODEL_NAME!r}); write one with "
                         f"tools/train_temporal_activity.py")
    missing = [k for k in ("state_dict", "classes", "frames", "architecture", "input_layout")
               if k not in obj]
    if missing:
        raise ValueError(f"{key}: temporal activity weights file '{path}' lacks {missing}")
    return obj


def _per_frame_probs(frame_probs, n: int, num_classes: int) -> Optional[np.ndarray]:
    """``frame_probs`` as float64 ``(n, C)``, checked; None stays None."""
    if frame_probs is None:
        return None
    p = np.asarray(frame_probs, dtype=np.float64)
    if p.shape != (n, num_classes):
        raise ValueError(f"frame_probs: expected shape ({n}, {num_classes}) (the temporal "
                         f"model's classes), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("frame_probs: contains NaN or infinite values")
    return p


class TemporalActivity:
    """Per-track activity from the last ``frames`` poses (module docstring).

    ``TemporalActivity(cfg)`` reads ``TRACKING.TEMPORAL_*`` and ``MODEL.ACTIVITY.*``
    (:meth:`from_config`) and loads ``TRACKING.TEMPORAL_WEIGHTS`` when set; keywords override
    (``weights=""`` builds an untrained model from ``channels``, ``kernel_size``, ``dilations``
    and ``dropout``; a weights file brings its own architecture, ``keypoint_mask`` and
    ``keep_aspect``).

    Per frame: ``update(track_id, keypoints (K, 3), box (4,), frame_probs (C,) or None) ->
    (probs (C,) or None, label)``, or :meth:`update_many` for several tracks at once;
    :meth:`get` returns a track's latest result, :meth:`forget` drops deleted tracks.
    """

    @configurable
    def __init__(
        self,
        *,
        classes: Sequence[str],
        frames: int,
        min_frames: int,
        use_visibility: bool,
        geometry: bool,
        score_thresh: float,
        num_keypoints: int,
        keep_aspect: bool,
        channels: int,
        kernel_size: int,
        dilations: Sequence[int],
        dropout: float,
        weights: str = "",
    ):
        self.classes = list(classes)
        self.frames, self.min_frames = int(frames), int(min_frames)
        if not self.classes:
            raise ValueError("MODEL.ACTIVITY.CLASSES is empty")
        if self.frames < 1:
            raise ValueError(f"TRACKING.TEMPORAL_FRAMES must be >= 1, got {frames}")
        if not 1 <= self.min_frames <= self.frames:
            raise ValueError(f"TRACKING.TEMPORAL_MIN_FRAMES must be in [1, TEMPORAL_FRAMES = "
                             f"{self.frames}], got {min_frames}")
        self.use_visibility, self.geometry = bool(use_visibility), bool(geometry)
        self.score_thresh, self.keep_aspect = float(score_thresh), bool(keep_aspect)
        self.num_keypoints = int(num_keypoints)
        if self.geometry and self.num_keypoints != 17:
            raise ValueError(f"MODEL.ACTIVITY.GEOMETRY needs the 17 COCO keypoints, the "
                             f"tracker has {self.num_keypoints}")
        self.in_dim = activity_feature_dim(self.num_keypoints, self.use_visibility,
                                           self.geometry)
        self.keypoint_mask = np.ones(self.num_keypoints, dtype=np.float32)
        self.net = TemporalActivityNet(self.in_dim, len(self.classes), channels, kernel_size,
                                       dilations, dropout).eval()
        self.fps: Optional[float] = None  # of the training clips, from the weights file
        self.weights_source = ""  # "" while untrained, a file, or "fitted"
        self._history: Dict[int, Deque[np.ndarray]] = {}
        self._last: Dict[int, Result] = {}
        if weights:
            self.load_weights(weights)

    @classmethod
    def from_config(cls, cfg, num_keypoints: Optional[int] = None) -> Dict:
        """The constructor's arguments from ``TRACKING.TEMPORAL_*`` and ``MODEL.ACTIVITY.*``;
        ``num_keypoints`` (the tracker's K) defaults to ``MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS``;
        ``keep_aspect`` and the architecture are the defaults (:data:`DEFAULT_ARCHITECTURE`) of
        an untrained model."""
        t, a = cfg.TRACKING, cfg.MODEL.ACTIVITY
        k = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS if num_keypoints is None else num_keypoints
        return {
            "classes": list(a.CLASSES),
            "frames": t.TEMPORAL_FRAMES,
            "min_frames": t.TEMPORAL_MIN_FRAMES,
            "use_visibility": a.USE_VISIBILITY,
            "geometry": a.GEOMETRY,
            "score_thresh": a.KEYPOINT_THRESHOLD,
            "num_keypoints": int(k),
            "keep_aspect": KEEP_ASPECT,
            **DEFAULT_ARCHITECTURE,
            "weights": t.TEMPORAL_WEIGHTS,
        }

    # ---- features and weights -----------------------------------------------------------
    def input_layout(self) -> Dict:
        """The per-frame feature layout (the activity classifier's ``input_layout``)."""
        return {
            "feature": FEATURE_NAME,
            "num_keypoints": self.num_keypoints,
            "use_visibility": self.use_visibility,
            "geometry": self.geometry,
            "keep_aspect": self.keep_aspect,
            "score_thresh": self.score_thresh,
            "keypoint_mask": [float(v) for v in self.keypoint_mask],
            "in_dim": self.in_dim,
        }

    def features(self, keypoints, boxes) -> torch.Tensor:
        """Per-frame features ``(N, D)`` float32 of keypoints ``(N, K, 3)`` in boxes ``(N, 4)``
        XYXY (numpy or torch)."""
        return keypoints_to_activity_features(
            torch.as_tensor(np.asarray(keypoints, dtype=np.float32)),
            torch.as_tensor(np.asarray(boxes, dtype=np.float32)),
            self.use_visibility, self.score_thresh, self.keep_aspect,
            torch.from_numpy(self.keypoint_mask), self.geometry,
        )

    def save(self, path: str, fps: Optional[float] = None, **extra) -> None:
        """Write the weights file (module docstring) atomically; ``extra`` entries are added."""
        obj = {
            "model": TEMPORAL_MODEL_NAME,
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "classes": list(self.classes),
            "frames": self.frames,
            "min_frames": self.min_frames,
            "architecture": self.net.architecture(),
            "input_layout": self.input_layout(),
            "fps": None if fps is None else float(fps),
            **extra,
        }
        atomic_write(path, lambda f: torch.save(obj, f))

    def _check_file(self, obj: Dict, path: str, key: str) -> Dict:
        """Refuse a file whose classes, window or feature layout differ from this model's;
        returns its input layout."""
        where = f"{key}: temporal activity weights file '{path}'"
        if list(obj["classes"]) != self.classes:
            raise ValueError(f"{where} was trained for classes {list(obj['classes'])}, but "
                             f"MODEL.ACTIVITY.CLASSES is {self.classes}")
        if int(obj["frames"]) != self.frames:
            raise ValueError(f"{where} reads {int(obj['frames'])} frames, but "
                             f"TRACKING.TEMPORAL_FRAMES is {self.frames}; set it to "
                             f"{int(obj['frames'])}")
        layout = dict(obj["input_layout"])
        wanted = (("feature", FEATURE_NAME, "the per-frame feature"),
                  ("num_keypoints", self.num_keypoints, "the tracker's keypoints"),
                  ("use_visibility", self.use_visibility, "MODEL.ACTIVITY.USE_VISIBILITY"),
                  ("geometry", self.geometry, "MODEL.ACTIVITY.GEOMETRY"),
                  ("in_dim", self.in_dim, "the feature length of that layout"))
        for name, value, what in wanted:
            if layout.get(name) != value:
                raise ValueError(f"{where} has input_layout {name}={layout.get(name)!r}, but "
                                 f"{what} is {value!r}")
        mask = np.asarray(layout.get("keypoint_mask", self.keypoint_mask), dtype=np.float32)
        if mask.shape != (self.num_keypoints,):
            raise ValueError(f"{where} has a keypoint_mask of {mask.size} values, not "
                             f"{self.num_keypoints}")
        return layout

    def load_weights(self, path: str, key: str = _KEY) -> None:
        """Load a weights file (checks: module docstring); the model's state is reset."""
        obj = load_temporal_weights(path, key)
        layout = self._check_file(obj, path, key)
        try:
            net = TemporalActivityNet(self.in_dim, len(self.classes), **obj["architecture"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{key}: temporal activity weights file '{path}' has a bad "
                             f"architecture {obj['architecture']}: {e}") from None
        load_state_dict_checked(net, obj["state_dict"], path, key, "temporal activity model")
        self.net = net.eval()
        self.keypoint_mask = np.asarray(layout.get("keypoint_mask", self.keypoint_mask),
                                        dtype=np.float32)
        self.keep_aspect = bool(layout.get("keep_aspect", self.keep_aspect))
        self.fps = None if obj.get("fps") is None else float(obj["fps"])
        self.weights_source = path
        self.reset()

    # ---- prediction ---------------------------------------------------------------------
    def predict_proba(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> np.ndarray:
        """Class probabilities ``(B, C)`` float64 of feature sequences ``x (B, T, D)`` (mask
        ``(B, T)``, True for real frames)."""
        return self.net.predict_proba(x, mask).cpu().numpy().astype(np.float64)

    def _batch(self, track_ids: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The tracks' histories as ``x (B, T, D)`` and ``mask (B, T)``, left-padded."""
        x = np.zeros((len(track_ids), self.frames, self.in_dim), dtype=np.float32)
        mask = np.zeros((len(track_ids), self.frames), dtype=bool)
        for b, tid in enumerate(track_ids):
            history = self._history[tid]
            n = len(history)
            x[b, self.frames - n:] = np.stack(history)
            mask[b, self.frames - n:] = True
        return torch.from_numpy(x), torch.from_numpy(mask)

    def update_many(self, track_ids: Sequence[int], keypoints, boxes,
                    frame_probs=None) -> List[Result]:
        """Add one frame of the tracks ``track_ids (N,)`` (distinct): their raw keypoints ``(N, K,
        3)``, boxes ``(N, 4)`` XYXY and optionally their per-frame probabilities ``(N, C)``.
        Returns per track ``(probs (C,), label)``: the model's once the track has ``min_frames``
        frames, else the frame's ``frame_probs`` row (``(None, -1)`` without it)."""
        ids = [int(t) for t in track_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"track_ids: each track once per frame, got {ids}")
        kps = np.asarray(keypoints, dtype=np.float32)
        bxs = np.asarray(boxes, dtype=np.float32)
        if kps.shape != (len(ids), self.num_keypoints, 3):
            raise ValueError(f"keypoints: expected shape ({len(ids)}, {self.num_keypoints}, 3), "
                             f"got {kps.shape}")
        if bxs.shape != (len(ids), 4):
            raise ValueError(f"boxes: expected shape ({len(ids)}, 4) XYXY, got {bxs.shape}")
        probs = _per_frame_probs(frame_probs, len(ids), len(self.classes))
        if not ids:
            return []
        for tid, f in zip(ids, self.features(kps, bxs).numpy()):
            self._history.setdefault(tid, deque(maxlen=self.frames)).append(f)
        results: List[Result] = [
            (None, -1) if probs is None else (probs[i], int(np.argmax(probs[i])))
            for i in range(len(ids))
        ]
        ready = [i for i, tid in enumerate(ids) if len(self._history[tid]) >= self.min_frames]
        if ready:
            out = self.predict_proba(*self._batch([ids[i] for i in ready]))
            for i, p in zip(ready, out):
                results[i] = (p, int(np.argmax(p)))
        for tid, r in zip(ids, results):
            self._last[tid] = r
        return results

    def update(self, track_id: int, keypoints, box, frame_probs=None) -> Result:
        """:meth:`update_many` for one track: ``keypoints (K, 3)``, ``box (4,)``, ``frame_probs
        (C,)`` or None -> ``(probs (C,) or None, label)``."""
        probs = None if frame_probs is None else np.asarray(frame_probs)[None]
        return self.update_many([track_id], np.asarray(keypoints)[None], np.asarray(box)[None],
                                probs)[0]

    def get(self, track_id: int) -> Optional[Result]:
        """Track ``track_id``'s latest ``(probs, label)``; None for a track with no frame."""
        return self._last.get(int(track_id))

    def history_length(self, track_id: int) -> int:
        """Frames kept for the track (at most ``frames``)."""
        return len(self._history.get(int(track_id), ()))

    def forget(self, track_ids: Iterable[int]) -> None:
        """Drop the histories of ``track_ids`` (unknown ids are ignored)."""
        for tid in track_ids:
            self._history.pop(int(tid), None)
            self._last.pop(int(tid), None)

    def reset(self) -> None:
        """Drop every track's history."""
        self._history.clear()
        self._last.clear()

    def copy(self) -> "TemporalActivity":
        """A copy with no track history that shares the network (which prediction only reads):
        one per tracker, so that trackers built from the same arguments keep apart."""
        other = copy.copy(self)
        other._history, other._last = {}, {}
        return other

    @property
    def track_ids(self) -> List[int]:
        """The ids of the tracks that have a history, sorted."""
        return sorted(self._history)

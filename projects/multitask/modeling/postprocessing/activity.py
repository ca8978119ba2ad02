"""Activity classification from a person's 2D pose (blog: "Recognizing Human Actions by Pose").

The classifier reads a pose encoded by :func:`~.activity_features.keypoints_to_activity_features`
(keypoints normalised in the person's box, a visibility mask and, with ``MODEL.ACTIVITY.GEOMETRY``,
the pose's joint angles, limb directions and lengths; see :mod:`.activity_features`).

Classifier (:class:`ActivityMLP`): per hidden layer ``Linear -> BatchNorm1d -> ReLU ->
Dropout(0.3)`` (blog: 3072 -> 128), then ``Linear(128, n)``; it returns logits, softmax at
inference.

Post-processor :class:`ActivityClassifier` (registry name "ActivityClassifier") adds
``pred_activity (R,) int64`` and ``activity_scores (R, C)`` (softmax probabilities of the logits
divided by the file's calibrated ``temperature``) from ``pred_keypoints`` and ``pred_boxes``; its
MLP always runs in eval mode (BatchNorm running stats). ``pred_activity`` is
:data:`UNKNOWN_ACTIVITY` (-1) when the top probability is below ``MODEL.ACTIVITY.MIN_CONFIDENCE``
or fewer than ``MIN_VISIBLE_KEYPOINTS`` keypoints are visible: the evidence is too thin to judge.

Weights file (:func:`save_activity_weights`, ``tools/train_activity.py``): a dict with
``state_dict`` (the MLP's), ``classes``, ``hidden_dims``, ``dropout`` and ``input_layout`` =
``{"feature": "xy_in_box_interleaved", "num_keypoints": 17, "use_visibility", "geometry",
"keep_aspect", "score_thresh", "keypoint_mask": [17 x 0/1], "in_dim"}`` (a file without
``geometry`` was written without it), and ``temperature`` (1 when absent). ``keypoint_mask``
names the keypoints the classifier was trained with (MPII has no eyes/ears: they are masked
out at inference too, so the detector's eyes/ears do not meet a classifier that never saw them).

Training lives outside the model: ``multitask.engine.activity_training`` (the training loop and
the fit on ground-truth poses) and ``multitask.evaluation.activity_metrics`` (person-grouped
K-fold, classification metrics), both used by ``tools/train_activity.py``.
"""

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...config.configurable import configurable
from ...structures.activity import UNKNOWN_ACTIVITY
from ...utils.file_io import atomic_write
from .activity_features import KEEP_ASPECT, activity_feature_dim, keypoints_to_activity_features
from .registry import POSTPROCESSOR_REGISTRY
from .weights_io import load_state_dict_checked, read_weights_file

__all__ = [
    "ActivityMLP",
    "ActivityClassifier",
    "save_activity_weights",
    "load_activity_weights",
    "UNKNOWN_ACTIVITY",
]


class ActivityMLP(nn.Module):
    """``[Linear -> BatchNorm1d -> ReLU -> Dropout] * len(hidden_dims) -> Linear``; logits out."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dims: Sequence[int] = (3072, 128),
        dropout: float = 0.3,
    ):
        super().__init__()
        layers: List[nn.Module] = []
        d = int(in_dim)
        for h in hidden_dims:
            layers += [
                nn.Linear(d, int(h)),
                nn.BatchNorm1d(int(h)),
                nn.ReLU(inplace=True),
                nn.Dropout(float(dropout)),
            ]
            d = int(h)
        layers.append(nn.Linear(d, int(num_classes)))
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.num_classes = int(in_dim), int(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, temperature=1.0) -> torch.Tensor:
        """Softmax probabilities ``(R, C)`` of the logits divided by ``temperature``, in eval
        mode (mode restored afterwards)."""
        was = self.training
        self.eval()
        try:
            if x.shape[0] == 0:
                return x.new_zeros((0, self.num_classes))
            return F.softmax(self.forward(x) / temperature, dim=1)
        finally:
            self.train(was)


def save_activity_weights(
    path: str,
    mlp: ActivityMLP,
    classes: Sequence[str],
    input_layout: Dict,
    hidden_dims: Sequence[int],
    dropout: float,
    **extra,
) -> None:
    """Write the MLP's state dict with its class list and input layout (see module docstring).

    Written to a temporary file first and moved into place, so an interrupted write never leaves
    a truncated weights file behind."""
    obj = {
        "state_dict": mlp.state_dict(),
        "classes": list(classes),
        "input_layout": dict(input_layout),
        "hidden_dims": [int(h) for h in hidden_dims],
        "dropout": float(dropout),
        **extra,
    }
    atomic_write(path, lambda f: torch.save(obj, f))


def load_activity_weights(path: str, key: str = "MODEL.ACTIVITY.WEIGHTS") -> Dict:
    """Read an activity weights file (dict with ``state_dict``, ``classes``, ``input_layout``)."""
    obj = read_weights_file(path, key, "activity classifier")
    if not isinstance(obj, dict):
        raise RuntimeError(f"{key}: '{path}' holds a {type(obj).__name__}, not a dict")
    if "state_dict" not in obj:  # a bare state dict
        obj = {"state_dict": obj}
    return obj


class ActivityClassifier(nn.Module):
    """Registered post-processor "ActivityClassifier": activity per detected person.

    ``ActivityClassifier(cfg)`` reads ``MODEL.ACTIVITY.*`` (:meth:`from_config`) and loads
    ``MODEL.ACTIVITY.WEIGHTS`` when set; keyword arguments override cfg values (the default
    config's without ``cfg``; ``weights=""`` builds it untrained). The weights file must list
    the same classes as ``MODEL.ACTIVITY.CLASSES`` and the same ``use_visibility`` as
    ``MODEL.ACTIVITY.USE_VISIBILITY`` and ``geometry`` as ``MODEL.ACTIVITY.GEOMETRY``;
    its ``keep_aspect`` and ``keypoint_mask`` are taken from the file (both are also buffers, so
    they travel in a full-model checkpoint).
    """

    @configurable
    def __init__(
        self,
        *,
        classes: Sequence[str],
        hidden_dims: Sequence[int],
        dropout: float,
        use_visibility: bool,
        geometry: bool,
        score_thresh: float,
        keep_aspect: bool,
        num_keypoints: int,
        min_confidence: float,
        min_visible_keypoints: int,
        weights: str = "",
    ):
        super().__init__()
        self.classes = list(classes)
        self.hidden_dims = [int(h) for h in hidden_dims]
        self.dropout_p = float(dropout)
        self.use_visibility = bool(use_visibility)
        self.geometry = bool(geometry)
        self.score_thresh = float(score_thresh)
        self.min_confidence = float(min_confidence)
        self.min_visible_keypoints = int(min_visible_keypoints)
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"MODEL.ACTIVITY.MIN_CONFIDENCE must be in [0, 1], got "
                             f"{self.min_confidence}")
        self.num_keypoints = int(num_keypoints)
        if not self.classes:
            raise ValueError("MODEL.ACTIVITY.CLASSES is empty")
        if self.geometry and self.num_keypoints != 17:
            raise ValueError(
                f"MODEL.ACTIVITY.GEOMETRY needs the 17 COCO keypoints, the model has "
                f"{self.num_keypoints}; set MODEL.ACTIVITY.GEOMETRY False (positions only)"
            )
        self.register_buffer("keypoint_mask", torch.ones(self.num_keypoints))
        self.register_buffer("keep_aspect_flag", torch.tensor(float(bool(keep_aspect))))
        # logits are divided by it: 1 = uncalibrated; a weights file carries its fitted value
        self.register_buffer("temperature", torch.tensor(1.0))
        self.mlp = ActivityMLP(
            activity_feature_dim(self.num_keypoints, self.use_visibility, self.geometry),
            len(self.classes),
            self.hidden_dims,
            self.dropout_p,
        )
        # where the weights came from: "" while untrained, a file, or "fitted"
        self.weights_source = ""
        if weights:
            self.load_weights(weights)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        """The constructor's arguments from ``MODEL.ACTIVITY.*`` (``weights``:
        ``MODEL.ACTIVITY.WEIGHTS``) and ``MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS``."""
        a = cfg.MODEL.ACTIVITY
        return {
            "classes": list(a.CLASSES),
            "hidden_dims": list(a.HIDDEN_DIMS),
            "dropout": a.DROPOUT,
            "use_visibility": a.USE_VISIBILITY,
            "geometry": a.GEOMETRY,
            "score_thresh": a.KEYPOINT_THRESHOLD,
            "keep_aspect": KEEP_ASPECT,
            "num_keypoints": cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS,
            "min_confidence": a.MIN_CONFIDENCE,
            "min_visible_keypoints": a.MIN_VISIBLE_KEYPOINTS,
            "weights": a.WEIGHTS,
        }

    @property
    def keep_aspect(self) -> bool:
        return bool(self.keep_aspect_flag.item() > 0.5)

    def input_layout(self) -> Dict:
        return {
            "feature": "xy_in_box_interleaved",
            "num_keypoints": self.num_keypoints,
            "use_visibility": self.use_visibility,
            "geometry": self.geometry,
            "keep_aspect": self.keep_aspect,
            "score_thresh": self.score_thresh,
            "keypoint_mask": [float(v) for v in self.keypoint_mask.tolist()],
            "in_dim": self.mlp.in_dim,
        }

    def load_weights(self, path: str, key: str = "MODEL.ACTIVITY.WEIGHTS") -> None:
        obj = load_activity_weights(path, key)
        classes = obj.get("classes")
        if classes is not None and list(classes) != self.classes:
            raise ValueError(
                f"{key}: activity weights file '{path}' was trained for classes {list(classes)}, "
                f"but MODEL.ACTIVITY.CLASSES is {self.classes}; set MODEL.ACTIVITY.CLASSES to the "
                f"file's list (same order) or use weights trained for these classes"
            )
        layout = obj.get("input_layout") or {}
        if "use_visibility" in layout and bool(layout["use_visibility"]) != self.use_visibility:
            raise ValueError(
                f"{key}: activity weights file '{path}' has use_visibility="
                f"{bool(layout['use_visibility'])} but MODEL.ACTIVITY.USE_VISIBILITY is "
                f"{self.use_visibility}"
            )
        geometry = bool(layout.get("geometry", False))
        if geometry != self.geometry:
            raise ValueError(
                f"{key}: activity weights file '{path}' was trained "
                f"{'with' if geometry else 'without'} pose geometry features but "
                f"MODEL.ACTIVITY.GEOMETRY is {self.geometry}; set it to {geometry}"
            )
        if "num_keypoints" in layout and int(layout["num_keypoints"]) != self.num_keypoints:
            raise ValueError(
                f"{key}: activity weights file '{path}' expects {layout['num_keypoints']} "
                f"keypoints, the model has {self.num_keypoints}"
            )
        load_state_dict_checked(self.mlp, obj["state_dict"], path, key, "activity classifier")
        if "keypoint_mask" in layout:
            self.keypoint_mask.copy_(torch.as_tensor(layout["keypoint_mask"], dtype=torch.float32))
        if "keep_aspect" in layout:
            self.keep_aspect_flag.fill_(float(bool(layout["keep_aspect"])))
        temperature = float(obj.get("temperature", 1.0))
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"{key}: activity weights file '{path}' has temperature "
                             f"{temperature}; it must be a positive number")
        self.temperature.fill_(temperature)
        self.weights_source = path

    def features(self, keypoints: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return keypoints_to_activity_features(
            keypoints,
            boxes,
            self.use_visibility,
            self.score_thresh,
            self.keep_aspect,
            self.keypoint_mask,
            self.geometry,
        )

    @torch.no_grad()
    def classify(
        self, keypoints: torch.Tensor, boxes: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(pred (R,) int64, probs (R, C))`` for keypoints ``(R, K, 3)`` and boxes ``(R, 4)``:
        calibrated probabilities (logits / ``temperature``) and their argmax, or
        :data:`UNKNOWN_ACTIVITY` below ``min_confidence`` or ``min_visible_keypoints``."""
        device = self.keypoint_mask.device
        keypoints = keypoints.to(device)
        probs = self.mlp.predict_proba(self.features(keypoints, boxes.to(device)),
                                       self.temperature)
        if probs.shape[0] == 0:
            return torch.zeros((0,), dtype=torch.int64, device=device), probs
        conf, pred = probs.max(dim=1)
        visible = ((keypoints[..., 2] > self.score_thresh) & (self.keypoint_mask > 0)).sum(1)
        unknown = (conf < self.min_confidence) | (visible < self.min_visible_keypoints)
        pred = torch.where(unknown, torch.full_like(pred, UNKNOWN_ACTIVITY), pred)
        return pred.to(torch.int64), probs

    def forward(self, batched_inputs: List[dict], results: List) -> List:
        C = len(self.classes)
        for inst in results:
            if len(inst) == 0:
                ref = inst.pred_keypoints if inst.has("pred_keypoints") else self.keypoint_mask
                inst.pred_activity = torch.zeros((0,), dtype=torch.int64, device=ref.device)
                inst.activity_scores = torch.zeros((0, C), dtype=torch.float32, device=ref.device)
                continue
            if not inst.has("pred_keypoints"):
                raise ValueError(
                    "ActivityClassifier needs 'pred_keypoints' (MODEL.KEYPOINT_ON = True and the "
                    "post-processor listed after the keypoint head's outputs)"
                )
            boxes = inst.pred_boxes
            boxes = getattr(boxes, "tensor", boxes)
            pred, probs = self.classify(inst.pred_keypoints, boxes)
            dev = inst.pred_keypoints.device
            inst.pred_activity = pred.to(dev)
            inst.activity_scores = probs.to(dev)
        return results


POSTPROCESSOR_REGISTRY.register(ActivityClassifier)

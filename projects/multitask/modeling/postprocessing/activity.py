"""Activity classification from a person's 2D pose (blog: "Recognizing Human Actions by Pose").

Features (:func:`keypoints_to_activity_features`), per person: the 17 keypoints' x, y normalised to
[0, 1] within the person's box (``(x - x0) / w``, ``(y - y0) / h``, clamped to [0, 1]) and
interleaved as ``[K0x, K0y, K1x, K1y, ...]`` (34 values), followed, when ``use_visibility``, by a
17-value mask (1 = keypoint present, 0 = missing). A keypoint is missing when its score / COCO
visibility is <= ``score_thresh`` or the classifier's ``keypoint_mask`` excludes it; its x, y are
then 0. With ``keep_aspect`` the box is first made square (side ``max(w, h)``, same centre), so
the features keep the pose's aspect ratio (a sitting person's box is squat, a standing one tall).
With ``geometry`` (``MODEL.ACTIVITY.GEOMETRY``, COCO keypoints only) the pose's geometry follows
(:func:`pose_geometry_features`, ``2 * GEOMETRY_DIM`` values): the angles at knees, hips, elbows
and shoulders, the torso's direction, the thighs' and shins' directions and lengths, and how far
apart the ankles, knees and wrists are, lengths relative to the torso; then a mask of which of
these could be measured. An MLP has to learn angles from coordinates; given them, its 5-fold
cross-validated accuracy (``tools/train_activity.py``) goes from 0.651 to 0.660 on MPII and from
0.817 to 0.843 on the synthetic people's training poses.

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

Also here, for training (``tools/train_activity.py``): :func:`stratified_group_kfold` (folds split
by person) and :func:`classification_metrics` (no sklearn needed).
"""

import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...structures.activity import UNKNOWN_ACTIVITY
from ...utils.file_io import atomic_write
from .registry import POSTPROCESSOR_REGISTRY
from .weights_io import cfg_get, load_state_dict_checked

__all__ = [
    "keypoints_to_activity_features",
    "pose_geometry_features",
    "activity_feature_dim",
    "flip_keypoints",
    "ActivityMLP",
    "ActivityClassifier",
    "save_activity_weights",
    "load_activity_weights",
    "train_activity_mlp",
    "activity_poses_from_dicts",
    "fit_activity_classifier",
    "present_keypoint_mask",
    "with_mirrored_poses",
    "stratified_group_kfold",
    "confusion_matrix",
    "classification_metrics",
    "COCO_FLIP_PERMUTATION",
    "KEEP_ASPECT",
    "GEOMETRY_DIM",
    "UNKNOWN_ACTIVITY",
    "balanced_class_weights",
    "balanced_group_weights",
]

# Default of the feature's square-box normalisation (stored in the weights file's input_layout;
# wanted config key: MODEL.ACTIVITY.KEEP_ASPECT)
KEEP_ASPECT = True
# COCO keypoint index of the horizontally mirrored keypoint
COCO_FLIP_PERMUTATION = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


# Pose geometry (COCO keypoint indices): joint angles (vertex in the middle) at the knees, hips,
# elbows and shoulders ...
GEOMETRY_ANGLES = (
    (11, 13, 15),
    (12, 14, 16),
    (5, 11, 13),
    (6, 12, 14),
    (5, 7, 9),
    (6, 8, 10),
    (7, 5, 11),
    (8, 6, 12),
)
# ... the thighs and shins (direction, and length relative to the torso) ...
GEOMETRY_SEGMENTS = ((11, 13), (12, 14), (13, 15), (14, 16))
# ... and the offsets between the ankles, the knees and the wrists (relative to the torso)
GEOMETRY_PAIRS = ((15, 16), (13, 14), (9, 10))
# angle cosines, torso direction (2), segment direction (2) + length, pair offset (2)
GEOMETRY_DIM = len(GEOMETRY_ANGLES) + 2 + 3 * len(GEOMETRY_SEGMENTS) + 2 * len(GEOMETRY_PAIRS)
# torso-relative lengths and offsets are clipped to +-this many torso lengths
_GEOMETRY_CLIP = 3.0


def activity_feature_dim(
    num_keypoints: int = 17, use_visibility: bool = True, geometry: bool = False
) -> int:
    return num_keypoints * (3 if use_visibility else 2) + (2 * GEOMETRY_DIM if geometry else 0)


def pose_geometry_features(keypoints: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Geometry of COCO poses ``(R, 17, >=2)``, given which keypoints are ``present (R, 17)``:
    ``(R, 2 * GEOMETRY_DIM)``, the ``GEOMETRY_DIM`` values (see ``GEOMETRY_*``: cosines of the
    joint angles; the unit vector from mid-hip to mid-shoulder; each leg segment's unit vector and
    its length in torso lengths; each pair's x and y offset in torso lengths) followed by a 0/1
    mask of the values whose keypoints are all present (a masked value is 0).

    Invariant to the pose's position and scale; mirrored poses give mirrored values.
    """
    if keypoints.shape[1] != 17:
        raise ValueError(
            f"pose geometry features need the 17 COCO keypoints, got {keypoints.shape[1]}"
        )
    xy = keypoints[..., :2].float()
    pm = present.bool()
    eps = 1e-6
    values, masks = [], []

    def unit(v):
        return v / v.norm(dim=-1, keepdim=True).clamp(min=eps)

    for a, b, c in GEOMETRY_ANGLES:
        cos = (unit(xy[:, a] - xy[:, b]) * unit(xy[:, c] - xy[:, b])).sum(-1)
        values.append(cos)
        masks.append(pm[:, a] & pm[:, b] & pm[:, c])
    torso_vec = (xy[:, 5] + xy[:, 6] - xy[:, 11] - xy[:, 12]) / 2
    torso_len = torso_vec.norm(dim=-1).clamp(min=eps)
    torso_ok = pm[:, 5] & pm[:, 6] & pm[:, 11] & pm[:, 12]
    values += list(unit(torso_vec).unbind(-1))
    masks += [torso_ok, torso_ok]
    for a, b in GEOMETRY_SEGMENTS:
        seg = xy[:, b] - xy[:, a]
        ok = pm[:, a] & pm[:, b]
        values += list(unit(seg).unbind(-1)) + [seg.norm(dim=-1) / torso_len]
        masks += [ok, ok, ok & torso_ok]
    for a, b in GEOMETRY_PAIRS:
        off = (xy[:, b] - xy[:, a]) / torso_len[:, None]
        ok = pm[:, a] & pm[:, b] & torso_ok
        values += list(off.unbind(-1))
        masks += [ok, ok]
    v = torch.stack(values, dim=1).clamp(-_GEOMETRY_CLIP, _GEOMETRY_CLIP)
    m = torch.stack(masks, dim=1).to(v.dtype)
    return torch.cat([v * m, m], dim=1)


def keypoints_to_activity_features(
    keypoints: torch.Tensor,
    boxes: torch.Tensor,
    use_visibility: bool = True,
    score_thresh: float = 0.05,
    keep_aspect: bool = KEEP_ASPECT,
    keypoint_mask: Optional[torch.Tensor] = None,
    geometry: bool = False,
) -> torch.Tensor:
    """Features ``(R, 2K [+K] [+2 GEOMETRY_DIM])`` of keypoints ``(R, K, 3)`` (x, y, score) in
    boxes ``(R, 4)``.

    See the module docstring for the layout. Accepts numpy arrays too; returns float32.
    """
    kps = torch.as_tensor(keypoints).float()
    boxes = torch.as_tensor(boxes).float().to(kps.device)
    R, K = kps.shape[0], kps.shape[1]
    present = kps[..., 2] > score_thresh
    if keypoint_mask is not None:
        present = present & (torch.as_tensor(keypoint_mask).to(kps.device).reshape(1, K) > 0)
    x0, y0 = boxes[:, 0], boxes[:, 1]
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    if keep_aspect:
        side = torch.maximum(w, h)
        x0 = x0 + (w - side) / 2
        y0 = y0 + (h - side) / 2
        w = h = side
    nx = ((kps[..., 0] - x0[:, None]) / w[:, None]).clamp(0.0, 1.0)
    ny = ((kps[..., 1] - y0[:, None]) / h[:, None]).clamp(0.0, 1.0)
    pm = present.float()
    xy = torch.stack([nx * pm, ny * pm], dim=2).reshape(R, 2 * K)
    parts = [xy, pm] if use_visibility else [xy]
    if geometry:
        parts.append(pose_geometry_features(kps, present))
    return torch.cat(parts, dim=1)


def flip_keypoints(keypoints: np.ndarray, boxes: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror COCO keypoints ``(N, 17, 3)`` and boxes ``(N, 4)`` about each box's vertical centre
    line (left/right keypoints swapped); for data augmentation."""
    kps = np.array(keypoints, dtype=np.float32, copy=True)
    b = np.array(boxes, dtype=np.float32, copy=True)
    cx2 = (b[:, 0] + b[:, 2])[:, None]
    present = kps[..., 2] > 0
    kps[..., 0] = np.where(present, cx2 - kps[..., 0], 0.0)
    kps = kps[:, COCO_FLIP_PERMUTATION]
    return kps, b


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Cross-entropy weights ``N / (C * n_c)``: every class weighs as much in the loss (classes
    absent from ``labels`` get weight 0)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(float)
    w = np.divide(len(labels), num_classes * counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.as_tensor(w, dtype=torch.float32)


def balanced_group_weights(labels: np.ndarray, groups: np.ndarray,
                           num_classes: int) -> torch.Tensor:
    """Per-sample weights under which every class weighs the same *within* every group (e.g.
    how much of the body is visible), and every group by its size: ``w = n_g / (C_g * n_gc)``
    for a sample of class ``c`` in group ``g`` with ``C_g`` classes present. The class then
    cannot be read from the group."""
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups)
    w = np.zeros(len(labels), dtype=np.float64)
    for g in np.unique(groups):
        in_g = groups == g
        counts = np.bincount(labels[in_g], minlength=num_classes)
        present = int((counts > 0).sum())
        w[in_g] = in_g.sum() / (present * counts[labels[in_g]])
    return torch.as_tensor(w / max(w.mean(), 1e-12), dtype=torch.float32)


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
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key}: activity classifier weights file not found: '{path}'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- re-raised with the file name
        raise RuntimeError(f"{key}: cannot read activity weights file '{path}': {e}") from e
    if not isinstance(obj, dict):
        raise RuntimeError(f"{key}: '{path}' holds a {type(obj).__name__}, not a dict")
    if "state_dict" not in obj:  # a bare state dict
        obj = {"state_dict": obj}
    return obj


class ActivityClassifier(nn.Module):
    """Registered post-processor "ActivityClassifier": activity per detected person.

    ``ActivityClassifier(cfg)`` reads ``MODEL.ACTIVITY.*`` and loads ``MODEL.ACTIVITY.WEIGHTS``
    when set; keyword arguments override cfg values. The weights file must list the same classes
    as ``MODEL.ACTIVITY.CLASSES`` and the same ``use_visibility`` as
    ``MODEL.ACTIVITY.USE_VISIBILITY`` and ``geometry`` as ``MODEL.ACTIVITY.GEOMETRY``;
    its ``keep_aspect`` and ``keypoint_mask`` are taken from the file (both are also buffers, so
    they travel in a full-model checkpoint).
    """

    def __init__(
        self,
        cfg=None,
        *,
        classes: Optional[Sequence[str]] = None,
        hidden_dims: Optional[Sequence[int]] = None,
        dropout: Optional[float] = None,
        use_visibility: Optional[bool] = None,
        geometry: Optional[bool] = None,
        score_thresh: Optional[float] = None,
        keep_aspect: Optional[bool] = None,
        num_keypoints: int = 17,
        load_weights: bool = True,
        min_confidence: Optional[float] = None,
        min_visible_keypoints: Optional[int] = None,
    ):
        super().__init__()

        def pick(value, key, default):
            return value if value is not None else cfg_get(cfg, key, default)

        self.classes = list(
            pick(classes, "MODEL.ACTIVITY.CLASSES", ["walking", "running", "sitting", "standing"])
        )
        hidden = pick(hidden_dims, "MODEL.ACTIVITY.HIDDEN_DIMS", [3072, 128])
        self.hidden_dims = [int(h) for h in hidden]
        self.dropout_p = float(pick(dropout, "MODEL.ACTIVITY.DROPOUT", 0.3))
        self.use_visibility = bool(pick(use_visibility, "MODEL.ACTIVITY.USE_VISIBILITY", True))
        self.geometry = bool(pick(geometry, "MODEL.ACTIVITY.GEOMETRY", True))
        self.score_thresh = float(pick(score_thresh, "MODEL.ACTIVITY.KEYPOINT_THRESHOLD", 0.05))
        self.min_confidence = float(pick(min_confidence, "MODEL.ACTIVITY.MIN_CONFIDENCE", 0.0))
        self.min_visible_keypoints = int(
            pick(min_visible_keypoints, "MODEL.ACTIVITY.MIN_VISIBLE_KEYPOINTS", 0)
        )
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"MODEL.ACTIVITY.MIN_CONFIDENCE must be in [0, 1], got "
                             f"{self.min_confidence}")
        self.num_keypoints = int(num_keypoints)
        if not self.classes:
            raise ValueError("MODEL.ACTIVITY.CLASSES is empty")
        if self.geometry and self.num_keypoints != 17:
            raise ValueError(
                f"MODEL.ACTIVITY.GEOMETRY needs the 17 COCO keypoints, the model has "
                f"{self.num_keypoints}"
            )
        self.register_buffer("keypoint_mask", torch.ones(self.num_keypoints))
        keep = KEEP_ASPECT if keep_aspect is None else keep_aspect
        self.register_buffer("keep_aspect_flag", torch.tensor(float(keep)))
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
        weights = cfg_get(cfg, "MODEL.ACTIVITY.WEIGHTS", "") if load_weights else ""
        if weights:
            self.load_weights(weights)

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


# ---------------------------------------------------------------------------------------------
# Training helpers: person-grouped stratified K-fold, metrics
# ---------------------------------------------------------------------------------------------
def train_activity_mlp(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    hidden_dims: Sequence[int] = (3072, 128),
    dropout: float = 0.3,
    *,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 1e-3,
    patience: int = 5,
    seed: int = 0,
    device="cpu",
    val: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    class_weights: Optional[torch.Tensor] = None,
    sample_weights: Optional[torch.Tensor] = None,
) -> Tuple[ActivityMLP, int]:
    """Train an :class:`ActivityMLP` on features ``x (N, D)`` and labels ``y (N,)`` with Adam and
    cross-entropy; returns ``(model in eval mode, epoch count kept)``.

    With ``val = (x_val, y_val)`` (an inner split of the training data, never the data the model
    is judged on) the LR plateau (``ReduceLROnPlateau``, factor 0.1) is judged on its loss and the
    weights of the epoch with the best validation accuracy are kept; without it, on the training
    loss, and the last epoch is kept. Seeded by ``seed`` without touching the caller's global
    random state (a trainer that fits this first keeps its own random stream). ``class_weights
    (C,)`` weight the cross-entropy per class (e.g. :func:`balanced_class_weights`),
    ``sample_weights (N,)`` per training sample (e.g. :func:`balanced_group_weights`); the
    loss is then the weighted mean.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        device = torch.device(device)
        model = ActivityMLP(x.shape[1], num_classes, hidden_dims, dropout).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=patience)
        x, y = x.to(device), y.to(device)
        weight = None if class_weights is None else class_weights.to(device, torch.float32)
        sw = None if sample_weights is None else sample_weights.to(device, torch.float32)
        if val is not None:
            xv, yv = val[0].to(device), val[1].to(device)
        g = torch.Generator().manual_seed(seed)
        n = x.shape[0]
        best = (-1.0, 0, None)
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(n, generator=g).to(device)
            total = 0.0
            for s in range(0, n, batch_size):
                idx = perm[s : s + batch_size]
                if idx.numel() < 2:  # BatchNorm needs 2 samples
                    continue
                if sw is None:
                    loss = F.cross_entropy(model(x[idx]), y[idx], weight=weight)
                else:
                    per = F.cross_entropy(model(x[idx]), y[idx], weight=weight, reduction="none")
                    loss = (per * sw[idx]).sum() / sw[idx].sum().clamp(min=1e-12)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * idx.numel()
            if val is None:
                sched.step(total / max(n, 1))
                continue
            model.eval()
            with torch.no_grad():
                out = model(xv)
                vloss = F.cross_entropy(out, yv).item()
                vacc = (out.argmax(1) == yv).float().mean().item()
            sched.step(vloss)
            if vacc > best[0]:
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                best = (vacc, epoch + 1, state)
        if best[2] is not None:
            model.load_state_dict(best[2])
        model.eval()
        return model, (best[1] if val is not None else epochs)


def activity_poses_from_dicts(
    dataset_dicts: Sequence[dict], classes: Sequence[str]
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground-truth poses of the people in detectron2-style dataset dicts (``docs/internals.md``)
    whose ``activity`` is one of ``classes`` (case-insensitive) and who have at least one labelled
    keypoint: ``keypoints (N, 17, 3)``, ``boxes (N, 4)`` XYXY, ``labels (N,)`` int64. Crowd
    regions and people without an activity are left out."""
    lower = [c.lower() for c in classes]
    kps, boxes, labels = [], [], []
    for record in dataset_dicts:
        for ann in record.get("annotations", []):
            act = ann.get("activity")
            if ann.get("iscrowd", 0) or not isinstance(act, str) or act.lower() not in lower:
                continue
            k = np.asarray(ann.get("keypoints") or [], dtype=np.float32).reshape(-1, 3)
            if k.shape[0] != 17 or not (k[:, 2] > 0).any():
                continue
            kps.append(k)
            boxes.append(np.asarray(ann["bbox"], dtype=np.float32))
            labels.append(lower.index(act.lower()))
    if not labels:
        return (
            np.zeros((0, 17, 3), np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int64),
        )
    return np.stack(kps), np.stack(boxes), np.asarray(labels, np.int64)


def present_keypoint_mask(
    keypoints: np.ndarray, score_thresh: float, min_fraction: float = 0.01
) -> torch.Tensor:
    """float (17,): 1 for the keypoint types present (visibility / score > ``score_thresh``) in at
    least ``min_fraction`` of the poses ``(N, 17, 3)``, 0 for the others (MPII: eyes and ears),
    which the classifier then ignores in training and at inference."""
    frac = (np.asarray(keypoints)[..., 2] > score_thresh).mean(0)
    return torch.from_numpy((frac >= min_fraction).astype(np.float32))


def with_mirrored_poses(
    keypoints: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The poses followed by their mirror images (:func:`flip_keypoints`), same labels."""
    fk, fb = flip_keypoints(keypoints, boxes)
    return (
        np.concatenate([keypoints, fk]),
        np.concatenate([boxes, fb]),
        np.concatenate([labels, labels]),
    )


def fit_activity_classifier(
    classifier: "ActivityClassifier",
    keypoints: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 20,
    flip: bool = True,
    seed: int = 0,
) -> Dict:
    """Train ``classifier``'s MLP in place on ground-truth poses (``keypoints (N, 17, 3)`` with
    COCO visibility, ``boxes (N, 4)`` XYXY, ``labels (N,)``), with mirrored copies when ``flip``.

    Keypoint types labelled in fewer than 1 % of the poses are masked out (as
    ``tools/train_activity.py`` does). Returns ``{"num_poses", "train_accuracy"}``; the accuracy
    is on the training poses themselves (no held-out data here; ``tools/train_activity.py``
    cross-validates).
    """
    n = len(labels)
    if n < 2:
        raise ValueError(f"need at least 2 poses with an activity to fit the classifier, got {n}")
    if epochs < 1:
        raise ValueError(f"fitting the activity classifier needs epochs >= 1, got {epochs}")
    classifier.keypoint_mask.copy_(present_keypoint_mask(keypoints, classifier.score_thresh))
    k, b, y = with_mirrored_poses(keypoints, boxes, labels) if flip else (keypoints, boxes, labels)
    device = classifier.keypoint_mask.device
    x = classifier.features(torch.from_numpy(k).to(device), torch.from_numpy(b).to(device))
    mlp, _ = train_activity_mlp(
        x,
        torch.from_numpy(y),
        len(classifier.classes),
        classifier.hidden_dims,
        classifier.dropout_p,
        epochs=epochs,
        seed=seed,
        device=device,
    )
    classifier.mlp.load_state_dict(mlp.state_dict())
    classifier.mlp.eval()
    pred = classifier.mlp.predict_proba(x[:n]).argmax(1).cpu()
    acc = float((pred == torch.from_numpy(labels)).float().mean())
    return {"num_poses": n, "train_accuracy": acc}


def stratified_group_kfold(
    labels: Sequence[int], groups: Sequence, k: int = 5, seed: int = 0
) -> List[Tuple[np.ndarray, np.ndarray]]:
    """K folds split by group (person): every group is in exactly one validation fold.

    Groups are shuffled (``seed``) and, largest first, each goes to the fold that has the fewest
    samples of the group's majority class so far (ties: fewest samples overall), which keeps the
    class proportions of the folds close. Returns ``[(train_idx, val_idx)] * k`` (sorted arrays).
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if len(labels) != len(groups):
        raise ValueError(f"labels ({len(labels)}) and groups ({len(groups)}) differ in length")
    uniq, inv = np.unique(groups, return_inverse=True)
    if k < 2 or k > len(uniq):
        raise ValueError(f"k={k} folds need 2 <= k <= number of groups ({len(uniq)})")
    classes = np.unique(labels)
    cidx = np.searchsorted(classes, labels)
    g_size = np.bincount(inv, minlength=len(uniq))
    g_class = np.zeros(len(uniq), dtype=np.int64)
    for g in range(len(uniq)):
        g_class[g] = np.bincount(cidx[inv == g], minlength=len(classes)).argmax()
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(uniq))
    order = order[np.argsort(-g_size[order], kind="stable")]
    per_class = np.zeros((k, len(classes)), dtype=np.int64)
    total = np.zeros(k, dtype=np.int64)
    fold_of = np.zeros(len(uniq), dtype=np.int64)
    for g in order:
        c = g_class[g]
        f = min(range(k), key=lambda i: (per_class[i, c], total[i], i))
        fold_of[g] = f
        per_class[f, c] += g_size[g]
        total[f] += g_size[g]
    sample_fold = fold_of[inv]
    idx = np.arange(len(labels))
    return [(idx[sample_fold != f], idx[sample_fold == f]) for f in range(k)]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``cm[t, p]`` = number of samples of true class t predicted as p."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> Dict:
    """Accuracy and macro precision / recall / F1 (classes absent from both count as 0)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    pred_n = cm.sum(0).astype(np.float64)
    true_n = cm.sum(1).astype(np.float64)
    precision = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    recall = np.divide(tp, true_n, out=np.zeros_like(tp), where=true_n > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
        "per_class_precision": precision.tolist(),
        "per_class_recall": recall.tolist(),
        "per_class_f1": f1.tolist(),
        "confusion_matrix": cm.tolist(),
    }

"""Training of the activity classifier's MLP on labelled poses.

:func:`train_activity_mlp` is the training loop (Adam, cross-entropy, LR plateau, best-epoch
selection on an inner validation split); :func:`fit_activity_classifier` fits an
:class:`~multitask.modeling.postprocessing.activity.ActivityClassifier` in place on ground-truth
poses (``MODEL.ACTIVITY.FIT_ON_TRAIN_GT``); :func:`activity_poses_from_dicts` reads those poses
from dataset dicts. Also the loss weights (:func:`balanced_class_weights`,
:func:`balanced_group_weights`), the keypoint types worth using (:func:`present_keypoint_mask`)
and the mirror-image augmentation (:func:`with_mirrored_poses`). Used by the trainer and by
``tools/train_activity.py`` (which cross-validates with
``multitask.evaluation.activity_metrics``).
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling.postprocessing.activity import ActivityClassifier, ActivityMLP
from ..modeling.postprocessing.activity_features import flip_keypoints

__all__ = [
    "train_activity_mlp",
    "activity_poses_from_dicts",
    "fit_activity_classifier",
    "present_keypoint_mask",
    "with_mirrored_poses",
    "balanced_class_weights",
    "balanced_group_weights",
]


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
    dataset_dicts: Sequence[dict], classes: Sequence[str], num_keypoints: int = 17
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
            if k.shape[0] != num_keypoints or not (k[:, 2] > 0).any():
                continue
            kps.append(k)
            boxes.append(np.asarray(ann["bbox"], dtype=np.float32))
            labels.append(lower.index(act.lower()))
    if not labels:
        return (
            np.zeros((0, num_keypoints, 3), np.float32),
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
    classifier: ActivityClassifier,
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

"""Training and evaluation of the temporal activity model on tracked pose sequences.

Data: COCO keypoint jsons of video clips (``multitask.data.synthetic.video``'s
``annotations.json``: per image ``frame_index`` and ``video_fps``, per person ``track_id``,
``activity`` and 17 keypoints). :func:`track_sequences_from_coco` turns one into
:class:`TrackSequence` s: per track (and activity), its frames with labelled keypoints in order.

Training (:func:`fit_temporal_activity`): every ``stride``-th frame of every sequence (from its
``min_frames``-th on) ends a training window of the last ``T`` frames, exactly what the tracker
shows the model online (a track's first windows are shorter, left-padded and masked), labelled
with the sequence's activity. Each epoch draws fresh augmentations: the whole sequence mirrored
(left and right swapped) with probability 1/2, independent Gaussian jitter of every keypoint
(``jitter`` times the box height) and of the box, a playback speed per window (frames sampled at
a rate in ``speed``) and, optionally, held poses (``still``, :func:`still_windows`): a walker's
pose held still, labelled as standing, so that the model learns that the gait is in the motion,
not in a side view or a stride (a standing person seen from the side looks like a walker in
every single frame, and the synthetic clips' walkers are all seen from the side). Adam,
cross-entropy weighted so that every class weighs the same, a cosine learning rate; seeded
without touching the global random state.

Evaluation (:func:`compare_activity_models`): on held-out sequences, frame by frame as a tracker
would see them, the accuracy of the per-frame classifier, of its window average
(:class:`~multitask.tracking.WindowedActivity`) and of the temporal model
(:class:`~multitask.tracking.TemporalActivity`). Used by ``tools/train_temporal_activity.py``.
"""

import json
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..evaluation.activity_metrics import classification_metrics
from ..modeling.postprocessing.activity import ActivityClassifier
from ..modeling.postprocessing.activity_features import flip_keypoints
from ..tracking.activity import WindowedActivity
from ..tracking.temporal_activity import TemporalActivity, TemporalActivityNet
from .activity_training import balanced_class_weights, present_keypoint_mask

__all__ = [
    "TrackSequence",
    "track_sequences_from_coco",
    "window_indices",
    "gather_windows",
    "augment_sequences",
    "still_windows",
    "fit_temporal_activity",
    "per_frame_probabilities",
    "compare_activity_models",
]

# The track id under which evaluation runs a sequence through the online models (trackers
# number their tracks from 0 or 1)
_EVAL_TRACK = -1


class TrackSequence(NamedTuple):
    """One person's frames in order: ``keypoints (n, K, 3)`` (x, y, visibility), ``boxes (n,
    4)`` XYXY, ``frames (n,)`` frame indices, ``label`` (class index), ``fps`` (None when
    unknown) and ``name`` (``"<file>:<track_id>"``)."""

    keypoints: np.ndarray
    boxes: np.ndarray
    frames: np.ndarray
    label: int
    fps: Optional[float]
    name: str


def _frame_index_of_images(data: Dict) -> Tuple[Dict[int, int], Optional[float]]:
    """Per image id its frame index (``frame_index``, else the rank of the image id), and the
    clip's fps (``video_fps`` of the images or ``video.fps``; None without)."""
    images = sorted(data.get("images", []), key=lambda im: im["id"])
    frame_of = {im["id"]: int(im.get("frame_index", rank)) for rank, im in enumerate(images)}
    fps = next((im["video_fps"] for im in images if im.get("video_fps")), None)
    fps = fps or (data.get("video") or {}).get("fps")
    return frame_of, None if not fps else float(fps)


def track_sequences_from_coco(path: str, classes: Sequence[str], num_keypoints: int = 17,
                              min_length: int = 1) -> List[TrackSequence]:
    """The pose sequences of a clip's COCO json (module docstring): one per ``track_id`` and
    activity of ``classes`` (case-insensitive), its annotations with at least one labelled
    keypoint sorted by frame; crowd regions, people without a ``track_id`` or another activity
    and sequences shorter than ``min_length`` are left out. Boxes become XYXY."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(f"{path}: not a COCO json with an 'annotations' list")
    frame_of, fps = _frame_index_of_images(data)
    lower = [c.lower() for c in classes]
    groups: Dict[Tuple[int, int], List[Tuple[int, np.ndarray, np.ndarray]]] = OrderedDict()
    for ann in data["annotations"]:
        act = ann.get("activity")
        if (ann.get("iscrowd", 0) or "track_id" not in ann or not isinstance(act, str)
                or act.lower() not in lower):
            continue
        k = np.asarray(ann.get("keypoints") or [], dtype=np.float32)
        if k.size != num_keypoints * 3:
            raise ValueError(f"{path}: annotation {ann.get('id')}: 'keypoints' has {k.size} "
                             f"values, not {num_keypoints} x 3")
        k = k.reshape(num_keypoints, 3)
        if not (k[:, 2] > 0).any():
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        box = np.array([x, y, x + w, y + h], dtype=np.float32)
        key = (int(ann["track_id"]), lower.index(act.lower()))
        groups.setdefault(key, []).append((frame_of[ann["image_id"]], k, box))
    sequences = []
    for (track_id, label), items in groups.items():
        items.sort(key=lambda item: item[0])
        if len(items) < min_length:
            continue
        sequences.append(TrackSequence(
            np.stack([i[1] for i in items]), np.stack([i[2] for i in items]),
            np.array([i[0] for i in items], dtype=np.int64), label, fps, f"{path}:{track_id}"))
    return sequences


def window_indices(lengths: Sequence[int], frames: int, min_frames: int, stride: int = 1,
                   rng: Optional[np.random.RandomState] = None,
                   speed: Tuple[float, float] = (1.0, 1.0)) -> Tuple[np.ndarray, np.ndarray]:
    """Training windows of sequences of ``lengths`` frames stored one after another: ``(idx (W,
    T) int64`` (row of the concatenated frames, -1 = padding before a sequence's start; a
    window's last column is its newest frame), ``seq (W,)`` (the sequence of each window)).
    Windows end at every ``stride``-th frame from the ``min_frames``-th on; with ``rng`` and a
    ``speed`` range, each window steps back through its sequence at a random rate (> 1: faster
    playback)."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    ends, seqs = [], []
    for s, n in enumerate(lengths):
        e = np.arange(min_frames - 1, int(n), stride, dtype=np.int64)
        ends.append(e)
        seqs.append(np.full(e.shape, s, dtype=np.int64))
    ends, seqs = np.concatenate(ends), np.concatenate(seqs)
    back = np.arange(frames - 1, -1, -1, dtype=np.float64)[None, :]  # (1, T): T-1 .. 0
    rate = np.ones((len(ends), 1))
    if rng is not None and speed != (1.0, 1.0):
        rate = np.exp(rng.uniform(np.log(speed[0]), np.log(speed[1]), (len(ends), 1)))
    local = ends[:, None] - np.round(back * rate).astype(np.int64)
    idx = np.where(local >= 0, starts[seqs][:, None] + local, -1)
    return idx, seqs


def gather_windows(features: torch.Tensor, idx: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """``x (W, T, D)`` (rows ``idx (W, T)`` of ``features (N, D)``, zeros for -1) and ``mask (W,
    T)`` bool."""
    i = torch.from_numpy(idx)
    mask = i >= 0
    x = features[i.clamp(min=0)] * mask[..., None].to(features.dtype)
    return x, mask


def augment_sequences(keypoints: np.ndarray, boxes: np.ndarray, seq_of_frame: np.ndarray,
                      rng: np.random.RandomState, flip: bool = True,
                      jitter: float = 0.01) -> Tuple[np.ndarray, np.ndarray]:
    """Copies of the concatenated frames ``keypoints (N, K, 3)``, ``boxes (N, 4)`` (frame ``i``
    of sequence ``seq_of_frame[i]``): each sequence mirrored with probability 1/2 (``flip``),
    then every keypoint (x, y) and box corner moved by Gaussian noise of ``jitter`` times its box
    height. Visibility is kept; missing keypoints stay where they are."""
    kps, bxs = keypoints.astype(np.float32, copy=True), boxes.astype(np.float32, copy=True)
    if flip:
        mirrored = rng.rand(int(seq_of_frame.max()) + 1 if len(seq_of_frame) else 0) < 0.5
        rows = mirrored[seq_of_frame]
        if rows.any():
            kps[rows], bxs[rows] = flip_keypoints(kps[rows], bxs[rows])
    if jitter > 0:
        h = (bxs[:, 3] - bxs[:, 1]).clip(min=1.0)
        present = kps[..., 2:3] > 0
        noise = rng.normal(0.0, jitter, kps[..., :2].shape).astype(np.float32)
        kps[..., :2] += noise * h[:, None, None] * present
        bxs += rng.normal(0.0, jitter, bxs.shape).astype(np.float32) * h[:, None]
    return kps, bxs


def _concatenated(sequences: Sequence[TrackSequence]):
    """All frames of ``sequences``: keypoints (N, K, 3), boxes (N, 4), sequence of each frame
    (N,), lengths (S,), labels (S,)."""
    lengths = np.array([len(s.frames) for s in sequences], dtype=np.int64)
    return (np.concatenate([s.keypoints for s in sequences]),
            np.concatenate([s.boxes for s in sequences]),
            np.repeat(np.arange(len(sequences)), lengths), lengths,
            np.array([s.label for s in sequences], dtype=np.int64))


def still_windows(idx: np.ndarray, labels: np.ndarray, num_frames: int,
                  rng: np.random.RandomState, prob: float, still_label: int,
                  moving_labels: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held poses: each window ``idx (W, T)`` of a class of ``moving_labels`` becomes, with
    probability ``prob``, its newest frame held still (copied into every real frame of the
    window) and is labelled ``still_label``: a person in a walker's pose who does not move
    stands. Returns ``(idx (W, T)`` (a held window's rows point at new frames ``num_frames,
    num_frames + 1, ...``), ``labels (W,)``, ``source (M,)``: the frame each new row copies).
    """
    idx, labels = idx.copy(), labels.copy()
    held = np.flatnonzero(np.isin(labels, list(moving_labels)) & (rng.rand(len(labels)) < prob))
    T = idx.shape[1]
    rows = num_frames + np.arange(len(held) * T, dtype=np.int64).reshape(len(held), T)
    source = np.repeat(idx[held, -1], T)
    idx[held] = np.where(idx[held] >= 0, rows, -1)
    labels[held] = still_label
    return idx, labels, source


def _epoch_windows(temporal: TemporalActivity, data, rng, flip, jitter, stride, speed, still):
    """One epoch's augmented windows ``x (W, T, D)``, ``mask (W, T)`` and labels ``(W,)``
    (``still``: None or ``(prob, still_label, moving_labels)`` of :func:`still_windows`)."""
    kps, boxes, seq_of_frame, lengths, labels = data
    idx, seqs = window_indices(lengths, temporal.frames, temporal.min_frames, stride, rng, speed)
    y = labels[seqs]
    if still is not None and still[0] > 0:
        idx, y, source = still_windows(idx, y, len(kps), rng, *still)
        kps, boxes = np.concatenate([kps, kps[source]]), np.concatenate([boxes, boxes[source]])
        seq_of_frame = np.concatenate([seq_of_frame, seq_of_frame[source]])
    k, b = augment_sequences(kps, boxes, seq_of_frame, rng, flip, jitter)
    x, mask = gather_windows(temporal.features(k, b), idx)
    return x, mask, torch.from_numpy(y)


def fit_temporal_activity(temporal: TemporalActivity, sequences: Sequence[TrackSequence], *,
                          epochs: int = 30, batch_size: int = 64, lr: float = 1e-3,
                          weight_decay: float = 1e-4, stride: int = 2, flip: bool = True,
                          jitter: float = 0.01, speed: Tuple[float, float] = (0.8, 1.25),
                          still: Optional[Tuple[float, int, Sequence[int]]] = None,
                          seed: int = 0) -> Dict:
    """Train a new network of ``temporal``'s architecture on labelled ``sequences`` (module
    docstring; initialised from ``seed`` too) and give it to ``temporal``, whose
    ``keypoint_mask`` becomes the keypoint types labelled in at least 1 % of the frames.
    ``still = (prob, still_label, moving_labels)`` adds held poses (:func:`still_windows`).
    Returns ``{"num_sequences", "num_windows", "loss" (per epoch), "train_accuracy"}`` (the
    last epoch's, on its augmented windows)."""
    if len({s.label for s in sequences}) < 2:
        raise ValueError("need sequences of at least two classes to fit the temporal model")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    data = _concatenated(sequences)
    temporal.keypoint_mask = present_keypoint_mask(data[0], temporal.score_thresh).numpy()
    temporal.reset()
    rng = np.random.RandomState(seed)
    losses, correct, total = [], 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TemporalActivityNet(temporal.in_dim, len(temporal.classes),
                                  **temporal.net.architecture())
        temporal.net = net
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            x, mask, y = _epoch_windows(temporal, data, rng, flip, jitter, stride, speed, still)
            weight = balanced_class_weights(y.numpy(), len(temporal.classes))
            net.train()
            perm, total_loss, correct, total = torch.randperm(len(y), generator=g), 0.0, 0, 0
            for s in range(0, len(y), batch_size):
                i = perm[s:s + batch_size]
                if i.numel() < 2:  # BatchNorm needs 2 samples
                    continue
                logits = net(x[i], mask[i])
                loss = F.cross_entropy(logits, y[i], weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total_loss += loss.item() * i.numel()
                correct += int((logits.argmax(1) == y[i]).sum())
                total += i.numel()
            sched.step()
            losses.append(total_loss / max(total, 1))
        net.eval()
    temporal.weights_source = "fitted"
    return {"num_sequences": len(sequences), "num_windows": int(len(y)), "loss": losses,
            "train_accuracy": correct / max(total, 1)}


def per_frame_probabilities(classifier: ActivityClassifier,
                            sequence: TrackSequence) -> np.ndarray:
    """The per-frame classifier's calibrated probabilities ``(n, C)`` float64 of a sequence."""
    _, probs = classifier.classify(torch.from_numpy(sequence.keypoints),
                                   torch.from_numpy(sequence.boxes))
    return probs.cpu().numpy().astype(np.float64)


def _online_predictions(sequence: TrackSequence, frame_probs: np.ndarray,
                        temporal: TemporalActivity, window: WindowedActivity) -> np.ndarray:
    """``(3, n)`` labels of a sequence frame by frame: per-frame, window average, temporal
    (under the track id ``_EVAL_TRACK``, forgotten afterwards)."""
    temporal.forget([_EVAL_TRACK])
    out = np.zeros((3, len(sequence.frames)), dtype=np.int64)
    for f in range(len(sequence.frames)):
        out[0, f] = int(np.argmax(frame_probs[f]))
        out[1, f] = window.update(_EVAL_TRACK, frame_probs[f])[1]
        out[2, f] = temporal.update(_EVAL_TRACK, sequence.keypoints[f], sequence.boxes[f],
                                    frame_probs[f])[1]
    temporal.forget([_EVAL_TRACK])
    return out


def compare_activity_models(sequences: Sequence[TrackSequence], classifier: ActivityClassifier,
                            temporal: TemporalActivity, window_seconds: float,
                            default_fps: float = 25.0) -> Dict[str, Dict]:
    """Accuracy of the per-frame classifier (``"per_frame"``), its average over
    ``window_seconds`` (``"windowed"``) and the temporal model (``"temporal"``) on every frame of
    ``sequences``, each frame judged on that frame and the ones before it, as a tracker sees
    them (metrics of :func:`~multitask.evaluation.activity_metrics.classification_metrics`,
    plus ``accuracy_full_window``: on the frames with at least ``temporal.frames`` frames of
    history, and ``num_frames``). The models' states are left as they were for other tracks."""
    num_classes = len(temporal.classes)
    preds, truth, full = [], [], []
    for seq in sequences:
        window = WindowedActivity(window_seconds, seq.fps or default_fps)
        preds.append(_online_predictions(seq, per_frame_probabilities(classifier, seq),
                                         temporal, window))
        truth.append(np.full(len(seq.frames), seq.label, dtype=np.int64))
        full.append(np.arange(len(seq.frames)) >= temporal.frames - 1)
    preds, truth, full = np.concatenate(preds, 1), np.concatenate(truth), np.concatenate(full)
    results = OrderedDict()
    for row, name in enumerate(("per_frame", "windowed", "temporal")):
        m = classification_metrics(truth, preds[row], num_classes)
        m["accuracy_full_window"] = float((preds[row][full] == truth[full]).mean()) \
            if full.any() else float("nan")
        m["num_frames"] = int(len(truth))
        results[name] = m
    return results

#!/usr/bin/env python
"""Train the temporal activity model on tracked pose sequences; compare it with the per-frame one.

Data: COCO keypoint jsons of video clips with a ``track_id``, an ``activity`` and 17 keypoints per
person and a ``frame_index`` per image (``tools/make_synthetic_clips.py`` writes them; ground-truth
poses). ``--sequences`` are trained on; ``--val-sequences`` are held out (default: the last quarter
of the ``--sequences`` files, at least one, when there are two or more).

Trained (``multitask.engine.temporal_activity_training``): the temporal model
(``multitask.tracking.temporal_activity``, ``--temporal-frames`` T) on sliding windows of every
track, mirrored, jittered, played at varied speeds and with held poses (``--still-prob``: a
window of a ``--moving-classes`` track held still on its newest frame and labelled
``--still-class``), and, for comparison, the per-frame activity classifier (MLP,
``MODEL.ACTIVITY.*``) on the same training frames. Printed: the accuracy on every frame of the
held-out tracks, each frame judged as a tracker sees it (on that frame and the ones before it), of
the per-frame classifier, of its average over ``--window-seconds`` (``TRACKING.ACTIVITY_MODEL
window``) and of the temporal model (``temporal``; the per-frame answer for a track's first
``--min-frames`` - 1 frames); also on the frames with a full window of history only, and the
recall per class.

Writes to ``--output-dir``: ``temporal_activity.pth`` (``TRACKING.TEMPORAL_WEIGHTS``, with
``TRACKING.TEMPORAL_FRAMES`` T and ``TEMPORAL_MIN_FRAMES``), ``activity_classifier.pth`` (the
per-frame classifier, ``MODEL.ACTIVITY.WEIGHTS``) and ``metrics.json``.

Example::

    python tools/make_synthetic_clips.py --output /tmp/clips --num-clips 14 --num-frames 90 \\
        --height 240 --width 320 --min-people 3 --max-people 4 --min-keypoint-area 0
    python tools/train_temporal_activity.py \\
        --sequences /tmp/clips/clip_00000[0-9]/annotations.json \\
        --val-sequences /tmp/clips/clip_00001[0-3]/annotations.json --output-dir output/temporal
"""

import argparse
import json
import os
import time
from collections import OrderedDict

import numpy as np
import torch

from multitask.config import get_cfg
from multitask.engine.activity_training import fit_activity_classifier
from multitask.engine.temporal_activity_training import (
    compare_activity_models,
    fit_temporal_activity,
    track_sequences_from_coco,
)
from multitask.modeling.postprocessing.activity import ActivityClassifier, save_activity_weights
from multitask.tracking import TemporalActivity
from multitask.tracking.temporal_activity import DEFAULT_ARCHITECTURE
from multitask.utils.file_io import atomic_write

METHODS = (("per_frame", "per-frame MLP"), ("windowed", "windowed MLP"),
           ("temporal", "temporal model"))


def parse_args(argv=None):
    cfg = get_cfg()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sequences", nargs="+", required=True,
                   help="COCO jsons of clips with a track_id per person (training)")
    p.add_argument("--val-sequences", nargs="+", default=None,
                   help="held-out clips (default: the last quarter of --sequences)")
    p.add_argument("--classes", nargs="+", default=list(cfg.MODEL.ACTIVITY.CLASSES))
    p.add_argument("--temporal-frames", type=int, default=cfg.TRACKING.TEMPORAL_FRAMES,
                   help="frames the temporal model reads (TRACKING.TEMPORAL_FRAMES)")
    p.add_argument("--min-frames", type=int, default=cfg.TRACKING.TEMPORAL_MIN_FRAMES,
                   help="a track's frames before the model answers (TEMPORAL_MIN_FRAMES)")
    p.add_argument("--window-seconds", type=float, default=cfg.TRACKING.ACTIVITY_WINDOW_SECONDS,
                   help="the windowed average's length, for the comparison")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--stride", type=int, default=2, help="frames between training windows")
    p.add_argument("--jitter", type=float, default=0.01,
                   help="keypoint and box noise, fraction of the box height")
    p.add_argument("--speed", type=float, nargs=2, default=[0.8, 1.25],
                   help="range of the playback speed of a training window")
    p.add_argument("--no-flip-aug", action="store_true", help="no mirrored sequences")
    p.add_argument("--still-prob", type=float, default=0.2,
                   help="probability that a window of a moving class is held still and "
                   "labelled --still-class (0: never)")
    p.add_argument("--still-class", default="standing",
                   help="the class of a person who holds a moving class's pose")
    p.add_argument("--moving-classes", nargs="+", default=["walking", "running"],
                   help="classes told by their motion")
    p.add_argument("--channels", type=int, default=DEFAULT_ARCHITECTURE["channels"])
    p.add_argument("--kernel-size", type=int, default=DEFAULT_ARCHITECTURE["kernel_size"])
    p.add_argument("--dilations", type=int, nargs="+",
                   default=list(DEFAULT_ARCHITECTURE["dilations"]))
    p.add_argument("--dropout", type=float, default=DEFAULT_ARCHITECTURE["dropout"])
    p.add_argument("--mlp-epochs", type=int, default=cfg.MODEL.ACTIVITY.FIT_EPOCHS,
                   help="epochs of the per-frame classifier")
    p.add_argument("--no-geometry", dest="geometry", action="store_false",
                   help="features without the pose geometry (MODEL.ACTIVITY.GEOMETRY False)")
    p.add_argument("--no-visibility", action="store_true",
                   help="features without the visibility mask (MODEL.ACTIVITY.USE_VISIBILITY)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="output/temporal_activity")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1; 0 = torch's default)")
    return p.parse_args(argv)


def load_split(args):
    """(training sequences, held-out sequences, held-out files)."""
    train_files, val_files = list(args.sequences), args.val_sequences
    if not val_files:
        if len(train_files) < 2:
            raise SystemExit("--val-sequences: give held-out clips (or two or more "
                             "--sequences, the last quarter of which are held out)")
        n_val = max(1, len(train_files) // 4)
        train_files, val_files = train_files[:-n_val], train_files[-n_val:]
    seqs = {}
    for split, files in (("train", train_files), ("val", val_files)):
        seqs[split] = []
        for path in files:
            try:
                seqs[split] += track_sequences_from_coco(path, args.classes)
            except (OSError, ValueError) as e:
                raise SystemExit(f"--sequences {path}: {e}")
        frames = np.bincount([s.label for s in seqs[split] for _ in s.frames],
                             minlength=len(args.classes))
        tracks = np.bincount([s.label for s in seqs[split]], minlength=len(args.classes))
        print(f"{split}: {len(files)} clips, {len(seqs[split])} tracks, {int(frames.sum())} "
              f"frames; tracks / frames per class: " + ", ".join(
                  f"{c} {t}/{f}" for c, t, f in zip(args.classes, tracks, frames)))
    if len({s.label for s in seqs["train"]}) < 2 or not seqs["val"]:
        raise SystemExit("need training tracks of at least two classes and held-out tracks")
    return seqs["train"], seqs["val"], val_files


def fit_per_frame(train, args):
    """The per-frame classifier (``MODEL.ACTIVITY.*`` defaults) fitted on the training frames."""
    classifier = ActivityClassifier(classes=args.classes, geometry=args.geometry,
                                    use_visibility=not args.no_visibility, weights="")
    info = fit_activity_classifier(
        classifier, np.concatenate([s.keypoints for s in train]),
        np.concatenate([s.boxes for s in train]),
        np.concatenate([np.full(len(s.frames), s.label) for s in train]),
        epochs=args.mlp_epochs, seed=args.seed)
    path = os.path.join(args.output_dir, "activity_classifier.pth")
    save_activity_weights(path, classifier.mlp, args.classes, classifier.input_layout(),
                          classifier.hidden_dims, classifier.dropout_p)
    return classifier, info, path


def still_augmentation(args):
    """``(prob, still label, moving labels)`` of the held poses, or None when off (or when
    ``--classes`` lacks the classes they name)."""
    names = [args.still_class] + list(args.moving_classes)
    if args.still_prob <= 0:
        return None
    missing = [c for c in names if c not in args.classes]
    if missing:
        print(f"held poses off: --classes has no {missing}")
        return None
    return (args.still_prob, args.classes.index(args.still_class),
            [args.classes.index(c) for c in args.moving_classes])


def fit_temporal(train, args):
    """The temporal model trained on the training sequences, and its file."""
    temporal = TemporalActivity(
        classes=args.classes, frames=args.temporal_frames, min_frames=args.min_frames,
        geometry=args.geometry, use_visibility=not args.no_visibility, channels=args.channels,
        kernel_size=args.kernel_size, dilations=args.dilations, dropout=args.dropout, weights="")
    info = fit_temporal_activity(
        temporal, train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        stride=args.stride, flip=not args.no_flip_aug, jitter=args.jitter,
        speed=tuple(args.speed), still=still_augmentation(args), seed=args.seed)
    fps = [s.fps for s in train if s.fps]
    path = os.path.join(args.output_dir, "temporal_activity.pth")
    temporal.save(path, fps=float(np.median(fps)) if fps else None)
    return temporal, info, path


def print_table(results, classes, num_val_clips):
    from tabulate import tabulate

    rows = [[label, r["accuracy"], r["accuracy_full_window"], r["f1"]] + r["per_class_recall"]
            for name, label in METHODS for r in [results[name]]]
    n = results["temporal"]["num_frames"]
    print(f"held-out: {num_val_clips} clips, {n} track frames")
    print(tabulate(rows, headers=["", "accuracy", "acc. (full window)", "F1 (macro)"]
                   + [f"recall {c}" for c in classes], floatfmt=".3f"))


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    t0 = time.time()
    train, val, val_files = load_split(args)
    classifier, mlp_info, mlp_path = fit_per_frame(train, args)
    print(f"per-frame MLP: {mlp_info['num_poses']} training poses, training accuracy "
          f"{mlp_info['train_accuracy']:.3f} ({time.time() - t0:.0f}s): {mlp_path}")
    temporal, info, path = fit_temporal(train, args)
    print(f"temporal model (T={args.temporal_frames}): {info['num_windows']} windows per epoch, "
          f"{args.epochs} epochs, final loss {info['loss'][-1]:.4f}, training accuracy "
          f"{info['train_accuracy']:.3f} ({time.time() - t0:.0f}s): {path}")
    results = compare_activity_models(val, classifier, temporal, args.window_seconds)
    print_table(results, args.classes, len(val_files))
    out = OrderedDict(args=vars(args), classes=args.classes, held_out=val_files,
                      per_frame_fit=mlp_info, temporal_fit=info, results=results,
                      seconds=time.time() - t0)
    atomic_write(os.path.join(args.output_dir, "metrics.json"),
                 lambda f: json.dump(out, f, indent=1), mode="w")
    print(f"done in {time.time() - t0:.0f}s")
    return out


if __name__ == "__main__":
    main()

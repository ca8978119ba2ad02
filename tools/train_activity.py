#!/usr/bin/env python
"""Train and cross-validate the pose-based activity classifier (blog: "Recognizing Human Actions").

Data: MPII Human Pose's activity csv (``--mpii-csv``, see ``multitask.data.mpii`` for the joint
mapping and the class rule) and/or COCO-format keypoint jsons whose annotations carry an
``"activity"`` string (``--coco-json``, repeatable; ground-truth poses; a person is identified by
the annotation's ``person_id``/``track_id`` if present, else its ``id``).

Features: the keypoints normalised in their box with a visibility mask, and the pose's geometry
(joint angles, limb directions and lengths; ``--no-geometry`` leaves it out, and such weights load
with ``MODEL.ACTIVITY.GEOMETRY False``); see ``multitask.modeling.postprocessing.activity``.

K-fold cross-validation with folds split by person (stratified, no person in two folds), Adam
(``--lr``), ``ReduceLROnPlateau`` (factor 0.1) and best-epoch selection on an inner, person-grouped
``--inner-val`` split of each training split (never the fold's validation persons), mirrored
copies of the training poses (``--no-flip-aug`` to disable), cross-entropy; prints
per-fold and mean accuracy and macro precision / recall / F1; writes to ``--output-dir``:
``confusion_matrix.png`` (row-normalised, validation predictions of all folds), ``metrics.json``
and ``activity_classifier.pth`` (a model trained on all data for the median best epoch count of the
folds, with its class list and input layout, loadable as ``MODEL.ACTIVITY.WEIGHTS``).

Example::

    python tools/train_activity.py --mpii-csv ../shared/data/mpii-activity/mpii_human_pose.csv \
        --output-dir output/activity
"""

import argparse
import json
import os
import sys
import time
from collections import OrderedDict

import numpy as np
import torch

from multitask.modeling.postprocessing.activity import (
    KEEP_ASPECT,
    ActivityClassifier,
    classification_metrics,
    keypoints_to_activity_features,
    present_keypoint_mask,
    save_activity_weights,
    stratified_group_kfold,
    train_activity_mlp,
    with_mirrored_poses,
)

DEFAULT_CLASSES = ["walking", "running", "sitting", "standing"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mpii-csv", default=None, help="MPII activity csv (mpii_human_pose.csv)")
    p.add_argument(
        "--mpii-rule",
        default="posture",
        choices=["posture", "keywords"],
        help="how MPII activity names map to classes (see multitask.data.mpii)",
    )
    p.add_argument(
        "--mpii-require-knees",
        action="store_true",
        help="drop MPII persons without both knees annotated (upper-body crops)",
    )
    p.add_argument(
        "--coco-json",
        action="append",
        default=[],
        help="COCO keypoint json with an 'activity' field per person (repeatable)",
    )
    p.add_argument(
        "--image-root",
        default=None,
        help="image folder of --coco-json (unused: the poses are ground truth)",
    )
    p.add_argument("--classes", nargs="+", default=DEFAULT_CLASSES)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden-dims", type=int, nargs="+", default=[3072, 128])
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--patience", type=int, default=5, help="ReduceLROnPlateau patience (epochs)")
    p.add_argument(
        "--inner-val",
        type=float,
        default=0.1,
        help="fraction of each training split (by person) held out to pick the best "
        "epoch and drive the LR plateau; 0: last epoch, plateau on training loss",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default="output/activity")
    p.add_argument(
        "--no-visibility", action="store_true", help="features without the 17-value mask"
    )
    p.add_argument(
        "--no-geometry",
        dest="geometry",
        action="store_false",
        help="do not give the MLP the pose's joint angles, limb directions and lengths "
        "(load such weights with MODEL.ACTIVITY.GEOMETRY False)",
    )
    p.add_argument(
        "--no-keep-aspect",
        action="store_true",
        help="normalise x and y by the box's own width and height (default: square box)",
    )
    p.add_argument(
        "--no-flip-aug",
        action="store_true",
        help="do not add mirrored copies of the training poses",
    )
    p.add_argument(
        "--score-thresh",
        type=float,
        default=0.05,
        help="keypoints with visibility/score <= this are missing",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: this small MLP is fastest single-threaded "
        "on a shared machine; 0 = torch's default)",
    )
    return p.parse_args(argv)


def load_coco_activity_json(path, classes):
    """(keypoints (N,17,3), boxes (N,4) XYXY, labels (N,), person ids (N,) as strings)."""
    with open(path) as f:
        data = json.load(f)
    lower = [c.lower() for c in classes]
    kps, boxes, labels, groups = [], [], [], []
    skipped = 0
    for a in data.get("annotations", []):
        act = a.get("activity")
        if a.get("iscrowd", 0) or not act or act.lower() not in lower:
            skipped += 1
            continue
        k = np.asarray(a.get("keypoints", []), dtype=np.float32).reshape(-1, 3)
        if k.shape[0] != 17 or (k[:, 2] > 0).sum() == 0:
            skipped += 1
            continue
        x, y, w, h = a["bbox"]
        kps.append(k)
        boxes.append([x, y, x + w, y + h])
        labels.append(lower.index(act.lower()))
        pid = a.get("person_id", a.get("track_id", a["id"]))
        groups.append(f"{path}:{pid}")
    print(
        f"COCO json {path}: kept {len(labels)} persons with an activity in {classes}, "
        f"skipped {skipped} annotations"
    )
    if not labels:
        return (
            np.zeros((0, 17, 3), np.float32),
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), dtype=object),
        )
    return (
        np.stack(kps),
        np.asarray(boxes, np.float32),
        np.asarray(labels, np.int64),
        np.asarray(groups, dtype=object),
    )


def load_data(args):
    kps, boxes, labels, groups = [], [], [], []
    if args.mpii_csv:
        from multitask.data.mpii import load_mpii_activity_csv

        k, b, y, info = load_mpii_activity_csv(
            args.mpii_csv, args.classes, rule=args.mpii_rule, require_knees=args.mpii_require_knees
        )
        kps.append(k), boxes.append(b), labels.append(y)
        groups.append(np.asarray([f"mpii:{i}" for i in info["person_ids"]], dtype=object))
    for path in args.coco_json:
        k, b, y, g = load_coco_activity_json(path, args.classes)
        kps.append(k), boxes.append(b), labels.append(y), groups.append(g)
    if not kps:
        sys.exit("give --mpii-csv and/or --coco-json")
    kps, boxes = np.concatenate(kps), np.concatenate(boxes)
    labels, groups = np.concatenate(labels), np.concatenate(groups)
    if len(labels) == 0:
        sys.exit("no persons with one of the classes " + str(args.classes))
    return kps, boxes, labels, groups


def make_features(kps, boxes, args, keypoint_mask):
    return keypoints_to_activity_features(
        torch.from_numpy(kps),
        torch.from_numpy(boxes),
        use_visibility=not args.no_visibility,
        score_thresh=args.score_thresh,
        keep_aspect=not args.no_keep_aspect,
        keypoint_mask=keypoint_mask,
        geometry=args.geometry,
    )


def train_model(x, y, num_classes, args, seed, val=None, epochs=None):
    """Train an ActivityMLP with the command line's settings; returns (model, epochs kept)
    (see ``train_activity_mlp``: ``val`` is an inner split of the training data)."""
    return train_activity_mlp(
        x,
        y,
        num_classes,
        args.hidden_dims,
        args.dropout,
        epochs=epochs or args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=seed,
        device=args.device,
        val=val,
    )


def augmented(kps, boxes, labels, args):
    if args.no_flip_aug:
        return kps, boxes, labels
    return with_mirrored_poses(kps, boxes, labels)


def save_confusion_png(cm, classes, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6), dpi=120)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}",
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    t0 = time.time()
    kps, boxes, labels, groups = load_data(args)
    C = len(args.classes)
    counts = np.bincount(labels, minlength=C)
    print("persons per class: " + ", ".join(f"{c}={n}" for c, n in zip(args.classes, counts)))
    # keypoint types present in at least 1% of the data are used; the others (MPII: eyes, ears)
    # are masked out here and at inference
    keypoint_mask = present_keypoint_mask(kps, args.score_thresh)
    print(f"keypoints used: {[i for i in range(17) if keypoint_mask[i] > 0]}")

    folds = stratified_group_kfold(labels, groups, args.folds, args.seed)
    rows, all_true, all_pred, best_epochs = [], [], [], []
    for f, (tr, va) in enumerate(folds):
        assert not set(groups[tr]) & set(groups[va]), "a person is in train and validation"
        inner_val = None
        fit = tr
        if args.inner_val > 0:
            # model selection / LR plateau on a person-grouped split of the training folds
            n_inner = max(2, int(round(1.0 / args.inner_val)))
            itr, iva = stratified_group_kfold(labels[tr], groups[tr], n_inner, args.seed + 100 + f)[
                0
            ]
            fit = tr[itr]
            inner_val = (
                make_features(kps[tr[iva]], boxes[tr[iva]], args, keypoint_mask),
                torch.from_numpy(labels[tr[iva]]),
            )
        k_tr, b_tr, y_tr = augmented(kps[fit], boxes[fit], labels[fit], args)
        x_tr = make_features(k_tr, b_tr, args, keypoint_mask)
        x_va = make_features(kps[va], boxes[va], args, keypoint_mask)
        model, best_epoch = train_model(
            x_tr, torch.from_numpy(y_tr), C, args, args.seed + f, val=inner_val
        )
        best_epochs.append(best_epoch)
        with torch.no_grad():
            pred = model(x_va.to(args.device)).argmax(1).cpu().numpy()
        m = classification_metrics(labels[va], pred, C)
        m.update(fold=f, n_train=int(len(tr)), n_val=int(len(va)), best_epoch=int(best_epoch))
        rows.append(m)
        all_true.append(labels[va])
        all_pred.append(pred)
        print(
            f"fold {f}: n_train={len(tr)} n_val={len(va)} acc={m['accuracy']:.4f} "
            f"f1={m['f1']:.4f} best_epoch={best_epoch} ({time.time() - t0:.0f}s)",
            flush=True,
        )

    keys = ["precision", "recall", "f1", "accuracy"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    std = {k: float(np.std([r[k] for r in rows])) for k in keys}
    table = [[f"fold {r['fold']}", r["n_val"]] + [r[k] for k in keys] for r in rows]
    table.append(["mean", int(sum(r["n_val"] for r in rows))] + [mean[k] for k in keys])
    table.append(["std", ""] + [std[k] for k in keys])
    try:
        from tabulate import tabulate

        print(
            tabulate(
                table,
                headers=[
                    "",
                    "n_val",
                    "precision (macro)",
                    "recall (macro)",
                    "F1 (macro)",
                    "accuracy",
                ],
                floatfmt=".4f",
            )
        )
    except ImportError:
        for r in table:
            print(r)

    all_true, all_pred = np.concatenate(all_true), np.concatenate(all_pred)
    pooled = classification_metrics(all_true, all_pred, C)
    png = os.path.join(args.output_dir, "confusion_matrix.png")
    save_confusion_png(
        pooled["confusion_matrix"],
        args.classes,
        png,
        f"{args.folds}-fold CV, row-normalised (mean acc {mean['accuracy']:.3f})",
    )
    print(
        "per-class recall (pooled validation): "
        + ", ".join(f"{c}={r:.3f}" for c, r in zip(args.classes, pooled["per_class_recall"]))
    )
    print(f"confusion matrix PNG: {os.path.abspath(png)}")

    # final model on all data, for the median of the folds' best epoch counts
    final_epochs = int(np.median(best_epochs))
    k_all, b_all, y_all = augmented(kps, boxes, labels, args)
    final, _ = train_model(
        make_features(k_all, b_all, args, keypoint_mask),
        torch.from_numpy(y_all),
        C,
        args,
        args.seed + 1000,
        epochs=final_epochs,
    )
    # the file's input layout is the one the post-processor reads back: ask a classifier built
    # with these settings rather than write the dict twice
    classifier = ActivityClassifier(
        classes=args.classes,
        hidden_dims=args.hidden_dims,
        dropout=args.dropout,
        use_visibility=not args.no_visibility,
        geometry=args.geometry,
        score_thresh=args.score_thresh,
        keep_aspect=not args.no_keep_aspect,
        load_weights=False,
    )
    classifier.keypoint_mask.copy_(torch.as_tensor(keypoint_mask, dtype=torch.float32))
    layout = classifier.input_layout()
    if layout["in_dim"] != final.in_dim:
        raise RuntimeError(f"features have {final.in_dim} values, the layout {layout['in_dim']}")
    wpath = os.path.join(args.output_dir, "activity_classifier.pth")
    save_activity_weights(
        wpath, final.cpu(), args.classes, layout, args.hidden_dims, args.dropout, cv_mean=mean
    )
    print(
        f"final model (all {len(labels)} persons, {final_epochs} epochs): "
        f"{os.path.abspath(wpath)}"
    )

    out = OrderedDict(
        args=vars(args),
        classes=args.classes,
        class_counts=counts.tolist(),
        folds=rows,
        mean=mean,
        std=std,
        pooled=pooled,
        input_layout=layout,
        keep_aspect_default=KEEP_ASPECT,
        seconds=time.time() - t0,
    )
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(f"done in {time.time() - t0:.0f}s")
    return out


if __name__ == "__main__":
    main()

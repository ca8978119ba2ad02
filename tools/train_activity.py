#!/usr/bin/env python
"""Train and cross-validate the pose-based activity classifier (blog: "Recognizing Human Actions").

Data: MPII Human Pose's activity csv (``--mpii-csv``, see ``multitask.data.mpii`` for the joint
mapping and the class rule) and/or COCO-format keypoint jsons whose annotations carry an
``"activity"`` string (``--coco-json``, repeatable; ground-truth poses; a person is identified by
the annotation's ``person_id``/``track_id`` if present, else its ``id``).

Features: the keypoints normalised in their box with a visibility mask, and the pose's geometry
(joint angles, limb directions and lengths; ``--no-geometry`` leaves it out, and such weights load
with ``MODEL.ACTIVITY.GEOMETRY False``); see
``multitask.modeling.postprocessing.activity_features``.

K-fold cross-validation with folds split by person (stratified, no person in two folds), Adam
(``--lr``), ``ReduceLROnPlateau`` (factor 0.1) and best-epoch selection on an inner, person-grouped
``--inner-val`` split of each training split (never the fold's validation persons).

Trained for the pose, not for which joints are visible (``multitask.data.pose_augment``):
mirrored copies of the training poses (``--no-flip-aug``); ``--aug-copies`` copies rotated and
scaled about the box centre that take, with ``--transplant-prob``, the missing joints of a person
of another class and lose, with ``--occlusion-prob``, a random limb, the legs, the lower body or
one side; and a cross-entropy weighted so that every class weighs the same within each
visibility group (full body, upper body only, between; ``--balance``).
Calibrated: the logits' temperature is fitted on each fold's inner split (the expected calibration
error on the fold's validation persons is printed before and after) and the median is saved.

Prints per-fold and mean accuracy and macro precision / recall / F1, per-class figures, the
confusion matrix and accuracy per slice (all people, full-body people: hips, knees and ankles
visible, upper-body-only people); writes to ``--output-dir``: ``confusion_matrix.png``
(row-normalised, validation predictions of all folds), ``metrics.json`` and
``activity_classifier.pth`` (a model trained on all data for the median best epoch count of the
folds, with its class list, input layout and temperature, loadable as ``MODEL.ACTIVITY.WEIGHTS``).

With ``--weights W`` nothing is trained: the saved classifier is scored on the given data
(``--eval-json``/``--coco-json`` and/or ``--mpii-csv``), with ``--min-confidence`` and
``--min-visible-keypoints`` as ``MODEL.ACTIVITY.MIN_CONFIDENCE`` / ``MIN_VISIBLE_KEYPOINTS``
(answers below them are "unknown": coverage and accuracy on the rest are reported).

Examples::

    python tools/train_activity.py --mpii-csv ../shared/data/mpii-activity/mpii_human_pose.csv \
        --output-dir output/activity
    python tools/train_activity.py --weights output/activity/activity_classifier.pth \
        --eval-json datasets/synthetic_people/val/annotations.json --output-dir output/act_eval
"""

import argparse
import json
import os
import sys
import time
from collections import Counter, OrderedDict
from typing import NamedTuple

import numpy as np
import torch

from multitask.data.pose_augment import augment_poses, visibility_groups
from multitask.engine.activity_training import (
    balanced_class_weights,
    balanced_group_weights,
    present_keypoint_mask,
    train_activity_mlp,
    with_mirrored_poses,
)
from multitask.evaluation.activity_metrics import classification_metrics, stratified_group_kfold
from multitask.evaluation.activity_report import format_report, report, save_confusion_png
from multitask.evaluation.calibration import expected_calibration_error, fit_temperature
from multitask.modeling.postprocessing.activity import (
    ActivityClassifier,
    load_activity_weights,
    save_activity_weights,
)
from multitask.modeling.postprocessing.activity_features import (
    KEEP_ASPECT,
    keypoints_to_activity_features,
)
from multitask.utils.file_io import atomic_write

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
        "--eval-json",
        dest="coco_json",
        action="append",
        default=[],
        help="COCO keypoint json with an 'activity' field per person (repeatable)",
    )
    p.add_argument(
        "--skip-unknown-activities",
        action="store_true",
        help="leave out people whose activity is not one of --classes (default: an error)",
    )
    p.add_argument("--weights", default=None,
                   help="score these saved weights on the data instead of training")
    p.add_argument("--min-confidence", type=float, default=0.0,
                   help="with --weights: 'unknown' below this calibrated probability")
    p.add_argument("--min-visible-keypoints", type=int, default=0,
                   help="with --weights: 'unknown' with fewer visible keypoints")
    p.add_argument("--aug-copies", type=int, default=2,
                   help="rotated / scaled / occluded copies per training pose (0: none)")
    p.add_argument("--transplant-prob", type=float, default=0.8,
                   help="probability that a copy loses the joints a person of another class lacks")
    p.add_argument("--occlusion-prob", type=float, default=0.3,
                   help="probability that a copy loses a limb, the legs, the lower body or a side")
    p.add_argument("--balance", default="visibility", choices=["none", "class", "visibility"],
                   help="loss weights: none; every class alike; every class alike within each "
                   "visibility group (full body, upper body only, between), so that how much of "
                   "the body is visible does not tell the class")
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


def load_coco_activity_json(path, classes, skip_unknown=False):
    """(keypoints (N,17,3), boxes (N,4) XYXY, labels (N,), person ids (N,) as strings).

    Refused with a message naming the file and the field: no annotation with an ``activity``,
    activities not in ``classes`` (unless ``skip_unknown``), non-finite keypoints or boxes,
    keypoints that are not 17 x 3 values."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--coco-json {path}: cannot read it as json: {e}")
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise SystemExit(f"--coco-json {path}: no 'annotations' list")
    lower = [c.lower() for c in classes]
    with_activity = [a for a in anns if isinstance(a.get("activity"), str) and a["activity"]]
    if not with_activity:
        raise SystemExit(f"--coco-json {path}: none of its {len(anns)} annotations has an "
                         f"'activity' field; activity labels are needed to train or score")
    unknown = Counter(a["activity"] for a in with_activity if a["activity"].lower() not in lower)
    if unknown and not skip_unknown:
        raise SystemExit(f"--coco-json {path}: field 'activity' has names that are not in "
                         f"--classes {list(classes)}: {dict(unknown)}; pass --classes with "
                         f"them or --skip-unknown-activities")
    kps, boxes, labels, groups = [], [], [], []
    skipped = 0
    for a in anns:
        act = a.get("activity")
        if a.get("iscrowd", 0) or not isinstance(act, str) or act.lower() not in lower:
            skipped += 1
            continue
        k = np.asarray(a.get("keypoints") or [], dtype=np.float32)
        if k.size != 17 * 3:
            raise SystemExit(f"--coco-json {path}: annotation {a.get('id')}: field 'keypoints' "
                             f"has {k.size} values, not 17 x 3")
        k = k.reshape(17, 3)
        bbox = np.asarray(a.get("bbox", []), dtype=np.float32)
        for field, v in (("keypoints", k), ("bbox", bbox)):
            if v.size == 0 or not np.isfinite(v).all():
                raise SystemExit(f"--coco-json {path}: annotation {a.get('id')}: field "
                                 f"'{field}' is missing or holds NaN / infinite values")
        if (k[:, 2] > 0).sum() == 0:
            skipped += 1
            continue
        x, y, w, h = bbox
        kps.append(k)
        boxes.append([x, y, x + w, y + h])
        labels.append(lower.index(act.lower()))
        pid = a.get("person_id", a.get("track_id", a["id"]))
        groups.append(f"{path}:{pid}")
    print(
        f"COCO json {path}: kept {len(labels)} persons with an activity in {classes}, "
        f"skipped {skipped} annotations" + (f" (unknown activities {dict(unknown)})"
                                            if unknown else "")
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
        k, b, y, g = load_coco_activity_json(path, args.classes, args.skip_unknown_activities)
        kps.append(k), boxes.append(b), labels.append(y), groups.append(g)
    if not kps:
        sys.exit("give --mpii-csv and/or --coco-json")
    kps, boxes = np.concatenate(kps), np.concatenate(boxes)
    labels, groups = np.concatenate(labels), np.concatenate(groups)
    if len(labels) == 0:
        sys.exit("no persons with one of the classes " + str(args.classes))
    return kps, boxes, labels, groups


def check_trainable(labels, groups, classes, folds):
    """Refuse data that cannot be cross-validated: fewer than two classes with people, or a
    class with fewer persons than folds (a class with none is only warned about)."""
    persons = [len(set(groups[labels == c])) for c in range(len(classes))]
    present = [c for c, n in zip(classes, persons) if n > 0]
    if len(present) < 2:
        raise SystemExit(f"the data has people of {len(present)} of the classes {list(classes)} "
                         f"({present}); a classifier needs at least two")
    absent = [c for c, n in zip(classes, persons) if n == 0]
    if absent:
        print(f"WARNING: no persons of the classes {absent}: the classifier will never predict "
              f"them")
    few = {c: n for c, n in zip(classes, persons) if 0 < n < folds}
    if few:
        raise SystemExit(f"--folds {folds}: classes with fewer persons than folds: {few}; "
                         f"lower --folds, add data or drop the class from --classes")


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


def train_model(x, y, num_classes, args, seed, val=None, epochs=None, kps=None):
    """Train an ActivityMLP with the command line's settings; returns (model, epochs kept)
    (see ``train_activity_mlp``: ``val`` is an inner split of the training data; ``kps`` the
    training poses, for ``--balance visibility``)."""
    weights = samples = None
    if args.balance == "class":
        weights = balanced_class_weights(y.numpy(), num_classes)
    elif args.balance == "visibility":
        samples = balanced_group_weights(y.numpy(), visibility_groups(kps, args.score_thresh),
                                         num_classes)
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
        class_weights=weights,
        sample_weights=samples,
    )


def augmented(kps, boxes, labels, args, seed):
    """Mirrored copies (unless --no-flip-aug), then --aug-copies rotated / scaled / occluded
    copies of every pose (multitask.data.pose_augment)."""
    if not args.no_flip_aug:
        kps, boxes, labels = with_mirrored_poses(kps, boxes, labels)
    if args.aug_copies > 0:
        kps, boxes, labels = augment_poses(kps, boxes, labels, np.random.RandomState(seed),
                                           copies=args.aug_copies,
                                           transplant_prob=args.transplant_prob,
                                           occlusion_prob=args.occlusion_prob)
    return kps, boxes, labels


def logits_of(model, x, device):
    with torch.no_grad():
        return model(x.to(device)).cpu()


def write_json(path, obj):
    atomic_write(path, lambda f: json.dump(obj, f, indent=1), mode="w")


def evaluate_weights(args):
    """--weights: score a saved classifier on the data, nothing trained."""
    obj = load_activity_weights(args.weights, "--weights")
    layout = obj.get("input_layout") or {}
    classes = list(obj.get("classes") or args.classes)
    args.classes = classes
    classifier = ActivityClassifier(
        classes=classes,
        hidden_dims=obj.get("hidden_dims", args.hidden_dims),
        dropout=obj.get("dropout", args.dropout),
        use_visibility=bool(layout.get("use_visibility", True)),
        geometry=bool(layout.get("geometry", False)),
        score_thresh=float(layout.get("score_thresh", args.score_thresh)),
        weights="",
        min_confidence=args.min_confidence,
        min_visible_keypoints=args.min_visible_keypoints,
    )
    classifier.load_weights(args.weights, "--weights")
    kps, boxes, labels, _ = load_data(args)
    pred, probs = classifier.classify(torch.from_numpy(kps), torch.from_numpy(boxes))
    pred = pred.numpy()
    rep = report(labels, pred, kps, classes)
    rep["ece"] = expected_calibration_error(probs, torch.from_numpy(labels))
    rep["temperature"] = float(classifier.temperature)
    print(f"{args.weights} ({classes}, temperature {rep['temperature']:.3f}) on "
          f"{len(labels)} persons; min confidence {args.min_confidence}, min visible keypoints "
          f"{args.min_visible_keypoints}; expected calibration error {rep['ece']:.4f}")
    print(format_report(rep, classes))
    png = os.path.join(args.output_dir, "confusion_matrix.png")
    save_confusion_png(rep["confusion_matrix_with_unknown"], classes, png,
                       f"{os.path.basename(args.weights)}: accuracy {rep['accuracy_all']:.3f}")
    write_json(os.path.join(args.output_dir, "metrics.json"),
               OrderedDict(args=vars(args), classes=classes, **rep))
    print(f"confusion matrix PNG: {os.path.abspath(png)}")
    return rep


class Poses(NamedTuple):
    """Labelled poses: keypoints (N, 17, 3), boxes (N, 4) XYXY, labels (N,), person ids (N,)."""

    kps: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    groups: np.ndarray


class CrossValidation:
    """What the K-fold loop collects, fold by fold: the metrics rows, the validation persons'
    true and predicted classes and indices, the best epoch counts, the fitted temperatures and
    the expected calibration errors before and after calibration."""

    def __init__(self):
        self.rows, self.true, self.pred, self.idx = [], [], [], []
        self.best_epochs, self.temps, self.ece_before, self.ece_after = [], [], [], []


def load_training_data(args):
    """(the labelled :class:`Poses`, the persons per class), refused (SystemExit) when they
    cannot be cross-validated."""
    if len(args.classes) < 2:
        raise SystemExit(f"--classes: need at least two classes, got {list(args.classes)}")
    kps, boxes, labels, groups = load_data(args)
    counts = np.bincount(labels, minlength=len(args.classes))
    print("persons per class: " + ", ".join(f"{c}={n}" for c, n in zip(args.classes, counts)))
    check_trainable(labels, groups, args.classes, args.folds)
    return Poses(kps, boxes, labels, groups), counts


def inner_split(tr, f, data, args, keypoint_mask):
    """(indices of ``tr`` the model of fold ``f`` is fitted on, inner validation split
    (features, labels) or None): with ``--inner-val``, model selection, the LR plateau and the
    temperature are judged on a person-grouped split of the training folds."""
    kps, boxes, labels, groups = data
    if args.inner_val > 0:
        n_inner = max(2, int(round(1.0 / args.inner_val)))
        itr, iva = stratified_group_kfold(labels[tr], groups[tr], n_inner, args.seed + 100 + f)[0]
        inner_val = (
            make_features(kps[tr[iva]], boxes[tr[iva]], args, keypoint_mask),
            torch.from_numpy(labels[tr[iva]]),
        )
        return tr[itr], inner_val
    return tr, None


def train_fold(f, tr, va, data, args, keypoint_mask):
    """Train fold ``f``'s model on ``tr`` (augmented); returns (its logits on the validation
    persons ``va``, its best epoch count, the temperature fitted on the inner split or 1)."""
    kps, boxes, labels, _ = data
    fit, inner_val = inner_split(tr, f, data, args, keypoint_mask)
    k_tr, b_tr, y_tr = augmented(kps[fit], boxes[fit], labels[fit], args, args.seed + f)
    x_tr = make_features(k_tr, b_tr, args, keypoint_mask)
    x_va = make_features(kps[va], boxes[va], args, keypoint_mask)
    model, best_epoch = train_model(
        x_tr, torch.from_numpy(y_tr), len(args.classes), args, args.seed + f, val=inner_val,
        kps=k_tr
    )
    logits = logits_of(model, x_va, args.device)
    t = fit_temperature(logits_of(model, inner_val[0], args.device), inner_val[1]) \
        if inner_val is not None else 1.0
    return logits, best_epoch, t


def cross_validate(data, args, keypoint_mask, t0):
    """K-fold cross-validation with folds split by person; prints a line per fold."""
    labels, groups = data.labels, data.groups
    cv = CrossValidation()
    folds = stratified_group_kfold(labels, groups, args.folds, args.seed)
    for f, (tr, va) in enumerate(folds):
        assert not set(groups[tr]) & set(groups[va]), "a person is in train and validation"
        logits, best_epoch, t = train_fold(f, tr, va, data, args, keypoint_mask)
        cv.best_epochs.append(best_epoch)
        pred = logits.argmax(1).numpy()
        y_va = torch.from_numpy(labels[va])
        cv.temps.append(t)
        cv.ece_before.append(expected_calibration_error(logits.softmax(1), y_va))
        cv.ece_after.append(expected_calibration_error((logits / t).softmax(1), y_va))
        m = classification_metrics(labels[va], pred, len(args.classes))
        m.update(fold=f, n_train=int(len(tr)), n_val=int(len(va)), best_epoch=int(best_epoch),
                 temperature=t, ece=cv.ece_before[-1], ece_calibrated=cv.ece_after[-1])
        cv.rows.append(m)
        cv.true.append(labels[va])
        cv.pred.append(pred)
        cv.idx.append(va)
        print(
            f"fold {f}: n_train={len(tr)} n_val={len(va)} acc={m['accuracy']:.4f} "
            f"f1={m['f1']:.4f} best_epoch={best_epoch} T={t:.3f} ECE {cv.ece_before[-1]:.4f} -> "
            f"{cv.ece_after[-1]:.4f} ({time.time() - t0:.0f}s)",
            flush=True,
        )
    return cv


def summarize_folds(cv):
    """Print the per-fold, mean and std metrics and the calibration; returns (mean, std)."""
    from tabulate import tabulate

    rows = cv.rows
    keys = ["precision", "recall", "f1", "accuracy"]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    std = {k: float(np.std([r[k] for r in rows])) for k in keys}
    table = [[f"fold {r['fold']}", r["n_val"]] + [r[k] for k in keys] for r in rows]
    table.append(["mean", int(sum(r["n_val"] for r in rows))] + [mean[k] for k in keys])
    table.append(["std", ""] + [std[k] for k in keys])
    print(tabulate(table, headers=["", "n_val", "precision (macro)", "recall (macro)",
                                   "F1 (macro)", "accuracy"], floatfmt=".4f"))
    print(f"expected calibration error on the folds' validation persons: "
          f"{np.mean(cv.ece_before):.4f} -> {np.mean(cv.ece_after):.4f} with the fitted "
          f"temperatures {', '.join(f'{t:.3f}' for t in cv.temps)}")
    return mean, std


def report_pooled(cv, kps, mean, args):
    """Report on the validation predictions of all folds together, print it and save its
    confusion matrix as a PNG; returns the report."""
    all_true, all_pred = np.concatenate(cv.true), np.concatenate(cv.pred)
    order = np.concatenate(cv.idx)
    pooled_rep = report(all_true, all_pred, kps[order], args.classes)
    print("pooled validation predictions of all folds:")
    print(format_report(pooled_rep, args.classes))
    png = os.path.join(args.output_dir, "confusion_matrix.png")
    save_confusion_png(
        pooled_rep["metrics"]["confusion_matrix"],
        args.classes,
        png,
        f"{args.folds}-fold CV, row-normalised (mean acc {mean['accuracy']:.3f})",
    )
    print(f"confusion matrix PNG: {os.path.abspath(png)}")
    return pooled_rep


def train_final_model(data, epochs, args, keypoint_mask):
    """The model trained on all data (augmented) for ``epochs`` epochs."""
    k_all, b_all, y_all = augmented(data.kps, data.boxes, data.labels, args, args.seed + 1000)
    final, _ = train_model(
        make_features(k_all, b_all, args, keypoint_mask),
        torch.from_numpy(y_all),
        len(args.classes),
        args,
        args.seed + 1000,
        epochs=epochs,
        kps=k_all,
    )
    return final


def save_final_model(final, keypoint_mask, mean, temperature, args):
    """Write ``activity_classifier.pth`` with the input layout the post-processor reads back;
    returns (that layout, the file's path)."""
    # ask a classifier built with these settings for the layout rather than write the dict twice
    classifier = ActivityClassifier(
        classes=args.classes,
        hidden_dims=args.hidden_dims,
        dropout=args.dropout,
        use_visibility=not args.no_visibility,
        geometry=args.geometry,
        score_thresh=args.score_thresh,
        keep_aspect=not args.no_keep_aspect,
        weights="",
    )
    classifier.keypoint_mask.copy_(torch.as_tensor(keypoint_mask, dtype=torch.float32))
    layout = classifier.input_layout()
    if layout["in_dim"] != final.in_dim:
        raise RuntimeError(f"features have {final.in_dim} values, the layout {layout['in_dim']}")
    wpath = os.path.join(args.output_dir, "activity_classifier.pth")
    save_activity_weights(
        wpath, final.cpu(), args.classes, layout, args.hidden_dims, args.dropout, cv_mean=mean,
        temperature=temperature,
    )
    return layout, wpath


def main(argv=None):
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.weights:
        return evaluate_weights(args)
    t0 = time.time()
    data, counts = load_training_data(args)
    # keypoint types present in at least 1% of the data are used; the others (MPII: eyes, ears)
    # are masked out here and at inference
    keypoint_mask = present_keypoint_mask(data.kps, args.score_thresh)
    print(f"keypoints used: {[i for i in range(17) if keypoint_mask[i] > 0]}")

    cv = cross_validate(data, args, keypoint_mask, t0)
    mean, std = summarize_folds(cv)
    pooled_rep = report_pooled(cv, data.kps, mean, args)

    # final model on all data, for the median of the folds' best epoch counts, with the median
    # of the folds' temperatures
    final_epochs = int(np.median(cv.best_epochs))
    temperature = float(np.median(cv.temps))
    final = train_final_model(data, final_epochs, args, keypoint_mask)
    layout, wpath = save_final_model(final, keypoint_mask, mean, temperature, args)
    print(
        f"final model (all {len(data.labels)} persons, {final_epochs} epochs, temperature "
        f"{temperature:.3f}): {os.path.abspath(wpath)}"
    )

    out = OrderedDict(
        args=vars(args),
        classes=args.classes,
        class_counts=counts.tolist(),
        folds=cv.rows,
        mean=mean,
        std=std,
        pooled=pooled_rep["metrics"],
        slices=pooled_rep["slices"],
        ece=float(np.mean(cv.ece_before)),
        ece_calibrated=float(np.mean(cv.ece_after)),
        temperature=temperature,
        input_layout=layout,
        keep_aspect_default=KEEP_ASPECT,
        seconds=time.time() - t0,
    )
    write_json(os.path.join(args.output_dir, "metrics.json"), out)
    print(f"done in {time.time() - t0:.0f}s")
    return out


if __name__ == "__main__":
    main()

"""Cross-validation and classification metrics of the activity classifier, without sklearn:
:func:`stratified_group_kfold` (folds split by person), :func:`confusion_matrix` and
:func:`classification_metrics` (accuracy, macro precision / recall / F1). Used by
``tools/train_activity.py`` and :mod:`.activity_report`."""

from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["stratified_group_kfold", "confusion_matrix", "classification_metrics"]


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

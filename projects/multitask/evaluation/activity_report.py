"""Reports of the activity classifier on labelled poses: per-class precision / recall / F1, the
confusion matrix (text and PNG), accuracy per body slice, and coverage when the classifier may
answer "unknown" (``pred < 0``). Used by ``tools/train_activity.py`` for cross-validation and for
scoring saved weights on any labelled data."""

from typing import Dict, List, Sequence

import numpy as np
from tabulate import tabulate

from ..data.pose_augment import pose_slices
from .activity_metrics import classification_metrics


def slice_metrics(keypoints: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                  num_classes: int) -> Dict[str, Dict]:
    """Per slice of :func:`pose_slices` (all, full_body, upper_body_only): ``n``, ``coverage``
    (share not "unknown"), ``accuracy`` ("unknown" counts as wrong), ``accuracy_labelled`` and
    ``per_class_recall`` (NaN for a class absent from the slice)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    out: Dict[str, Dict] = {}
    for name, mask in pose_slices(keypoints).items():
        t, p = y_true[mask], y_pred[mask]
        labelled = p >= 0
        recall = [float(np.mean(p[t == c] == c)) if (t == c).any() else float("nan")
                  for c in range(num_classes)]
        out[name] = {
            "n": int(mask.sum()),
            "coverage": float(labelled.mean()) if len(p) else float("nan"),
            "accuracy": float(np.mean(p == t)) if len(p) else float("nan"),
            "accuracy_labelled": (float(np.mean(p[labelled] == t[labelled]))
                                  if labelled.any() else float("nan")),
            "per_class_recall": recall,
        }
    return out


def report(y_true: np.ndarray, y_pred: np.ndarray, keypoints: np.ndarray,
           classes: Sequence[str]) -> Dict:
    """Everything :func:`format_report` prints: ``metrics`` (on the people given a label, with
    "unknown" answers as a separate column of ``confusion_matrix_with_unknown``), ``slices``,
    ``coverage``."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    c = len(classes)
    labelled = y_pred >= 0
    metrics = classification_metrics(y_true[labelled], y_pred[labelled], c)
    cm = np.zeros((c, c + 1), dtype=np.int64)  # last column: unknown
    np.add.at(cm, (y_true, np.where(labelled, y_pred, c)), 1)
    return {
        "n": int(len(y_true)),
        "coverage": float(labelled.mean()) if len(y_true) else float("nan"),
        "accuracy_all": float(np.mean(y_pred == y_true)) if len(y_true) else float("nan"),
        "metrics": metrics,
        "confusion_matrix_with_unknown": cm.tolist(),
        "slices": slice_metrics(keypoints, y_true, y_pred, c),
    }


def format_report(rep: Dict, classes: Sequence[str]) -> str:
    """The per-class table, the confusion matrix and the slice table as text."""
    m = rep["metrics"]
    lines: List[str] = []
    rows = [[name, m["per_class_precision"][i], m["per_class_recall"][i], m["per_class_f1"][i],
             int(np.sum(rep["confusion_matrix_with_unknown"][i]))]
            for i, name in enumerate(classes)]
    rows.append(["macro", m["precision"], m["recall"], m["f1"], rep["n"]])
    lines.append(tabulate(rows, headers=["class", "precision", "recall", "F1", "n"],
                          floatfmt=".3f", tablefmt="pipe"))
    lines.append(f"accuracy {m['accuracy']:.4f} on the {100 * rep['coverage']:.1f} % given a "
                 f"label; {rep['accuracy_all']:.4f} on all {rep['n']} ('unknown' = wrong)")
    cm = rep["confusion_matrix_with_unknown"]
    lines.append(tabulate([[name] + row for name, row in zip(classes, cm)],
                          headers=["true \\ predicted"] + list(classes) + ["unknown"],
                          tablefmt="pipe"))
    srows = []
    for name, s in rep["slices"].items():
        srows.append([name, s["n"], s["coverage"], s["accuracy"], s["accuracy_labelled"]]
                     + s["per_class_recall"])
    lines.append(tabulate(srows, headers=["slice", "n", "coverage", "accuracy",
                                          "accuracy (labelled)"]
                          + [f"recall {c}" for c in classes], floatfmt=".3f", tablefmt="pipe"))
    return "\n\n".join(lines)


def save_confusion_png(cm, classes: Sequence[str], path: str, title: str) -> None:
    """Row-normalised confusion matrix ``cm (C, C)`` or ``(C, C + 1)`` (last column "unknown")
    as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    cols = list(classes) + (["unknown"] if cm.shape[1] == len(classes) + 1 else [])
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 1.0 * len(cols), 1.0 + 0.9 * len(classes)), dpi=120)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(norm.shape[0]):
        for j in range(norm.shape[1]):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=9,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["slice_metrics", "report", "format_report", "save_confusion_png"]

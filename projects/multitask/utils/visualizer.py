"""Draw people (masks, boxes, skeletons, scores, activities) onto BGR images with OpenCV.

::

    from multitask.utils.visualizer import draw_instance_predictions, draw_ground_truth

    out = draw_instance_predictions(img_bgr, outputs["instances"], score_thresh=0.5,
                                    activity_classes=cfg.MODEL.ACTIVITY.CLASSES)
    cv2.imwrite("vis.png", out)
    gt = draw_ground_truth(read_image(d["file_name"]), d)   # a dataset dict (docs/internals.md)

Images are ``uint8 (H, W, 3)`` **BGR** in and out (OpenCV's order; note detectron2's
``Visualizer`` takes RGB); the input is never modified. What is drawn, per person:

* the mask, alpha-blended in the person's colour, with its outline; colours are distinct per
  instance and deterministic (golden-ratio hues, in the order of the instances);
* the box in the person's colour;
* the skeleton (the COCO skeleton, 19 limbs): limbs whose two keypoints are both ``left_*`` in
  :data:`LEFT_COLOR`, both ``right_*`` in :data:`RIGHT_COLOR`, the others (shoulder-shoulder,
  hip-hip, eye-eye, nose-eye) in :data:`CENTER_COLOR`, each with a dark outline so it stands out
  on any mask colour; keypoint dots in the same three colours. A predicted keypoint whose score is
  below ``keypoint_thresh`` is hidden with its limbs. Ground-truth keypoints with ``v = 0`` are
  hidden, ``v = 1`` (labelled, not visible) are drawn as rings;
* a label block at the box's top-left corner: ``"person 0.93"`` and, when the instances carry
  ``pred_activity`` (and ``activity_scores``), ``"walking 0.87"``; white text on a dark box.

Line widths, dot radii and font size scale with ``sqrt(H * W)``, so the result reads the same on a
100 px thumbnail and a 4000 px photo; ``line_width`` / ``font_scale`` override them. Keypoint
coordinates are continuous (pixel ``i`` spans ``[i, i + 1)``, see ``docs/internals.md``) and are
drawn with sub-pixel precision.
"""
import colorsys
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..structures.activity import activity_name
from ..structures.keypoints import COCO_PERSON_KEYPOINTS, COCO_PERSON_SKELETON, KeypointSet
from ..structures.masks import segmentation_to_mask

__all__ = [
    "draw_instance_predictions",
    "draw_ground_truth",
    "draw_people",
    "instance_color",
    "skeleton_side",
    "default_sizes",
    "COCO_SKELETON",
    "KEYPOINT_THRESHOLD",
    "LEFT_COLOR",
    "RIGHT_COLOR",
    "CENTER_COLOR",
]

#: Default keypoint score threshold (detectron2's ``_KEYPOINT_THRESHOLD``). With the softmax-CE
#: keypoint head the score is the heatmap logit at the peak, as in torchvision
#: (``MODEL.ROI_KEYPOINT_HEAD.SCORE "logit"``), or detectron2's probability (``"prob"``).
KEYPOINT_THRESHOLD = 0.05

#: BGR colours of the skeleton: left limbs (azure), right limbs (orange), centre/face (green)
LEFT_COLOR = (255, 150, 30)
RIGHT_COLOR = (20, 120, 255)
CENTER_COLOR = (70, 215, 70)
_OUTLINE_COLOR = (20, 20, 20)
_TEXT_COLOR = (255, 255, 255)

#: The COCO person skeleton (the ``skeleton`` of COCO's person category), as name pairs
COCO_SKELETON = COCO_PERSON_SKELETON

_SHIFT = 4  # sub-pixel bits of OpenCV's drawing functions
_ONE = 1 << _SHIFT
_FONT = cv2.FONT_HERSHEY_SIMPLEX

# keypoint drawing styles
_HIDDEN, _RING, _DOT = 0, 1, 2


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "tensor"):  # a detectron2-style Boxes
        x = x.tensor
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def instance_color(i: int) -> Tuple[int, int, int]:
    """Deterministic, well separated BGR colour of the ``i``-th instance (golden-ratio hues)."""
    hue = (0.07 + i * 0.618033988749895) % 1.0
    sat = 0.75 if i % 2 == 0 else 0.6
    r, g, b = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def _side(name: str) -> str:
    n = name.lower()
    if n.startswith(("left", "l_")):
        return "left"
    if n.startswith(("right", "r_")):
        return "right"
    return "center"


def skeleton_side(a: str, b: str) -> str:
    """"left" / "right" when both keypoint names are of that side, else "center"."""
    sa, sb = _side(a), _side(b)
    return sa if sa == sb and sa != "center" else "center"


_SIDE_COLOR = {"left": LEFT_COLOR, "right": RIGHT_COLOR, "center": CENTER_COLOR}


def default_sizes(height: int, width: int) -> Dict[str, float]:
    """Line width, keypoint radius, font scale and font thickness for an image size."""
    d = math.sqrt(max(1, height) * max(1, width))
    lw = max(1, int(round(d / 320.0)))
    font_scale = max(0.3, d / 1100.0)
    return {
        "line_width": lw,
        "radius": max(2, int(round(lw * 1.3))),
        "font_scale": font_scale,
        "font_thickness": max(1, int(round(font_scale * 1.6))),
    }


def _pt(x: float, y: float) -> Tuple[int, int]:
    """Continuous coordinates -> OpenCV fixed-point pixel-centre coordinates."""
    return int(round((x - 0.5) * _ONE)), int(round((y - 0.5) * _ONE))


def _resolve_names(metadata, keypoint_names, skeleton, class_names, activity_classes):
    def md(key):
        if metadata is None:
            return None
        if isinstance(metadata, dict):
            return metadata.get(key)
        return getattr(metadata, "get", lambda k, d=None: getattr(metadata, k, d))(key)

    keypoint_set = KeypointSet.from_metadata(
        {"keypoint_names": md("keypoint_names"),
         "keypoint_connection_rules": md("keypoint_connection_rules"),
         "keypoint_skeleton": md("keypoint_skeleton")}
    )
    if keypoint_set is None or keypoint_set.is_coco_person:
        keypoint_set = COCO_PERSON_KEYPOINTS
    keypoint_names = list(keypoint_names or keypoint_set.names)
    if skeleton is None:
        skeleton = keypoint_set.edges
    class_names = list(class_names or md("thing_classes") or ["person"])
    if activity_classes is None:
        activity_classes = md("activity_classes")
    index = {n: i for i, n in enumerate(keypoint_names)}
    limbs = [
        (index[a], index[b], _SIDE_COLOR[skeleton_side(a, b)])
        for a, b in skeleton
        if a in index and b in index
    ]
    kp_colors = [_SIDE_COLOR[_side(n)] for n in keypoint_names]
    return limbs, kp_colors, class_names, activity_classes


class _Painter:
    def __init__(self, image: np.ndarray, line_width=None, font_scale=None, alpha=0.45):
        if not isinstance(image, np.ndarray):
            raise TypeError(f"expected a numpy BGR image, got {type(image).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"expected a uint8 image, got dtype {image.dtype}")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
            image = cv2.cvtColor(np.ascontiguousarray(image.reshape(image.shape[:2])),
                                 cv2.COLOR_GRAY2BGR)
        elif image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) BGR image, got shape {image.shape}")
        self.img = np.array(image, dtype=np.uint8, copy=True, order="C")
        self.h, self.w = self.img.shape[:2]
        s = default_sizes(self.h, self.w)
        if line_width is not None:
            s["line_width"] = max(1, int(line_width))
            s["radius"] = max(2, int(round(s["line_width"] * 1.3)))
        if font_scale is not None:
            s["font_scale"] = float(font_scale)
            s["font_thickness"] = max(1, int(round(float(font_scale) * 1.6)))
        self.lw = s["line_width"]
        self.radius = s["radius"]
        self.font_scale = s["font_scale"]
        self.font_thickness = s["font_thickness"]
        self.alpha = float(alpha)
        self._lim = 8 * max(self.h, self.w)  # keeps fixed-point coordinates far from overflow

    def _ok(self, *vals) -> bool:
        return all(math.isfinite(v) and abs(v) < self._lim for v in vals)

    # --- masks ----------------------------------------------------------------------------
    def mask(self, m: np.ndarray, color) -> None:
        m = np.asarray(m)
        if m.shape != (self.h, self.w):
            raise ValueError(
                f"mask of shape {m.shape} does not match the image ({self.h}, {self.w}); draw "
                "predictions on the image they were made for (the predictor returns them in the "
                "frame of its input)"
            )
        m = m.astype(bool)
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if len(rows) == 0:
            return
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sub, msub = self.img[y0:y1, x0:x1], m[y0:y1, x0:x1]
        col = np.asarray(color, dtype=np.float32)
        sub[msub] = (sub[msub].astype(np.float32) * (1 - self.alpha) + col * self.alpha).astype(
            np.uint8
        )
        contours, _ = cv2.findContours(
            msub.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(sub, contours, -1, color, max(1, self.lw // 2), cv2.LINE_AA)

    # --- boxes ----------------------------------------------------------------------------
    def box(self, b: Sequence[float], color) -> None:
        x0, y0, x1, y1 = (float(v) for v in b)
        if not self._ok(x0, y0, x1, y1):
            return
        cv2.rectangle(self.img, _pt(x0, y0), _pt(x1, y1), color, self.lw, cv2.LINE_AA, _SHIFT)

    # --- keypoints ------------------------------------------------------------------------
    def skeleton(self, kps: np.ndarray, style: np.ndarray, limbs, kp_colors) -> None:
        """``kps (K, 2)`` continuous x, y; ``style (K,)`` of _HIDDEN / _RING / _DOT."""
        k = len(kps)
        ok = np.array([self._ok(float(x), float(y)) for x, y in kps], dtype=bool)
        shown = ok & (style != _HIDDEN)
        segs = [
            (_pt(*kps[a]), _pt(*kps[b]), col)
            for a, b, col in limbs
            if a < k and b < k and shown[a] and shown[b]
        ]
        lw = self.lw
        for p, q, _ in segs:  # dark outline first, so limbs read on any background
            cv2.line(self.img, p, q, _OUTLINE_COLOR, lw + 2, cv2.LINE_AA, _SHIFT)
        for p, q, col in segs:
            cv2.line(self.img, p, q, col, lw, cv2.LINE_AA, _SHIFT)
        r = self.radius
        for j in np.nonzero(shown)[0]:
            c = _pt(*kps[j])
            col = kp_colors[j] if j < len(kp_colors) else CENTER_COLOR
            if style[j] == _DOT:
                cv2.circle(self.img, c, r * _ONE, col, -1, cv2.LINE_AA, _SHIFT)
                cv2.circle(self.img, c, r * _ONE, _OUTLINE_COLOR, 1, cv2.LINE_AA, _SHIFT)
            else:  # ring: labelled but not visible
                cv2.circle(self.img, c, r * _ONE, col, max(1, lw // 2 + 1), cv2.LINE_AA, _SHIFT)

    # --- labels ---------------------------------------------------------------------------
    def label(self, lines: List[str], box: Sequence[float], color) -> None:
        lines = [t for t in lines if t]
        if not lines:
            return
        x0, y0 = float(box[0]), float(box[1])
        if not self._ok(x0, y0):
            return
        fs, ft = self.font_scale, self.font_thickness
        pad = max(1, int(round(3 * fs)))
        sizes = [cv2.getTextSize(t, _FONT, fs, ft) for t in lines]
        line_h = max(h + base for (_, h), base in sizes) + pad
        block_w = max(w for (w, _), _ in sizes) + 2 * pad
        block_h = line_h * len(lines) + pad
        bx = int(round(x0))
        by = int(round(y0)) - block_h  # above the box when there is room ...
        if by < 0:
            by = max(0, int(round(y0)))  # ... else inside it, at its top
        bx = int(min(max(0, bx), max(0, self.w - block_w)))
        by = int(min(max(0, by), max(0, self.h - block_h)))
        bg = tuple(int(c * 0.4) for c in color)  # darkened instance colour: white text reads
        cv2.rectangle(self.img, (bx, by), (bx + block_w - 1, by + block_h - 1), bg, -1)
        for i, (t, ((_, th), base)) in enumerate(zip(lines, sizes)):
            org = (bx + pad, by + pad + i * line_h + th)
            cv2.putText(self.img, t, org, _FONT, fs, _TEXT_COLOR, ft, cv2.LINE_AA)


def _check_size(instances, image: np.ndarray, what: str) -> None:
    size = getattr(instances, "image_size", None)
    if size is not None and tuple(int(s) for s in size) != tuple(image.shape[:2]):
        raise ValueError(
            f"{what} are for an image of size {tuple(size)} but the image is "
            f"{tuple(image.shape[:2])}; draw them on the image they were predicted for"
        )


def _draw_people(
    painter: _Painter,
    boxes: np.ndarray,
    masks: Optional[np.ndarray],
    keypoints: Optional[np.ndarray],
    kp_style: Optional[np.ndarray],
    labels: List[List[str]],
    limbs,
    kp_colors,
    label_anchors: Optional[np.ndarray] = None,
) -> np.ndarray:
    n = len(boxes)
    label_anchors = boxes if label_anchors is None else label_anchors
    colors = [instance_color(i) for i in range(n)]
    if masks is not None:
        for i in range(n):
            painter.mask(masks[i], colors[i])
    for i in range(n):
        painter.box(boxes[i], colors[i])
    if keypoints is not None:
        for i in range(n):
            painter.skeleton(keypoints[i, :, :2], kp_style[i], limbs, kp_colors)
    for i in range(n):  # labels last: on top of everything
        painter.label(labels[i], label_anchors[i], colors[i])
    return painter.img


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------
def draw_instance_predictions(
    image_bgr: np.ndarray,
    instances,
    score_thresh: float = 0.5,
    keypoint_thresh: float = KEYPOINT_THRESHOLD,
    activity_classes: Optional[Sequence[str]] = None,
    *,
    metadata: Union[None, Dict, Any] = None,
    class_names: Optional[Sequence[str]] = None,
    keypoint_names: Optional[Sequence[str]] = None,
    skeleton: Optional[Sequence[Tuple[str, str]]] = None,
    alpha: float = 0.45,
    line_width: Optional[int] = None,
    font_scale: Optional[float] = None,
) -> np.ndarray:
    """Draw predicted people on a copy of ``image_bgr`` and return it (``uint8 (H, W, 3)`` BGR).

    Args:
        image_bgr: the image the predictions are for (same ``H, W`` as ``instances.image_size``).
        instances: ``Instances`` from the model / :class:`DefaultPredictor` (any device) with
            ``pred_boxes``, ``scores`` and optionally ``pred_classes``, ``pred_masks``,
            ``pred_keypoints (R, K, 3)``, ``pred_activity``, ``activity_scores``.
        score_thresh: instances with a lower box score are not drawn.
        keypoint_thresh: keypoints with a lower score (``pred_keypoints[..., 2]``; the heatmap
            logit with the softmax-CE head) are hidden, with their limbs.
        activity_classes: names for ``pred_activity`` (default: ``metadata.activity_classes``,
            else ``"activity <i>"``).
        metadata: optional dataset ``Metadata`` (or dict) giving ``keypoint_names``,
            ``keypoint_connection_rules``, ``thing_classes``, ``activity_classes``.
        class_names, keypoint_names, skeleton: override the metadata / COCO defaults;
            ``skeleton`` is a list of keypoint-name pairs.
        alpha: mask opacity.
        line_width, font_scale: override the size-derived defaults (:func:`default_sizes`).
    """
    painter = _Painter(image_bgr, line_width, font_scale, alpha)
    _check_size(instances, painter.img, "instances")
    limbs, kp_colors, class_names, activity_classes = _resolve_names(
        metadata, keypoint_names, skeleton, class_names, activity_classes
    )
    n = len(instances)
    has = instances.has
    scores = _to_numpy(instances.scores).astype(np.float64).reshape(-1) if has("scores") else None
    keep = np.ones(n, dtype=bool) if scores is None else scores >= score_thresh
    idx = np.nonzero(keep)[0]
    boxes = _to_numpy(instances.pred_boxes).astype(np.float64).reshape(-1, 4)[idx]
    masks = _to_numpy(instances.pred_masks)[idx] if has("pred_masks") else None
    keypoints = kp_style = None
    if has("pred_keypoints"):
        keypoints = _to_numpy(instances.pred_keypoints).astype(np.float64)[idx]
        kp_style = np.where(keypoints[..., 2] >= keypoint_thresh, _DOT, _HIDDEN)
    classes = (
        _to_numpy(instances.pred_classes).astype(np.int64).reshape(-1)[idx]
        if has("pred_classes") else np.zeros(len(idx), dtype=np.int64)
    )
    act = act_scores = None
    if has("pred_activity"):
        act = _to_numpy(instances.pred_activity).astype(np.int64).reshape(-1)[idx]
        if has("activity_scores"):
            act_scores = _to_numpy(instances.activity_scores).astype(np.float64)
            act_scores = act_scores.reshape(n, -1)[idx]
    labels = []
    for j, i in enumerate(idx):
        c = int(classes[j])
        name = class_names[c] if 0 <= c < len(class_names) else f"class {c}"
        lines = [f"{name} {scores[i]:.2f}" if scores is not None else name]
        if act is not None:
            a = int(act[j])
            text = activity_name(a, activity_classes) or f"activity {a}"
            if 0 <= a and act_scores is not None and a < act_scores.shape[1]:
                text += f" {act_scores[j, a]:.2f}"
            lines.append(text)
        labels.append(lines)
    return _draw_people(painter, boxes, masks, keypoints, kp_style, labels, limbs, kp_colors)


def draw_ground_truth(
    image_bgr: np.ndarray,
    dataset_dict: Union[Dict, List[Dict], Any],
    activity_classes: Optional[Sequence[str]] = None,
    *,
    metadata: Union[None, Dict, Any] = None,
    class_names: Optional[Sequence[str]] = None,
    keypoint_names: Optional[Sequence[str]] = None,
    skeleton: Optional[Sequence[Tuple[str, str]]] = None,
    alpha: float = 0.45,
    line_width: Optional[int] = None,
    font_scale: Optional[float] = None,
) -> np.ndarray:
    """Draw ground-truth people with the same style as :func:`draw_instance_predictions`.

    ``dataset_dict`` is a dataset dict (``{"annotations": [...]}``, docs/internals.md: XYXY_ABS
    boxes, polygon/RLE segmentations, flat COCO keypoints with continuous x, y, ``activity``
    name, ``iscrowd``), a bare list of such annotations, or an ``Instances`` with ``gt_boxes``
    and optionally ``gt_masks``, ``gt_keypoints``, ``gt_activity`` (the mapper's output, on the
    resized image). Keypoints with ``v = 0`` are hidden, ``v = 1`` drawn as rings; a label reads
    the activity name when the person has one, else the class name; crowd regions get their mask
    and a ``"crowd"`` label but no box.
    """
    painter = _Painter(image_bgr, line_width, font_scale, alpha)
    h, w = painter.h, painter.w
    limbs, kp_colors, class_names, activity_classes = _resolve_names(
        metadata, keypoint_names, skeleton, class_names, activity_classes
    )
    k_names = len(kp_colors)
    if hasattr(dataset_dict, "has") and hasattr(dataset_dict, "image_size"):  # Instances
        inst = dataset_dict
        _check_size(inst, painter.img, "ground-truth instances")
        n = len(inst)
        boxes = _to_numpy(inst.gt_boxes).astype(np.float64).reshape(-1, 4)
        masks = _to_numpy(inst.gt_masks) if inst.has("gt_masks") else None
        if masks is not None and inst.has("gt_mask_valid"):
            valid = _to_numpy(inst.gt_mask_valid).astype(bool)
            masks = masks * valid[:, None, None]
        keypoints = _to_numpy(inst.gt_keypoints).astype(np.float64) if inst.has(
            "gt_keypoints") else None
        classes = _to_numpy(inst.gt_classes).astype(np.int64) if inst.has(
            "gt_classes") else np.zeros(n, dtype=np.int64)
        acts = _to_numpy(inst.gt_activity).astype(np.int64) if inst.has("gt_activity") else None
        labels = []
        for i in range(n):
            c = int(classes[i])
            lines = [class_names[c] if 0 <= c < len(class_names) else f"class {c}"]
            if acts is not None and acts[i] >= 0:
                a = int(acts[i])
                known = activity_classes is not None and a < len(activity_classes)
                lines = [activity_classes[a] if known else f"activity {a}"]
            labels.append(lines)
        label_anchors = boxes
    else:
        annos = dataset_dict.get("annotations", []) if isinstance(dataset_dict, dict) else list(
            dataset_dict)
        n = len(annos)
        boxes = np.zeros((n, 4), dtype=np.float64)
        masks = np.zeros((n, h, w), dtype=np.uint8)
        keypoints = np.zeros((n, k_names, 3), dtype=np.float64)
        labels, label_anchors = [], []
        for i, a in enumerate(annos):
            b = np.asarray(a["bbox"], dtype=np.float64).reshape(4)
            mode = a.get("bbox_mode", "XYXY_ABS")
            mode = str(getattr(mode, "name", mode))
            if mode == "XYWH_ABS":
                b = np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])
            elif mode != "XYXY_ABS":
                raise ValueError(f"draw_ground_truth: unsupported bbox_mode {mode!r}")
            boxes[i] = b
            m = segmentation_to_mask(a.get("segmentation"), h, w) if a.get("segmentation") else None
            if m is not None:
                masks[i] = m
            kp = a.get("keypoints")
            if kp is not None and len(kp):
                kp = np.asarray(kp, dtype=np.float64).reshape(-1, 3)
                keypoints[i, : min(len(kp), k_names)] = kp[:k_names]
            crowd = bool(a.get("iscrowd", 0))
            if crowd:  # a crowd region: its mask and label, no box
                boxes[i] = np.nan
            c = int(a.get("category_id", 0))
            name = class_names[c] if 0 <= c < len(class_names) else f"class {c}"
            lines = ["crowd" if crowd else name]
            if a.get("activity") and not crowd:
                lines = [str(a["activity"])]  # the activity says it is a person
            labels.append(lines)
            label_anchors.append(b)
    kp_style = None
    if keypoints is not None:
        v = keypoints[..., 2]
        kp_style = np.where(v >= 2, _DOT, np.where(v >= 1, _RING, _HIDDEN))
    return _draw_people(
        painter, boxes, masks, keypoints, kp_style, labels, limbs, kp_colors, label_anchors
    )


def draw_people(image_bgr, boxes, keypoints, labels, colors, keypoint_thresh=KEYPOINT_THRESHOLD):
    """Boxes ``(N, 4)``, skeletons ``(N, K, 3)`` (x, y, score) and label lines of N people, each in
    its own BGR colour (e.g. its track's), on a copy of ``image_bgr``; styles as above."""
    painter, (limbs, kp_colors, _, _) = _Painter(image_bgr), _resolve_names(*[None] * 5)
    styles = np.where(np.asarray(keypoints)[..., 2] >= keypoint_thresh, _DOT, _HIDDEN)
    for box, kps, style, color in zip(boxes, keypoints, styles, colors):
        painter.box(box, color)
        painter.skeleton(np.asarray(kps)[:, :2], style, limbs, kp_colors)
    for box, lines, color in zip(boxes, labels, colors):  # labels on top of every skeleton
        painter.label(lines, box, color)
    return painter.img

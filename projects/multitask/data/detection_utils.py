"""Image reading, annotation transforms and annotation -> ``Instances`` conversion (detectron2's
``detection_utils``)."""
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from multitask.structures import Instances

from ..structures.keypoints import (
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    flip_permutation,
)
from ..structures.masks import segmentation_to_mask
from .transforms import TransformList

logger = logging.getLogger(__name__)

__all__ = [
    "ImageReadError",
    "read_image",
    "segmentation_to_mask",
    "transform_instance_annotations",
    "annotations_to_instances",
    "filter_empty_instances",
    "create_keypoint_hflip_indices",
    "masks_to_boxes",
]


class ImageReadError(RuntimeError):
    """An image file that is missing, empty, unreadable or cannot be decoded."""

    def __init__(self, file_name: str, reason: str):
        self.file_name = str(file_name)
        self.reason = reason
        super().__init__(f"Cannot read image {self.file_name}: {reason}")

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.file_name, self.reason))


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 0..65535 -> 0..255 (x / 257 maps 65535 to 255 exactly)
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if img.dtype == np.bool_:
        return img.astype(np.uint8) * 255
    if np.issubdtype(img.dtype, np.floating):
        img = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if img.size and img.max() <= 1.0:
            img = img * 255.0
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        if img.size and info.max > 255 and img.max() > 255:
            img = img.astype(np.float64) * (255.0 / info.max)
        return np.clip(img, 0, 255).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {img.dtype}")


def _decode_with_pil(data: bytes) -> Optional[np.ndarray]:
    """Fallback decoder (GIF, odd PNG/TIFF modes) returning BGR uint8, or None."""
    try:
        import io

        from PIL import Image
    except ImportError:  # pragma: no cover
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = _to_uint8(np.asarray(im))
                return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
            rgb = np.asarray(im.convert("RGB"))
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    except Exception:
        return None


def read_image(file_name: str, format: str = "BGR") -> np.ndarray:
    """Read an image as ``np.uint8`` ``(H, W, 3)`` in ``format`` ("BGR" or "RGB"; "L" -> (H,W,1)).

    Grayscale is replicated to 3 channels, an alpha channel is dropped, 16-bit (and other deeper)
    images are scaled to 8 bits, palette images are expanded. EXIF orientation is NOT applied
    (annotations refer to the stored pixel grid). Raises :class:`ImageReadError` with the reason
    for a missing, empty, unreadable or undecodable file.
    """
    if format not in ("BGR", "RGB", "L"):
        raise ValueError(f"Unsupported image format {format!r}; use 'BGR', 'RGB' or 'L'")
    file_name = os.fspath(file_name)
    try:
        with open(file_name, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ImageReadError(file_name, "file does not exist") from None
    except IsADirectoryError:
        raise ImageReadError(file_name, "is a directory") from None
    except OSError as e:
        raise ImageReadError(file_name, f"cannot open file ({e.strerror or e})") from None
    if len(data) == 0:
        raise ImageReadError(file_name, "empty file")

    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        img = None
    if img is None or img.size == 0:
        img = _decode_with_pil(data)
        if img is None:
            raise ImageReadError(file_name, "corrupt or unsupported image data (decoding failed)")

    try:
        img = _to_uint8(img)
    except ValueError as e:
        raise ImageReadError(file_name, str(e)) from None
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ImageReadError(file_name, f"unexpected image array shape {img.shape}")
    c = img.shape[2]
    if c == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif c == 2:  # gray + alpha
        img = cv2.cvtColor(np.ascontiguousarray(img[:, :, 0]), cv2.COLOR_GRAY2BGR)
    elif c == 4:  # BGRA: drop alpha
        img = np.ascontiguousarray(img[:, :, :3])
    elif c != 3:
        raise ImageReadError(file_name, f"unsupported number of channels {c}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageReadError(file_name, f"image has zero size {img.shape}")

    if format == "RGB":
        img = np.ascontiguousarray(img[:, :, ::-1])
    elif format == "L":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None]
    return img


# ------------------------------------------------------------------------------------------------
# segmentations -> masks
# ------------------------------------------------------------------------------------------------
# ------------------------------------------------------------------------------------------------
# annotation transforms
# ------------------------------------------------------------------------------------------------
def _transform_keypoints(
    keypoints: Any, transforms: TransformList, image_size: Tuple[int, int],
    hflip_indices: Optional[np.ndarray],
) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3).copy()
    kp[:, :2] = transforms.apply_coords(kp[:, :2])
    h, w = image_size
    inside = (kp[:, 0] >= 0) & (kp[:, 0] <= w) & (kp[:, 1] >= 0) & (kp[:, 1] <= h)
    kp[~inside, 2] = 0
    if transforms.num_hflips % 2 == 1:
        if hflip_indices is None:
            raise ValueError("Keypoints are flipped but no keypoint hflip indices were given")
        kp = kp[hflip_indices]
    return kp.astype(np.float32)


def transform_instance_annotations(
    annotation: Dict[str, Any],
    transforms: TransformList,
    image_size: Tuple[int, int],
    *,
    keypoint_hflip_indices: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Return a new annotation dict in the coordinates of the transformed image of
    ``image_size = (H, W)``: ``bbox`` transformed (corners' enclosing box) and clipped,
    polygons transformed as coordinates (exact), RLE/bitmask segmentations decoded and warped
    (nearest), keypoints transformed with out-of-image ones set to v=0 and left/right swapped
    after an odd number of horizontal flips. The input dict is not modified."""
    anno = dict(annotation)
    h, w = image_size
    box = transforms.apply_box(np.asarray(anno["bbox"], dtype=np.float32).reshape(1, 4))[0]
    box[0::2] = np.clip(box[0::2], 0, w)
    box[1::2] = np.clip(box[1::2], 0, h)
    anno["bbox"] = box.tolist()
    anno["bbox_mode"] = "XYXY_ABS"

    segm = anno.get("segmentation")
    if segm is not None:
        if isinstance(segm, (list, tuple)):
            anno["segmentation"] = [p.reshape(-1) for p in transforms.apply_polygons(segm)]
        else:
            if isinstance(segm, dict):
                hh, ww = (int(s) for s in segm["size"])
                mask = segmentation_to_mask(segm, hh, ww)
            else:
                mask = np.asarray(segm, dtype=np.uint8)
            mask = transforms.apply_segmentation(mask)
            if mask.shape[:2] != (h, w):
                raise ValueError(f"transformed mask has size {mask.shape[:2]}, image has {(h, w)}")
            anno["segmentation"] = mask
    if anno.get("keypoints") is not None:
        anno["keypoints"] = _transform_keypoints(
            anno["keypoints"], transforms, image_size, keypoint_hflip_indices
        )
    return anno


# ------------------------------------------------------------------------------------------------
# annotations -> Instances
# ------------------------------------------------------------------------------------------------
def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (pixel-corner convention: ``x1 = last column + 1``) of ``(N, H, W)``
    masks; an empty mask gives ``[0, 0, 0, 0]``."""
    n = masks.shape[0]
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    if n == 0:
        return boxes
    m = masks.bool()
    cols, rows = m.any(dim=1), m.any(dim=2)  # (N, W), (N, H)
    for i in range(n):
        xs = torch.nonzero(cols[i]).flatten()
        ys = torch.nonzero(rows[i]).flatten()
        if len(xs) and len(ys):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def annotations_to_instances(
    annos: List[Dict[str, Any]],
    image_size: Tuple[int, int],
    activity_classes: Optional[Sequence[str]] = None,
    *,
    mask_on: bool = True,
    keypoint_on: bool = True,
    num_keypoints: int = 17,
) -> Instances:
    """Dataset-dict annotations (already in the coordinates of ``image_size = (H, W)``) ->
    ``Instances`` with ``gt_boxes (N,4)``, ``gt_classes (N,)``, ``gt_masks (N,H,W) uint8`` and
    ``gt_mask_valid (N,) bool`` (False where the annotation has no segmentation: its mask is all
    zero and a mask loss should skip it), ``gt_keypoints (N,K,3)``, ``gt_activity (N,) int64``
    (index into ``activity_classes``, -1 when unknown or not in the list).

    ``segmentation`` may be polygons, an RLE dict or an (H, W) array; ``keypoints`` a flat list of
    3K numbers or a (K, 3) array.
    """
    h, w = int(image_size[0]), int(image_size[1])
    n = len(annos)
    boxes = torch.zeros((n, 4), dtype=torch.float32)
    if n:
        boxes = torch.tensor([list(map(float, a["bbox"])) for a in annos], dtype=torch.float32)
        boxes = boxes.reshape(n, 4)
    for a in annos:
        mode = a.get("bbox_mode", "XYXY_ABS")
        if str(getattr(mode, "name", mode)) != "XYXY_ABS":
            raise ValueError(
                f"annotations_to_instances expects XYXY_ABS boxes, got bbox_mode={mode!r}"
            )
    inst = Instances((h, w))
    inst.gt_boxes = boxes
    inst.gt_classes = torch.tensor([int(a.get("category_id", 0)) for a in annos], dtype=torch.int64)

    if mask_on:
        masks = np.zeros((n, h, w), dtype=np.uint8)
        valid = np.zeros((n,), dtype=bool)
        for i, a in enumerate(annos):
            m = segmentation_to_mask(a.get("segmentation"), h, w)
            if m is not None:
                masks[i] = m
                valid[i] = True
        inst.gt_masks = torch.from_numpy(masks)
        inst.gt_mask_valid = torch.from_numpy(valid)

    if keypoint_on:
        kpts = np.zeros((n, num_keypoints, 3), dtype=np.float32)
        for i, a in enumerate(annos):
            k = a.get("keypoints")
            if k is not None and len(k):
                kpts[i] = np.asarray(k, dtype=np.float32).reshape(num_keypoints, 3)
        inst.gt_keypoints = torch.from_numpy(kpts)

    index = {c: i for i, c in enumerate(activity_classes or [])}
    inst.gt_activity = torch.tensor(
        [index.get(a.get("activity"), -1) if a.get("activity") is not None else -1 for a in annos],
        dtype=torch.int64,
    )
    return inst


def filter_empty_instances(instances: Instances, box_threshold: float = 1e-5) -> Instances:
    """Drop instances whose box has width or height <= ``box_threshold``."""
    if len(instances) == 0 or not instances.has("gt_boxes"):
        return instances
    b = instances.gt_boxes
    keep = ((b[:, 2] - b[:, 0]) > box_threshold) & ((b[:, 3] - b[:, 1]) > box_threshold)
    if bool(keep.all()):
        return instances
    return instances[keep]


def create_keypoint_hflip_indices(
    keypoint_names: Sequence[str] = COCO_PERSON_KEYPOINT_NAMES,
    flip_map: Sequence[Tuple[str, str]] = COCO_PERSON_KEYPOINT_FLIP_MAP,
) -> np.ndarray:
    """``idx`` such that ``flipped_keypoints = keypoints[idx]`` swaps left and right
    (:func:`multitask.structures.keypoints.flip_permutation`)."""
    return np.asarray(flip_permutation(list(keypoint_names), flip_map), dtype=np.int64)

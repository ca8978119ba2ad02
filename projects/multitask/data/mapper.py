"""Dataset dict -> model input dict (docs/internals.md), with augmentation."""
import logging
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..config.configurable import configurable
from ..structures.keypoints import KeypointSet
from .catalog import MetadataCatalog
from .detection_utils import (
    ImageReadError,
    annotations_to_instances,
    create_keypoint_hflip_indices,
    filter_empty_instances,
    masks_to_boxes,
    read_image,
    transform_instance_annotations,
)
from .transforms import (
    Augmentation,
    RandomFlip,
    RandomRotation,
    RandomScale,
    ResizeShortestEdge,
    Transform,
    apply_augmentations,
)

logger = logging.getLogger(__name__)

__all__ = ["DatasetMapper", "build_augmentation", "transform_instance_annotations"]


def build_augmentation(cfg, is_train: bool) -> List[Augmentation]:
    """Train: shortest-edge resize (INPUT.MIN_SIZE_TRAIN[_SAMPLING], MAX_SIZE_TRAIN), then random
    scale (INPUT.SCALE.RANGE, when not [1, 1]), horizontal flip (INPUT.RANDOM_FLIP), rotation
    (INPUT.ROTATION.ANGLE > 0, with probability INPUT.ROTATION.PROB). Test: fixed resize."""
    if not is_train:
        return [ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]
    augs: List[Augmentation] = [
        ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    scale = cfg.INPUT.get("SCALE")
    if scale is not None:
        lo, hi = (float(v) for v in scale.RANGE)
        if (lo, hi) != (1.0, 1.0):
            augs.append(RandomScale(lo, hi))
    flip = str(cfg.INPUT.RANDOM_FLIP).lower()
    if flip == "horizontal":
        augs.append(RandomFlip(prob=0.5))
    elif flip != "none":
        raise ValueError(
            f"INPUT.RANDOM_FLIP={cfg.INPUT.RANDOM_FLIP!r} is not supported: use 'horizontal' or "
            "'none' (a vertical flip has no keypoint flip map)"
        )
    rot = cfg.INPUT.get("ROTATION")
    if rot is not None and float(rot.ANGLE) > 0 and float(rot.PROB) > 0:
        augs.append(RandomRotation(float(rot.ANGLE), float(rot.PROB)))
    return augs


class DatasetMapper:
    """Callable: dataset dict -> model input dict, or ``None`` for an unreadable image.

    Build it from a config, ``DatasetMapper(cfg, is_train)`` (:meth:`from_config`), or with
    explicit arguments, ``DatasetMapper(is_train=True, augmentations=[...], ...)``; explicit
    arguments override the config's (the default config's without ``cfg``). The output
    (docs/internals.md): ``image`` uint8 ``(3, H, W)`` in ``image_format``, ``height``/``width``
    of the original image, ``file_name``, ``image_id`` and, in training,
    ``instances`` (crowd dropped; boxes clipped to the image; instances with a degenerate box
    after the transforms dropped; after a rotation the box of an instance with a mask is the tight
    box of its rotated mask). Besides the fields of internals.md, ``instances`` carry
    ``gt_mask_valid (N,) bool`` (False: annotation without segmentation, all-zero mask).

    Unreadable images (and images whose size differs from the dataset dict's) are logged once
    per file and counted in ``num_skipped``; the mapper then returns ``None``.
    """

    @configurable
    def __init__(
        self,
        *,
        is_train: bool,
        augmentations: Sequence[Union[Augmentation, Transform]],
        image_format: str,
        use_instance_mask: bool,
        use_keypoint: bool,
        activity_classes: Optional[Sequence[str]],
        keypoint_hflip_indices: Optional[Sequence[int]],
        box_threshold: float = 1e-5,
    ):
        self.is_train = bool(is_train)
        self.augmentations = list(augmentations or [])
        self.image_format = image_format
        self.use_instance_mask = bool(use_instance_mask)
        self.use_keypoint = bool(use_keypoint)
        self.activity_classes = list(activity_classes) if activity_classes is not None else None
        self.keypoint_hflip_indices = np.asarray(
            keypoint_hflip_indices
            if keypoint_hflip_indices is not None
            else create_keypoint_hflip_indices(),
            dtype=np.int64,
        )
        self.box_threshold = box_threshold
        self.num_skipped = 0
        self._bad_files: set = set()
        logger.info(
            "[DatasetMapper] %s augmentations: %s",
            "train" if self.is_train else "test", self.augmentations,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        """The constructor's arguments from ``INPUT.*`` (augmentations, format), ``MODEL.MASK_ON``,
        ``MODEL.KEYPOINT_ON``, ``MODEL.ACTIVITY.CLASSES`` and the keypoint flip map of the first
        ``DATASETS.TRAIN`` dataset's metadata (COCO's when none)."""
        return {
            "is_train": is_train,
            "augmentations": build_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "use_instance_mask": bool(cfg.MODEL.MASK_ON),
            "use_keypoint": bool(cfg.MODEL.KEYPOINT_ON),
            "activity_classes": list(cfg.MODEL.ACTIVITY.CLASSES),
            "keypoint_hflip_indices": cls._hflip_indices_from_metadata(cfg.DATASETS.TRAIN),
        }

    @staticmethod
    def _hflip_indices_from_metadata(names: Sequence[str]) -> Optional[np.ndarray]:
        for name in names or []:
            if name in MetadataCatalog:
                keypoint_set = KeypointSet.from_metadata(MetadataCatalog.get(name))
                if keypoint_set is not None:
                    return np.asarray(keypoint_set.flip_indices, dtype=np.int64)
        return None

    def _skip(self, file_name: str, reason: str) -> None:
        self.num_skipped += 1
        if file_name not in self._bad_files:
            self._bad_files.add(file_name)
            logger.warning(
                "Skipping image %s: %s (%d image read(s) skipped so far in this process)",
                file_name, reason, self.num_skipped,
            )

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        file_name = dataset_dict["file_name"]
        try:
            image = read_image(file_name, format=self.image_format)
        except ImageReadError as e:
            self._skip(file_name, e.reason)
            return None
        h0, w0 = image.shape[:2]
        exp = (dataset_dict.get("height"), dataset_dict.get("width"))
        if exp[0] is not None and exp[1] is not None and (int(exp[0]), int(exp[1])) != (h0, w0):
            self._skip(
                file_name, f"image size {(h0, w0)} differs from the dataset dict's {exp}"
            )
            return None

        image, transforms = apply_augmentations(self.augmentations, image)
        h, w = image.shape[:2]
        out = {
            "file_name": file_name,
            "image_id": dataset_dict.get("image_id"),
            "height": h0,
            "width": w0,
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
        }
        if not self.is_train:
            return out

        annos = [
            transform_instance_annotations(
                a, transforms, (h, w), keypoint_hflip_indices=self.keypoint_hflip_indices
            )
            for a in dataset_dict.get("annotations", [])
            if not a.get("iscrowd", 0)
        ]
        need_masks = self.use_instance_mask or not transforms.axis_aligned
        instances = annotations_to_instances(
            annos, (h, w), self.activity_classes,
            mask_on=need_masks, keypoint_on=self.use_keypoint,
            num_keypoints=len(self.keypoint_hflip_indices),
        )
        if not transforms.axis_aligned and len(instances):
            # a rotated box is loose: use the tight box of the rotated mask where there is one
            valid = instances.gt_mask_valid
            if bool(valid.any()):
                boxes = instances.gt_boxes.clone()
                boxes[valid] = masks_to_boxes(instances.gt_masks[valid])
                instances.gt_boxes = boxes
        if need_masks and not self.use_instance_mask:
            instances.remove("gt_masks")
            instances.remove("gt_mask_valid")
        b = instances.gt_boxes
        b[:, 0::2].clamp_(min=0, max=w)
        b[:, 1::2].clamp_(min=0, max=h)
        out["instances"] = filter_empty_instances(instances, self.box_threshold)
        return out

"""A small per-image container of per-instance fields, shaped like detectron2's ``Instances``.

detectron2 cannot be installed here (see DESIGN.md), and torchvision passes plain dicts, so this is
the one structure the project adds: every field is a tensor (or list) whose first dimension is the
number of instances. Boxes are plain ``(N, 4)`` float tensors in XYXY absolute pixels.

Fields used across the project:

=======================  ===================  ============================================
field                    shape / type         meaning
=======================  ===================  ============================================
gt_boxes                 (N, 4) float         ground-truth boxes, XYXY
gt_classes               (N,) int64           class index (0 = person)
gt_masks                 (N, H, W) uint8      full-image masks of the (resized) image
gt_mask_valid            (N,) bool            False: annotated without a segmentation
gt_keypoints             (N, K, 3) float      x, y, visibility (COCO 0/1/2)
gt_activity              (N,) int64           activity class index, -1 = unknown
pred_boxes               (R, 4) float         predicted boxes, XYXY
scores                   (R,) float           box scores
pred_classes             (R,) int64           class index
pred_masks               (R, H, W) bool       full-image masks
pred_keypoints           (R, K, 3) float      x, y, score
prn_confidence           (R, K) float         PRN peak probability per keypoint
pred_activity            (R,) int64           activity class index
activity_scores          (R, C) float         per-class probabilities
=======================  ===================  ============================================
"""

from typing import Any, Dict, List, Tuple, Union

import torch


class Instances:
    """Per-instance fields of one image. ``image_size`` is ``(height, width)``."""

    def __init__(self, image_size: Tuple[int, int], **fields: Any):
        self._image_size = (int(image_size[0]), int(image_size[1]))
        self._fields: Dict[str, Any] = {}
        for k, v in fields.items():
            self.set(k, v)

    @property
    def image_size(self) -> Tuple[int, int]:
        return self._image_size

    def __setattr__(self, name: str, val: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, val)
        else:
            self.set(name, val)

    def __getattr__(self, name: str) -> Any:
        if name == "_fields" or name not in self._fields:
            raise AttributeError(f"Cannot find field '{name}' in the given Instances!")
        return self._fields[name]

    def set(self, name: str, value: Any) -> None:
        n = len(value)
        if len(self._fields):
            assert (
                len(self) == n
            ), f"Adding a field '{name}' of length {n} to Instances of length {len(self)}"
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def remove(self, name: str) -> None:
        del self._fields[name]

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> Dict[str, Any]:
        return self._fields

    def to(self, *args: Any, **kwargs: Any) -> "Instances":
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if hasattr(v, "to"):
                v = v.to(*args, **kwargs)
            ret.set(k, v)
        return ret

    def __getitem__(self, item: Union[int, slice, torch.Tensor]) -> "Instances":
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range!")
            item = slice(item, None, len(self)) if item == -1 else slice(item, item + 1)
        ret = Instances(self._image_size)
        for k, v in self._fields.items():
            if isinstance(v, list):
                if isinstance(item, torch.Tensor):
                    idx = item.nonzero().flatten() if item.dtype == torch.bool else item
                    v = [v[int(i)] for i in idx]
                else:
                    v = v[item]
            else:
                v = v[item]
            ret.set(k, v)
        return ret

    def __len__(self) -> int:
        for v in self._fields.values():
            return len(v)
        return 0

    def __iter__(self):
        raise NotImplementedError("`Instances` object is not iterable!")

    @staticmethod
    def cat(instance_lists: List["Instances"]) -> "Instances":
        """Concatenate instances of the same image size field by field."""
        assert len(instance_lists) > 0
        if len(instance_lists) == 1:
            return instance_lists[0]
        image_size = instance_lists[0].image_size
        ret = Instances(image_size)
        for k, v0 in instance_lists[0]._fields.items():
            values = [i.get(k) for i in instance_lists]
            if isinstance(v0, torch.Tensor):
                ret.set(k, torch.cat(values, dim=0))
            elif isinstance(v0, list):
                ret.set(k, [x for v in values for x in v])
            else:
                raise ValueError(f"Unsupported type {type(v0)} for concatenation of '{k}'")
        return ret

    def __repr__(self) -> str:
        s = f"Instances(num_instances={len(self)}, image_height={self._image_size[0]}, "
        s += f"image_width={self._image_size[1]}, fields=["
        s += ", ".join(
            f"{k}: {tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__}"
            for k, v in self._fields.items()
        )
        return s + "])"

"""Geometric transforms applied consistently to an image, its boxes, masks and keypoints.

Modelled on detectron2's ``transforms``: an :class:`Augmentation` draws its random parameters from
an image and returns a deterministic :class:`Transform`; a transform has ``apply_image``,
``apply_coords`` (``(N, 2)`` float x, y), ``apply_box`` (``(N, 4)`` XYXY), ``apply_segmentation``
(``(H, W)`` mask, nearest) and ``apply_polygons``. :func:`apply_augmentations` runs a list of
augmentations and returns the image and the :class:`TransformList` to apply to the annotations.

Coordinates are continuous with pixel ``i`` covering ``[i, i + 1)`` (the convention of the dataset
dicts, see coco.py): a horizontal flip maps ``x -> W - x``, a resize scales by ``new_w / w``; the
OpenCV image warps are set up to match (pixel centres at ``i + 0.5``). Images stay ``uint8``.
"""
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "Transform",
    "NoOpTransform",
    "ResizeTransform",
    "HFlipTransform",
    "RotationTransform",
    "TransformList",
    "Augmentation",
    "ResizeShortestEdge",
    "RandomFlip",
    "RandomRotation",
    "RandomScale",
    "apply_augmentations",
]


class Transform:
    """A deterministic geometric transform; subclasses implement apply_image and apply_coords."""

    #: True when boxes stay axis-aligned (a transformed box is still the object's tight box)
    axis_aligned: bool = True

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        return h, w

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        """XYXY boxes -> the XYXY box enclosing the four transformed corners of each."""
        box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
        if len(box) == 0:
            return box.astype(np.float32)
        idxs = np.array([(0, 1), (2, 1), (0, 3), (2, 3)]).flatten()
        corners = self.apply_coords(box[:, idxs].reshape(-1, 2)).reshape(-1, 4, 2)
        mins, maxs = corners.min(axis=1), corners.max(axis=1)
        return np.concatenate([mins, maxs], axis=1).astype(np.float32)

    def apply_polygons(self, polygons: Iterable[np.ndarray]) -> List[np.ndarray]:
        return [self.apply_coords(np.asarray(p, dtype=np.float64).reshape(-1, 2)) for p in polygons]

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({attrs})"


class NoOpTransform(Transform):
    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords


class ResizeTransform(Transform):
    """Resize ``(h, w) -> (new_h, new_w)``. Images: area-averaging when shrinking, bilinear when
    enlarging (``interp`` overrides); masks: nearest."""

    def __init__(self, h: int, w: int, new_h: int, new_w: int, interp: Optional[int] = None):
        self.h, self.w, self.new_h, self.new_w = int(h), int(w), int(new_h), int(new_w)
        self.interp = interp

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        return self.new_h, self.new_w

    def _check(self, img: np.ndarray) -> None:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"ResizeTransform for {(self.h, self.w)} got an image of {img.shape[:2]}"
            )

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        self._check(img)
        if (self.new_h, self.new_w) == (self.h, self.w):
            return img
        if interp is None:
            interp = self.interp
        if interp is None:
            shrink = self.new_h * self.new_w < self.h * self.w
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        out = cv2.resize(img, (self.new_w, self.new_h), interpolation=interp)
        if img.ndim == 3 and out.ndim == 2:
            out = out[:, :, None]
        return out

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=cv2.INTER_NEAREST_EXACT)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).copy()
        coords[:, 0] *= self.new_w / self.w
        coords[:, 1] *= self.new_h / self.h
        return coords


class HFlipTransform(Transform):
    """Horizontal flip of an image of width ``width``: ``x -> width - x``.

    Keypoint left/right swapping is not done here (it needs the keypoint names); the mapper does
    it when the transform list holds an odd number of horizontal flips.
    """

    def __init__(self, width: int):
        self.width = int(width)

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(img[:, ::-1])

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).copy()
        coords[:, 0] = self.width - coords[:, 0]
        return coords


class RotationTransform(Transform):
    """Rotate by ``angle`` degrees counter-clockwise (as seen on screen) about the image centre,
    keeping the ``(h, w)`` canvas (corners leave the image, borders are filled with 0)."""

    axis_aligned = False

    def __init__(self, h: int, w: int, angle: float, center: Optional[Tuple[float, float]] = None):
        self.h, self.w, self.angle = int(h), int(w), float(angle)
        self.center = (self.w / 2.0, self.h / 2.0) if center is None else tuple(map(float, center))
        # continuous coordinates: rotate about `center`
        self._rm_coords = cv2.getRotationMatrix2D(self.center, self.angle, 1.0)
        # OpenCV warps address pixel centres at integer positions: shift the centre by -0.5
        c = (self.center[0] - 0.5, self.center[1] - 0.5)
        self._rm_image = cv2.getRotationMatrix2D(c, self.angle, 1.0)

    def _warp(self, img: np.ndarray, interp: int) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(
                f"RotationTransform for {(self.h, self.w)} got an image of {img.shape[:2]}"
            )
        if self.angle % 360 == 0:
            return img
        out = cv2.warpAffine(
            img, self._rm_image, (self.w, self.h), flags=interp,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )
        if img.ndim == 3 and out.ndim == 2:
            out = out[:, :, None]
        return out

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return self._warp(img, cv2.INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self._warp(segmentation, cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        if len(coords) == 0 or self.angle % 360 == 0:
            return coords.copy()
        return coords @ self._rm_coords[:, :2].T + self._rm_coords[:, 2]


class TransformList(Transform):
    """Several transforms applied in order."""

    def __init__(self, transforms: Sequence[Transform]):
        flat: List[Transform] = []
        for t in transforms:
            if isinstance(t, TransformList):
                flat.extend(t.transforms)
            elif not isinstance(t, NoOpTransform):
                flat.append(t)
        self.transforms = flat

    @property
    def axis_aligned(self) -> bool:  # type: ignore[override]
        return all(t.axis_aligned for t in self.transforms)

    @property
    def num_hflips(self) -> int:
        return sum(isinstance(t, HFlipTransform) for t in self.transforms)

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        for t in self.transforms:
            h, w = t.output_size(h, w)
        return h, w

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            img = t.apply_image(img)
        return img

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        for t in self.transforms:
            segmentation = t.apply_segmentation(segmentation)
        return segmentation

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        for t in self.transforms:
            coords = t.apply_coords(coords)
        return coords

    def apply_box(self, box: np.ndarray) -> np.ndarray:
        box = np.asarray(box, dtype=np.float32).reshape(-1, 4)
        for t in self.transforms:
            box = t.apply_box(box)
        return box

    def apply_polygons(self, polygons: Iterable[np.ndarray]) -> List[np.ndarray]:
        polygons = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons]
        for t in self.transforms:
            polygons = t.apply_polygons(polygons)
        return polygons

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"TransformList({self.transforms!r})"


# ------------------------------------------------------------------------------------------------
# augmentations (random parameters -> a Transform)
# ------------------------------------------------------------------------------------------------
class Augmentation:
    """Draws random parameters (from ``np.random``) and returns a :class:`Transform`."""

    def get_transform(self, image: np.ndarray) -> Transform:
        raise NotImplementedError

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if not k.startswith("_"))
        return f"{type(self).__name__}({attrs})"


class ResizeShortestEdge(Augmentation):
    """Resize so the short side is ``short_edge_length`` (a choice among the given lengths, or an
    integer drawn from ``[min, max]`` with ``sample_style="range"``) and the long side is at most
    ``max_size``. A length of 0 leaves the image as is."""

    def __init__(
        self,
        short_edge_length: Union[int, Sequence[int]],
        max_size: int = 1 << 30,
        sample_style: str = "range",
        interp: Optional[int] = None,
    ):
        if isinstance(short_edge_length, (int, np.integer)):
            short_edge_length = (int(short_edge_length), int(short_edge_length))
        short_edge_length = tuple(int(s) for s in short_edge_length)
        if sample_style not in ("range", "choice"):
            raise ValueError(f"sample_style must be 'range' or 'choice', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError(
                "short_edge_length must be (min, max) with sample_style='range', "
                f"got {short_edge_length}"
            )
        if not short_edge_length:
            raise ValueError("short_edge_length is empty")
        self.short_edge_length = short_edge_length
        self.max_size = int(max_size) if max_size and max_size > 0 else 1 << 30
        self.sample_style = sample_style
        self.interp = interp

    @staticmethod
    def get_output_shape(h: int, w: int, short_edge_length: int, max_size: int) -> Tuple[int, int]:
        scale = short_edge_length / min(h, w)
        newh, neww = (short_edge_length, scale * w) if h < w else (scale * h, short_edge_length)
        if max(newh, neww) > max_size:
            s = max_size / max(newh, neww)
            newh, neww = newh * s, neww * s
        return max(1, int(newh + 0.5)), max(1, int(neww + 0.5))

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        if self.sample_style == "range":
            size = int(np.random.randint(self.short_edge_length[0], self.short_edge_length[1] + 1))
        else:
            size = int(np.random.choice(self.short_edge_length))
        if size == 0:
            return NoOpTransform()
        newh, neww = self.get_output_shape(h, w, size, self.max_size)
        return ResizeTransform(h, w, newh, neww, self.interp)


class RandomScale(Augmentation):
    """Resize the image by a factor drawn uniformly from ``[min_scale, max_scale]`` (applied after
    the shortest-edge resize, so the image size changes by that factor)."""

    def __init__(self, min_scale: float, max_scale: float, interp: Optional[int] = None):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.interp = float(min_scale), float(max_scale), interp

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        s = float(np.random.uniform(self.min_scale, self.max_scale))
        newh, neww = max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))
        if (newh, neww) == (h, w):
            return NoOpTransform()
        return ResizeTransform(h, w, newh, neww, self.interp)


class RandomFlip(Augmentation):
    """Horizontal flip with probability ``prob``."""

    def __init__(self, prob: float = 0.5, horizontal: bool = True, vertical: bool = False):
        if vertical or not horizontal:
            raise ValueError(
                "Only horizontal flips are supported (keypoints have no vertical flip map)"
            )
        self.prob = float(prob)

    def get_transform(self, image: np.ndarray) -> Transform:
        if np.random.rand() < self.prob:
            return HFlipTransform(image.shape[1])
        return NoOpTransform()


class RandomRotation(Augmentation):
    """With probability ``prob``, rotate about the image centre by an angle drawn uniformly from
    ``[-angle, angle]`` degrees (same canvas size)."""

    def __init__(self, angle: float, prob: float = 0.5):
        self.angle, self.prob = abs(float(angle)), float(prob)

    def get_transform(self, image: np.ndarray) -> Transform:
        if self.angle == 0 or np.random.rand() >= self.prob:
            return NoOpTransform()
        h, w = image.shape[:2]
        return RotationTransform(h, w, float(np.random.uniform(-self.angle, self.angle)))


def apply_augmentations(
    augmentations: Sequence[Union[Augmentation, Transform]], image: np.ndarray
) -> Tuple[np.ndarray, TransformList]:
    """Apply the augmentations (or fixed transforms) in order; return the image and the
    :class:`TransformList` that did it (to apply to the annotations)."""
    tfms: List[Transform] = []
    for aug in augmentations:
        t = aug if isinstance(aug, Transform) else aug.get_transform(image)
        image = t.apply_image(image)
        tfms.append(t)
    return image, TransformList(tfms)

"""Instance masks from COCO segmentations (polygons, RLE or arrays), with pycocotools."""

from typing import Any, Optional

import numpy as np

__all__ = ["segmentation_to_mask"]


def segmentation_to_mask(segm: Any, height: int, width: int) -> Optional[np.ndarray]:
    """Rasterise polygons (list of flat lists/arrays), a COCO RLE (compressed or not) or an
    ``(H, W)`` array into an ``(height, width)`` uint8 0/1 mask; ``None`` for no segmentation."""
    from pycocotools import mask as mask_util

    if segm is None:
        return None
    if isinstance(segm, np.ndarray):
        if segm.shape != (height, width):
            raise ValueError(f"bitmask shape {segm.shape} != image size {(height, width)}")
        return (segm > 0).astype(np.uint8)
    if isinstance(segm, dict):
        if [int(s) for s in segm["size"]] != [height, width]:
            raise ValueError(f"RLE size {segm['size']} != image size {[height, width]}")
        rle = segm
        if isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects(segm, height, width)
        return np.ascontiguousarray(mask_util.decode(rle), dtype=np.uint8)
    polys = [np.asarray(p, dtype=np.float64).reshape(-1).tolist() for p in segm]
    polys = [p for p in polys if len(p) >= 6]
    if not polys:
        return None
    rles = mask_util.frPyObjects(polys, height, width)
    return np.ascontiguousarray(mask_util.decode(mask_util.merge(rles)), dtype=np.uint8)

"""Evaluate the mask and keypoint heads on the ground-truth person boxes.

Top-down pose estimation reports keypoint AP "with ground-truth boxes"; for an R-CNN the same
number separates what the heads get wrong from what the detector gets wrong. :class:`GivenBoxes`
wraps a model so that, for every image, the RPN and box head are skipped and the mask and
keypoint heads (and the post-processors) run on the image's non-crowd ground-truth boxes, each
with score 1. Its outputs go through the usual :class:`~multitask.evaluation.COCOEvaluator`::

    model = GivenBoxes(build_model(cfg), DatasetCatalog.get("synthetic_people_val"))
    inference_on_dataset(model, build_detection_test_loader(cfg, name), evaluator)

``tools/eval_gt_boxes.py`` does this from the command line.
"""

from typing import Dict, Iterable, List

import torch
from torch import nn

from ..structures import Instances

__all__ = ["GivenBoxes"]


class GivenBoxes(nn.Module):
    """Callable like the model in eval mode; predicts for the ground-truth boxes of each image.

    Args:
        model: a multi-task R-CNN (``build_model(cfg)``), used through
            ``model.inference(inputs, detected_instances=...)``.
        dataset_dicts: the dataset's dicts (``DatasetCatalog.get(name)``); the boxes of the
            non-crowd annotations of category 0 (person) are given to the heads, in the frame of
            the (resized) input image the test loader makes.

    All predictions carry score 1, so the AP ranks them in no particular order: it measures how
    many of the people get a good mask or pose, not how well the model ranks them.
    """

    def __init__(self, model: nn.Module, dataset_dicts: Iterable[Dict]):
        super().__init__()
        self.model = model
        self.boxes: Dict[int, torch.Tensor] = {}
        for d in dataset_dicts:
            boxes = []
            for a in d.get("annotations", []):
                if a.get("iscrowd", 0) or a.get("category_id", 0) != 0:
                    continue
                mode = a.get("bbox_mode", "XYXY_ABS")
                if mode != "XYXY_ABS":
                    raise ValueError(
                        f"{d.get('file_name')}: annotation {a.get('id')} has bbox_mode {mode!r}; "
                        "GivenBoxes reads the XYXY_ABS boxes of the dataset loaders"
                    )
                boxes.append([float(v) for v in a["bbox"]])
            self.boxes[int(d["image_id"])] = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        detected = []
        for x in batched_inputs:
            image_id = int(x["image_id"])
            if image_id not in self.boxes:
                raise KeyError(f"image_id {image_id} ({x.get('file_name')}) is not in the dataset")
            h, w = (int(s) for s in x["image"].shape[-2:])
            sx, sy = w / float(x.get("width", w)), h / float(x.get("height", h))
            inst = Instances((h, w))
            # no scores: the model gives given boxes score 1
            inst.pred_boxes = self.boxes[image_id] * torch.tensor([sx, sy, sx, sy])
            detected.append(inst)
        return self.model.inference(batched_inputs, detected_instances=detected)

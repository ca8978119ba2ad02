"""``DefaultPredictor``: the model plus the test-time resize, for single images (detectron2's).

::

    cfg = get_cfg(); cfg.merge_from_file("cfg.yaml"); cfg.MODEL.WEIGHTS = "model_final.pth"
    predictor = DefaultPredictor(cfg)
    outputs = predictor(cv2.imread("input.jpg"))      # BGR uint8 (H, W, 3)
    instances = outputs["instances"].to("cpu")         # in the (H, W) frame of the input

As detectron2's ``DefaultPredictor``: the input array is **BGR** (what ``cv2.imread`` and
``multitask.data.read_image`` return) whatever ``cfg.INPUT.FORMAT`` is; when the model was trained
on RGB (``cfg.INPUT.FORMAT == "RGB"``) the channels are swapped before the model sees them. Pass
``input_format="RGB"`` to the constructor to hand it RGB arrays (e.g. from PIL) instead.

``backend="onnxruntime"`` (or ``"torchscript"``) runs a graph written by ``tools/export_model.py``
instead of the PyTorch model: ``cfg`` is then the ``config.yaml`` written with it, whose
``MODEL.WEIGHTS`` names the graph (:class:`multitask.export.ExportedModel`).
"""

import logging
from typing import Dict, List, Sequence

import cv2
import numpy as np
import torch

from ..data.mapper import build_augmentation
from ..export import BACKENDS, ExportedModel
from ..modeling import build_model
from .checkpoint import MultiTaskCheckpointer

__all__ = ["DefaultPredictor", "PREDICTOR_BACKENDS"]

PREDICTOR_BACKENDS = ("pytorch",) + BACKENDS

logger = logging.getLogger(__name__)


class DefaultPredictor:
    """Build ``cfg``'s model (eval mode), load ``cfg.MODEL.WEIGHTS`` when set, and predict on
    ``np.ndarray`` images.

    Each image is resized as at test time (``ResizeShortestEdge(INPUT.MIN_SIZE_TEST,
    INPUT.MAX_SIZE_TEST)``, the transform of the test data loader) and the predictions are
    returned in the frame of the image given: ``{"instances": Instances((H, W))}`` with
    ``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks (R, H, W)``,
    ``pred_keypoints (R, K, 3)`` (continuous coordinates, see ``docs/internals.md``) and the
    post-processors' fields, on the model's device (``cfg.MODEL.DEVICE``; CPU when CUDA is asked
    for but absent).

    Args:
        cfg: the config.
        input_format: colour order of the arrays given to ``__call__``.
        backend: ``"pytorch"`` (default), ``"onnxruntime"`` or ``"torchscript"`` (an exported
            graph named by ``cfg.MODEL.WEIGHTS``).

    Attributes:
        cfg: a frozen copy of the config.
        model: the ``nn.Module`` (eval mode): the model, or an ``ExportedModel``.
        aug: the resize augmentation.
        input_format: channel order of the arrays given to ``__call__`` ("BGR" or "RGB").
    """

    def __init__(self, cfg, input_format: str = "BGR", backend: str = "pytorch"):
        if backend not in PREDICTOR_BACKENDS:
            raise ValueError(f"backend must be one of {PREDICTOR_BACKENDS}, got {backend!r}")
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got {input_format!r}")
        if cfg.INPUT.FORMAT not in ("BGR", "RGB"):
            raise ValueError(f"cfg.INPUT.FORMAT must be 'BGR' or 'RGB', got {cfg.INPUT.FORMAT!r}")
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.backend = backend
        if backend != "pytorch":
            self.model = ExportedModel(self.cfg, backend=backend)
        else:
            self.model = self._build_pytorch_model()
        augs = build_augmentation(self.cfg, is_train=False)
        assert len(augs) == 1, augs
        self.aug = augs[0]
        self.input_format = input_format
        self.model_format = self.cfg.INPUT.FORMAT

    def _build_pytorch_model(self):
        model = build_model(self.cfg)
        model.eval()
        if self.cfg.MODEL.WEIGHTS:
            MultiTaskCheckpointer(model).load(self.cfg.MODEL.WEIGHTS, checkpointables=[])
        else:
            logger.warning(
                "MODEL.WEIGHTS is empty: the predictor uses a randomly initialised model"
            )
        return model

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------------------------------
    def _check_image(self, image: np.ndarray) -> np.ndarray:
        """-> contiguous uint8 (H, W, 3) in the model's channel order."""
        if not isinstance(image, np.ndarray):
            raise TypeError(
                "DefaultPredictor expects a numpy array (H, W, 3) uint8, got "
                f"{type(image).__name__}"
            )
        if image.dtype != np.uint8:
            raise TypeError(
                f"DefaultPredictor expects a uint8 image, got dtype {image.dtype} (shape "
                f"{image.shape}); convert it first, e.g. np.clip(img * 255, 0, 255)"
                ".astype(np.uint8) for floats in [0, 1]"
            )
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        if image.ndim == 2:  # grayscale: replicate to 3 channels
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2BGR)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"DefaultPredictor expects an (H, W, 3) {self.input_format} image (or an (H, W) "
                f"grayscale one), got shape {image.shape}"
                + (
                    "; drop the alpha channel with image[:, :, :3]"
                    if image.ndim == 3 and image.shape[2] == 4
                    else ""
                )
            )
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"DefaultPredictor got an empty image of shape {image.shape}")
        if self.input_format != self.model_format:
            image = image[:, :, ::-1]
        return np.ascontiguousarray(image)

    def _to_input(self, original_image: np.ndarray) -> Dict:
        image = self._check_image(original_image)
        height, width = image.shape[:2]
        resized = self.aug.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    # ------------------------------------------------------------------------------------------
    def __call__(self, original_image: np.ndarray) -> Dict:
        """Predict on one ``(H, W, 3)`` uint8 image (``input_format``, BGR by default; an
        ``(H, W)`` grayscale array is accepted). Returns ``{"instances": Instances((H, W))}``."""
        return self.predict_batch([original_image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> List[Dict]:
        """Predict on several images (any sizes) in one model call; one result dict per image,
        each in its own image's frame."""
        if isinstance(images, np.ndarray):
            raise TypeError("predict_batch takes a list of images; use predictor(image) for one")
        if len(images) == 0:
            return []
        inputs = [self._to_input(im) for im in images]
        with torch.inference_mode():
            return self.model(inputs)

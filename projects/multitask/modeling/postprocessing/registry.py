"""Post-processors: modules that run after the ROI heads on each image's predictions."""

from typing import List

import torch
from fvcore.common.registry import Registry
from torch import nn

POSTPROCESSOR_REGISTRY = Registry("POSTPROCESSOR")
POSTPROCESSOR_REGISTRY.__doc__ = """
Registry for post-processors, modules that refine or extend per-person predictions after the ROI
heads (e.g. the Pose Residual Network and the activity classifier).

A registered class is constructed as ``cls(cfg)`` and is an ``nn.Module`` whose ``forward`` is
called at inference as::

    results = postprocessor(batched_inputs, results)

``batched_inputs`` is the model's input list (dicts with "image", "height", "width", ...) and
``results`` a list of :class:`multitask.structures.Instances`, one per image, already in the
original image's coordinates (fields ``pred_boxes (R, 4)``, ``scores (R,)``,
``pred_keypoints (R, K, 3)``, ...). It returns the list updated. It must accept ``R == 0``.
A post-processor loads its own weights from its config key (e.g. ``MODEL.PRN.WEIGHTS``) when that
is set; otherwise its weights come from the full model checkpoint
(``postprocessors.<NAME>.*``).
"""


def build_postprocessors(cfg) -> nn.ModuleDict:
    """Build ``cfg.MODEL.POSTPROCESSORS`` in order, as a ``ModuleDict`` keyed by registered name."""
    modules = nn.ModuleDict()
    for name in cfg.MODEL.POSTPROCESSORS:
        if name in modules:
            raise ValueError(f"MODEL.POSTPROCESSORS lists '{name}' twice")
        try:
            cls = POSTPROCESSOR_REGISTRY.get(name)
        except KeyError:
            known = sorted(k for k, _ in POSTPROCESSOR_REGISTRY)
            raise KeyError(
                f"MODEL.POSTPROCESSORS: no post-processor named '{name}'; registered: {known}"
            ) from None
        modules[name] = cls(cfg)
    return modules


def run_postprocessors(
    postprocessors: nn.ModuleDict, batched_inputs: List[dict], results: List
) -> List:
    """Apply each post-processor in order; a no-op for an empty ``ModuleDict``."""
    with torch.no_grad():
        for module in postprocessors.values():
            results = module(batched_inputs, results)
    return results


def set_postprocessor_precision(postprocessors: nn.ModuleDict, inference: bool,
                                keep_float32: bool = False) -> None:
    """Tell each post-processor with a ``set_inference_precision`` (the PRN: float16 layers at
    inference) whether it runs for inference; ``keep_float32`` for a model that also trains."""
    for module in postprocessors.values():
        if hasattr(module, "set_inference_precision"):
            module.set_inference_precision(inference, keep_float32=keep_float32)

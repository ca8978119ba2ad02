"""Trace the inference model into an ONNX or TorchScript graph.

What is exported is :class:`InferenceCore`: one image in, the ROI heads' raw outputs out --
normalisation, padding to the backbone's size divisibility, backbone (deformable convs
included), RPN, box head with NMS, mask head and offset-refined keypoint head with the keypoint
decoder. Rescaling to the original image, pasting the 28x28 masks into it and the
post-processors (PRN, activity classifier) stay in Python (:mod:`.runtime`): they are per-person
Python logic around small networks, and their weights travel next to the graph.

Both formats come from the TorchScript tracer (``torch.onnx.export(..., dynamo=False)`` and
``torch.jit.trace``): torchvision's detection code (anchors, proposal filtering, NMS, ROIAlign)
has trace-friendly branches for it, whereas ``torch.export`` (the default ONNX exporter) stops
at the data-dependent number of boxes inside ``torchvision.ops.batched_nms``. While tracing, the
fast CPU kernels step aside for torchvision's ``deform_conv2d`` and ``roi_align``
(:func:`multitask.modeling.layers.row_gather.capturing_graph`), and ``deform_conv2d`` is written
as ONNX's ``DeformConv`` (opset 19) by :func:`register_onnx_symbolics`.
"""

import contextlib
import json
import logging
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList

from ..utils.file_io import atomic_write

__all__ = ["InferenceCore", "EXPORT_FORMATS", "ONNX_OPSET", "register_onnx_symbolics",
           "export_model", "export_onnx", "export_torchscript", "output_names"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "torchscript")
# DeformConv entered ONNX in opset 19; RoiAlign's half-pixel mode (ROIAlignV2) in 16
ONNX_OPSET = 19
# file names inside an export directory
GRAPH_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
META_FILE = "export.json"
POSTPROCESSOR_FILE = "postprocessors.pth"
CONFIG_FILE = "config.yaml"


def output_names(model: nn.Module) -> List[str]:
    """The graph's outputs, in order: ``boxes (R, 4)``, ``scores (R,)``, ``labels (R,)``
    (1 = person), then ``masks (R, 1, M, M)`` probabilities and ``keypoints (R, K, 3)`` when
    the model has those heads. Boxes and keypoints are in the frame of the input image."""
    names = ["boxes", "scores", "labels"]
    if model.roi_heads.has_mask():
        names.append("masks")
    if model.roi_heads.has_keypoint():
        names.append("keypoints")
    return names


class InferenceCore(nn.Module):
    """The traceable part of :meth:`MultiTaskRCNN.inference` for one image.

    Forward: ``image (3, H, W)`` float32 in the model's colour order (``INPUT.FORMAT``), 0-255,
    after the test-time resize -> the tuple named by :func:`output_names`. Equal to
    ``model.inference([{"image": image}], do_postprocess=False)[0]``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.names = output_names(model)
        heads = model.roi_heads
        if heads.has_keypoint() and heads.keypoint_decoder != "subcell":
            raise ValueError(
                "export: MODEL.ROI_KEYPOINT_HEAD.DECODER "
                f"'{heads.keypoint_decoder}' resizes each box's heatmaps to the box's own size, "
                "which a traced graph cannot do; export with DECODER 'subcell'"
            )

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        m = self.model
        x = (image - m.pixel_mean) / m.pixel_std
        # sizes stay traced values (no int()), so the graph takes any image size
        h, w = x.shape[-2], x.shape[-1]
        d = m.backbone.size_divisibility
        x = F.pad(x, (0, (w + d - 1) // d * d - w, 0, (h + d - 1) // d * d - h)).unsqueeze(0)
        images = ImageList(x, [(h, w)])
        features = m.backbone(x)
        proposals, _ = m.proposal_generator(images, features)
        results, _ = m.roi_heads(features, proposals, images.image_sizes)
        return tuple(results[0][k] for k in self.names)


def _deform_conv2d_symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h,
                            pad_w, dil_h, dil_w, n_weight_grps, n_offset_grps, use_mask):
    """``torchvision::deform_conv2d`` -> ONNX ``DeformConv`` (same offset and mask layout)."""
    inputs = [input, weight, offset, bias] + ([mask] if use_mask else [])
    return g.op(
        "DeformConv",
        *inputs,
        strides_i=[stride_h, stride_w],
        pads_i=[pad_h, pad_w, pad_h, pad_w],
        dilations_i=[dil_h, dil_w],
        group_i=n_weight_grps,
        offset_group_i=n_offset_grps,
    )


_registered = False


def register_onnx_symbolics() -> None:
    """Teach the TorchScript-based ONNX exporter ``torchvision::deform_conv2d`` (once)."""
    global _registered
    if _registered:
        return
    from torch.onnx.symbolic_helper import parse_args

    fn = parse_args("v", "v", "v", "v", "v", "i", "i", "i", "i", "i", "i", "i", "i", "b")(
        _deform_conv2d_symbolic
    )
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", fn, ONNX_OPSET)
    _registered = True


@contextlib.contextmanager
def _tracing():
    """No gradients, and no TracerWarnings: the shapes the model turns into Python numbers are
    fixed by the architecture (heatmap and pooler sizes); the tests check that the graphs take
    other image sizes and numbers of people, none included."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def _sample_image(model: nn.Module, size: Sequence[int]) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    h, w = int(size[0]), int(size[1])
    return torch.randint(0, 256, (3, h, w), generator=g).float().to(model.pixel_mean.device)


def export_onnx(core: InferenceCore, image: torch.Tensor, path: str,
                opset: int = ONNX_OPSET) -> None:
    """Write ``core`` traced on ``image`` to ``path`` as ONNX, height and width dynamic."""
    register_onnx_symbolics()
    dynamic = {"image": {1: "height", 2: "width"}}
    for name in core.names:
        dynamic[name] = {0: "detections"}

    def write(f) -> None:
        with _tracing():
            torch.onnx.export(
                core, (image,), f, input_names=["image"], output_names=core.names,
                dynamic_axes=dynamic, opset_version=opset, dynamo=False,
            )

    atomic_write(path, write)


def export_torchscript(core: InferenceCore, image: torch.Tensor, path: str) -> None:
    """Write ``core`` traced on ``image`` to ``path`` with ``torch.jit.save``."""
    with _tracing():
        traced = torch.jit.trace(core, (image,), check_trace=False)
    atomic_write(path, lambda f: torch.jit.save(traced, f))


def export_model(cfg, model: nn.Module, output_dir: str, fmt: str = "onnx",
                 sample_size: Optional[Sequence[int]] = None) -> Dict[str, str]:
    """Export ``model`` (eval mode, weights loaded) into ``output_dir``.

    Writes the graph (``model.onnx`` or ``model.ts``), ``export.json`` (format, output names,
    colour order, versions), ``config.yaml`` (``cfg``, with ``MODEL.WEIGHTS`` pointing at the
    graph) and, when the model has post-processors, ``postprocessors.pth`` (their state dict).
    ``sample_size``: the ``(H, W)`` of the image traced (any size works afterwards); default
    ``(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``. Returns the paths written, by role.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got '{fmt}'")
    os.makedirs(output_dir, exist_ok=True)
    model.eval()
    core = InferenceCore(model).eval()
    if sample_size is None:
        sample_size = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    image = _sample_image(model, sample_size)
    paths = {"graph": os.path.join(output_dir, GRAPH_FILES[fmt])}
    logger.info("Tracing the model on a %dx%d image for %s export", *image.shape[-2:], fmt)
    if fmt == "onnx":
        export_onnx(core, image, paths["graph"])
    else:
        export_torchscript(core, image, paths["graph"])
    meta = {
        "format": fmt,
        "graph": GRAPH_FILES[fmt],
        "outputs": core.names,
        "input": "image (3, H, W) float32 0-255, after the test-time resize",
        "input_format": model.input_format,
        "postprocessors": list(model.postprocessors.keys()),
        # baked into the graph; a runtime may only raise it (see ExportedModel)
        "score_thresh_test": float(model.roi_heads.score_thresh),
        "opset": ONNX_OPSET if fmt == "onnx" else None,
        "torch": torch.__version__,
    }
    if len(model.postprocessors):
        paths["postprocessors"] = os.path.join(output_dir, POSTPROCESSOR_FILE)
        state = {"names": meta["postprocessors"],
                 "state_dict": model.postprocessors.state_dict()}
        atomic_write(paths["postprocessors"], lambda f: torch.save(state, f))
    paths["meta"] = os.path.join(output_dir, META_FILE)
    atomic_write(paths["meta"], lambda f: json.dump(meta, f, indent=2), mode="w")
    exported_cfg = cfg.clone()
    exported_cfg.defrost()
    exported_cfg.MODEL.WEIGHTS = paths["graph"]
    for key in ("PRN", "ACTIVITY"):  # their weights are in postprocessors.pth
        getattr(exported_cfg.MODEL, key).WEIGHTS = ""
        getattr(exported_cfg.MODEL, key).FIT_ON_TRAIN_GT = False
    paths["config"] = os.path.join(output_dir, CONFIG_FILE)
    atomic_write(paths["config"], lambda f: f.write(exported_cfg.dump()), mode="w")
    return paths

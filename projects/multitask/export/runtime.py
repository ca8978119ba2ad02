"""Run an exported model (onnxruntime or TorchScript) behind the model's own call.

:class:`ExportedModel` takes what :class:`MultiTaskRCNN` takes in eval mode (a list of
``{"image", "height", "width"}`` dicts) and returns what it returns (``[{"instances":
Instances}]``), so the predictor, the demo and the evaluator use either. The graph gives the
ROI heads' outputs for one image; the rest is the PyTorch model's own code: rescaling and mask
pasting (:func:`multitask.modeling.meta_arch.detector_postprocess`) and the post-processors,
built from the exported config and loaded from ``postprocessors.pth``.
"""

import json
import logging
import os
from typing import Dict, List, Optional

import torch
from torch import nn

from ..modeling.meta_arch import detector_postprocess
from ..modeling.postprocessing import (
    build_postprocessors,
    run_postprocessors,
    set_postprocessor_precision,
)
from .tracing import META_FILE, POSTPROCESSOR_FILE

__all__ = ["ExportedModel", "BACKENDS", "backend_for"]

logger = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torchscript")
_EXTENSIONS = {".onnx": "onnxruntime", ".ts": "torchscript", ".pt": "torchscript"}


def backend_for(path: str) -> str:
    """The backend that runs a graph file, from its extension (``.onnx``, ``.ts``/``.pt``)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _EXTENSIONS:
        raise ValueError(
            f"{path}: cannot tell the backend from the extension '{ext}'; exported graphs are "
            f"{sorted(_EXTENSIONS)} (tools/export_model.py writes model.onnx or model.ts)"
        )
    return _EXTENSIONS[ext]


class _OnnxRunner:
    def __init__(self, path: str, num_threads: Optional[int]):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - onnxruntime is a dependency
            raise ImportError(
                "the onnxruntime backend needs the onnxruntime package (pip install onnxruntime)"
            ) from e
        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = int(num_threads)
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.names = [o.name for o in self.session.get_outputs()]
        self.device = torch.device("cpu")

    def __call__(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        outs = self.session.run(None, {self.input_name: image.detach().cpu().numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(self.names, outs)}


class _TorchScriptRunner:
    def __init__(self, path: str, names: List[str], device: torch.device):
        import torchvision  # noqa: F401  (registers the torchvision:: operators the graph calls)

        self.module = torch.jit.load(path, map_location=device).eval()
        self.names = names
        self.device = device

    def __call__(self, image: torch.Tensor) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            outs = self.module(image.to(self.device))
        return dict(zip(self.names, outs))


class ExportedModel(nn.Module):
    """An exported graph plus the model's post-processing, called like the PyTorch model.

    Args:
        cfg: the exported config (``config.yaml`` in the export directory); its post-processors
            are built and loaded from ``postprocessors.pth`` beside the graph.
        path: the graph (``model.onnx`` or ``model.ts``); default ``cfg.MODEL.WEIGHTS``.
        backend: ``"onnxruntime"`` or ``"torchscript"``; default from the extension.
        num_threads: onnxruntime's intra-op threads (default: onnxruntime's choice).
    """

    def __init__(self, cfg, path: Optional[str] = None, backend: Optional[str] = None,
                 num_threads: Optional[int] = None):
        super().__init__()
        path = path or cfg.MODEL.WEIGHTS
        if not path or not os.path.isfile(path):
            raise FileNotFoundError(
                f"exported model '{path}' not found (MODEL.WEIGHTS names the graph written by "
                "tools/export_model.py, e.g. output/export/model.onnx)"
            )
        backend = backend or backend_for(path)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got '{backend}'")
        if backend != backend_for(path):
            raise ValueError(f"{path}: a {backend_for(path)} graph, not one for {backend}")
        directory = os.path.dirname(os.path.abspath(path))
        meta_path = os.path.join(directory, META_FILE)
        if not os.path.isfile(meta_path):
            raise FileNotFoundError(
                f"{meta_path} not found: an exported graph travels with the export.json that "
                "tools/export_model.py writes beside it"
            )
        with open(meta_path) as f:
            self.meta = json.load(f)
        self.backend = backend
        self.input_format = self.meta["input_format"]
        if backend == "onnxruntime":
            self.runner = _OnnxRunner(path, num_threads)
            if self.runner.names != self.meta["outputs"]:
                raise ValueError(
                    f"{path}: outputs {self.runner.names} differ from {self.meta['outputs']} in "
                    f"{meta_path}"
                )
        else:
            device = torch.device(cfg.MODEL.DEVICE)
            if device.type == "cuda" and not torch.cuda.is_available():
                device = torch.device("cpu")
            self.runner = _TorchScriptRunner(path, self.meta["outputs"], device)
        self.postprocessors = build_postprocessors(cfg)
        self._load_postprocessors(directory)
        set_postprocessor_precision(self.postprocessors, True)  # as the model in eval mode
        self.score_thresh = float(cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST)
        baked = float(self.meta.get("score_thresh_test", 0.0))
        if self.score_thresh < baked:
            logger.warning(
                "MODEL.ROI_HEADS.SCORE_THRESH_TEST %.3g is below the %.3g the graph was exported "
                "with; boxes under %.3g were dropped inside the graph (export again to keep them)",
                self.score_thresh, baked, baked,
            )
        self.eval()

    def _load_postprocessors(self, directory: str) -> None:
        names = list(self.postprocessors.keys())
        if names != self.meta["postprocessors"]:
            raise ValueError(
                f"MODEL.POSTPROCESSORS {names} differ from the exported model's "
                f"{self.meta['postprocessors']} ({os.path.join(directory, META_FILE)}); use the "
                "config.yaml written with the graph"
            )
        if not names:
            return
        path = os.path.join(directory, POSTPROCESSOR_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: the post-processors' weights {names}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = self.postprocessors.load_state_dict(state["state_dict"],
                                                                  strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not fit the post-processors built from the config: missing "
                f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )

    @property
    def device(self) -> torch.device:
        return self.runner.device

    def forward(self, batched_inputs: List[dict]) -> List[Dict]:
        processed = []
        for x in batched_inputs:
            image = x["image"].float()
            size = (int(image.shape[-2]), int(image.shape[-1]))
            raw = self.runner(image)
            keep = raw["scores"] > self.score_thresh  # the box head's rule (torchvision's)
            if not bool(keep.all()):
                raw = {k: v[keep] for k, v in raw.items()}
            out_size = (x.get("height", size[0]), x.get("width", size[1]))
            processed.append(detector_postprocess(raw, size, out_size))
        processed = run_postprocessors(self.postprocessors, batched_inputs, processed)
        return [{"instances": r} for r in processed]

"""Export the inference model to ONNX or TorchScript and run it (see ``tools/export_model.py``).

* :func:`export_model` traces :class:`InferenceCore` (image -> boxes, scores, labels, masks,
  keypoints) and writes the graph with its config, metadata and post-processor weights;
* :class:`ExportedModel` runs such a graph with onnxruntime or TorchScript behind the PyTorch
  model's own call, so the predictor, the demo and the evaluator take either.
"""

from .runtime import BACKENDS, ExportedModel, backend_for
from .tracing import (
    EXPORT_FORMATS,
    ONNX_OPSET,
    InferenceCore,
    export_model,
    export_onnx,
    export_torchscript,
    output_names,
    register_onnx_symbolics,
)

__all__ = [
    "BACKENDS", "EXPORT_FORMATS", "ONNX_OPSET", "ExportedModel", "InferenceCore", "backend_for",
    "export_model", "export_onnx", "export_torchscript", "output_names", "register_onnx_symbolics",
]

"""detectron2 model-zoo ``.pkl`` weights: read them without running code, rename them to ours.

A model-zoo file (e.g. ``model_final_a6e10b.pkl`` of COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x)
is a pickle of ``{"model": {name: numpy.ndarray}, "__author__": "Detectron2 Model Zoo",
"matching_heuristics": True}``. A pickle can name any importable callable and have it called
while it is read, so :func:`read_detectron2_pkl` uses an unpickler that resolves only what numpy
arrays (and an ``OrderedDict``) need and refuses every other global by name.

:func:`detectron2_to_multitask` renames detectron2's parameters to ours (torchvision's layout;
the full table is in docs/detectron2_weights.md):

* ``backbone.bottom_up.stem.conv1[.norm]`` -> ``backbone.bottom_up.conv1`` / ``bn1``;
  ``res{s}.{i}.conv{j}[.norm]`` -> ``layer{s-1}.{i}.conv{j}`` / ``bn{j}``; ``shortcut[.norm]``
  -> ``downsample.0`` / ``downsample.1``;
* ``backbone.fpn_lateral{s}`` / ``fpn_output{s}`` -> ``backbone.fpn.inner_blocks.{s-2}.0`` /
  ``layer_blocks.{s-2}.0``;
* ``proposal_generator.rpn_head.{conv, objectness_logits, anchor_deltas}`` ->
  ``proposal_generator.head.{conv.0.0, cls_logits, bbox_pred}``;
* ``roi_heads.box_head.fc1`` / ``fc2`` -> ``fc6`` / ``fc7``; ``roi_heads.box_predictor.*`` keeps
  its names, with the classes re-laid (below);
* ``roi_heads.keypoint_head.conv_fcn{n}`` -> ``roi_heads.keypoint_head.{2(n-1)}``;
  ``score_lowres`` -> ``roi_heads.keypoint_predictor.kps_score_lowres``;
* ``roi_heads.mask_head.mask_fcn{n}`` -> ``roi_heads.mask_head.{n-1}.0``; ``deconv`` ->
  ``roi_heads.mask_predictor.conv5_mask``; ``predictor`` -> ``...mask_fcn_logits``.

detectron2 puts the background class LAST in ``cls_score`` and has no background box or mask;
torchvision's heads (ours) put the background at index 0 and have ``K + 1`` boxes and masks. A
class-agnostic ``bbox_pred`` (4 rows) or mask predictor (1 channel) is repeated for every class.
Names with no counterpart (``pixel_mean`` / ``pixel_std``, old ``anchor_generator.cell_anchors``,
GN/conv variants of the heads) are returned as ``unmapped``, never dropped silently.
docs/detectron2_weights.md lists the numeric details that still differ from detectron2.
"""

import codecs
import collections
import logging
import os
import pickle
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "Detectron2WeightsError",
    "UnsafePickleError",
    "read_detectron2_pkl",
    "detectron2_to_multitask",
    "load_detectron2_pkl",
]

# Names detectron2 files may hold that have no parameter here (the model normalises with
# MODEL.PIXEL_MEAN / PIXEL_STD and computes its anchors); reported in ``unmapped`` as well
IGNORED_NAMES = re.compile(r"^(pixel_mean|pixel_std|proposal_generator\.anchor_generator\..*)$")


class Detectron2WeightsError(ValueError):
    """A file that is not a detectron2 weight file, or whose arrays do not fit together."""


class UnsafePickleError(Detectron2WeightsError, pickle.UnpicklingError):
    """The pickle names a global (a callable, a class) that weight files never need."""


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _numpy_core() -> Tuple[Any, Any]:
    core = getattr(np, "_core", None)  # numpy >= 2
    if core is None or not hasattr(core, "multiarray"):
        import numpy.core as core  # numpy 1.x
    return core.multiarray, core.numeric


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of ``bytes`` call it (``(str, "latin1")``)."""
    if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in (
        "latin1", "latin-1", "iso-8859-1"
    ):
        raise pickle.UnpicklingError(
            f"_codecs.encode is admitted for latin1-encoded bytes only, got {encoding!r}"
        )
    return codecs.encode(obj, encoding, errors)


def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    multiarray, numeric = _numpy_core()
    allowed: Dict[Tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        # how Python 3 writes ``bytes`` (the array data) into a protocol-2 pickle
        ("_codecs", "encode"): _latin1_encode,
    }
    for module in ("numpy.core", "numpy._core"):  # numpy 1.x / 2.x write either
        allowed[(module + ".multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(module + ".multiarray", "scalar")] = multiarray.scalar
        allowed[(module + ".numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals that numpy arrays, numpy scalars and ``OrderedDict`` need."""

    def __init__(self, file, filename: str):
        super().__init__(file, encoding="latin1")
        self._filename = filename
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        obj = self._allowed.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"refusing to load '{module}.{name}' from {self._filename}: detectron2 weight "
                f"files hold numpy arrays only"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"refusing a persistent id in {self._filename}: detectron2 weight files hold numpy "
            f"arrays only"
        )


def read_detectron2_pkl(path: str) -> Dict[str, Any]:
    """Read a detectron2 ``.pkl`` weight file without running code from it.

    Returns the pickled dict (``"model"``: ``{name: numpy.ndarray}``, ``"__author__"``, ...).
    Raises :class:`UnsafePickleError` for a pickle that names anything but numpy's array
    reconstruction or ``collections.OrderedDict`` (before anything it names is imported or
    called), :class:`Detectron2WeightsError` for a file that is not a pickle, whose top level is
    not a dict, or that has no ``"model"`` dict (an old Detectron/caffe2 file holds ``"blobs"``).
    Every message names the file.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = _NumpyOnlyUnpickler(f, path).load()
    except UnsafePickleError:
        raise
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated, not a pickle, a numpy state that does not fit, ...
        raise Detectron2WeightsError(
            f"cannot read {path} as a detectron2 weight file: {type(e).__name__}: {e}"
        ) from e
    if not isinstance(data, dict):
        raise Detectron2WeightsError(
            f"{path} holds a {type(data).__name__}, not a dict: not a detectron2 weight file "
            f"(those hold {{'model': {{name: array}}, '__author__': ...}})"
        )
    if "model" not in data:
        keys = ", ".join(repr(k) for k in list(data)[:8])
        hint = ""
        if "blobs" in data:
            hint = (
                " -- 'blobs' is an old Detectron (caffe2) file, whose names are not converted "
                "here; load it in detectron2 and save its model.state_dict() instead"
            )
        raise Detectron2WeightsError(
            f"{path} has no 'model' entry (its keys: {keys}){hint}"
        )
    if not isinstance(data["model"], dict):
        raise Detectron2WeightsError(
            f"{path}: 'model' holds a {type(data['model']).__name__}, not a dict of arrays"
        )
    return data


# ---------------------------------------------------------------------------------------------
# Renaming
# ---------------------------------------------------------------------------------------------
_BN = r"(weight|bias|running_mean|running_var)"
_WB = r"(weight|bias)"

# (detectron2 pattern, our name built from the match); tried in order, first full match wins
_RULES: List[Tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]] = [
    (re.compile(p), f) for p, f in [
        # ResNet stem and stages (torchvision's names; res2..res5 = layer1..layer4)
        (r"backbone\.bottom_up\.stem\.conv1\.weight",
         lambda m: "backbone.bottom_up.conv1.weight"),
        (r"backbone\.bottom_up\.stem\.conv1\.norm\." + _BN,
         lambda m: f"backbone.bottom_up.bn1.{m[1]}"),
        (r"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.weight",
         lambda m: f"backbone.bottom_up.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
        (r"backbone\.bottom_up\.res([2-5])\.(\d+)\.conv([1-3])\.norm\." + _BN,
         lambda m: f"backbone.bottom_up.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
        (r"backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.weight",
         lambda m: f"backbone.bottom_up.layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
        (r"backbone\.bottom_up\.res([2-5])\.(\d+)\.shortcut\.norm\." + _BN,
         lambda m: f"backbone.bottom_up.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
        # FPN (torchvision's FeaturePyramidNetwork: block 0 reads res2)
        (r"backbone\.fpn_lateral([2-5])\." + _WB,
         lambda m: f"backbone.fpn.inner_blocks.{int(m[1]) - 2}.0.{m[2]}"),
        (r"backbone\.fpn_output([2-5])\." + _WB,
         lambda m: f"backbone.fpn.layer_blocks.{int(m[1]) - 2}.0.{m[2]}"),
        # RPN head (torchvision's RPNHead)
        (r"proposal_generator\.rpn_head\.conv\." + _WB,
         lambda m: f"proposal_generator.head.conv.0.0.{m[1]}"),
        (r"proposal_generator\.rpn_head\.objectness_logits\." + _WB,
         lambda m: f"proposal_generator.head.cls_logits.{m[1]}"),
        (r"proposal_generator\.rpn_head\.anchor_deltas\." + _WB,
         lambda m: f"proposal_generator.head.bbox_pred.{m[1]}"),
        # box head (torchvision's TwoMLPHead) and predictor (FastRCNNPredictor)
        (r"roi_heads\.box_head\.fc([12])\." + _WB,
         lambda m: f"roi_heads.box_head.fc{int(m[1]) + 5}.{m[2]}"),
        (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\." + _WB,
         lambda m: f"roi_heads.box_predictor.{m[1]}.{m[2]}"),
        # keypoint head (torchvision's KeypointRCNNHeads: conv, ReLU, conv, ...) and predictor
        (r"roi_heads\.keypoint_head\.conv_fcn([1-9]\d*)\." + _WB,
         lambda m: f"roi_heads.keypoint_head.{2 * (int(m[1]) - 1)}.{m[2]}"),
        (r"roi_heads\.keypoint_head\.score_lowres\." + _WB,
         lambda m: f"roi_heads.keypoint_predictor.kps_score_lowres.{m[1]}"),
        # mask head (torchvision's MaskRCNNHeads) and predictor (MaskRCNNPredictor)
        (r"roi_heads\.mask_head\.mask_fcn([1-9]\d*)\." + _WB,
         lambda m: f"roi_heads.mask_head.{int(m[1]) - 1}.0.{m[2]}"),
        (r"roi_heads\.mask_head\.deconv\." + _WB,
         lambda m: f"roi_heads.mask_predictor.conv5_mask.{m[1]}"),
        (r"roi_heads\.mask_head\.predictor\." + _WB,
         lambda m: f"roi_heads.mask_predictor.mask_fcn_logits.{m[1]}"),
    ]
]

_CLS = "roi_heads.box_predictor.cls_score"
_BOX = "roi_heads.box_predictor.bbox_pred"
_MASK_D2 = "roi_heads.mask_head.predictor"


def detectron2_name_to_multitask(name: str) -> Optional[str]:
    """Our name for detectron2's parameter ``name``, or ``None`` when it has none here."""
    for pattern, build in _RULES:
        m = pattern.fullmatch(name)
        if m is not None:
            return build(m)
    return None


def _to_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if not isinstance(value, np.ndarray):
        raise Detectron2WeightsError(
            f"'{name}' holds a {type(value).__name__}, not a numpy array"
        )
    if value.dtype.kind not in "fiub":
        raise Detectron2WeightsError(f"'{name}' holds an array of dtype {value.dtype}")
    return torch.from_numpy(np.ascontiguousarray(value))


def _num_classes(model: Dict[str, Any]) -> Optional[int]:
    """Foreground classes K of detectron2's box predictor (``cls_score`` has K + 1 rows)."""
    w = model.get(_CLS + ".weight")
    return None if w is None else int(np.shape(w)[0]) - 1


def _class_rows(
    name: str, t: torch.Tensor, per_class: int, num_classes: int, keep: Sequence[int]
) -> torch.Tensor:
    """Rows of a class-specific (``per_class * K`` rows) or class-agnostic (``per_class`` rows)
    detectron2 predictor -> ``per_class`` zero background rows, then the rows of ``keep``."""
    n = t.shape[0]
    if n == per_class * num_classes:
        rows = [t[per_class * c: per_class * (c + 1)] for c in keep]
    elif n == per_class:  # class-agnostic: the same box / mask for every class
        rows = [t] * len(keep)
    else:
        raise Detectron2WeightsError(
            f"'{name}' has {n} rows; expected {per_class} x {num_classes} classes (as "
            f"{_CLS}.weight says) or {per_class} (class-agnostic)"
        )
    return torch.cat([t.new_zeros((per_class,) + tuple(t.shape[1:]))] + rows, dim=0)


def detectron2_to_multitask(
    model: Dict[str, Any], classes: Optional[Sequence[int]] = None
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename detectron2's ``{name: array}`` to our state dict (see the module docstring).

    Args:
        model: the ``"model"`` dict of a detectron2 file (numpy arrays or tensors).
        classes: detectron2 class indices to keep, in order, e.g. ``[0]`` (COCO's person) to put
            an 80-class file into a ``NUM_CLASSES: 1`` model; ``None`` keeps all ``K``.

    Returns:
        ``(state_dict, unmapped)``: tensors under our names (class-specific predictors with
        ``len(classes) + 1`` classes, background first) and detectron2's names that have no
        counterpart here, in file order (``pixel_mean`` / ``pixel_std`` among them).
    """
    num_classes = _num_classes(model)
    if num_classes is None:  # no box classifier: the other predictors say how many classes
        for key, per in ((_BOX + ".weight", 4), (_MASK_D2 + ".weight", 1)):
            if key in model:
                num_classes = int(np.shape(model[key])[0]) // per
                break
    if classes is None:
        keep = list(range(num_classes or 0))
    else:
        keep = [int(c) for c in classes]
        bad = [c for c in keep if num_classes is None or not 0 <= c < num_classes]
        if bad or not keep:
            raise Detectron2WeightsError(
                f"classes {list(classes)}: the weights have {num_classes} classes "
                f"(indices 0..{(num_classes or 0) - 1})"
            )

    state: Dict[str, torch.Tensor] = {}
    unmapped: List[str] = []
    for name, value in model.items():
        ours = detectron2_name_to_multitask(name)
        if ours is None:
            unmapped.append(name)
            continue
        t = _to_tensor(name, value)
        if name.startswith(_CLS + "."):
            # detectron2: classes 0..K-1, then background; ours: background, then classes
            t = torch.cat([t[num_classes: num_classes + 1], t[keep]], dim=0)
        elif name.startswith(_BOX + "."):
            t = _class_rows(name, t, 4, num_classes, keep)
        elif name.startswith(_MASK_D2 + "."):
            t = _class_rows(name, t, 1, num_classes, keep)
        state[ours] = t
    return state, unmapped


def load_detectron2_pkl(path: str, classes: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Read ``path`` safely and convert it: ``{"model": state_dict, "__author__": str,
    "unmapped": [detectron2 names not loaded]}`` (what ``MultiTaskCheckpointer`` loads).

    ``classes`` as in :func:`detectron2_to_multitask`. Errors name the file.
    """
    path = os.fspath(path)
    data = read_detectron2_pkl(path)
    try:
        state, unmapped = detectron2_to_multitask(data["model"], classes)
    except Detectron2WeightsError as e:
        raise Detectron2WeightsError(f"{path}: {e}") from None
    author = data.get("__author__", "unknown")
    logger.info(
        "Read %d detectron2 arrays from '%s' (author: %s)", len(data["model"]), path, author
    )
    surprising = [n for n in unmapped if not IGNORED_NAMES.match(n)]
    if surprising:
        more = " ..." if len(surprising) > 10 else ""
        logger.warning(
            "%s: %d detectron2 names have no counterpart in this model and are not loaded: %s%s",
            path, len(surprising), ", ".join(surprising[:10]), more,
        )
    return {"model": state, "__author__": author, "unmapped": unmapped}

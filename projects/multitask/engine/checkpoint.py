"""Checkpointing: fvcore's ``Checkpointer`` with atomic writes, ``weights_only`` loading, the weight
formats a detection engineer starts from, and one load report.

fvcore writes checkpoints with a plain ``torch.save`` into the final path; a crash mid-write
leaves a truncated ``model_XXXXXXX.pth`` that ``last_checkpoint`` points to. Here every file is
written to a temporary name in the same directory and moved into place with ``os.replace``.
Files are read with ``torch.load(..., weights_only=True)``: a checkpoint is data, never code.

What ``load`` accepts (``MODEL.WEIGHTS``):

* our own checkpoints, including those written before the ROI heads took torchvision's names
  (``roi_heads.mask_convs``, ``mask_predictor_``, ``keypoint_head_``: renamed on load);
* torchvision detection models (``keypointrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, ...
  state dicts): ``backbone.body`` -> ``backbone.bottom_up`` and ``rpn`` -> ``proposal_generator``,
  every other name is already ours; a 91-class COCO box / mask predictor loaded into a
  person-only model keeps its background and person rows;
* torchvision ImageNet ResNets (``conv1.*``, ``layer1.*``, ``fc.*``): the backbone only;
* detectron2 model-zoo ``.pkl`` files (:mod:`.detectron2_weights`);
* an ``http(s)://`` URL of any of these, downloaded once into torch's hub cache.

Colour order is part of the weights: torchvision's files were trained on RGB, detectron2's and
ours (by default) on BGR. When the file's order differs from the model's ``INPUT.FORMAT``, the
input channels of ``conv1`` are reversed (and that is logged). Our checkpoints record their
order (``input_format``); files without the record are taken to match the model.

After every load one table says, per module, how many tensors were loaded, missing, unexpected
or of the wrong shape; warnings name a head the config enables that a detection checkpoint left
unfilled, and a file that fills less than half of the backbone is an error.
"""

import logging
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch
from fvcore.common.checkpoint import Checkpointer
from tabulate import tabulate

from ..utils.file_io import atomic_write

logger = logging.getLogger(__name__)

# Prefix under which a torchvision-named ResNet lives inside MultiTaskRCNN
_BACKBONE_PREFIX = "backbone.bottom_up."
# Names of checkpoints written before the ROI heads handed their parts to torchvision's RoIHeads
LEGACY_KEY_PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("roi_heads.mask_convs.", "roi_heads.mask_head."),
    ("roi_heads.mask_predictor_.", "roi_heads.mask_predictor."),
    ("roi_heads.keypoint_head_.convs.", "roi_heads.keypoint_head."),
    ("roi_heads.keypoint_head_.score_lowres.", "roi_heads.keypoint_predictor.kps_score_lowres."),
)
# torchvision's GeneralizedRCNN -> ours: the only two names that differ
TORCHVISION_KEY_PREFIXES: Tuple[Tuple[str, str], ...] = (
    ("backbone.body.", "backbone.bottom_up."),
    ("rpn.", "proposal_generator."),
)
# The heads a config can enable, by the prefixes of their parameters
HEAD_PREFIXES = {
    "box": ("roi_heads.box_head.", "roi_heads.box_predictor."),
    "mask": ("roi_heads.mask_head.", "roi_heads.mask_predictor."),
    "keypoint": ("roi_heads.keypoint_head.", "roi_heads.keypoint_predictor."),
}
_CONV1 = _BACKBONE_PREFIX + "conv1.weight"
# Rows of a (1 + C)-class predictor that COCO's person takes in torchvision's 91-class layout
_COCO_PERSON = 1


def is_torchvision_resnet_state_dict(state_dict: Dict[str, Any]) -> bool:
    """True for a classification ResNet state dict in torchvision's naming (ImageNet weights)."""
    return "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


def is_torchvision_detection_state_dict(state_dict: Dict[str, Any]) -> bool:
    """True for a torchvision GeneralizedRCNN state dict (``backbone.body.*``, ``rpn.*``)."""
    return any(k.startswith("backbone.body.") for k in state_dict) and any(
        k.startswith("rpn.") for k in state_dict
    )


def rename_prefixes(
    state_dict: Dict[str, Any], pairs: Sequence[Tuple[str, str]]
) -> "OrderedDict[str, Any]":
    """Replace the first matching ``old`` prefix of every key by its ``new`` prefix."""
    out: "OrderedDict[str, Any]" = OrderedDict()
    for k, v in state_dict.items():
        for old, new in pairs:
            if k.startswith(old):
                k = new + k[len(old):]
                break
        out[k] = v
    return out


def module_group(key: str) -> str:
    """The module a parameter name belongs to in the load report: two name components
    (``roi_heads.mask_head``, ``backbone.fpn``), one for top-level modules."""
    parts = key.split(".")
    if parts[0] in ("backbone", "roi_heads", "postprocessors") and len(parts) > 2:
        return ".".join(parts[:2])
    return parts[0] if len(parts) > 1 else "(top level)"


def download_weights(url: str) -> str:
    """Download ``url`` once into ``$TORCH_HOME/hub/checkpoints`` (torch's hub cache) with a
    progress bar and return the local path; later calls return the cached file."""
    name = os.path.basename(urlparse(url).path)
    if not name:
        raise ValueError(f"MODEL.WEIGHTS: cannot tell a file name from the URL '{url}'")
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, name)
    if not os.path.isfile(path):
        logger.info("Downloading %s to %s", url, path)
        try:
            torch.hub.download_url_to_file(url, path, progress=True)
        except Exception as e:  # noqa: BLE001 -- re-raised with the URL
            raise RuntimeError(f"MODEL.WEIGHTS: cannot download '{url}': {e}") from e
    else:
        logger.info("Using %s (cached download of %s)", path, url)
    return path


class MultiTaskCheckpointer(Checkpointer):
    """Saves ``model_XXXXXXX.pth`` + ``last_checkpoint`` atomically; loads with ``weights_only``.

    ``load`` reads every format listed in the module docstring, converts names and colour order,
    and logs one report (:meth:`load_report`). ``input_format`` (``"BGR"``/``"RGB"``) is the
    model's colour order; by default the model's ``input_format`` attribute (``INPUT.FORMAT``),
    else BGR.
    """

    def __init__(self, model: torch.nn.Module, save_dir: str = "", *,
                 input_format: Optional[str] = None, **checkpointables: Any):
        super().__init__(model, save_dir, **checkpointables)
        self.logger = logger  # under multitask's logger, which train_net.py prints and logs
        fmt = input_format or getattr(model, "input_format", None) or "BGR"
        if fmt not in ("BGR", "RGB"):
            raise ValueError(f"input_format must be 'BGR' or 'RGB', got '{fmt}'")
        self.input_format = fmt
        self._source: Dict[str, Any] = {}
        self.last_report: List[Dict[str, Any]] = []

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict(), "input_format": self.input_format}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    # ---- reading ---------------------------------------------------------------------------
    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            from .detectron2_weights import load_detectron2_pkl

            data = load_detectron2_pkl(filename)
            unmapped = data.pop("unmapped", [])
            if unmapped:
                self.logger.warning("%s: %d detectron2 names have no counterpart here and are "
                                    "skipped: %s", filename, len(unmapped), ", ".join(unmapped[:8]))
            self._source = {"file": filename, "kind": "detectron2 model zoo", "format": "BGR"}
            return data
        try:
            data = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
        except Exception as e:  # truncated / not a torch file / contains code objects
            raise RuntimeError(f"Cannot read checkpoint '{filename}': {e}") from e
        if not isinstance(data, dict):
            raise RuntimeError(f"Checkpoint '{filename}' holds a {type(data).__name__}, not a dict")
        fmt = data.pop("input_format", None)
        if "model" in data:
            kind = "multitask checkpoint"
            state = data["model"]
        else:
            state = data.get("state_dict", data)
            kind = "state dict"
            data = {"model": state}
        if not isinstance(state, dict):
            raise RuntimeError(f"Checkpoint '{filename}': 'model' holds a "
                               f"{type(state).__name__}, not a state dict")
        if state and all(k.startswith("module.") for k in state):  # saved from (D)DP
            state = OrderedDict((k[len("module."):], v) for k, v in state.items())
        if is_torchvision_resnet_state_dict(state):
            kind, fmt = "torchvision ImageNet ResNet", "RGB"
            state = OrderedDict(
                (_BACKBONE_PREFIX + k, v) for k, v in state.items() if not k.startswith("fc.")
            )
        elif is_torchvision_detection_state_dict(state):
            kind, fmt = "torchvision R-CNN", "RGB"
            state = rename_prefixes(state, TORCHVISION_KEY_PREFIXES)
        else:
            state = rename_prefixes(state, LEGACY_KEY_PREFIXES)
        data["model"] = state
        self._source = {"file": filename, "kind": kind, "format": fmt}
        return data

    def _load_model(self, checkpoint: Any):
        src = self._source or {"file": "(in memory)", "kind": "state dict", "format": None}
        self._source = {}
        state = checkpoint["model"]
        self._convert_ndarray_to_tensor(state)
        own = self.model.state_dict()
        # FrozenBatchNorm2d keeps no batch counter; nor does anything the model lacks
        for k in [k for k in state if k.endswith("num_batches_tracked") and k not in own]:
            del state[k]
        self._convert_colour_order(state, src)
        self._select_person_classes(state, own, src)
        self._fit_offset_refinement(state, own, src)
        self._check_backbone_filled(state, own, src)
        incompatible = super()._load_model(checkpoint)
        wrong = {k for k, *_ in incompatible.incorrect_shapes}
        loaded = [k for k in state if k in own and k not in wrong]
        self._report(src, own, loaded, incompatible)
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        """fvcore's own list is replaced by :meth:`_report`'s table."""

    def _convert_colour_order(self, state: Dict[str, torch.Tensor], src) -> None:
        fmt = src.get("format")
        if fmt is None or fmt == self.input_format or _CONV1 not in state:
            return
        w = state[_CONV1]
        if w.dim() != 4 or w.shape[1] != 3:
            return
        state[_CONV1] = w.flip(1)
        self.logger.info(
            "'%s' (%s) was trained on %s input and this model reads %s (INPUT.FORMAT): reversed "
            "the input channels of %s", src["file"], src["kind"], fmt, self.input_format, _CONV1
        )

    def _select_person_classes(self, state: Dict[str, torch.Tensor], own, src) -> None:
        """COCO's 91-class torchvision predictors (or detectron2's 80-class ones, which the
        conversion lays out the same way: background first, person next) into a person-only
        (background + person) model: keep rows 0 and 1 of the classifier, their boxes and their
        mask channels."""
        rows = {
            "roi_heads.box_predictor.cls_score.weight": 1,
            "roi_heads.box_predictor.cls_score.bias": 1,
            "roi_heads.box_predictor.bbox_pred.weight": 4,
            "roi_heads.box_predictor.bbox_pred.bias": 4,
            "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
            "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
        }
        cls_key = "roi_heads.box_predictor.cls_score.weight"
        if (src.get("kind") not in ("torchvision R-CNN", "detectron2 model zoo")
                or cls_key not in state or cls_key not in own
                or own[cls_key].shape[0] != 2 or state[cls_key].shape[0] <= 2):
            return
        n_classes = state[cls_key].shape[0]
        for k, per in rows.items():
            if k in state and k in own and state[k].shape[0] == per * n_classes:
                keep = torch.cat([torch.arange(per), torch.arange(per) + per * _COCO_PERSON])
                state[k] = state[k][keep]
        self.logger.info("'%s' predicts %d classes (with the background); kept the background "
                         "and COCO's person (row %d) for this person-only model", src["file"],
                         n_classes, _COCO_PERSON)

    def _fit_offset_refinement(self, state: Dict[str, torch.Tensor], own, src) -> None:
        """A keypoint predictor of K heatmaps (torchvision, detectron2, or ours without offset
        refinement) into one that also predicts 2K offset maps: the heatmap channels are loaded
        and the offset channels stay at zero, so the refined heatmaps equal the file's."""
        prefix = "roi_heads.keypoint_predictor.kps_score_lowres."
        w_key, b_key = prefix + "weight", prefix + "bias"
        if w_key not in state or w_key not in own:
            return
        w, own_w = state[w_key], own[w_key]
        k = w.shape[1]  # ConvTranspose2d: (in, out, kh, kw)
        if (own_w.shape[1] != 3 * k or own_w.shape[0] != w.shape[0]
                or own_w.shape[2:] != w.shape[2:]):
            return
        new_w = torch.zeros_like(own_w)
        new_w[:, :k] = w
        state[w_key] = new_w
        if b_key in state and b_key in own and state[b_key].shape[0] == k:
            new_b = torch.zeros_like(own[b_key])
            new_b[:k] = state[b_key]
            state[b_key] = new_b
        self.logger.info("'%s': its %d keypoint heatmap channels fill %s; the %d offset channels "
                         "stay at zero (refined heatmaps = the file's heatmaps)", src["file"], k,
                         w_key, 2 * k)

    def _check_backbone_filled(self, state: Dict[str, torch.Tensor], own, src) -> None:
        backbone = [k for k in own if k.startswith(_BACKBONE_PREFIX)
                    and not k.endswith("num_batches_tracked")]
        if not backbone:
            return
        filled = [k for k in backbone
                  if k in state and tuple(state[k].shape) == tuple(own[k].shape)]
        if 2 * len(filled) < len(backbone):
            first = ", ".join(list(state)[:6]) or "(none)"
            raise RuntimeError(
                f"Checkpoint '{src['file']}' ({src['kind']}) fills {len(filled)} of the "
                f"{len(backbone)} backbone tensors of this model: it does not fit "
                f"(MODEL.RESNETS.DEPTH, WIDTH_MULT?). Its first keys: {first}"
            )

    # ---- the report ------------------------------------------------------------------------
    def _report(self, src, own, loaded: Iterable[str], incompatible) -> None:
        loaded = set(loaded)
        missing = {k for k in incompatible.missing_keys if not k.endswith("num_batches_tracked")}
        unexpected = set(incompatible.unexpected_keys)
        wrong = {k for k, *_ in incompatible.incorrect_shapes}
        groups: "OrderedDict[str, Dict[str, int]]" = OrderedDict()
        for k in list(own) + sorted(unexpected):
            if k.endswith("num_batches_tracked"):
                continue
            g = groups.setdefault(module_group(k), dict(model=0, loaded=0, missing=0,
                                                        unexpected=0, shape=0))
            if k in own:
                g["model"] += 1
            g["loaded"] += k in loaded
            g["missing"] += k in missing and k not in wrong
            g["unexpected"] += k in unexpected
            g["shape"] += k in wrong
        self.last_report = [{"module": m, **c} for m, c in groups.items()]
        rows = [[r["module"], r["model"], r["loaded"], r["missing"] or "", r["unexpected"] or "",
                 r["shape"] or ""] for r in self.last_report]
        self.logger.info(
            "Loaded '%s' (%s): %d of %d tensors\n%s", src["file"], src["kind"], len(loaded),
            sum(r["model"] for r in self.last_report),
            tabulate(rows, headers=["module", "in model", "loaded", "missing", "unexpected",
                                    "wrong shape"], tablefmt="pipe"),
        )
        for k, shape_ckpt, shape_model in incompatible.incorrect_shapes:
            self.logger.warning("'%s': %s has shape %s in the file and %s in the model; it keeps "
                                "its initialisation", src["file"], k, tuple(shape_ckpt),
                                tuple(shape_model))
        if unexpected:
            self.logger.warning("'%s': %d tensors have no place in this model, e.g. %s",
                                src["file"], len(unexpected), ", ".join(sorted(unexpected)[:5]))
        offsets = [k for k in missing if ".conv_offset." in k]
        if offsets:
            self.logger.info("'%s' has no offset branches for %d deformable conv tensors: they "
                             "start at zero offsets, i.e. as the plain convs", src["file"],
                             len(offsets))
        if src["kind"] == "torchvision ImageNet ResNet":
            self.logger.info("'%s' is an ImageNet classifier: it fills the backbone only, by "
                             "design; the FPN, RPN, heads and post-processors start from their "
                             "initialisation", src["file"])
            return
        for head, prefixes in HEAD_PREFIXES.items():
            keys = [k for k in own if k.startswith(prefixes) and ".conv_offset." not in k]
            if not keys:
                continue  # not enabled in this config
            got = [k for k in keys if k in loaded]
            if len(got) < len(keys):
                self.logger.warning(
                    "'%s' leaves %d of the %d tensors of the %s head (%s) at their "
                    "initialisation%s", src["file"], len(keys) - len(got), len(keys), head,
                    ", ".join(p.rstrip(".") for p in prefixes),
                    ": it is not in the file" if not got else "",
                )

    # ---- entry points ----------------------------------------------------------------------
    def load(self, path: str, checkpointables=None) -> Dict[str, Any]:
        """Load ``path`` (a file or an ``http(s)://`` URL; see the module docstring); a missing
        file is a ``FileNotFoundError`` naming it."""
        if path and path.startswith(("http://", "https://")):
            path = download_weights(path)
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file '{path}' does not exist")
        return super().load(path, checkpointables=checkpointables)

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Resume from ``last_checkpoint`` when ``resume`` and it exists, else load ``path``."""
        if resume and self.has_checkpoint():
            path = self.get_checkpoint_file()
            return self.load(path)
        if path:
            return self.load(path, checkpointables=[])
        return {}

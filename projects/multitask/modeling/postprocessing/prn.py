"""Pose Residual Network (MultiPoseNet, Kocabas et al. 2018) as a post-processor.

The PRN assigns keypoints to people. For one person box, its input is a ``(K, H, W)`` stack of
heatmaps holding every keypoint of *every* person inside the enlarged box
(:mod:`.prn_codec` draws and reads them, with its one cell convention); its output is a
probability map per keypoint type whose peak is where that box's own keypoint is.

Two layer stacks (``MODEL.PRN.VARIANT``), both residual MLPs on the flattened input ``x``::

    "residual_mlp" (default):  Linear(K H W, hidden) -> ReLU -> Dropout -> Linear(hidden, K H W)
                               -> + x -> softmax over the H*W cells of each keypoint channel
    "multiposenet":            Linear(K H W, hidden) -> ReLU -> Dropout -> Linear(hidden, K H W)
                               -> ReLU -> + x -> one softmax over all K*H*W cells

"multiposenet" is the original Keras model (Dense 1024 -> Dropout 0.5 -> Dense with ReLU ->
residual add -> softmax over the flattened output). Its joint softmax restricted to one channel
and renormalised is the per-channel softmax of the same logits, so both variants decode the same
way (:meth:`PoseResidualNetwork.predict`, per-channel probabilities); they differ in the ReLU and
in what the loss normalises.

Training loss (:func:`prn_loss`), MultiPoseNet's formulation: binary cross-entropy between the
*softmax-activated* output ``p`` and the target heatmap ``t`` of the box's own keypoints (Gaussian,
peak 1, same ``sigma``), summed over the cells. With the per-channel softmax it is averaged over
the channels whose keypoint is labelled and inside the box (an all-zero target cannot be reached
by a softmax, so unlabelled channels are left out); with the joint softmax (``joint=True``) over
the samples. ``log p`` is computed as ``log_softmax`` and ``log(1 - p)`` as ``log1p(-p)`` clamped,
so the loss is stable. ``kind="ce"`` gives the soft-target cross-entropy ``-sum t' log p`` with
``t' = t / sum t`` instead.

Post-processing rule (:class:`PoseResidualNetwork`.forward), per image with ``R`` detections:

1. sources: the keypoints with score > ``MODEL.PRN.KEYPOINT_THRESHOLD`` of the detections whose box
   score is >= ``MODEL.PRN.SOURCE_SCORE_THRESH``; each box additionally always gets its own
   keypoints;
2. each box's input is encoded, the PRN predicts, and each channel is decoded to its peak cell
   and the peak probability (the *PRN confidence*);
3. the decoded point is snapped to the nearest source keypoint of the same type inside the enlarged
   box (or the box's own keypoint) within ``MODEL.PRN.SNAP_RADIUS`` cells (default: any
   distance), so the output is as precise as the keypoint head and the PRN only chooses *which*
   keypoint; without a candidate the peak cell's centre is kept;
4. where the PRN confidence is < ``MODEL.PRN.MIN_CONFIDENCE`` the keypoint head's keypoint is kept
   unchanged (an untrained PRN, whose output is near-uniform, changes nothing);
5. ``pred_keypoints[..., 2]`` (the score) stays the keypoint head's score for that box and
   keypoint type; the PRN confidence is stored in a new field ``prn_confidence (R, K)`` and the
   keypoint head's keypoints in ``pred_keypoints_before_prn (R, K, 3)`` (what
   ``TEST.EVAL_KEYPOINTS_BEFORE_PRN`` scores).
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ...config.configurable import configurable
from ...utils.file_io import atomic_write
from .prn_codec import decode_prn_output, encode_prn_inputs, snap_to_candidates
from .registry import POSTPROCESSOR_REGISTRY
from .weights_io import load_state_dict_checked, read_weights_file

__all__ = [
    "prn_loss",
    "PoseResidualNetwork",
    "PoseResidualNetworkPostprocessor",
    "read_prn_weights",
    "load_prn_weights",
    "load_prn_state",
    "PRN_VARIANTS",
    "PRN_INFERENCE_DTYPES",
]

# MODEL.PRN.VARIANT values (module docstring)
PRN_VARIANTS = ("residual_mlp", "multiposenet")
# MODEL.PRN.INFERENCE_DTYPE: the fully connected layers' storage at inference
PRN_INFERENCE_DTYPES = ("float32", "float16")


def prn_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    kind: str = "bce",
    eps: float = 1e-6,
    joint: bool = False,
) -> torch.Tensor:
    """Loss of PRN logits ``(B, K, H, W)`` against target heatmaps ``(B, K, H, W)`` (peak 1).

    ``kind="bce"``: binary cross-entropy between the softmax output and the target, summed over
    cells (MultiPoseNet). ``kind="ce"``: soft-target cross-entropy with the target normalised to
    sum 1. Per-channel softmax over ``H*W`` (default): averaged over the valid channels; ``valid
    (B, K)`` bool marks the channels with a target keypoint (default: channels whose target is not
    all zero). ``joint=True`` (the "multiposenet" variant): one softmax over all ``K*H*W`` cells of
    a sample, averaged over the samples with any target (``valid`` then only drops channels from
    the target).
    """
    B, K = logits.shape[:2]
    t = target.reshape(B, K, -1).float()
    if valid is None:
        valid = t.amax(dim=2) > 0
    valid = valid.to(logits.device).float()
    if joint:
        lp = F.log_softmax(logits.reshape(B, -1).float(), dim=1).reshape(B, K, -1)
    else:
        lp = F.log_softmax(logits.reshape(B, K, -1).float(), dim=2)
    if kind == "bce":
        p = lp.exp()
        log1mp = torch.log1p(-p.clamp(max=1.0 - eps))
        per = -(t * lp.clamp(min=math.log(eps)) + (1 - t) * log1mp)
    elif kind == "ce":
        norm_dims = (1, 2) if joint else (2,)
        tn = t / t.sum(dim=norm_dims, keepdim=True).clamp(min=eps)
        per = -(tn * lp)
    else:
        raise ValueError(f"prn_loss: unknown kind '{kind}', expected 'bce' or 'ce'")
    if joint:
        samples = (valid.sum(1) > 0).float()
        return (per.sum((1, 2)) * samples).sum() / samples.sum().clamp(min=1.0)
    return (per.sum(2) * valid).sum() / valid.sum().clamp(min=1.0)


# What a PRN weights file records next to its state dict, the config key each one must match,
# and how the model holds it
_WEIGHTS_LAYOUT = (
    ("variant", "MODEL.PRN.VARIANT", "variant"),
    ("num_keypoints", "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "num_keypoints"),
    ("heatmap_size", "MODEL.PRN.HEATMAP_SIZE", "heatmap_size"),
    ("hidden_dim", "MODEL.PRN.HIDDEN_DIM", "hidden_dim"),
    ("margin", "MODEL.PRN.BOX_MARGIN", "margin"),
    ("sigma", "MODEL.PRN.SIGMA", "sigma"),
)


def read_prn_weights(path: str, key: str = "MODEL.PRN.WEIGHTS") -> Tuple[Dict, Dict]:
    """``(state_dict, meta)`` of a PRN weights file; errors name ``key`` and the file.

    Accepts a plain state dict or a dict with ``"state_dict"`` (as :meth:`PoseResidualNetwork.save`
    writes; its other entries, e.g. ``heatmap_size`` and ``hidden_dim``, are ``meta``)."""
    obj = read_weights_file(path, key, "PRN")
    meta: Dict = {}
    if isinstance(obj, dict) and "state_dict" in obj:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise RuntimeError(f"{key}: '{path}' holds a {type(obj).__name__}, not a state dict")
    return obj, meta


def load_prn_weights(module: nn.Module, path: str, key: str = "MODEL.PRN.WEIGHTS") -> Dict:
    """Load a PRN weights file into ``module``; returns the file's other entries.

    Raises ``FileNotFoundError`` when the file does not exist, ``ValueError`` naming the config
    key to change when the file records another variant, keypoint count, heatmap size, hidden
    width, box margin or Gaussian sigma than the model's, and ``RuntimeError`` listing
    missing/unexpected keys and shape mismatches when the tensors do not fit.
    """
    sd, meta = read_prn_weights(path, key)
    return load_prn_state(module, sd, meta, path, key)


def load_prn_state(module: nn.Module, sd: Dict, meta: Dict, path: str,
                   key: str = "MODEL.PRN.WEIGHTS") -> Dict:
    """:func:`load_prn_weights` for a file already read with :func:`read_prn_weights`."""
    meta = {"variant": "residual_mlp", **meta}  # files from before MODEL.PRN.VARIANT
    for field, cfg_key, attr in _WEIGHTS_LAYOUT:
        if field not in meta:
            continue
        theirs, ours = meta[field], getattr(module, attr)
        if isinstance(ours, tuple):
            theirs, ours = [int(v) for v in theirs], list(ours)
        elif isinstance(ours, float):
            theirs = float(theirs)
            if abs(theirs - ours) <= 1e-6 * max(1.0, abs(ours)):
                continue
        if theirs != ours:
            raise ValueError(
                f"{key}: PRN weights file '{path}' was trained with {field} {theirs}, but "
                f"{cfg_key} gives the model {ours}; set {cfg_key} to {theirs} or use PRN weights "
                f"trained for {ours}"
            )
    load_state_dict_checked(module, sd, path, key, "PRN")
    module.weights_source = path
    return meta


class PoseResidualNetwork(nn.Module):
    """The PRN, usable as a plain network and as the registered post-processor.

    ``PoseResidualNetwork(cfg)`` reads ``MODEL.PRN.*`` (:meth:`from_config`; loads
    ``MODEL.PRN.WEIGHTS`` if set); keyword arguments override cfg values, and
    ``PoseResidualNetwork(heatmap_size=(28, 18), hidden_dim=128)`` without a cfg takes the
    other values from the default config (:func:`multitask.config.configurable`).

    Network calls: :meth:`forward_logits` ``(B, K, H, W) -> (B, K, H, W)`` logits;
    :meth:`predict` -> softmax probabilities over ``H * W`` per channel; :meth:`loss`.
    ``weights_source`` says where the weights came from ("" while untrained).
    Post-processor call: ``forward(batched_inputs, results) -> results`` (see module docstring).
    """

    @configurable
    def __init__(
        self,
        *,
        heatmap_size: Sequence[int],
        hidden_dim: int,
        dropout: float,
        margin: float,
        sigma: float,
        min_confidence: float,
        score_thresh: float,
        source_score_thresh: float,
        snap_radius: float,
        num_keypoints: int,
        variant: str,
        weights: str = "",
        inference_dtype: str = "float32",
    ):
        super().__init__()
        self.heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
        self.hidden_dim = int(hidden_dim)
        self.dropout_p = float(dropout)
        self.margin = float(margin)
        self.sigma = float(sigma)
        self.min_confidence = float(min_confidence)
        self.num_keypoints = int(num_keypoints)
        self.variant = str(variant)
        if self.variant not in PRN_VARIANTS:
            raise ValueError(
                f"MODEL.PRN.VARIANT: unknown '{self.variant}', expected one of {PRN_VARIANTS}"
            )
        if inference_dtype not in PRN_INFERENCE_DTYPES:
            raise ValueError(f"MODEL.PRN.INFERENCE_DTYPE: '{inference_dtype}' is not one of "
                             f"{PRN_INFERENCE_DTYPES}")
        self.inference_dtype = getattr(torch, inference_dtype)
        self._float32_state = None  # see set_inference_precision
        self.weights_source = ""
        self.score_thresh = float(score_thresh)
        self.source_box_score_thresh = float(source_score_thresh)
        self.snap_radius = math.inf if snap_radius < 0 else float(snap_radius)

        H, W = self.heatmap_size
        d = self.num_keypoints * H * W
        self.fc1 = nn.Linear(d, self.hidden_dim)
        self.dropout = nn.Dropout(self.dropout_p)
        self.fc2 = nn.Linear(self.hidden_dim, d)

        if weights:
            load_prn_weights(self, weights)

    @classmethod
    def from_config(cls, cfg) -> Dict:
        """The constructor's arguments from ``MODEL.PRN.*`` (``weights``: ``MODEL.PRN.WEIGHTS``)
        and ``MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS``."""
        p = cfg.MODEL.PRN
        return {
            "heatmap_size": tuple(p.HEATMAP_SIZE),
            "hidden_dim": p.HIDDEN_DIM,
            "dropout": p.DROPOUT,
            "margin": p.BOX_MARGIN,
            "sigma": p.SIGMA,
            "min_confidence": p.MIN_CONFIDENCE,
            "score_thresh": p.KEYPOINT_THRESHOLD,
            "source_score_thresh": p.SOURCE_SCORE_THRESH,
            "snap_radius": p.SNAP_RADIUS,
            "num_keypoints": cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS,
            "variant": p.VARIANT,
            "weights": p.WEIGHTS,
            "inference_dtype": p.INFERENCE_DTYPE,
        }

    def set_inference_precision(self, enabled: bool, keep_float32: bool = False) -> None:
        """Store the two fully connected layers in ``inference_dtype`` (``enabled``) or in
        float32. :class:`MultiTaskRCNN` calls it when it enters eval / training mode: at the
        default 56x36 maps the layers are 70 M parameters, 268 MB in float32, 134 MB in float16
        (the same assignment on coco-mini, see ``tools/eval_prn.py --dtype``).

        ``keep_float32`` (a model that trains, evaluated in between) keeps the float32 tensors
        aside, and going back restores them exactly; without it (inference only) they are
        freed, and going back gives the float16 values in float32."""
        layers = (self.fc1, self.fc2)
        if enabled and self.fc1.weight.dtype == torch.float32 \
                and self.inference_dtype != torch.float32:
            if keep_float32:
                self._float32_state = [(p, p.data) for m in layers for p in m.parameters()]
            for m in layers:
                m.to(self.inference_dtype)
        elif not enabled and self.fc1.weight.dtype != torch.float32:
            kept = self._float32_state
            if kept is not None:
                for p, data in kept:
                    p.data = data
            else:
                for m in layers:
                    m.to(torch.float32)
        if not enabled:
            self._float32_state = None

    # ---- network ------------------------------------------------------------------------
    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` of input heatmaps ``(B, K, H, W)`` (residual MLP)."""
        B = x.shape[0]
        flat = x.reshape(B, -1).float()
        dtype = self.fc1.weight.dtype  # float16 at inference (set_inference_precision)
        out = self.fc2(self.dropout(F.relu(self.fc1(flat.to(dtype))))).float()
        if self.variant == "multiposenet":
            out = F.relu(out)
        return (out + flat).reshape(x.shape)

    def loss(self, logits: torch.Tensor, target: torch.Tensor, kind: str = "bce") -> torch.Tensor:
        """:func:`prn_loss` with this variant's softmax (per channel, or joint)."""
        return prn_loss(logits, target, kind=kind, joint=self.variant == "multiposenet")

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities over the ``H * W`` cells of each channel, ``(B, K, H, W)``."""
        logits = self.forward_logits(x)
        B, K = logits.shape[:2]
        return F.softmax(logits.reshape(B, K, -1), dim=2).reshape(logits.shape)

    def encode(self, boxes, keypoints_all, own_keypoints=None) -> torch.Tensor:
        return encode_prn_inputs(
            boxes,
            keypoints_all,
            self.heatmap_size,
            self.margin,
            self.sigma,
            self.score_thresh,
            own_keypoints,
        )

    def extra_config(self) -> Dict:
        """What a weights file stores next to the state dict (see ``tools/train_prn.py``)."""
        return {
            "heatmap_size": list(self.heatmap_size),
            "hidden_dim": self.hidden_dim,
            "margin": self.margin,
            "sigma": self.sigma,
            "num_keypoints": self.num_keypoints,
            "variant": self.variant,
        }

    def save(self, path: str, **extra) -> None:
        """Write the weights and :meth:`extra_config` to ``path`` atomically (a temporary file
        renamed into place), so an interrupted save never leaves half a file."""
        obj = {"state_dict": self.state_dict(), **self.extra_config(), **extra}
        atomic_write(path, lambda f: torch.save(obj, f))

    @torch.no_grad()
    def assign(
        self,
        boxes: torch.Tensor,
        keypoints: torch.Tensor,
        box_scores: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """PRN keypoints for ``R`` boxes given each box's keypoints ``(R, 17, 3)``.

        Returns ``(R, 17, 3)`` (x, y; score = the input's score) and the PRN confidence
        ``(R, 17)``, following the rule of the module docstring.
        """
        R, K = keypoints.shape[:2]
        if R == 0:
            return keypoints.clone(), keypoints.new_zeros((0, K))
        was_training = self.training
        self.eval()
        try:
            device = self.fc1.weight.device
            boxes = boxes.to(device).float()
            kps = keypoints.to(device).float()
            if box_scores is None:
                sources = kps
            else:
                sources = kps[box_scores.to(device) >= self.source_box_score_thresh]
            x = self.encode(boxes, sources, own_keypoints=kps)
            probs = self.predict(x)
            dec = decode_prn_output(probs, boxes, self.margin)
            xy, _ = snap_to_candidates(
                dec,
                boxes,
                sources,
                self.heatmap_size,
                self.margin,
                self.snap_radius,
                self.score_thresh,
                own_candidates=kps,
            )
            conf = dec[..., 2]
            keep_head = conf < self.min_confidence
            xy = torch.where(keep_head[..., None], kps[..., :2], xy)
            out = torch.cat([xy, kps[..., 2:3]], dim=2).to(keypoints.dtype)
            return out.to(keypoints.device), conf.to(keypoints.device)
        finally:
            self.train(was_training)

    # ---- post-processor -----------------------------------------------------------------
    def forward(self, batched_inputs: List[dict], results: List) -> List:
        for inst in results:
            if not inst.has("pred_keypoints"):
                continue
            kps = inst.pred_keypoints
            K = kps.shape[1] if kps.dim() == 3 else self.num_keypoints
            if len(inst) == 0:
                inst.prn_confidence = kps.new_zeros((0, K))
                inst.pred_keypoints_before_prn = kps
                continue
            boxes = inst.pred_boxes
            boxes = getattr(boxes, "tensor", boxes)
            scores = inst.scores if inst.has("scores") else None
            new_kps, conf = self.assign(boxes, kps, scores)
            inst.pred_keypoints_before_prn = kps
            inst.pred_keypoints = new_kps
            inst.prn_confidence = conf
        return results


POSTPROCESSOR_REGISTRY.register(PoseResidualNetwork)
# The registered post-processor is the network class itself (registry name "PoseResidualNetwork")
PoseResidualNetworkPostprocessor = PoseResidualNetwork

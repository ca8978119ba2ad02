"""Pose Residual Network (MultiPoseNet, Kocabas et al. 2018) as a post-processor.

The PRN assigns keypoints to people. For one person box, its input is a ``(17, H, W)`` stack of
heatmaps (MultiPoseNet: ``H x W = 56 x 36``) drawn over the box enlarged by ``margin`` of its size
on every side, with a Gaussian peak (std ``sigma`` heatmap cells, peak 1, peaks of one channel
max-combined) for every keypoint of *every* person that falls inside it. Its output is, per
keypoint channel, a probability map (softmax over the ``H * W`` cells) whose peak is where that
box's own keypoint is. The network is a residual MLP::

    x (17, H, W) -> flatten -> Linear(17 H W, hidden) -> ReLU -> Dropout -> Linear(hidden, 17 H W)
      -> + flatten(x)  (residual)  -> view (17, H*W) -> softmax over H*W per channel

Coordinates (encode and decode are exact inverses up to the cell quantisation):
the enlarged box is ``[x0 - m w, y0 - m h, x1 + m w, y1 + m h]``; its cells are ``cw = W_box / W``
wide and ``ch = H_box / H`` high; a point ``(x, y)`` lies at continuous cell coordinates
``u = (x - ex0) / cw - 0.5``, ``v = (y - ey0) / ch - 0.5`` (cell centres at integers), and cell
``(i, j)`` decodes to ``(ex0 + (j + 0.5) cw, ey0 + (i + 0.5) ch)``. A lone keypoint therefore comes
back within half a cell of where it was.

Training loss (:func:`prn_loss`), MultiPoseNet's formulation: binary cross-entropy between the
*softmax-activated* output ``p`` and the target heatmap ``t`` of the box's own keypoints (Gaussian,
peak 1, same ``sigma``), summed over the ``H * W`` cells of a channel and averaged over the channels
whose keypoint is labelled and inside the box (an all-zero target cannot be reached by a softmax,
so unlabelled channels are left out). ``log p`` is computed as ``log_softmax`` and
``log(1 - p)`` as ``log1p(-p)`` clamped, so the loss is stable. ``kind="ce"`` gives the
soft-target cross-entropy ``-sum t' log p`` with ``t' = t / sum t`` instead.

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
   keypoint type; the PRN confidence is stored in a new field ``prn_confidence (R, 17)``.
"""

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .registry import POSTPROCESSOR_REGISTRY

__all__ = [
    "enlarge_boxes",
    "encode_prn_input",
    "encode_prn_inputs",
    "decode_prn_output",
    "snap_to_candidates",
    "prn_loss",
    "PoseResidualNetwork",
    "PoseResidualNetworkPostprocessor",
    "load_prn_weights",
    "KEYPOINT_SCORE_THRESH",
    "SOURCE_BOX_SCORE_THRESH",
    "SNAP_RADIUS",
]

# Defaults of the functions below and of MODEL.PRN.KEYPOINT_THRESHOLD / SOURCE_SCORE_THRESH /
# SNAP_RADIUS (config/defaults.py).
# Keypoints with score (or COCO visibility) above this are drawn into the PRN input.
KEYPOINT_SCORE_THRESH = 0.05
# Detections with a box score below this contribute their keypoints only to their own box.
SOURCE_BOX_SCORE_THRESH = 0.3
# The decoded PRN peak is snapped to the nearest candidate keypoint (of the same type, inside the
# enlarged box) within this many cells; inf: always, so the PRN picks one of the detected
# keypoints; 0 disables snapping. (In the config, a negative MODEL.PRN.SNAP_RADIUS means inf.)
SNAP_RADIUS = float("inf")
# Elements of the (chunk, P, 17, H, W) rendering tensor per chunk, to bound memory
_RENDER_CHUNK_ELEMENTS = 1 << 25


def enlarge_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """Boxes ``(R, 4)`` XYXY enlarged by ``margin`` of their width/height on every side.

    Widths and heights below 1 pixel are treated as 1 pixel.
    """
    boxes = boxes.float()
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    hw, hh = w * (0.5 + margin), h * (0.5 + margin)
    return torch.stack([cx - hw, cy - hh, cx + hw, cy + hh], dim=1)


def _cell_coords(
    keypoints: torch.Tensor, ext: torch.Tensor, heatmap_size: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Continuous cell coordinates ``u`` (x) and ``v`` (y) of keypoints ``(R, P, K, >=2)``."""
    H, W = heatmap_size
    ex0, ey0 = ext[:, 0, None, None], ext[:, 1, None, None]
    cw = ((ext[:, 2] - ext[:, 0]) / W)[:, None, None]
    ch = ((ext[:, 3] - ext[:, 1]) / H)[:, None, None]
    u = (keypoints[..., 0] - ex0) / cw - 0.5
    v = (keypoints[..., 1] - ey0) / ch - 0.5
    return u, v


def _render(
    boxes: torch.Tensor,
    keypoints: torch.Tensor,
    heatmap_size: Tuple[int, int],
    margin: float,
    sigma: float,
    score_thresh: float,
) -> torch.Tensor:
    """Heatmaps ``(R, K, H, W)`` of per-box keypoint sets ``(R, P, K, 3)`` (max over P)."""
    H, W = heatmap_size
    R, P, K = keypoints.shape[:3]
    device = keypoints.device
    out = torch.zeros((R, K, H, W), dtype=torch.float32, device=device)
    if R == 0 or P == 0:
        return out
    ext = enlarge_boxes(boxes.to(device), margin)
    u, v = _cell_coords(keypoints.float(), ext, heatmap_size)
    valid = (
        (keypoints[..., 2] > score_thresh)
        & (u >= -0.5)
        & (u <= W - 0.5)
        & (v >= -0.5)
        & (v <= H - 0.5)
    )
    xs = torch.arange(W, dtype=torch.float32, device=device)
    ys = torch.arange(H, dtype=torch.float32, device=device)
    inv = -0.5 / float(sigma) ** 2
    gx = torch.exp((xs - u[..., None]) ** 2 * inv) * valid[..., None]  # (R, P, K, W)
    gy = torch.exp((ys - v[..., None]) ** 2 * inv)  # (R, P, K, H)
    step = max(1, _RENDER_CHUNK_ELEMENTS // max(1, P * K * H * W))
    for s in range(0, R, step):
        g = gy[s : s + step, :, :, :, None] * gx[s : s + step, :, :, None, :]
        out[s : s + step] = g.amax(dim=1)
    return out


def encode_prn_inputs(
    boxes: torch.Tensor,
    keypoints_all: torch.Tensor,
    heatmap_size: Sequence[int] = (56, 36),
    margin: float = 0.1,
    sigma: float = 1.0,
    score_thresh: float = KEYPOINT_SCORE_THRESH,
    own_keypoints: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Encode the keypoints of all people into every box: ``(R, 17, H, W)``.

    Args:
        boxes: ``(R, 4)`` XYXY boxes in image coordinates.
        keypoints_all: ``(P, 17, 3)`` x, y, and COCO visibility or score, of all people of the
            image; a keypoint is drawn where its third value is > ``score_thresh`` and it lies
            inside the box enlarged by ``margin``.
        heatmap_size: ``(H, W)`` of the heatmaps.
        sigma: std of the Gaussian peaks in heatmap cells (peak value 1, max-combined).
        own_keypoints: optional ``(R, 17, 3)``; box ``r`` additionally gets ``own_keypoints[r]``.
    """
    heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
    R = boxes.shape[0]
    kps = keypoints_all.float()
    if own_keypoints is not None:
        own = own_keypoints.float().to(kps.device)[:, None]
        kps = torch.cat([kps[None].expand(R, -1, -1, -1), own], dim=1)
    else:
        kps = kps[None].expand(R, -1, -1, -1)
    return _render(boxes, kps, heatmap_size, margin, sigma, score_thresh)


def encode_prn_input(
    keypoints_all: torch.Tensor,
    box: torch.Tensor,
    heatmap_size: Sequence[int] = (56, 36),
    margin: float = 0.1,
    sigma: float = 1.0,
    score_thresh: float = KEYPOINT_SCORE_THRESH,
) -> torch.Tensor:
    """Encode the keypoints ``(P, 17, 3)`` of all people into one box ``(4,)``: ``(17, H, W)``."""
    box = torch.as_tensor(box, dtype=torch.float32).reshape(1, 4)
    return encode_prn_inputs(box, keypoints_all, heatmap_size, margin, sigma, score_thresh)[0]


def decode_prn_output(
    probs: torch.Tensor, boxes: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Peaks of the PRN output ``(R, 17, H, W)`` in image coordinates: ``(R, 17, 3)``.

    Returns x, y (centre of the peak cell of the box enlarged by ``margin``, the same margin as
    the encoding) and the peak value (the PRN confidence for softmax probabilities).
    """
    R, K, H, W = probs.shape
    if R == 0:
        return probs.new_zeros((0, K, 3))
    conf, idx = probs.reshape(R, K, H * W).max(dim=2)
    i = torch.div(idx, W, rounding_mode="floor").float()
    j = (idx % W).float()
    ext = enlarge_boxes(boxes.to(probs.device), margin)
    cw = ((ext[:, 2] - ext[:, 0]) / W)[:, None]
    ch = ((ext[:, 3] - ext[:, 1]) / H)[:, None]
    x = ext[:, 0, None] + (j + 0.5) * cw
    y = ext[:, 1, None] + (i + 0.5) * ch
    return torch.stack([x, y, conf.float()], dim=2)


def snap_to_candidates(
    decoded: torch.Tensor,
    boxes: torch.Tensor,
    candidates: torch.Tensor,
    heatmap_size: Sequence[int] = (56, 36),
    margin: float = 0.1,
    radius: float = SNAP_RADIUS,
    score_thresh: float = KEYPOINT_SCORE_THRESH,
    own_candidates: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Move decoded points ``(R, 17, >=2)`` onto the nearest candidate keypoint of the same type.

    ``candidates (P, 17, 3)`` with third value > ``score_thresh`` inside the box enlarged by
    ``margin`` (plus ``own_candidates (R, 17, 3)`` per box, wherever they are); the distance is
    measured in the box's heatmap cells and a point moves only when a candidate is within
    ``radius`` cells (``inf``: always, if there is a candidate). Returns the new ``(R, 17, 2)``
    x, y and the index
    ``(R, 17)`` of the candidate used (``-1``: none; ``P``: the box's own keypoint).
    """
    heatmap_size = (int(heatmap_size[0]), int(heatmap_size[1]))
    R = decoded.shape[0]
    xy = decoded[..., :2].clone()
    H, W = heatmap_size
    cand = candidates.float().to(decoded.device)[None].expand(R, -1, -1, -1)
    P = cand.shape[1]
    if own_candidates is not None:
        cand = torch.cat([cand, own_candidates.float().to(decoded.device)[:, None]], dim=1)
    if R == 0 or cand.shape[1] == 0 or radius <= 0:
        return xy, torch.full(xy.shape[:2], -1, dtype=torch.long, device=xy.device)
    ext = enlarge_boxes(boxes.to(decoded.device), margin)
    u, v = _cell_coords(cand, ext, heatmap_size)  # (R, P, K)
    du, dv = _cell_coords(decoded[:, None, :, :2].float(), ext, heatmap_size)  # (R, 1, K)
    d2 = (u - du) ** 2 + (v - dv) ** 2
    inside = (u >= -0.5) & (u <= W - 0.5) & (v >= -0.5) & (v <= H - 0.5)
    inside[:, P:] = True  # the box's own keypoints count wherever they are
    ok = (cand[..., 2] > score_thresh) & inside
    d2 = torch.where(ok, d2, torch.full_like(d2, float("inf")))
    best, arg = d2.min(dim=1)  # (R, K)
    ok = torch.isfinite(best) & (best <= radius**2)
    picked = torch.gather(cand[..., :2], 1, arg[:, None, :, None].expand(-1, 1, -1, 2))[:, 0]
    xy = torch.where(ok[..., None], picked, xy)
    return xy, torch.where(ok, arg, torch.full_like(arg, -1))


def prn_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    valid: Optional[torch.Tensor] = None,
    kind: str = "bce",
    eps: float = 1e-6,
) -> torch.Tensor:
    """Loss of PRN logits ``(B, K, H, W)`` against target heatmaps ``(B, K, H, W)`` (peak 1).

    ``kind="bce"``: binary cross-entropy between the softmax (over H*W) output and the target,
    summed over cells, averaged over valid channels (MultiPoseNet). ``kind="ce"``: soft-target
    cross-entropy with the target normalised to sum 1. ``valid (B, K)`` bool marks the channels
    with a target keypoint; default: channels whose target is not all zero.
    """
    B, K = logits.shape[:2]
    lp = F.log_softmax(logits.reshape(B, K, -1).float(), dim=2)
    t = target.reshape(B, K, -1).float()
    if valid is None:
        valid = t.amax(dim=2) > 0
    valid = valid.to(lp.device).float()
    if kind == "bce":
        p = lp.exp()
        log1mp = torch.log1p(-p.clamp(max=1.0 - eps))
        per = -(t * lp.clamp(min=math.log(eps)) + (1 - t) * log1mp).sum(2)
    elif kind == "ce":
        tn = t / t.sum(dim=2, keepdim=True).clamp(min=eps)
        per = -(tn * lp).sum(2)
    else:
        raise ValueError(f"prn_loss: unknown kind '{kind}', expected 'bce' or 'ce'")
    return (per * valid).sum() / valid.sum().clamp(min=1.0)


def _cfg_get(cfg, key: str, default):
    node = cfg
    for part in key.split("."):
        if node is None or not hasattr(node, part):
            return default
        node = getattr(node, part)
    return node


def load_prn_weights(module: nn.Module, path: str, key: str = "MODEL.PRN.WEIGHTS") -> Dict:
    """Load a PRN weights file into ``module``; clear errors naming the file.

    Accepts a plain state dict or a dict with ``"state_dict"`` (as :func:`save` writes; its other
    entries, e.g. ``heatmap_size`` and ``hidden_dim``, are returned). Raises
    ``FileNotFoundError`` when the file does not exist and ``RuntimeError`` listing
    missing/unexpected keys and shape mismatches when it does not fit.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key}: PRN weights file not found: '{path}'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- re-raised with the file name
        raise RuntimeError(f"{key}: cannot read PRN weights file '{path}': {e}") from e
    meta: Dict = {}
    if isinstance(obj, dict) and "state_dict" in obj:
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise RuntimeError(f"{key}: '{path}' holds a {type(obj).__name__}, not a state dict")
    _load_state_dict_checked(module, obj, path, key, "PRN")
    return meta


def _load_state_dict_checked(module: nn.Module, sd: Dict, path: str, key: str, what: str) -> None:
    own = module.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise RuntimeError(
            f"{key}: {what} weights file '{path}' does not match the model: "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {shapes}"
        )
    module.load_state_dict(sd, strict=True)


class PoseResidualNetwork(nn.Module):
    """The PRN, usable as a plain network and as the registered post-processor.

    ``PoseResidualNetwork(cfg)`` reads ``MODEL.PRN.*`` (and loads ``MODEL.PRN.WEIGHTS`` if set);
    keyword arguments override cfg values, and ``PoseResidualNetwork(heatmap_size=(28, 18),
    hidden_dim=128)`` without a cfg builds a bare network for training.

    Network calls: :meth:`forward_logits` ``(B, 17, H, W) -> (B, 17, H, W)`` logits;
    :meth:`predict` -> softmax probabilities over ``H * W`` per channel.
    Post-processor call: ``forward(batched_inputs, results) -> results`` (see module docstring).
    """

    def __init__(
        self,
        cfg=None,
        *,
        heatmap_size: Optional[Sequence[int]] = None,
        hidden_dim: Optional[int] = None,
        dropout: Optional[float] = None,
        margin: Optional[float] = None,
        sigma: Optional[float] = None,
        min_confidence: Optional[float] = None,
        score_thresh: Optional[float] = None,
        source_score_thresh: Optional[float] = None,
        snap_radius: Optional[float] = None,
        num_keypoints: int = 17,
        load_weights: bool = True,
    ):
        super().__init__()

        def pick(value, key, default):
            return value if value is not None else _cfg_get(cfg, key, default)

        hs = pick(heatmap_size, "MODEL.PRN.HEATMAP_SIZE", (56, 36))
        self.heatmap_size = (int(hs[0]), int(hs[1]))
        self.hidden_dim = int(pick(hidden_dim, "MODEL.PRN.HIDDEN_DIM", 1024))
        self.dropout_p = float(pick(dropout, "MODEL.PRN.DROPOUT", 0.5))
        self.margin = float(pick(margin, "MODEL.PRN.BOX_MARGIN", 0.1))
        self.sigma = float(pick(sigma, "MODEL.PRN.SIGMA", 1.0))
        self.min_confidence = float(pick(min_confidence, "MODEL.PRN.MIN_CONFIDENCE", 0.05))
        self.num_keypoints = int(num_keypoints)
        self.score_thresh = float(
            pick(score_thresh, "MODEL.PRN.KEYPOINT_THRESHOLD", KEYPOINT_SCORE_THRESH)
        )
        self.source_box_score_thresh = float(
            pick(source_score_thresh, "MODEL.PRN.SOURCE_SCORE_THRESH", SOURCE_BOX_SCORE_THRESH)
        )
        radius = float(pick(snap_radius, "MODEL.PRN.SNAP_RADIUS", SNAP_RADIUS))
        self.snap_radius = math.inf if radius < 0 else radius

        H, W = self.heatmap_size
        d = self.num_keypoints * H * W
        self.fc1 = nn.Linear(d, self.hidden_dim)
        self.dropout = nn.Dropout(self.dropout_p)
        self.fc2 = nn.Linear(self.hidden_dim, d)

        weights = _cfg_get(cfg, "MODEL.PRN.WEIGHTS", "") if load_weights else ""
        if weights:
            load_prn_weights(self, weights)

    # ---- network ------------------------------------------------------------------------
    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)`` of input heatmaps ``(B, K, H, W)`` (residual MLP)."""
        B = x.shape[0]
        flat = x.reshape(B, -1).float()
        out = self.fc2(self.dropout(F.relu(self.fc1(flat)))) + flat
        return out.reshape(x.shape)

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
        }

    def save(self, path: str, **extra) -> None:
        torch.save({"state_dict": self.state_dict(), **self.extra_config(), **extra}, path)

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
                continue
            boxes = inst.pred_boxes
            boxes = getattr(boxes, "tensor", boxes)
            scores = inst.scores if inst.has("scores") else None
            new_kps, conf = self.assign(boxes, kps, scores)
            inst.pred_keypoints = new_kps
            inst.prn_confidence = conf
        return results


POSTPROCESSOR_REGISTRY.register(PoseResidualNetwork)
# The registered post-processor is the network class itself (registry name "PoseResidualNetwork")
PoseResidualNetworkPostprocessor = PoseResidualNetwork

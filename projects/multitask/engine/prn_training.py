"""Fitting the Pose Residual Network on ground-truth keypoints (MultiPoseNet's recipe).

For every non-crowd person with at least one labelled keypoint (the *target* person) the input
is the encoding of the keypoints of ALL non-crowd people of the image inside that person's box
(enlarged by the PRN's margin) and the target is the encoding of the target's own keypoints only.
Adam, binary cross-entropy between the PRN's softmax output and the target
(:meth:`PoseResidualNetwork.loss`). Augmentation (:class:`PRNFitSettings`): a horizontal flip of
the whole image (left/right keypoints swapped), a random shift/scale of the target box so the PRN
sees detector-like boxes, and synthetic overlapping people (poses of other persons, rescaled to
the target's size and placed overlapping its box, added to the input only) so that the few
crowded scenes of a small dataset are not the only examples of people to tell apart.

Used by ``tools/train_prn.py`` and by ``MODEL.PRN.FIT_ON_TRAIN_GT`` in ``tools/train_net.py``.
People come as a list of per-image dicts (:func:`people_from_dataset_dicts`,
:func:`people_from_coco_json`): ``image_id``, ``width``, ``boxes (N, 4)`` XYXY, ``keypoints
(N, K, 3)`` and ``targets (N,)`` bool.
"""

import json
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..modeling.postprocessing.prn import PoseResidualNetwork
from ..modeling.postprocessing.prn_codec import decode_prn_output, snap_to_candidates
from ..structures.keypoints import COCO_PERSON_KEYPOINTS, KeypointSet, hflip_keypoints

__all__ = [
    "PRNFitSettings",
    "people_from_dataset_dicts",
    "people_from_coco_json",
    "fit_prn",
    "prn_assign_ground_truth",
    "own_keypoint_fraction",
]


@dataclass
class PRNFitSettings:
    """How :func:`fit_prn` trains (``tools/train_prn.py``'s flags, ``MODEL.PRN.FIT_*``)."""

    epochs: int = 40
    lr: float = 1e-3
    batch_size: int = 32
    loss: str = "bce"  # or "ce" (soft-target cross-entropy)
    box_jitter: float = 0.1  # 0: the ground-truth boxes as they are
    flip: bool = True
    distractors: float = 0.5  # probability that a target gets synthetic overlapping people
    max_distractors: int = 2

    def check(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"fitting the PRN needs epochs >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"fitting the PRN needs batch_size >= 1, got {self.batch_size}")
        if self.loss not in ("bce", "ce"):
            raise ValueError(f"PRN loss must be 'bce' or 'ce', got '{self.loss}'")


def _image_people(image_id, width, boxes, keypoints) -> Dict:
    kps = np.stack(keypoints).astype(np.float32)
    return {
        "image_id": image_id,
        "width": width,
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "keypoints": kps,
        "targets": (kps[..., 2] > 0).sum(1) > 0,
    }


def people_from_dataset_dicts(dicts: Sequence[dict], num_keypoints: int = 17) -> List[Dict]:
    """Per image with people: the non-crowd persons of detectron2-style dataset dicts (XYXY
    boxes, as the loaders write them; ``docs/internals.md``)."""
    out = []
    for d in dicts:
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        if anns:
            kps = [
                np.asarray(a.get("keypoints") or [0] * (3 * num_keypoints), np.float32).reshape(
                    num_keypoints, 3
                )
                for a in anns
            ]
            boxes = [a["bbox"] for a in anns]
            out.append(_image_people(d["image_id"], d.get("width", 0), boxes, kps))
    return out


def people_from_coco_json(path: str) -> List[Dict]:
    """Per image with people: the non-crowd persons of a COCO keypoint json (XYWH boxes there)."""
    with open(path) as f:
        data = json.load(f)
    widths = {im["id"]: im.get("width", 0) for im in data["images"]}
    per_image: Dict[int, List] = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            per_image.setdefault(a["image_id"], []).append(a)
    out = []
    for image_id, anns in per_image.items():
        if anns:
            boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
            kps = [np.asarray(a.get("keypoints") or [0] * 51, np.float32).reshape(-1, 3)
                   for a in anns]
            out.append(_image_people(image_id, widths.get(image_id, 0), boxes, kps))
    return out


def _flip_image_people(boxes: np.ndarray, kps: np.ndarray, width: float, flip: Sequence[int]):
    """Mirror an image's boxes and keypoints horizontally (left/right keypoints swapped)."""
    b = boxes.copy()
    b[:, 0], b[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return b, hflip_keypoints(kps, width, flip)


def _jitter_boxes(boxes: np.ndarray, amount: float, rng: np.random.RandomState) -> np.ndarray:
    if amount <= 0:
        return boxes
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    d = rng.uniform(-amount, amount, size=(len(boxes), 4)).astype(np.float32)
    return boxes + d * np.stack([w, h, w, h], 1)


def _distractor_pool(images: List[Dict], min_keypoints: int = 5):
    """(keypoints (M, K, 3), boxes (M, 4)) of all people with >= ``min_keypoints`` labelled."""
    kps = np.concatenate([im["keypoints"] for im in images])
    boxes = np.concatenate([im["boxes"] for im in images])
    keep = (kps[..., 2] > 0).sum(1) >= min_keypoints
    return kps[keep], boxes[keep]


def _sample_distractors(box: np.ndarray, pool, n: int, rng: np.random.RandomState,
                        flip: Sequence[int]) -> np.ndarray:
    """``n`` poses from the pool, rescaled to ``box``'s height (x0.8-1.2) and placed overlapping
    it (centre shifted by 0.25-0.7 of its width sideways and up to 0.15 of its height)."""
    pk, pb = pool
    w, h = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    out = []
    for i in rng.randint(0, len(pk), size=n):
        k, b = pk[i].copy(), pb[i]
        scale = h / max(b[3] - b[1], 1.0) * rng.uniform(0.8, 1.2)
        dx = rng.uniform(0.25, 0.7) * w * rng.choice([-1.0, 1.0])
        dy = rng.uniform(-0.15, 0.15) * h
        bcx, bcy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        vis = k[:, 2] > 0
        k[:, 0] = np.where(vis, (k[:, 0] - bcx) * scale + cx + dx, 0.0)
        k[:, 1] = np.where(vis, (k[:, 1] - bcy) * scale + cy + dy, 0.0)
        if rng.rand() < 0.5:  # mirror the distractor about its own centre
            k = hflip_keypoints(k, 2 * (cx + dx), flip)
        out.append(k)
    return np.stack(out) if out else np.zeros((0,) + pk.shape[1:], np.float32)


def _image_samples(im: Dict, net: PoseResidualNetwork, s: PRNFitSettings, rng, pool, flip):
    """Inputs and targets ``(n, K, H, W)`` of one image's target people (augmented)."""
    boxes, kps = im["boxes"], im["keypoints"]
    if s.flip and rng.rand() < 0.5:
        width = im["width"] or float(max(boxes[:, 2].max(), kps[..., 0].max()) + 1)
        boxes, kps = _flip_image_people(boxes, kps, width, flip)
    t = np.flatnonzero(im["targets"])
    tb = torch.from_numpy(np.ascontiguousarray(_jitter_boxes(boxes[t], s.box_jitter, rng)))
    k_all = torch.from_numpy(kps)
    if pool is not None:
        xs = []
        for i in range(len(t)):  # each target gets its own synthetic neighbours
            n = rng.randint(1, s.max_distractors + 1) if rng.rand() < s.distractors else 0
            extra = torch.from_numpy(_sample_distractors(boxes[t[i]], pool, n, rng, flip))
            xs.append(net.encode(tb[i : i + 1], torch.cat([k_all, extra])))
        x = torch.cat(xs)
    else:
        x = net.encode(tb, k_all)
    return x, net.encode(tb, k_all[:0], own_keypoints=k_all[t])  # target: own keypoints only


def _check_people(net: PoseResidualNetwork, images: List[Dict],
                  keypoint_set: Optional[KeypointSet]) -> Tuple[List[Dict], int, KeypointSet]:
    """The images with target people, their number, and the keypoint set (all checked)."""
    images = [im for im in images if im["targets"].any()]
    num_people = int(sum(im["targets"].sum() for im in images))
    if num_people == 0:
        raise ValueError("fitting the PRN needs people with labelled keypoints; there are none")
    K = images[0]["keypoints"].shape[1]
    if K != net.num_keypoints:
        raise ValueError(f"the people have {K} keypoints, the PRN {net.num_keypoints}")
    keypoint_set = keypoint_set or COCO_PERSON_KEYPOINTS
    if len(keypoint_set) != K:
        raise ValueError(f"the people have {K} keypoints, the keypoint set "
                         f"{list(keypoint_set.names)} {len(keypoint_set)}")
    return images, num_people, keypoint_set


def _sample_chunks(images, net, s: PRNFitSettings, rng, pool, flip):
    """An epoch's augmented samples, in chunks of about eight batches: ``(x, y)`` pairs."""
    chunk = 8 * s.batch_size
    order = rng.permutation(len(images))
    xs, ys, filled = [], [], 0
    for n, i in enumerate(order):
        x, y = _image_samples(images[i], net, s, rng, pool, flip)
        xs.append(x)
        ys.append(y)
        filled += x.shape[0]
        if filled >= chunk or n + 1 == len(order):
            yield torch.cat(xs), torch.cat(ys)
            xs, ys, filled = [], [], 0


def _train_epoch(net, opt, chunks, s: PRNFitSettings, bar) -> float:
    """One pass over the chunks in shuffled batches; the mean loss per sample."""
    device = net.fc1.weight.device
    total, seen = 0.0, 0
    for x, y in chunks:
        perm = torch.randperm(x.shape[0])
        for b in range(0, x.shape[0], s.batch_size):
            idx = perm[b : b + s.batch_size]
            loss = net.loss(net.forward_logits(x[idx].to(device)), y[idx].to(device), kind=s.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * idx.numel()
            seen += idx.numel()
            if bar is not None:
                bar.update(idx.numel())
    return total / max(seen, 1)


def fit_prn(
    net: PoseResidualNetwork,
    images: List[Dict],
    settings: Optional[PRNFitSettings] = None,
    *,
    seed: int = 0,
    keypoint_set: Optional[KeypointSet] = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> Dict:
    """Train ``net`` in place on the people of ``images`` (see the module docstring).

    ``keypoint_set`` (default COCO's person keypoints) says how the people's keypoints mirror.
    Samples are drawn a few batches at a time (memory stays bounded on large datasets).
    Seeded by ``seed`` without touching the caller's global random state, so a detector trained
    after the fit follows the same random stream with or without it. Returns ``{"num_images",
    "num_people", "epochs", "final_loss", "seconds", "own_keypoint_fraction"}`` (the last on
    the training people without augmentation, see :func:`own_keypoint_fraction`).
    """
    s = settings or PRNFitSettings()
    s.check()
    images, num_people, keypoint_set = _check_people(net, images, keypoint_set)
    flip = keypoint_set.flip_indices
    device = net.fc1.weight.device
    rng = np.random.RandomState(seed)
    pool = _distractor_pool(images) if s.distractors > 0 else None
    if pool is not None and len(pool[0]) == 0:
        pool = None
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=s.epochs * num_people, desc="fitting the PRN", unit="person",
                   leave=False, mininterval=2.0)
    was_training = net.training
    net.train()
    # a model's post-processors are frozen for the detector's optimizer; this fit trains them
    frozen = [p for p in net.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    epoch_loss = float("nan")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=s.lr)
        for epoch in range(s.epochs):
            chunks = _sample_chunks(images, net, s, rng, pool, flip)
            epoch_loss = _train_epoch(net, opt, chunks, s, bar)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{epoch_loss:.3f}")
    if bar is not None:
        bar.close()
    for p in frozen:
        p.requires_grad_(False)
    net.train(was_training)
    seconds = time.perf_counter() - start
    frac = own_keypoint_fraction(net, images)
    net.weights_source = "fitted"
    log(
        f"PRN fitted on {num_people} people of {len(images)} images: {s.epochs} epochs in "
        f"{seconds:.1f} s, final loss {epoch_loss:.4f}; on those people (no augmentation) it "
        f"assigns {100 * frac:.1f} % of the labelled keypoints to their own person"
    )
    return {"num_images": len(images), "num_people": num_people, "epochs": s.epochs,
            "final_loss": epoch_loss, "seconds": seconds, "own_keypoint_fraction": frac}


@torch.no_grad()
def prn_assign_ground_truth(
    net: PoseResidualNetwork, boxes: torch.Tensor, keypoints_all: torch.Tensor,
    snap_radius: Optional[float] = None,
) -> torch.Tensor:
    """The PRN's keypoints ``(R, K, 3)`` (x, y, PRN confidence) for ``boxes (R, 4)`` given every
    person's ground-truth keypoints ``(P, K, 3)`` of the image (the peak snapped to a candidate
    of its type within ``snap_radius`` cells, default the network's)."""
    was_training = net.training
    net.eval()
    device = net.fc1.weight.device
    boxes, keypoints_all = boxes.to(device).float(), keypoints_all.to(device).float()
    radius = net.snap_radius if snap_radius is None else snap_radius
    dec = decode_prn_output(net.predict(net.encode(boxes, keypoints_all)), boxes, net.margin)
    xy, _ = snap_to_candidates(dec, boxes, keypoints_all, net.heatmap_size, net.margin, radius,
                               net.score_thresh)
    net.train(was_training)
    return torch.cat([xy, dec[..., 2:3]], dim=2).cpu()


def own_keypoint_fraction(net: PoseResidualNetwork, images: List[Dict]) -> float:
    """Fraction of the labelled keypoints of the target people of ``images`` that the PRN
    (:func:`prn_assign_ground_truth`, ground-truth boxes) puts exactly on their own keypoint."""
    hit = total = 0
    for im in images:
        t = np.flatnonzero(im["targets"])
        if len(t) == 0:
            continue
        kps = torch.from_numpy(im["keypoints"])
        out = prn_assign_ground_truth(net, torch.from_numpy(im["boxes"][t]), kps)
        own = kps[t]
        labelled = own[..., 2] > 0
        ok = (out[..., :2] - own[..., :2]).norm(dim=-1) < 1e-3
        hit += int((ok & labelled).sum())
        total += int(labelled.sum())
    return hit / max(total, 1)

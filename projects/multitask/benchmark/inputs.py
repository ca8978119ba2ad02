"""Synthetic inputs: random images, person-shaped boxes and generated people with masks and
keypoints, deterministic in the seed and identical for every model."""

from typing import Dict, Tuple

import torch

from multitask import Instances

from .settings import Settings

NUM_KEYPOINTS = 17


def random_image(size: Tuple[int, int], seed: int) -> torch.Tensor:
    """uint8 (3, H, W), taken as BGR by our model; torchvision gets the RGB float copy."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, *size), generator=gen, dtype=torch.uint8)


def to_tv_image(img_bgr: torch.Tensor, device: str) -> torch.Tensor:
    """The RGB float (0-1) copy of :func:`random_image`'s BGR image that torchvision takes."""
    return img_bgr.flip(0).to(device).float().div_(255.0)


def person_boxes(n: int, size: Tuple[int, int], seed: int) -> torch.Tensor:
    """``n`` upright person-shaped XYXY boxes inside an image of ``size`` (H, W): heights 15-60%
    of the image height, width/height 0.35-0.6. Deterministic in ``seed``."""
    h, w = float(size[0]), float(size[1])
    gen = torch.Generator().manual_seed(seed + 7919)
    bh = h * (0.15 + 0.45 * torch.rand(n, generator=gen))
    bw = torch.clamp(bh * (0.35 + 0.25 * torch.rand(n, generator=gen)), max=0.95 * w)
    x0 = torch.rand(n, generator=gen) * (w - bw)
    y0 = torch.rand(n, generator=gen) * (h - bh)
    return torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)


def make_people(size: Tuple[int, int], n: int, seed: int) -> Dict[str, torch.Tensor]:
    """``n`` upright people: boxes (n, 4) XYXY, elliptic masks (n, H, W) uint8 and keypoints
    (n, 17, 3) inside the boxes, all visible."""
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    bh = h * (0.3 + 0.5 * rand(n))
    bw = torch.minimum(bh * (0.35 + 0.25 * rand(n)), torch.tensor(0.9 * w))
    x0 = rand(n) * (w - bw)
    y0 = rand(n) * (h - bh)
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1) + 0.5
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w) + 0.5
    cx, cy = ((x0 + bw / 2).view(n, 1, 1), (y0 + bh / 2).view(n, 1, 1))
    masks = (((xx - cx) / (bw.view(n, 1, 1) / 2)) ** 2
             + ((yy - cy) / (bh.view(n, 1, 1) / 2)) ** 2 <= 1.0).to(torch.uint8)
    kx = x0.view(n, 1) + bw.view(n, 1) * (0.1 + 0.8 * rand(n, NUM_KEYPOINTS))
    ky = y0.view(n, 1) + bh.view(n, 1) * (0.1 + 0.8 * rand(n, NUM_KEYPOINTS))
    keypoints = torch.stack([kx, ky, torch.full_like(kx, 2.0)], dim=2)
    return {"boxes": boxes, "masks": masks, "keypoints": keypoints}


def make_train_batch(s: Settings):
    """Same images and people for every model: (our batched_inputs, tv images, tv targets)."""
    h, w = s.size
    ours, tv_images, tv_targets = [], [], []
    for i in range(s.train_images):
        img = random_image(s.size, s.seed + 100 + i)
        people = make_people(s.size, s.train_people, s.seed + 200 + i)
        n = len(people["boxes"])
        inst = Instances(
            (h, w),
            gt_boxes=people["boxes"].to(s.device),
            gt_classes=torch.zeros(n, dtype=torch.int64, device=s.device),
            gt_masks=people["masks"].to(s.device),
            gt_keypoints=people["keypoints"].to(s.device),
        )
        ours.append({"image": img.to(s.device), "height": h, "width": w, "instances": inst})
        tv_images.append(to_tv_image(img, s.device))
        tv_targets.append({
            "boxes": people["boxes"].to(s.device),
            "labels": torch.ones(n, dtype=torch.int64, device=s.device),
            "masks": people["masks"].to(s.device),
            "keypoints": people["keypoints"].to(s.device),
        })
    return ours, tv_images, tv_targets

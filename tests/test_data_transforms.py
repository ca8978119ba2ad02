"""Transforms keep image, keypoints, masks and boxes aligned; batching and sampling."""
import os

import cv2
import numpy as np
import pytest
import torch

from multitask.config import get_cfg
from multitask.data import DatasetMapper
from multitask.data import build as build_module
from multitask.data import build_detection_train_loader
from multitask.data.build import InferenceSampler, TrainingSampler
from multitask.data.detection_utils import masks_to_boxes
from multitask.data.mapper import build_augmentation
from multitask.data.transforms import (
    HFlipTransform,
    RandomFlip,
    RandomRotation,
    RandomScale,
    ResizeShortestEdge,
    ResizeTransform,
    RotationTransform,
    TransformList,
)

H, W = 48, 64
LEFT_EYE, RIGHT_EYE = 1, 2


def _dot_dict(tmp_path, x_idx=20, y_idx=14, segmentation="polygon"):
    """An image with a bright 3x3 dot centred on pixel (x_idx, y_idx), and one person whose
    left_eye is that pixel's centre, whose mask is a pentagon (or an RLE of it) around it."""
    img = np.full((H, W, 3), 30, np.uint8)
    img[y_idx - 1 : y_idx + 2, x_idx - 1 : x_idx + 2] = 255
    path = str(tmp_path / f"dot_{x_idx}_{y_idx}.png")
    cv2.imwrite(path, img)
    poly = [8.0, 6.0, 40.0, 4.0, 46.0, 30.0, 24.0, 40.0, 6.0, 26.0]
    xs, ys = poly[0::2], poly[1::2]
    kpts = [0.0] * 51
    kpts[3 * LEFT_EYE : 3 * LEFT_EYE + 3] = [x_idx + 0.5, y_idx + 0.5, 2.0]
    anno = {
        "id": 1, "bbox": [min(xs), min(ys), max(xs), max(ys)], "bbox_mode": "XYXY_ABS",
        "category_id": 0, "keypoints": kpts, "iscrowd": 0, "activity": None,
    }
    if segmentation == "polygon":
        anno["segmentation"] = [poly]
    elif segmentation == "rle":
        from pycocotools import mask as mask_util

        rle = mask_util.merge(mask_util.frPyObjects([poly], H, W))
        rle["counts"] = rle["counts"].decode("ascii")
        anno["segmentation"] = rle
    return {"file_name": path, "image_id": 1, "height": H, "width": W, "annotations": [anno]}


def _brightest(image_chw: torch.Tensor):
    """Centre (continuous coordinates) of the brightest blob of a (3, H, W) uint8 image."""
    g = image_chw.float().mean(0).numpy()
    g = cv2.GaussianBlur(g, (3, 3), 0)
    y, x = np.unravel_index(np.argmax(g), g.shape)
    return x + 0.5, y + 0.5


def _map(d, transforms, is_train=True, **kw):
    mapper = DatasetMapper(is_train=is_train, augmentations=transforms, **kw)
    return mapper(d)


CASES = {
    "identity": lambda: [],
    "hflip": lambda: [HFlipTransform(W)],
    "upscale": lambda: [ResizeTransform(H, W, 82, 109)],
    "downscale": lambda: [ResizeTransform(H, W, 24, 32)],
    "rotate+25": lambda: [RotationTransform(H, W, 25.0)],
    "rotate-40": lambda: [RotationTransform(H, W, -40.0)],
    "scale1.3": lambda: [RandomScale(1.3, 1.3)],
    "resize+flip+rotate": lambda: [ResizeTransform(H, W, 72, 96), HFlipTransform(96),
                                   RotationTransform(72, 96, 15.0)],
}


@pytest.mark.parametrize("case", list(CASES))
def test_keypoint_follows_the_image(tmp_path, case):
    d = _dot_dict(tmp_path)
    tfms = CASES[case]()
    out = _map(d, tfms)
    inst = out["instances"]
    assert len(inst) == 1
    n_flips = sum(isinstance(t, HFlipTransform) for t in tfms)
    slot = RIGHT_EYE if n_flips % 2 else LEFT_EYE
    kp = inst.gt_keypoints[0, slot]
    assert kp[2] == 2
    assert inst.gt_keypoints[0, :, 2].sum() == 2  # only one labelled keypoint
    bx, by = _brightest(out["image"])
    assert abs(bx - float(kp[0])) <= 1.5 and abs(by - float(kp[1])) <= 1.5, (case, (bx, by), kp)
    assert out["image"].dtype == torch.uint8 and (out["height"], out["width"]) == (H, W)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_box_matches_mask(tmp_path, case, segmentation):
    d = _dot_dict(tmp_path, segmentation=segmentation)
    out = _map(d, CASES[case]())
    inst = out["instances"]
    assert inst.gt_mask_valid.tolist() == [True]
    assert inst.gt_masks.shape[1:] == out["image"].shape[1:]
    tight = masks_to_boxes(inst.gt_masks)[0]
    assert torch.allclose(inst.gt_boxes[0], tight, atol=1.0), (case, inst.gt_boxes[0], tight)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("segmentation", ["polygon", "rle"])
def test_mask_follows_the_image(tmp_path, case, segmentation):
    d = _dot_dict(tmp_path, segmentation=segmentation)
    # paint the person's polygon into the image: the mask must cover the painted region
    poly = np.array([8.0, 6.0, 40.0, 4.0, 46.0, 30.0, 24.0, 40.0, 6.0, 26.0]).reshape(-1, 2)
    from pycocotools import mask as mask_util

    m = mask_util.decode(mask_util.merge(mask_util.frPyObjects([poly.reshape(-1).tolist()], H, W)))
    img = np.full((H, W, 3), 30, np.uint8)
    img[m > 0] = 230
    cv2.imwrite(d["file_name"], img)
    out = _map(d, CASES[case]())
    painted = out["image"].float().mean(0) > 130
    mask = out["instances"].gt_masks[0].bool()
    iou = float((painted & mask).sum()) / float((painted | mask).sum())
    assert iou > 0.9, (case, iou)


def test_hflip_swaps_left_and_right(tmp_path):
    d = _dot_dict(tmp_path)
    k = d["annotations"][0]["keypoints"]
    k[3 * LEFT_EYE : 3 * LEFT_EYE + 3] = [10.5, 20.5, 2.0]
    k[3 * RIGHT_EYE : 3 * RIGHT_EYE + 3] = [30.5, 22.5, 1.0]
    inst = _map(d, [HFlipTransform(W)])["instances"]
    kp = inst.gt_keypoints[0]
    assert kp[RIGHT_EYE].tolist() == pytest.approx([W - 10.5, 20.5, 2.0])
    assert kp[LEFT_EYE].tolist() == pytest.approx([W - 30.5, 22.5, 1.0])
    # two flips: back where it was
    inst2 = _map(d, [HFlipTransform(W), HFlipTransform(W)])["instances"]
    assert inst2.gt_keypoints[0, LEFT_EYE].tolist() == pytest.approx([10.5, 20.5, 2.0])
    # the dataset dict itself is untouched
    assert d["annotations"][0]["keypoints"][3 * LEFT_EYE] == 10.5


def test_rotation_drops_keypoints_leaving_the_image(tmp_path):
    d = _dot_dict(tmp_path)
    k = d["annotations"][0]["keypoints"]
    k[0:3] = [1.5, 1.5, 2.0]  # nose at the top-left corner
    inst = _map(d, [RotationTransform(H, W, 45.0)])["instances"]
    assert inst.gt_keypoints[0, 0, 2] == 0
    assert inst.gt_keypoints[0, LEFT_EYE, 2] == 2


def test_rotation_without_mask_uses_rotated_corners(tmp_path):
    d = _dot_dict(tmp_path, segmentation=None)
    t = RotationTransform(H, W, 30.0)
    inst = _map(d, [t])["instances"]
    assert inst.gt_mask_valid.tolist() == [False] and int(inst.gt_masks.sum()) == 0
    x0, y0, x1, y1 = d["annotations"][0]["bbox"]
    corners = t.apply_coords(np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]]))
    exp = [max(corners[:, 0].min(), 0), max(corners[:, 1].min(), 0),
           min(corners[:, 0].max(), W), min(corners[:, 1].max(), H)]
    assert inst.gt_boxes[0].tolist() == pytest.approx(exp, abs=1e-3)


def test_instances_leaving_the_image_are_dropped_and_crowd_ignored(tmp_path):
    d = _dot_dict(tmp_path)
    a = d["annotations"][0]
    crowd = dict(a, id=2, iscrowd=1)
    corner = dict(a, id=3, bbox=[0.0, 0.0, 3.0, 3.0], segmentation=[[0, 0, 3, 0, 3, 3, 0, 3]])
    d["annotations"] = [a, crowd, corner]
    inst = _map(d, [RotationTransform(H, W, 45.0)])["instances"]
    assert len(inst) == 1  # crowd dropped; the corner square rotated out of the image
    test_out = _map(d, [], is_train=False)
    assert "instances" not in test_out


def test_empty_image_gives_empty_instances(tmp_path):
    d = _dot_dict(tmp_path)
    d["annotations"] = []
    inst = _map(d, [HFlipTransform(W)])["instances"]
    assert len(inst) == 0 and inst.gt_masks.shape == (0, H, W)
    assert inst.gt_keypoints.shape == (0, 17, 3)


def test_random_augmentations_keep_alignment(tmp_path):
    np.random.seed(0)
    augs = [ResizeShortestEdge((40, 80), 120, "range"), RandomScale(0.8, 1.25), RandomFlip(0.5),
            RandomRotation(30.0, prob=1.0)]
    d = _dot_dict(tmp_path, x_idx=24, y_idx=18)
    mapper = DatasetMapper(is_train=True, augmentations=augs)
    flips = 0
    for _ in range(8):
        out = mapper(d)
        inst = out["instances"]
        kp = inst.gt_keypoints[0]
        slot = LEFT_EYE if kp[LEFT_EYE, 2] > 0 else RIGHT_EYE
        flips += slot == RIGHT_EYE
        bx, by = _brightest(out["image"])
        assert abs(bx - float(kp[slot, 0])) <= 2 and abs(by - float(kp[slot, 1])) <= 2
        assert torch.allclose(inst.gt_boxes[0], masks_to_boxes(inst.gt_masks)[0], atol=1.0)
    assert 0 < flips < 8


def test_resize_shortest_edge_shapes():
    img = np.zeros((480, 640, 3), np.uint8)

    def out(aug):
        return aug.get_transform(img).output_size(480, 640)

    assert out(ResizeShortestEdge(800, 1333, "choice")) == (800, 1067)
    assert out(ResizeShortestEdge(800, 1000, "choice")) == (750, 1000)
    np.random.seed(1)
    sizes = {min(out(ResizeShortestEdge((32, 40), 1000, "range"))) for _ in range(30)}
    assert sizes <= set(range(32, 41)) and len(sizes) > 2
    sizes = {min(out(ResizeShortestEdge((32, 48), 1000, "choice"))) for _ in range(30)}
    assert sizes == {32, 48}


def test_build_augmentation_from_cfg():
    cfg = get_cfg()
    names = [type(a).__name__ for a in build_augmentation(cfg, True)]
    assert names == ["ResizeShortestEdge", "RandomFlip"]
    cfg.INPUT.ROTATION.ANGLE = 30.0
    cfg.INPUT.SCALE.RANGE = [0.8, 1.2]
    names = [type(a).__name__ for a in build_augmentation(cfg, True)]
    assert names == ["ResizeShortestEdge", "RandomScale", "RandomFlip", "RandomRotation"]
    assert [type(a).__name__ for a in build_augmentation(cfg, False)] == ["ResizeShortestEdge"]
    cfg.INPUT.RANDOM_FLIP = "vertical"
    with pytest.raises(ValueError, match="RANDOM_FLIP"):
        build_augmentation(cfg, True)


def test_transform_list_image_uint8():
    img = (np.random.RandomState(0).rand(H, W, 3) * 255).astype(np.uint8)
    tl = TransformList(
        [ResizeTransform(H, W, 30, 40), HFlipTransform(40), RotationTransform(30, 40, 10)]
    )
    out = tl.apply_image(img)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)


# ------------------------------------------------------------------------------------------------
# batching and sampling
# ------------------------------------------------------------------------------------------------
def _aspect_dataset(tmp_path):
    for name, shape in [("land.png", (30, 50, 3)), ("port.png", (50, 30, 3))]:
        cv2.imwrite(str(tmp_path / name), np.full(shape, 100, np.uint8))
    dicts = []
    for i in range(8):
        name = "land.png" if i % 2 else "port.png"
        h, w = (30, 50) if name == "land.png" else (50, 30)
        dicts.append({"file_name": str(tmp_path / name), "image_id": i, "height": h, "width": w,
                      "annotations": []})
    return dicts


@pytest.mark.parametrize("num_workers", [0, 2])
def test_aspect_ratio_grouping(tmp_path, num_workers):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (24,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.SOLVER.IMS_PER_BATCH = 3
    cfg.DATALOADER.NUM_WORKERS = num_workers
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = True
    loader = build_detection_train_loader(
        cfg, dataset=_aspect_dataset(tmp_path), sampler=TrainingSampler(8, seed=0)
    )
    kinds = set()
    for _, batch in zip(range(8), loader):
        assert isinstance(batch, list) and len(batch) == 3
        landscape = {d["image"].shape[2] > d["image"].shape[1] for d in batch}
        assert len(landscape) == 1, [tuple(d["image"].shape) for d in batch]
        kinds |= landscape
        assert all(len(d["instances"]) == 0 for d in batch)
    assert kinds == {True, False}


def test_no_grouping_batches_and_batch_size_check(tmp_path, monkeypatch):
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (24,)
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    it = iter(build_detection_train_loader(cfg, dataset=_aspect_dataset(tmp_path),
                                           sampler=TrainingSampler(8, seed=0)))
    assert len(next(it)) == 4
    monkeypatch.setattr(build_module.comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        build_detection_train_loader(cfg, dataset=_aspect_dataset(tmp_path))


def test_training_sampler_ranks_are_disjoint():
    n = 10
    streams = [iter(TrainingSampler(n, seed=7, rank=r, world_size=2)) for r in range(2)]
    for _epoch in range(3):
        parts = [[next(s) for _ in range(n // 2)] for s in streams]
        assert not set(parts[0]) & set(parts[1])
        assert sorted(parts[0] + parts[1]) == list(range(n))
    # same seed -> same stream; shuffled
    s1, s2 = (iter(TrainingSampler(n, seed=7, rank=0, world_size=1)) for _ in range(2))
    first = [next(s1) for _ in range(n)]
    assert first == [next(s2) for _ in range(n)] and first != list(range(n))
    other = iter(TrainingSampler(n, seed=8, rank=0, world_size=1))
    assert [next(other) for _ in range(n)] != first
    with pytest.raises(ValueError):
        TrainingSampler(n, seed=0, rank=2, world_size=2)


def test_inference_sampler_splits_without_duplicates():
    for size, world in [(7, 2), (10, 3), (2, 4), (0, 2)]:
        parts = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
        flat = [i for p in parts for i in p]
        assert flat == list(range(size)), (size, world, parts)
        assert all(len(InferenceSampler(size, rank=r, world_size=world)) == len(p)
                   for r, p in enumerate(parts))


def test_mapper_from_cfg_reads_bgr(tmp_path):
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = 200  # blue in BGR
    cv2.imwrite(str(tmp_path / "b.png"), img)
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST = H
    mapper = DatasetMapper(cfg, False)
    out = mapper({"file_name": str(tmp_path / "b.png"), "image_id": 5, "height": H, "width": W})
    assert out["image"].shape == (3, H, W) and int(out["image"][0].min()) == 200
    assert int(out["image"][2].max()) == 0 and out["image_id"] == 5
    assert os.path.basename(out["file_name"]) == "b.png"

"""Dataset catalog, COCO loading with validation, image reading, loaders over bad data."""
import json
import logging
import os
import sys
import types

import cv2
import numpy as np
import pytest
import torch

from multitask.config import get_cfg
from multitask.data import (
    DatasetCatalog,
    DatasetMapper,
    ImageReadError,
    MetadataCatalog,
    annotations_to_instances,
    build_detection_test_loader,
    build_detection_train_loader,
    get_dataset_json,
    get_detection_dataset_dicts,
    load_coco_person_json,
    read_image,
    register_coco_person_keypoints,
    register_datasets_from_cfg,
)
from multitask.data.builtin import _find_coco_mini
from multitask.data.coco import COCO_PERSON_KEYPOINT_NAMES
from multitask.data.transforms import ResizeShortestEdge

COCO_MINI = _find_coco_mini()


# ------------------------------------------------------------------------------------------------
# catalog
# ------------------------------------------------------------------------------------------------
def test_dataset_catalog_api():
    name = "_test_catalog_ds"
    DatasetCatalog.register(name, lambda: [{"file_name": "a", "image_id": 1}])
    try:
        assert name in DatasetCatalog.list()
        assert DatasetCatalog.get(name) == [{"file_name": "a", "image_id": 1}]
        with pytest.raises(ValueError, match="already registered"):
            DatasetCatalog.register(name, lambda: [])
        with pytest.raises(TypeError):
            DatasetCatalog.register("_test_not_callable", [1, 2])
    finally:
        DatasetCatalog.remove(name)
    assert name not in DatasetCatalog.list()
    with pytest.raises(KeyError) as e:
        DatasetCatalog.get("_no_such_dataset")
    msg = str(e.value)
    assert "_no_such_dataset" in msg and "keypoints_coco_2017_train" in msg


def test_metadata_catalog_api():
    name = "_test_catalog_md"
    md = MetadataCatalog.get(name)
    md.set(thing_classes=["person"], foo=1)
    assert MetadataCatalog.get(name) is md
    assert md.thing_classes == ["person"] and md.get("foo") == 1 and md.get("bar", 3) == 3
    md.foo = 2
    assert md.foo == 2
    with pytest.raises(AttributeError, match="thing_classes"):
        md.missing_key
    MetadataCatalog.remove(name)
    assert not MetadataCatalog.get(name).has("foo")
    MetadataCatalog.remove(name)


def test_builtin_registrations():
    names = DatasetCatalog.list()
    for n in ["keypoints_coco_2017_train", "keypoints_coco_2017_val",
              "synthetic_people_train", "synthetic_people_val"]:
        assert n in names
    md = MetadataCatalog.get("keypoints_coco_2017_val")
    exp = os.path.join("coco", "annotations", "person_keypoints_val2017.json")
    assert md.json_file.endswith(exp)
    assert md.image_root.endswith(os.path.join("coco", "val2017"))
    assert md.thing_classes == ["person"] and md.evaluator_type == "coco"
    assert list(md.keypoint_names) == list(COCO_PERSON_KEYPOINT_NAMES)
    if COCO_MINI is not None:
        assert "coco_mini_train" in names and "coco_mini_val" in names


# ------------------------------------------------------------------------------------------------
# real data: coco-mini
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(COCO_MINI is None, reason="coco-mini not found")
@pytest.mark.parametrize("split", ["train2017", "val2017"])
def test_load_coco_mini_counts(split):
    json_file = os.path.join(COCO_MINI, "annotations", f"person_keypoints_{split}.json")
    with open(json_file) as f:
        raw = json.load(f)
    person_ids = {c["id"] for c in raw["categories"] if c["name"] == "person"}
    anns = [a for a in raw["annotations"] if a["category_id"] in person_ids]
    n_crowd = sum(1 for a in anns if a.get("iscrowd", 0))
    imgs_with_people = {a["image_id"] for a in anns if not a.get("iscrowd", 0)}

    name = f"coco_mini_{split[:-4]}"
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == len(raw["images"])
    assert sum(len(d["annotations"]) for d in dicts) == len(anns)
    loaded = [a for d in dicts for a in d["annotations"]]
    assert sum(1 for a in loaded if a["iscrowd"] == 0) == len(anns) - n_crowd
    assert sum(1 for a in loaded if a["iscrowd"] == 1) == n_crowd
    stats = MetadataCatalog.get(name).load_stats
    assert stats["images_kept"] == len(raw["images"]) and stats["crowd_kept"] == n_crowd

    # one annotation field by field
    a0 = anns[0]
    d0 = next(d for d in dicts if d["image_id"] == a0["image_id"])
    l0 = next(a for a in d0["annotations"] if a["id"] == a0["id"])
    x, y, w, h = a0["bbox"]
    assert l0["bbox"] == pytest.approx([x, y, x + w, y + h])
    assert l0["bbox_mode"] == "XYXY_ABS" and l0["category_id"] == 0 and l0["activity"] is None
    assert len(l0["keypoints"]) == 51
    k = np.array(l0["keypoints"]).reshape(17, 3)
    kr = np.array(a0["keypoints"], dtype=float).reshape(17, 3)
    assert np.allclose(k[:, 2], kr[:, 2])
    assert np.allclose(k[kr[:, 2] > 0, :2], kr[kr[:, 2] > 0, :2] + 0.5)  # detectron2's +0.5
    assert os.path.isabs(d0["file_name"]) and os.path.isfile(d0["file_name"])
    assert "segmentation" in l0

    filtered = get_detection_dataset_dicts(name, filter_empty=True)
    assert len(filtered) == len(imgs_with_people)
    assert len(get_detection_dataset_dicts(name, filter_empty=False)) == len(raw["images"])

    md = MetadataCatalog.get(name)
    assert md.json_file == json_file and md.activity_classes is None
    assert get_dataset_json(name) == json_file


# ------------------------------------------------------------------------------------------------
# bad records
# ------------------------------------------------------------------------------------------------
def _kpts(points, n=17):
    k = [0] * (3 * n)
    for j, (x, y) in points.items():
        k[3 * j : 3 * j + 3] = [x, y, 2]
    return k


def _write_images(root):
    """name -> (h, w) of every image written; the corrupt and the missing are included."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.RandomState(0)
    sizes = {}

    def put(name, arr):
        assert cv2.imwrite(os.path.join(root, name), arr)
        sizes[name] = arr.shape[:2]

    put("good.png", rng.randint(0, 255, (40, 60, 3), dtype=np.uint8))
    put("gray.png", rng.randint(0, 255, (40, 60), dtype=np.uint8))
    put("rgba.png", rng.randint(0, 255, (40, 60, 4), dtype=np.uint8))
    put("deep16.png", rng.randint(0, 65535, (40, 60), dtype=np.uint16))
    from PIL import Image

    pal = Image.fromarray(rng.randint(0, 8, (40, 60), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=8
    )
    pal.save(os.path.join(root, "palette.png"))
    sizes["palette.png"] = (40, 60)
    with open(os.path.join(root, "corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg" + bytes(range(256)))
    sizes["corrupt.jpg"] = (40, 60)
    sizes["missing.png"] = (40, 60)  # never written
    return sizes


def _bad_json(tmp_path):
    image_root = tmp_path / "images"
    sizes = _write_images(str(image_root))
    names = ["good.png", "gray.png", "rgba.png", "deep16.png", "palette.png", "corrupt.jpg",
             "missing.png"]
    images = [
        {"id": i + 1, "file_name": n, "height": sizes[n][0], "width": sizes[n][1]}
        for i, n in enumerate(names)
    ]
    square = [10, 10, 30, 10, 30, 30, 10, 30]
    ok_kpts = _kpts({0: (15, 12), 1: (16, 11)})
    base = dict(category_id=1, iscrowd=0, area=400.0)
    anns = [
        # good
        dict(base, id=101, image_id=1, bbox=[10, 10, 20, 20], segmentation=[square],
             keypoints=ok_kpts, activity="walking"),
        # box w = 0 but a valid polygon -> box recomputed from the mask
        dict(base, id=102, image_id=1, bbox=[10, 10, 0, 20], segmentation=[square],
             keypoints=ok_kpts),
        # box h < 0 and no segmentation -> skipped
        dict(base, id=103, image_id=1, bbox=[10, 10, 20, -5], segmentation=[], keypoints=ok_kpts),
        # two keypoints outside the image -> v = 0
        dict(base, id=104, image_id=2, bbox=[5, 5, 20, 20], segmentation=[square],
             keypoints=_kpts({0: (15, 12), 5: (75, 10), 6: (10, -3)}), activity="sitting"),
        # empty segmentation -> kept without mask
        dict(base, id=105, image_id=3, bbox=[5, 5, 20, 20], segmentation=[], keypoints=ok_kpts),
        # missing segmentation key -> kept without mask
        dict(base, id=106, image_id=4, bbox=[5, 5, 20, 20], keypoints=ok_kpts),
        # crowd (RLE) -> kept with iscrowd = 1
        dict(base, id=107, image_id=5, bbox=[0, 0, 10, 10], iscrowd=1,
             segmentation={"counts": [0, 5, 35, 5, 40 * 60 - 45], "size": [40, 60]},
             keypoints=[0] * 51),
        dict(base, id=108, image_id=6, bbox=[5, 5, 20, 20], segmentation=[square],
             keypoints=ok_kpts),
        dict(base, id=109, image_id=7, bbox=[5, 5, 20, 20], segmentation=[square],
             keypoints=ok_kpts),
        # a degenerate polygon next to a good one -> polygon dropped
        dict(base, id=110, image_id=5, bbox=[10, 10, 20, 20], segmentation=[square, [1, 2, 3, 4]],
             keypoints=ok_kpts),
        # another category: ignored
        dict(base, id=111, image_id=1, category_id=2, bbox=[1, 1, 5, 5], segmentation=[square]),
    ]
    cats = [
        {"id": 1, "name": "person", "supercategory": "person",
         "keypoints": list(COCO_PERSON_KEYPOINT_NAMES)},
        {"id": 2, "name": "dog", "supercategory": "animal"},
    ]
    json_file = tmp_path / "bad.json"
    json_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(json_file), str(image_root)


def test_bad_records_counted_and_logged(tmp_path, caplog):
    json_file, image_root = _bad_json(tmp_path)
    with caplog.at_level(logging.WARNING, logger="multitask.data.coco"):
        dicts, stats = load_coco_person_json(json_file, image_root, return_stats=True)

    assert stats["images"] == 7 and stats["image_file_missing"] == 1
    assert [os.path.basename(d["file_name"]) for d in dicts] == [
        "good.png", "gray.png", "rgba.png", "deep16.png", "palette.png", "corrupt.jpg"]
    assert stats["annotations"] == 10  # person only
    assert stats["bbox_fixed_from_mask"] == 1
    assert stats["bbox_invalid_skipped"] == 1
    assert stats["keypoints_outside_image"] == 2
    assert stats["segmentation_missing"] == 2  # 105, 106 (103 is skipped for its box first)
    assert stats["polygons_dropped"] == 1
    assert stats["annotations_kept"] == 10 - 1 - 1  # 103 skipped, 109 on the missing image
    assert stats["crowd_kept"] == 1

    by_id = {a["id"]: a for d in dicts for a in d["annotations"]}
    assert 103 not in by_id and 111 not in by_id
    assert by_id[102]["bbox"] == pytest.approx([10, 10, 30, 30])  # tight box of the polygon
    k = np.array(by_id[104]["keypoints"]).reshape(17, 3)
    assert k[0, 2] == 2 and k[5, 2] == 0 and k[6, 2] == 0
    assert "segmentation" not in by_id[105] and "segmentation" not in by_id[106]
    assert by_id[107]["iscrowd"] == 1 and isinstance(by_id[107]["segmentation"], dict)
    assert len(by_id[110]["segmentation"]) == 1
    assert by_id[101]["activity"] == "walking" and by_id[102]["activity"] is None

    # every problem logged with the json, the image file and the annotation id
    text = caplog.text
    assert "bad.json" in text
    for ann_id in (102, 103, 104, 105, 110):
        assert f"annotation_id={ann_id}" in text
    assert "gray.png" in text and "missing.png" in text
    summary = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Validation of")]
    assert len(summary) == 1 and "bbox_invalid_skipped=1" in summary[0]

    # metadata through the registration path
    name = "_test_bad_records"
    register_coco_person_keypoints(name, json_file, image_root)
    try:
        assert len(DatasetCatalog.get(name)) == 6
        md = MetadataCatalog.get(name)
        assert md.activity_classes == ["sitting", "walking"]
        assert md.load_stats["bbox_invalid_skipped"] == 1
        assert md.thing_dataset_id_to_contiguous_id == {1: 0}
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _tiny_cfg():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (32,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.MIN_SIZE_TEST = 32
    cfg.INPUT.MAX_SIZE_TEST = 64
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    return cfg


def test_loaders_skip_unreadable_images(tmp_path, caplog):
    json_file, image_root = _bad_json(tmp_path)
    dicts = load_coco_person_json(json_file, image_root, check_image_files=False)
    assert len(dicts) == 7  # the missing file is only found when reading
    cfg = _tiny_cfg()

    mapper = DatasetMapper(cfg, False)
    with caplog.at_level(logging.WARNING):
        loader = build_detection_test_loader(cfg, mapper=mapper, dataset=dicts)
        seen = [b for b in loader]
    assert all(len(b) == 1 for b in seen)
    names = [os.path.basename(b[0]["file_name"]) for b in seen]
    assert names == ["good.png", "gray.png", "rgba.png", "deep16.png", "palette.png"]
    assert loader.num_skipped == 2 and mapper.num_skipped == 2
    assert "corrupt.jpg" in caplog.text and "missing.png" in caplog.text
    for b in seen:
        d = b[0]
        assert d["image"].dtype == torch.uint8 and d["image"].shape[0] == 3
        assert (d["height"], d["width"]) == (40, 60) and "instances" not in d
        assert min(d["image"].shape[1:]) == 32

    # training stream: unreadable images are replaced by readable ones
    train_mapper = DatasetMapper(cfg, True)
    it = iter(build_detection_train_loader(cfg, mapper=train_mapper, dataset=dicts))
    got = set()
    for _ in range(12):
        batch = next(it)
        assert len(batch) == 2
        for d in batch:
            got.add(os.path.basename(d["file_name"]))
            inst = d["instances"]
            assert inst.image_size == tuple(d["image"].shape[1:])
            assert inst.gt_masks.shape[1:] == d["image"].shape[1:]
    assert got <= {"good.png", "gray.png", "rgba.png", "deep16.png", "palette.png"}
    assert train_mapper.num_skipped >= 1


# ------------------------------------------------------------------------------------------------
# read_image
# ------------------------------------------------------------------------------------------------
def test_read_image_variants(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    im = read_image(str(tmp_path / "g.png"))
    assert im.shape == (3, 4, 3) and im.dtype == np.uint8
    assert (im[:, :, 0] == gray).all() and (im[:, :, 2] == gray).all()

    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 200, 10, 0  # fully transparent
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    im = read_image(str(tmp_path / "a.png"))
    assert im.shape == (3, 4, 3) and (im[..., 0] == 200).all() and (im[..., 2] == 10).all()
    im_rgb = read_image(str(tmp_path / "a.png"), format="RGB")
    assert (im_rgb[..., 2] == 200).all()

    deep = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    im = read_image(str(tmp_path / "d.png"))
    assert im.dtype == np.uint8 and im[0, :, 1].tolist() == [0, 100, 255]

    from PIL import Image

    p = Image.new("P", (5, 2))
    p.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    p.save(str(tmp_path / "p.png"))
    im = read_image(str(tmp_path / "p.png"))
    assert im.shape == (2, 5, 3) and im[0, 0].tolist() == [0, 0, 255]  # red, in BGR

    (tmp_path / "bad.jpg").write_bytes(b"garbage" * 10)
    (tmp_path / "empty.png").write_bytes(b"")
    for name, reason in [("bad.jpg", "decod"), ("empty.png", "empty"), ("nope.png", "not exist")]:
        with pytest.raises(ImageReadError) as e:
            read_image(str(tmp_path / name))
        assert e.value.file_name.endswith(name) and reason in e.value.reason


def test_annotations_to_instances_fields():
    annos = [
        {"bbox": [1, 2, 5, 6], "bbox_mode": "XYXY_ABS", "category_id": 0,
         "segmentation": [[1, 2, 5, 2, 5, 6, 1, 6]], "keypoints": [1.0] * 51,
         "activity": "running"},
        {"bbox": [0, 0, 2, 2], "bbox_mode": "XYXY_ABS", "category_id": 0,
         "segmentation": {"counts": [0, 2, 8, 2, 88], "size": [10, 10]}, "keypoints": [0] * 51,
         "activity": "juggling"},
        {"bbox": [0, 0, 2, 2], "bbox_mode": "XYXY_ABS", "category_id": 0, "keypoints": [0] * 51},
    ]
    inst = annotations_to_instances(annos, (10, 10), ["walking", "running"])
    assert inst.gt_boxes.shape == (3, 4) and inst.gt_classes.tolist() == [0, 0, 0]
    assert inst.gt_masks.dtype == torch.uint8 and inst.gt_masks.shape == (3, 10, 10)
    assert int(inst.gt_masks[0].sum()) == 16 and int(inst.gt_masks[1].sum()) == 4
    assert inst.gt_mask_valid.tolist() == [True, True, False] and int(inst.gt_masks[2].sum()) == 0
    assert inst.gt_keypoints.shape == (3, 17, 3)
    assert inst.gt_activity.tolist() == [1, -1, -1] and inst.gt_activity.dtype == torch.int64


# ------------------------------------------------------------------------------------------------
# registration helpers
# ------------------------------------------------------------------------------------------------
def test_register_datasets_from_cfg(tmp_path):
    json_file, image_root = _bad_json(tmp_path)
    cfg = get_cfg()
    cfg.DATASETS.REGISTER = [["_test_cfg_ds", json_file, image_root]]
    try:
        assert register_datasets_from_cfg(cfg) == ["_test_cfg_ds"]
        assert register_datasets_from_cfg(cfg) == ["_test_cfg_ds"]  # idempotent
        assert len(DatasetCatalog.get("_test_cfg_ds")) == 6
    finally:
        DatasetCatalog.remove("_test_cfg_ds")
        MetadataCatalog.remove("_test_cfg_ds")
    cfg.DATASETS.REGISTER = [["_test_cfg_missing", str(tmp_path / "nope.json"), image_root]]
    with pytest.raises(FileNotFoundError, match="nope.json"):
        register_datasets_from_cfg(cfg)
    cfg.DATASETS.REGISTER = [["_test_cfg_short", json_file]]
    with pytest.raises(ValueError, match="name, json_file, image_root"):
        register_datasets_from_cfg(cfg)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        load_coco_person_json(str(tmp_path / "absent.json"), image_root, "_absent")


def test_synthetic_registration_is_lazy(tmp_path, monkeypatch):
    """The synthetic loader imports multitask.data.synthetic only when called, and records the
    json in the metadata so get_dataset_json finds it (a stand-in module is used here)."""
    json_file, image_root = _bad_json(tmp_path)
    calls = []

    def ensure_synthetic_dataset(root, split):
        calls.append((root, split))
        return json_file, image_root

    fake = types.ModuleType("multitask.data.synthetic")
    fake.ensure_synthetic_dataset = ensure_synthetic_dataset
    monkeypatch.setitem(sys.modules, "multitask.data.synthetic", fake)
    name = "synthetic_people_train"
    saved = MetadataCatalog.get(name).as_dict()
    saved.pop("name", None)
    try:
        MetadataCatalog.get(name).set(json_file=None)
        assert get_dataset_json(name) == json_file
        assert calls and calls[0][1] == "train"
        assert MetadataCatalog.get(name).image_root == image_root
    finally:
        MetadataCatalog.remove(name)
        MetadataCatalog.get(name).set(**saved)


def test_test_resize_is_fixed():
    aug = ResizeShortestEdge(800, 1333, "choice")
    img = np.zeros((480, 640, 3), np.uint8)
    assert {aug.get_transform(img).output_size(480, 640) for _ in range(5)} == {(800, 1067)}

"""Tests of multitask.evaluation: COCOEvaluator against pycocotools run directly, activity metrics
on hand-built cases with known answers, inference_on_dataset and the result helpers."""
import copy
import json
import logging
import math
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from shared_data import COCO_MINI_VAL_JSON as REAL_GT

from multitask.config import get_cfg
from multitask.evaluation import (
    KEYPOINT_COORD_OFFSET,
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    flatten_results_dict,
    greedy_match,
    inference_on_dataset,
    instances_to_coco_json,
    print_csv_format,
    verify_results,
)
from multitask.structures import Instances

ACTIVITIES = ["walking", "running", "sitting", "standing"]
KPT_NAMES = [f"kp{i}" for i in range(17)]
METRICS = {
    "bbox": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "segm": ["AP", "AP50", "AP75", "APs", "APm", "APl"],
    "keypoints": ["AP", "AP50", "AP75", "APm", "APl"],
}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _uncompressed_rle(mask):
    """COCO uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def _ellipse_mask(h, w, box):
    x, y, bw, bh = box
    yy, xx = np.mgrid[:h, :w]
    cx, cy = x + bw / 2, y + bh / 2
    inside = ((xx + 0.5 - cx) / (bw / 2)) ** 2 + ((yy + 0.5 - cy) / (bh / 2)) ** 2 <= 1
    return inside.astype(np.uint8)


def _make_gt_json(path, seed=0):
    """A small COCO person json: 4 images, 2-4 persons each, polygon / RLE masks, keypoints,
    crowd regions, activities (some unknown)."""
    rng = np.random.RandomState(seed)
    images, anns = [], []
    sizes = [(120, 160), (100, 140), (130, 110), (150, 150)]
    ann_id = 1
    for img_id, (h, w) in enumerate(sizes, start=1):
        images.append({"id": img_id, "height": h, "width": w, "file_name": f"{img_id}.jpg"})
        for k in range(rng.randint(2, 5)):
            bw, bh = rng.uniform(18, 45), rng.uniform(35, 75)
            x, y = rng.uniform(0, w - bw - 1), rng.uniform(0, h - bh - 1)
            box = [float(x), float(y), float(bw), float(bh)]
            if k % 2 == 0:  # polygon: an octagon inscribed in the box
                t = np.linspace(0, 2 * np.pi, 9)[:-1]
                px = x + bw / 2 + 0.48 * bw * np.cos(t)
                py = y + bh / 2 + 0.48 * bh * np.sin(t)
                seg = [np.stack([px, py], 1).flatten().round(2).tolist()]
            else:  # compressed RLE of an ellipse
                rle = mask_util.encode(np.asfortranarray(_ellipse_mask(h, w, box)))
                seg = {"counts": rle["counts"].decode("utf-8"), "size": [h, w]}
            v = rng.choice([0, 1, 2], size=17, p=[0.25, 0.25, 0.5])
            if k == 1 and img_id == 2:
                v[:] = 0  # a person without keypoints (ignored by keypoint AP)
            kx = np.where(v > 0, x + rng.uniform(0, bw, 17), 0.0)
            ky = np.where(v > 0, y + rng.uniform(0, bh, 17), 0.0)
            kpts = np.stack([kx.round(2), ky.round(2), v], 1).flatten().tolist()
            activity = ACTIVITIES[rng.randint(0, 4)] if rng.rand() > 0.2 else None
            anns.append(
                {
                    "id": ann_id, "image_id": img_id, "category_id": 1, "bbox": box,
                    "area": float(mask_util.area(mask_util.merge(
                        mask_util.frPyObjects(seg, h, w) if isinstance(seg, list) else [seg]))),
                    "segmentation": seg, "iscrowd": 0, "keypoints": [float(a) for a in kpts],
                    "num_keypoints": int((v > 0).sum()), "activity": activity,
                }
            )
            ann_id += 1
        if img_id in (1, 3):  # a crowd region with an uncompressed RLE
            cm = np.zeros((h, w), dtype=np.uint8)
            cm[h // 2: h // 2 + 30, w // 2: w // 2 + 40] = 1
            anns.append(
                {
                    "id": ann_id, "image_id": img_id, "category_id": 1,
                    "bbox": [float(w // 2), float(h // 2), 40.0, 30.0], "area": float(cm.sum()),
                    "segmentation": _uncompressed_rle(cm), "iscrowd": 1,
                    "keypoints": [0.0] * 51, "num_keypoints": 0, "activity": None,
                }
            )
            ann_id += 1
    dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": KPT_NAMES, "skeleton": []}],
    }
    with open(path, "w") as f:
        json.dump(dataset, f)
    return str(path)


def _load_coco(path):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(path)


def _perturbed_predictions(coco, seed, with_masks=True, with_keypoints=True, with_activity=True):
    """Per image (inputs, outputs) made by perturbing the ground truth, with misses and false
    positives. Returns (batches, reference_results) where reference_results is the COCO results
    list built independently of the evaluator."""
    rng = np.random.RandomState(seed)
    batches, reference = [], []
    for img_id in sorted(coco.getImgIds()):
        img = coco.imgs[img_id]
        h, w = img["height"], img["width"]
        anns = [a for a in coco.imgToAnns[img_id] if not a["iscrowd"]]
        boxes, scores, masks, kpts, acts, probs = [], [], [], [], [], []
        for a in anns:
            if rng.rand() < 0.1:
                continue  # a miss
            x, y, bw, bh = a["bbox"]
            n = rng.normal(0, 0.08, 4)
            x0, y0 = x + n[0] * bw, y + n[1] * bh
            x1, y1 = x + bw + n[2] * bw, y + bh + n[3] * bh
            boxes.append([x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)])
            scores.append(rng.uniform(0.05, 1.0))
            m = coco.annToMask(a).astype(bool)
            dy, dx = rng.randint(-3, 4, 2)
            m = np.roll(np.roll(m, dy, 0), dx, 1)
            masks.append(m)
            g = np.array(a["keypoints"], dtype=np.float64).reshape(17, 3)
            k = np.zeros((17, 3))
            sd = max(bw, bh) * 0.04
            k[:, 0] = np.where(g[:, 2] > 0, g[:, 0], x + bw / 2) + rng.normal(0, sd, 17)
            k[:, 1] = np.where(g[:, 2] > 0, g[:, 1], y + bh / 2) + rng.normal(0, sd, 17)
            k[:, 2] = rng.uniform(0, 1, 17)
            k[:, :2] += KEYPOINT_COORD_OFFSET  # the model predicts continuous coordinates
            kpts.append(k)
            p = rng.dirichlet(np.ones(len(ACTIVITIES)))
            if a.get("activity") in ACTIVITIES and rng.rand() < 0.6:  # mostly right
                j, top = ACTIVITIES.index(a["activity"]), int(np.argmax(p))
                p[[j, top]] = p[[top, j]]
            acts.append(int(np.argmax(p)))
            probs.append(p)
        for _ in range(rng.randint(0, 3)):  # false positives
            bw, bh = rng.uniform(10, 40), rng.uniform(20, 60)
            x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            boxes.append([x0, y0, x0 + bw, y0 + bh])
            scores.append(rng.uniform(0.05, 0.6))
            m = np.zeros((h, w), dtype=bool)
            m[int(y0): int(y0 + bh), int(x0): int(x0 + bw)] = True
            masks.append(m)
            kpts.append(np.stack([rng.uniform(x0, x0 + bw, 17), rng.uniform(y0, y0 + bh, 17),
                                  rng.uniform(0, 1, 17)], 1))
            p = rng.dirichlet(np.ones(len(ACTIVITIES)))
            acts.append(int(np.argmax(p)))
            probs.append(p)
        r = len(boxes)
        fields = {
            "pred_boxes": torch.tensor(np.array(boxes).reshape(r, 4), dtype=torch.float32),
            "scores": torch.tensor(scores, dtype=torch.float32),
            "pred_classes": torch.zeros(r, dtype=torch.int64),
        }
        if with_masks:
            fields["pred_masks"] = torch.from_numpy(np.array(masks).reshape(r, h, w))
        if with_keypoints:
            fields["pred_keypoints"] = torch.tensor(
                np.array(kpts).reshape(r, 17, 3), dtype=torch.float32
            )
        if with_activity:
            fields["pred_activity"] = torch.tensor(acts, dtype=torch.int64)
            fields["activity_scores"] = torch.tensor(
                np.array(probs).reshape(r, -1), dtype=torch.float32
            )
        inst = Instances((h, w), **fields)
        batches.append(([{"image_id": img_id, "height": h, "width": w}], [{"instances": inst}]))

        # independent conversion to COCO results
        for i in range(r):
            b = fields["pred_boxes"][i].double().tolist()
            res = {
                "image_id": img_id,
                "category_id": 1,
                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                "score": float(fields["scores"][i]),
            }
            if with_masks:
                m = fields["pred_masks"][i].numpy().astype(np.uint8)
                rle = mask_util.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("utf-8")
                res["segmentation"] = rle
            if with_keypoints:
                k = fields["pred_keypoints"][i].double()
                k[:, :2] -= KEYPOINT_COORD_OFFSET  # back to COCO's pixel indices
                res["keypoints"] = k.flatten().tolist()
            reference.append(res)
    return batches, reference


def _reference_coco_eval(coco_gt, results, iou_type, sigmas=None):
    import contextlib
    import io

    results = copy.deepcopy(results)
    if iou_type == "segm":  # detectron2 convention: the detection's area comes from its mask
        for r in results:
            r.pop("bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, iou_type)
        ev.params.catIds = [1]
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {
        m: ev.stats[i] * 100 if ev.stats[i] >= 0 else float("nan")
        for i, m in enumerate(METRICS[iou_type])
    }


def _assert_metrics_equal(actual, expected):
    assert list(actual.keys()) == list(expected.keys())
    for k in expected:
        if math.isnan(expected[k]):
            assert math.isnan(actual[k]), k
        else:
            assert actual[k] == pytest.approx(expected[k], abs=1e-9), k


def _run(evaluator, batches):
    evaluator.reset()
    for inputs, outputs in batches:
        evaluator.process(inputs, outputs)
    return evaluator.evaluate()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = _make_gt_json(tmp_path_factory.mktemp("gt") / "gt.json")
    coco = _load_coco(path)
    batches, reference = _perturbed_predictions(coco, seed=1)
    return path, coco, batches, reference


# ------------------------------------------------------------------------------------------------
# COCO tasks vs pycocotools
# ------------------------------------------------------------------------------------------------
def test_coco_evaluator_matches_pycocotools(synthetic, tmp_path):
    path, coco, batches, reference = synthetic
    evaluator = COCOEvaluator(path, output_dir=str(tmp_path), activity_classes=ACTIVITIES)
    results = _run(evaluator, batches)
    assert list(results.keys()) == ["bbox", "segm", "keypoints", "activity"]
    for task in ("bbox", "segm", "keypoints"):
        expected = _reference_coco_eval(coco, reference, task)
        _assert_metrics_equal(results[task], expected)
        assert 5 < results[task]["AP"] < 99  # non-trivial numbers

    # the written results json is the same as the independently built one (+ activity fields)
    with open(tmp_path / "coco_instances_results.json") as f:
        written = json.load(f)
    assert len(written) == len(reference)
    for w, r in zip(written, reference):
        assert w["image_id"] == r["image_id"] and w["category_id"] == 1
        assert w["bbox"] == pytest.approx(r["bbox"]) and w["score"] == pytest.approx(r["score"])
        assert w["segmentation"] == r["segmentation"]
        assert w["keypoints"] == pytest.approx(r["keypoints"])
        assert w["activity"] in ACTIVITIES and ACTIVITIES[w["activity_id"]] == w["activity"]
        assert 0 < w["activity_score"] <= 1


def test_coco_evaluator_custom_oks_sigmas(synthetic):
    path, coco, batches, reference = synthetic
    sigmas = np.linspace(0.03, 0.12, 17)
    evaluator = COCOEvaluator(
        path, tasks=("keypoints",), kpt_oks_sigmas=sigmas.tolist(), activity_classes=ACTIVITIES
    )
    results = _run(evaluator, batches)
    # activity is evaluated whenever GT and predictions have it (unless evaluate_activity=False)
    assert list(results.keys()) == ["keypoints", "activity"]
    expected = _reference_coco_eval(coco, reference, "keypoints", sigmas)
    _assert_metrics_equal(results["keypoints"], expected)
    default = _reference_coco_eval(coco, reference, "keypoints")
    assert results["keypoints"]["AP"] != pytest.approx(default["AP"])
    with pytest.raises(ValueError):
        COCOEvaluator(path, kpt_oks_sigmas=[0.1] * 5)


def test_missing_fields_drop_tasks(synthetic):
    path, coco, _, _ = synthetic
    batches, reference = _perturbed_predictions(coco, seed=1, with_masks=False, with_activity=False)
    results = _run(COCOEvaluator(path, activity_classes=ACTIVITIES), batches)
    assert list(results.keys()) == ["bbox", "keypoints"]  # MASK_ON False -> no segm; no activity
    _assert_metrics_equal(results["bbox"], _reference_coco_eval(coco, reference, "bbox"))


def test_no_predictions(synthetic, caplog):
    path, coco, _, _ = synthetic
    evaluator = COCOEvaluator(path, activity_classes=ACTIVITIES)
    # images with empty Instances (all fields present, zero rows)
    batches = []
    for img_id in coco.getImgIds():
        h, w = coco.imgs[img_id]["height"], coco.imgs[img_id]["width"]
        inst = Instances((h, w), pred_boxes=torch.zeros(0, 4), scores=torch.zeros(0),
                         pred_classes=torch.zeros(0, dtype=torch.int64),
                         pred_masks=torch.zeros(0, h, w, dtype=torch.bool),
                         pred_keypoints=torch.zeros(0, 17, 3))
        batches.append(([{"image_id": img_id}], [{"instances": inst}]))
    with caplog.at_level(logging.WARNING):
        results = _run(evaluator, batches)
    assert list(results.keys()) == ["bbox", "segm", "keypoints"]
    for task, res in results.items():
        assert list(res.keys()) == METRICS[task] and all(math.isnan(v) for v in res.values())
    assert "No predictions" in caplog.text
    # nothing processed at all
    evaluator.reset()
    results = evaluator.evaluate()
    assert set(results) == {"bbox", "segm", "keypoints"}
    assert all(math.isnan(v) for res in results.values() for v in res.values())


@pytest.mark.skipif(not os.path.isfile(REAL_GT), reason="coco-mini not available")
def test_real_coco_mini_gt(tmp_path):
    coco = _load_coco(REAL_GT)
    batches, reference = _perturbed_predictions(coco, seed=2017, with_activity=False)
    # the detection json is fixed by the seed; make sure it is not empty and covers most images
    assert len(reference) > 100 and len({r["image_id"] for r in reference}) > 60
    results = _run(COCOEvaluator(REAL_GT, output_dir=str(tmp_path)), batches)
    assert list(results.keys()) == ["bbox", "segm", "keypoints"]
    for task in ("bbox", "segm", "keypoints"):
        _assert_metrics_equal(results[task], _reference_coco_eval(coco, reference, task))
        assert 5 < results[task]["AP"] < 99


def test_dataset_name_lookup(synthetic):
    """A registered dataset's name gives the evaluator its json and its activity classes."""
    from multitask.data import DatasetCatalog, MetadataCatalog, register_coco_person_keypoints

    path, _, batches, _ = synthetic
    register_coco_person_keypoints("my_dataset_val", path, os.path.dirname(path))
    MetadataCatalog.get("my_dataset_val").set(activity_classes=ACTIVITIES)
    try:
        evaluator = COCOEvaluator("my_dataset_val", tasks=("bbox",))
        assert evaluator._json_file == path
        results = _run(evaluator, batches[:1])
        assert "bbox" in results and "activity" in results  # classes came from the metadata
        with pytest.raises(FileNotFoundError, match="'no_such_dataset'"):
            COCOEvaluator("no_such_dataset", tasks=("bbox",))
    finally:
        DatasetCatalog.remove("my_dataset_val")
        MetadataCatalog.remove("my_dataset_val")


def test_instances_to_coco_json_conventions():
    inst = Instances(
        (10, 12),
        pred_boxes=torch.tensor([[1.0, 2.0, 5.0, 9.0]]),
        scores=torch.tensor([0.75]),
        pred_classes=torch.tensor([0]),
        pred_keypoints=torch.tensor([[[3.0, 4.0, 0.5]] * 17]),
        pred_activity=torch.tensor([2]),
        activity_scores=torch.tensor([[0.1, 0.2, 0.6, 0.1]]),
    )
    (res,) = instances_to_coco_json(inst, 7, {0: 1}, ACTIVITIES)
    assert res["image_id"] == 7 and res["category_id"] == 1
    assert res["bbox"] == [1.0, 2.0, 4.0, 7.0]  # boxes are not shifted
    # continuous coordinates -> COCO pixel indices (detectron2: -0.5); the score stays
    assert res["keypoints"][:3] == [2.5, 3.5, 0.5]
    (raw,) = instances_to_coco_json(inst, 7, {0: 1}, ACTIVITIES, keypoint_coord_offset=0.0)
    assert raw["keypoints"][:3] == [3.0, 4.0, 0.5]
    assert res["activity"] == "sitting" and res["activity_id"] == 2
    assert res["activity_score"] == pytest.approx(0.6)


def test_keypoint_offset_matches_data_loader():
    """The evaluator undoes exactly the +0.5 the data loader adds to GT keypoints."""
    from multitask import data
    from multitask.data.validation import clean_keypoints

    assert data.KEYPOINT_COORD_OFFSET == KEYPOINT_COORD_OFFSET
    kpts, _ = clean_keypoints([3, 4, 2] * 17, 10, 10)
    assert kpts[:3] == [3 + KEYPOINT_COORD_OFFSET, 4 + KEYPOINT_COORD_OFFSET, 2.0]


# ------------------------------------------------------------------------------------------------
# activity
# ------------------------------------------------------------------------------------------------
def _activity_case(tmp_path):
    """Two 200x200 images with known answers (boxes XYWH, detections on exact GT boxes)."""
    def ann(i, img, box, act, crowd=0):
        return {"id": i, "image_id": img, "category_id": 1, "bbox": box, "area": box[2] * box[3],
                "iscrowd": crowd, "activity": act}

    gt = {
        "images": [{"id": 1, "height": 200, "width": 200}, {"id": 2, "height": 200, "width": 200}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            ann(1, 1, [10, 10, 40, 80], "walking"),    # A
            ann(2, 1, [60, 10, 40, 80], "running"),    # B
            ann(3, 1, [110, 10, 40, 80], "sitting"),   # C
            ann(4, 1, [150, 100, 40, 80], None),       # D: unknown activity
            ann(5, 1, [10, 120, 100, 70], None, 1),    # E: crowd
            ann(6, 2, [10, 10, 40, 80], "sitting"),    # P
            ann(7, 2, [60, 10, 40, 80], "sitting"),    # Q
            ann(8, 2, [110, 10, 40, 80], "walking"),   # R
        ],
    }
    path = tmp_path / "act.json"
    path.write_text(json.dumps(gt))

    def pred(h, dets):
        boxes = [[x, y, x + w, y + hh] for (x, y, w, hh), _, _ in dets]
        boxes = torch.tensor(boxes, dtype=torch.float32)
        return Instances((h, h), pred_boxes=boxes, scores=torch.tensor([s for _, s, _ in dets]),
                         pred_classes=torch.zeros(len(dets), dtype=torch.int64),
                         pred_activity=torch.tensor([ACTIVITIES.index(a) for _, _, a in dets]))

    img1 = pred(200, [
        ([10, 10, 40, 80], 0.9, "walking"),    # A, correct
        ([60, 10, 40, 80], 0.8, "running"),    # B, correct
        ([110, 10, 40, 80], 0.7, "standing"),  # C, wrong
        ([150, 100, 40, 80], 0.95, "walking"),  # D: unknown -> neither counted nor a false positive
        ([20, 130, 40, 50], 0.85, "walking"),  # inside crowd E -> ignored
        ([14, 12, 40, 80], 0.5, "running"),    # duplicate of A: unmatched (greedy) -> FP "running"
    ])
    img2 = pred(200, [
        ([10, 10, 40, 80], 0.9, "sitting"),    # P, correct
        ([110, 10, 40, 80], 0.75, "sitting"),  # R (walking), wrong -> FP for sitting
        ([60, 10, 40, 80], 0.7, "sitting"),    # Q, correct
    ])
    batches = [
        ([{"image_id": 1}], [{"instances": img1}]),
        ([{"image_id": 2}], [{"instances": img2}]),
    ]
    return str(path), batches


def test_activity_known_answers(tmp_path, caplog):
    path, batches = _activity_case(tmp_path)
    evaluator = COCOEvaluator(path, activity_classes=ACTIVITIES)
    assert "segm" not in evaluator._gt_tasks and "keypoints" not in evaluator._gt_tasks

    # image 1 alone: 3 matched persons with a known activity, 2 labelled correctly
    evaluator.reset()
    for inputs, outputs in batches:
        evaluator.process(inputs, outputs)
    with caplog.at_level(logging.INFO):
        res1 = evaluator.evaluate(img_ids=[1])["activity"]
    assert res1["accuracy"] == pytest.approx(200 / 3)
    assert res1["accuracy-walking"] == 100 and res1["accuracy-running"] == 100
    assert res1["accuracy-sitting"] == 0 and math.isnan(res1["accuracy-standing"])
    # the only walking GT is found; the detections on D and in the crowd are ignored
    assert res1["AP-walking"] == pytest.approx(100)
    assert res1["AP-running"] == pytest.approx(100)  # duplicate FP ranked after the TP
    assert res1["AP-sitting"] == 0 and math.isnan(res1["AP-standing"])
    assert res1["mAP"] == pytest.approx(200 / 3)
    assert "Per-activity results" in caplog.text

    # both images
    res = _run(evaluator, batches)
    assert list(res.keys()) == ["bbox", "activity"]
    act = res["activity"]
    assert act["accuracy"] == pytest.approx(400 / 6)  # A B P Q right, C R wrong
    assert act["accuracy-walking"] == pytest.approx(50)
    assert act["accuracy-sitting"] == pytest.approx(200 / 3)
    # walking: 2 GT (A, R), one found -> precision 1 up to recall 0.5: 51 of 101 recall points
    assert act["AP-walking"] == pytest.approx(100 * 51 / 101)
    # sitting: 3 GT (C, P, Q); ranked TP, FP, TP -> p=1 for r<=1/3 (34 points), 2/3 up to r=2/3 (33)
    assert act["AP-sitting"] == pytest.approx(100 * (34 + 33 * 2 / 3) / 101)
    assert act["AP-running"] == pytest.approx(100)
    assert act["AP50-sitting"] == pytest.approx(act["AP-sitting"])
    assert act["mAP"] == pytest.approx((act["AP-walking"] + act["AP-sitting"] + 100) / 3)
    assert math.isnan(act["AP-standing"])


def test_activity_can_be_disabled(tmp_path):
    path, batches = _activity_case(tmp_path)
    res = _run(COCOEvaluator(path, activity_classes=ACTIVITIES, evaluate_activity=False), batches)
    assert list(res.keys()) == ["bbox"]


def test_greedy_match():
    gt = np.array([[0, 0, 10, 10], [20, 0, 10, 10]], dtype=float)
    dt = np.array([[1, 0, 10, 10], [0, 0, 10, 10], [21, 0, 10, 10], [50, 50, 5, 5]], dtype=float)
    match = greedy_match(gt, dt, np.array([0.5, 0.9, 0.7, 0.8]))
    assert match.tolist() == [-1, 0, 1, -1]  # the higher-scored duplicate takes GT 0


# ------------------------------------------------------------------------------------------------
# inference loop and helpers
# ------------------------------------------------------------------------------------------------
class _ReplayModel(torch.nn.Module):
    def __init__(self, outputs_by_id):
        super().__init__()
        self.outputs_by_id = outputs_by_id
        self.flags = []

    def forward(self, inputs):
        self.flags.append((self.training, torch.is_inference_mode_enabled()))
        return [self.outputs_by_id[x["image_id"]] for x in inputs]


def test_inference_on_dataset(synthetic, caplog):
    path, coco, batches, reference = synthetic
    model = _ReplayModel({inp[0]["image_id"]: out[0] for inp, out in batches})
    model.train()
    loader = [inp for inp, _ in batches]

    class _Counter(DatasetEvaluator):
        def reset(self):
            self.n = 0

        def process(self, inputs, outputs):
            self.n += len(inputs)

        def evaluate(self):
            return {"count": {"images": float(self.n)}}

    coco_evaluator = COCOEvaluator(path, tasks=("bbox",), evaluate_activity=False)
    evaluator = DatasetEvaluators([coco_evaluator, _Counter()])
    with caplog.at_level(logging.INFO):
        results = inference_on_dataset(model, loader, evaluator)
    assert model.training  # restored
    assert model.flags and all(f == (False, True) for f in model.flags)
    assert results["count"]["images"] == len(batches)
    _assert_metrics_equal(results["bbox"], _reference_coco_eval(coco, reference, "bbox"))
    assert "Total inference time" in caplog.text and "s / img per device" in caplog.text
    assert inference_on_dataset(model, loader, None) == {}


def test_verify_results_and_helpers(caplog):
    results = {
        "bbox": {"AP": 50.0, "AP50": 70.0},
        "activity": {"accuracy": 66.6, "AP-walking": float("nan")},
    }
    cfg = get_cfg()
    assert verify_results(cfg, results)  # nothing expected
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 50.5, 1.0], ["activity", "accuracy", 66.0, 1.0]]
    assert verify_results(cfg, results)
    cfg.TEST.EXPECTED_RESULTS = [["bbox", "AP", 52.0, 1.0]]
    with caplog.at_level(logging.ERROR):
        assert not verify_results(cfg, results)
    assert "verification failed" in caplog.text
    cfg.TEST.EXPECTED_RESULTS = [["activity", "AP-walking", 0.0, 1e9]]  # NaN never passes
    assert not verify_results(cfg, results)
    cfg.TEST.EXPECTED_RESULTS = [["segm", "AP", 0.0, 1e9]]  # missing task
    assert not verify_results(cfg, results)

    assert flatten_results_dict(results)["bbox/AP50"] == 70.0
    caplog.clear()
    with caplog.at_level(logging.INFO):
        print_csv_format(results)
    assert "copypaste: AP,AP50" in caplog.text and "copypaste: 50.0000,70.0000" in caplog.text
    assert "AP-walking" not in caplog.text

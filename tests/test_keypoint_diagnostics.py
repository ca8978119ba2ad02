"""Mean-pose baseline and keypoint errors (multitask.evaluation.keypoint_diagnostics), and the
tools/keypoint_error.py report built on them, on ground truth made by the test."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from multitask.data.synthetic import KEYPOINT_NAMES
from multitask.evaluation.keypoint_diagnostics import keypoint_errors, mean_pose, mean_pose_results

TOOL = Path(__file__).resolve().parents[1] / "tools" / "keypoint_error.py"


def _person(ann_id, image_id, box, rel, v=2):
    """A person with box ``[x, y, w, h]`` and keypoints at box-relative ``rel (17, 2)``."""
    x, y, w, h = box
    kp = np.concatenate([rel * [w, h] + [x, y], np.full((17, 1), v)], axis=1)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": list(box),
        "area": w * h * 0.5,
        "keypoints": kp.reshape(-1).tolist(),
        "num_keypoints": 17 if v else 0,
    }


def _dataset(num_images=6):
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, num_images + 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "height": 400, "width": 400})
        for j in range(2):
            box = [20 + 180 * j, 30, 80 + 10 * i, 160 + 5 * i]
            rel = rng.uniform(0.05, 0.95, size=(17, 2))  # every person in its own pose
            anns.append(_person(len(anns) + 1, i, box, rel))
    anns.append(_person(len(anns) + 1, 1, [300, 300, 10, 20], np.full((17, 2), 0.5), v=0))
    cats = [{"id": 1, "name": "person", "keypoints": list(KEYPOINT_NAMES), "skeleton": []}]
    return {"images": images, "annotations": anns, "categories": cats}


def _as_results(gt, jitter=0.0):
    rng = np.random.default_rng(1)
    out = []
    for a in gt["annotations"]:
        if not a["num_keypoints"]:
            continue
        kp = np.asarray(a["keypoints"], dtype=float).reshape(17, 3)
        kp[:, :2] += rng.normal(0, jitter, size=(17, 2))
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": 1,
                "bbox": a["bbox"],
                "score": 0.9,
                "keypoints": kp.reshape(-1).tolist(),
            }
        )
    return out


def test_mean_pose_averages_box_relative_positions():
    gt = _dataset()
    labelled = [a for a in gt["annotations"] if a["num_keypoints"]]
    rel = []
    for a in labelled:
        x, y, w, h = a["bbox"]
        k = np.asarray(a["keypoints"]).reshape(17, 3)
        rel.append(np.stack([(k[:, 0] - x) / w, (k[:, 1] - y) / h], axis=1))
    assert np.allclose(mean_pose(gt), np.mean(rel, axis=0))  # the unlabelled person is left out
    with pytest.raises(ValueError):
        mean_pose({"annotations": [gt["annotations"][-1]]})


def test_mean_pose_results_place_the_pose_in_each_box():
    pose = np.tile([[0.25, 0.5]], (17, 1))
    res = mean_pose_results([{"image_id": 1, "bbox": [10, 20, 40, 80], "score": 0.3}], pose)
    kp = np.asarray(res[0]["keypoints"]).reshape(17, 3)
    assert np.allclose(kp[:, :2], [20, 60]) and res[0]["score"] == 0.3


def test_keypoint_errors_zero_for_ground_truth_and_scale_free():
    gt = _dataset()
    err = keypoint_errors(gt, _as_results(gt))
    assert err.shape == (12, 17) and np.allclose(err, 0)
    shifted = _as_results(gt)
    for r in shifted:
        r["keypoints"][0] += 3.0  # the nose, 3 px to the right
    err = keypoint_errors(gt, shifted)
    sides = [math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in gt["annotations"][:12]]
    assert np.allclose(np.sort(err[:, 0]), np.sort(3.0 / np.array(sides)))
    assert np.allclose(err[:, 1:], 0)
    low = [dict(r, score=0.1) for r in shifted]
    assert keypoint_errors(gt, low, score_thresh=0.5).shape[0] == 0


def test_tool_ranks_model_above_mean_pose(tmp_path, capsys):
    gt = _dataset()
    gt_file, res_file = tmp_path / "gt.json", tmp_path / "res.json"
    gt_file.write_text(json.dumps(gt))
    res_file.write_text(json.dumps(_as_results(gt, jitter=0.5)))
    spec = importlib.util.spec_from_file_location("keypoint_error", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tool.main(["--gt", str(gt_file), "--results", str(res_file)])
    printed = capsys.readouterr().out
    assert "mean pose in the same boxes" in printed and "left_wrist" in printed
    # near-perfect keypoints vs an average pose on people who each have their own pose
    assert out["model_ap"] > 90 > out["mean_pose_ap"]
    assert out["model_median_error"] < 0.01 < out["mean_pose_median_error"]
    # scoring leaves the results as they were (pycocotools' loadRes edits what it is given)
    results = mean_pose_results(_as_results(gt), mean_pose(gt))
    before = json.loads(json.dumps(results))
    assert tool.keypoint_ap(tool.COCO(str(gt_file)), results)[0] >= 0
    assert results == before

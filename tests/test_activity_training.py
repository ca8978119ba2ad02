"""Training the activity classifier for the pose rather than for which joints are visible,
calibrating it, answering "unknown", scoring saved weights, and refusing bad input."""

import json

import numpy as np
import pytest
import torch

from multitask.data.pose_augment import OCCLUSION_PATTERNS, augment_poses, occlude, pose_slices
from multitask.engine.activity_training import (
    balanced_class_weights,
    balanced_group_weights,
    train_activity_mlp,
)
from multitask.evaluation.activity_evaluation import evaluate_activity
from multitask.evaluation.calibration import expected_calibration_error, fit_temperature
from multitask.evaluation.coco_evaluation import instances_to_coco_json
from multitask.modeling.postprocessing.activity import UNKNOWN_ACTIVITY, ActivityClassifier
from multitask.modeling.postprocessing.activity_features import keypoints_to_activity_features
from multitask.structures import Instances

# a figure in a 100 x 200 box: nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles
_BASE = np.array([
    [50, 20], [46, 16], [54, 16], [42, 18], [58, 18],
    [35, 45], [65, 45], [30, 75], [70, 75], [28, 100], [72, 100],
    [40, 110], [60, 110], [40, 150], [60, 150], [40, 190], [60, 190],
], dtype=np.float32)


def _poses(n, arms_up, rng, noise=3.0, arm_noise=0.0):
    """People whose class is the arms: wrists and elbows above the shoulders (1) or below (0);
    ``arm_noise`` blurs that cue."""
    k = np.zeros((n, 17, 3), np.float32)
    k[..., :2] = _BASE + rng.normal(0, noise, (n, 17, 2))
    k[..., 2] = 2
    lift = np.where(arms_up, -1.0, 1.0)[:, None] * (40 + rng.normal(0, arm_noise, (n, 1)))
    for j in (7, 8):
        k[:, j, 1] = 45 + 0.5 * lift[:, 0]
    for j in (9, 10):
        k[:, j, 1] = 45 + lift[:, 0]
    boxes = np.tile(np.array([[0, 0, 100, 200]], np.float32), (n, 1))
    return k, boxes


def _features(k, b):
    return keypoints_to_activity_features(torch.from_numpy(k), torch.from_numpy(b), geometry=True)


def _train(k, b, y, seed=0):
    model, _ = train_activity_mlp(_features(k, b), torch.from_numpy(y), 2, [32], 0.1,
                                  epochs=25, seed=seed)
    return model


def test_occlusion_augmentation_removes_the_visibility_shortcut():
    """In training, 70 % of the arms-up people show no legs and every arms-down person shows
    them, while the arms cue is noisy: a plain model learns "no legs = arms up". On test people
    with the visibility the other way round it fails; trained on copies that take another
    class's visibility, it reads the arms."""
    rng = np.random.RandomState(0)
    y = np.repeat(np.array([0, 1]), 300)
    k, b = _poses(len(y), y == 1, rng, arm_noise=45.0)
    hide = (y == 1) & (rng.uniform(size=len(y)) < 0.7)
    k[hide] = occlude(k[hide], OCCLUSION_PATTERNS["legs"])
    yt = np.repeat(np.array([0, 1]), 100)
    kt, bt = _poses(len(yt), yt == 1, rng)
    kt[yt == 0] = occlude(kt[yt == 0], OCCLUSION_PATTERNS["legs"])  # the other way round

    def accuracy(model):
        with torch.no_grad():
            return float((model(_features(kt, bt)).argmax(1).numpy() == yt).mean())

    plain = accuracy(_train(k, b, y))
    ka, ba, ya = augment_poses(k, b, y, np.random.RandomState(1), copies=4)
    augmented = accuracy(_train(ka, ba, ya))
    assert plain < 0.7, plain
    assert augmented > 0.85, augmented
    assert augmented > plain + 0.2


def test_augment_poses_shapes_rotation_and_occlusion():
    rng = np.random.RandomState(0)
    k, b = _poses(10, np.zeros(10, bool), rng)
    k[0, 3] = 0  # an unlabelled ear stays unlabelled
    y = np.arange(10)
    ka, ba, ya = augment_poses(k, b, y, np.random.RandomState(0), copies=3, occlusion_prob=1.0,
                               transplant_prob=0.0, rotate_deg=0.0, scale=0.0)
    assert ka.shape == (40, 17, 3) and ba.shape == (40, 4) and list(ya[:10]) == list(y)
    assert np.array_equal(ka[:10], k) and np.array_equal(ya[10:20], y)
    assert (ka[10:, :, 2] == 0).any(1).all()  # every copy lost some joints
    assert (ka[10::10, 3] == 0).all()
    kept = ka[10:][ka[10:, :, 2] > 0]
    assert np.allclose(kept[:, :2], np.tile(k, (3, 1, 1))[ka[10:, :, 2] > 0][:, :2])
    rot, _, _ = augment_poses(k, b, y, np.random.RandomState(0), copies=1, occlusion_prob=0.0,
                              transplant_prob=0.0, rotate_deg=30.0, scale=0.0)
    centre = np.array([50, 100])
    r0 = np.linalg.norm(k[1:, 5, :2] - centre, axis=1)
    r1 = np.linalg.norm(rot[11:, 5, :2] - centre, axis=1)
    assert np.allclose(r0, r1, atol=1e-3) and not np.allclose(k[1:, 5], rot[11:, 5])
    with pytest.raises(ValueError, match="17, 3"):
        augment_poses(k[:, :5], b, y, rng)


def test_copies_take_the_visibility_of_another_class():
    rng = np.random.RandomState(0)
    k, b = _poses(6, np.zeros(6, bool), rng)
    y = np.array([0, 0, 0, 1, 1, 1])
    k[3:] = occlude(k[3:], OCCLUSION_PATTERNS["lower_body"])  # class 1 shows no lower body
    ka, _, ya = augment_poses(k, b, y, np.random.RandomState(0), copies=2, transplant_prob=1.0,
                              occlusion_prob=0.0, rotate_deg=0.0, scale=0.0)
    copies0 = ka[6:][ya[6:] == 0]
    assert (copies0[:, list(OCCLUSION_PATTERNS["lower_body"]), 2] == 0).all()
    assert (copies0[:, :11, 2] > 0).all()  # nothing else hidden: class 0 lacks nothing


def test_pose_slices():
    rng = np.random.RandomState(0)
    k, _ = _poses(3, np.zeros(3, bool), rng)
    k[1] = occlude(k[1:2], OCCLUSION_PATTERNS["legs"])[0]
    k[2, 15, 2] = 0  # one ankle missing: neither full body nor upper body only
    s = pose_slices(k)
    assert s["all"].tolist() == [True, True, True]
    assert s["full_body"].tolist() == [True, False, False]
    assert s["upper_body_only"].tolist() == [False, True, False]


def test_balanced_class_weights():
    w = balanced_class_weights(np.array([0, 0, 0, 1, 2, 2]), 4)
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 0.75, 0.0]))


def test_balanced_group_weights_hide_the_class_in_each_group():
    labels = np.array([0, 0, 1, 0, 1, 1, 1])
    groups = np.array([0, 0, 0, 1, 1, 1, 1])
    w = balanced_group_weights(labels, groups, 2).numpy()
    for g in (0, 1):
        per_class = [w[(groups == g) & (labels == c)].sum() for c in (0, 1)]
        assert per_class[0] == pytest.approx(per_class[1])
    assert w[groups == 0].sum() / w[groups == 1].sum() == pytest.approx(3 / 4)
    assert w.mean() == pytest.approx(1.0)


def test_temperature_scaling_lowers_the_calibration_error():
    """Over-confident logits (4x the calibrated ones): the temperature fitted on one half is
    about 4 and lowers the expected calibration error on the other half."""
    g = torch.Generator().manual_seed(0)
    probs = torch.distributions.Dirichlet(torch.ones(4)).sample((4000,))
    labels = torch.multinomial(probs, 1, generator=g)[:, 0]
    logits = 4 * probs.log()
    t = fit_temperature(logits[:2000], labels[:2000])
    assert 3.0 < t < 5.0
    before = expected_calibration_error(logits[2000:].softmax(1), labels[2000:])
    after = expected_calibration_error((logits[2000:] / t).softmax(1), labels[2000:])
    assert after < 0.5 * before and after < 0.05
    with pytest.raises(ValueError, match="fit_temperature"):
        fit_temperature(logits[:0], labels[:0])


def _classifier(**kw):
    torch.manual_seed(0)
    return ActivityClassifier(classes=["a", "b"], hidden_dims=[8], weights="", **kw).eval()


def test_unknown_below_the_thresholds_and_in_the_outputs():
    rng = np.random.RandomState(0)
    k, b = _poses(6, np.zeros(6, bool), rng)
    k[:2] = occlude(k[:2], OCCLUSION_PATTERNS["lower_body"])  # 11 of 17 visible
    kt, bt = torch.from_numpy(k), torch.from_numpy(b)
    pred, probs = _classifier().classify(kt, bt)
    assert (pred >= 0).all()
    pred, _ = _classifier(min_confidence=0.999).classify(kt, bt)
    assert (pred == UNKNOWN_ACTIVITY).all()
    pred, _ = _classifier(min_visible_keypoints=12).classify(kt, bt)
    assert pred[:2].tolist() == [UNKNOWN_ACTIVITY] * 2 and (pred[2:] >= 0).all()
    with pytest.raises(ValueError, match="MIN_CONFIDENCE"):
        _classifier(min_confidence=1.5)

    # the JSON and the evaluator: "unknown" is written, and coverage is reported
    inst = Instances((200, 100), pred_boxes=bt[:2], scores=torch.ones(2),
                     pred_classes=torch.zeros(2, dtype=torch.int64),
                     pred_activity=torch.tensor([0, UNKNOWN_ACTIVITY]),
                     activity_scores=probs[:2])
    res = instances_to_coco_json(inst, 1, activity_classes=["a", "b"])
    assert [r["activity"] for r in res] == ["a", "unknown"]

    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 300, "height": 200}],
                  "categories": [{"id": 1, "name": "person"}],
                  "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                   "bbox": [100 * i, 0, 90, 200], "area": 18000.0,
                                   "activity": "a"} for i in range(2)]}
    gt.createIndex()
    dets = [{"image_id": 1, "category_id": 1, "bbox": [100 * i, 0, 90, 200], "score": 0.9,
             "activity_id": a} for i, a in enumerate([0, UNKNOWN_ACTIVITY])]
    out = evaluate_activity(gt, dets, ["a", "b"], 1)
    assert out["coverage"] == pytest.approx(50.0)
    assert out["accuracy_labelled"] == pytest.approx(100.0)
    assert out["accuracy"] == pytest.approx(50.0)


# ---- tools/train_activity.py ---------------------------------------------------------------
def _tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "train_activity.py"
    spec = importlib.util.spec_from_file_location("train_activity", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _coco_json(path, n_per_class=12, activities=("walking", "sitting"), mutate=None):
    rng = np.random.RandomState(0)
    anns = []
    for c, act in enumerate(activities):
        k, _ = _poses(n_per_class, np.full(n_per_class, c == 1), rng)
        for i in range(n_per_class):
            anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                         "bbox": [0, 0, 100, 200], "keypoints": k[i].reshape(-1).tolist(),
                         "num_keypoints": 17, "activity": act})
    data = {"images": [{"id": 1, "width": 100, "height": 200}],
            "categories": [{"id": 1, "name": "person"}], "annotations": anns}
    if mutate:
        mutate(data)
    path.write_text(json.dumps(data))
    return str(path)


_FAST = ["--epochs", "3", "--hidden-dims", "16", "--folds", "2", "--aug-copies", "1",
         "--inner-val", "0.5", "--threads", "1"]


def test_train_then_score_saved_weights(tmp_path):
    tool = _tool()
    js = _coco_json(tmp_path / "train.json")
    out = tool.main(["--coco-json", js, "--classes", "walking", "sitting",
                     "--output-dir", str(tmp_path / "cv")] + _FAST)
    assert set(out["slices"]) == {"all", "full_body", "upper_body_only"}
    assert out["temperature"] > 0 and (tmp_path / "cv" / "confusion_matrix.png").is_file()
    weights = tmp_path / "cv" / "activity_classifier.pth"
    saved = torch.load(weights, weights_only=True)
    assert saved["temperature"] == pytest.approx(out["temperature"])
    clf = ActivityClassifier(classes=["walking", "sitting"], hidden_dims=[16], weights="")
    clf.load_weights(str(weights))
    assert float(clf.temperature) == pytest.approx(out["temperature"])

    rep = tool.main(["--weights", str(weights), "--eval-json", js, "--output-dir",
                     str(tmp_path / "eval"), "--min-confidence", "0.999"])
    assert rep["n"] == 24 and rep["coverage"] < 1.0
    assert (tmp_path / "eval" / "confusion_matrix.png").is_file()
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(saved["confusion_matrix_with_unknown"][0]) == 3  # 2 classes + unknown


@pytest.mark.parametrize("mutate, classes, match", [
    (lambda d: [a.pop("activity") for a in d["annotations"]], None, "has an 'activity' field"),
    (lambda d: d["annotations"][0].update(activity="juggling"), None,
     "'activity' has names that are not in --classes.*juggling"),
    (lambda d: d["annotations"][3]["keypoints"].__setitem__(4, float("nan")), None,
     "annotation 4: field 'keypoints'.*NaN"),
    (lambda d: d["annotations"][5].update(bbox=[0, 0, float("inf"), 10]), None,
     "annotation 6: field 'bbox'"),
    (None, ["walking"], "at least two classes"),
    (lambda d: [a.update(activity="walking") for a in d["annotations"]], None,
     "people of 1 of the classes"),
    (lambda d: d.update(annotations=d["annotations"][:13]), None,
     "fewer persons than folds: {'sitting': 1}"),
])
def test_bad_input_is_refused_by_name(tmp_path, mutate, classes, match):
    tool = _tool()
    js = _coco_json(tmp_path / "bad.json", mutate=mutate)
    with pytest.raises(SystemExit, match=match) as e:
        tool.main(["--coco-json", js, "--classes"] + (classes or ["walking", "sitting"])
                  + ["--output-dir", str(tmp_path / "out")] + _FAST)
    assert "bad.json" in str(e.value) or "classes" in str(e.value) or "folds" in str(e.value)
    assert not (tmp_path / "out" / "activity_classifier.pth").exists()

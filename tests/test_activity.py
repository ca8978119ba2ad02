"""Activity classifier: features, MLP, post-processor, weights file, K-fold split, MPII loader."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import MPII_CSV
from tiny_model import small_synthetic_people, small_training

from multitask.config import get_cfg
from multitask.data import DatasetCatalog, register_datasets_from_cfg
from multitask.engine import Trainer
from multitask.engine.activity_training import activity_poses_from_dicts, fit_activity_classifier
from multitask.evaluation.activity_metrics import classification_metrics, stratified_group_kfold
from multitask.modeling.postprocessing import POSTPROCESSOR_REGISTRY, build_postprocessors
from multitask.modeling.postprocessing.activity import (
    ActivityClassifier,
    ActivityMLP,
    load_activity_weights,
    save_activity_weights,
)
from multitask.modeling.postprocessing.activity_features import (
    GEOMETRY_DIM,
    flip_keypoints,
    keypoints_to_activity_features,
    pose_geometry_features,
)
from multitask.structures import Instances

CLASSES = ["walking", "running", "sitting", "standing"]


def test_features_normalisation_and_mask():
    kps = torch.zeros(2, 17, 3)
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 50.0, 50.0]])
    kps[0, 0] = torch.tensor([10.0, 20.0, 2.0])  # top-left corner
    kps[0, 5] = torch.tensor([110.0, 220.0, 0.9])  # bottom-right corner (a score)
    kps[0, 6] = torch.tensor([60.0, 120.0, 2.0])  # centre
    kps[0, 7] = torch.tensor([60.0, 120.0, 0.0])  # missing (v = 0)
    kps[0, 8] = torch.tensor([500.0, -50.0, 2.0])  # outside: clamped
    kps[1, 9] = torch.tensor([25.0, 25.0, 0.01])  # below the score threshold: missing
    f = keypoints_to_activity_features(
        kps, boxes, use_visibility=True, score_thresh=0.05, keep_aspect=False
    )
    assert f.shape == (2, 51)
    xy, mask = f[:, :34].reshape(2, 17, 2), f[:, 34:]
    assert torch.allclose(xy[0, 0], torch.tensor([0.0, 0.0]))
    assert torch.allclose(xy[0, 5], torch.tensor([1.0, 1.0]))
    assert torch.allclose(xy[0, 6], torch.tensor([0.5, 0.5]))
    assert torch.allclose(xy[0, 7], torch.zeros(2)) and mask[0, 7] == 0
    assert torch.allclose(xy[0, 8], torch.tensor([1.0, 0.0]))
    assert mask[0, [0, 5, 6, 8]].tolist() == [1, 1, 1, 1]
    assert mask[1].sum() == 0 and xy[1].abs().sum() == 0
    assert ((f >= 0) & (f <= 1)).all()
    # interleaved [K0x, K0y, K1x, ...]
    assert f[0, 12] == xy[0, 6, 0] and f[0, 13] == xy[0, 6, 1]
    # without the mask
    assert keypoints_to_activity_features(kps, boxes, use_visibility=False).shape == (2, 34)
    # square box: the tall box's x range shrinks around its centre
    fa = keypoints_to_activity_features(kps, boxes, keep_aspect=True)
    assert torch.allclose(fa[0, 12:14], torch.tensor([0.5, 0.5]))
    assert fa[0, 10] == pytest.approx(0.75)  # x = 110 in the square [-40, 160]
    # a keypoint mask removes keypoint types
    km = torch.ones(17)
    km[6] = 0
    fm = keypoints_to_activity_features(kps, boxes, keypoint_mask=km)
    assert fm[0, 12:14].abs().sum() == 0 and fm[0, 34 + 6] == 0


def _stick_figure(knee_deg):
    """A COCO pose (1, 17, 3) seen from the side: upright torso (shoulders (0, 0), hips (0, 50)),
    thighs forward by ``knee_deg`` from vertical, shins hanging straight down, arms down."""
    k = torch.zeros(1, 17, 3)
    k[0, :, 2] = 2.0
    k[0, [5, 6], :2] = torch.tensor([0.0, 0.0])
    k[0, [11, 12], :2] = torch.tensor([0.0, 50.0])
    a = np.deg2rad(knee_deg)
    knee = torch.tensor([40.0 * np.sin(a), 50.0 + 40.0 * np.cos(a)], dtype=torch.float32)
    k[0, [13, 14], :2] = knee
    k[0, [15, 16], :2] = knee + torch.tensor([0.0, 40.0])
    k[0, [7, 8], :2] = torch.tensor([0.0, 25.0])
    k[0, [9, 10], :2] = torch.tensor([0.0, 50.0])
    return k


def test_pose_geometry_features():
    standing, sitting = _stick_figure(0.0), _stick_figure(90.0)
    present = torch.ones(1, 17, dtype=torch.bool)
    g_stand = pose_geometry_features(standing, present)
    g_sit = pose_geometry_features(sitting, present)
    assert g_stand.shape == (1, 2 * GEOMETRY_DIM)
    assert g_stand[0, GEOMETRY_DIM:].tolist() == [1.0] * GEOMETRY_DIM  # everything measured
    # angle cosines: knees (0, 1) straight when standing, 90 degrees when sitting; hips (2, 3)
    assert g_stand[0, :4].tolist() == pytest.approx([-1.0, -1.0, -1.0, -1.0], abs=1e-5)
    assert g_sit[0, :4].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0], abs=1e-5)
    # torso direction: straight up (image y points down)
    assert g_stand[0, 8:10].tolist() == pytest.approx([0.0, -1.0], abs=1e-5)
    # left thigh: direction and length in torso lengths (40 / 50)
    assert g_sit[0, 10:13].tolist() == pytest.approx([1.0, 0.0, 0.8], abs=1e-5)
    # position and scale do not matter
    moved = standing.clone()
    moved[..., :2] = moved[..., :2] * 3.0 + torch.tensor([17.0, -5.0])
    assert torch.allclose(pose_geometry_features(moved, present), g_stand, atol=1e-5)
    # a mirrored pose gives mirrored directions
    mirrored = sitting.clone()
    mirrored[..., 0] *= -1
    assert pose_geometry_features(mirrored, present)[0, 10] == pytest.approx(-1.0, abs=1e-5)
    # a missing left knee masks (and zeroes) the values that need it, and only those
    present_nk = present.clone()
    present_nk[0, 13] = False
    g = pose_geometry_features(sitting, present_nk)
    values, mask = g[0, :GEOMETRY_DIM], g[0, GEOMETRY_DIM:]
    dropped = [0, 2, 10, 11, 12, 16, 17, 18, 24, 25]  # left knee & hip angles, thigh, shin, knees
    assert (mask[dropped] == 0).all() and (values[dropped] == 0).all()
    assert int(mask.sum()) == GEOMETRY_DIM - len(dropped)
    # without the torso (a shoulder missing) nothing relative to it is measured: the torso's
    # direction, the leg lengths, the pair offsets; nor the angles at that hip, elbow and shoulder
    present_ns = present.clone()
    present_ns[0, 5] = False
    mask = pose_geometry_features(sitting, present_ns)[0, GEOMETRY_DIM:]
    dropped = [2, 4, 6, 8, 9, 12, 15, 18, 21, 22, 23, 24, 25, 26, 27]
    assert (mask[dropped] == 0).all() and int(mask.sum()) == GEOMETRY_DIM - len(dropped)
    # appended by keypoints_to_activity_features
    boxes = torch.tensor([[-50.0, -10.0, 60.0, 150.0]])
    f = keypoints_to_activity_features(sitting, boxes, geometry=True)
    assert f.shape == (1, 51 + 2 * GEOMETRY_DIM)
    assert torch.allclose(f[:, 51:], g_sit) and torch.equal(
        f[:, :51], keypoints_to_activity_features(sitting, boxes)
    )
    with pytest.raises(ValueError, match="17 COCO keypoints"):
        pose_geometry_features(torch.zeros(1, 16, 3), torch.ones(1, 16, dtype=torch.bool))


def test_flip_keypoints_swaps_sides():
    kps = np.zeros((1, 17, 3), np.float32)
    kps[0, 5] = [20, 30, 2]  # left shoulder
    boxes = np.array([[0, 0, 100, 100]], np.float32)
    fk, fb = flip_keypoints(kps, boxes)
    assert fk[0, 6].tolist() == [80, 30, 2] and fk[0, 5, 2] == 0
    assert np.array_equal(fb, boxes)


def test_mlp_shapes():
    mlp = ActivityMLP(51, 4, hidden_dims=(3072, 128), dropout=0.3)
    assert mlp(torch.rand(8, 51)).shape == (8, 4)
    p = mlp.predict_proba(torch.rand(1, 51))  # eval mode: a batch of one works
    assert p.shape == (1, 4) and torch.allclose(p.sum(1), torch.ones(1))
    assert mlp.training  # mode restored
    kinds = [type(m).__name__ for m in mlp.layers]
    assert kinds[:4] == ["Linear", "BatchNorm1d", "ReLU", "Dropout"]
    assert mlp.layers[0].out_features == 3072 and mlp.layers[4].out_features == 128
    assert mlp.predict_proba(torch.rand(0, 51)).shape == (0, 4)


def test_kfold_split_by_person():
    rng = np.random.RandomState(0)
    persons = rng.randint(0, 60, size=300)  # several samples per person
    labels = persons % 4
    folds = stratified_group_kfold(labels, persons, k=5, seed=0)
    assert len(folds) == 5
    seen = np.zeros(len(labels), int)
    for tr, va in folds:
        assert not set(persons[tr]) & set(persons[va])  # no person on both sides
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
        seen[va] += 1
        assert len(np.unique(labels[va])) == 4  # stratified: every class in every fold
    assert (seen == 1).all()  # each sample (so each person) in exactly one validation fold
    for p in np.unique(persons):
        assert len({f for f, (_, va) in enumerate(folds) if p in set(persons[va])}) == 1
    with pytest.raises(ValueError):
        stratified_group_kfold(labels, persons[:10], k=5)


def test_metrics():
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], 2)
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["precision"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["recall"] == pytest.approx((0.5 + 1.0) / 2)


def _cfg(weights=""):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POSTPROCESSORS = ["ActivityClassifier"]
    cfg.MODEL.ACTIVITY.HIDDEN_DIMS = [16, 8]
    cfg.MODEL.ACTIVITY.WEIGHTS = weights
    return cfg


def _instances(n):
    g = torch.Generator().manual_seed(n)
    kps = torch.rand(n, 17, 3, generator=g) * torch.tensor([100.0, 200.0, 1.0])
    boxes = torch.tensor([[0.0, 0.0, 100.0, 200.0]]).repeat(n, 1)
    return Instances((240, 320), pred_boxes=boxes, scores=torch.ones(n), pred_keypoints=kps)


def test_postprocessor_zero_one_many():
    mods = build_postprocessors(_cfg())
    clf = mods["ActivityClassifier"]
    assert POSTPROCESSOR_REGISTRY.get("ActivityClassifier") is ActivityClassifier
    clf.train()  # BatchNorm must still be in eval mode inside (one detection)
    results = clf([{}] * 3, [_instances(0), _instances(1), _instances(5)])
    for r, n in zip(results, (0, 1, 5)):
        assert r.pred_activity.shape == (n,) and r.pred_activity.dtype == torch.int64
        assert r.activity_scores.shape == (n, 4)
        if n:
            assert torch.allclose(r.activity_scores.sum(1), torch.ones(n))
    assert clf.training
    # no fields at all on an empty result
    empty = Instances((10, 10))
    clf([{}], [empty])
    assert empty.pred_activity.shape == (0,) and empty.activity_scores.shape == (0, 4)


def test_weights_file_round_trip_and_errors(tmp_path):
    missing = str(tmp_path / "missing_activity.pth")
    with pytest.raises(FileNotFoundError, match="missing_activity.pth"):
        ActivityClassifier(_cfg(missing))

    src = ActivityClassifier(_cfg())
    layout = src.input_layout()
    layout["keypoint_mask"] = [1.0] + [0.0] * 4 + [1.0] * 12
    layout["keep_aspect"] = False
    good = str(tmp_path / "act.pth")
    save_activity_weights(good, src.mlp, CLASSES, layout, [16, 8], 0.3)
    dst = ActivityClassifier(_cfg(good))
    assert torch.equal(dst.mlp.layers[0].weight, src.mlp.layers[0].weight)
    assert dst.keypoint_mask.tolist() == layout["keypoint_mask"] and not dst.keep_aspect
    # loaded buffers travel in a full-model state dict
    assert "keypoint_mask" in dst.state_dict() and "keep_aspect_flag" in dst.state_dict()

    other = str(tmp_path / "act_other_classes.pth")
    save_activity_weights(other, src.mlp, ["a", "b", "c", "d"], layout, [16, 8], 0.3)
    with pytest.raises(ValueError, match="act_other_classes.pth") as e:
        ActivityClassifier(_cfg(other))
    assert "MODEL.ACTIVITY.CLASSES" in str(e.value) and "'a'" in str(e.value)

    wrong = str(tmp_path / "act_wrong_shape.pth")
    small = ActivityMLP(51, 4, [8, 8])
    save_activity_weights(wrong, small, CLASSES, layout, [8, 8], 0.3)
    with pytest.raises(RuntimeError, match="act_wrong_shape.pth") as e:
        ActivityClassifier(_cfg(wrong))
    assert "shape" in str(e.value)

    vis = str(tmp_path / "act_novis.pth")
    save_activity_weights(
        vis,
        ActivityMLP(34, 4, [16, 8]),
        CLASSES,
        dict(layout, use_visibility=False, in_dim=34),
        [16, 8],
        0.3,
    )
    with pytest.raises(ValueError, match="USE_VISIBILITY"):
        ActivityClassifier(_cfg(vis))

    # pose geometry (on by default): the file says whether it was trained with it, and the config
    # must agree; a file from before the key existed counts as without
    assert src.mlp.in_dim == 51 + 2 * GEOMETRY_DIM and layout["geometry"]
    pred, probs = dst.classify(_stick_figure(90.0), torch.tensor([[-50.0, -10, 60, 150]]))
    assert pred.shape == (1,) and probs.shape == (1, 4)
    plain_cfg = _cfg()
    plain_cfg.MODEL.ACTIVITY.GEOMETRY = False
    plain_src = ActivityClassifier(plain_cfg)
    assert plain_src.mlp.in_dim == 51 and not plain_src.input_layout()["geometry"]
    plain = str(tmp_path / "act_plain.pth")
    save_activity_weights(plain, plain_src.mlp, CLASSES, plain_src.input_layout(), [16, 8], 0.3)
    legacy = str(tmp_path / "act_legacy.pth")
    legacy_layout = {k: v for k, v in plain_src.input_layout().items() if k != "geometry"}
    save_activity_weights(legacy, plain_src.mlp, CLASSES, legacy_layout, [16, 8], 0.3)
    for path in (plain, legacy):
        with pytest.raises(ValueError, match=os.path.basename(path)) as e:
            ActivityClassifier(_cfg(path))
        assert "MODEL.ACTIVITY.GEOMETRY is True; set it to False" in str(e.value)
        plain_cfg.MODEL.ACTIVITY.WEIGHTS = path
        loaded = ActivityClassifier(plain_cfg)
        assert torch.equal(loaded.mlp.layers[0].weight, plain_src.mlp.layers[0].weight)
    plain_cfg.MODEL.ACTIVITY.WEIGHTS = good
    with pytest.raises(ValueError, match="MODEL.ACTIVITY.GEOMETRY is False; set it to True"):
        ActivityClassifier(plain_cfg)


@pytest.mark.skipif(not os.path.exists(MPII_CSV), reason="MPII csv not shipped here")
def test_mpii_loader_real_csv():
    from multitask.data.mpii import activity_to_class, load_mpii_activity_csv

    kps, boxes, labels, info = load_mpii_activity_csv(MPII_CSV, CLASSES, verbose=False)
    n = len(labels)
    assert kps.shape == (n, 17, 3) and boxes.shape == (n, 4) and labels.shape == (n,)
    assert all(info["class_counts"][c] > 0 for c in CLASSES)
    assert len(set(info["person_ids"].tolist())) == n
    assert (kps[:, 1:5, 2] == 0).all()  # no eyes / ears in MPII
    # joint mapping, checked against the csv's own columns for a few kept rows
    rows = {int(r["ID"]): r for r in csv.DictReader(open(MPII_CSV))}
    for i in range(0, n, max(1, n // 25)):
        r = rows[int(info["person_ids"][i])]
        for name, k in (("l shoulder", 5), ("r shoulder", 6), ("l hip", 11), ("r ankle", 16)):
            x, y = float(r[f"{name}_X"]), float(r[f"{name}_Y"])
            if x == -1 and y == -1:
                assert kps[i, k, 2] == 0
            else:
                assert kps[i, k].tolist() == [x, y, 2.0]
        present = kps[i, :, 2] > 0
        assert (kps[i, present, 0] >= boxes[i, 0]).all()
        assert (kps[i, present, 1] <= boxes[i, 3]).all()
    # class rule
    assert activity_to_class("walking, general", CLASSES, "walking") == 0
    assert activity_to_class("jogging", CLASSES, "running") == 1
    assert activity_to_class("cello, sitting", CLASSES, "music playing") == 2
    assert activity_to_class("standing quietly, standing in a line", CLASSES, "x") == 3
    assert activity_to_class("food shopping, standing or walking", CLASSES, "x") == -1
    assert activity_to_class("water walking", CLASSES, "water activities") == -1
    assert activity_to_class("trombone, standing", CLASSES, "music playing") == -1
    assert activity_to_class("trombone, standing", CLASSES, "music playing", rule="keywords") == 3


def _pose_dicts(rng, n, offset):
    """Dataset dicts whose people of class 0 ("walking") hold their keypoints in the top half of
    the box and of class 1 ("running") in the bottom half; one crowd region and one person without
    an activity are there to be left out."""
    anns = []
    for i in range(n):
        label = i % 2
        k = np.zeros((17, 3), np.float32)
        k[:, 0] = rng.uniform(0, 100, 17)
        k[:, 1] = rng.uniform(0, 100, 17) + 100 * label
        k[:, 2] = 2
        k[3:5, 2] = 0  # ears unlabelled
        k[3:5, :2] = 0
        k[:, :2] += offset
        anns.append(
            {
                "bbox": [offset, offset, offset + 100.0, offset + 200.0],
                "keypoints": k.reshape(-1).tolist(),
                "iscrowd": 0,
                "activity": CLASSES[label],
            }
        )
    anns.append(dict(anns[0], iscrowd=1))
    anns.append(dict(anns[0], activity=None))
    return [{"image_id": 1, "annotations": anns}]


def test_fit_on_ground_truth_poses():
    rng = np.random.default_rng(0)
    kps, boxes, labels = activity_poses_from_dicts(_pose_dicts(rng, 40, 10.0), CLASSES)
    assert kps.shape == (40, 17, 3) and boxes.shape == (40, 4) and labels.tolist() == [0, 1] * 20
    assert boxes[0].tolist() == [10.0, 10.0, 110.0, 210.0]
    clf = ActivityClassifier(classes=CLASSES, hidden_dims=[32], use_visibility=True)
    torch.manual_seed(7)
    expected_next = torch.rand(4)
    torch.manual_seed(7)
    stats = fit_activity_classifier(clf, kps, boxes, labels, epochs=30, seed=0)
    assert torch.equal(torch.rand(4), expected_next)  # the caller's random stream is untouched
    assert stats["num_poses"] == 40 and stats["train_accuracy"] >= 0.95
    assert clf.keypoint_mask.tolist() == [1, 1, 1, 0, 0] + [1] * 12  # never-labelled ears
    # new people, elsewhere in the image
    k2, b2, y2 = activity_poses_from_dicts(_pose_dicts(rng, 20, 300.0), CLASSES)
    pred, probs = clf.classify(torch.from_numpy(k2), torch.from_numpy(b2))
    assert (pred.numpy() == y2).mean() >= 0.9
    with pytest.raises(ValueError, match="at least 2 poses"):
        fit_activity_classifier(clf, kps[:1], boxes[:1], labels[:1])
    with pytest.raises(ValueError, match="epochs >= 1"):
        fit_activity_classifier(clf, kps, boxes, labels, epochs=0)


def test_trainer_fits_activity_on_train_gt(tmp_path):
    """MODEL.ACTIVITY.FIT_ON_TRAIN_GT: the trainer fits the classifier before training, writes it
    next to the checkpoints, carries it in them, and the evaluation reports activity accuracy."""
    json_file = small_synthetic_people(tmp_path / "data")
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.FREEZE_AT", "0",
        "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.WIDTH_MULT", "0.25",
        "MODEL.RESNETS.NORM", "BN",
        "MODEL.FPN.OUT_CHANNELS", "32",
        "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
        "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
        "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "[32]",
        "MODEL.POSTPROCESSORS", "['ActivityClassifier']",
        "MODEL.ACTIVITY.HIDDEN_DIMS", "[32]",
        "MODEL.ACTIVITY.FIT_ON_TRAIN_GT", "True",
        "MODEL.ACTIVITY.FIT_EPOCHS", "5",
    ] + small_training("act_fit", json_file, tmp_path / "out"))
    register_datasets_from_cfg(cfg)
    try:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.before_train()  # the PostprocessorFit hook fits it here
        clf = trainer.model.postprocessors["ActivityClassifier"]
        saved = load_activity_weights(str(tmp_path / "out" / "activity_classifier.pth"))
        assert saved["classes"] == CLASSES
        for k, v in clf.mlp.state_dict().items():
            assert torch.equal(saved["state_dict"][k], v), k
        assert not any(p.requires_grad for p in clf.parameters())  # the optimizer leaves it alone
        trainer.checkpointer.save("model_check")
        ckpt = torch.load(str(tmp_path / "out" / "model_check.pth"), weights_only=True)["model"]
        key = "postprocessors.ActivityClassifier.mlp.layers.0.weight"
        assert torch.equal(ckpt[key], clf.mlp.layers[0].weight)
        results = Trainer.test(cfg, trainer.model)  # one dataset: its results directly
        assert "activity" in results and 0.0 <= results["activity"]["accuracy"] <= 100.0

        # refused by name: no ActivityClassifier to fit, or weights given as well
        cfg2 = cfg.clone()
        cfg2.defrost()
        cfg2.MODEL.POSTPROCESSORS = []
        with pytest.raises(ValueError, match="FIT_ON_TRAIN_GT needs 'ActivityClassifier'"):
            Trainer(cfg2).train()
        cfg2.MODEL.POSTPROCESSORS = ["ActivityClassifier"]
        cfg2.MODEL.ACTIVITY.WEIGHTS = str(tmp_path / "out" / "activity_classifier.pth")
        with pytest.raises(ValueError, match="MODEL.ACTIVITY.WEIGHTS"):
            Trainer(cfg2).train()
        cfg2.MODEL.ACTIVITY.WEIGHTS = ""
        cfg2.MODEL.ACTIVITY.FIT_EPOCHS = 0
        with pytest.raises(ValueError, match="MODEL.ACTIVITY.FIT_EPOCHS must be >= 1, got 0"):
            Trainer(cfg2).train()
    finally:
        DatasetCatalog.remove("act_fit")


def test_train_activity_tool_on_coco_json(tmp_path):
    """tools/train_activity.py cross-validates and writes weights the post-processor loads."""
    rng = np.random.default_rng(1)
    record = _pose_dicts(rng, 60, 10.0)[0]
    anns = []
    for i, a in enumerate(record["annotations"]):
        x0, y0, x1, y1 = a["bbox"]
        anns.append(dict(a, id=i + 1, image_id=1, bbox=[x0, y0, x1 - x0, y1 - y0]))
    json_file = tmp_path / "poses.json"
    json_file.write_text(json.dumps({"images": [{"id": 1}], "annotations": anns}))
    tool = Path(__file__).resolve().parents[1] / "tools" / "train_activity.py"
    out = tmp_path / "act"
    proc = subprocess.run(
        [sys.executable, str(tool), "--coco-json", str(json_file), "--folds", "2",
         "--epochs", "60", "--lr", "0.01", "--hidden-dims", "32", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "kept 60 persons" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean"]["accuracy"] >= 0.8  # top vs bottom half: easy (chance: 0.5)
    clf = ActivityClassifier(classes=CLASSES, hidden_dims=[32])
    clf.load_weights(str(out / "activity_classifier.pth"))
    assert clf.keypoint_mask[3:5].tolist() == [0.0, 0.0]

"""The whole chain, detector -> Pose Residual Network -> activity classifier: the PRN's two layer
stacks, its fit on the training set's ground truth, the configs that run the chain, what the
evaluator reports before and after the PRN, and the weights files and settings refused by name."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_model import TINY_MODEL, small_synthetic_people, small_training

from multitask.config import get_cfg
from multitask.data import DatasetCatalog, register_datasets_from_cfg
from multitask.engine import Trainer
from multitask.engine.checkpoint import MultiTaskCheckpointer
from multitask.engine.postprocessor_fit import check_postprocessor_weights
from multitask.engine.prn_training import (
    PRNFitSettings,
    fit_prn,
    own_keypoint_fraction,
    people_from_dataset_dicts,
)
from multitask.modeling import build_model
from multitask.modeling.postprocessing.activity import ActivityClassifier, save_activity_weights
from multitask.modeling.postprocessing.prn import PoseResidualNetwork, load_prn_weights, prn_loss

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart" / "multitask_R_18_FPN_synthetic.yaml"
COCO_CHAIN = (
    REPO / "configs" / "COCO-MultiTask"
    / "multitask_R_50_FPN_1x_dconv_c3-c5_dconv_head_prn_activity.yaml"
)
SMALL_PRN = dict(heatmap_size=(14, 9), hidden_dim=32)


def _toy_people(n_images=6, seed=0):
    """Dataset dicts with two overlapping people per image (XYXY boxes, COCO visibilities)."""
    rng = np.random.default_rng(seed)
    dicts = []
    for i in range(n_images):
        anns = []
        for p in range(2):
            x0, y0 = 40.0 + 30 * p + rng.uniform(0, 5), 20.0 + rng.uniform(0, 5)
            k = np.zeros((17, 3), np.float32)
            k[:, 0] = x0 + rng.uniform(5, 45, 17)
            k[:, 1] = y0 + np.linspace(5, 95, 17) + rng.uniform(-3, 3, 17)
            k[:, 2] = 2
            anns.append({"bbox": [x0, y0, x0 + 50.0, y0 + 100.0], "iscrowd": 0,
                         "keypoints": k.reshape(-1).tolist()})
        dicts.append({"image_id": i, "width": 200, "height": 160, "annotations": anns})
    return dicts


# ---- the PRN's layer stacks and loss -----------------------------------------------------------
def test_prn_variants_layer_stacks_and_joint_loss():
    torch.manual_seed(0)
    ours = PoseResidualNetwork(**SMALL_PRN, dropout=0.0).eval()
    paper = PoseResidualNetwork(**SMALL_PRN, dropout=0.0, variant="multiposenet").eval()
    paper.load_state_dict(ours.state_dict())
    x = torch.rand(3, 17, 14, 9)
    flat = x.reshape(3, -1)
    hidden = ours.fc2(F.relu(ours.fc1(flat)))
    torch.testing.assert_close(ours.forward_logits(x).reshape(3, -1), hidden + flat)
    torch.testing.assert_close(paper.forward_logits(x).reshape(3, -1), F.relu(hidden) + flat)
    # the joint softmax renormalised per channel is the per-channel softmax: one decoder for both
    logits = paper.forward_logits(x)
    joint = F.softmax(logits.reshape(3, -1), dim=1).reshape(3, 17, -1)
    torch.testing.assert_close(joint / joint.sum(2, keepdim=True),
                               paper.predict(x).reshape(3, 17, -1))

    # the joint BCE against a direct formula; samples without any target are left out
    target = torch.zeros(3, 17, 14, 9)
    target[0, 2, 4, 5] = 1.0
    target[1, 7, 1, 1] = 1.0
    p = joint.reshape(3, -1)
    t = target.reshape(3, -1)
    bce = -(t * p.log() + (1 - t) * (1 - p).log()).sum(1)
    torch.testing.assert_close(prn_loss(logits, target, joint=True), bce[:2].mean())
    torch.testing.assert_close(paper.loss(logits, target), bce[:2].mean())
    assert not torch.allclose(ours.loss(logits, target), paper.loss(logits, target))
    with pytest.raises(ValueError, match="MODEL.PRN.VARIANT: unknown 'keras'"):
        PoseResidualNetwork(**SMALL_PRN, variant="keras")


# ---- fitting on ground truth -------------------------------------------------------------------
def test_fit_prn_learns_keeps_the_callers_random_stream_and_reloads(tmp_path):
    images = people_from_dataset_dicts(_toy_people())
    torch.manual_seed(0)
    net = PoseResidualNetwork(**SMALL_PRN)
    for p in net.parameters():  # as a model's post-processor: frozen for the detector's optimizer
        p.requires_grad_(False)
    before = own_keypoint_fraction(net, images)
    state = torch.random.get_rng_state()
    expected_next = torch.rand(4)
    torch.random.set_rng_state(state)
    stats = fit_prn(net, images, PRNFitSettings(epochs=30, batch_size=8), seed=0, progress=False,
                    log=lambda msg: None)
    assert torch.equal(torch.rand(4), expected_next)  # the caller's random stream is untouched
    assert not any(p.requires_grad for p in net.parameters())  # frozen again
    assert net.weights_source == "fitted"
    assert stats["num_people"] == 12 and stats["num_images"] == 6 and stats["epochs"] == 30
    assert stats["own_keypoint_fraction"] > max(before, 0.6)

    path = str(tmp_path / "prn.pth")
    net.save(path)
    again = PoseResidualNetwork(**SMALL_PRN)
    load_prn_weights(again, path)
    box = torch.tensor([[40.0, 20.0, 90.0, 120.0]])
    x = net.encode(box, torch.from_numpy(images[0]["keypoints"]))
    assert torch.equal(net.eval().predict(x), again.eval().predict(x))
    assert again.weights_source == path
    # the same seed gives the same PRN
    torch.manual_seed(0)
    twin = PoseResidualNetwork(**SMALL_PRN)
    fit_prn(twin, images, PRNFitSettings(epochs=30, batch_size=8), seed=0, progress=False,
            log=lambda msg: None)
    assert torch.equal(twin.eval().predict(x), again.predict(x))


def test_prn_weights_file_of_another_layout_is_refused_by_name(tmp_path):
    path = str(tmp_path / "prn.pth")
    PoseResidualNetwork(**SMALL_PRN).save(path)
    cases = [
        (dict(heatmap_size=(16, 10), hidden_dim=32), "MODEL.PRN.HEATMAP_SIZE"),
        (dict(SMALL_PRN, num_keypoints=5), "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS"),
        (dict(SMALL_PRN, variant="multiposenet"), "MODEL.PRN.VARIANT"),
        (dict(heatmap_size=(14, 9), hidden_dim=64), "MODEL.PRN.HIDDEN_DIM"),
        (dict(SMALL_PRN, sigma=2.0), "MODEL.PRN.SIGMA"),
    ]
    for kwargs, key in cases:
        with pytest.raises(ValueError, match=key):
            load_prn_weights(PoseResidualNetwork(**kwargs), path)


# ---- the configs that run the chain ------------------------------------------------------------
def _chain_cfg(tmp_path, name, json_file, extra=()):
    cfg = get_cfg()
    cfg.merge_from_file(str(QUICKSTART))
    cfg.merge_from_list(TINY_MODEL + [
        "MODEL.RESNETS.WIDTH_MULT", "0.25",
        "MODEL.PRN.HEATMAP_SIZE", "[14, 9]",
        "MODEL.PRN.HIDDEN_DIM", "32",
        "MODEL.PRN.FIT_EPOCHS", "2",
        "MODEL.ACTIVITY.HIDDEN_DIMS", "[32]",
        "MODEL.ACTIVITY.FIT_EPOCHS", "3",
    ] + small_training(name, json_file, tmp_path / "out", extra=[
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()",
        "TEST.VIS_NUM_IMAGES", "0",
        *extra,
    ]))
    register_datasets_from_cfg(cfg)
    return cfg


@pytest.fixture
def synthetic_json(tmp_path):
    yield small_synthetic_people(tmp_path / "data")
    for name in ("chain", "chain_nolabels"):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)


def test_quickstart_chain_fits_trains_and_reports_before_and_after_the_prn(
    tmp_path, synthetic_json
):
    cfg = _chain_cfg(tmp_path, "chain", synthetic_json)
    assert list(cfg.MODEL.POSTPROCESSORS) == ["PoseResidualNetwork", "ActivityClassifier"]
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.before_train()  # the PostprocessorFit hook fits the PRN and the classifier here
    assert set(trainer.fit_stats) == {"PoseResidualNetwork", "ActivityClassifier"}
    prn = trainer.model.postprocessors["PoseResidualNetwork"]
    saved = PoseResidualNetwork(cfg, weights="")
    load_prn_weights(saved, str(tmp_path / "out" / "prn.pth"))
    for k, v in prn.state_dict().items():
        assert torch.equal(saved.state_dict()[k], v), k
    results = trainer.train()
    for task in ("bbox", "segm", "keypoints", "keypoints_before_prn", "activity"):
        assert task in results, task
    assert results["keypoints_before_prn"].keys() == results["keypoints"].keys()

    # the checkpoint carries the fitted PRN and classifier: --eval-only needs nothing else
    ckpt = torch.load(str(tmp_path / "out" / "model_final.pth"), weights_only=True)["model"]
    assert torch.equal(ckpt["postprocessors.PoseResidualNetwork.fc1.weight"], prn.fc1.weight)
    cfg2 = cfg.clone()
    cfg2.defrost()
    cfg2.MODEL.PRN.FIT_ON_TRAIN_GT = False
    cfg2.MODEL.ACTIVITY.FIT_ON_TRAIN_GT = False
    model = build_model(cfg2)
    with pytest.raises(ValueError, match="'PoseResidualNetwork', but it has no weights"):
        check_postprocessor_weights(cfg2, model)
    checkpointer = MultiTaskCheckpointer(model)
    checkpointer.load(str(tmp_path / "out" / "model_final.pth"), checkpointables=[])
    check_postprocessor_weights(cfg2, model, checkpointer.last_report)
    # a checkpoint without post-processors does not make them ready
    bare = {k: v for k, v in ckpt.items() if not k.startswith("postprocessors.")}
    torch.save({"model": bare}, str(tmp_path / "bare.pth"))
    model = build_model(cfg2)
    checkpointer = MultiTaskCheckpointer(model)
    checkpointer.load(str(tmp_path / "bare.pth"), checkpointables=[])
    with pytest.raises(ValueError, match="MODEL.PRN.FIT_ON_TRAIN_GT True"):
        check_postprocessor_weights(cfg2, model, checkpointer.last_report)


def test_activity_without_weights_or_labels_names_both_ways_out(tmp_path, synthetic_json):
    import json

    data = json.loads(Path(synthetic_json).read_text())
    for a in data["annotations"]:
        a.pop("activity", None)
    nolabels = Path(synthetic_json).with_name("nolabels.json")
    nolabels.write_text(json.dumps(data))
    cfg = _chain_cfg(tmp_path, "chain_nolabels", str(nolabels),
                     ["MODEL.PRN.FIT_ON_TRAIN_GT", "False"])
    ways_out = r"MODEL.ACTIVITY.WEIGHTS <file>.*train_activity.py --mpii-csv.*FIT_ON_TRAIN_GT True"
    with pytest.raises(ValueError, match="has 0 people with keypoints and an activity") as e:
        Trainer(cfg).train()
    assert e.match(ways_out)
    cfg.defrost()
    cfg.MODEL.ACTIVITY.FIT_ON_TRAIN_GT = False
    cfg.MODEL.POSTPROCESSORS = ["ActivityClassifier"]
    with pytest.raises(ValueError, match="'ActivityClassifier', but it has no weights") as e:
        Trainer(cfg).train()
    assert e.match(ways_out)


def test_weights_files_that_do_not_fit_are_refused_before_training(tmp_path, synthetic_json):
    prn_file = str(tmp_path / "prn_other.pth")
    PoseResidualNetwork(heatmap_size=(28, 18), hidden_dim=32).save(prn_file)
    cfg = _chain_cfg(tmp_path, "chain", synthetic_json, ["MODEL.PRN.WEIGHTS", prn_file])
    with pytest.raises(ValueError, match=r"heatmap_size \[28, 18\].*MODEL.PRN.HEATMAP_SIZE"):
        Trainer(cfg)
    act_file = str(tmp_path / "act_other.pth")
    clf = ActivityClassifier(classes=["a", "b"], hidden_dims=[32])
    save_activity_weights(act_file, clf.mlp, clf.classes, clf.input_layout(), [32], 0.3)
    cfg = _chain_cfg(
        tmp_path, "chain", synthetic_json,
        ["MODEL.ACTIVITY.FIT_ON_TRAIN_GT", "False", "MODEL.ACTIVITY.WEIGHTS", act_file],
    )
    with pytest.raises(ValueError, match="MODEL.ACTIVITY.CLASSES"):
        Trainer(cfg)
    clf = ActivityClassifier(hidden_dims=[32], geometry=False)
    save_activity_weights(act_file, clf.mlp, clf.classes, clf.input_layout(), [32], 0.3)
    with pytest.raises(ValueError, match="MODEL.ACTIVITY.GEOMETRY"):
        Trainer(cfg)


def test_coco_full_chain_config_names_its_activity_weights(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(str(COCO_CHAIN))
    assert list(cfg.MODEL.POSTPROCESSORS) == ["PoseResidualNetwork", "ActivityClassifier"]
    assert cfg.MODEL.PRN.FIT_ON_TRAIN_GT and cfg.TEST.EVAL_KEYPOINTS_BEFORE_PRN
    assert cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE == [False, True, True, True]
    assert cfg.MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON
    assert cfg.MODEL.ACTIVITY.WEIGHTS == "output/activity/activity_classifier.pth"
    assert not cfg.MODEL.ACTIVITY.FIT_ON_TRAIN_GT  # COCO has no activity labels
    clf = ActivityClassifier(cfg, weights="")
    with pytest.raises(FileNotFoundError, match="MODEL.ACTIVITY.WEIGHTS"):
        clf.load_weights(str(tmp_path / "missing.pth"))

"""The model learns: a tiny model overfits a few synthetic images and its keypoint AP rises.

This is the everyday proof that the losses, the offset refinement and the decoder fit together:
break the keypoint loss or the decoding and the keypoint AP stays near zero.
"""

import logging

import torch

from multitask import get_cfg
from multitask.data import DatasetCatalog
from multitask.data.synthetic import generate_synthetic_people
from multitask.engine import Trainer

# Floors well under what a working model reaches (about 90 on these images after 100
# iterations), and far above what a model with a broken keypoint loss or decoder reaches (~0).
KEYPOINT_AP_FLOOR = 25.0
BOX_AP_FLOOR = 40.0


def overfit_cfg(tmp_path, name: str):
    json_file = generate_synthetic_people(
        str(tmp_path / "data"),
        num_images=2,
        seed=5,
        image_size=(128, 160),
        min_people=1,
        max_people=2,
        min_person_height=70.0,
        min_keypoint_area=0,  # keep the keypoints of every person, small ones too
    )
    image_root = str(tmp_path / "data" / "images")
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.BACKBONE.FREEZE_AT",
            "0",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.WIDTH_MULT",
            "0.25",
            "MODEL.RESNETS.NORM",
            "BN",
            "MODEL.FPN.OUT_CHANNELS",
            "32",
            "MODEL.ANCHOR_GENERATOR.SIZES",
            "[[16], [32], [64], [128], [256]]",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN",
            "100",
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            "50",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
            "32",
            "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE",
            "5",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "128",
            "MODEL.ROI_MASK_HEAD.CONV_DIM",
            "32",
            "MODEL.ROI_MASK_HEAD.NUM_CONV",
            "2",
            "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS",
            "[64, 64]",
            "DATASETS.REGISTER",
            repr([[name, json_file, image_root]]),
            "DATASETS.TRAIN",
            f"('{name}',)",
            "DATASETS.TEST",
            f"('{name}',)",
            "INPUT.MIN_SIZE_TRAIN",
            "(128,)",
            "INPUT.MAX_SIZE_TRAIN",
            "160",
            "INPUT.MIN_SIZE_TEST",
            "128",
            "INPUT.MAX_SIZE_TEST",
            "160",
            "INPUT.RANDOM_FLIP",
            "none",
            "SOLVER.OPTIMIZER",
            "AdamW",
            "SOLVER.BASE_LR",
            "0.003",
            "SOLVER.WEIGHT_DECAY",
            "0.0",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "SOLVER.MAX_ITER",
            "100",
            "SOLVER.STEPS",
            "(80,)",
            "SOLVER.WARMUP_ITERS",
            "20",
            "SOLVER.CHECKPOINT_PERIOD",
            "0",
            "SOLVER.LOG_PERIOD",
            "50",
            "DATALOADER.NUM_WORKERS",
            "0",
            "SEED",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )
    return cfg


def train_and_evaluate(cfg):
    from multitask.data import register_datasets_from_cfg
    from multitask.engine.defaults import seed_all

    register_datasets_from_cfg(cfg)
    seed_all(cfg.SEED)
    threads = torch.get_num_threads()
    try:
        trainer = Trainer(cfg)
        return trainer.train()
    finally:
        torch.set_num_threads(threads)
        for name in cfg.DATASETS.TRAIN:
            DatasetCatalog.remove(name)


def test_overfits_two_synthetic_images(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    results = train_and_evaluate(overfit_cfg(tmp_path, "overfit_ok"))
    assert results["bbox"]["AP"] > BOX_AP_FLOOR, results
    assert results["keypoints"]["AP"] > KEYPOINT_AP_FLOOR, results


def test_broken_keypoint_loss_does_not_learn(tmp_path, monkeypatch):
    """The same run with a keypoint loss that ignores the targets stays under the floor."""
    from multitask.modeling.roi_heads import roi_heads

    original = roi_heads.keypoint_softmax_ce_loss

    def broken(heatmaps, targets):  # every visible keypoint's target becomes cell 0
        return original(heatmaps, torch.where(targets >= 0, torch.zeros_like(targets), targets))

    monkeypatch.setattr(roi_heads, "keypoint_softmax_ce_loss", broken)
    cfg = overfit_cfg(tmp_path, "overfit_broken")
    results = train_and_evaluate(cfg)
    assert results["keypoints"]["AP"] < KEYPOINT_AP_FLOOR, results

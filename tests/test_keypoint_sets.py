"""Keypoint sets as dataset metadata: COCO's defined once, any K when the dataset and
MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS agree, and the settings that do not fit refused by name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_model import TINY_MODEL, small_synthetic_people

from multitask.config import get_cfg
from multitask.data import DatasetCatalog, MetadataCatalog, register_datasets_from_cfg
from multitask.engine import Trainer
from multitask.structures.keypoints import (
    COCO_PERSON_KEYPOINTS,
    KeypointSet,
    flip_permutation,
    hflip_keypoints,
    infer_flip_map,
)

REPO = Path(__file__).resolve().parents[1]
INSTANT = REPO / "configs" / "quick_schedules" / "multitask_R_18_FPN_instant_test.yaml"
# five keypoints of their own, taken from the synthetic people's COCO keypoints
FIVE = {"head": 0, "left_hand": 9, "right_hand": 10, "left_foot": 15, "right_foot": 16}
FIVE_SIGMAS = [0.026, 0.062, 0.062, 0.089, 0.089]


def _five_keypoint_json(tmp_path: Path) -> Path:
    src = small_synthetic_people(tmp_path / "data", num_images=6, seed=11)
    data = json.loads(Path(src).read_text())
    cat = data["categories"][0]
    cat["keypoints"] = list(FIVE)
    cat["skeleton"] = [[1, 2], [1, 3], [1, 4], [1, 5]]
    for a in data["annotations"]:
        k = np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3)[list(FIVE.values())]
        a["keypoints"] = k.reshape(-1).tolist()
        a["num_keypoints"] = int((k[:, 2] > 0).sum())
    out = tmp_path / "data" / "five.json"
    out.write_text(json.dumps(data))
    return out


def test_coco_keypoints_defined_once_and_flipped_one_way():
    assert len(COCO_PERSON_KEYPOINTS) == 17 and COCO_PERSON_KEYPOINTS.is_coco_person
    perm = COCO_PERSON_KEYPOINTS.flip_indices
    assert perm == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    from multitask.data import COCO_PERSON_KEYPOINT_NAMES, create_keypoint_hflip_indices
    from multitask.data.synthetic import KEYPOINT_NAMES
    from multitask.evaluation import KEYPOINT_COORD_OFFSET
    from multitask.modeling.postprocessing.activity_features import COCO_FLIP_PERMUTATION
    from multitask.structures import keypoints as ks
    from multitask.utils.visualizer import COCO_SKELETON

    assert COCO_PERSON_KEYPOINT_NAMES is ks.COCO_PERSON_KEYPOINT_NAMES
    assert list(KEYPOINT_NAMES) == list(ks.COCO_PERSON_KEYPOINT_NAMES)
    assert COCO_SKELETON is ks.COCO_PERSON_SKELETON
    assert KEYPOINT_COORD_OFFSET is ks.KEYPOINT_COORD_OFFSET
    assert COCO_FLIP_PERMUTATION == perm == create_keypoint_hflip_indices().tolist()
    # pycocotools' own default sigmas
    from pycocotools.cocoeval import Params

    default = Params(iouType="keypoints").kpt_oks_sigmas
    np.testing.assert_allclose(ks.COCO_PERSON_OKS_SIGMAS, default)

    kps = np.zeros((2, 17, 3), np.float32)
    kps[:, 1] = [10.0, 5.0, 2]  # left eye
    kps[:, 2] = [30.0, 5.0, 0]  # right eye, unlabelled
    flipped = hflip_keypoints(kps, np.array([[100.0], [60.0]]), perm)
    assert flipped[0, 2].tolist() == [90.0, 5.0, 2] and flipped[1, 2].tolist() == [50.0, 5.0, 2]
    assert flipped[0, 1].tolist() == [0.0, 5.0, 0]  # an unlabelled keypoint gets x = 0


def test_keypoint_set_from_metadata_and_its_errors():
    names = ["head", "left_hand", "right_hand", "l_foot", "r_foot"]
    assert infer_flip_map(names) == [("left_hand", "right_hand"), ("l_foot", "r_foot")]
    five = KeypointSet.from_metadata({"keypoint_names": names})
    assert five.flip_indices == [0, 2, 1, 4, 3] and not five.is_coco_person
    with pytest.raises(ValueError, match=r"not among the keypoint_names"):
        flip_permutation(names, [("head", "tail")])
    with pytest.raises(ValueError, match="2 keypoint OKS sigmas for 5 keypoints"):
        KeypointSet(names=tuple(names), oks_sigmas=(0.1, 0.1))
    assert KeypointSet.from_metadata({"thing_classes": ["person"]}) is None


@pytest.fixture
def five_keypoints(tmp_path):
    path = _five_keypoint_json(tmp_path)
    yield path
    for name in ("five_train", "five_val"):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _register(path: Path):
    images = str(path.parent / "images")
    return [
        "DATASETS.REGISTER",
        repr([["five_train", str(path), images], ["five_val", str(path), images]]),
        "DATASETS.TRAIN", "('five_train',)",
        "DATASETS.TEST", "('five_val',)",
    ]


def test_a_five_keypoint_dataset_trains_and_evaluates_through_train_net(tmp_path, five_keypoints):
    out = tmp_path / "out"
    opts = TINY_MODEL + _register(five_keypoints) + [
        "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "5",
        "TEST.KEYPOINT_OKS_SIGMAS", repr(FIVE_SIGMAS),
        "SOLVER.MAX_ITER", "2",
        "SOLVER.STEPS", "()",
        "SOLVER.WARMUP_ITERS", "1",
        "TEST.VIS_NUM_IMAGES", "1",
        "OUTPUT_DIR", str(out),
    ]
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(INSTANT)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd + [str(o) for o in opts], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "labels its own 5 keypoints" in proc.stdout + proc.stderr
    final = json.loads((out / "metrics.json").read_text().splitlines()[-1])
    assert "keypoints/AP" in final and "bbox/AP" in final
    results_file = out / "inference" / "five_val" / "coco_instances_results.json"
    results = json.loads(results_file.read_text())
    assert results and all(len(r["keypoints"]) == 15 for r in results)
    assert list((out / "vis" / "five_val").glob("*.png"))  # drawn with the dataset's skeleton


def test_keypoint_settings_that_do_not_fit_the_dataset_are_refused(tmp_path, five_keypoints):
    def cfg_with(*extra):
        cfg = get_cfg()
        cfg.merge_from_file(str(INSTANT))
        cfg.merge_from_list(TINY_MODEL + _register(five_keypoints) + list(extra) + [
            "OUTPUT_DIR", str(tmp_path / "out"), "DATALOADER.NUM_WORKERS", "0",
        ])
        register_datasets_from_cfg(cfg)
        return cfg

    with pytest.raises(ValueError, match=r"NUM_KEYPOINTS is 17, but dataset 'five_train' labels "
                                         r"5 keypoints.*NUM_KEYPOINTS 5"):
        Trainer(cfg_with())
    no_sigmas = r"five_val.*TEST.KEYPOINT_OKS_SIGMAS.*keypoint_oks_sigmas"
    with pytest.raises(ValueError, match=no_sigmas):
        Trainer(cfg_with("MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "5"))
    with pytest.raises(ValueError, match=r"MODEL.ACTIVITY.GEOMETRY False"):
        Trainer(cfg_with(
            "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "5",
            "TEST.KEYPOINT_OKS_SIGMAS", repr(FIVE_SIGMAS),
            "MODEL.POSTPROCESSORS", "['ActivityClassifier']",
        ))

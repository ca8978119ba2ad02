"""The model's keypoints against the datasets' (``multitask.structures.keypoints``): a run is
refused before it starts when ``MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS`` differs from a dataset's
keypoint count, when a test set with keypoints of its own has no OKS sigmas, or when a
post-processor that reads COCO's keypoints by name is asked to read others."""

import logging
from typing import Optional, Sequence

from ..data import DatasetCatalog, MetadataCatalog
from ..structures.keypoints import COCO_PERSON_KEYPOINTS, KeypointSet, check_num_keypoints

logger = logging.getLogger(__name__)

__all__ = ["dataset_keypoint_set", "train_keypoint_set", "check_keypoint_sets"]


def dataset_keypoint_set(name: str, num_keypoints: Optional[int] = None) -> KeypointSet:
    """The keypoint set of a registered dataset. A json's own keypoints are known once it has
    been read: it is read here when its registered metadata (COCO's until then) does not have
    ``num_keypoints`` keypoints."""
    md = MetadataCatalog.get(name)
    keypoint_set = KeypointSet.from_metadata(md)
    unread = not md.has("load_stats") and name in DatasetCatalog
    if unread and (keypoint_set is None or num_keypoints not in (None, len(keypoint_set))):
        DatasetCatalog.get(name)
        keypoint_set = KeypointSet.from_metadata(md)
    return keypoint_set or COCO_PERSON_KEYPOINTS


def train_keypoint_set(cfg) -> KeypointSet:
    """The keypoint set of the first ``DATASETS.TRAIN`` dataset (COCO's when there is none)."""
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        return COCO_PERSON_KEYPOINTS
    return dataset_keypoint_set(names[0], cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS)


def check_keypoint_sets(cfg, train: Sequence[str] = None, test: Sequence[str] = None) -> None:
    """Refuse, naming the keys to set, a keypoint model whose keypoints do not fit its datasets
    (``DATASETS.TRAIN`` and ``DATASETS.TEST`` unless given)."""
    if not cfg.MODEL.KEYPOINT_ON:
        return
    k = int(cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS)
    train = list(cfg.DATASETS.TRAIN if train is None else train)
    test = list(cfg.DATASETS.TEST if test is None else test)
    sigmas = list(cfg.TEST.KEYPOINT_OKS_SIGMAS)
    if sigmas and len(sigmas) != k:
        raise ValueError(f"TEST.KEYPOINT_OKS_SIGMAS has {len(sigmas)} values for "
                         f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS {k}")
    for name in train + test:
        keypoint_set = dataset_keypoint_set(name, k)
        check_num_keypoints(k, keypoint_set, name)
        if keypoint_set.is_coco_person:
            continue
        if name in test and not sigmas and keypoint_set.oks_sigmas is None:
            raise ValueError(
                f"dataset '{name}' labels its own keypoints {list(keypoint_set.names)}; keypoint "
                "AP needs one OKS sigma per keypoint: give TEST.KEYPOINT_OKS_SIGMAS (e.g. COCO's "
                "0.025 for a face point, 0.062-0.107 for joints) or the dataset metadata's "
                "keypoint_oks_sigmas"
            )
        activity = "ActivityClassifier" in cfg.MODEL.POSTPROCESSORS
        if activity and cfg.MODEL.ACTIVITY.GEOMETRY:
            raise ValueError(
                f"the ActivityClassifier's pose geometry (MODEL.ACTIVITY.GEOMETRY) reads COCO's "
                f"17 person keypoints by name, but dataset '{name}' labels "
                f"{list(keypoint_set.names)}; set MODEL.ACTIVITY.GEOMETRY False (positions only) "
                "or take 'ActivityClassifier' out of MODEL.POSTPROCESSORS"
            )

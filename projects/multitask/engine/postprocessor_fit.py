"""Getting the post-processors ready for a run: fitted on the training set's ground truth
(``MODEL.PRN.FIT_ON_TRAIN_GT``, ``MODEL.ACTIVITY.FIT_ON_TRAIN_GT``) before the detector trains,
and checked after the weights are loaded, so that a chain never runs with an untrained PRN or
activity classifier without saying so.

Each fit runs on every process with a fixed seed (the same result everywhere, no broadcast) and
without touching the global random stream, so the detector trains the same with or without it;
the main process writes the fitted weights to ``OUTPUT_DIR`` (``prn.pth``,
``activity_classifier.pth``), and the full-model checkpoints carry them too.
"""

import logging
import os
import time
from typing import Dict, List, Optional, Sequence

from ..utils import comm
from .keypoint_checks import train_keypoint_set

logger = logging.getLogger(__name__)

__all__ = [
    "ACTIVITY_FROM_MPII_COMMAND",
    "fit_postprocessors",
    "fit_activity_on_train_gt",
    "fit_prn_on_train_gt",
    "check_postprocessor_weights",
]

# The one command that makes activity weights for data without activity labels (COCO)
ACTIVITY_FROM_MPII_COMMAND = (
    "python tools/train_activity.py --mpii-csv ../shared/data/mpii-activity/mpii_human_pose.csv "
    "--output-dir output/activity"
)


def _train_dicts(cfg):
    from ..data import DatasetCatalog

    return [d for name in cfg.DATASETS.TRAIN for d in DatasetCatalog.get(name)]


def fit_postprocessors(cfg, model) -> Dict[str, Dict]:
    """Run the fits the config asks for on ``model`` (unwrapped); returns their statistics.

    ``DATASETS.TRAIN`` is read once for both; the activity classifier (seconds, and the one whose
    settings can be refused) is fitted first, so a refusal comes before the PRN's minutes."""
    stats = {}
    if not (cfg.MODEL.PRN.FIT_ON_TRAIN_GT or cfg.MODEL.ACTIVITY.FIT_ON_TRAIN_GT):
        return stats
    dicts = _train_dicts(cfg)
    if cfg.MODEL.ACTIVITY.FIT_ON_TRAIN_GT:
        stats["ActivityClassifier"] = fit_activity_on_train_gt(cfg, model, dicts)
    if cfg.MODEL.PRN.FIT_ON_TRAIN_GT:
        stats["PoseResidualNetwork"] = fit_prn_on_train_gt(cfg, model, dicts)
    return stats


def _postprocessor(cfg, model, name: str, key: str):
    post = model.postprocessors
    if name not in post:
        raise ValueError(
            f"{key} needs '{name}' in MODEL.POSTPROCESSORS (got {list(cfg.MODEL.POSTPROCESSORS)})"
        )
    return post[name]


def _no_activity_labels_message(cfg, classes: Sequence[str], found: int) -> str:
    return (
        f"DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} has {found} people with keypoints and an "
        f"activity in {list(classes)}, so the activity classifier cannot be fitted on it. "
        "Either give it weights, MODEL.ACTIVITY.WEIGHTS <file> (for COCO, made from the shipped "
        f"MPII poses by: {ACTIVITY_FROM_MPII_COMMAND}, which writes "
        "output/activity/activity_classifier.pth), or train on data whose annotations carry an "
        "'activity' field with MODEL.ACTIVITY.FIT_ON_TRAIN_GT True"
    )


def fit_activity_on_train_gt(cfg, model, dicts: Optional[List[dict]] = None) -> Dict:
    """``MODEL.ACTIVITY.FIT_ON_TRAIN_GT``: fit ``model``'s ActivityClassifier post-processor on the
    ground-truth poses of ``cfg.DATASETS.TRAIN`` (``dicts``, read when not given) and save it to
    ``OUTPUT_DIR/activity_classifier.pth`` (main process). Returns the fit's statistics."""
    from ..modeling.postprocessing.activity import save_activity_weights
    from .activity_training import activity_poses_from_dicts, fit_activity_classifier

    classifier = _postprocessor(cfg, model, "ActivityClassifier", "MODEL.ACTIVITY.FIT_ON_TRAIN_GT")
    if cfg.MODEL.ACTIVITY.WEIGHTS:
        raise ValueError(
            "MODEL.ACTIVITY.FIT_ON_TRAIN_GT fits the activity classifier, but "
            f"MODEL.ACTIVITY.WEIGHTS also gives one ('{cfg.MODEL.ACTIVITY.WEIGHTS}'); "
            "set one of the two"
        )
    if cfg.MODEL.ACTIVITY.FIT_EPOCHS < 1:
        raise ValueError(
            f"MODEL.ACTIVITY.FIT_EPOCHS must be >= 1, got {cfg.MODEL.ACTIVITY.FIT_EPOCHS}"
        )
    start = time.perf_counter()
    if dicts is None:
        dicts = _train_dicts(cfg)
    kps, boxes, labels = activity_poses_from_dicts(dicts, classifier.classes,
                                                   classifier.num_keypoints)
    if len(labels) < 2:
        raise ValueError("MODEL.ACTIVITY.FIT_ON_TRAIN_GT: "
                         + _no_activity_labels_message(cfg, classifier.classes, len(labels)))
    stats = fit_activity_classifier(
        classifier, kps, boxes, labels, epochs=cfg.MODEL.ACTIVITY.FIT_EPOCHS, seed=max(cfg.SEED, 0)
    )
    classifier.weights_source = "fitted"
    path = os.path.join(cfg.OUTPUT_DIR, "activity_classifier.pth")
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        save_activity_weights(
            path,
            classifier.mlp,
            classifier.classes,
            classifier.input_layout(),
            classifier.hidden_dims,
            classifier.dropout_p,
        )
    stats["seconds"] = time.perf_counter() - start
    logger.info(
        "Fitted the activity classifier on %d ground-truth poses of %s in %.1fs "
        "(accuracy on those poses %.3f); saved to %s",
        stats["num_poses"],
        ", ".join(cfg.DATASETS.TRAIN),
        stats["seconds"],
        stats["train_accuracy"],
        path,
    )
    return stats


def fit_prn_on_train_gt(cfg, model, dicts: Optional[List[dict]] = None) -> Optional[Dict]:
    """``MODEL.PRN.FIT_ON_TRAIN_GT``: fit ``model``'s PoseResidualNetwork on the ground-truth
    keypoints of ``cfg.DATASETS.TRAIN`` (``dicts``, read when not given;
    ``multitask.engine.prn_training``) and save it to
    ``OUTPUT_DIR/prn.pth`` (main process). ``MODEL.PRN.WEIGHTS``, when given, wins: the fit is
    skipped (None returned)."""
    from .prn_training import PRNFitSettings, fit_prn, people_from_dataset_dicts

    prn = _postprocessor(cfg, model, "PoseResidualNetwork", "MODEL.PRN.FIT_ON_TRAIN_GT")
    if cfg.MODEL.PRN.WEIGHTS:
        logger.info("MODEL.PRN.FIT_ON_TRAIN_GT: skipped, MODEL.PRN.WEIGHTS gives the PRN ('%s')",
                    cfg.MODEL.PRN.WEIGHTS)
        return None
    settings = PRNFitSettings(
        epochs=cfg.MODEL.PRN.FIT_EPOCHS,
        lr=cfg.MODEL.PRN.FIT_LR,
        batch_size=cfg.MODEL.PRN.FIT_BATCH_SIZE,
    )
    if dicts is None:
        dicts = _train_dicts(cfg)
    images = people_from_dataset_dicts(dicts, prn.num_keypoints)
    if not any(im["targets"].any() for im in images):
        raise ValueError(
            f"MODEL.PRN.FIT_ON_TRAIN_GT: DATASETS.TRAIN {tuple(cfg.DATASETS.TRAIN)} has no person "
            "with labelled keypoints; set MODEL.PRN.WEIGHTS (tools/train_prn.py writes them)"
        )
    stats = fit_prn(prn, images, settings, seed=max(cfg.SEED, 0), progress=comm.is_main_process(),
                    log=logger.info, keypoint_set=train_keypoint_set(cfg))
    path = os.path.join(cfg.OUTPUT_DIR, "prn.pth")
    if comm.is_main_process():
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        prn.save(path, epochs=settings.epochs, source=",".join(cfg.DATASETS.TRAIN))
        logger.info("Saved the fitted PRN to %s", path)
    return stats


def check_postprocessor_weights(cfg, model, load_report: Sequence[Dict] = ()) -> None:
    """Refuse to run a listed PRN or activity classifier that has no weights: none from its own
    weights key, no fit, and none from the loaded checkpoint (``load_report``:
    :attr:`MultiTaskCheckpointer.last_report`). The message names the ways out."""
    loaded = {r["module"] for r in load_report if r.get("model") and r["loaded"] == r["model"]}
    for name, module in model.postprocessors.items():
        if getattr(module, "weights_source", "x") or f"postprocessors.{name}" in loaded:
            continue
        if name == "ActivityClassifier":
            raise ValueError(
                "MODEL.POSTPROCESSORS lists 'ActivityClassifier', but it has no weights: neither "
                "MODEL.ACTIVITY.WEIGHTS, nor MODEL.ACTIVITY.FIT_ON_TRAIN_GT, nor MODEL.WEIGHTS "
                "gives them. Either give MODEL.ACTIVITY.WEIGHTS <file> (for COCO, made from the "
                f"shipped MPII poses by: {ACTIVITY_FROM_MPII_COMMAND}), or set "
                "MODEL.ACTIVITY.FIT_ON_TRAIN_GT True with activity labels in DATASETS.TRAIN"
            )
        if name == "PoseResidualNetwork":
            raise ValueError(
                "MODEL.POSTPROCESSORS lists 'PoseResidualNetwork', but it has no weights: neither "
                "MODEL.PRN.WEIGHTS, nor MODEL.PRN.FIT_ON_TRAIN_GT, nor MODEL.WEIGHTS gives them. "
                "Set MODEL.PRN.FIT_ON_TRAIN_GT True (fits it on DATASETS.TRAIN's keypoints) or "
                "give MODEL.PRN.WEIGHTS <file> (tools/train_prn.py writes one)"
            )

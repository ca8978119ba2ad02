"""Evaluation: the evaluator interface, the inference loop, COCO (box/mask/keypoint) and activity
metrics, and result printing/checking -- detectron2's ``evaluation`` package, on pycocotools."""
from .activity_evaluation import evaluate_activity, greedy_match
from .activity_metrics import classification_metrics, confusion_matrix, stratified_group_kfold
from .coco_evaluation import KEYPOINT_COORD_OFFSET, COCOEvaluator, instances_to_coco_json
from .evaluator import DatasetEvaluator, DatasetEvaluators, inference_context, inference_on_dataset
from .given_boxes import GivenBoxes
from .testing import create_small_table, flatten_results_dict, print_csv_format, verify_results

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "GivenBoxes",
    "inference_context",
    "inference_on_dataset",
    "COCOEvaluator",
    "instances_to_coco_json",
    "KEYPOINT_COORD_OFFSET",
    "evaluate_activity",
    "greedy_match",
    "classification_metrics",
    "confusion_matrix",
    "stratified_group_kfold",
    "print_csv_format",
    "verify_results",
    "flatten_results_dict",
    "create_small_table",
]

"""Datasets, transforms, mapper and loaders (detectron2's ``detectron2.data``, rebuilt).

Importing this package registers the builtin datasets (:func:`register_all_builtin`); that only
does cheap path checks -- nothing is loaded or generated until ``DatasetCatalog.get``.
"""
from . import transforms
from .build import (
    AspectRatioGroupedDataset,
    DatasetFromList,
    InferenceSampler,
    MapDataset,
    ToIterableDataset,
    TrainingSampler,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
    trivial_batch_collator,
)
from .builtin import (
    get_dataset_json,
    register_all_builtin,
    register_coco_person_keypoints,
    register_datasets_from_cfg,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .coco import (
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    KEYPOINT_COORD_OFFSET,
    load_coco_person_json,
)
from .detection_utils import (
    ImageReadError,
    annotations_to_instances,
    create_keypoint_hflip_indices,
    filter_empty_instances,
    read_image,
    transform_instance_annotations,
)
from .mapper import DatasetMapper, build_augmentation

register_all_builtin()

__all__ = [
    "transforms",
    "AspectRatioGroupedDataset",
    "DatasetFromList",
    "InferenceSampler",
    "MapDataset",
    "ToIterableDataset",
    "TrainingSampler",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "get_detection_dataset_dicts",
    "trivial_batch_collator",
    "DatasetCatalog",
    "Metadata",
    "MetadataCatalog",
    "COCO_PERSON_KEYPOINT_FLIP_MAP",
    "COCO_PERSON_KEYPOINT_NAMES",
    "KEYPOINT_COORD_OFFSET",
    "get_dataset_json",
    "load_coco_person_json",
    "register_all_builtin",
    "register_coco_person_keypoints",
    "register_datasets_from_cfg",
    "ImageReadError",
    "annotations_to_instances",
    "create_keypoint_hflip_indices",
    "filter_empty_instances",
    "read_image",
    "DatasetMapper",
    "build_augmentation",
    "transform_instance_annotations",
]

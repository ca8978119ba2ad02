"""Dataset registration: the builtin datasets, COCO person-keypoint jsons by name, and the
datasets of ``cfg.DATASETS.REGISTER``.

Registration is cheap (path checks only); a dataset is loaded by
:func:`multitask.data.coco.load_coco_person_json` on ``DatasetCatalog.get``.
"""
import os
from pathlib import Path
from typing import Any, List, Optional, Union

from .catalog import DatasetCatalog, MetadataCatalog
from .coco import _base_metadata, load_coco_person_json

__all__ = [
    "register_coco_person_keypoints",
    "register_all_builtin",
    "register_datasets_from_cfg",
    "get_dataset_json",
    "get_builtin_datasets_root",
]


def register_coco_person_keypoints(
    name: str, json_file: Union[str, os.PathLike], image_root: Union[str, os.PathLike]
) -> None:
    """Register a COCO person-keypoints json under ``name`` (loaded lazily on ``get``)."""
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_coco_person_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, activity_classes=None, **_base_metadata()
    )


# ------------------------------------------------------------------------------------------------
# builtin datasets
# ------------------------------------------------------------------------------------------------
_PREDEFINED_COCO = {
    "keypoints_coco_2017_train": (
        "coco/annotations/person_keypoints_train2017.json", "coco/train2017"),
    "keypoints_coco_2017_val": ("coco/annotations/person_keypoints_val2017.json", "coco/val2017"),
}
_SYNTHETIC = {"synthetic_people_train": "train", "synthetic_people_val": "val"}
_COCO_MINI = {"coco_mini_train": "train2017", "coco_mini_val": "val2017"}


def get_builtin_datasets_root() -> str:
    """``$MULTITASK_DATASETS``, default ``./datasets`` (detectron2's ``$DETECTRON2_DATASETS``)."""
    return os.path.expanduser(os.environ.get("MULTITASK_DATASETS", "datasets"))


def _repo_root() -> Path:
    # projects/multitask/data/builtin.py -> parents: data, multitask, projects, <repo root>
    return Path(__file__).resolve().parents[3]


def _find_coco_mini() -> Optional[str]:
    env = os.environ.get("MULTITASK_COCO_MINI")
    if env:
        return os.path.expanduser(env)
    repo = _repo_root()
    rel = Path("shared") / "data" / "coco-mini"
    for cand in (repo.parent / rel, repo / rel):
        if cand.is_dir():
            return str(cand)
    return None


def _load_synthetic(name: str, split: str, root: str) -> List[dict]:
    from .synthetic import ensure_synthetic_dataset  # lazy: generating imports OpenCV drawing

    json_file, image_root = ensure_synthetic_dataset(root, split)
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root)
    return load_coco_person_json(json_file, image_root, name)


def _register_replacing(name: str, func, **metadata: Any) -> None:
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)
    DatasetCatalog.register(name, func)
    MetadataCatalog.get(name).set(activity_classes=None, **_base_metadata(), **metadata)


def register_all_builtin(root: Optional[str] = None) -> None:
    """(Re-)register the builtin datasets. Cheap: nothing is read or generated here.

    * ``keypoints_coco_2017_{train,val}``: ``<root>/coco/annotations/person_keypoints_*2017.json``
      and ``<root>/coco/{train,val}2017`` (``root`` = ``$MULTITASK_DATASETS`` or ``./datasets``);
    * ``coco_mini_{train,val}``: ``$MULTITASK_COCO_MINI`` or ``<repo>/../shared/data/coco-mini``,
      only if that directory exists;
    * ``synthetic_people_{train,val}``: generated on first ``get`` by
      ``multitask.data.synthetic.ensure_synthetic_dataset(syn_root, split)`` (which writes under
      ``<syn_root>/synthetic_people/<split>``), ``syn_root`` = ``$MULTITASK_SYNTHETIC_ROOT`` or
      ``root``; their metadata gets
      ``json_file``/``image_root`` when the loader runs (see :func:`get_dataset_json`).
    """
    root = root if root is not None else get_builtin_datasets_root()
    for name, (json_rel, img_rel) in _PREDEFINED_COCO.items():
        jf, ir = os.path.join(root, json_rel), os.path.join(root, img_rel)
        _register_replacing(
            name, (lambda jf=jf, ir=ir, name=name: load_coco_person_json(jf, ir, name)),
            json_file=jf, image_root=ir,
        )

    mini = _find_coco_mini()
    if mini is not None:
        for name, split in _COCO_MINI.items():
            jf = os.path.join(mini, "annotations", f"person_keypoints_{split}.json")
            ir = os.path.join(mini, split)
            _register_replacing(
                name, (lambda jf=jf, ir=ir, name=name: load_coco_person_json(jf, ir, name)),
                json_file=jf, image_root=ir,
            )

    syn_root = os.environ.get("MULTITASK_SYNTHETIC_ROOT") or root
    for name, split in _SYNTHETIC.items():
        _register_replacing(
            name, (lambda name=name, split=split: _load_synthetic(name, split, syn_root))
        )


def get_dataset_json(name: str) -> str:
    """Path of the COCO json behind dataset ``name``, making sure it exists.

    For lazily generated datasets (synthetic) this runs the dataset's loader once, which creates
    the json and records it in the metadata. Raises ``FileNotFoundError`` when there is none.
    """
    md = MetadataCatalog.get(name)
    jf = md.get("json_file")
    if jf and os.path.isfile(jf):
        return jf
    if name in DatasetCatalog:
        DatasetCatalog.get(name)
        jf = md.get("json_file")
        if jf and os.path.isfile(jf):
            return jf
    raise FileNotFoundError(
        f"Dataset '{name}' has no COCO json file on disk (metadata json_file={jf!r})"
    )


def register_datasets_from_cfg(cfg) -> List[str]:
    """Register each ``[name, json_file, image_root]`` of ``cfg.DATASETS.REGISTER``.

    Idempotent: a name already registered with the same files is left alone; with other files it
    is an error. Returns the names of the entries.
    """
    entries = cfg.DATASETS.get("REGISTER", []) or []
    names = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 3 or not all(
            isinstance(e, str) and e for e in entry
        ):
            raise ValueError(
                f"DATASETS.REGISTER[{i}] must be [name, json_file, image_root] (3 strings), "
                f"got {entry!r}"
            )
        name, json_file, image_root = entry
        json_file, image_root = os.path.expanduser(json_file), os.path.expanduser(image_root)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"DATASETS.REGISTER entry '{name}': json file {json_file} does not exist"
            )
        if not os.path.isdir(image_root):
            raise FileNotFoundError(
                f"DATASETS.REGISTER entry '{name}': image root {image_root} is not a directory"
            )
        if name in DatasetCatalog:
            md = MetadataCatalog.get(name)
            if (md.get("json_file"), md.get("image_root")) == (json_file, image_root):
                names.append(name)
                continue
            raise ValueError(
                f"DATASETS.REGISTER entry '{name}': a dataset of this name is already registered "
                f"(json_file={md.get('json_file')!r}, image_root={md.get('image_root')!r})"
            )
        register_coco_person_keypoints(name, json_file, image_root)
        names.append(name)
    return names

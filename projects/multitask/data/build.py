"""Data loaders (detectron2's ``build_detection_{train,test}_loader``).

Training: an infinite, shuffled, distributed-aware index stream (:class:`TrainingSampler`) -> the
mapper (an image it cannot read is replaced by another random one, see :class:`MapDataset`) ->
optional aspect-ratio grouping -> batches that are plain lists of dicts.

Testing: batch size 1, :class:`InferenceSampler` gives each rank a contiguous, disjoint part of
the dataset; unreadable images are logged and skipped (the loader yields only readable ones).
"""
import itertools
import logging
import random
from typing import Any, Callable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.utils.data as torchdata

from multitask.utils import comm

from .catalog import DatasetCatalog
from .mapper import DatasetMapper

logger = logging.getLogger(__name__)

__all__ = [
    "get_detection_dataset_dicts",
    "build_detection_train_loader",
    "build_detection_test_loader",
    "DatasetFromList",
    "MapDataset",
    "ToIterableDataset",
    "TrainingSampler",
    "InferenceSampler",
    "AspectRatioGroupedDataset",
    "trivial_batch_collator",
]


# ------------------------------------------------------------------------------------------------
# dataset dicts
# ------------------------------------------------------------------------------------------------
def _has_usable_annotation(d: dict) -> bool:
    return any(not a.get("iscrowd", 0) for a in d.get("annotations", []))


def _num_visible_keypoints(d: dict) -> int:
    n = 0
    for a in d.get("annotations", []):
        if a.get("iscrowd", 0) or a.get("keypoints") is None:
            continue
        n += int((np.asarray(a["keypoints"], dtype=np.float32).reshape(-1, 3)[:, 2] > 0).sum())
    return n


def get_detection_dataset_dicts(
    names: Union[str, Sequence[str]], filter_empty: bool = True, min_keypoints: int = 0
) -> List[dict]:
    """Concatenate the dataset dicts of ``names``.

    ``filter_empty`` drops images without any non-crowd annotation; ``min_keypoints`` > 0 drops
    images with fewer visible keypoints (off by default: the model must also see images without
    people).
    """
    if isinstance(names, str):
        names = [names]
    if len(names) == 0:
        raise ValueError("No dataset names given")
    dicts = []
    for name in names:
        d = DatasetCatalog.get(name)
        if len(d) == 0:
            raise ValueError(f"Dataset '{name}' is empty")
        dicts.extend(d)
    n0 = len(dicts)
    if filter_empty:
        dicts = [d for d in dicts if _has_usable_annotation(d)]
        logger.info(
            "Removed %d images without usable annotations; %d left", n0 - len(dicts), len(dicts)
        )
    if min_keypoints > 0:
        n1 = len(dicts)
        dicts = [d for d in dicts if _num_visible_keypoints(d) >= min_keypoints]
        logger.info(
            "Removed %d images with fewer than %d keypoints; %d left",
            n1 - len(dicts), min_keypoints, len(dicts),
        )
    if not dicts:
        raise ValueError(f"No images left in {list(names)} after filtering")
    return dicts


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------
class DatasetFromList(torchdata.Dataset):
    """A map-style dataset over a list."""

    def __init__(self, lst: List[Any]):
        self._lst = lst

    def __len__(self) -> int:
        return len(self._lst)

    def __getitem__(self, idx: int) -> Any:
        return self._lst[idx]


class MapDataset(torchdata.Dataset):
    """``map_func(dataset[idx])``. With ``retry=True`` a ``None`` result (unreadable image) is
    counted, the index is remembered as bad and another random index is tried instead; with
    ``retry=False`` the ``None`` is returned.

    ``num_skipped`` counts the images skipped in this process (each DataLoader worker has its own
    copy).
    """

    def __init__(
        self, dataset: torchdata.Dataset, map_func: Callable[[Any], Any], retry: bool = True
    ):
        self._dataset = dataset
        self._map_func = map_func
        self._retry = retry
        self._rng = random.Random(42)
        self._bad: set = set()
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self._dataset)

    def _other_index(self) -> int:
        n = len(self._dataset)
        if len(self._bad) >= n:
            raise RuntimeError(
                f"All {n} images of the dataset failed to load; see the warnings above"
            )
        while True:
            i = self._rng.randrange(n)
            if i not in self._bad:
                return i

    def __getitem__(self, idx: int) -> Any:
        cur = int(idx)
        while True:
            if cur in self._bad and self._retry:
                cur = self._other_index()
                continue
            data = self._map_func(self._dataset[cur])
            if data is not None or not self._retry:
                return data
            self._bad.add(cur)
            self.num_skipped += 1
            worker = torchdata.get_worker_info()
            logger.warning(
                "Dataset index %d could not be mapped and is skipped (%d skipped so far in %s)",
                cur, self.num_skipped, f"worker {worker.id}" if worker else "the main process",
            )
            cur = self._other_index()


class ToIterableDataset(torchdata.IterableDataset):
    """Iterate ``dataset[i]`` for ``i`` in ``sampler``; with DataLoader workers each worker takes
    every ``num_workers``-th index (so the workers together follow the sampler once)."""

    def __init__(self, dataset: torchdata.Dataset, sampler: Iterator[int]):
        self.dataset = dataset
        self.sampler = sampler

    def __iter__(self):
        info = torchdata.get_worker_info()
        it = iter(self.sampler)
        if info is not None and info.num_workers > 1:
            it = itertools.islice(it, info.id, None, info.num_workers)
        for idx in it:
            yield self.dataset[idx]


# ------------------------------------------------------------------------------------------------
# samplers
# ------------------------------------------------------------------------------------------------
class TrainingSampler(torchdata.Sampler):
    """Infinite stream of indices in ``[0, size)``: concatenated random permutations from a seed
    shared by all ranks; rank ``r`` of ``world_size`` takes the items ``r, r + world_size, ...``.
    So within each pass the ranks' indices are disjoint and together cover the dataset."""

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: Optional[int] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"TrainingSampler(size=) expects a positive int, got {size!r}")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank() if rank is None else int(rank)
        self._world_size = comm.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self._rank < self._world_size:
            raise ValueError(f"rank {self._rank} is not in [0, {self._world_size})")

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)


class InferenceSampler(torchdata.Sampler):
    """Each rank gets a contiguous block of ``[0, size)``; blocks are disjoint and cover it."""

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None):
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self._size = int(size)
        self._rank = comm.get_rank() if rank is None else int(rank)
        self._world_size = comm.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self._rank < self._world_size:
            raise ValueError(f"rank {self._rank} is not in [0, {self._world_size})")
        shard = (self._size - 1) // self._world_size + 1 if self._size else 0
        begin = min(shard * self._rank, self._size)
        end = min(shard * (self._rank + 1), self._size)
        self._local_indices = range(begin, end)

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)


# ------------------------------------------------------------------------------------------------
# batching
# ------------------------------------------------------------------------------------------------
def trivial_batch_collator(batch: List[Any]) -> List[Any]:
    """A batch is the list of the mapped dicts (no stacking)."""
    return batch


def _identity(x: Any) -> Any:
    return x


def _worker_init_reset_seed(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**31
    np.random.seed(seed)
    random.seed(seed)


class AspectRatioGroupedDataset(torchdata.IterableDataset):
    """Group the dicts of ``dataset`` into batches of ``batch_size`` whose images are all
    landscape (w > h) or all portrait/square, from the ``image`` tensor's shape."""

    def __init__(self, dataset: Any, batch_size: int):
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self._buckets: List[List[Any]] = [[] for _ in range(2)]

    def __iter__(self):
        for d in self.dataset:
            if d is None:
                continue
            h, w = d["image"].shape[-2:]
            bucket = self._buckets[0 if w > h else 1]
            bucket.append(d)
            if len(bucket) == self.batch_size:
                batch = bucket[:]
                del bucket[:]
                yield batch


def _per_process_batch_size(total: int) -> int:
    world = comm.get_world_size()
    if total <= 0 or total % world != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be a positive multiple of the number of "
            f"processes ({world})"
        )
    return total // world


def build_detection_train_loader(
    cfg,
    mapper: Optional[Callable[[dict], Any]] = None,
    *,
    dataset: Optional[List[dict]] = None,
    sampler: Optional[torchdata.Sampler] = None,
):
    """Infinite iterable of batches (lists of ``SOLVER.IMS_PER_BATCH // world_size`` mapped dicts)
    over ``cfg.DATASETS.TRAIN`` (or the given list of dataset dicts)."""
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
    if mapper is None:
        mapper = DatasetMapper(cfg, True)
    batch_size = _per_process_batch_size(cfg.SOLVER.IMS_PER_BATCH)
    if sampler is None:
        sampler = TrainingSampler(len(dataset))
    ds = MapDataset(DatasetFromList(dataset), mapper, retry=True)
    num_workers = int(cfg.DATALOADER.NUM_WORKERS)

    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        loader = torchdata.DataLoader(
            ToIterableDataset(ds, sampler),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_identity,
            worker_init_fn=_worker_init_reset_seed,
        )
        return AspectRatioGroupedDataset(loader, batch_size)
    batch_sampler = torchdata.BatchSampler(sampler, batch_size, drop_last=True)
    return torchdata.DataLoader(
        ds,
        num_workers=num_workers,
        batch_sampler=batch_sampler,
        collate_fn=trivial_batch_collator,
        worker_init_fn=_worker_init_reset_seed,
    )


class _SkipNoneLoader:
    """Iterate a DataLoader of 1-element batches, dropping ``None`` items (unreadable images)."""

    def __init__(self, loader: torchdata.DataLoader):
        self.loader = loader
        self.dataset = loader.dataset
        self.num_skipped = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            good = [d for d in batch if d is not None]
            if len(good) < len(batch):
                self.num_skipped += len(batch) - len(good)
                logger.warning(
                    "Test loader: %d unreadable image(s) skipped so far", self.num_skipped
                )
            if good:
                yield good


def build_detection_test_loader(
    cfg,
    dataset_name: Union[str, Sequence[str], None] = None,
    mapper: Optional[Callable[[dict], Any]] = None,
    *,
    dataset: Optional[List[dict]] = None,
    num_workers: Optional[int] = None,
):
    """Iterable of 1-image batches (``[dict]``) over ``dataset_name`` (or the given dicts), this
    rank's share only; unreadable images are skipped. ``len()`` is the number of images scheduled
    on this rank."""
    if dataset is None:
        if dataset_name is None:
            raise ValueError("build_detection_test_loader needs a dataset_name or a dataset")
        dataset = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    if mapper is None:
        mapper = DatasetMapper(cfg, False)
    ds = MapDataset(DatasetFromList(dataset), mapper, retry=False)
    loader = torchdata.DataLoader(
        ds,
        batch_size=1,
        sampler=InferenceSampler(len(ds)),
        num_workers=int(cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers),
        collate_fn=trivial_batch_collator,
    )
    return _SkipNoneLoader(loader)

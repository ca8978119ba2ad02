"""Training metrics: a small history store and its writers (console, metrics.json, TensorBoard)."""

import datetime
import json
import logging
import os
from collections import defaultdict, deque
from typing import Dict

import numpy as np

logger = logging.getLogger(__name__)


class MetricStorage:
    """Per-iteration scalars with a window for median smoothing."""

    def __init__(self, start_iter: int = 0, window: int = 20):
        self.iter = start_iter
        self._history: Dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self._latest: Dict[str, float] = {}

    def put_scalars(self, **kwargs: float) -> None:
        for k, v in kwargs.items():
            v = float(v)
            self._history[k].append(v)
            self._latest[k] = v

    def median(self, key: str) -> float:
        return float(np.median(self._history[key]))

    def has(self, key: str) -> bool:
        return bool(self._history.get(key))

    def smoothed(self) -> Dict[str, float]:
        """Window medians of the losses, latest value of everything else."""
        out = {}
        for k, v in self._latest.items():
            out[k] = self.median(k) if k.startswith("loss") or k == "total_loss" else v
        return out


class JSONWriter:
    """Append one JSON line per logged iteration to ``metrics.json``."""

    def __init__(self, path: str):
        self._file = open(path, "a")

    def write(self, storage: MetricStorage) -> None:
        record = {"iteration": storage.iter, **storage.smoothed()}
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorboardWriter:
    """Scalars to TensorBoard event files in ``log_dir`` (skipped if tensorboard is absent)."""

    def __init__(self, log_dir: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover
            logger.warning("tensorboard is not installed; no event files are written")
            self._writer = None
            return
        self._writer = SummaryWriter(log_dir)

    def write(self, storage: MetricStorage) -> None:
        if self._writer is None:
            return
        for k, v in storage.smoothed().items():
            self._writer.add_scalar(k, v, storage.iter)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class ConsoleWriter:
    """detectron2-style progress line: ETA, iteration, losses, time per iteration, LR."""

    def __init__(self, max_iter: int):
        self._max_iter = max_iter

    def write(self, storage: MetricStorage) -> None:
        it = storage.iter
        eta = ""
        if storage.has("time"):
            sec = storage.median("time") * (self._max_iter - it - 1)
            eta = f"eta: {datetime.timedelta(seconds=int(sec))}  "
        values = storage.smoothed()
        losses = "  ".join(
            f"{k}: {v:.4g}" for k, v in values.items() if k.startswith("loss") or k == "total_loss"
        )
        extra = ""
        if "time" in values:
            extra += f"  time: {storage.median('time'):.4f}"
        if "data_time" in values:
            extra += f"  data_time: {storage.median('data_time'):.4f}"
        if "lr" in values:
            extra += f"  lr: {values['lr']:.5g}"
        logger.info(f" {eta}iter: {it + 1}/{self._max_iter}  {losses}{extra}")

    def close(self) -> None:
        pass


def default_writers(output_dir: str, max_iter: int):
    os.makedirs(output_dir, exist_ok=True)
    return [
        ConsoleWriter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardWriter(output_dir),
    ]

"""Evaluator interface and the inference loop, shaped like detectron2's ``evaluation/evaluator.py``.

An evaluator sees the model's inputs and outputs batch by batch (``process``) and produces the
metrics at the end (``evaluate``). ``inference_on_dataset`` runs a model over a data loader in
eval mode under ``torch.inference_mode``, feeds an evaluator and logs progress and timings.
"""
import datetime
import logging
import time
from collections import OrderedDict, abc
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
from torch import nn

from ..utils import comm

__all__ = ["DatasetEvaluator", "DatasetEvaluators", "inference_on_dataset", "inference_context"]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Base class of dataset evaluators.

    ``reset()`` is called before a run, ``process(inputs, outputs)`` once per batch (``inputs`` is
    the list of dicts given to the model, ``outputs`` the model's list of dicts), ``evaluate()`` at
    the end. ``evaluate`` returns ``OrderedDict[task -> OrderedDict[metric -> float]]``; in
    distributed runs it may return ``None`` or ``{}`` on ranks other than the main one.
    """

    def reset(self) -> None:
        pass

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        pass

    def evaluate(self) -> Optional[Dict[str, Any]]:
        pass


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators and merges their results (task names must not clash)."""

    def __init__(self, evaluators: Iterable[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs, outputs) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> "OrderedDict[str, Any]":
        results: "OrderedDict[str, Any]" = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if comm.is_main_process() and result is not None:
                for k, v in result.items():
                    assert (
                        k not in results
                    ), f"Different evaluators produce results with the same key {k}"
                    results[k] = v
        return results


@contextmanager
def inference_context(model: nn.Module):
    """Put ``model`` in eval mode for the duration of the block, then restore its training mode."""
    training_mode = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training_mode)


def _fmt_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def inference_on_dataset(
    model: Any,
    data_loader: Iterable,
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None],
    log_period: float = 5.0,
) -> Dict[str, Any]:
    """Run ``model`` on every batch of ``data_loader`` and evaluate with ``evaluator``.

    The model is put in eval mode (its training mode is restored afterwards) and called under
    ``torch.inference_mode()``. The main process logs progress with an ETA at most every
    ``log_period`` seconds and, at the end, the total and pure-compute inference times per image
    and device (the first few batches are treated as warm-up and left out of the averages).

    Args:
        model: a callable taking a list of input dicts and returning a list of output dicts;
            when it is an ``nn.Module`` it is switched to eval mode temporarily.
        data_loader: an iterable of batches (lists of dicts); ``len()`` is used when available.
        evaluator: a ``DatasetEvaluator``, a list of them, or ``None`` (inference only).
    Returns:
        ``evaluator.evaluate()``; ``{}`` where that is ``None`` (e.g. ranks other than the
        main one).
    """
    num_devices = comm.get_world_size()
    logger.info("Start inference on {} batches".format(_safe_len(data_loader) or "?"))
    evaluator = _as_evaluator(evaluator)
    evaluator.reset()

    timer = _InferenceTimer(_safe_len(data_loader), log_period)
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.inference_mode())
        _run_batches(model, data_loader, evaluator, timer)
    timer.log_totals(num_devices)

    results = evaluator.evaluate()
    # An evaluator may return None off the main process; an empty dict is easier downstream.
    if results is None:
        results = {}
    return results


def _as_evaluator(
    evaluator: Union[DatasetEvaluator, List[DatasetEvaluator], None]
) -> DatasetEvaluator:
    """``evaluator`` itself, or its list / ``None`` wrapped in :class:`DatasetEvaluators`."""
    if evaluator is None:
        return DatasetEvaluators([])
    if isinstance(evaluator, abc.MutableSequence):
        return DatasetEvaluators(evaluator)
    return evaluator


def _run_batches(
    model: Any, data_loader: Iterable, evaluator: DatasetEvaluator, timer: "_InferenceTimer"
) -> None:
    """Feed every batch through ``model`` and ``evaluator``, timing each step with ``timer``."""
    start_data_time = time.perf_counter()
    for idx, inputs in enumerate(data_loader):
        timer.start_batch(idx, time.perf_counter() - start_data_time)

        start_compute_time = time.perf_counter()
        outputs = model(inputs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timer.compute_time += time.perf_counter() - start_compute_time

        start_eval_time = time.perf_counter()
        evaluator.process(inputs, outputs)
        timer.eval_time += time.perf_counter() - start_eval_time

        timer.end_batch(len(inputs) if hasattr(inputs, "__len__") else 1)
        start_data_time = time.perf_counter()


class _InferenceTimer:
    """Data-loading, compute and evaluation times of the inference loop, with progress logs.

    The first ``num_warmup`` batches are warm-up: when batch ``num_warmup`` starts, the clocks
    and the image count of the averages start again from zero.
    """

    def __init__(self, total: int, log_period: float):
        self.total = total  # number of batches, 0 when unknown
        self.log_period = log_period
        self.num_warmup = min(5, total - 1) if total else 0
        self.start_time = time.perf_counter()
        self.data_time = self.compute_time = self.eval_time = 0.0
        self.num_images = self.num_images_warm = 0
        self.last_log = time.perf_counter()
        self.idx = -1

    def start_batch(self, idx: int, data_time: float) -> None:
        """Batch ``idx`` arrived after ``data_time`` seconds of data loading."""
        self.idx = idx
        self.data_time += data_time
        if idx == self.num_warmup:
            self.start_time = time.perf_counter()
            self.data_time = self.compute_time = self.eval_time = 0.0
            self.num_images_warm = 0

    def end_batch(self, num_images: int) -> None:
        """The current batch of ``num_images`` images is done; log progress when it is time."""
        self.num_images += num_images
        self.num_images_warm += num_images
        idx, total = self.idx, self.total
        iters_after_start = idx + 1 - self.num_warmup * int(idx >= self.num_warmup)
        now = time.perf_counter()
        if comm.is_main_process() and (
            now - self.last_log >= self.log_period or (total and idx + 1 == total)
        ):
            self._log_progress(now, iters_after_start)
            self.last_log = now

    def _log_progress(self, now: float, iters_after_start: int) -> None:
        idx, total = self.idx, self.total
        data_per_iter = self.data_time / iters_after_start
        compute_per_iter = self.compute_time / iters_after_start
        eval_per_iter = self.eval_time / iters_after_start
        total_per_iter = (now - self.start_time) / iters_after_start
        eta = ""
        if total:
            eta = " ETA={}".format(_fmt_seconds(total_per_iter * (total - idx - 1)))
        logger.info(
            "Inference done {}/{}. Dataloading: {:.4f} s/iter. Inference: {:.4f} s/iter. "
            "Eval: {:.4f} s/iter. Total: {:.4f} s/iter.{}".format(
                idx + 1, total or "?", data_per_iter, compute_per_iter, eval_per_iter,
                total_per_iter, eta,
            )
        )

    def log_totals(self, num_devices: int) -> None:
        """Log the total and pure-compute inference times per image and device."""
        total_time = time.perf_counter() - self.start_time
        # Averages are over the images after warm-up; with too few batches, over all of them.
        denom = max(
            self.num_images_warm if self.idx >= self.num_warmup else self.num_images, 1
        )
        logger.info(
            "Total inference time: {} ({:.6f} s / img per device, on {} devices)".format(
                str(datetime.timedelta(seconds=total_time)), total_time / denom, num_devices
            )
        )
        logger.info(
            "Total inference pure compute time: {} ({:.6f} s / img per device, on {} "
            "devices)".format(
                _fmt_seconds(self.compute_time), self.compute_time / denom, num_devices
            )
        )


def _safe_len(obj: Any) -> int:
    try:
        return len(obj)
    except TypeError:
        return 0

"""The training loop, as detectron2's ``DefaultTrainer``: build, resume, train, evaluate.

One iteration: next batch -> losses -> finite check -> backward (mixed precision when enabled) ->
optional gradient clipping -> optimizer step -> LR step -> metrics. Around the loop and its steps
run the hooks (:mod:`multitask.engine.hooks`): the post-processors' fit before the first
iteration, metric writers, periodic checkpoints, periodic and final evaluation, and any a user
registers. Everything a run writes goes to ``cfg.OUTPUT_DIR``: ``log.txt``, ``metrics.json``,
TensorBoard events, ``model_XXXXXXX.pth``, ``model_final.pth``, ``last_checkpoint`` and the
evaluators' result files.
"""

import json
import logging
import os
import time
import weakref
from collections import OrderedDict
from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from ..evaluation.coco_evaluation import BEFORE_PRN_TASK
from ..modeling import build_model
from ..utils import comm
from .checkpoint import MultiTaskCheckpointer
from .events import MetricStorage, default_writers
from .hooks import EvalHook, HookBase, PeriodicCheckpointer, PeriodicWriter, PostprocessorFit
from .keypoint_checks import check_keypoint_sets
from .solver import build_lr_scheduler, build_optimizer

logger = logging.getLogger(__name__)


class Trainer:
    """Train ``build_model(cfg)`` on ``cfg.DATASETS.TRAIN`` and evaluate on ``cfg.DATASETS.TEST``.

    Usage::

        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
    """

    def __init__(self, cfg):
        from ..data import build_detection_train_loader

        self.cfg = cfg
        model = build_model(cfg)
        # post-processors (PRN, activity) are fitted before the first iteration
        # (resume_or_load) or by their own tools, never by the detector's optimizer
        for p in model.postprocessors.parameters():
            p.requires_grad_(False)
        self.device = next(model.parameters()).device
        self.optimizer = build_optimizer(cfg, model)
        self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        self.data_loader = build_detection_train_loader(cfg)
        check_keypoint_sets(cfg)
        self._data_iter = iter(self.data_loader)
        if comm.get_world_size() > 1:
            model = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=False,
            )
        self.model = model
        self.checkpointer = MultiTaskCheckpointer(
            _unwrap(model),
            cfg.OUTPUT_DIR,
            save_to_disk=comm.is_main_process(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
        )
        self.amp_dtype = amp_dtype(self.device) if cfg.SOLVER.AMP.ENABLED else None
        if cfg.SOLVER.AMP.ENABLED:
            if self.amp_dtype is None:
                logger.warning("SOLVER.AMP.ENABLED is ignored: %s has no fast float16 or "
                               "bfloat16 arithmetic; training in float32", self.device)
            else:
                logger.info("Mixed precision: %s autocast on %s", self.amp_dtype, self.device)
        # float16 needs loss scaling; bfloat16 has float32's exponent range and does not
        self.grad_scaler = (
            torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        )
        self.start_iter = 0
        self.fit_stats: Dict[str, Dict] = {}  # of the post-processors' fits (resume_or_load)
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.iter = 0
        self.results = None
        self._hooks: List[HookBase] = []
        self.register_hooks(self.build_hooks())

    # ---------------------------------------------------------------------------------
    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from ``OUTPUT_DIR/last_checkpoint`` (model, optimizer, scheduler, iteration)
        when ``resume`` and it exists; otherwise load ``MODEL.WEIGHTS`` (if set) and start at 0
        (where :class:`PostprocessorFit` then fits the post-processors the config asks for)."""
        extra = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and "iteration" in extra:
            self.start_iter = int(extra["iteration"]) + 1
            logger.info("Resuming from iteration %d", self.start_iter)
        comm.synchronize()

    # ---- hooks ------------------------------------------------------------------------
    def build_hooks(self) -> List[HookBase]:
        """The default hooks: fit the post-processors, write metrics, save checkpoints,
        evaluate. Override (or :meth:`register_hooks` more) to change what a run does."""
        cfg = self.cfg

        def writers():
            if not comm.is_main_process():
                return []
            return default_writers(cfg.OUTPUT_DIR, self.max_iter)

        return [
            PostprocessorFit(),
            PeriodicWriter(writers, cfg.SOLVER.LOG_PERIOD),
            PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD),
            EvalHook(cfg.TEST.EVAL_PERIOD, lambda: self.test(self.cfg, self.model),
                     final=len(cfg.DATASETS.TEST) > 0),
        ]

    def register_hooks(self, hooks: List[Optional[HookBase]]) -> None:
        """Append hooks (None entries are skipped); they run in the order registered."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"register_hooks: {type(h).__name__} is not a HookBase")
            # a proxy, so that hook and trainer do not keep each other alive
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        for h in self._hooks:
            h.before_step()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    # ---- the loop -----------------------------------------------------------------------
    @property
    def unwrapped_model(self):
        """The model without its DistributedDataParallel wrapper."""
        return _unwrap(self.model)

    def train(self) -> Optional[Dict]:
        """Run iterations ``start_iter .. MAX_ITER - 1`` between the hooks; returns the last
        evaluation results (None without any)."""
        logger.info("Starting training from iteration %d", self.start_iter)
        self.storage = MetricStorage(self.start_iter, window=20)
        self.results = None
        self.model.train()
        start = time.perf_counter()
        self.iter = self.start_iter
        try:
            self.before_train()
            for self.iter in range(self.start_iter, self.max_iter):
                self.storage.iter = self.iter
                self.before_step()
                self.run_step(self.storage)
                self.after_step()
            # a completed loop leaves iter == max_iter (hooks read it in after_train)
            self.iter = self.max_iter
            if self.start_iter < self.max_iter:
                total = time.perf_counter() - start
                n = self.max_iter - self.start_iter
                logger.info("Overall training speed: %d iterations in %.1f s (%.4f s / it)", n,
                            total, total / n)
        finally:
            self.after_train()
        return self.results

    def log_eval(self, results, iteration: int) -> None:
        """Append the evaluation results to metrics.json as one record, as detectron2 does
        (keys like ``bbox/AP``; with several test sets ``<dataset>/bbox/AP``)."""
        if not comm.is_main_process() or not results:
            return
        from ..evaluation import flatten_results_dict

        record = {"iteration": iteration, **flatten_results_dict(results)}
        with open(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def run_step(self, storage: MetricStorage) -> None:
        t0 = time.perf_counter()
        batch = next(self._data_iter)
        data_time = time.perf_counter() - t0
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        with autocast:
            loss_dict = self.model(batch)
        losses = sum(loss_dict.values())
        check_finite_losses(loss_dict, self.iter)
        self.optimizer.zero_grad(set_to_none=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
            self.grad_scaler.unscale_(self.optimizer)
            self._clip_gradients()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            losses.backward()
            self._clip_gradients()
            self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        reduced = comm.reduce_dict({k: v.detach() for k, v in loss_dict.items()})
        metrics = {k: float(v) for k, v in reduced.items()}
        storage.put_scalars(
            total_loss=sum(metrics.values()),
            lr=lr,
            time=time.perf_counter() - t0,
            data_time=data_time,
            **metrics,
        )

    def _clip_gradients(self) -> None:
        c = self.cfg.SOLVER.CLIP_GRADIENTS
        if not c.ENABLED:
            return
        params = [p for p in self.model.parameters() if p.grad is not None]
        if c.CLIP_TYPE == "norm":
            torch.nn.utils.clip_grad_norm_(params, c.CLIP_VALUE, norm_type=c.NORM_TYPE)
        elif c.CLIP_TYPE == "value":
            torch.nn.utils.clip_grad_value_(params, c.CLIP_VALUE)
        else:
            raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE: unknown '{c.CLIP_TYPE}'")

    # ---------------------------------------------------------------------------------
    @classmethod
    def build_evaluator(
        cls,
        cfg,
        dataset_name: str,
        output_folder: Optional[str] = None,
        tasks: Optional[Sequence[str]] = None,
    ):
        """COCO evaluator of ``dataset_name``; ``tasks`` defaults to those the model has (bbox,
        segm with ``MASK_ON``, keypoints with ``KEYPOINT_ON``)."""
        from ..evaluation import COCOEvaluator

        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(
            dataset_name,
            tasks=evaluation_tasks(cfg) if tasks is None else tasks,
            distributed=True,
            output_dir=output_folder,
            kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
            activity_classes=cfg.MODEL.ACTIVITY.CLASSES,
            keypoint_coord_offset=cfg.TEST.KEYPOINT_COORD_OFFSET,
        )

    @classmethod
    def test(cls, cfg, model) -> "OrderedDict[str, Dict]":
        """Evaluate ``model`` on every ``cfg.DATASETS.TEST`` dataset; logs detectron2 tables."""
        from ..data import build_detection_test_loader
        from ..evaluation import inference_on_dataset, print_csv_format

        results = OrderedDict()
        for name in cfg.DATASETS.TEST:
            loader = build_detection_test_loader(cfg, name)
            evaluator = cls.build_evaluator(cfg, name)
            res = inference_on_dataset(model, loader, evaluator)
            results[name] = res
            if comm.is_main_process() and res:
                logger.info("Evaluation results for %s in csv format:", name)
                print_csv_format(res)
            if comm.is_main_process() and cfg.TEST.VIS_NUM_IMAGES > 0:
                out_dir = os.path.join(cfg.OUTPUT_DIR, "vis", name)
                visualize_predictions(cfg, model, name, out_dir, cfg.TEST.VIS_NUM_IMAGES)
        if len(results) == 1:
            results = list(results.values())[0]
        return results


def visualize_predictions(cfg, model, dataset_name: str, out_dir: str, num_images: int) -> None:
    """Draw the predictions on the first ``num_images`` images of a dataset into ``out_dir``."""
    import cv2

    from ..data import DatasetCatalog, DatasetMapper, read_image
    from ..utils.visualizer import draw_instance_predictions

    model = _unwrap(model)
    mapper = DatasetMapper(cfg, is_train=False)
    os.makedirs(out_dir, exist_ok=True)
    was_training = model.training
    model.eval()
    written = 0
    with torch.inference_mode():
        for record in DatasetCatalog.get(dataset_name):
            if written >= num_images:
                break
            inputs = mapper(record)
            if inputs is None:  # unreadable image, already reported by the mapper
                continue
            instances = model([inputs])[0]["instances"].to("cpu")
            image = read_image(record["file_name"], format="BGR")
            drawn = draw_instance_predictions(
                image,
                instances,
                score_thresh=cfg.TEST.VIS_SCORE_THRESH,
                activity_classes=cfg.MODEL.ACTIVITY.CLASSES,
            )
            stem = os.path.splitext(os.path.basename(record["file_name"]))[0]
            cv2.imwrite(os.path.join(out_dir, f"{stem}.png"), drawn)
            written += 1
    model.train(was_training)
    logger.info("Wrote %d images with predictions to %s", written, out_dir)


def amp_dtype(device: torch.device) -> Optional[torch.dtype]:
    """Autocast dtype used by ``SOLVER.AMP.ENABLED`` on ``device``: float16 on CUDA (with a
    gradient scaler), bfloat16 on CPUs whose oneDNN kernels run it natively (AVX512-BF16 or AMX;
    training steps 1.3-1.6x faster on a 2-core AMD EPYC, ``tools/benchmark.py --sections amp``),
    and None (float32) elsewhere, where emulated bfloat16 would be slower than float32."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        # private torch.cpu probes; a torch without them counts as unsupported
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        if any(getattr(torch.cpu, name, lambda: False)() for name in probes):
            return torch.bfloat16
    return None


def evaluation_tasks(cfg) -> List[str]:
    """The COCO tasks a model built from ``cfg`` is evaluated on: bbox, then segm with
    ``MODEL.MASK_ON`` and keypoints with ``MODEL.KEYPOINT_ON`` (and the keypoints before the
    PRN with ``TEST.EVAL_KEYPOINTS_BEFORE_PRN``)."""
    tasks = ["bbox"]
    if cfg.MODEL.MASK_ON:
        tasks.append("segm")
    if cfg.MODEL.KEYPOINT_ON:
        tasks.append("keypoints")
        if cfg.TEST.EVAL_KEYPOINTS_BEFORE_PRN:
            if "PoseResidualNetwork" in cfg.MODEL.POSTPROCESSORS:
                tasks.append(BEFORE_PRN_TASK)
            else:
                logger.warning("TEST.EVAL_KEYPOINTS_BEFORE_PRN: no 'PoseResidualNetwork' in "
                               "MODEL.POSTPROCESSORS, so nothing comes before it")
    return tasks


def _unwrap(model):
    return model.module if isinstance(model, DistributedDataParallel) else model


def check_finite_losses(loss_dict: Dict[str, torch.Tensor], iteration: int) -> None:
    """Stop with a message naming the iteration and every loss when one is NaN or infinite."""
    bad = [k for k, v in loss_dict.items() if not torch.isfinite(v).all()]
    if bad:
        values = ", ".join(f"{k}={float(v):.6g}" for k, v in loss_dict.items())
        raise FloatingPointError(
            f"Loss became infinite or NaN at iteration={iteration} ({', '.join(bad)})!\n"
            f"losses: {values}"
        )

"""Trainer hooks, in detectron2's shape: what happens around the training loop and its steps.

A hook overrides any of :meth:`HookBase.before_train`, :meth:`~HookBase.before_step`,
:meth:`~HookBase.after_step` and :meth:`~HookBase.after_train`; the trainer calls them in the order
the hooks were registered, and sets ``hook.trainer`` (a weak proxy) when it registers one. Inside a
hook, ``self.trainer.iter`` is the iteration being run (``after_step``: the one just run),
``self.trainer.max_iter`` the number of iterations, ``self.trainer.storage`` the
:class:`MetricStorage` of the run. ``after_train`` runs even when training stops with an error;
``self.trainer.iter == self.trainer.max_iter`` there means the loop completed.

Add your own from Python::

    class PrintLoss(HookBase):
        def after_step(self):
            print(self.trainer.iter, self.trainer.storage.median("total_loss"))

    trainer = Trainer(cfg)
    trainer.register_hooks([PrintLoss()])
    trainer.resume_or_load(resume=False)
    trainer.train()

The default hooks (:meth:`Trainer.build_hooks`): :class:`PostprocessorFit`,
:class:`PeriodicWriter`, :class:`PeriodicCheckpointer`, :class:`EvalHook`.
"""

import logging
from typing import Callable, Dict, List, Optional, Union

from ..evaluation.testing import verify_results
from ..utils import comm
from .postprocessor_fit import check_postprocessor_weights, fit_postprocessors

logger = logging.getLogger(__name__)

__all__ = ["HookBase", "PostprocessorFit", "PeriodicWriter", "PeriodicCheckpointer", "EvalHook"]


class HookBase:
    """Base class of the trainer's hooks; every method does nothing by default."""

    trainer = None  # set by Trainer.register_hooks

    def before_train(self) -> None:
        """Called once, before the first iteration."""

    def after_train(self) -> None:
        """Called once, after the last iteration or when training stops with an error."""

    def before_step(self) -> None:
        """Called before every iteration."""

    def after_step(self) -> None:
        """Called after every iteration."""


class PostprocessorFit(HookBase):
    """Before the first iteration of a run that starts at 0 (not a resumed one): fit the
    post-processors the config asks to fit on ``DATASETS.TRAIN`` (``MODEL.PRN.FIT_ON_TRAIN_GT``,
    ``MODEL.ACTIVITY.FIT_ON_TRAIN_GT``; their fits override what ``MODEL.WEIGHTS`` held for them),
    then refuse a listed post-processor that has no weights. Statistics in ``trainer.fit_stats``."""

    def before_train(self) -> None:
        trainer = self.trainer
        model = trainer.unwrapped_model
        if trainer.start_iter == 0:
            trainer.fit_stats = fit_postprocessors(trainer.cfg, model)
        check_postprocessor_weights(trainer.cfg, model, trainer.checkpointer.last_report)


class PeriodicWriter(HookBase):
    """Write the metrics (console, ``metrics.json``, TensorBoard) every ``period`` iterations, at
    the first iteration of the run and at the last; close the writers at the end.

    ``writers``: a list of writers, or a function returning one, called in ``before_train`` (so
    that files are opened only when training starts)."""

    def __init__(self, writers: Union[List, Callable[[], List]], period: int):
        self._make_writers = writers if callable(writers) else (lambda: writers)
        self.writers: List = []
        self.period = max(1, int(period))

    def before_train(self) -> None:
        self.writers = list(self._make_writers())

    def after_step(self) -> None:
        t = self.trainer
        it1 = t.iter + 1
        if it1 % self.period == 0 or it1 == t.max_iter or t.iter == t.start_iter:
            for w in self.writers:
                w.write(t.storage)

    def after_train(self) -> None:
        for w in self.writers:
            w.close()


class PeriodicCheckpointer(HookBase):
    """Save ``model_XXXXXXX.pth`` every ``period`` iterations (0: never) and ``model_final.pth``
    after the last one."""

    def __init__(self, checkpointer, period: int):
        self.checkpointer = checkpointer
        self.period = int(period)

    def after_step(self) -> None:
        t = self.trainer
        it1 = t.iter + 1
        if it1 == t.max_iter:
            self.checkpointer.save("model_final", iteration=t.iter)
        elif self.period > 0 and it1 % self.period == 0:
            self.checkpointer.save(f"model_{t.iter:07d}", iteration=t.iter)


class EvalHook(HookBase):
    """Run ``eval_function()`` every ``period`` iterations (0: never; not at the last, which the
    final evaluation covers) and once after a completed loop; results go to ``metrics.json``
    and ``trainer.results``. The final results are checked against ``TEST.EXPECTED_RESULTS``.

    Args:
        period: iterations between evaluations.
        eval_function: ``() -> results`` (``{task: {metric: value}}``, or per dataset).
        final: also evaluate after the last iteration.
    """

    def __init__(self, period: int, eval_function: Callable[[], Optional[Dict]],
                 final: bool = True):
        self.period = int(period)
        self.eval_function = eval_function
        self.final = final

    def _evaluate(self, iteration: int) -> None:
        t = self.trainer
        t.results = self.eval_function()
        t.log_eval(t.results, iteration)
        t.model.train()
        comm.synchronize()

    def after_step(self) -> None:
        t = self.trainer
        it1 = t.iter + 1
        if self.period > 0 and it1 % self.period == 0 and it1 != t.max_iter:
            self._evaluate(t.iter)

    def after_train(self) -> None:
        t = self.trainer
        if not self.final or t.iter < t.max_iter:  # stopped early: no final evaluation
            return
        self._evaluate(t.max_iter - 1)
        expected = t.cfg.TEST.EXPECTED_RESULTS
        if comm.is_main_process() and expected:
            if not verify_results(t.cfg, t.results):
                raise RuntimeError("Evaluation results are below TEST.EXPECTED_RESULTS")

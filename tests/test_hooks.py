"""Trainer hooks: the order they run in, a user's hook added from Python, the default hooks'
checkpoints and evaluations, and what happens when training stops with an error."""

import json

import pytest
from tiny_model import TINY_MODEL, small_synthetic_people, small_training

from multitask.config import get_cfg
from multitask.data import DatasetCatalog, register_datasets_from_cfg
from multitask.engine import Trainer
from multitask.engine.hooks import EvalHook, HookBase, PeriodicCheckpointer


class Recorder(HookBase):
    def __init__(self):
        self.calls = []

    def before_train(self):
        self.calls.append(("before_train", self.trainer.iter))

    def before_step(self):
        self.calls.append(("before_step", self.trainer.iter))

    def after_step(self):
        loss = self.trainer.storage.median("total_loss")
        assert loss == loss  # the step's metrics are in the storage
        self.calls.append(("after_step", self.trainer.iter))

    def after_train(self):
        self.calls.append(("after_train", self.trainer.iter))


@pytest.fixture
def cfg(tmp_path):
    json_file = small_synthetic_people(tmp_path / "data", seed=5)
    cfg = get_cfg()
    cfg.merge_from_list(TINY_MODEL + [
        "MODEL.RESNETS.WIDTH_MULT", "0.25",
        "MODEL.BACKBONE.FREEZE_AT", "0",
    ] + small_training("hooks_data", json_file, tmp_path / "out", max_iter=3, extra=[
        "SOLVER.WARMUP_ITERS", "1",
        "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "2",
        "TEST.EVAL_PERIOD", "2",
    ]))
    register_datasets_from_cfg(cfg)
    yield cfg
    DatasetCatalog.remove("hooks_data")


def test_user_hook_runs_around_every_step_after_the_default_hooks(cfg, tmp_path):
    trainer = Trainer(cfg)
    kinds = [type(h).__name__ for h in trainer._hooks]
    assert kinds == ["PostprocessorFit", "PeriodicWriter", "PeriodicCheckpointer", "EvalHook"]
    rec = Recorder()
    trainer.register_hooks([rec, None])
    with pytest.raises(TypeError, match="not a HookBase"):
        trainer.register_hooks([object()])
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert rec.calls == [
        ("before_train", 0),
        ("before_step", 0), ("after_step", 0),
        ("before_step", 1), ("after_step", 1),
        ("before_step", 2), ("after_step", 2),
        ("after_train", 3),  # a completed loop leaves iter == max_iter
    ]
    out = tmp_path / "out"
    assert (out / "model_0000001.pth").is_file() and (out / "model_final.pth").is_file()
    assert not (out / "model_0000002.pth").exists()  # the last iteration is model_final
    evals = [r for r in map(json.loads, (out / "metrics.json").read_text().splitlines())
             if "bbox/AP" in r]
    assert [r["iteration"] for r in evals] == [1, 2]  # periodic at 2 iterations, then final
    assert results is trainer.results and "bbox" in results


def test_a_failing_step_still_closes_but_neither_saves_nor_evaluates(cfg, tmp_path, monkeypatch):
    trainer = Trainer(cfg)
    rec = Recorder()
    trainer.register_hooks([rec])
    trainer.resume_or_load(resume=False)
    calls = {"n": 0}
    real_step = trainer.run_step

    def failing_step(storage):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        real_step(storage)

    monkeypatch.setattr(trainer, "run_step", failing_step)
    evaluated = []
    trainer._hooks = [h for h in trainer._hooks if not isinstance(h, EvalHook)]
    trainer.register_hooks([EvalHook(0, lambda: evaluated.append(1) or {})])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.train()
    assert rec.calls[-1] == ("after_train", 1)  # called, at the iteration that failed
    assert evaluated == []  # no final evaluation of a run that did not finish
    assert not (tmp_path / "out" / "model_final.pth").exists()
    assert any(isinstance(h, PeriodicCheckpointer) for h in trainer._hooks)

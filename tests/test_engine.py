"""tools/train_net.py end to end: train, checkpoint, resume, evaluate, distributed (gloo)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from multitask import get_cfg
from multitask.data import register_datasets_from_cfg
from multitask.engine import trainer as trainer_mod
from multitask.engine.checkpoint import MultiTaskCheckpointer
from multitask.engine.events import MetricStorage
from multitask.engine.solver import build_lr_scheduler, lr_factor_at
from multitask.engine.trainer import Trainer, amp_dtype, check_finite_losses

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"
INSTANT = REPO / "configs" / "quick_schedules" / "multitask_R_18_FPN_instant_test.yaml"

needs_coco_mini = pytest.mark.skipif(not COCO_MINI.is_dir(), reason="coco-mini is not present")

# A model small enough that a few iterations take seconds on 2 CPU cores
TINY = [
    "MODEL.RESNETS.WIDTH_MULT",
    "0.25",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS",
    "[32]",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "192",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "192",
]


def _subset(split: str, n: int, out: Path) -> Path:
    """The first ``n`` coco-mini images of ``split`` that hold people, as a new json."""
    data = json.loads(
        (COCO_MINI / "annotations" / f"person_keypoints_{split}2017.json").read_text()
    )
    with_people = sorted({a["image_id"] for a in data["annotations"] if a["num_keypoints"] > 0})
    keep = set(with_people[:n])
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    path = out / f"mini_{split}_{n}.json"
    path.write_text(json.dumps(data))
    return path


def _register(tmp_path: Path, n_train: int = 4, n_val: int = 2):
    train = _subset("train", n_train, tmp_path)
    val = _subset("val", n_val, tmp_path)
    entries = [
        ["t_train", str(train), str(COCO_MINI / "train2017")],
        ["t_val", str(val), str(COCO_MINI / "val2017")],
    ]
    return [
        "DATASETS.REGISTER",
        repr(entries),
        "DATASETS.TRAIN",
        "('t_train',)",
        "DATASETS.TEST",
        "('t_val',)",
    ]


def _train_net(args, timeout=300, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(INSTANT)]
    return subprocess.run(
        cmd + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def _start_train_net(args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(INSTANT)]
    return subprocess.Popen(cmd + args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metrics(out: Path):
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


@needs_coco_mini
def test_instant_schedule_trains_checkpoints_and_evaluates(tmp_path):
    out = tmp_path / "out"
    opts = _register(tmp_path) + TINY + ["SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2"]
    proc = _train_net(opts + ["OUTPUT_DIR", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in [
        "config.yaml",
        "log.txt",
        "metrics.json",
        "last_checkpoint",
        "model_0000001.pth",
        "model_final.pth",
    ]:
        assert (out / name).is_file(), name
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert list(out.glob("events.out.tfevents*")), "no TensorBoard events"
    assert not list(out.glob(".tmp_*")), "temporary checkpoint files left behind"
    records = [r for r in _metrics(out) if "total_loss" in r]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert "keypoints/AP" in _metrics(out)[-1]  # the final evaluation, as detectron2 logs it
    assert all(k in records[0] for k in ["loss_keypoint", "loss_mask", "loss_classifier", "lr"])
    for task in ("bbox", "segm", "keypoints"):
        assert f"Evaluation results for {task}" in proc.stdout
    assert "eta:" in proc.stdout
    assert (out / "inference" / "t_val" / "coco_instances_results.json").is_file()

    # --eval-only with that checkpoint prints the three tables again
    proc = _train_net(
        ["--eval-only"]
        + opts
        + ["MODEL.WEIGHTS", str(out / "model_final.pth"), "OUTPUT_DIR", str(tmp_path / "eval")]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("|   AP   |  AP50  |") + proc.stdout.count("|  AP   |  AP50  |") >= 3


@needs_coco_mini
def test_kill_then_resume_continues_at_the_next_iteration(tmp_path):
    out = tmp_path / "out"
    opts = (
        _register(tmp_path, n_train=4, n_val=1)
        + TINY
        + [
            "SOLVER.CHECKPOINT_PERIOD",
            "2",
            "SOLVER.STEPS",
            "(3,)",
            "SOLVER.WARMUP_ITERS",
            "2",
            "OUTPUT_DIR",
            str(out),
        ]
    )
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(INSTANT)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        cmd + opts + ["SOLVER.MAX_ITER", "1000"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while not (out / "last_checkpoint").exists():
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    ckpt = (out / "last_checkpoint").read_text()
    saved_iter = int(ckpt[len("model_") : -len(".pth")])
    data = torch.load(out / ckpt, map_location="cpu", weights_only=True)
    assert data["iteration"] == saved_iter

    n_before = len(_metrics(out))
    max_iter = saved_iter + 3
    done = _train_net(
        ["--resume"] + opts + ["SOLVER.MAX_ITER", str(max_iter), "DATASETS.TEST", "()"]
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"Resuming from iteration {saved_iter + 1}" in done.stdout
    resumed = _metrics(out)[n_before:]
    assert resumed[0]["iteration"] == saved_iter + 1
    cfg = get_cfg()
    cfg.merge_from_file(str(INSTANT))
    cfg.merge_from_list(["SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "2"])
    for r in resumed:
        expected = cfg.SOLVER.BASE_LR * lr_factor_at(cfg, r["iteration"])
        assert r["lr"] == pytest.approx(expected, rel=1e-6), r


@needs_coco_mini
def test_two_gloo_processes_match_one_process(tmp_path):
    """Same single image on every rank: the averaged first-iteration losses of 2 processes
    (1 image each) equal those of 1 process (2 copies). Samplers take every anchor/proposal so
    that no random subsampling differs between the runs."""
    base = (
        _register(tmp_path, n_train=1, n_val=1)
        + TINY
        + [
            "SOLVER.MAX_ITER",
            "1",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "INPUT.RANDOM_FLIP",
            "none",
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
            "1000000",
            "MODEL.RPN.POSITIVE_FRACTION",
            "1.0",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
            "1000000",
            "MODEL.ROI_HEADS.POSITIVE_FRACTION",
            "1.0",
            "DATASETS.TEST",
            "()",
            "SEED",
            "3",
        ]
    )
    losses = {}
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        proc = _train_net(["--num-gpus", str(n)] + base + ["OUTPUT_DIR", str(out)])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        first = _metrics(out)[0]
        losses[n] = {k: v for k, v in first.items() if k.startswith("loss")}
    assert "World size: 2" in (tmp_path / "out2" / "log.txt").read_text()
    assert losses[1].keys() == losses[2].keys() and len(losses[1]) == 6
    for k in losses[1]:
        assert losses[2][k] == pytest.approx(losses[1][k], rel=1e-3, abs=1e-5), k

    # the same as two machines of one process each, started as two launchers on this host
    url = f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "machines"
    procs = [
        _start_train_net(["--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(rank),
                          "--dist-url", url, "--dist-timeout", "120"]
                         + base + ["OUTPUT_DIR", str(out)])
        for rank in (0, 1)
    ]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stdout[-3000:] + stderr[-3000:]
    first = {k: v for k, v in _metrics(out)[0].items() if k.startswith("loss")}
    assert first.keys() == losses[1].keys()
    for k in losses[1]:
        assert first[k] == pytest.approx(losses[1][k], rel=1e-3, abs=1e-5), k


def test_a_machine_that_cannot_reach_the_others_fails_clearly(tmp_path):
    """Machine rank 1 of 2 with nobody at --dist-url: a clear error within the timeout, no hang."""
    url = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    proc = _train_net(
        ["--num-gpus", "1", "--num-machines", "2", "--machine-rank", "1", "--dist-url", url,
         "--dist-timeout", "5", "OUTPUT_DIR", str(tmp_path / "out")] + TINY,
        timeout=180,
    )
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 150
    err = proc.stdout + proc.stderr
    assert f"machine rank 1 (process rank 1 of 2) could not join the process group at {url}" in err
    assert "--dist-timeout" in err


def test_lr_schedule_warmup_steps_and_cosine():
    cfg = get_cfg()
    cfg.SOLVER.merge_from_list(["WARMUP_ITERS", "10", "WARMUP_FACTOR", "0.1", "STEPS", "(20, 30)"])
    assert lr_factor_at(cfg, 0) == pytest.approx(0.1)
    assert lr_factor_at(cfg, 5) == pytest.approx(0.55)
    assert lr_factor_at(cfg, 10) == 1.0
    assert lr_factor_at(cfg, 20) == pytest.approx(0.1)
    assert lr_factor_at(cfg, 30) == pytest.approx(0.01)
    cfg.SOLVER.merge_from_list(["LR_SCHEDULER_NAME", "WarmupCosineLR", "MAX_ITER", "100"])
    assert lr_factor_at(cfg, 50) == pytest.approx(0.5)
    assert lr_factor_at(cfg, 100) == pytest.approx(0.0, abs=1e-12)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_lr_scheduler(cfg, opt)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * lr_factor_at(cfg, 1))
    state = sched.state_dict()
    torch.save(state, "/dev/null")  # only numbers: loadable with weights_only


def test_non_finite_loss_names_iteration_and_losses():
    losses = {"loss_mask": torch.tensor(0.5), "loss_keypoint": torch.tensor(float("nan"))}
    with pytest.raises(FloatingPointError, match=r"iteration=17.*loss_keypoint") as e:
        check_finite_losses(losses, 17)
    assert "loss_mask=0.5" in str(e.value)
    check_finite_losses({"loss_mask": torch.tensor(0.5)}, 1)


def test_amp_dtype_per_device(monkeypatch):
    assert amp_dtype(torch.device("cuda", 0)) == torch.float16
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert amp_dtype(torch.device("cpu")) is None  # emulated bfloat16: stay in float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert amp_dtype(torch.device("cpu")) == torch.bfloat16


@needs_coco_mini
def test_amp_on_cpu_trains_in_bfloat16_with_float32_weights(tmp_path, monkeypatch):
    """SOLVER.AMP.ENABLED on a CPU with native bfloat16: convolutions run in bfloat16, weights
    and their updates stay float32, no gradient scaler."""
    monkeypatch.setattr(trainer_mod, "amp_dtype", lambda device: torch.bfloat16)
    cfg = get_cfg()
    cfg.merge_from_file(str(INSTANT))
    train = str(_subset("train", 2, tmp_path))
    entries = [[f"amp_train_{tmp_path.name}", train, str(COCO_MINI / "train2017")]]
    cfg.merge_from_list(
        ["DATASETS.REGISTER", repr(entries), "DATASETS.TRAIN", f"('{entries[0][0]}',)"]
        + TINY
        + ["SOLVER.AMP.ENABLED", "True", "SOLVER.IMS_PER_BATCH", "2"]
        + ["DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path / "out")]
    )
    register_datasets_from_cfg(cfg)
    trainer = Trainer(cfg)
    assert trainer.grad_scaler is None
    model = trainer.model
    seen = []
    model.backbone.register_forward_hook(lambda m, i, out: seen.append(next(iter(out.values()))))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.run_step(MetricStorage(0))
    assert seen and seen[0].dtype == torch.bfloat16
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert all(p.dtype == torch.float32 for p in params.values())
    changed = [n for n, p in params.items() if not torch.equal(p.detach(), before[n])]
    assert len(changed) > 0.5 * len(params)
    assert all(torch.isfinite(p).all() for p in params.values())


def test_checkpoint_is_atomic_and_loads_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = MultiTaskCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000004", iteration=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000004.pth"]
    other = torch.nn.Linear(3, 2)
    extra = MultiTaskCheckpointer(other, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    assert torch.equal(other.weight, model.weight)

    # a file that carries code (an arbitrary pickled object) is refused, naming the file
    evil = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "obj": _Arbitrary()}, evil)
    with pytest.raises(RuntimeError, match="evil.pth"):
        MultiTaskCheckpointer(other, str(tmp_path)).load(str(evil))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        MultiTaskCheckpointer(other, str(tmp_path)).load(str(tmp_path / "missing.pth"))


class _Arbitrary:
    pass


def test_torchvision_resnet_file_loads_into_backbone(tmp_path):
    import torchvision

    from multitask import build_model

    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS",
            "[16]",
        ]
    )
    model = build_model(cfg)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    MultiTaskCheckpointer(model, str(tmp_path)).load(str(path))
    assert torch.equal(model.backbone.bottom_up.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)

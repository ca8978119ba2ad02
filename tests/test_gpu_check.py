"""``dev/gpu_check.sh`` on a machine without a GPU: it skips cleanly, its training command is a
valid config, and its summary reads what pytest, the trainer and the benchmark write."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multitask import get_cfg

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "dev" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpu_check = _load()


def test_skips_without_cuda(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(["bash", str(REPO / "dev" / "gpu_check.sh"), "--output",
                          str(tmp_path / "out")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "no CUDA device; every stage skipped" in out.stdout
    for stage in gpu_check.STAGES:
        assert f"| {stage}" in out.stdout
    assert not (tmp_path / "out").exists()  # nothing run, nothing written


def test_unknown_stage_is_refused():
    assert gpu_check.main(["--stages", "cuda-tests,nonsense"]) == 2


def test_training_stage_is_a_valid_config(tmp_path):
    """Every key the AMP stage overrides exists; the model is the full one, under AMP."""
    args = gpu_check.train_args(20, "coco_mini_train", "coco_mini_val", tmp_path)
    assert args[0] == "--config-file"
    cfg = get_cfg()
    cfg.merge_from_file(str(REPO / args[1]))
    cfg.merge_from_list(args[2:])
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.MAX_ITER == 20 and cfg.MODEL.DEVICE == "cuda"
    assert list(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) == [False, True, True, True]
    assert cfg.MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON and cfg.MODEL.MASK_ON
    assert max(cfg.SOLVER.STEPS) < cfg.SOLVER.MAX_ITER


def test_summarize_pytest():
    text = "....F.s\n=== 1 failed, 5 passed, 1 skipped, 300 deselected in 9.1s ===\n"
    assert gpu_check.summarize_pytest(text) == "5 passed, 1 failed, 1 skipped"
    assert gpu_check.summarize_pytest("collected nothing") == "no test summary"


def test_summarize_training(tmp_path):
    records = [
        {"iteration": 4, "total_loss": 5.5, "time": 0.30, "lr": 0.01},
        {"iteration": 9, "total_loss": 4.0, "time": 0.20, "lr": 0.01},
        {"iteration": 19, "total_loss": 3.25, "time": 0.25, "lr": 0.001},
        {"iteration": 19, "bbox/AP": 0.5, "segm/AP": 0.25, "keypoints/AP": 0.0},
    ]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in records))
    text = gpu_check.summarize_training(tmp_path)
    assert "iterations 5-20" in text and "5.500 -> 3.250" in text
    assert "0.250 s/it" in text and "losses finite" in text
    assert "bbox 0.5" in text and "keypoints 0.0" in text and "segm 0.2" in text
    assert gpu_check.summarize_training(tmp_path / "absent") == "no metrics.json"


def test_summarize_benchmark(tmp_path):
    st = {"median_ms": 40.0}
    data = {
        "meta": {"failures": []},
        "inference": {"models": {"ours_full": st, "tv_keypointrcnn": {"median_ms": 50.0},
                                 "tv_maskrcnn+keypointrcnn": {"median_ms": 90.0}},
                      "ratios": {"ours_over_keypointrcnn": 0.8,
                                 "ours_over_maskrcnn_plus_keypointrcnn": 0.444}},
        "memory": {"models": {"ours_full": {"cuda_max_allocated_mb": 1234.4}}},
        "amp": {"dtype": "float16", "speedup": 1.5},
    }
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps(data))
    rows = dict(gpu_check.summarize_benchmark(path))
    assert rows["inference ms: ours_full / tv_keypointrcnn / tv_maskrcnn+keypointrcnn"] == (
        "40.0 / 50.0 / 90.0")
    assert rows["inference ratio ours / keypointrcnn, / (maskrcnn+keypointrcnn)"] == (
        "0.80x, 0.44x")
    assert rows["CUDA max allocated MB: ours full / keypointrcnn / maskrcnn+keypointrcnn"] == (
        "1234 / n/a / n/a")
    assert rows["AMP (float16) training speed-up, ours regular"] == "1.50x"
    assert rows["benchmark failures"] == "none"
    assert gpu_check.summarize_benchmark(tmp_path / "x.json") == [
        ("benchmark", "no benchmark.json")]


@pytest.mark.skipif(sys.platform != "linux", reason="timeout kill checked on Linux")
def test_stage_timeout_kills(tmp_path):
    rc, sec, text = gpu_check.run_stage(
        "sleepy", [sys.executable, "-c", "import time\nfor i in range(50):\n"
                   "    print(i, flush=True); time.sleep(0.1)"], tmp_path / "s.log", 0.5)
    assert rc == 124 and sec < 4
    assert "killed after" in (tmp_path / "s.log").read_text()
    # a stage that prints nothing (a hang) is killed at its time too
    rc, sec, _ = gpu_check.run_stage(
        "silent", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "q.log", 0.5)
    assert rc == 124 and sec < 4

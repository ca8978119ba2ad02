"""tools/benchmark.py --tiny runs every section, prints each table and writes the raw numbers."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "tools" / "benchmark.py"
SECTIONS = ("inference", "train", "postproc", "memory", "ops", "amp", "tracking")
NUM_PEOPLE = 3


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "b.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--num-people", str(NUM_PEOPLE),
         "--output", str(out)],
        cwd=str(REPO), env=env, capture_output=True, text=True, timeout=240,
    )
    return proc, out


def test_exit_code_and_tables(tiny_run):
    proc, out = tiny_run
    assert proc.returncode == 0, (
        f"benchmark --tiny failed (exit {proc.returncode})\n--- stdout\n{proc.stdout}\n"
        f"--- stderr (tail)\n{proc.stderr[-6000:]}"
    )
    for section in SECTIONS:
        assert f"== {section} == device cpu | threads 1 | torch " in proc.stdout, section
    assert "FAILED" not in proc.stdout
    # progress goes to stderr, tables to stdout
    assert "[benchmark" in proc.stderr and "[benchmark" not in proc.stdout
    assert out.is_file()


def test_json_numbers(tiny_run):
    proc, out = tiny_run
    assert out.is_file(), proc.stderr[-4000:]
    data = json.loads(out.read_text())
    meta = data["meta"]
    assert meta["device"] == "cpu" and meta["threads"] == 1
    assert meta["settings"]["tiny"] is True and meta["settings"]["num_people"] == NUM_PEOPLE
    assert meta["failures"] == []
    for section in SECTIONS:
        assert "error" not in data[section], data[section].get("error")

    trk = data["tracking"]
    assert _positive(trk["models"]["tracker"]["median_ms"])
    assert _positive(trk["models"]["ours_full"]["median_ms"])
    assert 0 < trk["tracker_over_model"] < 1  # the tracker is cheaper than the model

    inf = data["inference"]
    for name in ("ours_full", "ours_full_onnxruntime", "tv_keypointrcnn", "tv_maskrcnn",
                 "tv_maskrcnn+keypointrcnn"):
        st = inf["models"][name]
        for key in ("median_ms", "p25_ms", "p75_ms", "min_ms", "max_ms"):
            assert _positive(st[key]), (name, key, st)
        assert len(st["times_ms"]) == 2 and all(_positive(t) for t in st["times_ms"])
        # the N-detection forcing gives exactly N boxes for every model and run
        assert st["num_detections"] == [NUM_PEOPLE, NUM_PEOPLE], (name, st["num_detections"])
        assert inf["detections_ok"][name]
    # same (forced) person boxes for every model
    assert inf["models"]["ours_full"]["mean_box_wh"] == pytest.approx(
        inf["models"]["tv_keypointrcnn"]["mean_box_wh"], rel=1e-4)
    for key in ("ours_over_keypointrcnn", "ours_over_maskrcnn_plus_keypointrcnn",
                "onnxruntime_over_keypointrcnn", "onnxruntime_over_pytorch"):
        assert _positive(inf["ratios"][key]), key
    # the exported graph returns the same forced boxes, and its export was timed and sized
    ort = inf["models"]["ours_full_onnxruntime"]
    assert ort["mean_box_wh"] == pytest.approx(inf["models"]["ours_full"]["mean_box_wh"],
                                               rel=1e-4)
    assert _positive(ort["export_s"]) and _positive(ort["graph_mb"])

    train = data["train"]
    for name in ("ours_regular", "ours_full_train", "tv_keypointrcnn", "tv_maskrcnn",
                 "tv_maskrcnn+keypointrcnn"):
        assert _positive(train["models"][name]["median_ms"]), name
    for name in ("ours_regular", "ours_full_train", "tv_keypointrcnn", "tv_maskrcnn"):
        assert train["models"][name]["finite"], name
    assert all(_positive(v) for v in train["ratios"].values()), train["ratios"]

    pp = data["postproc"]
    assert _positive(pp["with_postprocessors"]["median_ms"])
    assert _positive(pp["without_postprocessors"]["median_ms"])
    assert set(pp["postprocessor_calls"]) == {"PoseResidualNetwork", "ActivityClassifier"}
    for st in pp["postprocessor_calls"].values():
        assert _positive(st["median_ms"]) and _positive(st["share_pct"])
    assert 0 < pp["share_by_call_pct"] < 100
    assert pp["num_detections"] == [NUM_PEOPLE, NUM_PEOPLE]

    mem = data["memory"]
    for name in ("ours_full", "ours_full_onnxruntime", "tv_keypointrcnn",
                 "tv_maskrcnn+keypointrcnn"):
        m = mem["models"][name]
        for key in ("peak_rss_mb", "baseline_rss_mb", "peak_minus_baseline_mb", "params_m"):
            assert _positive(m[key]), (name, key, m)
        assert m["peak_rss_mb"] >= m["baseline_rss_mb"]
        assert all(c == NUM_PEOPLE for c in m["num_detections"]), m["num_detections"]

    amp = data["amp"]
    if "skipped" not in amp:  # CPUs without native bfloat16 skip the section
        assert amp["dtype"] == "bfloat16" and _positive(amp["speedup"])
        for name in ("float32", "bfloat16"):
            assert _positive(amp["models"][name]["median_ms"]) and amp["models"][name]["finite"]
        assert "SOLVER.AMP.ENABLED speed-up:" in proc.stdout

    rows = data["ops"]["rows"]
    assert {r["pass"] for r in rows} == {"fwd", "fwd+bwd"}
    for r in rows:
        for key in ("dense_ms", "torchvision_ms", "fast_ms", "torchvision_ratio", "fast_ratio"):
            assert _positive(r[key]), (key, r)
    roi_rows = data["ops"]["roi_align"]
    assert {r["pass"] for r in roi_rows} == {"fwd", "fwd+bwd"}
    for r in roi_rows:
        assert _positive(r["torchvision"]["median_ms"]) and _positive(r["ours"]["median_ms"]), r
        assert _positive(r["torchvision_over_ours"]), r
    assert "torchvision / ours" in proc.stdout

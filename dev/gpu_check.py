#!/usr/bin/env python
"""The one-GPU check: CUDA tests, 20 mixed-precision training iterations of the full model, and the
GPU benchmark against torchvision; one summary table at the end.

Run it as ``bash dev/gpu_check.sh`` on a machine with a CUDA GPU (about 5 minutes on one H100 /
H200-class card). Each stage runs in its own process with a time limit, so one failing stage
does not hide the others; its full output goes to ``<output>/<stage>.log``. Without CUDA every
stage is reported as skipped and the exit code is 0 (CI machines have no GPU).

Stages:

* ``cuda-tests``: ``pytest -m cuda`` (``tests/test_cuda.py`` and the CUDA deformable-conv tests).
* ``amp-train``: ``tools/train_net.py`` with the full model (RB+H config: deformable res3-res5
  and keypoint head, offset refinement), ``SOLVER.AMP.ENABLED True``, 20 iterations on
  ``coco_mini_train`` (the synthetic people when coco-mini is absent), then evaluation of the
  chain with the PRN on ``coco_mini_val`` (random-ish weights: the AP is not the point).
* ``benchmark``: ``tools/benchmark.py --device cuda`` (inference, training step, post-processors,
  memory, ops, AMP) against torchvision's R-CNNs; raw numbers in ``<output>/benchmark.json``.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
FULL_CONFIG = "configs/COCO-MultiTask/multitask_R_50_FPN_1x_dconv_c3-c5_dconv_head.yaml"
STAGES = ("cuda-tests", "amp-train", "benchmark")


def cuda_device() -> Optional[str]:
    """The name of CUDA device 0, or None without a usable GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def run_stage(name: str, cmd: List[str], log_path: Path, timeout: float,
              env: Optional[Dict[str, str]] = None) -> Tuple[int, float, str]:
    """Run ``cmd`` from the repository root, echoing and logging its output.

    Returns ``(exit code, seconds, output)``; a stage past ``timeout`` -- printing or silent --
    is killed with the processes it started and gets 124."""
    print(f"\n=== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    lines: List[str] = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={**os.environ, **(env or {})},
                                start_new_session=True)

        def pump() -> None:  # a reader thread, so that a silent stage cannot block the timeout
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)
                log.write(line)
                sys.stdout.write(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the stage and its workers
            proc.wait()
            rc = 124
        reader.join()
        if rc == 124:
            lines.append(f"[gpu_check] {name} killed after {timeout:.0f} s\n")
            log.write(lines[-1])
    sys.stdout.flush()
    return rc, time.perf_counter() - t0, "".join(lines)


# ---- what each stage's output says ---------------------------------------------------------
def summarize_pytest(output: str) -> str:
    """pytest's closing counts, e.g. '13 passed, 1 failed'."""
    counts = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", output)
    if not counts:
        return "no test summary"
    last: Dict[str, str] = {}
    for n, what in counts:  # the closing line comes last
        last[what] = n
    return ", ".join(f"{last[k]} {k}" for k in ("passed", "failed", "error", "errors", "skipped")
                     if k in last)


def summarize_training(output_dir: Path) -> str:
    """Losses of the first and last iteration, median s/it and evaluation APs from the run's
    ``metrics.json``."""
    path = output_dir / "metrics.json"
    if not path.is_file():
        return "no metrics.json"
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    train = [r for r in records if "total_loss" in r]
    parts = []
    if train:
        times = [r["time"] for r in train if "time" in r]
        parts.append(f"iterations {train[0]['iteration'] + 1}-{train[-1]['iteration'] + 1}, "
                     f"total loss {train[0]['total_loss']:.3f} -> {train[-1]['total_loss']:.3f}")
        if times:
            parts.append(f"{statistics.median(times):.3f} s/it")
        finite = all(isinstance(r["total_loss"], float) and r["total_loss"] == r["total_loss"]
                     for r in train)
        parts.append("losses finite" if finite else "NON-FINITE LOSS")
    evals = [r for r in records if any(k.endswith("/AP") for k in r)]
    if evals:
        aps = {k.split("/")[0]: v for k, v in evals[-1].items() if k.endswith("/AP")}
        parts.append("AP " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(aps.items())))
    return "; ".join(parts) or "no training records"


def _fmt(x: Optional[float], pattern: str = "{:.1f}") -> str:
    return "n/a" if x is None else pattern.format(x)


def summarize_benchmark(path: Path) -> List[Tuple[str, str]]:
    """(figure, value) rows from ``tools/benchmark.py``'s JSON."""
    if not path.is_file():
        return [("benchmark", "no benchmark.json")]
    data = json.loads(path.read_text())
    rows: List[Tuple[str, str]] = []

    def median(section: str, model: str) -> Optional[float]:
        m = data.get(section, {}).get("models", {}).get(model, {})
        return m.get("median_ms")

    def times_and_ratios(section: str, what: str, models: Sequence[str], ours: str) -> None:
        sec = data.get(section, {})
        if "ratios" not in sec:
            return
        rows.append((f"{what} ms: " + " / ".join(models),
                     " / ".join(_fmt(median(section, m)) for m in models)))
        r = sec["ratios"]
        rows.append((f"{what} ratio {ours} / keypointrcnn, / (maskrcnn+keypointrcnn)",
                     f"{_fmt(r.get(f'{ours}_over_keypointrcnn'), '{:.2f}')}x, "
                     f"{_fmt(r.get(f'{ours}_over_maskrcnn_plus_keypointrcnn'), '{:.2f}')}x"))

    times_and_ratios("inference", "inference",
                     ("ours_full", "tv_keypointrcnn", "tv_maskrcnn+keypointrcnn"), "ours")
    times_and_ratios("train", "train step",
                     ("ours_regular", "ours_full_train", "tv_keypointrcnn", "tv_maskrcnn"),
                     "ours_full_train")
    pp = data.get("postproc", {})
    if "share_by_call_pct" in pp:
        rows.append(("post-processors' share of inference (PRN + activity calls)",
                     f"{pp['share_by_call_pct']:.1f} %"))
    mem = data.get("memory", {}).get("models", {})
    if mem:
        rows.append(("CUDA max allocated MB: ours full / keypointrcnn / maskrcnn+keypointrcnn",
                     " / ".join(_fmt(mem.get(m, {}).get("cuda_max_allocated_mb"), "{:.0f}")
                                for m in ("ours_full", "tv_keypointrcnn",
                                          "tv_maskrcnn+keypointrcnn"))))
    amp = data.get("amp", {})
    if "speedup" in amp:
        rows.append((f"AMP ({amp.get('dtype')}) training speed-up, ours regular",
                     f"{_fmt(amp['speedup'], '{:.2f}')}x"))
    failures = data.get("meta", {}).get("failures") or []
    rows.append(("benchmark failures", "; ".join(failures) if failures else "none"))
    return rows


def print_table(rows: Sequence[Tuple[str, str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if i == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def train_args(n: int, train_set: str, test_set: str, run_dir: Path) -> List[str]:
    """``tools/train_net.py`` arguments of the AMP training stage: the full model, ``n``
    iterations of 4 images, evaluation of the chain with the PRN on ``test_set`` at the end."""
    return ["--config-file", FULL_CONFIG,
            "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True",
            "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.01",
            "SOLVER.MAX_ITER", str(n), "SOLVER.STEPS", f"({max(1, n - 5)},)",
            "SOLVER.WARMUP_ITERS", str(min(5, n)), "SOLVER.CHECKPOINT_PERIOD", str(n),
            "SOLVER.LOG_PERIOD", "5", "DATALOADER.NUM_WORKERS", "4",
            "DATASETS.TRAIN", f"('{train_set}',)", "DATASETS.TEST", f"('{test_set}',)",
            "MODEL.POSTPROCESSORS", "['PoseResidualNetwork']",
            "TEST.VIS_NUM_IMAGES", "0", "OUTPUT_DIR", str(run_dir)]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="./output/gpu_check",
                   help="directory for the logs, the training run and benchmark.json")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of "
                   + ",".join(STAGES))
    p.add_argument("--train-iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=20, help="benchmark repeats per candidate")
    p.add_argument("--timeout", type=float, default=150.0,
                   help="seconds per stage (the benchmark gets twice as long)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        print(f"--stages: unknown {unknown}; choose from {','.join(STAGES)}", file=sys.stderr)
        return 2
    device = cuda_device()
    if device is None:
        print("gpu_check: no CUDA device; every stage skipped")
        print_table([("stage", "result", "figures", "seconds")]
                    + [(s, "skipped", "no CUDA device", "0") for s in stages])
        return 0
    import torch

    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"gpu_check on {device}: torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"output {out}", flush=True)
    py = sys.executable
    rows: List[Tuple[str, str, str, str]] = [("stage", "result", "figures", "seconds")]
    failed = False
    t_all = time.perf_counter()

    if "cuda-tests" in stages:
        rc, sec, text = run_stage(
            "cuda-tests", [py, "-m", "pytest", "-q", "-m", "cuda", "-rs", "-p",
                           "no:cacheprovider", "tests"], out / "cuda-tests.log", args.timeout)
        failed |= rc != 0
        rows.append(("cuda-tests", "ok" if rc == 0 else f"FAILED (exit {rc})",
                     summarize_pytest(text), f"{sec:.0f}"))

    if "amp-train" in stages:
        from multitask.data.builtin import _find_coco_mini

        mini = _find_coco_mini()
        train_set, test_set = (("coco_mini_train", "coco_mini_val") if mini
                               else ("synthetic_people_train", "synthetic_people_val"))
        run_dir = out / "amp_train"
        if (run_dir / "metrics.json").exists():
            (run_dir / "metrics.json").unlink()
        cmd = [py, "tools/train_net.py"] + train_args(args.train_iters, train_set, test_set,
                                                      run_dir)
        rc, sec, _ = run_stage("amp-train", cmd, out / "amp-train.log", args.timeout)
        failed |= rc != 0
        rows.append(("amp-train", "ok" if rc == 0 else f"FAILED (exit {rc})",
                     f"{train_set}, batch 4: " + summarize_training(run_dir), f"{sec:.0f}"))

    if "benchmark" in stages:
        bench_json = out / "benchmark.json"
        cmd = [py, "tools/benchmark.py", "--device", "cuda", "--repeats", str(args.repeats),
               "--warmup", "3", "--threads", "4", "--output", str(bench_json)]
        rc, sec, _ = run_stage("benchmark", cmd, out / "benchmark.log", 2 * args.timeout)
        failed |= rc != 0
        bench_rows = summarize_benchmark(bench_json)
        rows.append(("benchmark", "ok" if rc == 0 else f"FAILED (exit {rc})",
                     "see below; tables in benchmark.log", f"{sec:.0f}"))
        rows.extend(("", "", f"{k}: {v}", "") for k, v in bench_rows)

    print(f"\n=== gpu_check summary ({device}, torch {torch.__version__}, "
          f"{time.perf_counter() - t_all:.0f} s in all; logs in {out})")
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

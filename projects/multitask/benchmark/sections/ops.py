"""``ops`` section: modulated deformable 3x3 conv, ours (``deform_conv2d_fast``) and
torchvision's vs dense ``conv2d``, via :func:`multitask.benchmark.deform_conv.measure_deform_conv`
on CPU (its inputs and candidates timed with synchronisation on CUDA), followed by the ROIAlign
table of :mod:`.roi_align`."""

import time
from typing import Dict, List

import numpy as np
import torch

from .. import deform_conv
from ..harness import log, short_error, synchronize
from ..report import fmt_num, header, table
from ..settings import Settings
from .roi_align import section_ops_roi_align

TINY_OPS_SHAPES = ((32, 25, 34), (64, 13, 17))
FULL_OPS_SHAPES = ((128, 100, 136), (256, 50, 68), (512, 25, 34))


def _device_row(channels: int, height: int, width: int, s: Settings,
                backward: bool) -> Dict[str, object]:
    """One :func:`measure_deform_conv_device` row."""
    device = torch.device(s.device)
    tensors = [t.detach().to(device).requires_grad_(backward)
               for t in deform_conv.make_inputs(channels, height, width, requires_grad=False)]
    fns = deform_conv.conv_candidates(*tensors)
    grad = torch.randn(1, channels, height, width, device=device)

    def run(fn):
        if backward:
            fn().backward(grad)
            for t in tensors:
                t.grad = None
        else:
            with torch.no_grad():
                fn()

    failed: Dict[str, str] = {}
    for name, fn in list(fns.items()):  # warm-up; a candidate that cannot run is dropped
        try:
            run(fn)
            synchronize(device)
        except Exception as exc:  # noqa: BLE001  (e.g. a CPU-only kernel)
            failed[name] = short_error(exc)
            log(f"ops: {name} cannot run on {device}: {failed[name]}")
            del fns[name]
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(s.repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            run(fn)
            synchronize(device)
            times[name].append((time.perf_counter() - t0) * 1e3)
    row: Dict[str, object] = {"channels": channels, "height": height, "width": width,
                              "threads": s.threads, "pass": "fwd+bwd" if backward else "fwd"}
    for name, ts in times.items():
        row[f"{name}_ms"] = float(np.median(ts))
        row[f"{name}_min_ms"] = float(min(ts))
    for name, err in failed.items():
        row[f"{name}_ms"] = row[f"{name}_min_ms"] = None
        row[f"{name}_error"] = err
    dense = row.get("dense_ms")
    for name in ("torchvision", "fast"):
        value = row.get(f"{name}_ms")
        row[f"{name}_ratio"] = value / dense if value and dense else None
    return row


def measure_deform_conv_device(shapes, s: Settings, backward: bool) -> List[Dict[str, object]]:
    """``measure_deform_conv`` rows for a CUDA device (that function times CPU tensors only):
    its inputs and candidates, moved to the device, with synchronisation around each run."""
    return [_device_row(channels, height, width, s, backward)
            for channels, height, width in shapes]


def section_ops(s: Settings, env) -> Dict[str, object]:
    """Deformable conv table, then the ROIAlign table; ``{"rows": ..., "roi_align": ...}``."""
    shapes = TINY_OPS_SHAPES if s.tiny else FULL_OPS_SHAPES
    rows = []
    for backward in (False, True):
        log(f"ops: {'forward+backward' if backward else 'forward'} on {len(shapes)} shapes")
        if s.device == "cpu":
            rows += deform_conv.measure_deform_conv(shapes, s.threads, s.repeats,
                                                    backward=backward)
        else:
            rows += measure_deform_conv_device(shapes, s, backward)
    cells = []
    for r in rows:
        cells.append([f"{r['channels']} x {r['height']} x {r['width']}", r["pass"],
                      *(fmt_num(r.get(k)) for k in (
                          "dense_ms", "torchvision_ms", "fast_ms", "torchvision_ratio",
                          "fast_ratio")),
                      fmt_num(r["torchvision_ms"] / r["fast_ms"]
                              if r.get("torchvision_ms") and r.get("fast_ms") else None)])
    ours_note = ("ours = deform_conv2d_fast, what the model runs on CPU" if s.device == "cpu" else
                 "ours = deform_conv2d_fast (the model itself uses torchvision's kernel on CUDA)")
    print(header("ops", env, f"modulated deformable 3x3 conv, batch 1, C -> C, stride 1, pad 1, "
                             f"median of {s.repeats} runs after 1 warm-up; {ours_note}"))
    print(table(cells, ["shape (C x H x W)", "pass", "dense conv2d ms", "torchvision deform ms",
                        "ours deform ms", "torchvision / dense", "ours / dense",
                        "torchvision / ours"]))
    print(flush=True)
    return {"rows": rows, "roi_align": section_ops_roi_align(s, env)}

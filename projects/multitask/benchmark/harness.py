"""Timing harness: progress log, threads, interleaved timed runs, medians / IQR, peak memory."""

import os
import resource
import sys
import time
import traceback
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from multitask.engine.trainer import amp_dtype

from .settings import Settings

__all__ = [
    "amp_context",
    "amp_dtype",
    "log",
    "peak_rss_mb",
    "ratio",
    "rss_mb",
    "run_interleaved",
    "setup_threads",
    "short_error",
    "stats_or_error",
    "sum_stats",
    "summarize",
    "synchronize",
]

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress line on stderr (stdout is for the tables)."""
    print(f"[benchmark {time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def setup_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` for the whole process (a memory worker calls it too)."""
    torch.set_num_threads(threads)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_context(s: Settings):
    """The autocast of ``SOLVER.AMP.ENABLED`` on ``s.device`` when ``s.amp``, else a no-op."""
    if s.amp:
        return torch.autocast(device_type=s.device, dtype=amp_dtype(torch.device(s.device)))
    return nullcontext()


def summarize(times_ms: Sequence[float]) -> Dict[str, object]:
    """Median, quartiles, IQR, min, max and mean of ``times_ms``, with the raw times."""
    a = np.asarray(times_ms, dtype=np.float64)
    p25, p50, p75 = np.percentile(a, [25, 50, 75])
    return {
        "times_ms": [float(t) for t in a],
        "median_ms": float(p50),
        "p25_ms": float(p25),
        "p75_ms": float(p75),
        "iqr_ms": float(p75 - p25),
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
        "mean_ms": float(a.mean()),
        "n": int(a.size),
    }


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def run_interleaved(
    fns: Dict[str, Callable[[], object]],
    s: Settings,
    label: str,
    device: torch.device,
) -> Tuple[Dict[str, List[float]], Dict[str, List[object]], Dict[str, str]]:
    """Warm up, then time ``repeats`` rounds of one call of each fn. Returns times (ms), the
    values the fns returned during the timed rounds, and ``{name: error}`` for the fns that
    raised (they are dropped from the later rounds; the others go on)."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    values: Dict[str, List[object]] = {k: [] for k in fns}
    errors: Dict[str, str] = {}

    def call(name, fn, what):
        if name in errors:
            return None
        synchronize(device)
        t0 = time.perf_counter()
        try:
            value = fn()
            synchronize(device)
        except Exception as exc:  # noqa: BLE001  (recorded, reported, and the exit code is 1)
            errors[name] = short_error(exc)
            log(f"{label}: {name} FAILED during {what}:\n{traceback.format_exc()}")
            return None
        ms = (time.perf_counter() - t0) * 1e3
        log(f"{label}: {what} {name} {ms:.0f} ms")
        return ms, value

    for i in range(s.warmup):
        for name, fn in fns.items():
            call(name, fn, f"warm-up {i + 1}/{s.warmup}")
    for i in range(s.repeats):
        for name, fn in fns.items():
            got = call(name, fn, f"run {i + 1}/{s.repeats}")
            if got is not None:
                times[name].append(got[0])
                values[name].append(got[1])
    return times, values, errors


def ratio(a: Dict[str, object], b: Dict[str, object], key: str = "median_ms") -> Optional[float]:
    """``a[key] / b[key]``; None when either side failed."""
    if key not in a or key not in b:
        return None
    return float(a[key]) / float(b[key])


def sum_stats(parts: Sequence[Dict[str, object]]) -> Dict[str, object]:
    """Stats of per-round sums (the models of a pair run one after the other each round)."""
    failed = [p["error"] for p in parts if "error" in p]
    if failed:
        return {"error": "a component failed: " + "; ".join(failed)}
    return summarize([sum(ts) for ts in zip(*(p["times_ms"] for p in parts))])


def stats_or_error(times: Dict[str, List[float]], errors: Dict[str, str], name: str):
    """:func:`summarize` of ``name``'s times, or ``{"error": ...}`` when it failed."""
    return {"error": errors[name]} if name in errors else summarize(times[name])


def rss_mb() -> float:
    """Current resident memory of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> Tuple[float, str]:
    """Peak RSS of this process's own address space. VmHWM (Linux) belongs to the current
    memory map, so it does not carry a parent's peak over a fork; ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0, "VmHWM"
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024.0), "ru_maxrss"

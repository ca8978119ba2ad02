"""Benchmark modulated deformable convolution on CPU.

Compares, per shape (batch 1, 3x3 kernel, stride 1, padding 1, C -> C channels, one offset
group, with mask and bias), the median wall time of

* ``dense``: ``F.conv2d`` of the same shape (the reference cost),
* ``torchvision``: ``torchvision.ops.deform_conv2d``,
* ``fast``: ``multitask.modeling.layers.deform_conv_fast.deform_conv2d_fast``,

forward only and forward + backward (gradients for every input), and prints the ratios to
dense. The three candidates run interleaved, so load changes on the machine hit all of them;
on a shared machine ``--wait-idle 0.9`` additionally waits (up to 30 s) before every round
until at least 90 % of the CPU time is idle.

The benchmark's ``ops`` section (:mod:`multitask.benchmark.sections.ops`) reuses
:func:`make_inputs`, :func:`conv_candidates` and :func:`measure_deform_conv`.

Example::

    python tools/bench_deform_conv.py --threads 2 --repeats 10
"""

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from multitask.modeling.layers.deform_conv_fast import deform_conv2d_fast

DEFAULT_SHAPES: Tuple[Tuple[int, int, int], ...] = ((128, 100, 136), (256, 50, 68), (512, 25, 34))


def make_inputs(channels: int, height: int, width: int, requires_grad: bool, seed: int = 0):
    """``[x, weight, bias, offset, mask]`` of one C -> C 3x3 modulated deformable conv on a
    (1, C, H, W) input, offsets of a few pixels; deterministic in ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, height, width, generator=gen)
    w = torch.randn(channels, channels, 3, 3, generator=gen) / (3 * channels ** 0.5)
    b = torch.randn(channels, generator=gen)
    offset = torch.randn(1, 18, height, width, generator=gen) * 2.0
    mask = torch.rand(1, 9, height, width, generator=gen)
    tensors = [x, w, b, offset, mask]
    for t in tensors:
        t.requires_grad_(requires_grad)
    return tensors


def cpu_idle_fraction(interval: float = 0.5) -> float:
    """Fraction of CPU time idle over ``interval`` seconds (1.0 where /proc/stat is missing)."""
    if not os.path.exists("/proc/stat"):
        return 1.0

    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)

    idle0, total0 = read()
    time.sleep(interval)
    idle1, total1 = read()
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_idle(fraction: float, timeout: float = 30.0) -> None:
    """Wait (at most ``timeout`` s) until ``fraction`` of the CPU time is idle; 0 returns."""
    deadline = time.time() + timeout
    while fraction > 0 and time.time() < deadline and cpu_idle_fraction() < fraction:
        pass


def conv_candidates(x, w, b, offset, mask) -> Dict[str, Callable[[], torch.Tensor]]:
    """``dense``, ``torchvision`` and ``fast`` convolutions of :func:`make_inputs`' tensors."""
    return {
        "dense": lambda: F.conv2d(x, w, b, padding=1),
        "torchvision": lambda: deform_conv2d(x, offset, w, b, padding=(1, 1), mask=mask),
        "fast": lambda: deform_conv2d_fast(x, offset, w, b, padding=(1, 1), mask=mask),
    }


def _measure_shape(
    channels: int, height: int, width: int, threads: int, repeats: int, backward: bool,
    wait_idle_fraction: float,
) -> Dict[str, object]:
    """One row of :func:`measure_deform_conv` (threads already set)."""
    tensors = make_inputs(channels, height, width, requires_grad=backward)
    fns = conv_candidates(*tensors)
    if backward:
        grad = torch.randn(1, channels, height, width)

        def run(fn):
            fn().backward(grad)
            for t in tensors:
                t.grad = None
    else:

        def run(fn):
            with torch.no_grad():
                fn()

    times: Dict[str, List[float]] = {name: [] for name in fns}
    for fn in fns.values():
        run(fn)  # warm-up
    for _ in range(repeats):
        wait_idle(wait_idle_fraction)
        for name, fn in fns.items():
            t0 = time.perf_counter()
            run(fn)
            times[name].append((time.perf_counter() - t0) * 1e3)
    row: Dict[str, object] = {
        "channels": channels, "height": height, "width": width, "threads": threads,
        "pass": "fwd+bwd" if backward else "fwd",
    }
    for name, ts in times.items():
        row[f"{name}_ms"] = statistics.median(ts)
        row[f"{name}_min_ms"] = min(ts)
    for name in ("torchvision", "fast"):
        row[f"{name}_ratio"] = row[f"{name}_ms"] / row["dense_ms"]
    return row


def measure_deform_conv(
    shapes: Sequence[Tuple[int, int, int]] = DEFAULT_SHAPES,
    threads: int = 2,
    repeats: int = 10,
    backward: bool = False,
    wait_idle: float = 0.0,
) -> List[Dict[str, object]]:
    """Time dense conv, torchvision's and the fast deformable conv on CPU.

    Args:
        shapes: (channels, height, width) per case; batch 1, 3x3, stride 1, padding 1.
        threads: ``torch.set_num_threads`` during the measurement (restored afterwards).
        repeats: timed runs per candidate (after one warm-up run), interleaved.
        backward: time forward + backward (``out.backward(grad)`` with gradients for input,
            offset, mask, weight and bias) instead of the forward alone (under ``no_grad``).
        wait_idle: before each round wait (at most 30 s) until this fraction of the machine's
            CPU time is idle; 0 disables.

    Returns:
        One dict per shape: ``channels``, ``height``, ``width``, ``threads``, ``pass``
        ("fwd" or "fwd+bwd"), ``<name>_ms`` (median) and ``<name>_min_ms`` for ``dense``,
        ``torchvision`` and ``fast``, and ``torchvision_ratio`` / ``fast_ratio`` (median over
        dense median).
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [_measure_shape(channels, height, width, threads, repeats, backward, wait_idle)
                for channels, height, width in shapes]
    finally:
        torch.set_num_threads(old_threads)


def format_table(rows: Sequence[Dict[str, object]]) -> str:
    """Plain-text table of :func:`measure_deform_conv` rows."""
    header = (f"{'shape (C x H x W)':<18} {'pass':<8} {'dense ms':>9} {'tv ms':>9} "
              f"{'fast ms':>9} {'tv/dense':>9} {'fast/dense':>11} {'(min/min)':>10}")
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = f"{r['channels']}x{r['height']}x{r['width']}"
        lines.append(f"{shape:<18} {r['pass']:<8} {r['dense_ms']:>9.1f} "
                     f"{r['torchvision_ms']:>9.1f} {r['fast_ms']:>9.1f} "
                     f"{r['torchvision_ratio']:>9.2f} {r['fast_ratio']:>11.2f} "
                     f"{r['fast_min_ms'] / r['dense_min_ms']:>10.2f}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``tools/bench_deform_conv.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-backward", action="store_true",
                        help="only time the forward pass")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="FRACTION",
                        help="before each round wait until this fraction of CPU time is idle")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``tools/bench_deform_conv.py``: time :data:`DEFAULT_SHAPES` and print the table."""
    args = build_parser().parse_args(argv)
    rows = measure_deform_conv(DEFAULT_SHAPES, args.threads, args.repeats, backward=False,
                               wait_idle=args.wait_idle)
    if not args.no_backward:
        rows += measure_deform_conv(DEFAULT_SHAPES, args.threads, args.repeats, backward=True,
                                    wait_idle=args.wait_idle)
    print(f"median of {args.repeats} runs, {args.threads} threads, batch 1, 3x3, stride 1, pad 1;"
          " last column: ratio of the fastest runs")
    print(format_table(rows))

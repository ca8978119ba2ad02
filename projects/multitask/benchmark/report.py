"""What the tables print: the environment header of each section and number formatting."""

import os
import platform
from typing import Dict, Optional, Sequence, Tuple

import torch
import torchvision
from tabulate import tabulate

from .settings import Settings


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> Optional[float]:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def environment(s: Settings) -> Dict[str, object]:
    """Device, threads, library versions and machine of this run (the JSON's ``meta``)."""
    env = {
        "device": s.device,
        "amp": s.amp,
        "threads": s.threads,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name() if s.device == "cuda" else None,
    }
    return env


def header(section: str, env: Dict[str, object], extra: str = "") -> str:
    """The ``== section == device ...`` line above each table, ``extra`` on a second line."""
    dev = env["device"] + (f" ({env['gpu']}{', AMP fp16' if env['amp'] else ''})"
                           if env["device"] == "cuda" else "")
    line = (f"== {section} == device {dev} | threads {env['threads']} | torch {env['torch']} | "
            f"torchvision {env['torchvision']} | CPU {env['cpu_model']} "
            f"({env['cpu_count']} logical cores) | load avg {load_average()}")
    return line + (f"\n   {extra}" if extra else "")


def table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """GitHub-style table of already formatted cells."""
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def fmt_ms(st: Dict[str, object]) -> Tuple[str, str, str]:
    """(median, p25-p75, min-max) cells of :func:`~multitask.benchmark.harness.summarize`."""
    if "error" in st:
        return "FAILED", "", ""
    return (f"{st['median_ms']:.1f}", f"{st['p25_ms']:.1f}-{st['p75_ms']:.1f}",
            f"{st['min_ms']:.1f}-{st['max_ms']:.1f}")


def fmt_ratio(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


fmt_num = fmt_ratio

#!/usr/bin/env python
"""Speed and memory benchmark of the multi-task R-CNN against torchvision's R-CNNs.

The benchmark is the package :mod:`multitask.benchmark` (its sections, the candidates, the
timing harness); ``python tools/benchmark.py --help`` lists the options and
``docs/benchmarks.md`` describes the sections and the JSON output.

Examples::

    python tools/benchmark.py                                   # everything, CPU, 2 threads
    python tools/benchmark.py --sections inference,memory --repeats 10
    python tools/benchmark.py --device cuda --amp --threads 8
    python tools/benchmark.py --tiny                            # seconds-long smoke test
"""

import sys

from multitask.benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
